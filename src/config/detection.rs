//! `detections/<rule>/detection.yml` (with `detect.py`, or a SQL `query:`):
//! what a rule reads, how its alerts are shaped, where they go.

use super::destinations;
use super::error::{ConfigError, Diagnostics};
use super::locate::{locate_key, locate_text_after};
use super::read::read_components;
use super::{DeliverySettings, LogTable, Severity, Template, DEFAULT_DEDUPE_WINDOW_MINUTES};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// `false`: no filter is derived from this rule's code.
    pub auto_filter: Option<bool>,
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

#[derive(Debug, Clone)]
pub struct DetectionDef {
    pub name: String,
    pub dir: PathBuf,
    pub file: PathBuf,
    /// `detect.py` (present for Python detections).
    pub script: PathBuf,
    /// What decides a match: Python functions or a SQL query.
    pub logic: RuleLogic,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Derive a pre-filter from `detect()` (`auto_filter:`, default true).
    pub auto_filter: bool,
    pub tables: Vec<String>,
    pub severity: Severity,
    pub threshold: u64,
    pub dedupe_window_minutes: u64,
    /// `alert.destinations`, or the project's default destinations when absent.
    pub destinations: Vec<String>,
    pub runbook: Option<String>,
    pub references: Vec<String>,
    pub false_positives: Vec<String>,
    pub tags: Vec<String>,
    pub reports: Option<serde_json::Value>,
    /// Set when the detection is a Panther-format rule (`rule(event)`).
    pub panther: Option<super::PantherRuleInfo>,
}

/// SQL text taken from a detection.yml, with where it starts there, so
/// errors in the SQL point into the YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlText {
    pub text: String,
    /// 1-based line and column of the SQL's first character in the file.
    pub line: usize,
    pub column: usize,
    /// Block scalar (`|`): SQL line n is file line `line + n - 1` at the
    /// same indentation. Otherwise the SQL sits on one line of the file.
    pub block: bool,
}

impl SqlText {
    /// Maps a 1-based (line, column) inside the SQL to the file.
    pub fn file_position(&self, line: usize, column: usize) -> (usize, usize) {
        if self.block {
            (
                self.line + line.saturating_sub(1),
                self.column + column.saturating_sub(1),
            )
        } else if line <= 1 {
            (self.line, self.column + column.saturating_sub(1))
        } else {
            (self.line, self.column)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleLogic {
    /// `detect.py`, optionally behind a vectorized SQL `filter:`.
    Python { filter: Option<SqlText> },
    /// `query:`; every result row is a rule match.
    Sql {
        query: SqlText,
        dedupe: Option<Template>,
        title: Option<Template>,
    },
}

impl DetectionDef {
    /// Whether this is a SQL detection (`query:`).
    pub fn is_sql(&self) -> bool {
        matches!(self.logic, RuleLogic::Sql { .. })
    }

    /// The Python pre-filter, if any.
    pub fn filter(&self) -> Option<&SqlText> {
        match &self.logic {
            RuleLogic::Python { filter } => filter.as_ref(),
            RuleLogic::Sql { .. } => None,
        }
    }

    /// Fallback title: display_name, else name.
    pub fn default_title(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

pub(super) fn load_detections(
    root: &Path,
    log_tables: &[LogTable],
    delivery: &DeliverySettings,
    errors: &mut Diagnostics,
) -> Vec<DetectionDef> {
    let mut detections: Vec<DetectionDef> = Vec::new();
    let section = root.join("detections");
    for (dir, file, raw, source) in read_components::<RawDetection>(
        &section,
        "detection.yml",
        "detection",
        &super::panther::is_panther_dir,
        errors,
    ) {
        let script = dir.join("detect.py");
        let folder = DetectionFolder {
            has_script: script.exists(),
            dir: &dir,
            file: &file,
            script,
        };
        let name = raw.name.clone();
        let context = DetectionContext {
            log_tables,
            delivery,
        };
        let def = validate_detection(raw, folder, &source, &context, errors);
        if detections.iter().any(|d| d.name == name) {
            errors.push(
                ConfigError::new(&file, format!("detection `{name}` is defined twice"))
                    .at(locate_key(&source, "name")),
            );
            continue;
        }
        detections.extend(def);
    }
    detections
}

/// The Panther-format rules among `detections/` (folders without a
/// detection.yml that hold Panther YAML), as detections, with what they
/// share; `None` when there are none.
pub(super) fn load_panther_detections(
    root: &Path,
    log_tables: &mut [LogTable],
    delivery: &DeliverySettings,
    errors: &mut Diagnostics,
) -> Option<(
    Vec<DetectionDef>,
    Vec<super::EnrichmentDef>,
    std::sync::Arc<super::PantherSupport>,
)> {
    let mut found = super::PantherDir::default();
    for dir in super::read::component_dirs(&root.join("detections")) {
        if dir.join("detection.yml").exists() || !super::panther::is_panther_dir(&dir) {
            continue;
        }
        let mut part = super::panther::discover(&dir);
        found.rules.append(&mut part.rules);
        found.globals.append(&mut part.globals);
        found.data_models.append(&mut part.data_models);
        found.lookup_tables.append(&mut part.lookup_tables);
        found.problems.append(&mut part.problems);
    }
    if found.rules.is_empty() && found.problems.is_empty() {
        return None;
    }
    let (tables, support) = super::panther::panther_project(&mut found, log_tables, delivery, &[]);
    for problem in std::mem::take(&mut found.problems) {
        errors.push(problem);
    }
    let (rules, support) = support;
    Some((rules, tables, support))
}

/// What a detection folder holds, found before validation so validation does no I/O.
pub(super) struct DetectionFolder<'a> {
    pub dir: &'a Path,
    pub file: &'a Path,
    pub script: PathBuf,
    /// Whether `detect.py` exists.
    pub has_script: bool,
}

/// What a detection is checked against.
pub(super) struct DetectionContext<'a> {
    pub log_tables: &'a [LogTable],
    pub delivery: &'a DeliverySettings,
}

/// `raw` (the text `source` of `folder.file`) → a validated detection, or
/// its errors in `errors`.
pub(super) fn validate_detection(
    raw: RawDetection,
    folder: DetectionFolder<'_>,
    source: &str,
    context: &DetectionContext<'_>,
    errors: &mut Diagnostics,
) -> Option<DetectionDef> {
    let mut errors = errors.scope();
    let file = folder.file;
    let logic = detection_logic(&raw, &folder, source, &mut errors);
    let tables = raw.tables.or(raw.log_sources).unwrap_or_default();
    check_tables(&tables, context.log_tables, file, source, &mut errors);
    let alert = raw.alert.unwrap_or_default();
    let threshold = alert.threshold.unwrap_or(1);
    if threshold == 0 {
        errors.push(
            ConfigError::new(file, "alert.threshold must be at least 1")
                .at(locate_key(source, "threshold")),
        );
    }
    let window = alert
        .deduplication_window_minutes
        .unwrap_or(DEFAULT_DEDUPE_WINDOW_MINUTES);
    if window == 0 {
        errors.push(
            ConfigError::new(
                file,
                "alert.deduplication_window_minutes must be at least 1",
            )
            .at(locate_key(source, "deduplication_window_minutes")),
        );
    }
    // Absent: the project's default destinations; `[]`: none.
    let destinations = alert
        .destinations
        .unwrap_or_else(|| context.delivery.default_destinations.clone());
    for name in &destinations {
        if let Some(message) = destinations::unknown_destination(name, context.delivery) {
            errors.push(
                ConfigError::new(file, format!("alert.destinations: {message}"))
                    .at(locate_text_after(source, "destinations", name)),
            );
        }
    }
    if !errors.is_clean() {
        return None;
    }
    Some(DetectionDef {
        name: raw.name,
        dir: folder.dir.to_path_buf(),
        file: file.to_path_buf(),
        script: folder.script,
        logic: logic?,
        display_name: raw.display_name,
        description: raw.description,
        enabled: raw.enabled.unwrap_or(true),
        auto_filter: raw.auto_filter.unwrap_or(true),
        tables,
        severity: alert.severity.unwrap_or(Severity::Info),
        threshold,
        dedupe_window_minutes: window,
        destinations,
        runbook: raw.runbook,
        references: raw.references.unwrap_or_default(),
        false_positives: raw.false_positives.unwrap_or_default(),
        tags: raw.tags.unwrap_or_default(),
        reports: raw.reports.and_then(|r| serde_json::to_value(r).ok()),
        panther: None,
    })
}

/// The detection runs on at least one table, and each has a schema.
fn check_tables(
    tables: &[String],
    log_tables: &[LogTable],
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
) {
    if tables.is_empty() {
        errors.push(
            ConfigError::new(file, "detection lists no `tables` to run on")
                .at(locate_key(source, "name")),
        );
    }
    for t in tables {
        if !log_tables.iter().any(|l| &l.name == t) {
            let names: Vec<&str> = log_tables.iter().map(|l| l.name.as_str()).collect();
            let hint = crate::suggest::did_you_mean(t, &names);
            errors.push(
                ConfigError::new(file, format!("table `{t}` has no schema in schemas/{hint}"))
                    .at(locate_key(source, "tables").or(locate_key(source, "log_sources"))),
            );
        }
    }
}

/// Python (`detect.py`, optional `filter:`) or SQL (`query:` with
/// `dedupe:`/`title:` templates); mixing the two is an error.
pub(super) fn detection_logic(
    raw: &RawDetection,
    folder: &DetectionFolder<'_>,
    source: &str,
    errors: &mut Diagnostics,
) -> Option<RuleLogic> {
    let mut errors = errors.scope();
    let file = folder.file;
    let Some(query) = &raw.query else {
        if !folder.has_script {
            errors.push(ConfigError::new(
                &folder.script,
                "missing detect.py (it must define detect(r)), or give the detection a SQL `query:`",
            ));
        }
        for key in ["dedupe", "title"] {
            let set = if key == "dedupe" {
                &raw.dedupe
            } else {
                &raw.title
            };
            if set.is_some() {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("`{key}:` is for SQL detections (with `query:`); a Python detection defines {key}(r) in detect.py"),
                    )
                    .at(locate_key(source, key)),
                );
            }
        }
        let filter = raw.filter.as_ref().map(|f| sql_text(source, "filter", f));
        if let Some(f) = &filter {
            if f.text.trim().is_empty() {
                errors.push(
                    ConfigError::new(file, "`filter:` is empty").at(Some((f.line, f.column))),
                );
            }
        }
        return (errors.is_clean()).then_some(RuleLogic::Python { filter });
    };
    if folder.has_script {
        errors.push(
            ConfigError::new(
                file,
                "the detection has both `query:` and detect.py; keep one (a SQL detection has no detect.py)",
            )
            .at(locate_key(source, "query")),
        );
    }
    if raw.filter.is_some() {
        errors.push(
            ConfigError::new(
                file,
                "`filter:` is for Python detections; put the condition in the query's WHERE clause",
            )
            .at(locate_key(source, "filter")),
        );
    }
    let tables = raw.tables.as_ref().or(raw.log_sources.as_ref());
    if tables.is_some_and(|t| t.len() > 1) {
        errors.push(
            ConfigError::new(
                file,
                "a SQL detection runs on one log table; list exactly one in `tables`",
            )
            .at(locate_key(source, "tables").or(locate_key(source, "log_sources"))),
        );
    }
    let query = sql_text(source, "query", query);
    if query.text.trim().is_empty() {
        errors
            .push(ConfigError::new(file, "`query:` is empty").at(Some((query.line, query.column))));
    }
    let mut template = |key: &str, text: &Option<String>, bare: bool| -> Option<Template> {
        let text = text.as_ref()?;
        match Template::parse(text, bare) {
            Ok(mut t) => {
                t.position = locate_key(source, key);
                Some(t)
            }
            Err(message) => {
                errors.push(
                    ConfigError::new(file, format!("{key}: {message}")).at(locate_key(source, key)),
                );
                None
            }
        }
    };
    let dedupe = template("dedupe", &raw.dedupe, true);
    let title = template("title", &raw.title, false);
    (errors.is_clean()).then_some(RuleLogic::Sql {
        query,
        dedupe,
        title,
    })
}

/// Where the value of the top-level `key:` begins in `source`.
pub(super) fn sql_text(source: &str, key: &str, text: &str) -> SqlText {
    let Some((line, column)) = locate_key(source, key) else {
        return SqlText {
            text: text.to_string(),
            line: 1,
            column: 1,
            block: false,
        };
    };
    let lines: Vec<&str> = source.lines().collect();
    let rest = &lines[line - 1][column - 1 + key.len()..];
    let after_colon = rest.trim_start().strip_prefix(':').unwrap_or(rest);
    let value = after_colon.trim_start();
    if value.starts_with('|') || value.starts_with('>') {
        // Block scalar: the text starts on the next non-empty line.
        let (offset, first) = lines
            .iter()
            .enumerate()
            .skip(line)
            .find(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, *l))
            .unwrap_or((line + 1, ""));
        let indent = first.len() - first.trim_start().len();
        return SqlText {
            text: text.to_string(),
            line: offset,
            column: indent + 1,
            block: value.starts_with('|'),
        };
    }
    let quoted = usize::from(value.starts_with('"') || value.starts_with('\''));
    let start = lines[line - 1].len() - value.len() + 1 + quoted;
    SqlText {
        text: text.to_string(),
        line,
        column: start,
        block: false,
    }
}
