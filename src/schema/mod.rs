//! Field types shared by log schemas and enrichment tables.
//!
//! YAML declares fields the way Matano and Iceberg do (`string`, `long`,
//! `{type: list, element: string}`, `{type: struct, fields: [...]}`). This
//! module turns those declarations into Arrow types and normalises incoming
//! JSON values to them, so every reader (JSON lines, CSV, text, S3 uploads)
//! rejects a bad value with the same message and the same field path.

mod coerce;
mod convert;
mod types;

pub use convert::{json_at, micros_to_rfc3339, row_to_json, rows_to_batch};

pub use coerce::{
    coerce_object, coerce_value, parse_timestamp_micros, parse_timestamp_text, CoerceError,
    Leniency,
};
pub use types::{Field, FieldType, TIMESTAMP_TZ};

use arrow::datatypes::{Schema, SchemaRef};
use std::sync::Arc;

/// An ordered list of typed fields: the columns of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub fields: Vec<Field>,
}

impl TableSchema {
    pub fn new(fields: Vec<Field>) -> Self {
        Self { fields }
    }

    /// The field with this top-level name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Every top-level field name, in declaration order.
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name.as_str()).collect()
    }

    /// The Arrow schema; every column is nullable (a missing value is null).
    pub fn to_arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields.iter().map(Field::to_arrow).collect::<Vec<_>>(),
        ))
    }
}
