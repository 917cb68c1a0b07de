//! Test cases as written (`detections/<rule>/tests/*.yml` or `tests:` in
//! `detection.yml`) → validated [`TestCase`]s. Raw serde types reject
//! unknown fields; validation checks what serde cannot (names, tables,
//! fixture rows against their schema) and reports every problem with file
//! and line.

use crate::config::{
    locate_key, locate_text, read_yaml, ConfigError, DetectionDef, Diagnostics, EnrichmentDef,
    Project, Severity,
};
use crate::files::display_path;
use crate::schema::{coerce_object, Leniency};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    log: serde_yaml::Value,
    expect_match: bool,
    /// Log table of the events (default: the detection's first table).
    table: Option<String>,
    title: Option<String>,
    severity: Option<Severity>,
    dedupe: Option<String>,
    context: Option<serde_yaml::Value>,
    activated: Option<bool>,
    match_count: Option<u64>,
    /// Number of alerts the events produce.
    alerts: Option<u64>,
    enrichment: Option<BTreeMap<String, serde_yaml::Value>>,
    mocks: Option<BTreeMap<String, serde_yaml::Value>>,
    /// Reason to skip the case.
    skip: Option<String>,
}

/// `tests:` inside detection.yml; the other fields belong to the config loader.
#[derive(Debug, Deserialize)]
struct InlineCases {
    #[serde(default)]
    tests: Option<Vec<RawCase>>,
}

/// How fixture rows combine with the real table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureMode {
    /// Fixture rows are added after the table's rows (they win on a duplicate key).
    Extend,
    /// Fixture rows are the whole table.
    Replace,
}

/// Rows that stand in for (part of) an enrichment table during one case.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub table: String,
    pub mode: FixtureMode,
    /// Rows already coerced to the table's schema.
    pub rows: Vec<Value>,
}

/// What the produced alert must look like; `None` means "not checked".
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub matched: bool,
    pub title: Option<String>,
    pub severity: Option<Severity>,
    pub dedupe: Option<String>,
    pub context: Option<Map<String, Value>>,
    pub activated: Option<bool>,
    pub match_count: Option<u64>,
    pub alerts: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct TestCase {
    pub rule: String,
    pub name: String,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub table: String,
    pub events: Vec<Value>,
    pub expect: Expectations,
    pub fixtures: Vec<Fixture>,
    pub mocks: Map<String, Value>,
    pub skip: Option<String>,
}

impl TestCase {
    /// `rule::case`, the id used in reports and by `-k`.
    pub fn id(&self) -> String {
        format!("{}::{}", self.rule, self.name)
    }

    /// `file:line` where the case is written.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", display_path(&self.file)),
            None => display_path(&self.file),
        }
    }
}

/// Test files of a detection, in name order.
pub fn test_files(def: &DetectionDef) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(def.dir.join("tests"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every test case of `def`, and every problem found in its test files.
pub fn load_cases(project: &Project, def: &DetectionDef) -> (Vec<TestCase>, Vec<ConfigError>) {
    let mut cases = Vec::new();
    let mut errors = Diagnostics::default();
    if let Some((raw, source)) = read_yaml::<InlineCases>(&def.file, &mut errors) {
        for case in raw.tests.unwrap_or_default() {
            if let Some(case) = validate(project, def, &def.file, &source, case, &mut errors) {
                cases.push(case);
            }
        }
    }
    for file in test_files(def) {
        let Some((document, source)) = read_yaml::<serde_yaml::Value>(&file, &mut errors) else {
            continue;
        };
        let raws: Vec<RawCase> = match document {
            serde_yaml::Value::Sequence(_) => {
                from_source(&file, &source, &mut errors).unwrap_or_default()
            }
            serde_yaml::Value::Mapping(_) => from_source(&file, &source, &mut errors)
                .into_iter()
                .collect(),
            serde_yaml::Value::Null => Vec::new(),
            _ => {
                errors.push(ConfigError::new(
                    &file,
                    "a test file holds a list of test cases (or one case)",
                ));
                Vec::new()
            }
        };
        for case in raws {
            if let Some(case) = validate(project, def, &file, &source, case, &mut errors) {
                cases.push(case);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for case in &cases {
        if !seen.insert(case.name.as_str()) {
            errors.push(
                ConfigError::new(
                    &case.file,
                    format!(
                        "test case `{}` of `{}` is defined twice; names must be unique per detection",
                        case.name, case.rule
                    ),
                )
                .at(case.line.map(|l| (l, 1))),
            );
        }
    }
    (cases, errors.into_vec())
}

/// Parses already-read YAML text as `T`; a failure becomes a located error.
fn from_source<T: serde::de::DeserializeOwned>(
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
) -> Option<T> {
    serde_yaml::from_str(source)
        .map_err(|e| errors.push(ConfigError::from_yaml(file, &e)))
        .ok()
}

/// Line of `name: <case name>` in `source`.
fn case_line(source: &str, name: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("name:")
                .map(|rest| rest.trim().trim_matches(['"', '\'']) == name)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// YAML → JSON, with `<<:` merge keys applied (handy for event variants).
fn to_json(mut value: serde_yaml::Value) -> Result<Value, String> {
    value
        .apply_merge()
        .map_err(|e| format!("has a bad `<<` merge: {e}"))?;
    serde_json::to_value(value).map_err(|e| format!("not representable as JSON: {e}"))
}

/// Where a test case is in its file, to locate its errors.
struct CaseDoc<'a> {
    file: &'a Path,
    source: &'a str,
    name: &'a str,
    /// Line of the case's `name:`.
    line: Option<usize>,
}

impl CaseDoc<'_> {
    /// The field's line after the case's `name:` line, else the case line.
    fn at(&self, field: &str) -> Option<(usize, usize)> {
        let start = self.line.unwrap_or(1);
        self.source
            .lines()
            .enumerate()
            .skip(start.saturating_sub(1))
            .find(|(_, l)| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{field}:"))
            })
            .map(|(i, l)| (i + 1, l.len() - l.trim_start().len() + 1))
            .or(self.line.map(|l| (l, 1)))
    }

    /// An error about `field` of this case.
    fn error(&self, field: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.file, format!("test case `{}`: {message}", self.name))
            .at(self.at(field))
    }

    /// An error about the fixture of enrichment table `table`.
    fn fixture_error(&self, table: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.file, format!("test case `{}`: {message}", self.name))
            .at(locate_text(self.source, &format!("{table}:")).or(self.at("enrichment")))
    }
}

fn validate(
    project: &Project,
    def: &DetectionDef,
    file: &Path,
    source: &str,
    raw: RawCase,
    errors: &mut Diagnostics,
) -> Option<TestCase> {
    let mut errors = errors.scope();
    let name = raw.name.clone();
    let doc = CaseDoc {
        file,
        source,
        name: &name,
        line: case_line(source, &raw.name),
    };
    if raw.name.trim().is_empty() {
        errors.push(
            ConfigError::new(file, "a test case has an empty name").at(locate_key(source, "name")),
        );
    }
    let table = match &raw.table {
        Some(t) if !def.tables.contains(t) => {
            errors.push(doc.error(
                "table",
                format!(
                    "`{t}` is not one of the detection's tables ({})",
                    def.tables.join(", ")
                ),
            ));
            t.clone()
        }
        Some(t) => t.clone(),
        None => def.tables.first().cloned().unwrap_or_default(),
    };
    let events = case_events(raw.log, &doc, &mut errors);
    let context = case_context(raw.context, &doc, &mut errors);
    let expect = Expectations {
        matched: raw.expect_match,
        title: raw.title,
        severity: raw.severity,
        dedupe: raw.dedupe,
        context,
        activated: raw.activated,
        match_count: raw.match_count,
        alerts: raw.alerts,
    };
    check_expectations(&expect, &doc, &mut errors);
    let fixtures = case_fixtures(
        project,
        raw.enrichment.unwrap_or_default(),
        &doc,
        &mut errors,
    );
    let mut mocks = Map::new();
    for (name, value) in raw.mocks.unwrap_or_default() {
        match to_json(value) {
            Ok(v) => {
                mocks.insert(name, v);
            }
            Err(e) => errors.push(doc.error("mocks", format!("mock `{name}` {e}"))),
        }
    }
    if !errors.is_clean() {
        return None;
    }
    let line = doc.line;
    Some(TestCase {
        rule: def.name.clone(),
        name: raw.name,
        file: file.to_path_buf(),
        line,
        table,
        events,
        expect,
        fixtures,
        mocks,
        skip: raw.skip,
    })
}

/// `log:`: one event or a non-empty list of events, each a mapping.
fn case_events(log: serde_yaml::Value, doc: &CaseDoc<'_>, errors: &mut Diagnostics) -> Vec<Value> {
    match to_json(log) {
        Ok(Value::Object(map)) => vec![Value::Object(map)],
        Ok(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    errors
                        .push(doc.error("log", format!("log[{i}] must be a mapping (one event)")));
                }
            }
            items
        }
        Ok(Value::Array(_)) => {
            errors.push(doc.error("log", "`log` is an empty list"));
            Vec::new()
        }
        Ok(_) => {
            errors.push(doc.error(
                "log",
                "`log` must be one event (a mapping) or a list of events",
            ));
            Vec::new()
        }
        Err(e) => {
            errors.push(doc.error("log", format!("`log` {e}")));
            Vec::new()
        }
    }
}

/// `context:`: a mapping (a subset of the alert context).
fn case_context(
    context: Option<serde_yaml::Value>,
    doc: &CaseDoc<'_>,
    errors: &mut Diagnostics,
) -> Option<Map<String, Value>> {
    match context.map(to_json) {
        None => None,
        Some(Ok(Value::Object(map))) => Some(map),
        Some(Ok(_)) => {
            errors.push(doc.error(
                "context",
                "`context` must be a mapping (a subset of the alert context)",
            ));
            None
        }
        Some(Err(e)) => {
            errors.push(doc.error("context", format!("`context` {e}")));
            None
        }
    }
}

/// A case that expects no match sets nothing that only applies to a match.
fn check_expectations(expect: &Expectations, doc: &CaseDoc<'_>, errors: &mut Diagnostics) {
    if expect.matched {
        return;
    }
    let given: Vec<&str> = [
        ("title", expect.title.is_some()),
        ("severity", expect.severity.is_some()),
        ("dedupe", expect.dedupe.is_some()),
        ("context", expect.context.is_some()),
        ("activated", expect.activated.is_some()),
        ("match_count", expect.match_count.is_some()),
        ("alerts", expect.alerts.is_some_and(|n| n > 0)),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    if let Some(first) = given.first() {
        errors.push(doc.error(
            first,
            format!(
                "expects no match but sets {}, which only apply to a match",
                given.join(", ")
            ),
        ));
    }
}

/// `enrichment:`: fixture rows per table, checked against the table's schema.
fn case_fixtures(
    project: &Project,
    enrichment: BTreeMap<String, serde_yaml::Value>,
    doc: &CaseDoc<'_>,
    errors: &mut Diagnostics,
) -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    for (name, value) in enrichment {
        let Some(table_def) = project.enrichment_table(&name) else {
            let names: Vec<&str> = project.enrichment.iter().map(|t| t.name.as_str()).collect();
            let hint = crate::suggest::did_you_mean(&name, &names);
            errors.push(doc.fixture_error(
                &name,
                format!("enrichment table `{name}` is not defined{hint}"),
            ));
            continue;
        };
        match fixture(table_def, value) {
            Ok(f) => fixtures.push(f),
            Err(message) => {
                errors.push(doc.fixture_error(&name, format!("enrichment `{name}`: {message}")))
            }
        }
    }
    fixtures
}

/// A fixture: a list of rows (extends the table) or `{rows: [...], mode:
/// replace|extend}`; rows are checked against the table's schema here.
fn fixture(def: &EnrichmentDef, value: serde_yaml::Value) -> Result<Fixture, String> {
    let value = to_json(value)?;
    let (rows, mode) = match value {
        Value::Array(rows) => (rows, FixtureMode::Extend),
        Value::Object(mut map) => {
            let mode = match map.remove("mode") {
                None => FixtureMode::Extend,
                Some(Value::String(m)) if m == "extend" => FixtureMode::Extend,
                Some(Value::String(m)) if m == "replace" => FixtureMode::Replace,
                Some(other) => {
                    return Err(format!("`mode` must be `extend` or `replace`, got {other}"))
                }
            };
            let rows = match map.remove("rows") {
                Some(Value::Array(rows)) => rows,
                None => Vec::new(),
                Some(_) => return Err("`rows` must be a list of rows".into()),
            };
            if let Some(extra) = map.keys().next() {
                return Err(format!(
                    "unknown field `{extra}`; a fixture has `rows` and `mode`"
                ));
            }
            (rows, mode)
        }
        _ => return Err("expected a list of rows, or {rows: [...], mode: extend|replace}".into()),
    };
    let mut coerced = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Value::Object(mut map) = row else {
            return Err(format!("row {i} is not a mapping"));
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !def.schema.fields.iter().any(|f| &f.name == *k))
        {
            let names: Vec<&str> = def.schema.fields.iter().map(|f| f.name.as_str()).collect();
            let hint = crate::suggest::did_you_mean(unknown, &names);
            return Err(format!(
                "row {i}: column `{unknown}` is not in the table's schema{hint}"
            ));
        }
        coerce_object(&mut map, &def.schema.fields, Leniency::Json)
            .map_err(|e| format!("row {i}, column `{}`: {}", e.path, e.message))?;
        coerced.push(Value::Object(map));
    }
    Ok(Fixture {
        table: def.name.clone(),
        mode,
        rows: coerced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_a_case() {
        let source = "- name: first\n  log: {}\n- name: \"second one\"\n";
        assert_eq!(case_line(source, "first"), Some(1));
        assert_eq!(case_line(source, "second one"), Some(3));
        assert_eq!(case_line(source, "third"), None);
    }
}
