//! Values between Arrow/JSON and Python objects.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};
use serde_json::{Map, Value};

/// The Arrow value at `row` as a plain Python value (timestamps as UTC
/// `datetime`, dates as `date`, structs as `dict`, lists as `list`).
pub fn arrow_to_py<'py>(
    py: Python<'py>,
    array: &dyn Array,
    row: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if array.is_null(row) {
        return Ok(py.None().into_bound(py));
    }
    Ok(match array.data_type() {
        DataType::Utf8 => PyString::new(py, array.as_string::<i32>().value(row)).into_any(),
        DataType::Boolean => PyBool::new(py, array.as_boolean().value(row))
            .to_owned()
            .into_any(),
        DataType::Int32 => array
            .as_primitive::<Int32Type>()
            .value(row)
            .into_pyobject(py)?
            .into_any(),
        DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .value(row)
            .into_pyobject(py)?
            .into_any(),
        DataType::Float32 => f64::from(array.as_primitive::<Float32Type>().value(row))
            .into_pyobject(py)?
            .into_any(),
        DataType::Float64 => array
            .as_primitive::<Float64Type>()
            .value(row)
            .into_pyobject(py)?
            .into_any(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            match DateTime::from_timestamp_micros(micros) {
                Some(d) => d.into_pyobject(py)?.into_any(),
                None => micros.into_pyobject(py)?.into_any(),
            }
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            match NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(days))) {
                Some(d) => d.into_pyobject(py)?.into_any(),
                None => py.None().into_bound(py),
            }
        }
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            let list = PyList::empty(py);
            for i in 0..values.len() {
                list.append(arrow_to_py(py, values.as_ref(), i)?)?;
            }
            list.into_any()
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let dict = PyDict::new(py);
            for (field, column) in fields.iter().zip(s.columns()) {
                dict.set_item(field.name(), arrow_to_py(py, column.as_ref(), row)?)?;
            }
            dict.into_any()
        }
        _ => json_to_py(py, &crate::schema::json_at(array, row))?,
    })
}

/// A batch row as a dict of only the columns at `indices`.
pub fn row_to_pydict_select<'py>(
    py: Python<'py>,
    batch: &RecordBatch,
    names: &[Py<PyString>],
    indices: &[usize],
    row: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for &i in indices {
        dict.set_item(
            names[i].bind(py),
            arrow_to_py(py, batch.column(i).as_ref(), row)?,
        )?;
    }
    Ok(dict)
}

/// A batch row as a dict, using pre-interned column names.
pub fn row_to_pydict<'py>(
    py: Python<'py>,
    batch: &RecordBatch,
    names: &[Py<PyString>],
    row: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, column) in names.iter().zip(batch.columns()) {
        dict.set_item(name.bind(py), arrow_to_py(py, column.as_ref(), row)?)?;
    }
    Ok(dict)
}

pub fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => json_object_to_py(py, map)?.into_any(),
    })
}

pub fn json_object_to_py<'py>(
    py: Python<'py>,
    map: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, json_to_py(py, v)?)?;
    }
    Ok(dict)
}

/// Adds members of `extra` missing from `dict`, recursing into nested dicts.
pub fn merge_json_into_dict(
    py: Python<'_>,
    dict: &Bound<'_, PyDict>,
    extra: &Map<String, Value>,
) -> PyResult<()> {
    for (k, v) in extra {
        match dict.get_item(k)? {
            Some(existing) if !existing.is_none() => {
                if let (Ok(inner), Value::Object(obj)) = (existing.cast::<PyDict>(), v) {
                    merge_json_into_dict(py, inner, obj)?;
                }
            }
            _ => dict.set_item(k, json_to_py(py, v)?)?,
        }
    }
    Ok(())
}

const MAX_DEPTH: usize = 64;
/// Values converted for one result at most: past this, the rest is left
/// out (a structure sharing one list many times grows fast).
const MAX_NODES: usize = 100_000;

/// What [`py_to_json`] had to leave out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// A container held itself (directly or through others).
    pub cycle: bool,
    /// Nesting deeper than 64 levels.
    pub too_deep: bool,
    /// More than 100,000 values.
    pub too_many: bool,
}

impl Conversion {
    /// Why the result is not the whole value, if it is not.
    pub fn problem(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.cycle {
            parts.push("it contains itself (a cycle), shown as \"<cycle>\"".to_string());
        }
        if self.too_deep {
            parts.push(format!(
                "it nests deeper than {MAX_DEPTH} levels, shown as \"<nested too deeply>\""
            ));
        }
        if self.too_many {
            parts.push(format!(
                "it holds more than {MAX_NODES} values, the rest shown as \"<truncated>\""
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// A Python value as JSON, for alert context: dicts, lists, tuples and sets
/// map structurally; datetimes and dates become ISO 8601 text; anything else
/// becomes its `str()`. Cycles, depth and size are bounded; what was left
/// out is in the returned [`Conversion`].
pub fn py_to_json(value: &Bound<'_, PyAny>) -> (Value, Conversion) {
    let mut converter = Converter {
        path: Vec::new(),
        nodes: 0,
        report: Conversion::default(),
    };
    let json = converter.convert(value, 0);
    (json, converter.report)
}

struct Converter {
    /// The containers being converted, outermost first (their addresses).
    path: Vec<usize>,
    nodes: usize,
    report: Conversion,
}

impl Converter {
    fn convert(&mut self, value: &Bound<'_, PyAny>, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            self.report.too_deep = true;
            return Value::String("<nested too deeply>".into());
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.report.too_many = true;
            return Value::String("<truncated>".into());
        }
        if value.is_none() {
            return Value::Null;
        }
        if let Ok(b) = value.cast::<PyBool>() {
            return Value::Bool(b.is_true());
        }
        if value.is_instance_of::<PyInt>() {
            if let Ok(i) = value.extract::<i64>() {
                return Value::Number(i.into());
            }
            return Value::String(value.to_string());
        }
        if let Ok(f) = value.cast::<PyFloat>() {
            return serde_json::Number::from_f64(f.value())
                .map(Value::Number)
                .unwrap_or(Value::Null);
        }
        if let Ok(s) = value.cast::<PyString>() {
            return Value::String(s.to_string_lossy().into_owned());
        }
        let container = value.is_instance_of::<PyDict>()
            || value.is_instance_of::<PyList>()
            || value.is_instance_of::<PyTuple>()
            || value.is_instance_of::<PySet>();
        if container {
            let address = value.as_ptr() as usize;
            if self.path.contains(&address) {
                self.report.cycle = true;
                return Value::String("<cycle>".into());
            }
            self.path.push(address);
            let json = self.container(value, depth);
            self.path.pop();
            return json;
        }
        if let Ok(iso) = value.call_method0("isoformat") {
            if let Ok(s) = iso.extract::<String>() {
                return Value::String(s);
            }
        }
        if let Ok(to_dict) = value.call_method0("to_dict") {
            return self.convert(&to_dict, depth + 1);
        }
        Value::String(value.to_string())
    }

    fn container(&mut self, value: &Bound<'_, PyAny>, depth: usize) -> Value {
        if let Ok(d) = value.cast::<PyDict>() {
            let mut map = Map::with_capacity(d.len());
            for (k, v) in d.iter() {
                let key = match k.cast::<PyString>() {
                    Ok(s) => s.to_string_lossy().into_owned(),
                    Err(_) => k.to_string(),
                };
                map.insert(key, self.convert(&v, depth + 1));
            }
            return Value::Object(map);
        }
        match value.try_iter() {
            Ok(iter) => Value::Array(
                iter.flatten()
                    .map(|v| self.convert(&v, depth + 1))
                    .collect(),
            ),
            Err(_) => Value::String(value.to_string()),
        }
    }
}
