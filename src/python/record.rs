//! The event object detections receive as `r`.
//!
//! A `Record` points into an Arrow batch instead of copying the event into a
//! dict: `r.deepget("source.ip")` converts just that value, from a declared
//! column or the column of a path rules read (see `logs::DecodePlan`); only
//! paths nobody could name in advance read the event's text. Attribute
//! assignment (`r.is_known_ip = True`) goes to the instance `__dict__`, and a
//! fresh record is made for every (rule, event), so state set in `detect`
//! is visible in `title` of the same rule and nowhere else.

use super::convert::{arrow_to_py, json_to_py, merge_json_into_dict};
use super::table::{column_names, hit_to_py, Selection};
use crate::enrichment::Found;
use crate::logs::{EventBatch, ReadColumn};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;
use std::sync::Arc;

#[pyclass(dict, module = "ravenwatch", name = "Record")]
pub struct Record {
    batch: Arc<EventBatch>,
    row: usize,
}

enum Declared<'a> {
    Absent,
    Null,
    Present(&'a dyn Array),
}

impl Record {
    pub fn new(batch: Arc<EventBatch>, row: usize) -> Self {
        Self { batch, row }
    }

    fn declared<'a>(&'a self, parts: &[&str]) -> Declared<'a> {
        let Some((first, rest)) = parts.split_first() else {
            return Declared::Absent;
        };
        let Some(mut array) = self.batch.batch.column_by_name(first).map(|c| c.as_ref()) else {
            return Declared::Absent;
        };
        for part in rest {
            if array.is_null(self.row) {
                return Declared::Null;
            }
            let DataType::Struct(_) = array.data_type() else {
                return Declared::Absent;
            };
            match array.as_struct().column_by_name(part) {
                Some(child) => array = child.as_ref(),
                None => return Declared::Absent,
            }
        }
        if array.is_null(self.row) {
            Declared::Null
        } else {
            Declared::Present(array)
        }
    }

    /// The value at a path as the event's own JSON says (no declared
    /// type applied), `None` when missing or null.
    fn raw(&self, parts: &[&str]) -> Option<&Value> {
        let (first, rest) = parts.split_first()?;
        let mut value = self.batch.parsed(self.row)?.get(*first)?;
        for part in rest {
            value = value.as_object()?.get(*part)?;
        }
        (!value.is_null()).then_some(value)
    }

    /// The value at `path` (`parts` joined by dots), or `None` when it is
    /// missing or null: from the column of a path rules read, else from its
    /// declared column, else from the event's text.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        parts: &[&str],
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        // A path rules read is never a declared one (`DecodePlan` leaves
        // those out), so its column answers alone.
        if let Some(column) = self.batch.read.get(path) {
            return match column {
                column if column.is_null(self.row) => Ok(None),
                ReadColumn::Typed(array) => Ok(Some(arrow_to_py(py, array.as_ref(), self.row)?)),
                ReadColumn::Json(texts) => {
                    let value: Value = serde_json::from_str(texts.value(self.row))
                        .map_err(|e| PyValueError::new_err(e.to_string()))?;
                    Ok(Some(json_to_py(py, &value)?))
                }
            };
        }
        match self.declared(parts) {
            Declared::Present(array) => {
                let value = arrow_to_py(py, array, self.row)?;
                // A declared struct also holds the members the schema left
                // out (only then is the event's text read).
                if let Ok(dict) = value.cast::<PyDict>() {
                    if let Some(Value::Object(rest)) = self.raw(parts) {
                        merge_json_into_dict(py, dict, rest)?;
                    }
                }
                Ok(Some(value))
            }
            // A declared field is authoritative: null means missing.
            Declared::Null => Ok(None),
            Declared::Absent => match self.raw(parts) {
                Some(v) => Ok(Some(json_to_py(py, v)?)),
                None => Ok(None),
            },
        }
    }

    fn to_dict_inner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let batch = &self.batch.batch;
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if !column.is_null(self.row) {
                dict.set_item(field.name(), arrow_to_py(py, column.as_ref(), self.row)?)?;
            }
        }
        if let Some(rest) = self.batch.parsed(self.row) {
            merge_json_into_dict(py, &dict, rest)?;
        }
        Ok(dict)
    }
}

#[pymethods]
impl Record {
    /// `r.deepget("a.b.c", default=None)`: a missing or null value gives the default.
    #[pyo3(signature = (path, default = None))]
    fn deepget<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let found = if path.contains('.') {
            let parts: Vec<&str> = path.split('.').collect();
            self.lookup(py, path, &parts)?
        } else {
            self.lookup(py, path, &[path])?
        };
        Ok(match found {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.lookup(py, key, &[key])? {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    /// `r[key]`: a declared field is always present (None when absent from
    /// the event); an undeclared one raises `KeyError` when missing.
    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.lookup(py, key, &[key])? {
            Some(v) => Ok(v),
            None if !matches!(self.declared(&[key]), Declared::Absent)
                || self
                    .batch
                    .parsed(self.row)
                    .is_some_and(|event| event.contains_key(key)) =>
            {
                Ok(py.None().into_bound(py))
            }
            None => Err(PyKeyError::new_err(key.to_string())),
        }
    }

    /// `key in r`: present and not null.
    fn __contains__(&self, key: &str) -> bool {
        if matches!(self.declared(&[key]), Declared::Present(_)) {
            return true;
        }
        match self.batch.read.get(key) {
            Some(column) => !column.is_null(self.row),
            None => self.raw(&[key]).is_some(),
        }
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dict = self.to_dict_inner(py)?;
        Ok(dict.keys())
    }

    /// The whole event as a plain dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.to_dict_inner(py)
    }

    /// What the log table's `enrich:` selectors found for this event:
    /// `{table: {field: row dict, or a list of them for a list field}}`;
    /// empty when nothing matched.
    #[getter]
    fn enrichment<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let Some(enrichment) = self.batch.enrichment_of(self.row) else {
            return Ok(out);
        };
        for (field, found) in enrichment.row(self.row) {
            let table = &field.table;
            let per_table = match out.get_item(&table.name)? {
                Some(existing) => existing.cast_into::<PyDict>()?,
                None => {
                    let fresh = PyDict::new(py);
                    out.set_item(&table.name, &fresh)?;
                    fresh
                }
            };
            let names = column_names(py, &table.batch);
            let value = match found {
                Found::One(hit) => hit_to_py(py, table, &names, hit, &Selection::All)?,
                Found::Many(hits) => {
                    let list = PyList::empty(py);
                    for hit in hits {
                        list.append(hit_to_py(py, table, &names, hit, &Selection::All)?)?;
                    }
                    list.into_any()
                }
            };
            per_table.set_item(&field.field, value)?;
        }
        Ok(out)
    }

    /// The event's JSON text as read (Panther rules get it parsed by
    /// Python's `json`, so integers and key order stay exactly as written).
    #[getter(_text)]
    fn text(&self) -> &str {
        self.batch.raw.value(self.row)
    }

    /// The event's time, epoch microseconds (UTC), as the run grouped it.
    #[getter(_time_us)]
    fn time_us(&self) -> i64 {
        self.batch.times.get(self.row).copied().unwrap_or(0)
    }

    /// The event's log table, file and position in the file: the key the
    /// Panther runtime shares one parsed event by across rules.
    #[getter(_place)]
    fn place(&self) -> (String, String, u64) {
        (
            self.batch.table.to_string(),
            self.batch.file.to_string(),
            self.batch.positions.get(self.row).copied().unwrap_or(0),
        )
    }

    /// Which batch the record belongs to (its address while it lives):
    /// the Panther runtime keeps parsed events for the current batch only.
    #[getter(_batch)]
    fn batch_id(&self) -> usize {
        Arc::as_ptr(&self.batch) as usize
    }

    fn __repr__(&self) -> String {
        let event = serde_json::Value::Object(self.batch.event_json(self.row));
        format!("Record({} {})", self.batch.source(self.row), event)
    }
}
