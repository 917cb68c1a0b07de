//! The input ledger as one small object per input
//! (`state/ledger/<ab>/<hash>.json`), so that checking a run's inputs costs
//! one read per input and a commit writes only what it adds, however many
//! inputs came before. Kept inside the alert state, the ledger would grow
//! with every object ever read (about 150 bytes each: 75 MB a day for one
//! organisation's CloudTrail) and be read and rewritten whole by every run.
//!
//! A run's state commit still carries the run's own new entries (its
//! journal, `AlertState::inputs`), so the alert windows and the inputs that
//! produced them are committed in one write. The next run writes that
//! journal out as markers before its own commit replaces it; a run that
//! fails writes nothing new, and writing a marker twice is harmless. A
//! grouping round writes the markers of its inputs once its batches are
//! written: they are then claimed, since the merges will apply them.

use super::InputRecord;
use crate::storage::{in_parallel, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Where the markers live in the storage.
pub const LEDGER_PREFIX: &str = "state/ledger";

/// Reads and writes in flight at once (S3 latency, not bandwidth, bounds
/// a marker's cost).
const PARALLEL: usize = 16;

/// A marker: the input it is for (hashes could collide, in principle) and
/// its record.
#[derive(Serialize, Deserialize)]
struct Marker {
    location: String,
    #[serde(flatten)]
    record: InputRecord,
}

/// The marker key of an input location.
pub fn marker_key(location: &str) -> String {
    let hash = blake3::hash(location.as_bytes()).to_hex();
    format!("{LEDGER_PREFIX}/{}/{}.json", &hash[..2], &hash[2..32])
}

/// Writes `entries` as markers.
///
/// # Errors
/// The first write that fails (the rest may or may not be written: the
/// journal that holds them is kept until a later run succeeds).
pub fn write_markers(
    storage: &dyn Storage,
    entries: &BTreeMap<String, InputRecord>,
) -> Result<(), StorageError> {
    let entries: Vec<(&String, &InputRecord)> = entries.iter().collect();
    in_parallel(&entries, PARALLEL, |(location, record)| {
        let marker = Marker {
            location: (*location).clone(),
            record: (*record).clone(),
        };
        let bytes = serde_json::to_vec(&marker).expect("a marker serialises");
        storage.write(&marker_key(location), &bytes)
    })
    .map(|_| ())
}

/// The ledger records of `locations` the ledger holds: `journal` (the
/// committed state's own entries) first, then their markers.
///
/// # Errors
/// A marker that cannot be read (absent ones are simply not processed).
pub fn known(
    storage: &dyn Storage,
    journal: &BTreeMap<String, InputRecord>,
    locations: &[String],
) -> Result<HashMap<String, InputRecord>, StorageError> {
    let mut found: HashMap<String, InputRecord> = HashMap::new();
    let mut ask = Vec::new();
    for location in locations {
        match journal.get(location) {
            Some(record) => {
                found.insert(location.clone(), record.clone());
            }
            None => ask.push(location),
        }
    }
    let read = in_parallel(&ask, PARALLEL, |location| {
        let key = marker_key(location);
        let Some(bytes) = storage.read(&key)? else {
            return Ok(None);
        };
        // A marker that does not parse, or names another input, is no
        // record: the input is read again rather than lost, and said so.
        let marker = match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) if &m.location == *location => Some(m.record),
            Ok(m) => {
                eprintln!(
                    "warning: {}: ledger marker of {} (a hash collision), not of {location}: {location} is read as new",
                    storage.url(&key),
                    m.location
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "warning: {}: unreadable ledger marker ({e}): {location} is read as new",
                    storage.url(&key)
                );
                None
            }
        };
        Ok(marker)
    })?;
    for (location, record) in ask.into_iter().zip(read) {
        if let Some(record) = record {
            found.insert(location.clone(), record);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    fn record(version: &str) -> InputRecord {
        InputRecord {
            version: version.into(),
            stamp: version.into(),
            run_id: "r1".into(),
        }
    }

    #[test]
    fn markers_answer_for_their_inputs_and_the_journal_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let written: BTreeMap<String, InputRecord> = (0..40)
            .map(|n| (format!("s3://b/logs/{n}.json"), record("v1")))
            .collect();
        write_markers(&storage, &written).unwrap();
        let journal = BTreeMap::from([("s3://b/logs/0.json".to_string(), record("v2"))]);
        let ask: Vec<String> = ["0", "1", "39", "40"]
            .iter()
            .map(|n| format!("s3://b/logs/{n}.json"))
            .collect();
        let found = known(&storage, &journal, &ask).unwrap();
        assert_eq!(found.len(), 3, "40 was never written");
        assert_eq!(found["s3://b/logs/0.json"].version, "v2");
        assert_eq!(found["s3://b/logs/39.json"].version, "v1");
        // A damaged marker is no record: the input is read again.
        storage
            .write(&marker_key("s3://b/logs/1.json"), b"not json")
            .unwrap();
        let found = known(&storage, &BTreeMap::new(), &ask[1..2]).unwrap();
        assert!(found.is_empty());
    }
}
