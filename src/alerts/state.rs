use super::Alert;
use crate::storage::{Precondition, Storage, StorageError};

/// The version of the state object a run started from (`None`: there was none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateVersion(Option<String>);
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the alert state lives (`query` reads which run wrote it).
pub const STATE_KEY: &str = crate::query::ALERT_STATE_KEY;
pub const STATE_FORMAT: u32 = 1;
/// Closed windows are kept this long past the newest event time, so late
/// events still join their alert.
pub const GRACE_US: i64 = 24 * 3600 * 1_000_000;

/// Open alert windows carried between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub format: u32,
    /// The run that wrote this state (absent in states of older versions):
    /// that run is committed even if it was stopped before it could say so
    /// beside its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Newest event time seen so far, epoch microseconds.
    pub watermark_us: i64,
    pub alerts: Vec<Alert>,
    /// The ledger entries of the run that wrote this state (its journal):
    /// the inputs it processed, by where they are (absolute path or `s3://`
    /// URL), with the version of their content and the run. Committed in
    /// the same write as the alerts, so one is never recorded without the
    /// other; the next run writes them out as markers (`super::ledger`),
    /// which hold the rest of the ledger. A state of an older version holds
    /// the whole ledger here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputRecord>,
    /// Storage key of the Panther caching helpers' store as this run left
    /// it (`state/kv/<run id>.sqlite3`), committed by this same write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<String>,
    /// A grouping shard's record of the inputs whose matches it merged
    /// (their version), so a batch sent again adds nothing (`inputs` is
    /// then the ledger part the shard keeps).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, InputRecord>,
}

/// One processed input in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// S3 ETag, or `size:blake3` (hash of the bytes) of a local file.
    pub version: String,
    /// The input's cheap stamp when last seen (ETag; `size:mtime` of a
    /// file): while it holds, the content is not hashed again.
    #[serde(default)]
    pub stamp: String,
    pub run_id: String,
}

impl Default for AlertState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            run_id: None,
            watermark_us: i64::MIN,
            alerts: Vec::new(),
            inputs: BTreeMap::new(),
            kv: None,
            applied: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location}: unreadable alert state: {message}. The file was left as it is and nothing ran. Repair it, or move it aside (`mv {location} {location}.unreadable`) and run again: that run starts with no open windows, so pending thresholds and dedupe windows start over (earlier alerts stay in earlier runs' outputs)")]
    Corrupt { location: String, message: String },
    #[error("{location}: the alert state was changed by another run while this one was running; this run's results were not committed (its outputs were removed), run it again")]
    Conflict { location: String },
}

impl AlertState {
    /// The persisted state (or an empty one) and the version it was read
    /// at, which [`AlertState::save`] is conditional on.
    ///
    /// # Errors
    /// Storage failures, or a state file that cannot be parsed (never
    /// silently replaced: that would forget open windows).
    pub fn load(storage: &dyn Storage) -> Result<(Self, StateVersion), StateError> {
        Self::load_at(storage, STATE_KEY)
    }

    /// As [`AlertState::load`], from `key` (a grouping shard's state).
    ///
    /// # Errors
    /// As [`AlertState::load`].
    pub fn load_at(storage: &dyn Storage, key: &str) -> Result<(Self, StateVersion), StateError> {
        match storage.read_versioned(key)? {
            None => Ok((Self::default(), StateVersion(None))),
            Some((bytes, version)) => serde_json::from_slice(&bytes)
                .map(|state| (state, StateVersion(Some(version))))
                .map_err(|e| StateError::Corrupt {
                    location: storage.url(key),
                    message: e.to_string(),
                }),
        }
    }

    /// Replaces the persisted state atomically, only if nobody changed it
    /// since it was read at `read`.
    ///
    /// # Errors
    /// [`StateError::Conflict`] if another run wrote it first; storage
    /// failures. The persisted state is unchanged in both cases.
    pub fn save(&self, storage: &dyn Storage, read: &StateVersion) -> Result<(), StateError> {
        let json = serde_json::to_vec(self).map_err(|e| StateError::Corrupt {
            location: storage.url(STATE_KEY),
            message: e.to_string(),
        })?;
        conflict(storage.write_if(STATE_KEY, &json, &read.condition()))
    }
}

impl StateVersion {
    /// Whether there was a state object at all.
    pub fn exists(&self) -> bool {
        self.0.is_some()
    }

    fn condition(&self) -> Precondition {
        match &self.0 {
            Some(version) => Precondition::Version(version.clone()),
            None => Precondition::Absent,
        }
    }
}

fn conflict(result: Result<String, StorageError>) -> Result<(), StateError> {
    match result {
        Ok(_) => Ok(()),
        Err(StorageError::Conflict { location }) => Err(StateError::Conflict { location }),
        Err(e) => Err(e.into()),
    }
}

/// Writes the state as JSON to `out`, one alert at a time: each item is an
/// alert's JSON (as `serde_json` writes an [`Alert`]), in the order the
/// state keeps them (rule, then dedupe key). The same document as
/// [`AlertState`] serialises to, without holding every alert.
///
/// # Errors
/// The first failure of `alerts` or of writing.
pub fn write_state<W: std::io::Write, T: AsRef<[u8]>>(
    mut out: W,
    run_id: &str,
    watermark_us: i64,
    alerts: impl IntoIterator<Item = std::io::Result<T>>,
    (inputs, applied): (
        &BTreeMap<String, InputRecord>,
        &BTreeMap<String, InputRecord>,
    ),
    kv: Option<&str>,
) -> std::io::Result<W> {
    let run_id = serde_json::to_string(run_id).map_err(std::io::Error::other)?;
    write!(
        out,
        r#"{{"format":{STATE_FORMAT},"run_id":{run_id},"watermark_us":{watermark_us},"alerts":["#
    )?;
    for (i, alert) in alerts.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(alert?.as_ref())?;
    }
    out.write_all(b"]")?;
    if !inputs.is_empty() {
        out.write_all(br#","inputs":"#)?;
        serde_json::to_writer(&mut out, inputs).map_err(std::io::Error::other)?;
    }
    if let Some(kv) = kv {
        out.write_all(br#","kv":"#)?;
        serde_json::to_writer(&mut out, kv).map_err(std::io::Error::other)?;
    }
    if !applied.is_empty() {
        out.write_all(br#","applied":"#)?;
        serde_json::to_writer(&mut out, applied).map_err(std::io::Error::other)?;
    }
    out.write_all(b"}")?;
    Ok(out)
}

/// Makes the file at `path` (written by [`write_state`]) the persisted
/// state, only if nobody changed it since it was read at `read`.
///
/// # Errors
/// As [`AlertState::save`].
pub fn commit_state_file(
    storage: &dyn Storage,
    key: &str,
    read: &StateVersion,
    path: &std::path::Path,
) -> Result<(), StateError> {
    conflict(storage.put_file_if(key, path, &read.condition()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_state_reads_back_as_the_serialised_one() {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "id": "a", "rule": "r", "title": "t", "severity": "low", "dedupe": "d",
            "activated": true, "match_count": 2, "threshold": 1,
            "first_match_time": "x", "last_match_time": "y", "window_start": "x",
            "window_end": "z", "created_at": "now", "context": {"k": [1, 2.5]},
            "latest_context": {}, "description": null, "runbook": null, "reference": null,
            "destinations": [], "tables": [], "false_positives": [],
            "events": [{"e": 1}], "window_start_us": 5, "window_end_us": 9, "last_match_us": 6
        }))
        .unwrap();
        let mut state = AlertState {
            format: STATE_FORMAT,
            run_id: Some("r1".into()),
            watermark_us: 42,
            alerts: vec![alert.clone(), alert],
            inputs: BTreeMap::new(),
            kv: Some("state/kv/r0.sqlite3".into()),
            applied: BTreeMap::new(),
        };
        for inputs in [
            BTreeMap::new(),
            BTreeMap::from([(
                "s3://b/k".to_string(),
                InputRecord {
                    version: "\"e1\"".into(),
                    stamp: "\"e1\"".into(),
                    run_id: "r0".into(),
                },
            )]),
        ] {
            state.inputs = inputs;
            let items = state
                .alerts
                .iter()
                .map(|a| serde_json::to_vec(a).map_err(std::io::Error::other));
            let streamed = write_state(
                Vec::new(),
                "r1",
                42,
                items,
                (&state.inputs, &state.applied),
                state.kv.as_deref(),
            )
            .unwrap();
            assert_eq!(streamed, serde_json::to_vec(&state).unwrap());
        }
    }
}
