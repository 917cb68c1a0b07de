//! `ravenwatch.yml` and the project as a whole: loading every section in
//! order (settings, enrichment tables, log tables, detections) and the
//! lookups the rest of the engine uses.

use super::destinations::{self, RawDelivery};
use super::detection::{load_detections, load_panther_detections};
use super::enrichment::load_enrichment;
use super::error::{ConfigError, ConfigErrors, Diagnostics};
use super::log_table::load_log_tables;
use super::read::read_yaml;
use super::{
    DeliverySettings, DetectionDef, EnrichmentDef, LogTable, DEFAULT_STORAGE, PROJECT_FILE,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// The longest one Python rule call may run (seconds).
    pub rule_timeout_seconds: Option<f64>,
    /// The SQS FIFO queue of the grouping shards' merges (`worker`, `lambda`).
    pub group_queue: Option<String>,
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

/// A loaded, validated project directory.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub settings: ProjectSettings,
    pub log_tables: Vec<LogTable>,
    pub enrichment: Vec<EnrichmentDef>,
    pub detections: Vec<DetectionDef>,
    /// What Panther-format rules share (global helpers, data models, log
    /// types), when the project has any.
    pub panther: Option<std::sync::Arc<super::PantherSupport>>,
}

#[derive(Debug, Clone)]
pub struct ProjectSettings {
    pub name: String,
    /// Local folder (relative to the project root) or `s3://bucket/prefix`.
    pub storage: String,
    /// Where dynamic tables' uploads live (default `<storage>/uploads`).
    pub enrichment_uploads: Option<String>,
    pub aws: crate::storage::AwsSettings,
    /// `destinations:` and `delivery:`.
    pub delivery: DeliverySettings,
    /// The longest one Python rule call may run before it is stopped.
    pub rule_timeout: std::time::Duration,
    /// `group_queue:` the SQS FIFO queue of the grouping shards' merges
    /// (`--group-queue` wins).
    pub group_queue: Option<String>,
}

impl Project {
    /// Loads and validates every configuration file under `root`.
    ///
    /// # Errors
    /// Every problem found, each naming its file and (where known) line and column.
    pub fn load(root: &Path) -> Result<Project, ConfigErrors> {
        let (project, errors) = Self::load_partial(root);
        if errors.is_empty() {
            Ok(project)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Like [`Project::load`], but returns the parts that are valid along
    /// with every error, so `validate` can go on checking them.
    pub fn load_partial(root: &Path) -> (Project, Vec<ConfigError>) {
        let mut errors = Diagnostics::default();
        if !root.is_dir() {
            errors.push(ConfigError::new(root, "project directory does not exist"));
        }
        let settings = load_settings(root, &mut errors);
        // Log tables' selectors refer to enrichment tables; their errors
        // are still reported first.
        let mut enrichment_errors = Diagnostics::default();
        let mut enrichment = load_enrichment(root, &mut enrichment_errors);
        let mut log_tables = load_log_tables(root, &enrichment, &mut errors);
        errors.append(&mut enrichment_errors);
        let mut detections = load_detections(root, &log_tables, &settings.delivery, &mut errors);
        let panther =
            load_panther_detections(root, &mut log_tables, &settings.delivery, &mut errors).map(
                |(rules, tables, support)| {
                    for table in tables {
                        if enrichment.iter().any(|t| t.name == table.name) {
                            errors.push(ConfigError::new(
                                &table.file,
                                format!(
                                    "lookup table `{}` is also an enrichment table's name",
                                    table.name
                                ),
                            ));
                        } else {
                            enrichment.push(table);
                        }
                    }
                    for rule in rules {
                        if detections.iter().any(|d| d.name == rule.name) {
                            errors.push(ConfigError::new(
                                &rule.file,
                                format!("RuleID `{}` is also a native detection's name", rule.name),
                            ));
                        } else {
                            detections.push(rule);
                        }
                    }
                    support
                },
            );
        let project = Project {
            root: root.to_path_buf(),
            settings,
            log_tables,
            enrichment,
            detections,
            panther,
        };
        (project, errors.into_vec())
    }

    /// A Panther directory (a panther-analysis checkout, nothing added) as
    /// a project: storage under `DIR/.ravenwatch`, one built-in log table
    /// per entry of `log_types` (`--log-type`), its rules as detections.
    ///
    /// # Errors
    /// A log type without a built-in event-time field, and the Panther
    /// format mistakes `validate -p DIR` reports.
    pub fn load_panther(root: &Path, log_types: &[String]) -> Result<Project, ConfigErrors> {
        let mut errors = Diagnostics::default();
        let settings = load_settings(root, &mut errors);
        let mut log_tables = Vec::new();
        for log_type in log_types {
            match super::builtin_log_table(root, log_type) {
                Ok(t) => log_tables.push(t),
                Err(message) => errors.push(ConfigError::new(root, message)),
            }
        }
        let mut dir = super::discover(root);
        let (enrichment, (detections, support)) = super::panther::panther_project(
            &mut dir,
            &mut log_tables,
            &settings.delivery,
            log_types,
        );
        for problem in std::mem::take(&mut dir.problems) {
            errors.push(problem);
        }
        let errors = errors.into_vec();
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Project {
            root: root.to_path_buf(),
            settings,
            log_tables,
            enrichment,
            detections,
            panther: Some(support),
        })
    }

    /// Whether `root` holds a project at all: `ravenwatch.yml`, or one of
    /// the folders a Matano project has. Commands refuse a folder that is
    /// none of these rather than report "0 detections" as a success.
    pub fn exists_at(root: &Path) -> bool {
        root.join(PROJECT_FILE).is_file() || PROJECT_FOLDERS.iter().any(|f| root.join(f).is_dir())
    }

    pub fn log_table(&self, name: &str) -> Option<&LogTable> {
        self.log_tables.iter().find(|t| t.name == name)
    }

    /// The log table inputs belong to: `name` (from `--table`), or the only
    /// one the project has.
    ///
    /// # Errors
    /// A usage message: no such table, no table at all, or several to
    /// choose from.
    pub fn log_table_for(&self, name: Option<&str>) -> Result<&LogTable, String> {
        let names = || {
            let names: Vec<&str> = self.log_tables.iter().map(|t| t.name.as_str()).collect();
            names.join(", ")
        };
        match name {
            Some(n) => self
                .log_table(n)
                .ok_or_else(|| format!("no log table `{n}` in schemas/ (tables: {})", names())),
            None => match self.log_tables.as_slice() {
                [only] => Ok(only),
                [] => Err("the project has no log table: add schemas/<table>.yml".into()),
                _ => Err(format!(
                    "the project has several log tables ({}); choose one with --table",
                    names()
                )),
            },
        }
    }

    pub fn enrichment_table(&self, name: &str) -> Option<&EnrichmentDef> {
        self.enrichment.iter().find(|t| t.name == name)
    }

    /// Helper folder shared by detections (`detections/_lib`).
    pub fn detection_lib_dir(&self) -> PathBuf {
        self.root.join("detections").join("_lib")
    }

    /// The Python files `rules` run: each one's `detect.py` (SQL rules have
    /// none), then every helper under `_lib`.
    pub fn python_sources<'a>(
        &self,
        rules: impl IntoIterator<Item = &'a DetectionDef>,
    ) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = rules
            .into_iter()
            .filter(|d| !d.is_sql())
            .map(|d| d.script.clone())
            .collect();
        files.extend(crate::files::python_files(&self.detection_lib_dir()));
        files
    }
}

/// The folders whose presence makes a folder a project (a Matano project
/// has no `ravenwatch.yml`).
pub const PROJECT_FOLDERS: [&str; 3] = ["detections", "schemas", "enrichment"];

pub(super) fn load_settings(root: &Path, errors: &mut Diagnostics) -> ProjectSettings {
    let file = root.join(PROJECT_FILE);
    let (raw, source) = if file.exists() {
        read_yaml::<Option<RawProject>>(&file, errors)
            .map(|(r, source)| (r.unwrap_or_default(), source))
            .unwrap_or_default()
    } else {
        (RawProject::default(), String::new())
    };
    let delivery = destinations::validate(raw.destinations, raw.delivery, &file, &source, errors);
    let rule_timeout = match raw.rule_timeout_seconds {
        None => DEFAULT_RULE_TIMEOUT,
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
            std::time::Duration::from_secs_f64(s)
        }
        Some(s) => {
            errors.push(
                ConfigError::new(
                    &file,
                    format!("rule_timeout_seconds must be a number of seconds above 0 and at most 86400, got {s}"),
                )
                .at(super::locate::locate_key(&source, "rule_timeout_seconds")),
            );
            DEFAULT_RULE_TIMEOUT
        }
    };
    let group_queue = raw.group_queue.filter(|url| {
        let fifo = (url.starts_with("https://") || url.starts_with("http://"))
            && url.trim_end_matches('/').ends_with(".fifo");
        if !fifo {
            errors.push(
                ConfigError::new(
                    &file,
                    format!("group_queue must be the URL of an SQS FIFO queue (https://sqs.<region>.amazonaws.com/<account>/<name>.fifo), got `{url}`"),
                )
                .at(super::locate::locate_key(&source, "group_queue")),
            );
        }
        fifo
    });
    let name = raw.name.unwrap_or_else(|| {
        root.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "ravenwatch".into())
    });
    ProjectSettings {
        name,
        storage: raw.storage.unwrap_or_else(|| DEFAULT_STORAGE.into()),
        enrichment_uploads: raw.enrichment_uploads,
        aws: raw
            .aws
            .map(|a| crate::storage::AwsSettings {
                region: a.region,
                endpoint: a.endpoint,
                force_path_style: a.force_path_style,
                profile: a.profile,
                max_attempts: a.max_attempts,
            })
            .unwrap_or_default(),
        delivery,
        rule_timeout,
        group_queue,
    }
}

/// How long one Python rule call may run unless `rule_timeout_seconds` says.
pub const DEFAULT_RULE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
