//! Matches and alerts on disk, so a run's memory does not grow with its
//! input. Each match is appended to a temporary file as it is collected;
//! memory keeps only its event time, sequence and place in the file.
//! Grouping then reads them back in event-time order, one at a time, and
//! writes `matches.jsonl` (with each match's alert id) to another temporary
//! file that the commit moves into the outputs. Alerts whose windows close
//! during grouping go to a third file ([`AlertSpool`]); outputs and the
//! state are written from it, one alert at a time.

use crate::alerts::{Alert, AlertGrouper, Closed, RuleMatch};
use crate::config::Severity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Every field of a [`RuleMatch`], including those `matches.jsonl` leaves out.
#[derive(Serialize, Deserialize)]
pub(super) struct Spooled {
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
    #[serde(default)]
    unique: Option<String>,
}

impl From<RuleMatch> for Spooled {
    fn from(m: RuleMatch) -> Self {
        Self {
            rule: m.rule,
            time_us: m.time_us,
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
            unique: m.unique,
        }
    }
}

impl Spooled {
    pub(super) fn into_match(self, sequence: u64) -> RuleMatch {
        RuleMatch {
            alert_id: String::new(),
            rule: self.rule,
            time_us: self.time_us,
            time: self.time,
            dedupe: self.dedupe,
            title: self.title,
            severity: self.severity,
            context: self.context,
            source: self.source,
            event: self.event,
            description: self.description,
            runbook: self.runbook,
            reference: self.reference,
            destinations: self.destinations,
            explicit_destinations: self.explicit_destinations,
            unique: self.unique,
            sequence,
        }
    }
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
    newest_us: i64,
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
            newest_us: i64::MIN,
        })
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The newest event time among the matches (`i64::MIN` if none).
    pub fn newest_us(&self) -> i64 {
        self.newest_us
    }

    /// Appends `matches` in collection order.
    ///
    /// # Errors
    /// Writing the file failed.
    pub fn extend(&mut self, matches: impl IntoIterator<Item = RuleMatch>) -> std::io::Result<()> {
        for m in matches {
            let sequence = self.entries.len() as u64;
            let time_us = m.time_us;
            self.newest_us = self.newest_us.max(time_us);
            let spooled = Spooled::from(m);
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

    /// Hands every match's text (a [`Spooled`] as JSON) to `each`, in
    /// collection order.
    ///
    /// # Errors
    /// Reading the file failed, or the first error of `each`.
    pub fn for_each_text(
        self,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        let mut buffer = Vec::new();
        for entry in &self.entries {
            buffer.resize(entry.len as usize, 0);
            file.read_exact_at(&mut buffer, entry.offset)?;
            each(&buffer)?;
        }
        Ok(())
    }

    /// Feeds every match to `grouper` in event-time order (collection order
    /// among equal times) and writes each, with its alert id, as a line of
    /// the returned file; alerts go to `alerts` as their windows close.
    /// Returns the file and the grouper's watermark.
    ///
    /// # Errors
    /// Reading or writing a temporary file failed.
    pub fn group(
        self,
        mut grouper: AlertGrouper,
        alerts: &mut AlertSpool,
    ) -> std::io::Result<(tempfile::NamedTempFile, i64)> {
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
            let mut m = s.into_match(entry.sequence);
            m.alert_id = grouper.add(&m);
            for closed in grouper.drain_closed() {
                alerts.push(closed)?;
            }
            serde_json::to_writer(&mut out, &m).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        let watermark_us = grouper.watermark_us();
        for closed in grouper.finish() {
            alerts.push(closed)?;
        }
        Ok((out.into_inner().map_err(|e| e.into_error())?, watermark_us))
    }
}

/// Where an alert is in the spool, and what it sorts by.
struct AlertEntry {
    window_start_us: i64,
    rule: std::sync::Arc<str>,
    dedupe: Box<str>,
    offset: u64,
    len: u32,
    touched: bool,
    keep: bool,
}

/// Alerts as grouping closes them: each alert's JSON appended to a
/// temporary file, memory keeping only what orders it.
pub(super) struct AlertSpool {
    file: BufWriter<File>,
    written: u64,
    entries: Vec<AlertEntry>,
    rules: std::collections::HashMap<String, std::sync::Arc<str>>,
}

impl AlertSpool {
    /// # Errors
    /// The file could not be created.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            written: 0,
            entries: Vec::new(),
            rules: std::collections::HashMap::new(),
        })
    }

    /// # Errors
    /// Writing the file failed.
    pub fn push(&mut self, closed: Closed) -> std::io::Result<()> {
        let Closed {
            alert,
            touched,
            keep,
        } = closed;
        let text = serde_json::to_vec(&alert).map_err(std::io::Error::other)?;
        self.file.write_all(&text)?;
        let rule = match self.rules.get(&alert.rule) {
            Some(rule) => std::sync::Arc::clone(rule),
            None => {
                let rule: std::sync::Arc<str> = alert.rule.as_str().into();
                self.rules
                    .insert(alert.rule.clone(), std::sync::Arc::clone(&rule));
                rule
            }
        };
        self.entries.push(AlertEntry {
            window_start_us: alert.window_start_us,
            rule,
            dedupe: alert.dedupe.into_boxed_str(),
            offset: self.written,
            len: u32::try_from(text.len()).map_err(std::io::Error::other)?,
            touched,
            keep,
        });
        self.written += text.len() as u64;
        Ok(())
    }

    /// The spooled alerts, ordered for the outputs and for the state.
    ///
    /// # Errors
    /// Flushing the file failed.
    pub fn finish(self) -> std::io::Result<RunAlerts> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        let mut entries = self.entries;
        let place = |e: &AlertEntry| (e.offset, e.len);
        entries.sort_by(|a, b| {
            (&a.rule, &a.dedupe, a.window_start_us).cmp(&(&b.rule, &b.dedupe, b.window_start_us))
        });
        // The state holds one window per (rule, dedupe): the newest.
        let mut state: Vec<(u64, u32)> = Vec::new();
        let mut previous: Option<&AlertEntry> = None;
        for e in entries.iter().filter(|e| e.keep) {
            if previous.is_some_and(|p| p.rule == e.rule && p.dedupe == e.dedupe) {
                state.pop();
            }
            state.push(place(e));
            previous = Some(e);
        }
        entries.retain(|e| e.touched);
        entries.sort_by(|a, b| {
            (a.window_start_us, &a.rule, &a.dedupe).cmp(&(b.window_start_us, &b.rule, &b.dedupe))
        });
        let run = entries.iter().map(place).collect();
        Ok(RunAlerts { file, run, state })
    }
}

/// A run's alerts (in output order: first match time, rule, dedupe key)
/// and the windows the state keeps (by rule and dedupe key), read back
/// from the spool one at a time.
pub struct RunAlerts {
    file: File,
    run: Vec<(u64, u32)>,
    state: Vec<(u64, u32)>,
}

impl RunAlerts {
    pub fn len(&self) -> usize {
        self.run.len()
    }

    fn text(&self, (offset, len): (u64, u32)) -> std::io::Result<Vec<u8>> {
        let mut buffer = vec![0; len as usize];
        self.file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    /// The run's alerts, in output order.
    pub fn iter(&self) -> impl Iterator<Item = std::io::Result<Alert>> + '_ {
        self.run
            .iter()
            .map(|&place| serde_json::from_slice(&self.text(place)?).map_err(std::io::Error::other))
    }

    /// Each window the state keeps, as its JSON, in the state's order.
    pub fn state_texts(&self) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + '_ {
        self.state.iter().map(|&place| self.text(place))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(rule: &str, dedupe: &str, start: i64, touched: bool, keep: bool) -> Closed {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "id": format!("{rule}/{dedupe}/{start}"), "rule": rule, "title": "t",
            "severity": "low", "dedupe": dedupe, "activated": true, "match_count": 1,
            "threshold": 1, "first_match_time": "x", "last_match_time": "x",
            "window_start": "x", "window_end": "x", "created_at": "x", "context": {},
            "latest_context": {}, "description": null, "runbook": null, "reference": null,
            "destinations": [], "tables": [], "false_positives": [], "events": [],
            "window_start_us": start, "window_end_us": start + 10, "last_match_us": start
        }))
        .unwrap();
        Closed {
            alert,
            touched,
            keep,
        }
    }

    #[test]
    fn alerts_come_back_in_output_order_and_the_state_keeps_the_newest_window_per_key() {
        let mut spool = AlertSpool::new().unwrap();
        // Closing order differs from output order.
        for c in [
            closed("r", "b", 30, true, true),
            closed("r", "a", 10, true, false),
            closed("q", "z", 10, true, true),
            closed("r", "a", 20, true, true),
            closed("r", "old", 1, false, true),
            closed("r", "b", 40, true, true),
        ] {
            spool.push(c).unwrap();
        }
        let run = spool.finish().unwrap();
        let ids: Vec<String> = run.iter().map(|a| a.unwrap().id).collect();
        assert_eq!(
            ids,
            ["q/z/10", "r/a/10", "r/a/20", "r/b/30", "r/b/40"],
            "by first match time, then rule and dedupe; the untouched window is not the run's"
        );
        let state: Vec<String> = run
            .state_texts()
            .map(|t| serde_json::from_slice::<Alert>(&t.unwrap()).unwrap().id)
            .collect();
        assert_eq!(state, ["q/z/10", "r/a/20", "r/b/40", "r/old/1"]);
    }
}
