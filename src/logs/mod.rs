//! Log files → Arrow batches of events, typed by the table's schema.
//!
//! Each event is parsed once ([`DecodePlan`]). Declared fields become typed
//! Arrow columns (timestamps as UTC microseconds); undeclared paths that
//! rules read become columns typed by what they hold; the event's own text
//! travels with the batch (`raw`), so nothing the schema leaves out is lost. A line that is
//! not JSON, or a value that cannot take its declared type, is reported with
//! `file:line` (`s3://bucket/key#line` for objects) and reading goes on.

mod batch;
mod decode;
mod follow;
mod input;
mod reader;

pub use batch::{BatchParts, EventBatch, PositionKind, ReadColumn, ReadColumns};
pub use decode::{DecodePlan, FUTURE_SKEW_US, MAX_NESTING};
pub use follow::{Cursors, Follower, PollCost};
pub use input::{
    expand_inputs, frame_inputs, read_inputs, read_inputs_parallel, Input, PREFETCH, STDIN_NAME,
    STREAM_ABOVE,
};
pub use reader::{EventReader, Framed, ReadItem, RecordError, Undecoded};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("input `{path}` does not exist")]
    MissingInput { path: String },
    #[error("input `{path}`: {message}")]
    Input { path: String, message: String },
    #[error(
        "input `{path}`: the folder holds no log files (hidden and non-regular files are skipped)"
    )]
    EmptyFolder { path: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

impl LogError {
    /// A mistake in the inputs named on the command line (a path that does
    /// not exist, an empty folder) rather than a failure to read them.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LogError::MissingInput { .. } | LogError::Input { .. } | LogError::EmptyFolder { .. }
        )
    }
}
