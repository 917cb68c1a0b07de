//! Rule matches → deduplicated alerts, their persisted state, and the
//! error records a run collects.
//!
//! Matches group by (rule, dedupe). An alert's window opens at its first
//! match's event time and lasts the rule's deduplication window; it
//! activates when its match count reaches the threshold. Event time, never
//! wall-clock time, drives windows, and matches are grouped in event-time
//! order, so replaying the same logs gives the same alerts (ids included).
//! Open windows are persisted in `state/alerts.json` so the next run
//! continues them.

mod errors;
mod grouper;
mod ledger;
mod state;

pub use errors::{ErrorKind, ErrorRecord};
pub use grouper::{output_order, state_order, AlertGrouper, Closed, RuleSettings};
pub use ledger::{known as ledger_known, marker_key, write_markers, LEDGER_PREFIX};
pub use state::{
    commit_state_file, write_state, AlertState, InputRecord, StateError, StateVersion, STATE_KEY,
};

use crate::config::Severity;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Events kept on an alert (the first matches).
pub const MAX_ALERT_EVENTS: usize = 10;

/// One `detect(r)` that returned true, with the values its functions produced.
#[derive(Debug, Clone, Serialize)]
pub struct RuleMatch {
    pub alert_id: String,
    pub rule: String,
    /// Event time, epoch microseconds.
    #[serde(skip)]
    pub time_us: i64,
    pub time: String,
    pub dedupe: String,
    pub title: String,
    pub severity: Severity,
    pub context: Map<String, Value>,
    pub source: String,
    pub event: Map<String, Value>,
    #[serde(skip)]
    pub description: Option<String>,
    #[serde(skip)]
    pub runbook: Option<String>,
    #[serde(skip)]
    pub reference: Option<String>,
    #[serde(skip)]
    pub destinations: Vec<String>,
    /// Whether `destinations(r)` chose them (rather than detection.yml).
    #[serde(skip)]
    pub explicit_destinations: bool,
    /// What `unique(r)` returned: the threshold counts distinct values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<String>,
    /// Position in the run, to keep the order stable for equal times.
    #[serde(skip)]
    pub sequence: u64,
}

/// A deduplicated alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub dedupe: String,
    pub activated: bool,
    pub match_count: u64,
    pub threshold: u64,
    pub first_match_time: String,
    pub last_match_time: String,
    pub window_start: String,
    pub window_end: String,
    pub created_at: String,
    /// Context of the first match.
    pub context: Map<String, Value>,
    /// Context of the latest match.
    pub latest_context: Map<String, Value>,
    pub description: Option<String>,
    pub runbook: Option<String>,
    pub reference: Option<String>,
    /// Every destination its matches named (detection.yml's, the project's
    /// defaults, or what `destinations(r)` returned).
    pub destinations: Vec<String>,
    /// Whether a `destinations(r)` call named them: only then does an
    /// `info` alert get delivered.
    #[serde(default)]
    pub explicit_destinations: bool,
    pub tables: Vec<String>,
    pub false_positives: Vec<String>,
    /// The first matched events, kept as JSON text: a run can hold many
    /// alerts, and text is a fraction of the size of a parsed tree.
    pub events: Vec<EventText>,
    /// Distinct `unique(r)` values seen in the window (at most `threshold`):
    /// a rule with `unique` activates when there are `threshold` of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique_values: Vec<String>,
    // Internal (not in alerts.jsonl, hence the defaults when read from it).
    #[serde(default)]
    pub window_start_us: i64,
    #[serde(default)]
    pub window_end_us: i64,
    #[serde(default)]
    pub last_match_us: i64,
}

/// Alert as written to alerts.jsonl: the persisted alert minus internal fields.
pub fn alert_json(a: &Alert) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for internal in ["window_start_us", "window_end_us", "last_match_us"] {
            map.remove(internal);
        }
    }
    v
}

/// An event as the JSON text an alert keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventText(Box<RawValue>);

impl EventText {
    pub fn new(event: &Map<String, Value>) -> Self {
        Self(serde_json::value::to_raw_value(event).unwrap_or_else(|_| {
            RawValue::from_string("{}".into()).expect("an empty object is JSON")
        }))
    }

    /// The event's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for EventText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}
