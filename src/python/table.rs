//! Enrichment tables as Python objects: `known_ip_info.get("1.1.1.1")`.

use super::convert::{json_to_py, row_to_pydict, row_to_pydict_select};
use crate::enrichment::{composite_key, EnrichmentTable, GeoDb, Lookup};
use arc_swap::ArcSwap;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::sync::Arc;

#[pyclass(frozen, module = "ravenwatch.enrichment", name = "EnrichmentTable")]
pub struct PyTable {
    /// Swapped between batches when a newer snapshot is published (see
    /// [`PyTable::replace`]); detections keep the object they imported.
    table: ArcSwap<EnrichmentTable>,
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
            table: ArcSwap::new(table),
            column_names,
        }
    }

    /// Makes `table` (a newer snapshot of the same definition, so the same
    /// columns) what every later lookup sees.
    pub fn replace(&self, table: Arc<EnrichmentTable>) {
        self.table.store(table);
    }

    /// The snapshot lookups currently see.
    pub fn current(&self) -> Arc<EnrichmentTable> {
        self.table.load_full()
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
        let table = self.table.load();
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
            .map(Some)
    }

    fn row<'py>(
        &self,
        py: Python<'py>,
        table: &EnrichmentTable,
        row: usize,
        select: Option<&[usize]>,
    ) -> PyResult<Bound<'py, PyDict>> {
        match select {
            None => row_to_pydict(py, &table.batch, &self.column_names, row),
            Some(indices) => {
                row_to_pydict_select(py, &table.batch, &self.column_names, indices, row)
            }
        }
    }
}

/// An MMDB record as a dict, keeping only the `select`ed top-level keys.
fn geo_record<'py>(
    py: Python<'py>,
    geo: &GeoDb,
    key: &str,
    select: Option<&[String]>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let record = geo.lookup(key).map_err(PyValueError::new_err)?;
    let Some(mut record) = record else {
        return Ok(None);
    };
    if let (Some(keep), serde_json::Value::Object(map)) = (select, &mut record) {
        map.retain(|k, _| keep.iter().any(|s| s == k));
    }
    json_to_py(py, &record).map(Some)
}

/// `select=[...]` of an MMDB lookup: top-level record keys.
fn geo_selection(select: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(select) = select.filter(|s| !s.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = select.cast::<PyString>() {
        return Ok(Some(vec![s.to_string_lossy().into_owned()]));
    }
    select
        .extract()
        .map(Some)
        .map_err(|_| PyTypeError::new_err("select must be a list of field names"))
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

/// An `index_key` that an MMDB table does not have.
fn check_geo_key(table: &EnrichmentTable, index_key: Option<&str>) -> PyResult<()> {
    table.check_key(index_key).map_err(lookup_error)
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
        let missing = || default.clone().unwrap_or_else(|| py.None().into_bound(py));
        let Some(text) = key_text(key)? else {
            return Ok(missing());
        };
        if table.is_mmdb() {
            check_geo_key(&table, index_key)?;
            let select = geo_selection(select.as_ref())?;
            return Ok(match table.geo() {
                Some(geo) => geo_record(py, geo, &text, select.as_deref())?,
                None => None,
            }
            .unwrap_or_else(missing));
        }
        match table.lookup(&text, index_key).map_err(lookup_error)? {
            Some(row) => {
                let select = self.selection(select.as_ref())?;
                Ok(self.row(py, &table, row, select.as_deref())?.into_any())
            }
            None => Ok(missing()),
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
        let Some(text) = key_text(key)? else {
            return Ok(list);
        };
        if table.is_mmdb() {
            check_geo_key(&table, index_key)?;
            let select = geo_selection(select.as_ref())?;
            if let Some(geo) = table.geo() {
                if let Some(record) = geo_record(py, geo, &text, select.as_deref())? {
                    list.append(record)?;
                }
            }
            return Ok(list);
        }
        let select = self.selection(select.as_ref())?;
        for row in table.lookup_all(&text, index_key).map_err(lookup_error)? {
            list.append(self.row(py, &table, row, select.as_deref())?)?;
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
        let items: Vec<Bound<'py, PyAny>> = keys
            .try_iter()
            .map_err(|_| PyTypeError::new_err("lookup_many takes an iterable of keys"))?
            .collect::<PyResult<_>>()?;
        let mut texts: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(items.len());
        for item in &items {
            texts.push(key_text(item)?);
        }
        let list = PyList::empty(py);
        if table.is_mmdb() {
            check_geo_key(&table, index_key)?;
            let select = geo_selection(select.as_ref())?;
            for text in &texts {
                let record = match (text, table.geo()) {
                    (Some(text), Some(geo)) => geo_record(py, geo, text, select.as_deref())?,
                    _ => None,
                };
                list.append(record.unwrap_or_else(|| py.None().into_bound(py)))?;
            }
            return Ok(list);
        }
        let select = self.selection(select.as_ref())?;
        let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
        let rows = table.lookup_many(&refs, index_key).map_err(lookup_error)?;
        for row in rows {
            match row {
                Some(row) => list.append(self.row(py, &table, row, select.as_deref())?)?,
                None => list.append(py.None())?,
            }
        }
        Ok(list)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let table = self.table.load();
        let Some(text) = key_text(key)? else {
            return Ok(false);
        };
        if table.is_mmdb() {
            return Ok(table.geo().and_then(|g| g.offset(&text)).is_some());
        }
        Ok(table.lookup(&text, None).map_err(lookup_error)?.is_some())
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
