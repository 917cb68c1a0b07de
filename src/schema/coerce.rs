//! Normalising JSON values to declared field types.
//!
//! Readers parse rows into `serde_json::Value`s; `coerce_value` rewrites each
//! value in place into the exact form the Arrow JSON decoder expects
//! (timestamps become epoch microseconds, dates epoch days, numeric strings
//! numbers), or returns the path of the first value that does not fit.

use super::{Field, FieldType};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Number, Value};

/// How forgiving conversions from strings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leniency {
    /// JSON input: values keep their JSON type, except that numeric strings
    /// may fill number fields and a scalar may fill a one-element list.
    Json,
    /// CSV and text input: every cell is a string; list cells are split on
    /// the delimiter and empty cells are null.
    Text { list_delimiter: char },
}

/// A value that does not fit its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoerceError {
    /// Dotted path of the offending field, outermost first (`source.port`,
    /// `ips[2]`).
    pub path: String,
    pub message: String,
}

impl CoerceError {
    fn new(message: String) -> Self {
        Self {
            path: String::new(),
            message,
        }
    }

    fn within(mut self, segment: &str) -> Self {
        if self.path.is_empty() {
            self.path = segment.to_string();
        } else if self.path.starts_with('[') {
            self.path = format!("{segment}{}", self.path);
        } else {
            self.path = format!("{segment}.{}", self.path);
        }
        self
    }
}

fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(57)])
    } else {
        text
    }
}

fn mismatch(value: &Value, ty: &FieldType) -> CoerceError {
    CoerceError::new(format!("{} is not a valid {}", show(value), ty.describe()))
}

/// Rewrites `value` in place so that it has the canonical JSON form of `ty`.
///
/// # Errors
/// Returns the path (relative to `value`) and reason of the first value that
/// cannot take its declared type.
pub fn coerce_value(
    value: &mut Value,
    ty: &FieldType,
    leniency: Leniency,
) -> Result<(), CoerceError> {
    if value.is_null() {
        return Ok(());
    }
    if let (Leniency::Text { .. }, Value::String(s)) = (leniency, &*value) {
        if s.is_empty() {
            *value = Value::Null;
            return Ok(());
        }
    }
    match ty {
        FieldType::String => coerce_string(value, ty),
        FieldType::Int | FieldType::Long => coerce_integer(value, ty),
        FieldType::Float | FieldType::Double => coerce_float(value, ty),
        FieldType::Boolean => coerce_bool(value),
        FieldType::Timestamp => coerce_timestamp(value),
        FieldType::Date => coerce_date(value),
        FieldType::List(element) => coerce_list(value, ty, element, leniency),
        FieldType::Struct(fields) => coerce_struct(value, ty, fields, leniency),
    }
}

fn coerce_string(value: &mut Value, ty: &FieldType) -> Result<(), CoerceError> {
    match value {
        Value::String(_) => Ok(()),
        Value::Number(n) => {
            *value = Value::String(n.to_string());
            Ok(())
        }
        Value::Bool(b) => {
            *value = Value::String(b.to_string());
            Ok(())
        }
        _ => Err(mismatch(value, ty)),
    }
}

fn coerce_integer(value: &mut Value, ty: &FieldType) -> Result<(), CoerceError> {
    let parsed = match &*value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let n = parsed.ok_or_else(|| mismatch(value, ty))?;
    if *ty == FieldType::Int && i32::try_from(n).is_err() {
        return Err(CoerceError::new(format!("{n} is out of range for int")));
    }
    *value = Value::Number(n.into());
    Ok(())
}

fn coerce_float(value: &mut Value, ty: &FieldType) -> Result<(), CoerceError> {
    let parsed = match &*value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    };
    let f = parsed.ok_or_else(|| mismatch(value, ty))?;
    *value = Value::Number(Number::from_f64(f).ok_or_else(|| mismatch(value, ty))?);
    Ok(())
}

fn coerce_bool(value: &mut Value) -> Result<(), CoerceError> {
    let parsed = match &*value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => parse_bool(s),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        _ => None,
    };
    let b = parsed.ok_or_else(|| {
        CoerceError::new(format!(
            "{} is not a valid boolean (expected true/false, yes/no or 1/0)",
            show(value)
        ))
    })?;
    *value = Value::Bool(b);
    Ok(())
}

fn coerce_timestamp(value: &mut Value) -> Result<(), CoerceError> {
    let micros = parse_timestamp_micros(value).ok_or_else(|| {
        CoerceError::new(format!(
            "{} is not a valid timestamp (expected RFC 3339 or epoch seconds/millis)",
            show(value)
        ))
    })?;
    *value = Value::Number(micros.into());
    Ok(())
}

fn coerce_date(value: &mut Value) -> Result<(), CoerceError> {
    let days = match &*value {
        Value::String(s) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .ok()
            .or_else(|| parse_datetime(s).map(|d| d.date_naive()))
            .map(|d| (d - NaiveDate::default()).num_days()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    let days = days.ok_or_else(|| {
        CoerceError::new(format!(
            "{} is not a valid date (expected YYYY-MM-DD)",
            show(value)
        ))
    })?;
    *value = Value::Number(days.into());
    Ok(())
}

fn coerce_list(
    value: &mut Value,
    ty: &FieldType,
    element: &FieldType,
    leniency: Leniency,
) -> Result<(), CoerceError> {
    if !value.is_array() {
        let items = match (leniency, &*value) {
            (Leniency::Text { list_delimiter }, Value::String(s)) => s
                .split(list_delimiter)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
            (_, Value::Object(_)) if !matches!(*element, FieldType::Struct(_)) => {
                return Err(mismatch(value, ty))
            }
            _ => vec![value.take()],
        };
        *value = Value::Array(items);
    }
    let Value::Array(items) = value else {
        unreachable!("made an array above")
    };
    for (i, item) in items.iter_mut().enumerate() {
        coerce_value(item, element, leniency).map_err(|e| e.within(&format!("[{i}]")))?;
    }
    Ok(())
}

fn coerce_struct(
    value: &mut Value,
    ty: &FieldType,
    fields: &[Field],
    leniency: Leniency,
) -> Result<(), CoerceError> {
    if let (Leniency::Text { .. }, Value::String(s)) = (leniency, &*value) {
        match serde_json::from_str::<Value>(s) {
            Ok(parsed @ Value::Object(_)) => *value = parsed,
            _ => return Err(mismatch(value, ty)),
        }
    }
    let Value::Object(map) = value else {
        return Err(mismatch(value, ty));
    };
    coerce_object(map, fields, leniency)
}

/// Coerces the declared members of an object; undeclared members are left as they are.
///
/// # Errors
/// The first member that does not fit, with its path.
pub fn coerce_object(
    map: &mut Map<String, Value>,
    fields: &[super::Field],
    leniency: Leniency,
) -> Result<(), CoerceError> {
    for field in fields {
        if let Some(member) = map.get_mut(&field.name) {
            coerce_value(member, &field.field_type, leniency).map_err(|e| e.within(&field.name))?;
        }
    }
    Ok(())
}

/// Epoch microseconds of a timestamp written as text (RFC 3339, a few
/// common variants, or epoch seconds/millis/micros as a numeric string).
pub fn parse_timestamp_text(s: &str) -> Option<i64> {
    match parse_datetime(s) {
        Some(d) => Some(d.timestamp_micros()),
        None => s.trim().parse::<f64>().ok().and_then(epoch_to_micros),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Some(naive.and_utc());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(d) = DateTime::parse_from_str(s, format) {
            return Some(d.with_timezone(&Utc));
        }
    }
    None
}

/// Epoch numbers are read by magnitude: seconds below 1e11 (year 5138),
/// milliseconds below 1e14, microseconds below 1e17, nanoseconds above.
fn epoch_to_micros(n: f64) -> Option<i64> {
    let abs = n.abs();
    let micros = if abs < 1e11 {
        n * 1e6
    } else if abs < 1e14 {
        n * 1e3
    } else if abs < 1e17 {
        n
    } else {
        n / 1e3
    };
    micros.is_finite().then_some(micros.round() as i64)
}

/// Event time of a JSON value in epoch microseconds, if it is one.
pub fn parse_timestamp_micros(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => parse_timestamp_text(s),
        Value::Number(n) => n.as_f64().and_then(epoch_to_micros),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn co(mut v: Value, ty: FieldType, l: Leniency) -> Result<Value, CoerceError> {
        coerce_value(&mut v, &ty, l).map(|_| v)
    }
    const CSV: Leniency = Leniency::Text {
        list_delimiter: ';',
    };

    #[test]
    fn timestamps_from_strings_and_epochs() {
        let expected = json!(1_700_000_000_000_000i64);
        for input in [
            json!("2023-11-14T22:13:20Z"),
            json!("2023-11-14T22:13:20+00:00"),
            json!("2023-11-14 22:13:20"),
            json!(1_700_000_000),
            json!(1_700_000_000_000i64),
            json!("1700000000"),
        ] {
            assert_eq!(
                co(input.clone(), FieldType::Timestamp, Leniency::Json).unwrap(),
                expected,
                "{input}"
            );
        }
        let err = co(json!("yesterday"), FieldType::Timestamp, Leniency::Json).unwrap_err();
        assert!(err.message.contains("not a valid timestamp"));
    }

    #[test]
    fn booleans_reject_maybe() {
        assert_eq!(
            co(json!("yes"), FieldType::Boolean, CSV).unwrap(),
            json!(true)
        );
        let err = co(json!("maybe"), FieldType::Boolean, CSV).unwrap_err();
        assert_eq!(
            err.message,
            "\"maybe\" is not a valid boolean (expected true/false, yes/no or 1/0)"
        );
    }

    #[test]
    fn csv_lists_split_and_nested_paths_reported() {
        let ty = FieldType::List(Box::new(FieldType::String));
        assert_eq!(
            co(json!("10.0.0.1; 10.0.0.2"), ty, CSV).unwrap(),
            json!(["10.0.0.1", "10.0.0.2"])
        );
        let ports = FieldType::Struct(vec![super::super::Field::new(
            "ports",
            FieldType::List(Box::new(FieldType::Int)),
        )]);
        let err = co(json!({"ports": [1, "x"]}), ports, Leniency::Json).unwrap_err();
        assert_eq!(err.path, "ports[1]");
    }

    #[test]
    fn ints_accept_numeric_strings_and_reject_fractions() {
        assert_eq!(
            co(json!("443"), FieldType::Int, Leniency::Json).unwrap(),
            json!(443)
        );
        assert!(co(json!(1.5), FieldType::Long, Leniency::Json).is_err());
        assert!(co(json!(1i64 << 40), FieldType::Int, Leniency::Json).is_err());
        assert_eq!(
            co(json!(123456789012i64), FieldType::String, Leniency::Json).unwrap(),
            json!("123456789012")
        );
    }

    #[test]
    fn empty_csv_cell_is_null() {
        assert_eq!(co(json!(""), FieldType::Long, CSV).unwrap(), Value::Null);
    }
}
