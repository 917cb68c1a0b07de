//! Where snapshots, alert state and run outputs live.
//!
//! Everything persistent goes through the [`Storage`] trait with
//! `/`-separated keys, so the same code writes to a local folder today and to
//! S3 once that backend lands. Writes are atomic per key: a reader sees the
//! old object or the new one, never a torn file.

mod local;

pub use local::LocalStorage;

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: S3 storage is not supported by this build yet; use a local folder")]
    Unsupported(String),
    #[error("invalid storage key `{0}`")]
    InvalidKey(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A flat key/value store of byte objects.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Human-readable location of a key, for messages (`/path/to/key` or `s3://b/k`).
    fn url(&self, key: &str) -> String;
    /// The object, or `None` if it does not exist.
    ///
    /// # Errors
    /// Any failure other than absence.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Replaces the object atomically.
    ///
    /// # Errors
    /// The object is unchanged when this fails.
    fn write(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Keys under a prefix, sorted.
    ///
    /// # Errors
    /// Listing failures.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes the object; absent objects are fine.
    ///
    /// # Errors
    /// Failures other than absence.
    fn delete(&self, key: &str) -> Result<()>;
}

/// Opens the storage named by a location string: a local folder (relative
/// paths are resolved against `base`) or an `s3://` URL.
///
/// # Errors
/// Unsupported schemes.
pub fn open(location: &str, base: &Path) -> Result<Arc<dyn Storage>> {
    if location.starts_with("s3://") {
        return Err(StorageError::Unsupported(location.to_string()));
    }
    let path = PathBuf::from(location);
    let path = if path.is_absolute() {
        path
    } else {
        base.join(path)
    };
    Ok(Arc::new(LocalStorage::new(path)))
}

/// Joins key segments with `/`.
pub fn key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}
