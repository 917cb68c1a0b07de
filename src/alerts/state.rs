use super::Alert;
use crate::storage::{Precondition, Storage, StorageError};

/// The version of the state object a run started from (`None`: there was none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateVersion(Option<String>);
use serde::{Deserialize, Serialize};

pub const STATE_KEY: &str = "state/alerts.json";
pub const STATE_FORMAT: u32 = 1;
/// Closed windows are kept this long past the newest event time, so late
/// events still join their alert.
pub const GRACE_US: i64 = 24 * 3600 * 1_000_000;

/// Open alert windows carried between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub format: u32,
    /// Newest event time seen so far, epoch microseconds.
    pub watermark_us: i64,
    pub alerts: Vec<Alert>,
}

impl Default for AlertState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            watermark_us: i64::MIN,
            alerts: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location}: unreadable alert state: {message}")]
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
        match storage.read_versioned(STATE_KEY)? {
            None => Ok((Self::default(), StateVersion(None))),
            Some((bytes, version)) => serde_json::from_slice(&bytes)
                .map(|state| (state, StateVersion(Some(version))))
                .map_err(|e| StateError::Corrupt {
                    location: storage.url(STATE_KEY),
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
        save_alerts(
            storage,
            read,
            self.watermark_us,
            self.alerts.iter().collect(),
        )
    }
}

/// The persisted form, over alerts held elsewhere (a run's own alerts are
/// not copied to be saved).
#[derive(Serialize)]
struct StateView<'a> {
    format: u32,
    watermark_us: i64,
    alerts: Vec<&'a Alert>,
}

/// [`AlertState::save`] for `alerts` (sorted as the state keeps them) and
/// `watermark_us`.
///
/// # Errors
/// As [`AlertState::save`].
pub fn save_alerts(
    storage: &dyn Storage,
    read: &StateVersion,
    watermark_us: i64,
    alerts: Vec<&Alert>,
) -> Result<(), StateError> {
    let view = StateView {
        format: STATE_FORMAT,
        watermark_us,
        alerts,
    };
    let json = serde_json::to_vec(&view).map_err(|e| StateError::Corrupt {
        location: storage.url(STATE_KEY),
        message: e.to_string(),
    })?;
    let condition = match &read.0 {
        Some(version) => Precondition::Version(version.clone()),
        None => Precondition::Absent,
    };
    match storage.write_if(STATE_KEY, &json, &condition) {
        Ok(_) => Ok(()),
        Err(StorageError::Conflict { location }) => Err(StateError::Conflict { location }),
        Err(e) => Err(e.into()),
    }
}
