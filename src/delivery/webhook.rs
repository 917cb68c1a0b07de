//! A plain JSON webhook for SOAR tools: `{"event": "alert.activated" |
//! "alert.updated", "previous_match_count", "alert": {…alerts.jsonl…}}`
//! with an `Idempotency-Key` of alert id and match count, so a receiver
//! can drop a message it already has.

use super::http::{Http, SendError};
use super::sender::{secret, Sender};
use crate::alerts::{alert_json, Alert};
use crate::config::WebhookDestination;
use serde_json::json;

pub struct Webhook<'a> {
    name: &'a str,
    url: &'a str,
    headers: Vec<(String, String)>,
    http: &'a Http,
}

impl<'a> Webhook<'a> {
    pub fn new(
        name: &'a str,
        config: &'a WebhookDestination,
        http: &'a Http,
    ) -> Result<Self, SendError> {
        let mut headers = Vec::new();
        for (header, env) in &config.headers_env {
            let value = secret(name, env)?;
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(SendError {
                    transient: false,
                    message: format!("{name}: ${env} is not a valid value for header {header}"),
                });
            }
            headers.push((header.clone(), value));
        }
        Ok(Self {
            name,
            url: &config.url,
            headers,
            http,
        })
    }

    fn post(&self, event: &str, alert: &Alert, previous: u64) -> Result<Option<String>, SendError> {
        let body = serde_json::to_vec(&json!({
            "event": event,
            "previous_match_count": previous,
            "alert": alert_json(alert),
        }))
        .unwrap_or_default();
        let key = format!("{}-{}", alert.id, alert.match_count);
        self.http.send(&format!("{}: {event}", self.name), &|| {
            let mut request = self
                .http
                .client()
                .post(self.url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &key)
                .body(body.clone());
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            request
        })?;
        Ok(None)
    }
}

impl Sender for Webhook<'_> {
    fn create(&self, alert: &Alert) -> Result<Option<String>, SendError> {
        self.post("alert.activated", alert, 0)
    }

    fn update(
        &self,
        alert: &Alert,
        _reference: Option<&str>,
        previous: u64,
    ) -> Result<Option<String>, SendError> {
        self.post("alert.updated", alert, previous)
    }
}
