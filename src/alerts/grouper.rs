//! Rule matches → alerts: grouped by (rule, dedupe) in event-time order,
//! windows opened at the first match and continued from the persisted
//! state, activated at the threshold.

use super::state::{self, AlertState};
use super::{Alert, RuleMatch, MAX_ALERT_EVENTS};
use crate::config::DetectionDef;
use crate::schema::micros_to_rfc3339;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};

/// Per-rule alert settings.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub threshold: u64,
    pub window_us: i64,
    pub tables: Vec<String>,
    pub false_positives: Vec<String>,
}

impl From<&DetectionDef> for RuleSettings {
    fn from(d: &DetectionDef) -> Self {
        Self {
            threshold: d.threshold,
            window_us: i64::try_from(d.dedupe_window_minutes)
                .unwrap_or(i64::MAX / 60_000_000)
                .saturating_mul(60_000_000),
            tables: d.tables.clone(),
            false_positives: d.false_positives.clone(),
        }
    }
}

fn alert_id(rule: &str, dedupe: &str, window_start_us: i64) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(dedupe.as_bytes());
    h.update([0]);
    h.update(window_start_us.to_le_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Groups matches into alerts, starting from persisted open windows.
pub struct AlertGrouper {
    rules: HashMap<String, RuleSettings>,
    open: HashMap<(String, String), Alert>,
    touched: BTreeSet<String>,
    finished: Vec<Alert>,
    created_at: String,
    watermark_us: i64,
}

impl AlertGrouper {
    pub fn new(
        rules: HashMap<String, RuleSettings>,
        state: AlertState,
        created_at: String,
    ) -> Self {
        let open = state
            .alerts
            .into_iter()
            .map(|a| ((a.rule.clone(), a.dedupe.clone()), a))
            .collect();
        Self {
            rules,
            open,
            touched: BTreeSet::new(),
            finished: Vec::new(),
            created_at,
            watermark_us: state.watermark_us,
        }
    }

    /// Adds matches (in any order; they are sorted by event time here) and
    /// sets each match's `alert_id`.
    pub fn add_all(&mut self, matches: &mut [RuleMatch]) {
        matches.sort_by_key(|m| (m.time_us, m.sequence));
        for m in matches.iter_mut() {
            m.alert_id = self.add(m);
        }
    }

    /// Adds one match (callers add in event-time order) and returns the id
    /// of its alert.
    pub fn add(&mut self, m: &RuleMatch) -> String {
        let settings = self.rules.get(&m.rule).cloned().unwrap_or(RuleSettings {
            threshold: 1,
            window_us: 60 * 60_000_000,
            tables: Vec::new(),
            false_positives: Vec::new(),
        });
        self.watermark_us = self.watermark_us.max(m.time_us);
        let key = (m.rule.clone(), m.dedupe.clone());
        if let Some(alert) = self.open.get_mut(&key) {
            if m.time_us < alert.window_end_us {
                alert.match_count += 1;
                if m.time_us >= alert.last_match_us {
                    alert.last_match_us = m.time_us;
                    alert.last_match_time = m.time.clone();
                    alert.latest_context = m.context.clone();
                }
                if m.time_us < alert.window_start_us {
                    alert.first_match_time = m.time.clone();
                }
                alert.severity = alert.severity.max(m.severity);
                for d in &m.destinations {
                    if !alert.destinations.contains(d) {
                        alert.destinations.push(d.clone());
                    }
                }
                alert.explicit_destinations |= m.explicit_destinations;
                if alert.events.len() < MAX_ALERT_EVENTS {
                    alert.events.push(super::EventText::new(&m.event));
                }
                if !alert.activated && alert.match_count >= settings.threshold {
                    alert.activated = true;
                }
                self.touched.insert(alert.id.clone());
                return alert.id.clone();
            }
        }
        let id = alert_id(&m.rule, &m.dedupe, m.time_us);
        let window_end_us = m.time_us.saturating_add(settings.window_us);
        let alert = Alert {
            id: id.clone(),
            rule: m.rule.clone(),
            title: m.title.clone(),
            severity: m.severity,
            dedupe: m.dedupe.clone(),
            activated: settings.threshold <= 1,
            match_count: 1,
            threshold: settings.threshold,
            first_match_time: m.time.clone(),
            last_match_time: m.time.clone(),
            window_start: m.time.clone(),
            window_end: micros_to_rfc3339(window_end_us),
            created_at: self.created_at.clone(),
            context: m.context.clone(),
            latest_context: m.context.clone(),
            description: m.description.clone(),
            runbook: m.runbook.clone(),
            reference: m.reference.clone(),
            destinations: m.destinations.clone(),
            explicit_destinations: m.explicit_destinations,
            tables: settings.tables.clone(),
            false_positives: settings.false_positives.clone(),
            events: vec![super::EventText::new(&m.event)],
            window_start_us: m.time_us,
            window_end_us,
            last_match_us: m.time_us,
        };
        if let Some(previous) = self.open.insert(key, alert) {
            self.finished.push(previous);
        }
        self.touched.insert(id.clone());
        id
    }

    /// Alerts created or updated by this run (sorted by first match time),
    /// and the state to persist: windows still open at the watermark (the
    /// newest event time seen) minus a day of grace for late events. An
    /// alert that is both is held once, among the run's alerts.
    pub fn finish(self) -> (Vec<Alert>, NewState) {
        let Self {
            open,
            touched,
            finished,
            watermark_us,
            ..
        } = self;
        let horizon = watermark_us.saturating_sub(state::GRACE_US);
        let mut mine: Vec<(Alert, bool)> = Vec::new();
        let mut carried = Vec::new();
        for alert in open.into_values() {
            let keep = alert.window_end_us >= horizon;
            if touched.contains(&alert.id) {
                mine.push((alert, keep));
            } else if keep {
                carried.push(alert);
            }
        }
        mine.extend(
            finished
                .into_iter()
                .filter(|a| touched.contains(&a.id))
                .map(|a| (a, false)),
        );
        mine.sort_by(|(a, _), (b, _)| {
            (a.window_start_us, &a.rule, &a.dedupe).cmp(&(b.window_start_us, &b.rule, &b.dedupe))
        });
        let kept = mine
            .iter()
            .enumerate()
            .filter(|(_, (_, keep))| *keep)
            .map(|(i, _)| i)
            .collect();
        let alerts = mine.into_iter().map(|(a, _)| a).collect();
        (
            alerts,
            NewState {
                watermark_us,
                carried,
                kept,
            },
        )
    }
}

/// The alert state a run leaves: open windows it did not touch, and which
/// of its own alerts stay open.
#[derive(Debug)]
pub struct NewState {
    pub watermark_us: i64,
    carried: Vec<Alert>,
    /// Indices into the run's alerts.
    kept: Vec<usize>,
}

impl NewState {
    /// Every open window, sorted by (rule, dedupe) as the state keeps them.
    pub fn alerts<'a>(&'a self, run_alerts: &'a [Alert]) -> Vec<&'a Alert> {
        let mut all: Vec<&Alert> = self
            .carried
            .iter()
            .chain(self.kept.iter().map(|&i| &run_alerts[i]))
            .collect();
        all.sort_by(|a, b| (&a.rule, &a.dedupe).cmp(&(&b.rule, &b.dedupe)));
        all
    }

    /// The state as the next run loads it.
    pub fn to_state(&self, run_alerts: &[Alert]) -> AlertState {
        AlertState {
            format: state::STATE_FORMAT,
            watermark_us: self.watermark_us,
            alerts: self.alerts(run_alerts).into_iter().cloned().collect(),
        }
    }

    /// Persists it (see [`AlertState::save`]).
    ///
    /// # Errors
    /// As [`AlertState::save`].
    pub fn save(
        &self,
        run_alerts: &[Alert],
        storage: &dyn crate::storage::Storage,
        read: &state::StateVersion,
    ) -> Result<(), state::StateError> {
        state::save_alerts(storage, read, self.watermark_us, self.alerts(run_alerts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;
    use serde_json::Map;

    fn m(rule: &str, dedupe: &str, minute: i64, seq: u64) -> RuleMatch {
        let time_us = 1_700_000_000_000_000 + minute * 60_000_000;
        RuleMatch {
            alert_id: String::new(),
            rule: rule.into(),
            time_us,
            time: micros_to_rfc3339(time_us),
            dedupe: dedupe.into(),
            title: "t".into(),
            severity: Severity::Low,
            context: Map::new(),
            source: format!("f:{seq}"),
            event: Map::new(),
            description: None,
            runbook: None,
            reference: None,
            destinations: vec![],
            explicit_destinations: false,
            sequence: seq,
        }
    }

    fn grouper(threshold: u64) -> AlertGrouper {
        let mut rules = HashMap::new();
        rules.insert(
            "r".to_string(),
            RuleSettings {
                threshold,
                window_us: 15 * 60_000_000,
                tables: vec![],
                false_positives: vec![],
            },
        );
        AlertGrouper::new(rules, AlertState::default(), "now".into())
    }

    #[test]
    fn threshold_activates_on_fifth_and_window_rolls_over() {
        let mut g = grouper(5);
        let mut four: Vec<RuleMatch> = (0..4).map(|i| m("r", "ip", i, i as u64)).collect();
        g.add_all(&mut four);
        let (alerts, state) = g.finish();
        let state = state.to_state(&alerts);
        assert_eq!(alerts.len(), 1);
        assert!(!alerts[0].activated);
        assert_eq!(alerts[0].match_count, 4);

        // Continue from the persisted state: the 5th match in the window activates.
        let mut g = AlertGrouper::new(grouper(5).rules, state, "now".into());
        let mut more = vec![m("r", "ip", 10, 5), m("r", "ip", 20, 6)];
        g.add_all(&mut more);
        let (alerts, _) = g.finish();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0].activated);
        assert_eq!(alerts[0].match_count, 5);
        assert_eq!(more[0].alert_id, alerts[0].id);
        assert_eq!(
            alerts[1].match_count, 1,
            "minute 20 is past the 15-minute window"
        );
        assert_ne!(alerts[0].id, alerts[1].id);
    }

    #[test]
    fn ids_are_deterministic_and_order_independent() {
        let mut a = grouper(1);
        let mut b = grouper(1);
        let mut x = vec![m("r", "ip", 0, 0), m("r", "ip", 3, 1)];
        let mut y = vec![m("r", "ip", 3, 1), m("r", "ip", 0, 0)];
        a.add_all(&mut x);
        b.add_all(&mut y);
        assert_eq!(a.finish().0, b.finish().0);
    }
}
