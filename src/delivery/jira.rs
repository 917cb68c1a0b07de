//! Jira Cloud REST v3: one issue per alert (`POST /rest/api/3/issue`),
//! later matches as comments (`POST /rest/api/3/issue/{key}/comment`).
//! Every issue carries the label `rw-<alert id>`; before creating one, a
//! JQL search (`POST /rest/api/3/search/jql`) for that label finds an issue
//! a previous attempt created but could not record (a crash, a timeout
//! after Jira had accepted it), so an alert never gets two tickets.

use super::http::{Http, SendError};
use super::render::{self, field_adf, jira_description, jira_update};
use super::sender::{secret, Sender};
use crate::alerts::Alert;
use crate::config::{FieldTemplate, JiraDestination};
use serde_json::{json, Map, Value};

/// Jira's limit on a summary.
const SUMMARY_CHARS: usize = 255;

pub struct Jira<'a> {
    name: &'a str,
    config: &'a JiraDestination,
    user: String,
    token: String,
    http: &'a Http,
}

impl<'a> Jira<'a> {
    pub fn new(
        name: &'a str,
        config: &'a JiraDestination,
        http: &'a Http,
    ) -> Result<Self, SendError> {
        let user = secret(name, &config.user_env)?;
        let token = secret(name, &config.token_env)?;
        Ok(Self {
            name,
            config,
            user,
            token,
            http,
        })
    }

    fn post(&self, what: &str, path: &str, body: &Value) -> Result<Value, SendError> {
        let url = format!("{}{path}", self.config.url);
        let body = serde_json::to_vec(body).unwrap_or_default();
        let reply = self.http.send(&format!("{}: {what}", self.name), &|| {
            self.http
                .client()
                .post(&url)
                .basic_auth(&self.user, Some(&self.token))
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .body(body.clone())
        })?;
        Ok(serde_json::from_str(&reply.body).unwrap_or(Value::Null))
    }

    /// The key of an issue already labelled for this alert, if any. A Jira
    /// without the v3 search endpoint (404) is treated as having none.
    fn find(&self, label: &str) -> Result<Option<String>, SendError> {
        let jql = format!(
            "project = \"{}\" AND labels = \"{label}\"",
            self.config.project.replace('"', "\\\"")
        );
        let body = json!({ "jql": jql, "fields": ["summary"], "maxResults": 1 });
        match self.post("search issues", "/rest/api/3/search/jql", &body) {
            Ok(found) => Ok(found["issues"][0]["key"].as_str().map(str::to_string)),
            Err(e) if !e.transient && e.message.contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn fields(&self, alert: &Alert) -> Map<String, Value> {
        let values = crate::alerts::alert_json(alert);
        let label = tracking_label(&alert.id);
        let mut fields = Map::new();
        fields.insert("project".into(), json!({ "key": self.config.project }));
        fields.insert(
            "issuetype".into(),
            json!({ "name": self.config.issue_type }),
        );
        fields.insert("summary".into(), json!(summary(&alert.title)));
        fields.insert("description".into(), jira_description(alert));
        if let Some(priority) = self.config.priority.get(&alert.severity) {
            fields.insert("priority".into(), json!({ "name": priority }));
        }
        let mut labels = vec![Value::String(label)];
        for (id, template) in &self.config.fields {
            let value = match template {
                FieldTemplate::Many(items) => Value::Array(
                    items
                        .iter()
                        .map(|t| render::render_text(t, &values))
                        .filter(|s| !s.is_empty())
                        .map(Value::String)
                        .collect(),
                ),
                FieldTemplate::One(t) => {
                    if render::sole_missing(t, &values) {
                        continue;
                    }
                    match render::sole_structured(t, &values) {
                        Some(structured) => field_adf(structured),
                        None if id == "description" => {
                            field_adf(&Value::String(render::render_text(t, &values)))
                        }
                        None => Value::String(render::render_text(t, &values)),
                    }
                }
            };
            if id == "labels" {
                // Labels cannot hold spaces; the tracking label stays first.
                let items = match value {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                labels.extend(items.into_iter().filter_map(|v| {
                    let text = v.as_str()?.split_whitespace().collect::<Vec<_>>().join("_");
                    (!text.is_empty()).then_some(Value::String(text))
                }));
            } else if id == "summary" {
                fields.insert(
                    id.clone(),
                    json!(summary(value.as_str().unwrap_or_default())),
                );
            } else {
                fields.insert(id.clone(), value);
            }
        }
        fields.insert("labels".into(), Value::Array(labels));
        fields
    }
}

impl Sender for Jira<'_> {
    fn create(&self, alert: &Alert) -> Result<Option<String>, SendError> {
        if let Some(key) = self.find(&tracking_label(&alert.id))? {
            return Ok(Some(key));
        }
        let created = self.post(
            "create issue",
            "/rest/api/3/issue",
            &json!({ "fields": self.fields(alert) }),
        )?;
        match created["key"].as_str() {
            Some(key) => Ok(Some(key.to_string())),
            None => Err(SendError {
                transient: false,
                message: format!(
                    "{}: create issue: the reply has no issue key: {}",
                    self.name,
                    super::http::excerpt(&created.to_string())
                ),
            }),
        }
    }

    fn update(
        &self,
        alert: &Alert,
        reference: Option<&str>,
        previous: u64,
    ) -> Result<Option<String>, SendError> {
        let Some(key) = reference else {
            return self.create(alert);
        };
        self.post(
            &format!("comment on {key}"),
            &format!("/rest/api/3/issue/{key}/comment"),
            &json!({ "body": jira_update(alert, previous) }),
        )?;
        Ok(Some(key.to_string()))
    }
}

/// The label that ties an issue to its alert.
pub fn tracking_label(alert_id: &str) -> String {
    format!("rw-{alert_id}")
}

fn summary(title: &str) -> String {
    let line = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= SUMMARY_CHARS {
        line
    } else {
        let cut: String = line.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    }
}
