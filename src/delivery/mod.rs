//! Delivery: activated alerts to Jira, Slack and webhooks, exactly once.
//!
//! A run first *queues* what it owes in `state/deliveries.json` (after the
//! alert state is committed, so only committed alerts are owed), then
//! *sends* everything pending, its own alerts and any a previous run or
//! `deliver` could not send. Each success is recorded at once (the ticket
//! key or thread, and the match count the destination has seen), so a
//! crash or a re-run continues where it stopped: an alert gets one ticket,
//! and later matches become comments on it. Failures stay pending and are
//! reported; nothing is dropped.

mod http;
mod jira;
mod render;
mod sender;
mod slack;
mod state;
mod webhook;

pub use http::SendError;
pub use state::{
    AlertDeliveries, DeliveryState, DeliveryStateError, StoredState, Target, DELIVERY_STATE_KEY,
};

use crate::alerts::{Alert, ErrorKind, ErrorRecord};
use crate::config::{DeliverySettings, DestinationKind, Severity};
use crate::query::RunOutput;
use crate::storage::{key, Storage, StorageError};
use sender::Sender;
use serde::Serialize;
use std::collections::HashMap;

/// What a delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryReport {
    /// (alert, destination) pairs this run queued.
    pub queued: u64,
    /// First messages sent (tickets opened).
    pub delivered: u64,
    /// Updates sent (comments, thread replies).
    pub updated: u64,
    /// Still owed after this pass, from any run; the next `run` or
    /// `ravenwatch deliver` sends them.
    pub pending: u64,
    pub sent: Vec<Sent>,
    pub failures: Vec<Failure>,
    /// Problems with the pass itself (the state could not be saved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Whether sending was attempted (`false` for `run --no-deliver`).
    #[serde(skip)]
    pub attempted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sent {
    pub alert_id: String,
    pub rule: String,
    pub destination: String,
    /// Jira issue key or Slack thread ts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub update: bool,
    pub match_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub alert_id: String,
    pub rule: String,
    pub destination: String,
    pub error: String,
    /// Whether retrying later may work (else the request itself or the
    /// destination's configuration has to change).
    pub transient: bool,
}

impl DeliveryReport {
    /// Failures and problems as errors.jsonl records.
    pub fn error_records(&self) -> Vec<ErrorRecord> {
        let failures = self.failures.iter().map(|f| ErrorRecord {
            kind: ErrorKind::Delivery,
            rule: Some(f.rule.clone()),
            function: None,
            source: Some(format!("alert {} to {}", f.alert_id, f.destination)),
            error: f.error.clone(),
            traceback: None,
        });
        let problems = self.problems.iter().map(|p| ErrorRecord {
            kind: ErrorKind::Delivery,
            rule: None,
            function: None,
            source: None,
            error: p.clone(),
            traceback: None,
        });
        failures.chain(problems).collect()
    }

    /// Whether something went wrong or a send left deliveries owed (exit
    /// code 3); pending after `run --no-deliver` is the point, not a fault.
    pub fn incomplete(&self) -> bool {
        (self.attempted && self.pending > 0) || !self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    State(#[from] DeliveryStateError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no run `{run}` in {location}")]
    UnknownRun { run: String, location: String },
    #[error("{location}:{line}: unreadable alert: {message}")]
    BadAlert {
        location: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Client(String),
}

/// Where an alert goes: nowhere until it activates; an `info` alert only
/// where `destinations(r)` sent it by name (never to detection.yml's or
/// the project's defaults).
pub fn routes(alert: &Alert) -> &[String] {
    if !alert.activated || (alert.severity == Severity::Info && !alert.explicit_destinations) {
        &[]
    } else {
        &alert.destinations
    }
}

/// Destinations `destinations(r)` returned that ravenwatch.yml does not
/// define (detection.yml's are checked when the project loads).
pub fn unknown_destinations(alerts: &[Alert], settings: &DeliverySettings) -> Vec<ErrorRecord> {
    let mut out = Vec::new();
    for alert in alerts {
        for name in routes(alert) {
            if let Some(message) = crate::config::unknown_destination(name, settings) {
                out.push(ErrorRecord {
                    kind: ErrorKind::Delivery,
                    rule: Some(alert.rule.clone()),
                    function: Some("destinations".into()),
                    source: Some(format!("alert {}", alert.id)),
                    error: format!("{message}; the alert is not sent there"),
                    traceback: None,
                });
            }
        }
    }
    out
}

/// Queues the activated alerts' deliveries in `stored` (saved if anything
/// was routed); returns how many (alert, destination) pairs are owed for
/// them.
fn enqueue_into(
    storage: &dyn Storage,
    stored: &mut StoredState,
    settings: &DeliverySettings,
    alerts: &[Alert],
    run_id: &str,
) -> Result<u64, DeliveryError> {
    let mut queued = 0;
    let mut routed = false;
    for alert in alerts {
        let known: Vec<String> = routes(alert)
            .iter()
            .filter(|d| settings.destination(d).is_some())
            .cloned()
            .collect();
        if !known.is_empty() {
            routed = true;
            queued += stored.enqueue(alert, &known, run_id) as u64;
        }
    }
    if routed {
        stored.save(storage)?;
    }
    Ok(queued)
}

/// [`enqueue_into`] the persisted state.
///
/// # Errors
/// The delivery state cannot be read or saved.
pub fn enqueue(
    storage: &dyn Storage,
    settings: &DeliverySettings,
    alerts: &[Alert],
    run_id: &str,
) -> Result<u64, DeliveryError> {
    let mut stored = StoredState::load(storage)?;
    enqueue_into(storage, &mut stored, settings, alerts, run_id)
}

/// Queues again the activated alerts of a past run, from its alerts.jsonl
/// where the run wrote it (`outputs`, see [`crate::query::run_output`]),
/// for a run whose queue could not be saved; versions already delivered
/// are not sent twice.
///
/// # Errors
/// No such run, an unreadable alerts.jsonl, state failures.
pub fn requeue_run(
    storage: &dyn Storage,
    outputs: &RunOutput,
    settings: &DeliverySettings,
) -> Result<u64, DeliveryError> {
    let run_id = outputs.id.as_str();
    let source = outputs.storage.as_deref().unwrap_or(storage);
    let file = key(&[&outputs.prefix, "alerts.jsonl"]);
    let Some(bytes) = source.read(&file)? else {
        return Err(DeliveryError::UnknownRun {
            run: run_id.to_string(),
            location: storage.url("runs"),
        });
    };
    let mut alerts = Vec::new();
    for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut alert: Alert = serde_json::from_str(line).map_err(|e| DeliveryError::BadAlert {
            location: source.url(&file),
            line: i + 1,
            message: e.to_string(),
        })?;
        alert.window_end_us = chrono::DateTime::parse_from_rfc3339(&alert.window_end)
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MAX);
        alerts.push(alert);
    }
    enqueue(storage, settings, &alerts, run_id)
}

/// Sends every pending delivery (only those queued by `only_run`, if
/// given), recording each success at once.
///
/// # Errors
/// The state cannot be read, or a save conflicts with another process
/// (what was sent before is recorded).
pub fn deliver_pending(
    storage: &dyn Storage,
    settings: &DeliverySettings,
    only_run: Option<&str>,
) -> Result<DeliveryReport, DeliveryError> {
    send_pending(storage, StoredState::load(storage)?, settings, only_run)
}

fn send_pending(
    storage: &dyn Storage,
    mut stored: StoredState,
    settings: &DeliverySettings,
    only_run: Option<&str>,
) -> Result<DeliveryReport, DeliveryError> {
    if stored.pending() == 0 {
        return Ok(DeliveryReport {
            attempted: true,
            ..Default::default()
        });
    }
    let client = redacting_client(settings)?;
    let mut pass = Pass {
        settings,
        client: &client,
        senders: HashMap::new(),
        down: HashMap::new(),
        report: DeliveryReport {
            attempted: true,
            ..Default::default()
        },
    };
    let ids: Vec<String> = stored
        .state
        .alerts
        .iter()
        .filter(|(_, a)| a.any_pending() && only_run.is_none_or(|r| a.run_id == r))
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        pass.deliver_alert(storage, &mut stored, &id)?;
    }
    let mut report = pass.report;
    if !report.failures.is_empty() {
        stored.save(storage)?;
    }
    report.pending = stored.pending();
    Ok(report)
}

/// The HTTP client, with every destination's secret registered with its
/// redactor so no message can leak one.
fn redacting_client(settings: &DeliverySettings) -> Result<http::Http, DeliveryError> {
    let mut client =
        http::Http::new(settings.retry.clone(), settings.timeout).map_err(DeliveryError::Client)?;
    for destination in &settings.destinations {
        for env in destination.kind.secret_envs() {
            if let Ok(value) = std::env::var(env) {
                client.redactor.add(&value);
            }
        }
        if let crate::config::DestinationKind::Jira(jira) = &destination.kind {
            if let (Ok(user), Ok(token)) = (
                std::env::var(&jira.user_env),
                std::env::var(&jira.token_env),
            ) {
                client.redactor.add_basic(&user, &token);
            }
        }
    }
    Ok(client)
}

/// One delivery pass over the pending alerts.
struct Pass<'a> {
    settings: &'a DeliverySettings,
    client: &'a http::Http,
    senders: HashMap<String, Result<Box<dyn Sender + 'a>, SendError>>,
    /// Destinations that failed transiently: not tried again this pass, so
    /// one outage does not cost every alert its full retry schedule.
    down: HashMap<String, String>,
    report: DeliveryReport,
}

impl<'a> Pass<'a> {
    /// Sends alert `id` to every destination that still owes it; each
    /// success is saved before the next send.
    fn deliver_alert(
        &mut self,
        storage: &dyn Storage,
        stored: &mut StoredState,
        id: &str,
    ) -> Result<(), DeliveryError> {
        let entry = &stored.state.alerts[id];
        let owed: Vec<(String, Target)> = entry
            .destinations
            .iter()
            .filter(|(_, t)| entry.is_pending(t))
            .map(|(d, t)| (d.clone(), t.clone()))
            .collect();
        let Some(alert) = stored.alert(storage, id)? else {
            let entry = &stored.state.alerts[id];
            let error = format!(
                "the queued copy of the alert ({}) is missing; `ravenwatch deliver --run {}` queues it again",
                storage.url(&format!("{}/{id}.json", state::PENDING_PREFIX)),
                entry.run_id
            );
            self.report
                .failures
                .extend(owed.into_iter().map(|(name, _)| Failure {
                    alert_id: id.to_string(),
                    rule: entry.rule.clone(),
                    destination: name,
                    error: error.clone(),
                    transient: false,
                }));
            return Ok(());
        };
        for (name, target) in owed {
            self.send_one(storage, stored, id, &alert, &name, &target)?;
        }
        Ok(())
    }

    /// Sends `alert` to destination `name` (a new ticket, or an update of
    /// the one in `target`) and records the outcome.
    fn send_one(
        &mut self,
        storage: &dyn Storage,
        stored: &mut StoredState,
        id: &str,
        alert: &Alert,
        name: &str,
        target: &Target,
    ) -> Result<(), DeliveryError> {
        let fail = |error: String, transient: bool| Failure {
            alert_id: id.to_string(),
            rule: alert.rule.clone(),
            destination: name.to_string(),
            error,
            transient,
        };
        if let Some(cause) = self.down.get(name) {
            self.report.failures.push(fail(
                format!("{name}: not tried, it failed earlier in this pass ({cause})"),
                true,
            ));
            return Ok(());
        }
        let settings: &'a DeliverySettings = self.settings;
        let Some(destination) = settings.destination(name) else {
            self.report.failures.push(fail(
                format!("{name}: no longer defined in ravenwatch.yml; the delivery stays pending"),
                false,
            ));
            return Ok(());
        };
        let client = self.client;
        let sender = self
            .senders
            .entry(name.to_string())
            .or_insert_with(|| build_sender(&destination.name, &destination.kind, client));
        let result = match sender {
            Err(e) => Err(e.clone()),
            Ok(sender) if target.sent_match_count == 0 => sender.create(alert),
            Ok(sender) => {
                sender.update(alert, target.reference.as_deref(), target.sent_match_count)
            }
        };
        let entry = stored.state.alerts.get_mut(id).expect("listed above");
        let slot = entry.destinations.get_mut(name).expect("listed above");
        match result {
            Ok(reference) => {
                if reference.is_some() {
                    slot.reference = reference;
                }
                slot.sent_match_count = entry.match_count;
                slot.sent_at =
                    Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                slot.failures = 0;
                slot.last_error = None;
                self.report.sent.push(Sent {
                    alert_id: id.to_string(),
                    rule: alert.rule.clone(),
                    destination: name.to_string(),
                    reference: slot.reference.clone(),
                    update: target.sent_match_count > 0,
                    match_count: entry.match_count,
                });
                if target.sent_match_count > 0 {
                    self.report.updated += 1;
                } else {
                    self.report.delivered += 1;
                }
                if !entry.any_pending() {
                    stored.delivered(id);
                }
                stored.save(storage)?;
            }
            Err(e) => {
                slot.failures += 1;
                slot.last_error = Some(e.message.clone());
                if e.transient {
                    self.down.insert(name.to_string(), e.message.clone());
                }
                self.report.failures.push(fail(e.message, e.transient));
            }
        }
        Ok(())
    }
}

fn build_sender<'a>(
    name: &'a str,
    kind: &'a DestinationKind,
    http: &'a http::Http,
) -> Result<Box<dyn Sender + 'a>, SendError> {
    Ok(match kind {
        DestinationKind::Jira(config) => Box::new(jira::Jira::new(name, config, http)?),
        DestinationKind::Slack(config) => Box::new(slack::Slack::new(name, config, http)?),
        DestinationKind::Webhook(config) => Box::new(webhook::Webhook::new(name, config, http)?),
    })
}

/// Queues a finished run's alerts and, unless `send` is false, sends what
/// is pending. Never fails: problems land in the report (the run's alerts
/// are committed whatever happens here).
pub fn after_run(
    storage: &dyn Storage,
    settings: &DeliverySettings,
    alerts: &[Alert],
    run_id: &str,
    send: bool,
) -> DeliveryReport {
    let problem = |message: String| DeliveryReport {
        problems: vec![message],
        ..Default::default()
    };
    // One read of the state serves queueing and sending.
    let queued = StoredState::load(storage)
        .map_err(DeliveryError::from)
        .and_then(|mut stored| {
            enqueue_into(storage, &mut stored, settings, alerts, run_id).map(|n| (n, stored))
        });
    let (queued, stored) = match queued {
        Ok(done) => done,
        Err(e) => return problem(format!(
            "this run's deliveries could not be queued: {e}; run `ravenwatch deliver --run {run_id}` to send them"
        )),
    };
    let mut report = if send {
        send_pending(storage, stored, settings, None)
            .unwrap_or_else(|e| problem(format!("delivery stopped: {e}")))
    } else {
        DeliveryReport {
            pending: stored.pending(),
            ..Default::default()
        }
    };
    report.queued = queued;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(severity: &str, activated: bool, explicit: bool) -> Alert {
        serde_json::from_str(
            &serde_json::json!({
                "id": "a", "rule": "r", "title": "t", "severity": severity, "dedupe": "d",
                "activated": activated, "match_count": 1, "threshold": 1,
                "first_match_time": "x", "last_match_time": "x", "window_start": "x",
                "window_end": "x", "created_at": "x", "context": {}, "latest_context": {},
                "description": null, "runbook": null, "reference": null,
                "destinations": ["jira_main"], "explicit_destinations": explicit,
                "tables": [], "false_positives": [], "events": []
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn info_goes_only_where_destinations_r_named_it() {
        assert_eq!(routes(&alert("medium", true, false)), ["jira_main"]);
        assert_eq!(
            routes(&alert("medium", false, true)),
            [] as [&str; 0],
            "not activated yet"
        );
        assert_eq!(
            routes(&alert("info", true, false)),
            [] as [&str; 0],
            "info via detection.yml or defaults"
        );
        assert_eq!(
            routes(&alert("info", true, true)),
            ["jira_main"],
            "info named by destinations(r)"
        );
    }
}
