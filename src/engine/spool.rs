//! Matches on disk until grouping, so a run's memory does not grow with
//! its matches. Each match is appended to a temporary file as it is
//! collected; memory keeps only its event time, sequence and place in the
//! file. Grouping then reads them back in event-time order, one at a time,
//! and writes `matches.jsonl` (with each match's alert id) to another
//! temporary file that the commit moves into the outputs.

use crate::alerts::{AlertGrouper, RuleMatch};
use crate::config::Severity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Every field of a [`RuleMatch`], including those `matches.jsonl` leaves out.
#[derive(Serialize, Deserialize)]
struct Spooled {
    rule: String,
    time_us: i64,
    time: String,
    dedupe: String,
    title: String,
    severity: Severity,
    context: Map<String, Value>,
    source: String,
    event: Map<String, Value>,
    description: Option<String>,
    runbook: Option<String>,
    reference: Option<String>,
    destinations: Vec<String>,
    explicit_destinations: bool,
}

struct Entry {
    time_us: i64,
    sequence: u64,
    offset: u64,
    len: u32,
}

pub(super) struct MatchSpool {
    file: BufWriter<File>,
    written: u64,
    entries: Vec<Entry>,
}

impl MatchSpool {
    /// An empty spool in the system's temporary folder (removed on drop).
    ///
    /// # Errors
    /// The file could not be created.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            written: 0,
            entries: Vec::new(),
        })
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Appends `matches` in collection order.
    ///
    /// # Errors
    /// Writing the file failed.
    pub fn extend(&mut self, matches: impl IntoIterator<Item = RuleMatch>) -> std::io::Result<()> {
        for m in matches {
            let sequence = self.entries.len() as u64;
            let time_us = m.time_us;
            let spooled = Spooled {
                rule: m.rule,
                time_us,
                time: m.time,
                dedupe: m.dedupe,
                title: m.title,
                severity: m.severity,
                context: m.context,
                source: m.source,
                event: m.event,
                description: m.description,
                runbook: m.runbook,
                reference: m.reference,
                destinations: m.destinations,
                explicit_destinations: m.explicit_destinations,
            };
            let text = serde_json::to_vec(&spooled).map_err(std::io::Error::other)?;
            self.file.write_all(&text)?;
            self.entries.push(Entry {
                time_us,
                sequence,
                offset: self.written,
                len: u32::try_from(text.len()).map_err(std::io::Error::other)?,
            });
            self.written += text.len() as u64;
        }
        Ok(())
    }

    /// Feeds every match to `grouper` in event-time order (collection order
    /// among equal times) and writes each, with its alert id, as a line of
    /// the returned file.
    ///
    /// # Errors
    /// Reading or writing a temporary file failed.
    pub fn group(self, grouper: &mut AlertGrouper) -> std::io::Result<tempfile::NamedTempFile> {
        let Self {
            file, mut entries, ..
        } = self;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        entries.sort_by_key(|e| (e.time_us, e.sequence));
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::NamedTempFile::new()?);
        let mut buffer = Vec::new();
        for entry in &entries {
            buffer.resize(entry.len as usize, 0);
            file.read_exact_at(&mut buffer, entry.offset)?;
            let s: Spooled = serde_json::from_slice(&buffer).map_err(std::io::Error::other)?;
            let mut m = RuleMatch {
                alert_id: String::new(),
                rule: s.rule,
                time_us: s.time_us,
                time: s.time,
                dedupe: s.dedupe,
                title: s.title,
                severity: s.severity,
                context: s.context,
                source: s.source,
                event: s.event,
                description: s.description,
                runbook: s.runbook,
                reference: s.reference,
                destinations: s.destinations,
                explicit_destinations: s.explicit_destinations,
                sequence: entry.sequence,
            };
            m.alert_id = grouper.add(&m);
            serde_json::to_writer(&mut out, &m).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())
    }
}
