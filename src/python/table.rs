//! Enrichment tables as Python objects: `known_ip_info.get("1.1.1.1")`.

use super::convert::{json_to_py, row_to_pydict, row_to_pydict_select};
use crate::enrichment::{composite_key, EnrichmentError, EnrichmentTable, Hit, KeyPart};
use arc_swap::ArcSwap;
use arrow::array::RecordBatch;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

#[pyclass(
    frozen,
    dict,
    module = "ravenwatch.enrichment",
    name = "EnrichmentTable"
)]
pub struct PyTable {
    /// Swapped between batches when a newer snapshot is published (see
    /// [`PyTable::replace`]); detections keep the object they imported.
    table: ArcSwap<Loaded>,
    column_names: Vec<Py<PyString>>,
}

/// A snapshot and the rows already converted to Python. `get()` hands out
/// a copy of the cached dict (a C-level copy of a few pointers), so a rule
/// that changes the row it got changes nothing another caller sees.
struct Loaded {
    table: Arc<EnrichmentTable>,
    rows: Box<[OnceLock<Py<PyDict>>]>,
}

impl Loaded {
    fn new(table: Arc<EnrichmentTable>) -> Self {
        let rows = if table.is_mmdb() {
            0
        } else {
            table.batch.num_rows()
        };
        Self {
            rows: (0..rows).map(|_| OnceLock::new()).collect(),
            table,
        }
    }
}

impl std::ops::Deref for Loaded {
    type Target = EnrichmentTable;
    fn deref(&self) -> &EnrichmentTable {
        &self.table
    }
}

/// What `select=[...]` keeps of a hit.
pub enum Selection {
    All,
    /// Column positions of a row table.
    Columns(Vec<usize>),
    /// Top-level keys of an MMDB record.
    Keys(Vec<String>),
}

/// A batch's column names as interned Python strings (dict keys of rows).
pub fn column_names(py: Python<'_>, batch: &RecordBatch) -> Vec<Py<PyString>> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| PyString::intern(py, f.name()).unbind())
        .collect()
}

/// A hit as Python: a typed row dict (timestamps as `datetime`) or an MMDB
/// record, reduced to `select`.
pub fn hit_to_py<'py>(
    py: Python<'py>,
    table: &EnrichmentTable,
    names: &[Py<PyString>],
    hit: &Hit,
    select: &Selection,
) -> PyResult<Bound<'py, PyAny>> {
    match (hit, select) {
        (Hit::Row(row), Selection::Columns(indices)) => {
            Ok(row_to_pydict_select(py, &table.batch, names, indices, *row)?.into_any())
        }
        (Hit::Row(row), _) => Ok(row_to_pydict(py, &table.batch, names, *row)?.into_any()),
        (Hit::Record(record), Selection::Keys(keep)) => match record.as_ref() {
            serde_json::Value::Object(map) => {
                let kept: serde_json::Map<_, _> = map
                    .iter()
                    .filter(|(k, _)| keep.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                json_to_py(py, &serde_json::Value::Object(kept))
            }
            other => json_to_py(py, other),
        },
        (Hit::Record(record), _) => json_to_py(py, record),
    }
}

impl PyTable {
    /// A table object for the life of the interpreter, its lookup methods
    /// already bound. Rules write `from ravenwatch.enrichment import t`,
    /// and Python 3.11 compiles `t.get(k)` on an imported name as an
    /// attribute load plus a call, which would bind a new method object on
    /// every lookup (about a third of a miss's cost); bound once in the
    /// instance's `__dict__`, the load is a dict hit. The bound methods
    /// refer back to the table, so the object is never freed: publish
    /// long-lived tables this way, not per test case.
    pub fn published<'py>(
        py: Python<'py>,
        table: Arc<EnrichmentTable>,
    ) -> PyResult<Bound<'py, PyTable>> {
        let object = Bound::new(py, Self::new(py, table))?;
        for method in ["get", "get_all", "lookup_many"] {
            object.setattr(method, object.getattr(method)?)?;
        }
        Ok(object)
    }

    pub fn new(py: Python<'_>, table: Arc<EnrichmentTable>) -> Self {
        Self {
            column_names: column_names(py, &table.batch),
            table: ArcSwap::from_pointee(Loaded::new(table)),
        }
    }

    /// Makes `table` (a newer snapshot of the same definition, so the same
    /// columns) what every later lookup sees.
    pub fn replace(&self, table: Arc<EnrichmentTable>) {
        self.table.store(Arc::new(Loaded::new(table)));
    }

    /// The snapshot lookups currently see.
    pub fn current(&self) -> Arc<EnrichmentTable> {
        Arc::clone(&self.table.load().table)
    }

    /// `select=[...]`: column positions of a row table (checked), or the
    /// top-level keys of MMDB records.
    fn selection(
        &self,
        table: &EnrichmentTable,
        select: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Selection> {
        let Some(select) = select.filter(|s| !s.is_none()) else {
            return Ok(Selection::All);
        };
        let names: Vec<String> = if let Ok(s) = select.cast::<PyString>() {
            vec![s.to_string_lossy().into_owned()]
        } else {
            select
                .extract()
                .map_err(|_| PyTypeError::new_err("select must be a list of column names"))?
        };
        if table.is_mmdb() {
            return Ok(Selection::Keys(names));
        }
        let schema = table.batch.schema();
        names
            .iter()
            .map(|n| {
                schema.index_of(n).map_err(|_| {
                    PyKeyError::new_err(format!(
                        "table `{}` has no column `{n}`; its columns are: {}",
                        table.name,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<PyResult<Vec<_>>>()
            .map(Selection::Columns)
    }

    fn to_py<'py>(
        &self,
        py: Python<'py>,
        loaded: &Loaded,
        hit: &Hit,
        select: &Selection,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let (Hit::Row(row), Selection::All) = (hit, select) {
            if let Some(cell) = loaded.rows.get(*row) {
                if let Some(dict) = cell.get() {
                    return Ok(dict.bind(py).copy()?.into_any());
                }
                let dict = row_to_pydict(py, &loaded.table.batch, &self.column_names, *row)?;
                let _ = cell.set(dict.clone().unbind());
                return Ok(dict.copy()?.into_any());
            }
        }
        hit_to_py(py, &loaded.table, &self.column_names, hit, select)
    }
}

/// One part of a key as text, in the one key convention
/// ([`KeyPart`]): `str` as is, `int` in decimal, `bool` as `true`/`false`;
/// `None` is no key.
fn part_text<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, str>>> {
    if key.is_none() {
        return Ok(None);
    }
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(Some(s.to_cow()?));
    }
    let part = if let Ok(b) = key.cast::<PyBool>() {
        KeyPart::Bool(b.is_true())
    } else if key.is_instance_of::<PyInt>() {
        match (key.extract::<i64>(), key.extract::<u64>()) {
            (Ok(n), _) => KeyPart::Int(n),
            (_, Ok(n)) => KeyPart::UInt(n),
            // Wider than any key column: its decimal text finds nothing.
            _ => return Ok(Some(Cow::Owned(key.to_string()))),
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "lookup keys must be str, int or a tuple of those (composite keys), got {}",
            key.get_type().name()?
        )));
    };
    Ok(Some(Cow::Owned(part.text())))
}

/// A lookup key as text; a tuple or list is a composite key. `None` (or a
/// composite with a `None` part) finds nothing.
fn key_text<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, str>>> {
    // A str is by far the most common key: test it first.
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(Some(s.to_cow()?));
    }
    if key.is_instance_of::<PyTuple>() || key.is_instance_of::<PyList>() {
        let mut parts = Vec::new();
        for part in key.try_iter()? {
            let part = part?;
            match part_text(&part)? {
                Some(text) => parts.push(text.into_owned()),
                None => return Ok(None),
            }
        }
        return Ok(Some(Cow::Owned(composite_key(&parts))));
    }
    part_text(key)
}

fn lookup_error(e: EnrichmentError) -> PyErr {
    match e {
        EnrichmentError::Record { .. } => PyValueError::new_err(e.to_string()),
        _ => PyKeyError::new_err(e.to_string()),
    }
}

#[pymethods]
impl PyTable {
    #[getter]
    fn name(&self) -> String {
        self.table.load().name.clone()
    }

    /// Names of the lookup keys, the default first.
    #[getter]
    fn lookup_keys(&self) -> Vec<String> {
        self.table
            .load()
            .keys
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// The row whose key matches `key` (the newest on duplicates; for a
    /// CIDR key the most specific range; for an MMDB table the record of
    /// the most specific network), as a dict, or `default`.
    #[pyo3(signature = (key, index_key = None, default = None, select = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
        default: Option<Bound<'py, PyAny>>,
        select: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let table = self.table.load();
        // The common call, `t.get("1.2.3.4")`: a str key, the default
        // index, the whole row (a cached dict, copied).
        if let (Ok(text), None, None) = (key.cast::<PyString>(), index_key, select.as_ref()) {
            return match table.find(text.to_str()?, None).map_err(lookup_error)? {
                Some(hit) => self.to_py(py, &table, &hit, &Selection::All),
                None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
            };
        }
        let found = match key_text(key)? {
            Some(text) => table.find(&text, index_key).map_err(lookup_error)?,
            None => None,
        };
        match found {
            Some(hit) => {
                let select = self.selection(&table, select.as_ref())?;
                self.to_py(py, &table, &hit, &select)
            }
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Every matching row: oldest first, or for a CIDR key every
    /// containing range, most specific first (an MMDB table: its one record).
    #[pyo3(signature = (key, index_key = None, select = None))]
    fn get_all<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
        select: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let table = self.table.load();
        let list = PyList::empty(py);
        if let Some(text) = key_text(key)? {
            let select = self.selection(&table, select.as_ref())?;
            for hit in table.find_all(&text, index_key).map_err(lookup_error)? {
                list.append(self.to_py(py, &table, &hit, &select)?)?;
            }
        }
        Ok(list)
    }

    /// One lookup per key, in one call: a list aligned with `keys`, holding
    /// a dict or `None` for each.
    #[pyo3(signature = (keys, index_key = None, select = None))]
    fn lookup_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        index_key: Option<&str>,
        select: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let table = self.table.load();
        let select = self.selection(&table, select.as_ref())?;
        let items: Vec<Bound<'py, PyAny>> = keys
            .try_iter()
            .map_err(|_| PyTypeError::new_err("lookup_many takes an iterable of keys"))?
            .collect::<PyResult<_>>()?;
        let mut texts: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(items.len());
        for item in &items {
            texts.push(key_text(item)?);
        }
        let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
        let list = PyList::empty(py);
        for hit in table.find_many(&refs, index_key).map_err(lookup_error)? {
            match hit {
                Some(hit) => list.append(self.to_py(py, &table, &hit, &select)?)?,
                None => list.append(py.None())?,
            }
        }
        Ok(list)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match key_text(key)? {
            Some(text) => self
                .table
                .load()
                .find(&text, None)
                .map_err(lookup_error)?
                .is_some(),
            None => false,
        })
    }

    /// Rows (an MMDB table: the nodes of its search tree).
    fn __len__(&self) -> usize {
        self.table.load().len()
    }

    fn __repr__(&self) -> String {
        let table = self.table.load();
        let size = if table.is_mmdb() { "nodes" } else { "rows" };
        format!(
            "<EnrichmentTable {} {size}={} keys={}>",
            table.name,
            table.len(),
            self.lookup_keys().join(",")
        )
    }
}
