//! `ravenwatch gc`: removes what interrupted processes left behind, which
//! no reader counts but which takes space: outputs of runs stopped before
//! their commit, snapshot data no manifest names (a sync stopped before
//! its manifest), and on local storage temporary files and locks of
//! processes that no longer run.

use super::EngineError;
use crate::enrichment::Manifest;
use crate::query::{run_incomplete_key, state_run_id};
use crate::storage::Storage;
use std::collections::HashSet;

/// Snapshot data younger than this may belong to a sync still running.
const SETTLE_MS: i64 = 3600 * 1000;

/// What `gc` found (and removed, unless it was a dry run).
#[derive(Debug, Default)]
pub struct GcReport {
    /// Runs stopped before their commit (`runs/<id>/`).
    pub runs: Vec<String>,
    /// Snapshot data files no manifest names.
    pub snapshots: Vec<String>,
    /// Temporary files and locks of processes that no longer run.
    pub leftovers: Vec<String>,
}

/// Finds (with `remove`, deletes) what interrupted processes left.
///
/// # Errors
/// Listing or deleting fails.
pub fn gc(storage: &dyn Storage, remove: bool) -> Result<GcReport, EngineError> {
    let mut report = GcReport::default();
    let listed = storage.list("runs/")?;
    let committed = state_run_id(storage);
    for key in &listed {
        let Some(id) = key
            .strip_prefix("runs/")
            .and_then(|k| k.strip_suffix("/incomplete"))
        else {
            continue;
        };
        if committed.as_deref() == Some(id) {
            continue;
        }
        let prefix = format!("runs/{id}/");
        if remove {
            // The marker last, so an interrupted gc is resumed by the next.
            for k in listed
                .iter()
                .filter(|k| k.starts_with(&prefix) && **k != run_incomplete_key(id))
            {
                storage.delete(k)?;
            }
            storage.delete(&run_incomplete_key(id))?;
        }
        report.runs.push(id.to_string());
    }
    let tables = storage.list_info("enrichment/")?;
    let mut named = HashSet::new();
    for key in tables
        .iter()
        .map(|o| &o.key)
        .filter(|k| k.contains("/manifests/"))
    {
        if let Some(data) = storage.read(key)? {
            match serde_json::from_slice::<Manifest>(&data) {
                Ok(m) => {
                    named.insert(m.data_key);
                }
                // An unreadable manifest: keep everything of its table.
                Err(_) => return with_leftovers(storage, report, remove),
            }
        }
    }
    // A sync writes its data before its manifest: leave recent files to it.
    let settled = chrono::Utc::now().timestamp_millis() - SETTLE_MS;
    for object in tables.iter().filter(|o| o.key.contains("/snapshots/")) {
        if !named.contains(&object.key) && object.modified_ms < settled {
            if remove {
                storage.delete(&object.key)?;
            }
            report.snapshots.push(object.key.clone());
        }
    }
    with_leftovers(storage, report, remove)
}

fn with_leftovers(
    storage: &dyn Storage,
    mut report: GcReport,
    remove: bool,
) -> Result<GcReport, EngineError> {
    report.leftovers = storage.leftovers(remove)?;
    Ok(report)
}
