//! Reading a Panther directory: every `*.yml`/`*.yaml` with an
//! `AnalysisType` (hidden files and folders skipped), YAML scalars as
//! Panther's loader gives them (YAML 1.2: `off` stays a string), and the
//! mistakes Panther's own tool would reject, with file and line. Panther
//! rules become detections here (contract §6), so `run` treats them as
//! native ones: a Panther checkout runs as a project of its own (one
//! built-in log table per `--log-type`), and a project's `detections/` may
//! hold Panther rules beside native ones.

use super::error::ConfigError;
use super::{DeliverySettings, DetectionDef, LogTable, RuleLogic, Severity};
use crate::schema::{Field, FieldType, TableSchema};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a Panther directory holds.
#[derive(Debug, Default)]
pub struct PantherDir {
    pub rules: Vec<PantherRule>,
    /// `GlobalID` → helper file.
    pub globals: Vec<(String, PathBuf)>,
    pub data_models: Vec<DataModelItem>,
    pub problems: Vec<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct PantherRule {
    pub id: String,
    pub yaml: PathBuf,
    /// The Python file; `None` for a YAML-only rule.
    pub file: Option<PathBuf>,
    pub log_types: Vec<String>,
    pub tests: Vec<PantherTest>,
    /// What `run` needs besides (contract §6).
    pub run: PantherRunFields,
}

/// The YAML fields of a rule that shape its alerts in `run`.
#[derive(Debug, Clone)]
pub struct PantherRunFields {
    pub display_name: Option<String>,
    pub enabled: bool,
    /// `Severity` as written (`Info` … `Critical`); `None` when absent or unknown.
    pub severity: Option<Severity>,
    pub threshold: u64,
    pub dedup_minutes: u64,
    /// `false`: matches are recorded (Panther's signals), never alerts.
    pub create_alert: bool,
    /// `InlineFilters` as written (evaluated by the Python runtime).
    pub inline_filters: Option<Value>,
    pub description: Option<String>,
    pub runbook: Option<String>,
    pub reference: Option<String>,
    pub tags: Vec<String>,
    pub reports: Option<Value>,
}

/// What Panther rules in `run` share: global helpers and data models
/// (loaded into each interpreter once), and how log tables map to log types.
#[derive(Debug, Clone, Default)]
pub struct PantherSupport {
    /// `GlobalID` → helper file.
    pub globals: Vec<(String, PathBuf)>,
    pub data_models: Vec<DataModelItem>,
    /// Log table name → Panther log type.
    pub log_types: Vec<(String, String)>,
    /// Rules left out of the run, with why (no log table for their
    /// LogTypes, no Python file).
    pub skipped: Vec<(String, String)>,
    /// The `--log-type`s a Panther directory was loaded with (its built-in
    /// log tables); empty in a Ravenwatch project. Workers load it the same way.
    pub builtin: Vec<String>,
}

/// A detection that is a Panther rule: what its runtime adapter needs.
#[derive(Debug, Clone)]
pub struct PantherRuleInfo {
    pub log_types: Vec<String>,
    pub create_alert: bool,
    pub inline_filters: Option<Value>,
    pub support: std::sync::Arc<PantherSupport>,
}

#[derive(Debug, Clone)]
pub struct PantherTest {
    pub name: String,
    pub expected: bool,
    pub log: Value,
    pub mocks: Vec<(String, Value)>,
    pub line: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct DataModelItem {
    pub id: String,
    pub log_types: Vec<String>,
    pub file: Option<PathBuf>,
    /// `[name, "path" | "method", target]`.
    pub mappings: Vec<(String, String, String)>,
}

const KNOWN_TYPES: [&str; 11] = [
    "rule",
    "scheduled_rule",
    "policy",
    "global",
    "datamodel",
    "lookup_table",
    "pack",
    "saved_query",
    "scheduled_query",
    "correlation_rule",
    "derived",
];

/// Whether `dir` looks like a Panther directory: a YAML file with an
/// `AnalysisType` within a few levels.
pub fn is_panther_dir(dir: &Path) -> bool {
    fn look(dir: &Path, depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                if depth > 0 && look(&path, depth - 1) {
                    return true;
                }
            } else if is_yaml(&path)
                && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("AnalysisType:"))
            {
                return true;
            }
        }
        false
    }
    look(dir, 3)
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yml" || e == "yaml")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
}

/// The 1-based line of the first line of `text` starting (after
/// indentation and a list dash) with `key:`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|i| i + 1)
}

/// Lines of each test's `Name:` in `text`, in order.
fn test_lines(text: &str, names: &[String]) -> Vec<Option<usize>> {
    let lines: Vec<&str> = text.lines().collect();
    let start = line_of(text, "Tests").unwrap_or(1);
    let mut at = start;
    names
        .iter()
        .map(|name| {
            let found = (at..lines.len()).find(|&i| {
                let t = lines[i].trim_start().trim_start_matches("- ").trim_start();
                t.strip_prefix("Name:").is_some_and(|rest| {
                    let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
                    v == name.as_str() || rest.contains(name.as_str())
                })
            });
            if let Some(i) = found {
                at = i + 1;
            }
            found.map(|i| i + 1)
        })
        .collect()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One analysis item's file, for locating what is wrong with it.
struct ItemFile<'a> {
    path: &'a Path,
    source: &'a str,
    item: &'a Map<String, Value>,
    /// `Filename`, resolved next to the YAML.
    filename: Option<PathBuf>,
}

impl ItemFile<'_> {
    /// A problem located at the line of `key`.
    fn problem(&self, message: String, key: &str) -> ConfigError {
        ConfigError::new(self.path, message).at(line_of(self.source, key).map(|l| (l, 1)))
    }
}

/// Reads every analysis item under `root`.
pub fn discover(root: &Path) -> PantherDir {
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    let mut dir = PantherDir::default();
    let mut rule_ids: HashMap<String, PathBuf> = HashMap::new();
    let mut model_types: HashMap<String, String> = HashMap::new();
    for path in files {
        let Ok(source) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !source.contains("AnalysisType") {
            continue;
        }
        let item: Value = match serde_yaml::from_str(&source) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| (l.line(), l.column()));
                dir.problems
                    .push(ConfigError::new(&path, format!("not valid YAML: {e}")).at(line));
                continue;
            }
        };
        let Some(item) = item.as_object() else {
            continue;
        };
        let Some(kind) = item.get("AnalysisType").and_then(Value::as_str) else {
            continue;
        };
        let folder = path.parent().unwrap_or(root);
        let file = ItemFile {
            path: &path,
            source: &source,
            item,
            filename: item
                .get("Filename")
                .and_then(Value::as_str)
                .map(|f| folder.join(f)),
        };
        if let Some(f) = file.filename.as_ref().filter(|f| !f.is_file()) {
            dir.problems.push(file.problem(
                format!("Filename `{}` does not exist", f.display()),
                "Filename",
            ));
        }
        match kind {
            "rule" => read_rule(&file, &mut dir, &mut rule_ids),
            "global" => match (text(item.get("GlobalID")), file.filename.clone()) {
                (Some(id), Some(f)) => dir.globals.push((id, f)),
                _ => dir.problems.push(file.problem(
                    "a global helper needs GlobalID and Filename".into(),
                    "AnalysisType",
                )),
            },
            "datamodel" => read_data_model(&file, &mut dir, &mut model_types),
            other if KNOWN_TYPES.contains(&other) => {}
            other => dir.problems.push(file.problem(
                format!(
                    "unknown AnalysisType `{other}`{}",
                    crate::suggest::did_you_mean(other, &KNOWN_TYPES)
                ),
                "AnalysisType",
            )),
        }
    }
    dir
}

fn read_rule(file: &ItemFile<'_>, dir: &mut PantherDir, rule_ids: &mut HashMap<String, PathBuf>) {
    let item = file.item;
    let Some(id) = text(item.get("RuleID")) else {
        dir.problems
            .push(file.problem("a rule needs a RuleID".into(), "AnalysisType"));
        return;
    };
    if let Some(first) = rule_ids.get(&id) {
        dir.problems.push(file.problem(
            format!(
                "duplicate RuleID `{id}` (also in {})",
                crate::files::display_path(first)
            ),
            "RuleID",
        ));
        return;
    }
    rule_ids.insert(id.clone(), file.path.to_path_buf());
    if file.filename.is_none() && item.get("Detection").is_none() {
        dir.problems.push(file.problem(
            format!("rule {id} has no Filename (its Python file)"),
            "RuleID",
        ));
    }
    let tests = read_tests(file, &id, &mut dir.problems);
    let run = run_fields(item);
    dir.rules.push(PantherRule {
        id,
        yaml: file.path.to_path_buf(),
        file: file.filename.clone().filter(|f| f.is_file()),
        log_types: strings(item.get("LogTypes")),
        tests,
        run,
    });
}

fn read_tests(file: &ItemFile<'_>, id: &str, problems: &mut Vec<ConfigError>) -> Vec<PantherTest> {
    let raw_tests = file
        .item
        .get("Tests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = raw_tests
        .iter()
        .map(|t| text(t.get("Name")).unwrap_or_default())
        .collect();
    let lines = test_lines(file.source, &names);
    let mut tests = Vec::new();
    for ((test, name), line) in raw_tests.iter().zip(names).zip(lines) {
        let Some(expected) = test.get("ExpectedResult").and_then(Value::as_bool) else {
            problems.push(
                ConfigError::new(
                    file.path,
                    format!("test `{name}` of {id} has no ExpectedResult (true or false)"),
                )
                .at(line.map(|l| (l, 1))),
            );
            continue;
        };
        let mocks = test
            .get("Mocks")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| {
                        Some((
                            text(m.get("objectName"))?,
                            m.get("returnValue").cloned().unwrap_or(Value::Null),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        tests.push(PantherTest {
            name,
            expected,
            log: test.get("Log").cloned().unwrap_or(Value::Null),
            mocks,
            line,
        });
    }
    tests
}

fn read_data_model(
    file: &ItemFile<'_>,
    dir: &mut PantherDir,
    model_types: &mut HashMap<String, String>,
) {
    let item = file.item;
    if !item
        .get("Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return;
    }
    let id = text(item.get("DataModelID")).unwrap_or_default();
    let log_types = strings(item.get("LogTypes"));
    let mut mappings = Vec::new();
    for m in item
        .get("Mappings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Mapping keys are case-insensitive.
        let get = |k: &str| {
            m.as_object().and_then(|o| {
                o.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .and_then(|(_, v)| text(Some(v)))
            })
        };
        let name = get("Name").unwrap_or_default();
        match (get("Path"), get("Method")) {
            (Some(p), _) => mappings.push((name, "path".to_string(), p)),
            (None, Some(f)) => mappings.push((name, "method".to_string(), f)),
            (None, None) => dir.problems.push(file.problem(
                format!("data model {id}: mapping `{name}` has neither Path nor Method"),
                "Mappings",
            )),
        }
    }
    for log_type in &log_types {
        if let Some(other) = model_types.insert(log_type.clone(), id.clone()) {
            dir.problems.push(file.problem(
                format!("data model {id}: {log_type} already has an enabled data model ({other})"),
                "LogTypes",
            ));
        }
    }
    dir.data_models.push(DataModelItem {
        id,
        log_types,
        file: file.filename.clone(),
        mappings,
    });
}

fn run_fields(item: &Map<String, Value>) -> PantherRunFields {
    let number = |key: &str, default: u64| {
        item.get(key)
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    let flag = |key: &str| item.get(key).and_then(Value::as_bool).unwrap_or(true);
    PantherRunFields {
        display_name: text(item.get("DisplayName")),
        enabled: flag("Enabled"),
        severity: text(item.get("Severity")).and_then(|s| Severity::parse(&s.to_lowercase())),
        threshold: number("Threshold", 1),
        dedup_minutes: number("DedupPeriodMinutes", super::DEFAULT_DEDUPE_WINDOW_MINUTES),
        create_alert: flag("CreateAlert"),
        inline_filters: item.get("InlineFilters").filter(|v| !v.is_null()).cloned(),
        description: text(item.get("Description")),
        runbook: text(item.get("Runbook")),
        reference: text(item.get("Reference")),
        tags: strings(item.get("Tags")),
        reports: item.get("Reports").cloned(),
    }
}

/// The event-time field of the log types a Panther directory can run on
/// without a schema (`run -p DIR --log-type T`); Panther's own parsers know
/// these fields. Other log types need a Ravenwatch project with a schema.
pub const KNOWN_LOG_TYPES: &[(&str, &str)] = &[
    ("AWS.CloudTrail", "eventTime"),
    ("AWS.GuardDuty", "updatedAt"),
    ("Box.Event", "created_at"),
    ("GCP.AuditLog", "timestamp"),
    ("GitHub.Audit", "@timestamp"),
    ("GSuite.Reports", "id.time"),
    ("OnePassword.SignInAttempt", "timestamp"),
    ("Okta.SystemLog", "published"),
    ("Slack.AuditLogs", "date_create"),
    ("Zendesk.Audit", "created_at"),
];

/// The log table name a Panther log type gets in a Panther directory
/// (`AWS.CloudTrail` → `aws_cloudtrail`, as Matano names it).
pub fn log_table_name(log_type: &str) -> String {
    log_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A built-in log table for `log_type` (only its event-time field declared:
/// Panther rules read the event as it came).
///
/// # Errors
/// A log type whose event-time field Ravenwatch does not know.
pub fn builtin_log_table(root: &Path, log_type: &str) -> Result<LogTable, String> {
    let Some((_, timestamp)) = KNOWN_LOG_TYPES.iter().find(|(t, _)| *t == log_type) else {
        let names: Vec<&str> = KNOWN_LOG_TYPES.iter().map(|(t, _)| *t).collect();
        return Err(format!(
            "log type `{log_type}` has no built-in event-time field{} (known: {}); for other log types, run the rules from a Ravenwatch project whose schemas/<table>.yml declares the timestamp",
            crate::suggest::did_you_mean(log_type, &names),
            names.join(", ")
        ));
    };
    let field = timestamp
        .rsplit('.')
        .fold(None::<Field>, |inner, part| {
            Some(match inner {
                None => Field::new(part, FieldType::Timestamp),
                Some(inner) => Field::new(part, FieldType::Struct(vec![inner])),
            })
        })
        .expect("a field name");
    Ok(LogTable {
        name: log_table_name(log_type),
        description: Some(format!("Panther log type {log_type}")),
        file: root.to_path_buf(),
        timestamp: (*timestamp).to_string(),
        schema: TableSchema::new(vec![field]),
        enrich: Vec::new(),
    })
}

/// The log table a Panther log type runs on: one named as Matano names it
/// (`aws_cloudtrail`), or with the words split (`aws_cloud_trail`).
fn table_of<'a>(log_type: &str, log_tables: &'a [LogTable]) -> Option<&'a LogTable> {
    let plain = log_table_name(log_type);
    let mut split = String::new();
    let mut prev = ' ';
    for c in log_type.chars() {
        if c.is_ascii_uppercase() && prev.is_ascii_lowercase() {
            split.push('_');
        }
        split.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
        prev = c;
    }
    log_tables
        .iter()
        .find(|t| t.name == plain)
        .or_else(|| log_tables.iter().find(|t| t.name == split))
}

/// The Panther rules of `dir` as detections over `log_tables`, and what
/// they share. A rule whose LogTypes have no log table here, or that has no
/// Python file, is left out and named in `PantherSupport::skipped`.
/// `builtin`: the `--log-type`s of a Panther directory's own log tables.
pub fn panther_detections(
    dir: &PantherDir,
    log_tables: &[LogTable],
    delivery: &DeliverySettings,
    builtin: &[String],
) -> (Vec<DetectionDef>, std::sync::Arc<PantherSupport>) {
    let mut support = PantherSupport {
        globals: dir.globals.clone(),
        data_models: dir.data_models.clone(),
        builtin: builtin.to_vec(),
        ..PantherSupport::default()
    };
    let mut chosen = Vec::new();
    for rule in &dir.rules {
        let Some(script) = &rule.file else {
            support
                .skipped
                .push((rule.id.clone(), "no Python file (a YAML-only rule)".into()));
            continue;
        };
        let mut tables = Vec::new();
        for log_type in &rule.log_types {
            if let Some(t) = table_of(log_type, log_tables) {
                if !support.log_types.iter().any(|(n, _)| *n == t.name) {
                    support.log_types.push((t.name.clone(), log_type.clone()));
                }
                if !tables.contains(&t.name) {
                    tables.push(t.name.clone());
                }
            }
        }
        if tables.is_empty() {
            support.skipped.push((
                rule.id.clone(),
                format!("no log table for {}", rule.log_types.join(", ")),
            ));
            continue;
        }
        chosen.push((rule, script.clone(), tables));
    }
    let support = std::sync::Arc::new(support);
    let detections = chosen
        .into_iter()
        .map(|(rule, script, tables)| {
            let run = &rule.run;
            DetectionDef {
                name: rule.id.clone(),
                dir: rule.yaml.parent().unwrap_or(Path::new(".")).to_path_buf(),
                file: rule.yaml.clone(),
                script,
                logic: RuleLogic::Python { filter: None },
                display_name: run.display_name.clone(),
                description: run.description.clone(),
                enabled: run.enabled,
                // Panther's event falls back to case-insensitive keys, which
                // derived filters do not model: no derived filter.
                auto_filter: false,
                tables,
                severity: run.severity.unwrap_or(Severity::Info),
                threshold: run.threshold,
                dedupe_window_minutes: run.dedup_minutes,
                destinations: delivery.default_destinations.clone(),
                runbook: run.runbook.clone(),
                references: run.reference.clone().into_iter().collect(),
                false_positives: Vec::new(),
                tags: run.tags.clone(),
                reports: run.reports.clone(),
                panther: Some(PantherRuleInfo {
                    log_types: rule.log_types.clone(),
                    create_alert: run.create_alert,
                    inline_filters: run.inline_filters.clone(),
                    support: std::sync::Arc::clone(&support),
                }),
            }
        })
        .collect();
    (detections, support)
}
