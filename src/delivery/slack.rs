//! Slack, two ways. An incoming webhook (the URL is the secret) posts one
//! message per alert and each update as a new message naming the alert:
//! webhooks cannot reply in threads. The Web API (`chat.postMessage` with
//! a bot token) records the message's `ts` and posts updates in its thread.

use super::http::{excerpt, Http, SendError};
use super::render::{slack_message, slack_update};
use super::sender::{secret, Sender};
use crate::alerts::Alert;
use crate::config::SlackDestination;
use serde_json::Value;

pub struct Slack<'a> {
    name: &'a str,
    http: &'a Http,
    target: Target,
}

enum Target {
    Webhook {
        url: String,
    },
    Api {
        token: String,
        channel: String,
        url: String,
    },
}

impl<'a> Slack<'a> {
    pub fn new(
        name: &'a str,
        config: &SlackDestination,
        http: &'a Http,
    ) -> Result<Self, SendError> {
        let target = match config {
            SlackDestination::Webhook { url_env } => {
                let url = secret(name, url_env)?;
                if !reqwest::Url::parse(&url).is_ok_and(|u| crate::config::is_secure_url(&u)) {
                    return Err(SendError {
                        transient: false,
                        message: format!(
                            "{name}: ${url_env} is not an https URL (a Slack incoming webhook URL starts with https://hooks.slack.com/)"
                        ),
                    });
                }
                Target::Webhook { url }
            }
            SlackDestination::Api {
                token_env,
                channel,
                api_url,
            } => {
                let token = secret(name, token_env)?;
                Target::Api {
                    token,
                    channel: channel.clone(),
                    url: format!("{api_url}/chat.postMessage"),
                }
            }
        };
        Ok(Self { name, http, target })
    }

    /// Posts a message; with the Web API, returns its `ts`.
    fn post(&self, mut message: Value, thread: Option<&str>) -> Result<Option<String>, SendError> {
        let what = format!("{}: post message", self.name);
        match &self.target {
            Target::Webhook { url } => {
                let body = serde_json::to_vec(&message).unwrap_or_default();
                self.http.send(&what, &|| {
                    self.http
                        .client()
                        .post(url)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                })?;
                Ok(None)
            }
            Target::Api {
                token,
                channel,
                url,
            } => {
                message["channel"] = Value::String(channel.clone());
                if let Some(ts) = thread {
                    message["thread_ts"] = Value::String(ts.to_string());
                }
                let body = serde_json::to_vec(&message).unwrap_or_default();
                let reply = self.http.send(&what, &|| {
                    self.http
                        .client()
                        .post(url)
                        .bearer_auth(token)
                        .header("Content-Type", "application/json; charset=utf-8")
                        .body(body.clone())
                })?;
                // The Web API answers 200 with `ok: false` for its errors.
                let parsed: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
                if parsed["ok"] == Value::Bool(true) {
                    Ok(parsed["ts"].as_str().map(str::to_string))
                } else {
                    let error = parsed["error"].as_str().unwrap_or("no `ok` in the reply");
                    Err(SendError {
                        transient: matches!(
                            error,
                            "ratelimited"
                                | "internal_error"
                                | "service_unavailable"
                                | "request_timeout"
                        ),
                        message: self.http.redactor.redact(&format!(
                            "{what}: Slack error `{error}`: {}",
                            excerpt(&reply.body)
                        )),
                    })
                }
            }
        }
    }
}

impl Sender for Slack<'_> {
    fn create(&self, alert: &Alert) -> Result<Option<String>, SendError> {
        self.post(slack_message(alert), None)
    }

    fn update(
        &self,
        alert: &Alert,
        reference: Option<&str>,
        previous: u64,
    ) -> Result<Option<String>, SendError> {
        let ts = self.post(slack_update(alert, previous), reference)?;
        // A reply's own ts is not the thread's: keep the first message's.
        Ok(reference.map(str::to_string).or(ts))
    }
}
