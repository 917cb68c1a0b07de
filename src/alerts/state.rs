use super::Alert;
use crate::storage::{Storage, StorageError};
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
}

impl AlertState {
    /// The persisted state, or an empty one.
    ///
    /// # Errors
    /// Storage failures, or a state file that cannot be parsed (never
    /// silently replaced: that would forget open windows).
    pub fn load(storage: &dyn Storage) -> Result<Self, StateError> {
        match storage.read(STATE_KEY)? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                location: storage.url(STATE_KEY),
                message: e.to_string(),
            }),
        }
    }

    /// Replaces the persisted state atomically.
    ///
    /// # Errors
    /// Storage failures; the previous state is then intact.
    pub fn save(&self, storage: &dyn Storage) -> Result<(), StateError> {
        let json = serde_json::to_vec(self).map_err(|e| StateError::Corrupt {
            location: storage.url(STATE_KEY),
            message: e.to_string(),
        })?;
        storage.write(STATE_KEY, &json)?;
        Ok(())
    }
}
