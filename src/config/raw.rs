//! The YAML files exactly as written: serde types with `deny_unknown_fields`.
//! Matano's own fields are accepted here even where Ravenwatch ignores them.

use crate::schema::Field;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: Option<String>,
    pub storage: Option<String>,
    pub enrichment_uploads: Option<String>,
    pub aws: Option<RawAws>,
    /// Where activated alerts are delivered, by name.
    pub destinations: Option<std::collections::BTreeMap<String, serde_yaml::Value>>,
    /// Delivery behaviour: default destinations, retries, timeouts.
    pub delivery: Option<RawDelivery>,
}

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

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: Option<bool>,
    pub profile: Option<String>,
    /// Attempts per S3 request, retries included.
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogTable {
    pub name: String,
    pub timestamp: Option<String>,
    pub description: Option<String>,
    pub schema: RawLogSchema,
    /// Automatic enrichment: fields looked up in tables before detections run.
    pub enrich: Option<Vec<RawSelector>>,
}

/// `{ table: geoip, fields: [source.ip, destination.ip], key: ip }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    pub table: String,
    pub fields: OneOrMany,
    /// The table's lookup key (default: its first).
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogSchema {
    pub fields: Vec<Field>,
    /// Matano: whether the table follows ECS names; informational.
    #[expect(dead_code, reason = "Matano field, accepted and ignored")]
    pub ecs_field_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawEnrichmentType {
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawWriteMode {
    Overwrite,
    Append,
}

/// How a table's data is stored: rows (any row format) or a MaxMind DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawTableFormat {
    Rows,
    Mmdb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrichment {
    pub name: String,
    pub description: Option<String>,
    pub enrichment_type: Option<RawEnrichmentType>,
    pub write_mode: Option<RawWriteMode>,
    /// `mmdb`: the data is a MaxMind DB file (GeoIP); default: rows.
    pub format: Option<RawTableFormat>,
    /// Required unless `format: mmdb` (whose records are free-form).
    pub schema: Option<RawEnrichmentSchema>,
    pub lookup_keys: Option<Vec<RawLookupKey>>,
    /// Separator of list cells in CSV data (default `;`).
    pub list_delimiter: Option<String>,
    /// How to read feed files as they are published.
    pub source: Option<RawSource>,
}

/// Reading options for data files (static) and uploads (dynamic).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Dotted path(s) of the array(s) holding the rows in a JSON document.
    pub records: Option<OneOrMany>,
    /// CSV: lines starting with this character are skipped.
    pub comment: Option<String>,
    /// CSV: whether the first line is a header (default true).
    pub has_header: Option<bool>,
    /// CSV: column names, in order (required without a header).
    pub columns: Option<Vec<String>>,
    /// Source column → schema field.
    pub rename: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrichmentSchema {
    pub primary_key: Option<String>,
    pub fields: Vec<Field>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Notice,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub severity: Option<Severity>,
    pub threshold: Option<u64>,
    pub deduplication_window_minutes: Option<u64>,
    pub destinations: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetection {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub tables: Option<Vec<String>>,
    /// Matano's older name for `tables`.
    pub log_sources: Option<Vec<String>>,
    pub alert: Option<RawAlert>,
    pub runbook: Option<String>,
    pub references: Option<Vec<String>>,
    pub false_positives: Option<Vec<String>>,
    /// Matano: framework mappings such as `attack: [T1078]`; carried into alerts.
    pub reports: Option<serde_yaml::Value>,
    pub tags: Option<Vec<String>>,
    /// A SQL detection: the query that replaces detect.py.
    pub query: Option<String>,
    /// SQL detections: templates over the result row.
    pub dedupe: Option<String>,
    pub title: Option<String>,
    /// Python detections: a SQL predicate evaluated on each batch before
    /// `detect()`.
    pub filter: Option<String>,
    /// Test cases: accepted here, parsed and validated by `testing::load_cases`
    /// (so a bad test case never blocks `run`).
    #[expect(dead_code, reason = "read by the testing module with its own types")]
    pub tests: Option<serde_yaml::Value>,
}

/// A lookup key: Matano's plain column name, or a mapping with options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLookupKey {
    Name(String),
    Spec(RawKeySpec),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeySpec {
    pub name: String,
    /// `exact` (default) or `cidr`.
    #[serde(rename = "match")]
    pub matching: Option<RawKeyMatch>,
    pub case_sensitive: Option<bool>,
    /// The indexed column (default: `name`).
    pub column: Option<String>,
    /// Several columns: a composite key.
    pub columns: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKeyMatch {
    Exact,
    Cidr,
}

impl<'de> Deserialize<'de> for RawLookupKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawLookupKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a column name or a mapping {name, match, case_sensitive, column, columns}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawLookupKey::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawKeySpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawLookupKey::Spec)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
