//! Log files → Arrow batches of events, typed by the table's schema.
//!
//! Declared fields become typed Arrow columns (timestamps as UTC
//! microseconds). Fields the schema does not declare are not dropped: they
//! travel beside the batch as one JSON text per event (`extra`), so a
//! detection reading an undeclared field still gets its value. A line that is
//! not JSON, or a value that cannot take its declared type, is reported with
//! `file:line` (`s3://bucket/key#line` for objects) and reading goes on.

mod batch;
mod input;
mod reader;

pub use batch::{EventBatch, PositionKind};
pub use input::{expand_inputs, read_inputs, Input, PREFETCH, STREAM_ABOVE};
pub use reader::{EventReader, ReadItem, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("input `{path}` does not exist")]
    MissingInput { path: String },
    #[error("input `{path}`: {message}")]
    Input { path: String, message: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}
