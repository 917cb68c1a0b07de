//! Enrichment tables as Python objects: `known_ip_info.get("1.1.1.1")`.

use super::convert::row_to_pydict;
use crate::enrichment::{EnrichmentTable, Lookup};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString};
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

    fn row<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyDict>> {
        row_to_pydict(py, &self.table.batch, &self.column_names, row)
    }
}

/// Lookup keys are text: `str` as is, `int` as its decimal form, `bool` as
/// `true`/`false`; `None` finds nothing.
fn key_text<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, str>>> {
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
        "lookup keys must be str or int, got {}",
        key.get_type().name()?
    )))
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

    /// The row whose key equals `key` (the newest on duplicates), as a dict, or `None`.
    #[pyo3(signature = (key, index_key = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(text) = key_text(key)? else {
            return Ok(py.None().into_bound(py));
        };
        match self.table.lookup(&text, index_key).map_err(lookup_error)? {
            Some(row) => Ok(self.row(py, row)?.into_any()),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Every row whose key equals `key`, oldest first.
    #[pyo3(signature = (key, index_key = None))]
    fn get_all<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        index_key: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        if let Some(text) = key_text(key)? {
            for row in self
                .table
                .lookup_all(&text, index_key)
                .map_err(lookup_error)?
            {
                list.append(self.row(py, row)?)?;
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
