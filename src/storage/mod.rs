//! Where snapshots, alert state and run outputs live.
//!
//! Everything persistent goes through the [`Storage`] trait with
//! `/`-separated keys, so the same code writes to a local folder or to S3.
//! Writes are atomic per key: a reader sees the old object or the new one,
//! never a torn file. Objects several runs may update (alert state, table
//! pointers) are written with a precondition on the version that was read,
//! so a racing writer is refused instead of silently overwritten.

mod local;
mod requests;
mod s3;

pub(crate) use s3::{runtime as aws_runtime, shared_config as aws_shared_config};

pub use local::LocalStorage;
pub(crate) use requests::CountRequests;
pub use requests::{request_counts, requests_line};
pub use s3::{parse_url as parse_s3_url, S3Storage, MULTIPART_PART_SIZE};

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
    #[error("invalid storage key `{0}`")]
    InvalidKey(String),
    #[error("{location}: S3 {operation} failed: {code}: {message}")]
    S3 {
        location: String,
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("{location}: cannot reach the S3 endpoint {endpoint}: {message}")]
    Unreachable {
        location: String,
        endpoint: String,
        message: String,
    },
    #[error(
        "{location}: the object changed since it was read (another run wrote it); not overwritten"
    )]
    Conflict { location: String },
    /// Another process holds the lock of a conditional write.
    #[error("{location}: another ravenwatch process is writing it: {lock} is held by {owner}. If that process no longer runs, delete {lock} and run again")]
    Locked {
        location: String,
        lock: String,
        owner: String,
    },
    #[error("{0}")]
    Config(String),
}

/// Where and how to reach S3; `None` fields fall back to the standard AWS
/// environment and configuration files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: Option<bool>,
    pub profile: Option<String>,
    /// Attempts per request, retries included (default 4).
    pub max_attempts: Option<u32>,
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the storage root.
    pub key: String,
    pub size: u64,
    /// Changes whenever the content changes (S3 ETag; size and mtime locally).
    pub version: String,
    /// Last modification, epoch milliseconds.
    pub modified_ms: i64,
}

/// One level or range of a listing ([`Storage::list_after`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects, sorted by key.
    pub objects: Vec<ObjectInfo>,
    /// With a delimited listing: the folders directly below the prefix
    /// (keys relative to the storage root, no trailing `/`), sorted.
    pub folders: Vec<String>,
    /// Requests it took (S3 pages), for the cost a poll reports.
    pub requests: u32,
}

/// Condition of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The object must not exist yet.
    Absent,
    /// The object must still have this version (from `read_versioned`).
    Version(String),
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
    /// The object and its version token (for [`Storage::write_if`]).
    ///
    /// # Errors
    /// Any failure other than absence.
    fn read_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>>;
    /// A streaming reader over the object, for objects too large to hold.
    ///
    /// # Errors
    /// The object is missing or cannot be opened.
    fn reader(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>>;
    /// Replaces the object atomically.
    ///
    /// # Errors
    /// The object is unchanged when this fails.
    fn write(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Replaces the object only if `condition` holds, and returns its new
    /// version (for the next conditional write).
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when it does not; the object is unchanged.
    fn write_if(&self, key: &str, data: &[u8], condition: &Precondition) -> Result<String>;
    /// Copies a local file to `key`, streaming it (multipart on S3).
    ///
    /// # Errors
    /// Read or write failures; no partial object is left behind.
    fn put_file(&self, key: &str, path: &Path) -> Result<()>;
    /// [`Storage::write_if`] with the data in a local file. Local storage
    /// streams it; S3 sends it as one conditional PUT (read into memory).
    ///
    /// # Errors
    /// As [`Storage::write_if`]; a file that cannot be read.
    fn put_file_if(&self, key: &str, path: &Path, condition: &Precondition) -> Result<String> {
        let data = std::fs::read(path).map_err(|source| StorageError::Io {
            location: path.display().to_string(),
            source,
        })?;
        self.write_if(key, &data, condition)
    }
    /// Files a killed process left that no reader uses (local storage:
    /// `.tmp-<pid>` files and locks of processes that no longer run); with
    /// `remove`, deletes them. Their paths, for the report. Object stores
    /// write whole objects and leave none.
    ///
    /// # Errors
    /// The folder cannot be walked or a file removed.
    fn leftovers(&self, remove: bool) -> Result<Vec<String>> {
        let _ = remove;
        Ok(Vec::new())
    }
    /// Objects under a prefix (a folder-like prefix: `a` lists `a/…`), sorted by key.
    ///
    /// # Errors
    /// Listing failures.
    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// The objects under `prefix` (a folder) whose keys sort after
    /// `start_after` (S3: `StartAfter`, so the listing costs what it
    /// returns). With `delimited`, only the objects directly in the folder
    /// and the folders below it (S3: `Delimiter=/`).
    ///
    /// # Errors
    /// Listing failures.
    fn list_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimited: bool,
    ) -> Result<Listing> {
        let folder = prefix.trim_end_matches('/');
        let mut listing = Listing {
            requests: 1,
            ..Listing::default()
        };
        for object in self.list_info(folder)? {
            if start_after.is_some_and(|after| object.key.as_str() <= after) {
                continue;
            }
            let rest = object
                .key
                .strip_prefix(folder)
                .unwrap_or(&object.key)
                .trim_start_matches('/');
            match rest.split_once('/') {
                Some((child, _)) if delimited => {
                    let child = if folder.is_empty() {
                        child.to_string()
                    } else {
                        format!("{folder}/{child}")
                    };
                    if listing.folders.last() != Some(&child) {
                        listing.folders.push(child);
                    }
                }
                _ => listing.objects.push(object),
            }
        }
        listing.folders.dedup();
        Ok(listing)
    }
    /// The object at exactly `key`, without listing (S3: one HeadObject);
    /// `None` when absent.
    ///
    /// # Errors
    /// Failures other than absence.
    fn info(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let (parent, _) = key.rsplit_once('/').unwrap_or(("", key));
        Ok(self.list_info(parent)?.into_iter().find(|o| o.key == key))
    }
    /// Keys under a prefix, sorted.
    ///
    /// # Errors
    /// Listing failures.
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_info(prefix)?.into_iter().map(|o| o.key).collect())
    }
    /// Removes the object; absent objects are fine.
    ///
    /// # Errors
    /// Failures other than absence.
    fn delete(&self, key: &str) -> Result<()>;
    /// Checks that the storage is reachable and usable (the bucket exists,
    /// the credentials work), so a command can fail before doing any work.
    ///
    /// # Errors
    /// The first problem found.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// `work` over `items`, `width` at a time on scoped threads, results in
/// item order: for storage calls, whose cost is latency, not CPU.
///
/// # Errors
/// The first error in item order (other calls may have run).
pub fn in_parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    width: usize,
    work: impl Fn(&T) -> std::result::Result<R, E> + Sync,
) -> std::result::Result<Vec<R>, E> {
    if items.len() <= 1 || width <= 1 {
        return items.iter().map(&work).collect();
    }
    let chunk = items.len().div_ceil(width);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(|| {
                    part.iter()
                        .map(&work)
                        .collect::<std::result::Result<Vec<R>, E>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for handle in handles {
            out.extend(handle.join().expect("a storage thread panicked")?);
        }
        Ok(out)
    })
}

/// Opens the storage named by a location string: a local folder (relative
/// paths are resolved against `base`) or an `s3://bucket/prefix` URL.
///
/// # Errors
/// A malformed S3 URL.
pub fn open(location: &str, base: &Path, aws: &AwsSettings) -> Result<Arc<dyn Storage>> {
    if location.starts_with("s3://") {
        return Ok(Arc::new(S3Storage::open(location, aws)?));
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
