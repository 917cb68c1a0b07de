//! Picking up new snapshots during a long run.
//!
//! `enrichment sync` publishes a snapshot by replacing `current.json`. A run
//! polls those pointers (at most once per interval, just before handing the
//! next batch on) and loads what changed into a new [`Generation`]: an
//! immutable set of tables. Each batch carries the generation it was
//! enriched with, and the engine switches the Python tables to that same
//! generation before running rules on it, so a batch sees the old tables or
//! the new ones, never a mix.

use super::snapshot::{definition_sha256, load_current, read_manifest};
use super::{EnrichmentError, Tables};
use crate::config::EnrichmentDef;
use crate::storage::Storage;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One consistent set of table snapshots.
#[derive(Debug, Default)]
pub struct Generation {
    /// 0 for the tables a run starts with, then 1, 2, … per refresh.
    pub id: u64,
    pub tables: Tables,
}

/// A table switched to a newer snapshot mid-run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refresh {
    pub table: String,
    pub snapshot_id: String,
    /// The generation that holds it.
    pub generation: u64,
}

/// Polls the tables' `current.json` pointers.
pub struct TableWatcher {
    defs: Vec<EnrichmentDef>,
    storage: Arc<dyn Storage>,
    interval: Duration,
    last_poll: Instant,
    current: Arc<Generation>,
    /// Snapshots already refused or failed, so each is reported once.
    refused: HashSet<String>,
    pub refreshes: Vec<Refresh>,
    pub errors: Vec<(String, EnrichmentError)>,
}

impl TableWatcher {
    /// Watches the tables of `start` (loaded from `storage`), polling at
    /// most once per `interval` (zero: before every batch).
    pub fn new(
        defs: Vec<EnrichmentDef>,
        storage: Arc<dyn Storage>,
        start: Tables,
        interval: Duration,
    ) -> Self {
        Self {
            defs,
            storage,
            interval,
            last_poll: Instant::now(),
            current: Arc::new(Generation {
                id: 0,
                tables: start,
            }),
            refused: HashSet::new(),
            refreshes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The generation the next batch should use (newer than the last one
    /// if a pointer moved since the last poll).
    pub fn poll(&mut self) -> Arc<Generation> {
        if self.last_poll.elapsed() < self.interval {
            return Arc::clone(&self.current);
        }
        self.last_poll = Instant::now();
        let mut next: Option<Tables> = None;
        for def in &self.defs {
            let loaded = self
                .current
                .tables
                .get(&def.name)
                .and_then(|t| t.manifest.as_ref())
                .map(|m| m.snapshot_id.as_str());
            let manifest = match read_manifest(self.storage.as_ref(), &def.name) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    self.errors.push((def.name.clone(), e));
                    continue;
                }
            };
            if Some(manifest.snapshot_id.as_str()) == loaded
                || self.refused.contains(&manifest.snapshot_id)
            {
                continue;
            }
            if manifest.definition_sha256 != definition_sha256(def) {
                self.refused.insert(manifest.snapshot_id.clone());
                self.errors.push((
                    def.name.clone(),
                    EnrichmentError::Snapshot {
                        table: def.name.clone(),
                        location: manifest.snapshot_id.clone(),
                        message: "was synced from a changed enrichment.yml; this run keeps \
                                  its snapshot (start a new run to use it)"
                            .into(),
                    },
                ));
                continue;
            }
            match load_current(def, self.storage.as_ref()) {
                Ok(table) => {
                    let id = table
                        .manifest
                        .as_ref()
                        .map(|m| m.snapshot_id.clone())
                        .unwrap_or_default();
                    let tables = next.get_or_insert_with(|| self.current.tables.clone());
                    tables.insert(def.name.clone(), Arc::new(table));
                    self.refreshes.push(Refresh {
                        table: def.name.clone(),
                        snapshot_id: id,
                        generation: self.current.id + 1,
                    });
                }
                Err(e) => {
                    self.refused.insert(manifest.snapshot_id.clone());
                    self.errors.push((def.name.clone(), e));
                }
            }
        }
        if let Some(tables) = next {
            self.current = Arc::new(Generation {
                id: self.current.id + 1,
                tables,
            });
        }
        Arc::clone(&self.current)
    }
}
