//! `destinations:` and `delivery:` in ravenwatch.yml → validated delivery
//! settings. No I/O here: secrets are named (environment variables) and
//! only read when a delivery is sent.

use super::{locate_key, locate_text, ConfigError, Diagnostics, Severity, Template};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Destinations of rules whose `alert.destinations` is absent.
    pub default_destinations: Option<Vec<String>>,
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// First retry delay; doubles per attempt (with jitter) up to `max_backoff_ms`.
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    /// Longest `Retry-After` waited for; a longer one leaves the delivery pending.
    pub max_retry_after_seconds: Option<u64>,
    /// Per-request timeout.
    pub timeout_seconds: Option<u64>,
}

/// One entry of `destinations:` (parsed from its YAML value separately, so
/// an error names the destination).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawDestination {
    Jira {
        url: String,
        project: String,
        issue_type: Option<String>,
        user_env: String,
        token_env: String,
        priority: Option<std::collections::BTreeMap<String, String>>,
        fields: Option<serde_yaml::Mapping>,
    },
    Slack {
        /// Incoming webhook (its URL is the secret).
        webhook_url_env: Option<String>,
        /// Or the Web API with a bot token (`chat.postMessage`; threads updates).
        token_env: Option<String>,
        channel: Option<String>,
        /// Slack's API base (default `https://slack.com/api`).
        api_url: Option<String>,
    },
    Webhook {
        url: String,
        /// Header name → environment variable holding its value.
        headers_env: Option<std::collections::BTreeMap<String, String>>,
    },
}

/// Where activated alerts go, and how hard to try.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    pub destinations: Vec<Destination>,
    /// Destinations of rules that name none (`alert.destinations` absent).
    pub default_destinations: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            destinations: Vec::new(),
            default_destinations: Vec::new(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
        }
    }
}

impl DeliverySettings {
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.destinations.iter().map(|d| d.name.as_str()).collect()
    }
}

/// Exponential backoff with jitter between attempts of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

const DEFAULT_TIMEOUT_SECONDS: u64 = 15;

#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub name: String,
    pub kind: DestinationKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    Jira(JiraDestination),
    Slack(SlackDestination),
    Webhook(WebhookDestination),
}

impl DestinationKind {
    /// Environment variables whose values must never be shown.
    pub fn secret_envs(&self) -> Vec<&str> {
        match self {
            DestinationKind::Jira(j) => vec![j.token_env.as_str()],
            DestinationKind::Slack(SlackDestination::Webhook { url_env }) => vec![url_env.as_str()],
            DestinationKind::Slack(SlackDestination::Api { token_env, .. }) => {
                vec![token_env.as_str()]
            }
            DestinationKind::Webhook(w) => w.headers_env.iter().map(|(_, e)| e.as_str()).collect(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            DestinationKind::Jira(_) => "jira",
            DestinationKind::Slack(_) => "slack",
            DestinationKind::Webhook(_) => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JiraDestination {
    /// Site URL without a trailing slash (`https://example.atlassian.net`).
    pub url: String,
    pub project: String,
    pub issue_type: String,
    pub user_env: String,
    pub token_env: String,
    pub priority: BTreeMap<Severity, String>,
    /// Jira field id → template over the alert, in file order.
    pub fields: Vec<(String, FieldTemplate)>,
}

/// A `fields:` value: one template, or a list (Jira labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTemplate {
    One(Template),
    Many(Vec<Template>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackDestination {
    /// An incoming webhook: one message per alert, updates as new messages.
    Webhook { url_env: String },
    /// The Web API (`chat.postMessage`): updates reply in the alert's thread.
    Api {
        token_env: String,
        channel: String,
        api_url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDestination {
    pub url: String,
    /// Header name → environment variable holding its value.
    pub headers_env: Vec<(String, String)>,
}

/// Top-level alert fields a delivery template may start with.
pub const ALERT_TEMPLATE_FIELDS: [&str; 22] = [
    "id",
    "rule",
    "title",
    "severity",
    "dedupe",
    "activated",
    "match_count",
    "threshold",
    "first_match_time",
    "last_match_time",
    "window_start",
    "window_end",
    "created_at",
    "context",
    "latest_context",
    "description",
    "runbook",
    "reference",
    "destinations",
    "tables",
    "false_positives",
    "events",
];

/// Jira fields Ravenwatch sets from other keys.
const RESERVED_JIRA_FIELDS: [(&str, &str); 2] =
    [("project", "project"), ("issuetype", "issue_type")];

/// Validates `destinations:` and `delivery:`; every error is pushed, located
/// in `file` (ravenwatch.yml) by the destination's name or key.
pub(crate) fn validate(
    raw_destinations: Option<BTreeMap<String, serde_yaml::Value>>,
    raw_delivery: Option<RawDelivery>,
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
) -> DeliverySettings {
    let mut settings = DeliverySettings::default();
    for (name, value) in raw_destinations.unwrap_or_default() {
        let at = locate_key(source, &name);
        let err = |message: String| ConfigError::new(file, message).at(at);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errors.push(err(format!(
                "destination name `{name}` may only use letters, digits, `_` and `-`"
            )));
            continue;
        }
        let raw: RawDestination = match serde_yaml::from_value(value) {
            Ok(raw) => raw,
            Err(e) => {
                // The value was parsed out of its file: locate by name.
                let message = ConfigError::from_yaml(file, &e).message;
                errors.push(err(format!("destination `{name}`: {message}")));
                continue;
            }
        };
        let mut errors = errors.scope();
        let mut problem =
            |message: String| errors.push(err(format!("destination `{name}`: {message}")));
        let kind = destination_kind(raw, &mut problem);
        if errors.is_clean() {
            if let Some(kind) = kind {
                settings.destinations.push(Destination { name, kind });
            }
        }
    }

    delivery_options(
        raw_delivery.unwrap_or_default(),
        &mut settings,
        file,
        source,
        errors,
    );
    settings
}

/// One destination's settings by kind; problems go to `problem`.
fn destination_kind(
    raw: RawDestination,
    problem: &mut dyn FnMut(String),
) -> Option<DestinationKind> {
    match raw {
        RawDestination::Jira {
            url,
            project,
            issue_type,
            user_env,
            token_env,
            priority,
            fields,
        } => {
            let url = check_url(&url, "url").map_err(&mut *problem).ok();
            check_env_name(&user_env, "user_env").unwrap_or_else(&mut *problem);
            check_env_name(&token_env, "token_env").unwrap_or_else(&mut *problem);
            if project.trim().is_empty() {
                problem("`project` is empty".into());
            }
            let mut by_severity = BTreeMap::new();
            for (severity, value) in priority.unwrap_or_default() {
                match Severity::parse(&severity) {
                    Some(s) => {
                        by_severity.insert(s, value);
                    }
                    None => problem(format!(
                        "priority: `{severity}` is not a severity (one of {})",
                        Severity::ALL.map(Severity::as_str).join(", ")
                    )),
                }
            }
            let fields = jira_fields(fields.unwrap_or_default(), &mut *problem);
            url.map(|url| {
                DestinationKind::Jira(JiraDestination {
                    url,
                    project: project.trim().to_string(),
                    issue_type: issue_type.unwrap_or_else(|| "Task".into()),
                    user_env,
                    token_env,
                    priority: by_severity,
                    fields,
                })
            })
        }
        RawDestination::Slack {
            webhook_url_env,
            token_env,
            channel,
            api_url,
        } => match (webhook_url_env, token_env, channel) {
            (Some(url_env), None, None) if api_url.is_none() => {
                check_env_name(&url_env, "webhook_url_env").unwrap_or_else(&mut *problem);
                Some(DestinationKind::Slack(SlackDestination::Webhook {
                    url_env,
                }))
            }
            (None, Some(token_env), Some(channel)) => {
                check_env_name(&token_env, "token_env").unwrap_or_else(&mut *problem);
                let api_url = api_url.unwrap_or_else(|| "https://slack.com/api".into());
                check_url(&api_url, "api_url")
                    .map(|api_url| {
                        DestinationKind::Slack(SlackDestination::Api {
                            token_env,
                            channel,
                            api_url,
                        })
                    })
                    .map_err(&mut *problem)
                    .ok()
            }
            _ => {
                problem("a slack destination takes either `webhook_url_env` (an incoming webhook) or `token_env` and `channel` (the Web API, which threads updates)".into());
                None
            }
        },
        RawDestination::Webhook { url, headers_env } => {
            let url = check_url(&url, "url").map_err(&mut *problem).ok();
            let mut headers = Vec::new();
            for (header, env) in headers_env.unwrap_or_default() {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    problem(format!(
                        "headers_env: `{header}` is not a valid header name"
                    ));
                }
                check_env_name(&env, &format!("headers_env.{header}"))
                    .unwrap_or_else(&mut *problem);
                headers.push((header, env));
            }
            url.map(|url| {
                DestinationKind::Webhook(WebhookDestination {
                    url,
                    headers_env: headers,
                })
            })
        }
    }
}

/// `delivery:`: retries, timeouts and the default destinations.
fn delivery_options(
    raw: RawDelivery,
    settings: &mut DeliverySettings,
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
) {
    let retry = RetryPolicy::default();
    if raw.max_attempts == Some(0) {
        errors.push(
            ConfigError::new(file, "delivery: `max_attempts` must be at least 1")
                .at(locate_key(source, "max_attempts")),
        );
    }
    settings.retry = RetryPolicy {
        max_attempts: raw.max_attempts.unwrap_or(retry.max_attempts).max(1),
        backoff: raw
            .backoff_ms
            .map(Duration::from_millis)
            .unwrap_or(retry.backoff),
        max_backoff: raw
            .max_backoff_ms
            .map(Duration::from_millis)
            .unwrap_or(retry.max_backoff),
        max_retry_after: raw
            .max_retry_after_seconds
            .map(Duration::from_secs)
            .unwrap_or(retry.max_retry_after),
    };
    if raw.timeout_seconds == Some(0) {
        errors.push(
            ConfigError::new(file, "delivery: `timeout_seconds` must be at least 1")
                .at(locate_key(source, "timeout_seconds")),
        );
    }
    settings.timeout = Duration::from_secs(
        raw.timeout_seconds
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .max(1),
    );
    let defaults = raw.default_destinations.unwrap_or_default();
    for name in &defaults {
        if let Some(message) = unknown_destination(name, settings) {
            errors.push(
                ConfigError::new(file, format!("delivery: default_destinations: {message}"))
                    .at(locate_text(source, name)),
            );
        }
    }
    settings.default_destinations = defaults;
}

/// `None` if `name` is a destination, else the message for it.
pub fn unknown_destination(name: &str, settings: &DeliverySettings) -> Option<String> {
    if settings.destination(name).is_some() {
        return None;
    }
    let names = settings.names();
    let hint = crate::suggest::did_you_mean(name, &names);
    Some(if names.is_empty() {
        format!("unknown destination `{name}`: ravenwatch.yml defines no `destinations:`")
    } else {
        format!(
            "unknown destination `{name}`{hint}; ravenwatch.yml defines {}",
            names.join(", ")
        )
    })
}

/// Whether credentials may be sent to `url`: `https`, or `http` to a
/// loopback host (a local relay or a test server), so tokens never travel
/// in clear text over a network.
pub fn is_secure_url(url: &reqwest::Url) -> bool {
    let loopback = matches!(
        url.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    );
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// A URL [`is_secure_url`] accepts, without its trailing `/`.
fn check_url(url: &str, key: &str) -> Result<String, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{key}: `{url}` is not a URL ({e})"))?;
    match parsed.scheme() {
        _ if is_secure_url(&parsed) => {}
        "http" => {
            return Err(format!(
                "{key}: `{url}` is plain http; use https (http is accepted for localhost only)"
            ))
        }
        other => return Err(format!("{key}: `{url}` has scheme `{other}`; use https")),
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An environment variable name; the error never repeats the value, which
/// may be the secret pasted by mistake.
fn check_env_name(name: &str, key: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key} must name an environment variable (like JIRA_API_TOKEN), not hold the secret itself; secrets are read from the environment only"
        ))
    }
}

fn jira_fields(
    raw: serde_yaml::Mapping,
    problem: &mut dyn FnMut(String),
) -> Vec<(String, FieldTemplate)> {
    let mut fields = Vec::new();
    for (key, value) in raw {
        let Some(id) = key.as_str().map(str::to_string) else {
            problem(format!("fields: the key {key:?} is not a Jira field id"));
            continue;
        };
        if let Some((_, instead)) = RESERVED_JIRA_FIELDS.iter().find(|(f, _)| *f == id) {
            problem(format!("fields: `{id}` is set by `{instead}:`"));
            continue;
        }
        let parse = |text: &str, problem: &mut dyn FnMut(String)| -> Option<Template> {
            match Template::parse(text, false) {
                Ok(t) => {
                    for path in t.fields() {
                        if let Err(e) = check_alert_path(path) {
                            problem(format!("fields.{id}: {e}"));
                            return None;
                        }
                    }
                    Some(t)
                }
                Err(e) => {
                    problem(format!("fields.{id}: {e}"));
                    None
                }
            }
        };
        let template = match value {
            serde_yaml::Value::String(text) => parse(&text, problem).map(FieldTemplate::One),
            serde_yaml::Value::Sequence(items) => {
                let mut templates = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(text) => templates.extend(parse(text, problem)),
                        None => problem(format!("fields.{id}: list items must be text templates")),
                    }
                }
                Some(FieldTemplate::Many(templates))
            }
            _ => {
                problem(format!(
                    "fields.{id}: expected a text template or a list of them"
                ));
                None
            }
        };
        if let Some(template) = template {
            fields.push((id, template));
        }
    }
    fields
}

/// A template path must start with an alert field; below `context`,
/// `latest_context` and `events` anything goes (detections decide).
fn check_alert_path(path: &str) -> Result<(), String> {
    let first = path.split('.').next().unwrap_or_default();
    if ALERT_TEMPLATE_FIELDS.contains(&first) {
        return Ok(());
    }
    let hint = crate::suggest::did_you_mean(first, &ALERT_TEMPLATE_FIELDS);
    Err(format!(
        "`{{{path}}}`: alerts have no field `{first}`{hint}; fields: {}",
        ALERT_TEMPLATE_FIELDS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> (DeliverySettings, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct Doc {
            destinations: Option<BTreeMap<String, serde_yaml::Value>>,
            delivery: Option<RawDelivery>,
        }
        let doc: Doc = serde_yaml::from_str(yaml).unwrap();
        let mut errors = Diagnostics::default();
        let settings = validate(
            doc.destinations,
            doc.delivery,
            Path::new("ravenwatch.yml"),
            yaml,
            &mut errors,
        );
        let errors = errors.into_vec();
        (settings, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn parses_the_three_kinds() {
        let (settings, errors) = load(
            r#"
destinations:
  jira_main:
    type: jira
    url: https://example.atlassian.net/
    project: SEC
    issue_type: Security Alert
    user_env: JIRA_USER
    token_env: JIRA_API_TOKEN
    priority: { critical: Highest, info: Lowest }
    fields:
      customfield_10050: "{context.enrichment}"
      labels: ["ravenwatch", "{rule}"]
  slack_soc: { type: slack, webhook_url_env: SLACK_WEBHOOK_URL }
  soar: { type: webhook, url: "http://127.0.0.1:9/hook", headers_env: { Authorization: SOAR_TOKEN } }
delivery: { default_destinations: [slack_soc], max_attempts: 2 }
"#,
        );
        assert_eq!(errors, Vec::<String>::new());
        let DestinationKind::Jira(jira) = &settings.destination("jira_main").unwrap().kind else {
            panic!("not jira")
        };
        assert_eq!(jira.url, "https://example.atlassian.net");
        assert_eq!(jira.priority[&Severity::Critical], "Highest");
        assert_eq!(jira.fields.len(), 2);
        assert!(matches!(&jira.fields[1].1, FieldTemplate::Many(t) if t.len() == 2));
        assert_eq!(settings.default_destinations, ["slack_soc"]);
        assert_eq!(settings.retry.max_attempts, 2);
        assert_eq!(settings.destinations.len(), 3);
    }

    #[test]
    fn errors_name_the_destination_and_never_echo_secrets() {
        let (settings, errors) = load(
            r#"
destinations:
  jira_main:
    type: jira
    url: http://jira.example.com
    project: SEC
    user_env: JIRA_USER
    token_env: "ATATT3xFfGF0-secret"
    priority: { urgent: Highest }
    fields: { customfield_1: "{contxt.enrichment}", issuetype: "x" }
  slack_soc: { type: slack, webhook_url_env: S, channel: C }
  soar: { type: webhok, url: "https://x" }
delivery: { default_destinations: [jira_mian] }
"#,
        );
        assert!(settings.destinations.is_empty());
        let text = errors.join("\n");
        assert!(!text.contains("ATATT3xFfGF0"), "{text}");
        insta::assert_snapshot!(text, @r"
        ravenwatch.yml:3:3: destination `jira_main`: url: `http://jira.example.com` is plain http; use https (http is accepted for localhost only)
        ravenwatch.yml:3:3: destination `jira_main`: token_env must name an environment variable (like JIRA_API_TOKEN), not hold the secret itself; secrets are read from the environment only
        ravenwatch.yml:3:3: destination `jira_main`: priority: `urgent` is not a severity (one of info, notice, low, medium, high, critical)
        ravenwatch.yml:3:3: destination `jira_main`: fields.customfield_1: `{contxt.enrichment}`: alerts have no field `contxt` (did you mean `context`?); fields: id, rule, title, severity, dedupe, activated, match_count, threshold, first_match_time, last_match_time, window_start, window_end, created_at, context, latest_context, description, runbook, reference, destinations, tables, false_positives, events
        ravenwatch.yml:3:3: destination `jira_main`: fields: `issuetype` is set by `issue_type:`
        ravenwatch.yml:11:3: destination `slack_soc`: a slack destination takes either `webhook_url_env` (an incoming webhook) or `token_env` and `channel` (the Web API, which threads updates)
        ravenwatch.yml:12:3: destination `soar`: unknown variant `webhok`, expected one of `jira`, `slack`, `webhook` (did you mean `webhook`?)
        ravenwatch.yml:13:36: delivery: default_destinations: unknown destination `jira_mian`: ravenwatch.yml defines no `destinations:`
        ");
    }
}
