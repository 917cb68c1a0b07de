//! Rule matches → alerts: grouped by (rule, dedupe) in event-time order,
//! windows opened at the first match and continued from the persisted
//! state, activated at the threshold.

use super::state::{self, AlertState};
use super::{Alert, RuleMatch, MAX_ALERT_EVENTS};
use crate::config::DetectionDef;
use crate::schema::micros_to_rfc3339;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Per-rule alert settings.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub threshold: u64,
    pub window_us: i64,
    pub tables: Vec<String>,
    pub false_positives: Vec<String>,
    /// A Panther rule with `CreateAlert: false`: its matches are grouped
    /// and recorded (Panther's signals) but never activate an alert.
    pub signal: bool,
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
            signal: d.panther.as_ref().is_some_and(|p| !p.create_alert),
        }
    }
}

/// Keeps a match's `unique(r)` value if new (up to `threshold` of them:
/// no more are needed to decide).
fn add_unique(alert: &mut Alert, m: &RuleMatch, threshold: u64) {
    if let Some(value) = &m.unique {
        let room = (alert.unique_values.len() as u64) < threshold;
        if room && !alert.unique_values.contains(value) {
            alert.unique_values.push(value.clone());
        }
    }
}

/// Whether an alert's window reached its threshold: distinct `unique(r)`
/// values when the rule returns them, else matches (Panther's semantics).
fn reached(alert: &Alert, threshold: u64) -> bool {
    if alert.unique_values.is_empty() {
        alert.match_count >= threshold
    } else {
        alert.unique_values.len() as u64 >= threshold
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

/// The earliest match time that still joins `alert`'s window.
fn reach(alert: &Alert) -> i64 {
    let span = alert.window_end_us - alert.window_start_us;
    alert.window_start_us.saturating_sub(span)
}

/// Adds `m` to an open window; returns the alert's id.
fn join(open: &mut Open, m: &RuleMatch, settings: &RuleSettings) -> String {
    open.touched = true;
    let alert = &mut open.alert;
    alert.match_count += 1;
    if m.time_us >= alert.last_match_us {
        alert.last_match_us = m.time_us;
        alert.last_match_time = m.time.clone();
        alert.latest_context = m.context.clone();
    }
    if m.time_us < alert.window_start_us {
        // The window (and its id) stays: the alert is published.
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
    add_unique(alert, m, settings.threshold);
    if !alert.activated && !settings.signal && reached(alert, settings.threshold) {
        alert.activated = true;
    }
    alert.id.clone()
}

/// The window `m` opens.
fn new_alert(m: &RuleMatch, settings: &RuleSettings, created_at: &str) -> Alert {
    let window_end_us = m.time_us.saturating_add(settings.window_us);
    Alert {
        id: alert_id(&m.rule, &m.dedupe, m.time_us),
        rule: m.rule.clone(),
        title: m.title.clone(),
        severity: m.severity,
        dedupe: m.dedupe.clone(),
        activated: settings.threshold <= 1 && !settings.signal,
        match_count: 1,
        threshold: settings.threshold,
        first_match_time: m.time.clone(),
        last_match_time: m.time.clone(),
        window_start: m.time.clone(),
        window_end: micros_to_rfc3339(window_end_us),
        created_at: created_at.to_string(),
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
        unique_values: m.unique.iter().cloned().collect(),
        window_start_us: m.time_us,
        window_end_us,
        last_match_us: m.time_us,
    }
}

/// An alert that left the grouper: no later match of the run can join it.
#[derive(Debug)]
pub struct Closed {
    pub alert: Alert,
    /// Created or updated by this run (so one of its alerts).
    pub touched: bool,
    /// Still within the grace period at the run's watermark, so the state
    /// keeps it for late events (of several windows of one rule and dedupe
    /// key, only the newest).
    pub keep: bool,
}

struct Open {
    alert: Alert,
    touched: bool,
}

/// Groups matches into alerts, starting from persisted open windows.
///
/// Matches arrive in event-time order, so a window that ends at or before
/// the current match can gain nothing more: it is handed out as
/// [`Closed`] (see [`AlertGrouper::drain_closed`]) instead of being held to
/// the end. Memory holds the windows open at the current event time, not
/// every alert of the run.
pub struct AlertGrouper {
    rules: HashMap<String, RuleSettings>,
    open: HashMap<(String, String), Open>,
    /// Windows opened by late matches, older than their key's open window.
    late: HashMap<(String, String), Open>,
    closed: Vec<Closed>,
    created_at: String,
    watermark_us: i64,
    /// Windows ending before this are not kept in the state.
    horizon_us: i64,
    /// Adds until the next look for closed windows.
    until_sweep: usize,
}

/// At least this many adds between two sweeps of the open windows.
const SWEEP_EVERY: usize = 1024;

impl AlertGrouper {
    /// `newest_us`: the newest event time among the matches to come
    /// (`i64::MIN` if none), which decides what the state keeps.
    pub fn new(
        rules: HashMap<String, RuleSettings>,
        state: AlertState,
        created_at: String,
        newest_us: i64,
    ) -> Self {
        let open = state
            .alerts
            .into_iter()
            .map(|a| {
                let key = (a.rule.clone(), a.dedupe.clone());
                (
                    key,
                    Open {
                        alert: a,
                        touched: false,
                    },
                )
            })
            .collect();
        let watermark_us = state.watermark_us.max(newest_us);
        Self {
            rules,
            open,
            late: HashMap::new(),
            closed: Vec::new(),
            created_at,
            watermark_us,
            horizon_us: watermark_us.saturating_sub(state::GRACE_US),
            until_sweep: SWEEP_EVERY,
        }
    }

    /// Groups `matches` (sorted here by event time) in memory, setting
    /// each match's `alert_id`; returns the run's alerts sorted by first
    /// match time. For small sets (`ravenwatch test`); a run streams.
    pub fn group_all(
        rules: HashMap<String, RuleSettings>,
        state: AlertState,
        created_at: String,
        matches: &mut [RuleMatch],
    ) -> Vec<Alert> {
        matches.sort_by_key(|m| (m.time_us, m.sequence));
        let newest = matches.last().map_or(i64::MIN, |m| m.time_us);
        let mut grouper = Self::new(rules, state, created_at, newest);
        for m in matches.iter_mut() {
            m.alert_id = grouper.add(m);
        }
        let mut alerts: Vec<Alert> = grouper
            .finish()
            .into_iter()
            .filter(|c| c.touched)
            .map(|c| c.alert)
            .collect();
        alerts.sort_by(|a, b| output_order(a).cmp(&output_order(b)));
        alerts
    }

    /// Adds one match (callers add in event-time order) and returns the id
    /// of its alert.
    pub fn add(&mut self, m: &RuleMatch) -> String {
        let settings = self.rules.get(&m.rule).cloned().unwrap_or(RuleSettings {
            threshold: 1,
            window_us: 60 * 60_000_000,
            tables: Vec::new(),
            false_positives: Vec::new(),
            signal: false,
        });
        self.watermark_us = self.watermark_us.max(m.time_us);
        self.until_sweep = self.until_sweep.saturating_sub(1);
        if self.until_sweep == 0 {
            self.sweep(m.time_us);
        }
        let key = (m.rule.clone(), m.dedupe.clone());
        // A late match (older than the open window: another input, grouped
        // after it) joins the window one run would have put both in: less
        // than a window's length before its start. An older one opens a
        // window of its own beside it (among the late ones), so the open
        // window, already published under its id, carries on.
        let mut late = false;
        if let Some(open) = self.open.get_mut(&key) {
            if m.time_us < open.alert.window_end_us && m.time_us >= reach(&open.alert) {
                return join(open, m, &settings);
            }
            late = m.time_us < open.alert.window_start_us;
        }
        if late {
            if let Some(open) = self.late.get_mut(&key) {
                if m.time_us < open.alert.window_end_us && m.time_us >= reach(&open.alert) {
                    return join(open, m, &settings);
                }
            }
        }
        let alert = new_alert(m, &settings, &self.created_at);
        let id = alert.id.clone();
        let open = Open {
            alert,
            touched: true,
        };
        let into = if late { &mut self.late } else { &mut self.open };
        if let Some(previous) = into.insert(key, open) {
            self.close(previous);
        }
        id
    }

    fn close(&mut self, open: Open) {
        let keep = open.alert.window_end_us >= self.horizon_us;
        if open.touched || keep {
            self.closed.push(Closed {
                alert: open.alert,
                touched: open.touched,
                keep,
            });
        }
    }

    /// Moves out every window that ends at or before `now_us`; the next
    /// sweep comes after as many adds as windows remain open, so sweeping
    /// costs O(1) per match.
    fn sweep(&mut self, now_us: i64) {
        let ended: Vec<(String, String)> = self
            .open
            .iter()
            .filter(|(_, o)| o.alert.window_end_us <= now_us)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(open) = self.open.remove(&key) {
                self.close(open);
            }
        }
        self.until_sweep = self.open.len().max(SWEEP_EVERY);
    }

    /// The windows closed since the last call, in no particular order.
    pub fn drain_closed(&mut self) -> std::vec::Drain<'_, Closed> {
        self.closed.drain(..)
    }

    /// The newest event time seen, over this run and the state it continued.
    pub fn watermark_us(&self) -> i64 {
        self.watermark_us
    }

    /// Every window not yet handed out: the still-open ones and those
    /// closed since the last [`AlertGrouper::drain_closed`].
    pub fn finish(mut self) -> Vec<Closed> {
        let open: Vec<Open> = self
            .open
            .drain()
            .chain(self.late.drain())
            .map(|(_, o)| o)
            .collect();
        for o in open {
            self.close(o);
        }
        self.closed
    }
}

/// The order of a run's alerts in its outputs: first match time, then rule
/// and dedupe key.
pub fn output_order(a: &Alert) -> (i64, &str, &str) {
    (a.window_start_us, &a.rule, &a.dedupe)
}

/// The order of alerts in the state: rule, then dedupe key.
pub fn state_order(a: &Alert) -> (&str, &str) {
    (&a.rule, &a.dedupe)
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
            unique: None,
            sequence: seq,
        }
    }

    fn settings(threshold: u64) -> HashMap<String, RuleSettings> {
        HashMap::from([(
            "r".to_string(),
            RuleSettings {
                threshold,
                window_us: 15 * 60_000_000,
                tables: vec![],
                false_positives: vec![],
                signal: false,
            },
        )])
    }

    /// Groups as a run does: the run's alerts in output order, and the
    /// state it leaves.
    fn run(
        threshold: u64,
        state: AlertState,
        matches: &mut [RuleMatch],
    ) -> (Vec<Alert>, AlertState) {
        matches.sort_by_key(|m| (m.time_us, m.sequence));
        let newest = matches.last().map_or(i64::MIN, |m| m.time_us);
        let mut g = AlertGrouper::new(settings(threshold), state, "now".into(), newest);
        let mut closed = Vec::new();
        for m in matches.iter_mut() {
            m.alert_id = g.add(m);
            closed.extend(g.drain_closed());
        }
        let watermark_us = g.watermark_us();
        closed.extend(g.finish());
        let mut alerts: Vec<Alert> = closed
            .iter()
            .filter(|c| c.touched)
            .map(|c| c.alert.clone())
            .collect();
        alerts.sort_by(|a, b| output_order(a).cmp(&output_order(b)));
        let mut kept: Vec<Alert> = closed
            .into_iter()
            .filter(|c| c.keep)
            .map(|c| c.alert)
            .collect();
        kept.sort_by(|a, b| {
            (state_order(a), a.window_start_us).cmp(&(state_order(b), b.window_start_us))
        });
        // One window per (rule, dedupe): the newest.
        kept.reverse();
        kept.dedup_by(|a, b| state_order(a) == state_order(b));
        kept.reverse();
        let state = AlertState {
            format: state::STATE_FORMAT,
            run_id: None,
            watermark_us,
            alerts: kept,
            inputs: std::collections::BTreeMap::new(),
            kv: None,
            applied: std::collections::BTreeMap::new(),
        };
        (alerts, state)
    }

    #[test]
    fn late_matches_join_the_window_one_run_would_give_them_or_open_their_own() {
        // A window opened at minute 60 (15 minutes long) by an earlier run.
        let (first, state) = run(1, AlertState::default(), &mut [m("r", "k", 60, 0)]);
        let published = first[0].id.clone();
        let mut late = [
            m("r", "k", 50, 0), // less than a window before its start: joins
            m("r", "k", 10, 1), // far older: a window of its own…
            m("r", "k", 12, 2), // …which the next old one joins
            m("r", "k", 70, 3), // the open window carries on
        ];
        // Grouped in event-time order: minutes 10, 12, 50, 70.
        let (alerts, state) = run(1, state, &mut late);
        let ids: Vec<&str> = late.iter().map(|m| m.alert_id.as_str()).collect();
        assert_eq!(ids[2], published);
        assert_eq!(ids[3], published);
        assert_ne!(ids[0], published);
        assert_eq!(ids[0], ids[1]);
        let open = alerts.iter().find(|a| a.id == published).unwrap();
        assert_eq!(open.match_count, 3);
        assert_eq!(
            open.window_start_us, first[0].window_start_us,
            "id and window stay"
        );
        assert_eq!(open.first_match_time, late[2].time);
        let old = alerts.iter().find(|a| a.id == ids[0]).unwrap();
        assert_eq!((old.match_count, old.window_start_us), (2, late[0].time_us));
        // The state keeps the newest window of the key.
        assert_eq!(state.alerts.len(), 1);
        assert_eq!(state.alerts[0].id, published);
    }

    #[test]
    fn a_unique_value_threshold_counts_distinct_values() {
        let mut g = AlertGrouper::new(settings(3), AlertState::default(), "now".into(), 9);
        let add = |g: &mut AlertGrouper, minute: i64, value: &str| {
            let mut one = m("r", "scanner", minute, minute as u64);
            one.unique = Some(value.to_string());
            g.add(&one);
        };
        for (minute, port) in [(0, "22"), (1, "22"), (2, "80"), (3, "80")] {
            add(&mut g, minute, port);
        }
        let open: Vec<Alert> = g.open.values().map(|o| o.alert.clone()).collect();
        assert_eq!(open[0].match_count, 4);
        assert!(!open[0].activated, "two distinct ports of three");
        add(&mut g, 4, "443");
        let alerts: Vec<Alert> = g.finish().into_iter().map(|c| c.alert).collect();
        assert!(alerts[0].activated);
        assert_eq!(alerts[0].unique_values, ["22", "80", "443"]);
    }

    #[test]
    fn signals_group_but_never_activate() {
        let mut rules = settings(1);
        rules.get_mut("r").expect("rule r").signal = true;
        let mut g = AlertGrouper::new(rules, AlertState::default(), "now".into(), 3);
        for i in 0..3 {
            g.add(&m("r", "ip", i, i as u64));
        }
        let alerts: Vec<Alert> = g.finish().into_iter().map(|c| c.alert).collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].match_count, 3);
        assert!(!alerts[0].activated, "CreateAlert: false never activates");
    }

    #[test]
    fn threshold_activates_on_fifth_and_window_rolls_over() {
        let mut four: Vec<RuleMatch> = (0..4).map(|i| m("r", "ip", i, i as u64)).collect();
        let (alerts, state) = run(5, AlertState::default(), &mut four);
        assert_eq!(alerts.len(), 1);
        assert!(!alerts[0].activated);
        assert_eq!(alerts[0].match_count, 4);

        // Continue from the persisted state: the 5th match in the window activates.
        let mut more = vec![m("r", "ip", 10, 5), m("r", "ip", 20, 6)];
        let (alerts, _) = run(5, state, &mut more);
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
        let mut x = vec![m("r", "ip", 0, 0), m("r", "ip", 3, 1)];
        let mut y = vec![m("r", "ip", 3, 1), m("r", "ip", 0, 0)];
        assert_eq!(
            run(1, AlertState::default(), &mut x).0,
            run(1, AlertState::default(), &mut y).0
        );
    }

    #[test]
    fn ended_windows_leave_while_matches_arrive() {
        // 3,000 keys, each matched once a minute apart: with 15-minute
        // windows only about 15 are open at any time.
        let mut g = AlertGrouper::new(settings(1), AlertState::default(), "now".into(), 0);
        let mut left = 0;
        for i in 0..3000 {
            g.add(&m("r", &format!("k{i}"), i, i as u64));
            left += g.drain_closed().count();
            assert!(g.open.len() <= SWEEP_EVERY + 16, "{} open", g.open.len());
        }
        let rest = g.finish();
        assert!(left > 1900, "only {left} closed before the end");
        assert_eq!(left + rest.len(), 3000);
    }

    #[test]
    fn state_keeps_windows_within_grace_and_drops_older_untouched_ones() {
        let day = 24 * 60;
        let mut first = vec![m("r", "old", 0, 0), m("r", "recent", 2 * day, 1)];
        let (_, state) = run(1, AlertState::default(), &mut first);
        assert_eq!(
            state.alerts.len(),
            1,
            "the day-old window is past the grace"
        );
        assert_eq!(state.alerts[0].dedupe, "recent");
        // A later run that does not touch "recent" carries it, not as its own.
        let mut second = vec![m("r", "other", 2 * day + 30, 2)];
        let (alerts, state) = run(1, state, &mut second);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].dedupe, "other");
        let kept: Vec<&str> = state.alerts.iter().map(|a| a.dedupe.as_str()).collect();
        assert_eq!(kept, ["other", "recent"]);
    }
}
