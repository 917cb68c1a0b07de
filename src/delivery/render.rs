//! Alerts as text people read: Atlassian Document Format for Jira (REST
//! v3), mrkdwn for Slack, and `{path}` templates over the alert. Nested
//! context becomes nested bullet lists, lists of values are joined, lists
//! of records get one bullet each, and missing values read "(none)":
//! never a JSON dump.

use crate::alerts::Alert;
use crate::config::{Template, TemplatePart};
use serde_json::{json, Value};

pub const NONE: &str = "(none)";
/// Longest raw event shown in a ticket.
const EVENT_CHARS: usize = 3000;
/// Slack's limit for a section's text.
const SLACK_SECTION_CHARS: usize = 3000;

/// The value at a dotted path (`context.enrichment.asset.hostname`);
/// `None` when a step is missing.
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, step| match v {
        Value::Object(map) => map.get(step),
        Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A template rendered to one line of text; missing values render empty.
pub fn render_text(template: &Template, alert: &Value) -> String {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => out.push_str(text),
            TemplatePart::Field(path) => {
                if let Some(v) = lookup(alert, path).filter(|v| !v.is_null()) {
                    out.push_str(&inline(v));
                }
            }
        }
    }
    out
}

/// The structured value of a template that is one `{path}` and nothing
/// else, when that value is an object or a list.
pub fn sole_structured<'a>(template: &Template, alert: &'a Value) -> Option<&'a Value> {
    match template.parts.as_slice() {
        [TemplatePart::Field(path)] => {
            lookup(alert, path).filter(|v| v.is_object() || v.is_array())
        }
        _ => None,
    }
}

/// Whether a template is one `{path}` whose value is missing or null.
pub fn sole_missing(template: &Template, alert: &Value) -> bool {
    matches!(template.parts.as_slice(), [TemplatePart::Field(path)]
        if lookup(alert, path).is_none_or(Value::is_null))
}

/// A value on one line: scalars as they are, lists joined with commas,
/// records as `key: value` pairs.
pub fn inline(value: &Value) -> String {
    match value {
        Value::Null => NONE.into(),
        Value::String(s) if s.is_empty() => NONE.into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => NONE.into(),
        Value::Array(items) => items.iter().map(inline).collect::<Vec<_>>().join(", "),
        Value::Object(map) if map.is_empty() => NONE.into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", inline(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Short enough for one line: no nested records or lists of records.
fn is_flat(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().all(|v| !v.is_object() && !has_records(v)),
        other => !has_records(other),
    }
}

fn has_records(value: &Value) -> bool {
    matches!(value, Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()))
}

// ---- Atlassian Document Format -------------------------------------------

pub fn adf_doc(content: Vec<Value>) -> Value {
    json!({ "type": "doc", "version": 1, "content": content })
}

fn text(s: &str) -> Value {
    // ADF rejects empty text nodes.
    json!({ "type": "text", "text": if s.is_empty() { NONE } else { s } })
}

fn strong(s: &str) -> Value {
    let s = if s.is_empty() { NONE } else { s };
    json!({ "type": "text", "text": s, "marks": [{ "type": "strong" }] })
}

fn paragraph(content: Vec<Value>) -> Value {
    json!({ "type": "paragraph", "content": content })
}

fn heading(level: u8, s: &str) -> Value {
    json!({ "type": "heading", "attrs": { "level": level }, "content": [text(s)] })
}

fn bullets(items: Vec<Vec<Value>>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|content| json!({ "type": "listItem", "content": content }))
        .collect();
    json!({ "type": "bulletList", "content": items })
}

fn code_block(s: &str) -> Value {
    json!({ "type": "codeBlock", "attrs": { "language": "json" }, "content": [text(s)] })
}

fn link(label: &str, href: &str) -> Value {
    json!({ "type": "text", "text": label, "marks": [{ "type": "link", "attrs": { "href": href } }] })
}

/// A value as ADF blocks: records as bullet lists (nested records as
/// nested lists), lists of records as one bullet per record.
pub fn value_adf(value: &Value) -> Vec<Value> {
    match value {
        Value::Object(map) if !map.is_empty() => vec![bullets(
            map.iter()
                .map(|(k, v)| {
                    if is_flat(v) && !v.is_object() {
                        vec![paragraph(vec![strong(&format!("{k}: ")), text(&inline(v))])]
                    } else {
                        let mut item = vec![paragraph(vec![strong(k)])];
                        item.extend(value_adf(v));
                        item
                    }
                })
                .collect(),
        )],
        Value::Array(items) if has_records(value) => vec![bullets(
            items
                .iter()
                .map(|item| {
                    if is_flat(item) {
                        vec![paragraph(vec![text(&inline(item))])]
                    } else {
                        value_adf(item)
                    }
                })
                .collect(),
        )],
        other => vec![paragraph(vec![text(&inline(other))])],
    }
}

fn facts(alert: &Alert) -> Vec<(&'static str, String)> {
    vec![
        ("Rule", alert.rule.clone()),
        ("Severity", alert.severity.as_str().to_uppercase()),
        (
            "Matches",
            format!("{} (threshold {})", alert.match_count, alert.threshold),
        ),
        ("First match", alert.first_match_time.clone()),
        ("Last match", alert.last_match_time.clone()),
        ("Dedupe", alert.dedupe.clone()),
    ]
}

/// The description of a new ticket: what fired, how often, its context
/// (automatic enrichment included), the runbook and the first event.
pub fn jira_description(alert: &Alert) -> Value {
    let mut content = vec![paragraph(vec![strong(&alert.title)])];
    content.push(bullets(
        facts(alert)
            .into_iter()
            .map(|(k, v)| vec![paragraph(vec![strong(&format!("{k}: ")), text(&v)])])
            .collect(),
    ));
    if let Some(description) = alert.description.as_deref().filter(|d| !d.is_empty()) {
        content.push(heading(3, "Description"));
        content.push(paragraph(vec![text(description)]));
    }
    content.push(heading(3, "Context"));
    content.extend(value_adf(&Value::Object(alert.context.clone())));
    if let Some(runbook) = alert.runbook.as_deref().filter(|r| !r.is_empty()) {
        content.push(heading(3, "Runbook"));
        content.push(paragraph(vec![text(runbook)]));
    }
    if let Some(reference) = alert.reference.as_deref().filter(|r| !r.is_empty()) {
        content.push(heading(3, "Reference"));
        // Jira rejects a link mark whose href is not a URL.
        let is_url = reference.starts_with("https://") || reference.starts_with("http://");
        content.push(paragraph(vec![if is_url {
            link(reference, reference)
        } else {
            text(reference)
        }]));
    }
    if let Some(event) = alert.events.first() {
        content.push(heading(3, "First event"));
        content.push(code_block(&truncate(
            &serde_json::from_str::<Value>(event.get())
                .and_then(|e| serde_json::to_string_pretty(&e))
                .unwrap_or_default(),
            EVENT_CHARS,
        )));
    }
    content.push(paragraph(vec![text(&format!(
        "Ravenwatch alert {} · tables {}",
        alert.id,
        if alert.tables.is_empty() {
            NONE.to_string()
        } else {
            alert.tables.join(", ")
        }
    ))]));
    adf_doc(content)
}

/// A comment for later matches: the new count and the newest context.
pub fn jira_update(alert: &Alert, previous: u64) -> Value {
    adf_doc(
        vec![
            paragraph(vec![
                strong(&format!("Ravenwatch: {} matches", alert.match_count)),
                text(&format!(
                    " (was {previous}); last match {}, severity {}.",
                    alert.last_match_time,
                    alert.severity.as_str().to_uppercase()
                )),
            ]),
            heading(3, "Newest context"),
        ]
        .into_iter()
        .chain(value_adf(&Value::Object(alert.latest_context.clone())))
        .collect(),
    )
}

/// A field value rendered as a document (for a rich-text Jira field).
pub fn field_adf(value: &Value) -> Value {
    adf_doc(value_adf(value))
}

// ---- Slack ------------------------------------------------------------------

/// Slack's three mrkdwn control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A value as mrkdwn bullet lines, nested values indented.
pub fn value_mrkdwn(value: &Value) -> String {
    let mut out = String::new();
    write_mrkdwn(value, 0, &mut out);
    if out.is_empty() {
        out.push_str(NONE);
    }
    out.trim_end().to_string()
}

fn write_mrkdwn(value: &Value, depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if is_flat(v) && !v.is_object() {
                    out.push_str(&format!("{pad}• *{}:* {}\n", escape(k), escape(&inline(v))));
                } else {
                    out.push_str(&format!("{pad}• *{}:*\n", escape(k)));
                    write_mrkdwn(v, depth + 1, out);
                }
            }
        }
        Value::Array(items) if has_records(value) => {
            for item in items {
                if is_flat(item) {
                    out.push_str(&format!("{pad}• {}\n", escape(&inline(item))));
                } else {
                    write_mrkdwn(item, depth, out);
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", escape(&inline(other)))),
    }
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate(text, SLACK_SECTION_CHARS) } })
}

/// A new alert as a Slack message (`text` is the notification fallback).
pub fn slack_message(alert: &Alert) -> Value {
    let severity = alert.severity.as_str().to_uppercase();
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": truncate(&format!("{severity}: {}", alert.title), 150) } }),
        json!({ "type": "section", "fields": facts(alert).into_iter().take(5).map(|(k, v)| {
            json!({ "type": "mrkdwn", "text": format!("*{k}*\n{}", escape(&v)) })
        }).collect::<Vec<_>>() }),
        section(&format!(
            "*Context*\n{}",
            value_mrkdwn(&Value::Object(alert.context.clone()))
        )),
    ];
    if let Some(runbook) = alert.runbook.as_deref().filter(|r| !r.is_empty()) {
        blocks.push(section(&format!("*Runbook*\n{}", escape(runbook))));
    }
    blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn",
        "text": format!("Ravenwatch alert `{}` · dedupe `{}`", alert.id, escape(&alert.dedupe)) }] }));
    json!({
        "text": format!("[{severity}] {} ({}, {} matches)", alert.title, alert.rule, alert.match_count),
        "blocks": blocks,
    })
}

/// Later matches as a Slack message (a thread reply with the Web API).
pub fn slack_update(alert: &Alert, previous: u64) -> Value {
    let headline = format!(
        "*{}*: now {} matches (was {previous}); last match {}",
        escape(&alert.title),
        alert.match_count,
        alert.last_match_time
    );
    json!({
        "text": format!("Update: {} ({} matches)", alert.title, alert.match_count),
        "blocks": [
            section(&headline),
            section(&format!("*Newest context*\n{}", value_mrkdwn(&Value::Object(alert.latest_context.clone())))),
            { "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("Ravenwatch alert `{}`", alert.id) }] },
        ],
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrichment() -> Value {
        json!({
            "asset": {
                "hostname": "LAPTOP-7",
                "last_seen": "2026-11-20T08:00:00Z",
                "interfaces": [
                    { "ip": "10.2.3.4", "mac": "aa:bb" },
                    { "ip": "10.9.0.1", "mac": null }
                ],
                "owners": ["ana", "ben"],
                "tags": []
            },
            "account": { "name": "prod-payments", "production": true }
        })
    }

    #[test]
    fn mrkdwn_nests_records_and_joins_lists() {
        insta::assert_snapshot!(value_mrkdwn(&enrichment()), @r"
        • *asset:*
            • *hostname:* LAPTOP-7
            • *last_seen:* 2026-11-20T08:00:00Z
            • *interfaces:*
                • ip: 10.2.3.4, mac: aa:bb
                • ip: 10.9.0.1, mac: (none)
            • *owners:* ana, ben
            • *tags:* (none)
        • *account:*
            • *name:* prod-payments
            • *production:* true
        ");
        assert_eq!(value_mrkdwn(&json!({})), NONE);
        assert_eq!(value_mrkdwn(&json!({"a": "<b>&"})), "• *a:* &lt;b&gt;&amp;");
    }

    #[test]
    fn adf_is_a_nested_list_without_empty_text() {
        let doc = field_adf(&enrichment());
        let text = doc.to_string();
        assert!(!text.contains(r#""text":"""#), "{text}");
        let asset = &doc["content"][0]["content"][0]["content"];
        assert_eq!(asset[0]["content"][0]["text"], "asset");
        let hostname = &asset[1]["content"][0]["content"][0]["content"];
        assert_eq!(hostname[0]["text"], "hostname: ");
        assert_eq!(hostname[1]["text"], "LAPTOP-7");
        let interfaces = &asset[1]["content"][2]["content"];
        assert_eq!(interfaces[1]["type"], "bulletList");
        assert_eq!(
            interfaces[1]["content"][1]["content"][0]["content"][0]["text"],
            "ip: 10.9.0.1, mac: (none)"
        );
    }

    #[test]
    fn descriptions_stay_valid_adf() {
        let mut alert: Alert = serde_json::from_str(
            &json!({
                "id": "a1", "rule": "r", "title": "", "severity": "high", "dedupe": "",
                "activated": true, "match_count": 3, "threshold": 2,
                "first_match_time": "t0", "last_match_time": "t1", "window_start": "t0",
                "window_end": "t2", "created_at": "t", "context": {"enrichment": enrichment()},
                "latest_context": {}, "description": null, "runbook": "Call the owner.",
                "reference": "T1110", "destinations": [], "tables": [], "false_positives": [],
                "events": [{"user": {"name": "ana"}}]
            })
            .to_string(),
        )
        .unwrap();
        let doc = jira_description(&alert);
        let text = doc.to_string();
        assert!(
            !text.contains(r#""text":"""#),
            "no empty text nodes: {text}"
        );
        assert!(!text.contains(r#""type":"link""#), "T1110 is not a URL");
        assert!(text.contains("3 (threshold 2)") && text.contains("Call the owner."));
        alert.reference = Some("https://attack.mitre.org/techniques/T1110/".into());
        assert!(jira_description(&alert)
            .to_string()
            .contains(r#""type":"link""#));
        let update = jira_update(&alert, 2).to_string();
        assert!(update.contains("Ravenwatch: 3 matches") && update.contains("(none)"));
    }

    #[test]
    fn templates_render_paths_and_missing_values() {
        let alert = json!({ "rule": "r1", "context": { "enrichment": enrichment(), "n": 3 } });
        let t = |s: &str| Template::parse(s, false).unwrap();
        assert_eq!(
            render_text(
                &t("{rule} on {context.enrichment.asset.hostname} ({context.missing})"),
                &alert
            ),
            "r1 on LAPTOP-7 ()"
        );
        assert_eq!(
            render_text(&t("{context.enrichment.asset.interfaces.0.ip}"), &alert),
            "10.2.3.4"
        );
        assert!(sole_structured(&t("{context.enrichment}"), &alert).is_some());
        assert!(sole_structured(&t("{context.n}"), &alert).is_none());
        assert!(sole_missing(&t("{context.nothing}"), &alert));
        assert!(!sole_missing(&t("x {context.nothing}"), &alert));
    }
}
