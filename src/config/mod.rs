//! Project configuration: YAML files → validated domain types.
//!
//! One file per section, each with its raw serde types
//! (`deny_unknown_fields`, so typos are caught with the nearest valid name)
//! beside the validated types the rest of the engine uses: `project`
//! (ravenwatch.yml, loading order), `log_table` (schemas/), `enrichment`
//! (enrichment.yml), `detection` (detection.yml), `destinations`
//! (delivery), `template`, `severity`; `locate` finds positions in YAML
//! text and `error` collects every error instead of stopping at the first,
//! so `validate` can show them at once.

mod destinations;
mod detection;
mod enrichment;
mod error;
mod locate;
mod log_table;
mod panther;
mod project;
mod read;
mod severity;
mod template;

pub use destinations::{
    is_secure_url, unknown_destination, DeliverySettings, Destination, DestinationKind,
    FieldTemplate, JiraDestination, RetryPolicy, SlackDestination, WebhookDestination,
    ALERT_TEMPLATE_FIELDS,
};
pub use detection::{DetectionDef, RuleLogic, SqlText};
pub use enrichment::{
    find_data_files, is_identifier, EnrichmentDef, EnrichmentKind, KeyMatch, LookupKey,
    SourceOptions, TableFormat, WriteMode,
};
pub use error::{ConfigError, ConfigErrors, Diagnostics, Scope};
pub use locate::{locate_key, locate_text, locate_text_after};
pub use log_table::{resolve_path, LogTable, Selector};
pub use panther::{
    builtin_log_table, discover, is_panther_dir, log_table_name, lookup_columns, lookup_table_name,
    panther_detections, DataModelItem, LookupTableItem, PantherDir, PantherRule, PantherRuleInfo,
    PantherSupport, PantherTest, SelectorName, INDICATORS, KNOWN_LOG_TYPES,
};
pub use project::{Project, ProjectSettings, PROJECT_FOLDERS};
pub(crate) use read::read_yaml;
pub use severity::Severity;
pub use template::{Template, TemplatePart};

pub const PROJECT_FILE: &str = "ravenwatch.yml";
pub const DEFAULT_STORAGE: &str = ".ravenwatch";
/// Matano's default deduplication window.
pub const DEFAULT_DEDUPE_WINDOW_MINUTES: u64 = 60;

/// Data file extensions recognised for static tables (each may end in `.gz`).
pub const DATA_EXTENSIONS: &[&str] = &["jsonl", "ndjson", "json", "csv", "txt", "parquet"];
/// The data file extension of `format: mmdb` tables.
pub const MMDB_EXTENSION: &str = "mmdb";
