//! Enrichment tables as Python objects: `known_ip_info.get("1.1.1.1")`.

use super::convert::{row_to_pydict, row_to_pydict_select};
use crate::enrichment::{composite_key, EnrichmentTable, Lookup};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::sync::Arc;

#[pyclass(frozen, module = "ravenwatch.enrichment", name = "EnrichmentTable")]
pub struct PyTable {
    table: Arc<EnrichmentTable>,
    column_names: Vec<Py<PyString>>,
}

impl PyTable {
    pub fn new(py: Python<'_>, table: Arc<EnrichmentTable>) -> Self {
        let column_names = table
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| PyString::intern(py, f.name()).unbind())
            .collect();
        Self {
            table,
            column_names,
        }
    }

    /// Column positions for `select=[...]` (`None`: every column).
    fn selection(&self, select: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<usize>>> {
        let Some(select) = select.filter(|s| !s.is_none()) else {
            return Ok(None);
        };
        let names: Vec<String> = if let Ok(s) = select.cast::<PyString>() {
            vec![s.to_string_lossy().into_owned()]
        } else {
            select
                .extract()
                .map_err(|_| PyTypeError::new_err("select must be a list of column names"))?
        };
        let schema = self.table.batch.schema();
        names
            .iter()
            .map(|n| {
                schema.index_of(n).map_err(|_| {
                    PyKeyError::new_err(format!(
                        "table `{}` has no column `{n}`; its columns are: {}",
                        self.table.name,
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
            .map(Some)
    }

    fn row<'py>(
        &self,
        py: Python<'py>,
        row: usize,
        select: Option<&[usize]>,
    ) -> PyResult<Bound<'py, PyDict>> {
        match select {
            None => row_to_pydict(py, &self.table.batch, &self.column_names, row),
            Some(indices) => {
                row_to_pydict_select(py, &self.table.batch, &self.column_names, indices, row)
            }
        }
    }
}

/// One part of a key as text: `str` as is, `int` as its decimal form,
/// `bool` as `true`/`false`; `None` is no key.
fn part_text<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, str>>> {
    if key.is_none() {
        return Ok(None);
    }
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(Some(s.to_cow()?));
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(Some(Cow::Borrowed(if b.is_true() {
            "true"
        } else {
            "false"
        })));
    }
    if key.is_instance_of::<PyInt>() {
        return Ok(Some(Cow::Owned(key.to_string())));
    }
    Err(PyTypeError::new_err(format!(
        "lookup keys must be str, int or a tuple of those (composite keys), got {}",
        key.get_type().name()?
    )))
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

fn lookup_error(e: crate::enrichment::EnrichmentError) -> PyErr {
    PyKeyError::new_err(e.to_string())
}

#[pymethods]
impl PyTable {
    #[getter]
    fn name(&self) -> &str {
        &self.table.name
    }

    /// Names of the lookup keys, the default first.
    #[getter]
    fn lookup_keys(&self) -> Vec<String> {
        self.table.keys.iter().map(|k| k.name.clone()).collect()
    }

    /// The row whose key matches `key` (the newest on duplicates; for a
    /// CIDR key the most specific range), as a dict, or `default`.
    #[pyo3(signature = (key, index_key = None, default = None, select = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
        default: Option<Bound<'py, PyAny>>,
        select: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let found = match key_text(key)? {
            Some(text) => self.table.lookup(&text, index_key).map_err(lookup_error)?,
            None => None,
        };
        match found {
            Some(row) => {
                let select = self.selection(select.as_ref())?;
                Ok(self.row(py, row, select.as_deref())?.into_any())
            }
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Every matching row: oldest first, or for a CIDR key every
    /// containing range, most specific first.
    #[pyo3(signature = (key, index_key = None, select = None))]
    fn get_all<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
        select: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        if let Some(text) = key_text(key)? {
            let select = self.selection(select.as_ref())?;
            for row in self
                .table
                .lookup_all(&text, index_key)
                .map_err(lookup_error)?
            {
                list.append(self.row(py, row, select.as_deref())?)?;
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
        let select = self.selection(select.as_ref())?;
        let items: Vec<Bound<'py, PyAny>> = keys
            .try_iter()
            .map_err(|_| PyTypeError::new_err("lookup_many takes an iterable of keys"))?
            .collect::<PyResult<_>>()?;
        let mut texts: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(items.len());
        for item in &items {
            texts.push(key_text(item)?);
        }
        let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
        let rows = self
            .table
            .lookup_many(&refs, index_key)
            .map_err(lookup_error)?;
        let list = PyList::empty(py);
        for row in rows {
            match row {
                Some(row) => list.append(self.row(py, row, select.as_deref())?)?,
                None => list.append(py.None())?,
            }
        }
        Ok(list)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match key_text(key)? {
            Some(text) => self
                .table
                .lookup(&text, None)
                .map_err(lookup_error)?
                .is_some(),
            None => false,
        })
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<EnrichmentTable {} rows={} keys={}>",
            self.table.name,
            self.table.len(),
            self.lookup_keys().join(",")
        )
    }
}
