//! JSON ↔ Arrow for rows already normalised by [`super::coerce_value`].

use super::TableSchema;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, SecondsFormat};
use serde_json::{Map, Value};

/// Builds a batch from normalised JSON rows (objects keyed by field name).
///
/// # Errors
/// Only if a row was not normalised for this schema (a bug, not bad input).
pub fn rows_to_batch(schema: &TableSchema, rows: &[Value]) -> Result<RecordBatch, ArrowError> {
    let arrow_schema = schema.to_arrow();
    let mut decoder = arrow::json::ReaderBuilder::new(std::sync::Arc::clone(&arrow_schema))
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(arrow_schema)))
}

/// RFC 3339 text of epoch microseconds, as written in outputs.
pub fn micros_to_rfc3339(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

/// The value at `row` as JSON: timestamps as RFC 3339 strings, dates as
/// `YYYY-MM-DD`, structs as objects.
pub fn json_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::Float32 => f64::from(array.as_primitive::<Float32Type>().value(row)).into(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row).into(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Value::String(micros_to_rfc3339(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
        )),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            NaiveDate::default()
                .checked_add_signed(chrono::Duration::days(i64::from(days)))
                .map(|d| Value::String(d.to_string()))
                .unwrap_or(Value::Null)
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let values = list.value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| json_at(values.as_ref(), i))
                    .collect(),
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut map = Map::with_capacity(fields.len());
            for (field, column) in fields.iter().zip(s.columns()) {
                map.insert(field.name().clone(), json_at(column.as_ref(), row));
            }
            Value::Object(map)
        }
        other => {
            let formatted =
                arrow::util::display::ArrayFormatter::try_new(array, &Default::default())
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_else(|_| format!("<{other}>"));
            Value::String(formatted)
        }
    }
}

/// One row of a batch as a JSON object.
pub fn row_to_json(batch: &RecordBatch, row: usize) -> Map<String, Value> {
    let mut map = Map::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        map.insert(field.name().clone(), json_at(column.as_ref(), row));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{coerce_value, Field, FieldType, Leniency};
    use serde_json::json;

    #[test]
    fn round_trips_nested_rows() {
        let schema = TableSchema::new(vec![
            Field::new("ts", FieldType::Timestamp),
            Field::new("ips", FieldType::List(Box::new(FieldType::String))),
            Field::new(
                "host",
                FieldType::Struct(vec![Field::new("port", FieldType::Int)]),
            ),
            Field::new("seen", FieldType::Date),
        ]);
        let mut row = json!({"ts": "2024-05-01T10:00:00Z", "ips": ["10.0.0.1", "10.0.0.2"], "host": {"port": "22"}, "seen": "2024-04-30"});
        let ty = FieldType::Struct(schema.fields.clone());
        coerce_value(&mut row, &ty, Leniency::Json).unwrap();
        let batch = rows_to_batch(&schema, &[row]).unwrap();
        assert_eq!(
            Value::Object(row_to_json(&batch, 0)),
            json!({"ts": "2024-05-01T10:00:00Z", "ips": ["10.0.0.1", "10.0.0.2"], "host": {"port": 22}, "seen": "2024-04-30"})
        );
    }
}
