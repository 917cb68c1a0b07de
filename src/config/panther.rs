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
    pub lookup_tables: Vec<LookupTableItem>,
    pub problems: Vec<ConfigError>,
}

/// An `AnalysisType: lookup_table` item (contract §5).
#[derive(Debug, Clone)]
pub struct LookupTableItem {
    pub name: String,
    pub yaml: PathBuf,
    /// Inline data (`Filename`), resolved next to the YAML.
    pub file: Option<PathBuf>,
    /// `Refresh.ObjectPath` (an S3 object Panther re-reads periodically).
    pub refresh: Option<String>,
    pub primary_key: String,
    /// `AssociatedLogTypes`: log type → selectors as written.
    pub selectors: Vec<(String, Vec<String>)>,
    pub enabled: bool,
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
    /// Panther lookup tables loaded as enrichment tables: (Ravenwatch
    /// table name, LookupName), and which (log table, field) a selector
    /// was written as (`p_any_ip_addresses` reads several fields), so
    /// `p_enrichment` is keyed as Panther keys it.
    pub lookup_names: Vec<(String, String)>,
    pub selector_names: Vec<SelectorName>,
    /// The `--log-type`s a Panther directory was loaded with (its built-in
    /// log tables); empty in a Ravenwatch project. Workers load it the same way.
    pub builtin: Vec<String>,
}

/// A selector field as Panther names it in `p_enrichment`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelectorName {
    pub log_table: String,
    pub table: String,
    pub field: String,
    pub name: String,
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
            "lookup_table" => read_lookup_table(&file, &mut dir),
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
/// `seed` holds what was decided before (built-in log types, lookup tables).
pub fn panther_detections(
    dir: &PantherDir,
    log_tables: &[LogTable],
    delivery: &DeliverySettings,
    seed: PantherSupport,
) -> (Vec<DetectionDef>, std::sync::Arc<PantherSupport>) {
    let mut support = PantherSupport {
        globals: dir.globals.clone(),
        data_models: dir.data_models.clone(),
        ..seed
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
                // Derived with Panther's semantics (missing keys undecided).
                auto_filter: true,
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

fn read_lookup_table(file: &ItemFile<'_>, dir: &mut PantherDir) {
    let item = file.item;
    let Some(name) = text(item.get("LookupName")) else {
        dir.problems
            .push(file.problem("a lookup table needs a LookupName".into(), "AnalysisType"));
        return;
    };
    let map = item.get("LogTypeMap");
    let Some(primary_key) = text(map.and_then(|m| m.get("PrimaryKey"))) else {
        dir.problems.push(file.problem(
            format!("lookup table {name} needs LogTypeMap.PrimaryKey"),
            "LogTypeMap",
        ));
        return;
    };
    let selectors = map
        .and_then(|m| m.get("AssociatedLogTypes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| Some((text(a.get("LogType"))?, strings(a.get("Selectors")))))
        .collect();
    dir.lookup_tables.push(LookupTableItem {
        name,
        yaml: file.path.to_path_buf(),
        file: file.filename.clone(),
        refresh: text(item.get("Refresh").and_then(|r| r.get("ObjectPath"))),
        primary_key,
        selectors,
        enabled: item.get("Enabled").and_then(Value::as_bool).unwrap_or(true),
    });
}

/// The fields Panther's parsers read into each indicator field (`p_any_*`),
/// per log type; `[*]` walks a list. The runtime computes the `p_any_*`
/// fields of events from this table, and a lookup table's `p_any_*`
/// selector reads the fields without `[*]`.
pub const INDICATORS: &[(&str, &str, &[&str])] = &[
    ("AWS.CloudTrail", "p_any_ip_addresses", &["sourceIPAddress"]),
    (
        "AWS.CloudTrail",
        "p_any_aws_account_ids",
        &[
            "recipientAccountId",
            "userIdentity.accountId",
            "resources[*].accountId",
            "userIdentity.sessionContext.sessionIssuer.accountId",
        ],
    ),
    (
        "AWS.CloudTrail",
        "p_any_aws_arns",
        &[
            "userIdentity.arn",
            "userIdentity.sessionContext.sessionIssuer.arn",
            "resources[*].ARN",
        ],
    ),
    (
        "AWS.CloudTrail",
        "p_any_usernames",
        &[
            "userIdentity.userName",
            "userIdentity.sessionContext.sessionIssuer.userName",
        ],
    ),
    ("AWS.CloudTrail", "p_any_domain_names", &["sourceIPAddress"]),
    (
        "Okta.SystemLog",
        "p_any_ip_addresses",
        &["client.ipAddress", "request.ipChain[*].ip"],
    ),
    (
        "Okta.SystemLog",
        "p_any_emails",
        &["actor.alternateId", "target[*].alternateId"],
    ),
    (
        "Okta.SystemLog",
        "p_any_usernames",
        &["actor.alternateId", "actor.displayName"],
    ),
    ("GitHub.Audit", "p_any_ip_addresses", &["actor_ip"]),
    ("GitHub.Audit", "p_any_usernames", &["actor", "user"]),
    (
        "GitHub.Audit",
        "p_any_emails",
        &["actor_email", "user_email"],
    ),
];

/// The Ravenwatch name of a Panther lookup table (`MISP Warning Lists` →
/// `misp_warning_lists`): a Python identifier.
pub fn lookup_table_name(lookup_name: &str) -> String {
    let mut name: String = log_table_name(lookup_name.trim());
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Panther's lookup tables as enrichment tables over `log_tables`, with
/// their selectors added to the log tables they name. A table refreshed
/// from S3 is a dynamic table that `enrichment sync` reads; one with no
/// data at all is left out with a note in `skipped` (its selectors then
/// find nothing).
pub fn panther_lookup_tables(
    dir: &PantherDir,
    log_tables: &mut [LogTable],
    skipped: &mut Vec<(String, String)>,
    errors: &mut Vec<ConfigError>,
) -> (
    Vec<super::EnrichmentDef>,
    Vec<(String, String)>,
    Vec<SelectorName>,
) {
    let mut defs = Vec::new();
    let mut names = Vec::new();
    let mut selector_names = Vec::new();
    for lut in dir.lookup_tables.iter().filter(|l| l.enabled) {
        let table = lookup_table_name(&lut.name);
        let def = match (lut.file.as_ref().filter(|f| f.is_file()), &lut.refresh) {
            (Some(file), _) => match lookup_def(lut, &table, file) {
                Ok(d) => d,
                Err(message) => {
                    errors.push(ConfigError::new(&lut.yaml, message));
                    continue;
                }
            },
            (None, Some(url)) => refresh_def(lut, &table, url),
            (None, None) => {
                let why = "it has no data (Filename or Refresh.ObjectPath)".to_string();
                skipped.push((format!("lookup table {}", lut.name), why));
                continue;
            }
        };
        for (log_type, selectors) in &lut.selectors {
            let Some(at) = table_of(log_type, log_tables)
                .and_then(|t| log_tables.iter().position(|l| l.name == t.name))
            else {
                continue;
            };
            let log_table = &mut log_tables[at];
            let mut fields = Vec::new();
            for selector in selectors {
                let selector = selector.trim_start_matches("$.").to_string();
                let read: Vec<String> = if selector.starts_with("p_any_") {
                    INDICATORS
                        .iter()
                        .filter(|(t, i, _)| *t == log_type && *i == selector)
                        .flat_map(|(_, _, paths)| paths.iter())
                        .filter(|p| !p.contains("[*]"))
                        .map(|p| (*p).to_string())
                        .collect()
                } else {
                    vec![selector.clone()]
                };
                for field in read {
                    selector_names.push(SelectorName {
                        log_table: log_table.name.clone(),
                        table: table.clone(),
                        field: field.clone(),
                        name: selector.clone(),
                    });
                    if !fields.contains(&field) {
                        fields.push(field);
                    }
                }
            }
            if !fields.is_empty() {
                log_table.enrich.push(super::Selector {
                    table: table.clone(),
                    fields,
                    key: lut.primary_key.clone(),
                });
            }
        }
        names.push((table, lut.name.clone()));
        defs.push(def);
    }
    (defs, names, selector_names)
}

/// A static enrichment table for a lookup table's inline data (columns as
/// [`lookup_columns`] infers them).
fn lookup_def(
    lut: &LookupTableItem,
    table: &str,
    file: &Path,
) -> Result<super::EnrichmentDef, String> {
    let (fields, cidr) = lookup_columns(file, &lut.primary_key)
        .map_err(|e| format!("lookup table {}: {e}", lut.name))?;
    let mut def = lookup_table_def(lut, table, fields, cidr);
    def.dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    def.data_files = vec![file.to_path_buf()];
    Ok(def)
}

/// A dynamic enrichment table for a lookup table refreshed from `url`
/// (`Refresh.ObjectPath`): `enrichment sync` reads the object whole and
/// infers its columns, so until then it holds only its key column.
fn refresh_def(lut: &LookupTableItem, table: &str, url: &str) -> super::EnrichmentDef {
    let mut def = lookup_table_def(
        lut,
        table,
        vec![Field::new(lut.primary_key.clone(), FieldType::String)],
        false,
    );
    def.kind = super::EnrichmentKind::Dynamic;
    def.refresh = Some(url.to_string());
    def
}

fn lookup_table_def(
    lut: &LookupTableItem,
    table: &str,
    fields: Vec<Field>,
    cidr: bool,
) -> super::EnrichmentDef {
    use super::{EnrichmentKind, KeyMatch, LookupKey, SourceOptions, TableFormat, WriteMode};
    super::EnrichmentDef {
        name: table.to_string(),
        description: Some(format!("Panther lookup table {}", lut.name)),
        dir: lut.yaml.parent().unwrap_or(Path::new(".")).to_path_buf(),
        file: lut.yaml.clone(),
        kind: EnrichmentKind::Static,
        write_mode: WriteMode::Overwrite,
        format: TableFormat::Rows,
        schema: TableSchema::new(fields),
        primary_key: Some(lut.primary_key.clone()),
        lookup_keys: vec![LookupKey {
            name: lut.primary_key.clone(),
            columns: vec![lut.primary_key.clone()],
            matching: if cidr {
                KeyMatch::Cidr
            } else {
                KeyMatch::Exact
            },
            case_sensitive: true,
        }],
        list_delimiter: ';',
        source: SourceOptions::default(),
        data_files: Vec::new(),
        definition: std::fs::read_to_string(&lut.yaml).unwrap_or_default(),
        enrich: Vec::new(),
        refresh: None,
    }
}

/// The columns of a lookup table's data file, whose schema is not in the
/// repository: the CSV header (text), or the JSON rows' scalar values
/// (typed by what they hold); and whether `primary_key` holds CIDR ranges
/// (its first values all have a `/`).
///
/// # Errors
/// An unreadable file, or `primary_key` not among the columns (the
/// message names the file).
pub fn lookup_columns(file: &Path, primary_key: &str) -> Result<(Vec<Field>, bool), String> {
    let where_ = crate::files::display_path(file);
    let reader =
        crate::files::open_decompressed(file).map_err(|e| format!("cannot read {where_}: {e}"))?;
    let (fields, samples) = if crate::files::format_of(file) == "csv" {
        let mut csv = csv::Reader::from_reader(reader);
        let header: Vec<String> = csv
            .headers()
            .map_err(|e| format!("{where_}: {e}"))?
            .iter()
            .map(str::to_string)
            .collect();
        let key_at = header.iter().position(|h| *h == primary_key);
        let samples: Vec<String> = csv
            .records()
            .take(100)
            .flatten()
            .filter_map(|r| Some(r.get(key_at?)?.to_string()))
            .collect();
        let fields = header
            .into_iter()
            .map(|h| Field::new(h, FieldType::String))
            .collect();
        (fields, samples)
    } else {
        json_columns(reader, primary_key).map_err(|e| format!("{where_}: {e}"))?
    };
    if !fields.iter().any(|f: &Field| f.name == primary_key) {
        return Err(format!(
            "PrimaryKey `{primary_key}` is not a column of {where_}"
        ));
    }
    let cidr = !samples.is_empty() && samples.iter().all(|v| v.contains('/'));
    Ok((fields, cidr))
}

/// The scalar columns of JSON rows (JSON lines or one array), typed by the
/// values of the first rows, and the first values of `key`.
fn json_columns(
    mut lines: Box<dyn std::io::BufRead + Send>,
    key: &str,
) -> Result<(Vec<Field>, Vec<String>), String> {
    let mut text = String::new();
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    lines.read_line(&mut text).map_err(|e| e.to_string())?;
    if text.trim_start().starts_with('[') {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut lines, &mut rest).map_err(|e| e.to_string())?;
        text.push_str(&rest);
        let all: Vec<Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        rows.extend(all.into_iter().take(1000).filter_map(|v| match v {
            Value::Object(o) => Some(o),
            _ => None,
        }));
    } else {
        let mut line = text;
        for n in 1..=1000 {
            if !line.trim().is_empty() {
                let row: Value =
                    serde_json::from_str(&line).map_err(|e| format!("line {n}: not JSON: {e}"))?;
                if let Value::Object(o) = row {
                    rows.push(o);
                }
            }
            line = String::new();
            if lines.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                break;
            }
        }
    }
    let mut fields: Vec<Field> = Vec::new();
    for row in &rows {
        for (name, value) in row {
            let ty = match value {
                Value::String(_) => FieldType::String,
                Value::Bool(_) => FieldType::Boolean,
                Value::Number(n) if n.is_i64() => FieldType::Long,
                Value::Number(_) => FieldType::Double,
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    FieldType::List(Box::new(FieldType::String))
                }
                _ => continue,
            };
            match fields.iter_mut().find(|f| f.name == *name) {
                Some(f) if f.field_type != ty => {
                    if f.field_type == FieldType::Long && ty == FieldType::Double {
                        f.field_type = FieldType::Double;
                    }
                }
                Some(_) => {}
                None => fields.push(Field::new(name.clone(), ty)),
            }
        }
    }
    let samples = rows
        .iter()
        .take(100)
        .filter_map(|r| r.get(key)?.as_str().map(str::to_string))
        .collect();
    Ok((fields, samples))
}

/// A Panther directory's lookup tables (as enrichment tables, their
/// selectors added to `log_tables`) and rules (as detections), with what
/// they share; problems found on the way join `dir.problems`.
pub(super) fn panther_project(
    dir: &mut PantherDir,
    log_tables: &mut [LogTable],
    delivery: &DeliverySettings,
    builtin: &[String],
) -> (
    Vec<super::EnrichmentDef>,
    (Vec<DetectionDef>, std::sync::Arc<PantherSupport>),
) {
    let mut skipped = Vec::new();
    let mut problems = Vec::new();
    let (tables, lookup_names, selector_names) =
        panther_lookup_tables(dir, log_tables, &mut skipped, &mut problems);
    dir.problems.append(&mut problems);
    let seed = PantherSupport {
        builtin: builtin.to_vec(),
        lookup_names,
        selector_names,
        skipped,
        ..PantherSupport::default()
    };
    (tables, panther_detections(dir, log_tables, delivery, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(name: &str, text: &str, key: &str) -> Result<(Vec<Field>, bool), String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        lookup_columns(&file, key)
            .map_err(|e| e.replace(&crate::files::display_path(&file), "FILE"))
    }

    #[test]
    fn lookup_columns_are_inferred_from_the_data() {
        let (fields, cidr) = columns(
            "t.jsonl",
            "{\"ip\": \"10.0.0.0/8\", \"n\": 1, \"up\": true}\n{\"ip\": \"10.1.0.0/16\", \"n\": 2.5, \"tags\": [\"a\"]}\n",
            "ip",
        )
        .unwrap();
        let types: Vec<(&str, &FieldType)> = fields
            .iter()
            .map(|f| (f.name.as_str(), &f.field_type))
            .collect();
        assert_eq!(
            types,
            [
                ("ip", &FieldType::String),
                ("n", &FieldType::Double),
                ("up", &FieldType::Boolean),
                ("tags", &FieldType::List(Box::new(FieldType::String)))
            ]
        );
        assert!(cidr, "every key value is a range");
        let (fields, cidr) = columns("t.csv", "ip,name\n1.2.3.4,a\n", "ip").unwrap();
        assert_eq!(fields.len(), 2);
        assert!(!cidr);
        assert_eq!(
            columns("t.csv", "addr,name\n1.2.3.4,a\n", "ip").unwrap_err(),
            "PrimaryKey `ip` is not a column of FILE"
        );
        assert_eq!(
            columns("t.jsonl", "{\"ip\": \"a\"}\nnope\n", "ip").unwrap_err(),
            "FILE: line 2: not JSON: expected ident at line 1 column 2"
        );
    }
}
