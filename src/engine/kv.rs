//! The store behind Panther's caching helpers (`panther_detection_helpers.
//! caching`) during a run: an SQLite file the workers share, copied from
//! the committed state before the run and committed with it as
//! `state/kv/<run id>.sqlite3`, named in `state/alerts.json`. A run that
//! fails commits neither, so a counter never counts an input twice.

use super::EngineError;
use crate::alerts::AlertState;
use crate::config::Project;
use crate::storage::Storage;
use std::path::PathBuf;

/// The environment variable that tells a worker where the store is.
pub const KV_ENV: &str = "RAVENWATCH_PANTHER_KV";

/// The run's private copy of the store.
pub(super) struct RunKv {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    /// The key the committed state names (removed once the new one is).
    pub previous: Option<String>,
}

impl RunKv {
    /// The committed store (empty when there is none yet), for a project
    /// with Panther rules; `None` otherwise.
    ///
    /// # Errors
    /// The state names a store that cannot be read.
    pub fn prepare(
        project: &Project,
        storage: &dyn Storage,
        state: &AlertState,
    ) -> Result<Option<Self>, EngineError> {
        if project.panther.is_none() {
            return Ok(None);
        }
        let dir = tempfile::tempdir().map_err(|e| super::spool_error(&e))?;
        let path = dir.path().join("kv.sqlite3");
        if let Some(key) = &state.kv {
            let bytes = storage.read(key)?.ok_or_else(|| {
                EngineError::Internal(format!(
                    "the alert state names the caching store {} but it is missing; restore it, or remove `kv` from state/alerts.json to start the counters afresh",
                    storage.url(key)
                ))
            })?;
            std::fs::write(&path, bytes).map_err(|e| super::spool_error(&e))?;
        }
        Ok(Some(Self {
            _dir: dir,
            path,
            previous: state.kv.clone(),
        }))
    }

    /// Where this run's store is committed.
    pub fn key(run_id: &str) -> String {
        format!("state/kv/{run_id}.sqlite3")
    }

    /// Uploads the store as the run left it (before the state names it).
    ///
    /// # Errors
    /// The upload failed.
    pub fn upload(&self, storage: &dyn Storage, run_id: &str) -> Result<String, EngineError> {
        let key = Self::key(run_id);
        if self.path.exists() {
            storage.put_file(&key, &self.path)?;
        } else {
            // No rule touched the store: an empty file keeps the chain.
            storage.write(&key, b"")?;
        }
        Ok(key)
    }
}
