//! `state/deliveries.json`: per alert and destination, what was sent (the
//! ticket key or thread, and the match count it described) and what is
//! still owed. It is the record that makes delivery exactly-once across
//! runs: a re-run finds the ticket and comments instead of opening another.
//!
//! The file holds small records only and is rewritten after every
//! successful send. The alert itself, needed until every destination has
//! it, waits in its own object (`state/pending/<alert id>.json`), written
//! when queued and deleted once delivered, so a pass over many alerts does
//! not rewrite them all after each send.

use crate::alerts::Alert;
use crate::storage::{key, Precondition, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DELIVERY_STATE_KEY: &str = "state/deliveries.json";
/// Where queued alerts wait until every destination has them.
pub const PENDING_PREFIX: &str = "state/pending";
const FORMAT: u32 = 1;
/// Delivered alerts are forgotten this long (event time) after their window
/// closed; by then the alert state has closed them too, so later matches
/// open new alerts with new ids.
const KEEP_DELIVERED_US: i64 = 7 * 24 * 3600 * 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub format: u32,
    /// Alert id → its deliveries.
    pub alerts: BTreeMap<String, AlertDeliveries>,
}

impl Default for DeliveryState {
    fn default() -> Self {
        Self {
            format: FORMAT,
            alerts: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDeliveries {
    pub rule: String,
    /// The run that queued the newest version of the alert.
    pub run_id: String,
    /// Match count of the newest version queued.
    pub match_count: u64,
    pub window_end_us: i64,
    pub destinations: BTreeMap<String, Target>,
    /// The newest version, while some destination has not received it
    /// (stored under [`PENDING_PREFIX`]; loaded on demand).
    #[serde(skip)]
    pub alert: Option<Alert>,
    /// Whether `alert` is newer than its stored copy.
    #[serde(skip)]
    dirty: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Jira issue key or Slack thread `ts`, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Match count the destination last heard about (0: nothing sent yet).
    pub sent_match_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl AlertDeliveries {
    pub fn is_pending(&self, target: &Target) -> bool {
        target.sent_match_count < self.match_count
    }

    pub fn any_pending(&self) -> bool {
        self.destinations.values().any(|t| self.is_pending(t))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryStateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location}: unreadable delivery state: {message}")]
    Corrupt { location: String, message: String },
    #[error("{location}: the delivery state was changed by another `run` or `deliver` while this one was delivering; what this one sent is recorded up to its last save, run `ravenwatch deliver` again for the rest")]
    Conflict { location: String },
}

/// The persisted state and the version every save is conditional on.
pub struct StoredState {
    pub state: DeliveryState,
    version: Precondition,
    /// Pending copies to delete after the next save.
    delivered: Vec<String>,
}

fn pending_key(alert_id: &str) -> String {
    key(&[PENDING_PREFIX, &format!("{alert_id}.json")])
}

impl StoredState {
    /// # Errors
    /// Storage failures, or a file that cannot be parsed (never replaced:
    /// it holds the ticket keys).
    pub fn load(storage: &dyn Storage) -> Result<Self, DeliveryStateError> {
        match storage.read_versioned(DELIVERY_STATE_KEY)? {
            None => Ok(Self {
                state: DeliveryState::default(),
                version: Precondition::Absent,
                delivered: Vec::new(),
            }),
            Some((bytes, version)) => serde_json::from_slice(&bytes)
                .map(|state| Self {
                    state,
                    version: Precondition::Version(version),
                    delivered: Vec::new(),
                })
                .map_err(|e| DeliveryStateError::Corrupt {
                    location: storage.url(DELIVERY_STATE_KEY),
                    message: e.to_string(),
                }),
        }
    }

    /// Writes the state if nobody else did since it was read (or last
    /// saved), first forgetting delivered alerts long closed.
    ///
    /// # Errors
    /// [`DeliveryStateError::Conflict`] if another process wrote it.
    pub fn save(&mut self, storage: &dyn Storage) -> Result<(), DeliveryStateError> {
        self.prune();
        // Copies first: the state never points at an alert not stored.
        for (id, entry) in &mut self.state.alerts {
            if let (true, Some(alert)) = (entry.dirty, &entry.alert) {
                let json = serde_json::to_vec(alert).map_err(|e| DeliveryStateError::Corrupt {
                    location: storage.url(&pending_key(id)),
                    message: e.to_string(),
                })?;
                storage.write(&pending_key(id), &json)?;
                entry.dirty = false;
            }
        }
        let json = serde_json::to_vec(&self.state).map_err(|e| DeliveryStateError::Corrupt {
            location: storage.url(DELIVERY_STATE_KEY),
            message: e.to_string(),
        })?;
        match storage.write_if(DELIVERY_STATE_KEY, &json, &self.version) {
            Ok(version) => {
                self.version = Precondition::Version(version);
                // A copy left behind by a failed delete is only clutter.
                for id in self.delivered.drain(..) {
                    let _ = storage.delete(&pending_key(&id));
                }
                Ok(())
            }
            Err(StorageError::Conflict { location }) => {
                Err(DeliveryStateError::Conflict { location })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The queued alert `id` (its stored copy, read once).
    ///
    /// # Errors
    /// Storage failures or an unreadable copy; `Ok(None)` if it is missing.
    pub fn alert(
        &mut self,
        storage: &dyn Storage,
        id: &str,
    ) -> Result<Option<Alert>, DeliveryStateError> {
        let Some(entry) = self.state.alerts.get_mut(id) else {
            return Ok(None);
        };
        if entry.alert.is_none() {
            if let Some(bytes) = storage.read(&pending_key(id))? {
                let alert =
                    serde_json::from_slice(&bytes).map_err(|e| DeliveryStateError::Corrupt {
                        location: storage.url(&pending_key(id)),
                        message: e.to_string(),
                    })?;
                entry.alert = Some(alert);
            }
        }
        Ok(entry.alert.clone())
    }

    /// Marks the alert `id` delivered everywhere: its copy goes after the
    /// next save.
    pub fn delivered(&mut self, id: &str) {
        if let Some(entry) = self.state.alerts.get_mut(id) {
            entry.alert = None;
            entry.dirty = false;
            self.delivered.push(id.to_string());
        }
    }

    /// (alert id, its deliveries, destination, target) still owed.
    pub fn owed(&self) -> impl Iterator<Item = (&str, &AlertDeliveries, &str, &Target)> {
        self.state.alerts.iter().flat_map(|(id, a)| {
            a.destinations
                .iter()
                .filter(|(_, t)| a.is_pending(t))
                .map(move |(d, t)| (id.as_str(), a, d.as_str(), t))
        })
    }

    /// How many (alert, destination) pairs are still owed.
    pub fn pending(&self) -> u64 {
        self.owed().count() as u64
    }

    fn prune(&mut self) {
        let newest = self
            .state
            .alerts
            .values()
            .map(|a| a.window_end_us)
            .max()
            .unwrap_or(i64::MIN);
        let horizon = newest.saturating_sub(KEEP_DELIVERED_US);
        self.state
            .alerts
            .retain(|_, a| a.any_pending() || a.window_end_us >= horizon);
    }

    /// Records the newest version of an activated alert for `destinations`;
    /// returns how many destinations now owe a message for it. An older
    /// version (a re-queued past run) changes nothing.
    pub fn enqueue(&mut self, alert: &Alert, destinations: &[String], run_id: &str) -> usize {
        let entry = self
            .state
            .alerts
            .entry(alert.id.clone())
            .or_insert_with(|| AlertDeliveries {
                rule: alert.rule.clone(),
                run_id: run_id.to_string(),
                match_count: 0,
                window_end_us: alert.window_end_us,
                destinations: BTreeMap::new(),
                alert: None,
                dirty: false,
            });
        let newer = alert.match_count > entry.match_count;
        if newer {
            entry.match_count = alert.match_count;
            entry.run_id = run_id.to_string();
            entry.window_end_us = alert.window_end_us;
        }
        let mut added = false;
        for d in destinations {
            if !entry.destinations.contains_key(d) {
                entry.destinations.insert(d.clone(), Target::default());
                added = true;
            }
        }
        let pending = entry
            .destinations
            .values()
            .filter(|t| entry.is_pending(t))
            .count();
        if pending > 0 && (newer || added) {
            entry.alert = Some(alert.clone());
            entry.dirty = true;
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    fn alert(id: &str, matches: u64, window_end_us: i64) -> Alert {
        let mut a: Alert = serde_json::from_str(
            &serde_json::json!({
                "id": id, "rule": "r", "title": "t", "severity": "high", "dedupe": "d",
                "activated": true, "match_count": matches, "threshold": 1,
                "first_match_time": "x", "last_match_time": "x", "window_start": "x",
                "window_end": "x", "created_at": "x", "context": {}, "latest_context": {},
                "description": null, "runbook": null, "reference": null,
                "destinations": ["j"], "tables": [], "false_positives": [], "events": []
            })
            .to_string(),
        )
        .unwrap();
        a.window_end_us = window_end_us;
        a
    }

    #[test]
    fn enqueue_keeps_the_newest_version_and_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let mut stored = StoredState::load(&storage).unwrap();
        let dests = ["j".to_string(), "s".to_string()];
        assert_eq!(stored.enqueue(&alert("a", 2, 0), &dests, "run1"), 2);
        // Delivered to j at 2 matches.
        let entry = stored.state.alerts.get_mut("a").unwrap();
        entry.destinations.get_mut("j").unwrap().sent_match_count = 2;
        // An older version changes nothing; a newer one is owed to both.
        assert_eq!(stored.enqueue(&alert("a", 1, 0), &dests, "old"), 1);
        assert_eq!(stored.state.alerts["a"].run_id, "run1");
        assert_eq!(stored.enqueue(&alert("a", 5, 0), &dests, "run2"), 2);
        assert_eq!(stored.state.alerts["a"].match_count, 5);
        stored.save(&storage).unwrap();

        let mut again = StoredState::load(&storage).unwrap();
        assert_eq!(
            again.state.alerts["a"].destinations,
            stored.state.alerts["a"].destinations
        );
        assert!(
            again.state.alerts["a"].alert.is_none(),
            "the copy is read on demand"
        );
        let copy = again.alert(&storage, "a").unwrap().unwrap();
        assert_eq!(copy.match_count, 5);
        again.delivered("a");
        again.state.alerts.get_mut("a").unwrap().match_count = 6;
        // Each save is conditional on the previous one.
        again.state.alerts.get_mut("a").unwrap().run_id = "run3".into();
        again.save(&storage).unwrap();
        assert!(
            storage.read("state/pending/a.json").unwrap().is_none(),
            "delivered: copy deleted"
        );
        again.state.alerts.get_mut("a").unwrap().run_id = "run4".into();
        again.save(&storage).unwrap();
        assert!(matches!(
            stored.save(&storage),
            Err(DeliveryStateError::Conflict { .. })
        ));
    }

    #[test]
    fn prunes_only_delivered_alerts_long_closed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let mut stored = StoredState::load(&storage).unwrap();
        let day = 24 * 3600 * 1_000_000;
        let dests = ["j".to_string()];
        stored.enqueue(&alert("old-sent", 1, 0), &dests, "r");
        stored.enqueue(&alert("old-pending", 1, 0), &dests, "r");
        stored.enqueue(&alert("new", 1, 10 * day), &dests, "r");
        for id in ["old-sent", "new"] {
            let entry = stored.state.alerts.get_mut(id).unwrap();
            entry.destinations.get_mut("j").unwrap().sent_match_count = 1;
        }
        stored.save(&storage).unwrap();
        let ids: Vec<&str> = stored.state.alerts.keys().map(String::as_str).collect();
        assert_eq!(ids, ["new", "old-pending"]);
    }
}
