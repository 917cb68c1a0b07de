//! Reading a Panther directory: every `*.yml`/`*.yaml` with an
//! `AnalysisType` (hidden files and folders skipped), YAML scalars as
//! Panther's loader gives them (YAML 1.2: `off` stays a string), and the
//! mistakes Panther's own tool would reject, with file and line.

use crate::config::ConfigError;
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
    dir.rules.push(PantherRule {
        id,
        yaml: file.path.to_path_buf(),
        file: file.filename.clone().filter(|f| f.is_file()),
        log_types: strings(item.get("LogTypes")),
        tests,
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
