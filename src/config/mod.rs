//! Project configuration: YAML files → validated domain types.
//!
//! Loading is two-stage. `raw` mirrors the files with `deny_unknown_fields`
//! (so typos are caught with the nearest valid name); `Project::load` then
//! validates every file into the types the rest of the engine uses, collecting
//! all errors instead of stopping at the first, so `validate` can show them
//! at once.

mod destinations;
mod error;
mod raw;

pub use destinations::{
    is_secure_url, unknown_destination, DeliverySettings, Destination, DestinationKind,
    FieldTemplate, JiraDestination, RetryPolicy, SlackDestination, WebhookDestination,
    ALERT_TEMPLATE_FIELDS,
};
pub use error::{closest, locate_key, locate_text, locate_text_after, ConfigError, ConfigErrors};
pub use raw::Severity;

use crate::enrichment::load_helpers::format_of;
use crate::schema::{FieldType, TableSchema};
use raw::*;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const PROJECT_FILE: &str = "ravenwatch.yml";
pub const DEFAULT_STORAGE: &str = ".ravenwatch";
/// Matano's default deduplication window.
pub const DEFAULT_DEDUPE_WINDOW_MINUTES: u64 = 60;

/// Data file extensions recognised for static tables (each may end in `.gz`).
pub const DATA_EXTENSIONS: &[&str] = &["jsonl", "ndjson", "json", "csv", "txt", "parquet"];
/// The data file extension of `format: mmdb` tables.
pub const MMDB_EXTENSION: &str = "mmdb";

/// A path as shown in messages: relative paths without a leading `./`.
pub fn display_path(path: &Path) -> String {
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_string).unwrap_or(text)
}

/// A loaded, validated project directory.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub settings: ProjectSettings,
    pub log_tables: Vec<LogTable>,
    pub enrichment: Vec<EnrichmentDef>,
    pub detections: Vec<DetectionDef>,
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
}

#[derive(Debug, Clone)]
pub struct LogTable {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    /// Top-level or dotted path of the event-time field.
    pub timestamp: String,
    pub schema: TableSchema,
    /// Automatic enrichment selectors (`enrich:`), validated against the
    /// enrichment tables.
    pub enrich: Vec<Selector>,
}

/// Look up `fields` of every event in `table` by `key` before detections
/// run; matches reach detections as `r.enrichment[table][field]` and alerts
/// as `context.enrichment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub table: String,
    /// Dotted paths of declared string, int, long, boolean (or list) fields.
    pub fields: Vec<String>,
    /// The table's lookup key used.
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrichmentKind {
    Static,
    Dynamic,
}

/// How a table's data is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Rows with a declared schema, indexed per lookup key.
    Rows,
    /// A MaxMind DB (GeoIP) file: one implicit CIDR key, records as dicts.
    Mmdb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Overwrite,
    Append,
}

/// How a lookup key matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch {
    /// Equal values (optionally ignoring case).
    Exact,
    /// The column holds CIDR ranges or single IPs; an address finds the
    /// most specific range containing it.
    Cidr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupKey {
    /// The name used as `index_key` from Python and `--key` on the CLI.
    pub name: String,
    /// The indexed columns: one (a list column indexes every element), or
    /// several for a composite key.
    pub columns: Vec<String>,
    pub matching: KeyMatch,
    /// `false`: strings are compared case-insensitively.
    pub case_sensitive: bool,
}

impl LookupKey {
    pub fn is_composite(&self) -> bool {
        self.columns.len() > 1
    }
}

#[derive(Debug, Clone)]
pub struct EnrichmentDef {
    pub name: String,
    pub description: Option<String>,
    pub dir: PathBuf,
    pub file: PathBuf,
    pub kind: EnrichmentKind,
    pub write_mode: WriteMode,
    pub format: TableFormat,
    pub schema: TableSchema,
    pub primary_key: Option<String>,
    /// Lookup keys; the first is the default for `get`.
    pub lookup_keys: Vec<LookupKey>,
    pub list_delimiter: char,
    pub source: SourceOptions,
    /// Inline data files of a static table, sorted by name.
    pub data_files: Vec<PathBuf>,
    /// The YAML text, hashed into snapshots so a schema change forces a reload.
    pub definition: String,
}

/// How data files are read (`source:` in enrichment.yml), so published
/// feeds load as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    /// Dotted paths of the arrays holding the rows in a JSON document
    /// (empty: the document is JSON lines or one array).
    pub records: Vec<String>,
    /// CSV comment character.
    pub comment: Option<u8>,
    pub has_header: bool,
    /// CSV column names when there is no header (or to override it).
    pub columns: Option<Vec<String>>,
    /// Source column → schema field.
    pub rename: Vec<(String, String)>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            comment: None,
            has_header: true,
            columns: None,
            rename: Vec::new(),
        }
    }
}

impl SourceOptions {
    /// The schema name of a source column.
    pub fn renamed<'a>(&'a self, column: &'a str) -> &'a str {
        self.rename
            .iter()
            .find(|(from, _)| from == column)
            .map(|(_, to)| to.as_str())
            .unwrap_or(column)
    }
}

impl EnrichmentDef {
    pub fn lookup_key(&self, name: &str) -> Option<&LookupKey> {
        self.lookup_keys.iter().find(|k| k.name == name)
    }
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

/// A `{field.path}` template over a SQL detection's result row
/// (`{{` and `}}` for literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub text: String,
    pub parts: Vec<TemplatePart>,
    /// Where the template is in detection.yml.
    pub position: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    /// A dotted field path.
    Field(String),
}

impl Template {
    /// Parses `text`; a bare path without braces (`dedupe: source.ip`) is
    /// one field.
    ///
    /// # Errors
    /// An unclosed or empty `{}`.
    pub fn parse(text: &str, bare_path: bool) -> Result<Self, String> {
        let is_path = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if bare_path && !text.contains('{') && is_path(text.trim()) {
            return Ok(Self {
                text: text.to_string(),
                parts: vec![TemplatePart::Field(text.trim().to_string())],
                position: None,
            });
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(format!("unclosed `{{` in template {text:?}")),
                        }
                    }
                    let field = field.trim().to_string();
                    if !is_path(&field) {
                        return Err(format!(
                            "`{{{field}}}` in template {text:?} is not a field path (write `{{source.ip}}`; `{{{{` for a literal brace)"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Field(field));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in template {text:?} (write `}}}}`)"
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self {
            text: text.to_string(),
            parts,
            position: None,
        })
    }

    /// The field paths the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(f) => Some(f.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
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
        let mut errors = Vec::new();
        if !root.is_dir() {
            errors.push(ConfigError::new(root, "project directory does not exist"));
        }
        let settings = load_settings(root, &mut errors);
        // Log tables' selectors refer to enrichment tables; their errors
        // are still reported first.
        let mut enrichment_errors = Vec::new();
        let enrichment = load_enrichment(root, &mut enrichment_errors);
        let log_tables = load_log_tables(root, &enrichment, &mut errors);
        errors.append(&mut enrichment_errors);
        let detections = load_detections(root, &log_tables, &settings.delivery, &mut errors);
        let project = Project {
            root: root.to_path_buf(),
            settings,
            log_tables,
            enrichment,
            detections,
        };
        (project, errors)
    }

    pub fn log_table(&self, name: &str) -> Option<&LogTable> {
        self.log_tables.iter().find(|t| t.name == name)
    }

    pub fn enrichment_table(&self, name: &str) -> Option<&EnrichmentDef> {
        self.enrichment.iter().find(|t| t.name == name)
    }

    /// Helper folder shared by detections (`detections/_lib`).
    pub fn detection_lib_dir(&self) -> PathBuf {
        self.root.join("detections").join("_lib")
    }
}

/// Reads and parses one YAML file; a failure becomes a located error.
pub(crate) fn read_yaml<T: DeserializeOwned>(
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<(T, String)> {
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            errors.push(ConfigError::new(file, format!("cannot read file: {e}")));
            return None;
        }
    };
    match serde_yaml::from_str::<T>(&source) {
        Ok(value) => Some((value, source)),
        Err(e) => {
            errors.push(ConfigError::from_yaml(file, &e));
            None
        }
    }
}

/// Sub-folders of `dir` in name order, skipping hidden ones and `_lib`-style helpers.
fn component_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.starts_with('_') && n != "__pycache__")
        })
        .collect();
    dirs.sort();
    dirs
}

fn load_settings(root: &Path, errors: &mut Vec<ConfigError>) -> ProjectSettings {
    let file = root.join(PROJECT_FILE);
    let (raw, source) = if file.exists() {
        read_yaml::<Option<RawProject>>(&file, errors)
            .map(|(r, source)| (r.unwrap_or_default(), source))
            .unwrap_or_default()
    } else {
        (RawProject::default(), String::new())
    };
    let delivery = destinations::validate(raw.destinations, raw.delivery, &file, &source, errors);
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
    }
}

fn check_unique_names(
    fields: &[crate::schema::Field],
    file: &Path,
    source: &str,
    errors: &mut Vec<ConfigError>,
) {
    let mut seen = HashSet::new();
    for f in fields {
        if !seen.insert(f.name.as_str()) {
            errors.push(
                ConfigError::new(file, format!("field `{}` is declared twice", f.name))
                    .at(locate_text(source, &f.name)),
            );
        }
        if let FieldType::Struct(inner) = &f.field_type {
            check_unique_names(inner, file, source, errors);
        }
    }
}

fn load_log_tables(
    root: &Path,
    enrichment: &[EnrichmentDef],
    errors: &mut Vec<ConfigError>,
) -> Vec<LogTable> {
    let dir = root.join("schemas");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    let mut tables: Vec<LogTable> = Vec::new();
    for file in files {
        let Some((raw, source)) = read_yaml::<RawLogTable>(&file, errors) else {
            continue;
        };
        check_unique_names(&raw.schema.fields, &file, &source, errors);
        let schema = TableSchema::new(raw.schema.fields);
        let timestamp = raw.timestamp.unwrap_or_else(|| "ts".into());
        match resolve_path(&schema, &timestamp) {
            Some(FieldType::Timestamp) => {}
            Some(other) => errors.push(
                ConfigError::new(
                    &file,
                    format!(
                        "timestamp field `{timestamp}` is declared as {}, it must be a timestamp",
                        other.describe()
                    ),
                )
                .at(locate_key(&source, "timestamp")),
            ),
            None => errors.push(
                ConfigError::new(
                    &file,
                    format!(
                        "timestamp field `{timestamp}` is not declared in schema.fields (declare it with type: timestamp)"
                    ),
                )
                .at(locate_key(&source, "timestamp").or(locate_key(&source, "fields"))),
            ),
        }
        if tables.iter().any(|t| t.name == raw.name) {
            errors.push(
                ConfigError::new(&file, format!("log table `{}` is defined twice", raw.name))
                    .at(locate_key(&source, "name")),
            );
            continue;
        }
        let enrich = raw
            .enrich
            .unwrap_or_default()
            .into_iter()
            .filter_map(|sel| log_selector(sel, &schema, enrichment, &file, &source, errors))
            .collect();
        tables.push(LogTable {
            name: raw.name,
            description: raw.description,
            file,
            timestamp,
            schema,
            enrich,
        });
    }
    tables
}

/// A selector whose fields are declared lookup-able fields of the log
/// table and whose table and key exist (an absent key means the table's
/// first); a bad one is dropped with an error at its line.
fn log_selector(
    raw: RawSelector,
    schema: &TableSchema,
    enrichment: &[EnrichmentDef],
    file: &Path,
    source: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Selector> {
    let fields = match raw.fields {
        OneOrMany::One(f) => vec![f],
        OneOrMany::Many(fs) => fs,
    };
    let before = errors.len();
    let at =
        |text: &str| locate_text_after(source, "enrich", text).or(locate_key(source, "enrich"));
    let mut fail = |at: Option<(usize, usize)>, message: String| {
        errors.push(ConfigError::new(file, format!("enrich: {message}")).at(at));
    };
    if fields.is_empty() {
        fail(
            at(&raw.table),
            format!("selector of `{}` lists no fields", raw.table),
        );
    }
    for field in &fields {
        let problem = match resolve_path(schema, field) {
            None => Some("is not declared in schema.fields (selectors read typed fields)".to_string()),
            Some(ty) if ty.is_scalar_key() => None,
            Some(FieldType::List(e)) if e.is_scalar_key() => None,
            Some(ty) => Some(format!(
                "has type {}; selector fields must be string, int, long, boolean or a list of those",
                ty.describe()
            )),
        };
        if let Some(problem) = problem {
            fail(at(field), format!("field `{field}` {problem}"));
        }
    }
    let Some(def) = enrichment.iter().find(|d| d.name == raw.table) else {
        let names: Vec<&str> = enrichment.iter().map(|d| d.name.as_str()).collect();
        let hint = closest(&raw.table, &names)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        fail(
            at(&raw.table),
            format!("no enrichment table `{}`{hint}", raw.table),
        );
        return None;
    };
    let key = match &raw.key {
        Some(name) => def.lookup_keys.iter().find(|k| &k.name == name),
        None => def.lookup_keys.first(),
    };
    match key {
        None => {
            let name = raw.key.as_deref().unwrap_or_default();
            let keys: Vec<&str> = def.lookup_keys.iter().map(|k| k.name.as_str()).collect();
            fail(
                at(&format!("key: {name}")),
                format!(
                    "table `{}` has no lookup key `{name}` (keys: {})",
                    raw.table,
                    keys.join(", ")
                ),
            );
            None
        }
        Some(k) if k.is_composite() => {
            fail(
                at(&raw.table),
                format!(
                    "key `{}` of `{}` is composite; selectors look up one field at a time",
                    k.name, raw.table
                ),
            );
            None
        }
        Some(k) => (errors.len() == before).then(|| Selector {
            key: k.name.clone(),
            table: raw.table,
            fields,
        }),
    }
}

/// The declared type at a dotted path (`source.ip`), through structs.
pub fn resolve_path<'a>(schema: &'a TableSchema, path: &str) -> Option<&'a FieldType> {
    let mut parts = path.split('.');
    let mut ty = &schema.field(parts.next()?)?.field_type;
    for part in parts {
        let FieldType::Struct(fields) = ty else {
            return None;
        };
        ty = &fields.iter().find(|f| f.name == part)?.field_type;
    }
    Some(ty)
}

/// Inline data files of a static table: `data.<ext>[.gz]` and `data_*.<ext>[.gz]`.
pub fn find_data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let base = name.strip_suffix(".gz").unwrap_or(name);
            let (stem, ext) = base.rsplit_once('.').unwrap_or((base, ""));
            (stem == "data" || stem.starts_with("data_") || stem.starts_with("data-"))
                && (DATA_EXTENSIONS.contains(&ext) || ext == MMDB_EXTENSION)
        })
        .collect();
    files.sort();
    files
}

fn load_enrichment(root: &Path, errors: &mut Vec<ConfigError>) -> Vec<EnrichmentDef> {
    let mut tables: Vec<EnrichmentDef> = Vec::new();
    for dir in component_dirs(&root.join("enrichment")) {
        let file = dir.join("enrichment.yml");
        if !file.exists() {
            errors.push(ConfigError::new(
                &file,
                "missing enrichment.yml for this table folder",
            ));
            continue;
        }
        let Some((raw, source)) = read_yaml::<RawEnrichment>(&file, errors) else {
            continue;
        };
        if let Some(def) = validate_enrichment(raw, &dir, &file, source, errors) {
            if tables.iter().any(|t| t.name == def.name) {
                errors.push(
                    ConfigError::new(
                        &file,
                        format!("enrichment table `{}` is defined twice", def.name),
                    )
                    .at(locate_key(&def.definition, "name")),
                );
            } else {
                tables.push(def);
            }
        }
    }
    tables
}

fn validate_enrichment(
    raw: RawEnrichment,
    dir: &Path,
    file: &Path,
    source: String,
    errors: &mut Vec<ConfigError>,
) -> Option<EnrichmentDef> {
    let before = errors.len();
    if !is_identifier(&raw.name) {
        errors.push(
            ConfigError::new(
                file,
                format!(
                    "table name `{}` must be a Python identifier (letters, digits, _)",
                    raw.name
                ),
            )
            .at(locate_key(&source, "name")),
        );
    }
    if raw.format == Some(RawTableFormat::Mmdb) {
        return validate_mmdb(raw, dir, file, source, before, errors);
    }
    let Some(raw_schema) = raw.schema else {
        errors.push(
            ConfigError::new(
                file,
                "missing `schema` (the table's fields; only `format: mmdb` tables go without)",
            )
            .at(locate_key(&source, "name")),
        );
        return None;
    };
    check_unique_names(&raw_schema.fields, file, &source, errors);
    let schema = TableSchema::new(raw_schema.fields);
    let mut raw_keys: Vec<RawLookupKey> = raw.lookup_keys.unwrap_or_default();
    let key_name = |k: &RawLookupKey| match k {
        RawLookupKey::Name(n) => n.clone(),
        RawLookupKey::Spec(s) => s.name.clone(),
    };
    if let Some(pk) = &raw_schema.primary_key {
        if schema.field(pk).is_none() {
            errors.push(
                ConfigError::new(file, unknown_column_message("primary_key", pk, &schema))
                    .at(locate_key(&source, "primary_key")),
            );
        }
        if !raw_keys.iter().any(|k| &key_name(k) == pk) {
            raw_keys.insert(0, RawLookupKey::Name(pk.clone()));
        }
    }
    if raw_keys.is_empty() {
        errors.push(
            ConfigError::new(
                file,
                "table has no lookup key: set schema.primary_key or lookup_keys",
            )
            .at(locate_key(&source, "schema")),
        );
    }
    let mut lookup_keys: Vec<LookupKey> = Vec::new();
    for raw_key in raw_keys {
        // The key's own line within `lookup_keys:`, else that section.
        let at = |name: &str| {
            let section = locate_key(&source, "lookup_keys");
            let start = section.map(|(l, _)| l).unwrap_or(1);
            source
                .lines()
                .enumerate()
                .skip(start)
                .find_map(|(i, line)| {
                    [format!("name: {name}"), format!("- {name}")]
                        .iter()
                        .find_map(|n| line.find(n.as_str()))
                        .map(|c| (i + 1, c + 1))
                })
                .or(section)
        };
        let key = match raw_key {
            RawLookupKey::Name(name) => LookupKey {
                columns: vec![name.clone()],
                name,
                matching: KeyMatch::Exact,
                case_sensitive: true,
            },
            RawLookupKey::Spec(spec) => {
                let columns = match (spec.column, spec.columns) {
                    (Some(_), Some(_)) => {
                        errors.push(
                            ConfigError::new(
                                file,
                                format!(
                                    "lookup key `{}`: set `column` or `columns`, not both",
                                    spec.name
                                ),
                            )
                            .at(at(&spec.name)),
                        );
                        continue;
                    }
                    (Some(c), None) => vec![c],
                    (None, Some(cs)) => cs,
                    (None, None) => vec![spec.name.clone()],
                };
                LookupKey {
                    name: spec.name,
                    columns,
                    matching: match spec.matching {
                        Some(RawKeyMatch::Cidr) => KeyMatch::Cidr,
                        _ => KeyMatch::Exact,
                    },
                    case_sensitive: spec.case_sensitive.unwrap_or(true),
                }
            }
        };
        if lookup_keys.iter().any(|k| k.name == key.name) {
            errors.push(
                ConfigError::new(file, format!("lookup key `{}` is defined twice", key.name))
                    .at(at(&key.name)),
            );
            continue;
        }
        let mut ok = true;
        if key.columns.is_empty() {
            errors.push(
                ConfigError::new(
                    file,
                    format!("lookup key `{}` has an empty `columns` list", key.name),
                )
                .at(at(&key.name)),
            );
            ok = false;
        }
        for column in &key.columns {
            let message = match schema.field(column).map(|f| &f.field_type) {
                None if *column == key.name => {
                    Some(unknown_column_message("lookup key", column, &schema))
                }
                None => Some(unknown_column_message(
                    &format!("lookup key `{}`: column", key.name),
                    column,
                    &schema,
                )),
                Some(FieldType::List(_)) if key.is_composite() => Some(format!(
                    "lookup key `{}`: column `{column}` is a list; composite keys take scalar columns",
                    key.name
                )),
                Some(ty) if ty.is_scalar_key() => None,
                Some(FieldType::List(e)) if e.is_scalar_key() => None,
                Some(ty) => Some(format!(
                    "lookup key `{}` has type {}; keys must be string, int, long, boolean or a list of those",
                    key.name,
                    ty.describe()
                )),
            };
            if key.matching == KeyMatch::Cidr {
                let is_string = matches!(
                    schema.field(column).map(|f| &f.field_type),
                    Some(FieldType::String)
                ) || matches!(
                    schema.field(column).map(|f| &f.field_type),
                    Some(FieldType::List(e)) if **e == FieldType::String
                );
                if message.is_none() && (!is_string || key.is_composite()) {
                    errors.push(
                        ConfigError::new(
                            file,
                            format!(
                                "lookup key `{}`: `match: cidr` needs one string column (or list of strings) of CIDRs or IPs",
                                key.name
                            ),
                        )
                        .at(at(&key.name)),
                    );
                    ok = false;
                }
            }
            if let Some(message) = message {
                errors.push(ConfigError::new(file, message).at(at(&key.name)));
                ok = false;
            }
        }
        if ok {
            lookup_keys.push(key);
        }
    }
    let list_delimiter = match raw.list_delimiter.as_deref() {
        None => ';',
        Some(d) if d.chars().count() == 1 => d.chars().next().unwrap_or(';'),
        Some(d) => {
            errors.push(
                ConfigError::new(
                    file,
                    format!("list_delimiter must be one character, got {d:?}"),
                )
                .at(locate_key(&source, "list_delimiter")),
            );
            ';'
        }
    };
    let raw_source = raw.source.unwrap_or_default();
    let mut source_options = SourceOptions {
        records: match raw_source.records {
            None => Vec::new(),
            Some(OneOrMany::One(r)) => vec![r],
            Some(OneOrMany::Many(rs)) => rs,
        },
        comment: None,
        has_header: raw_source.has_header.unwrap_or(true),
        columns: raw_source.columns,
        rename: raw_source.rename.unwrap_or_default().into_iter().collect(),
    };
    match raw_source.comment.as_deref() {
        None => {}
        Some(c) if c.len() == 1 && c.is_ascii() => source_options.comment = Some(c.as_bytes()[0]),
        Some(c) => errors.push(
            ConfigError::new(
                file,
                format!("source.comment must be one ASCII character, got {c:?}"),
            )
            .at(locate_key(&source, "comment")),
        ),
    }
    if !source_options.has_header && source_options.columns.is_none() {
        errors.push(
            ConfigError::new(
                file,
                "source.has_header is false, so source.columns must name the columns",
            )
            .at(locate_key(&source, "has_header")),
        );
    }
    if source_options.records.iter().any(|r| r.trim().is_empty()) {
        errors.push(
            ConfigError::new(
                file,
                "source.records must name the array holding the rows (a dotted path)",
            )
            .at(locate_key(&source, "records")),
        );
    }
    for (from, to) in &source_options.rename {
        if schema.field(to).is_none() {
            errors.push(
                ConfigError::new(
                    file,
                    unknown_column_message(&format!("source.rename of `{from}` to"), to, &schema),
                )
                .at(locate_text(&source, from).or(locate_key(&source, "rename"))),
            );
        }
    }
    let kind = enrichment_kind(raw.enrichment_type);
    let data_files = find_data_files(dir);
    if let Some(mmdb) = data_files.iter().find(|p| format_of(p) == MMDB_EXTENSION) {
        errors.push(ConfigError::new(
            file,
            format!(
                "{} is a MaxMind DB: set `format: mmdb` to make this a GeoIP table",
                display_path(mmdb)
            ),
        ));
    }
    if kind == EnrichmentKind::Static && data_files.is_empty() {
        errors.push(ConfigError::new(
            file,
            format!(
                "static table `{}` has no data file next to it (expected data.jsonl, data.json, data.csv, data.txt or data.parquet, optionally .gz)",
                raw.name
            ),
        ));
    }
    let text_files = data_files.iter().any(|p| {
        let n = p.to_string_lossy();
        n.ends_with(".txt") || n.ends_with(".txt.gz")
    });
    if text_files && schema.fields.len() != 1 {
        errors.push(ConfigError::new(
            file,
            "text data files hold one value per line, so the table must declare exactly one field",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(EnrichmentDef {
        description: raw.description,
        name: raw.name,
        dir: dir.to_path_buf(),
        file: file.to_path_buf(),
        kind,
        write_mode: match raw.write_mode.unwrap_or(RawWriteMode::Overwrite) {
            RawWriteMode::Overwrite => WriteMode::Overwrite,
            RawWriteMode::Append => WriteMode::Append,
        },
        format: TableFormat::Rows,
        primary_key: raw_schema.primary_key,
        schema,
        lookup_keys,
        list_delimiter,
        source: source_options,
        data_files,
        definition: source,
    })
}

fn enrichment_kind(raw: Option<RawEnrichmentType>) -> EnrichmentKind {
    match raw.unwrap_or(RawEnrichmentType::Static) {
        RawEnrichmentType::Static => EnrichmentKind::Static,
        RawEnrichmentType::Dynamic => EnrichmentKind::Dynamic,
    }
}

/// A `format: mmdb` table: one MaxMind DB file (static) or uploaded
/// databases (dynamic, overwrite only); no schema, no row-format options.
fn validate_mmdb(
    raw: RawEnrichment,
    dir: &Path,
    file: &Path,
    source: String,
    before: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<EnrichmentDef> {
    let mut refuse = |key: &str, message: &str| {
        errors.push(
            ConfigError::new(file, format!("`format: mmdb` tables {message}"))
                .at(locate_key(&source, key)),
        );
    };
    if raw.schema.is_some() {
        refuse(
            "schema",
            "take their records from the database: remove `schema`",
        );
    }
    if raw.source.is_some() {
        refuse("source", "are read as they are: remove `source`");
    }
    if raw.list_delimiter.is_some() {
        refuse(
            "list_delimiter",
            "have no CSV cells: remove `list_delimiter`",
        );
    }
    if raw.write_mode == Some(RawWriteMode::Append) {
        refuse(
            "write_mode",
            "are replaced by each upload: use `write_mode: overwrite`",
        );
    }
    let key_name = match raw.lookup_keys.as_deref() {
        None | Some([]) => "ip".to_string(),
        Some([RawLookupKey::Name(name)]) => name.clone(),
        Some([RawLookupKey::Spec(spec)])
            if spec.columns.is_none()
                && spec.column.is_none()
                && !matches!(spec.matching, Some(RawKeyMatch::Exact)) =>
        {
            spec.name.clone()
        }
        Some(_) => {
            refuse(
                "lookup_keys",
                "have one lookup key, an IP address matched against the database's networks: \
                 give at most one key name",
            );
            String::new()
        }
    };
    let kind = enrichment_kind(raw.enrichment_type);
    let data_files = find_data_files(dir);
    let mmdb_files = data_files
        .iter()
        .filter(|p| format_of(p) == MMDB_EXTENSION)
        .count();
    if kind == EnrichmentKind::Static && (mmdb_files != 1 || data_files.len() != 1) {
        errors.push(ConfigError::new(
            file,
            format!(
                "static `format: mmdb` table `{}` needs exactly one data file, data.mmdb (found: {})",
                raw.name,
                if data_files.is_empty() {
                    "none".to_string()
                } else {
                    data_files.iter().map(|p| display_path(p)).collect::<Vec<_>>().join(", ")
                }
            ),
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(EnrichmentDef {
        description: raw.description,
        name: raw.name,
        dir: dir.to_path_buf(),
        file: file.to_path_buf(),
        kind,
        write_mode: WriteMode::Overwrite,
        format: TableFormat::Mmdb,
        schema: TableSchema::new(Vec::new()),
        primary_key: None,
        lookup_keys: vec![LookupKey {
            name: key_name,
            columns: Vec::new(),
            matching: KeyMatch::Cidr,
            case_sensitive: true,
        }],
        list_delimiter: ';',
        source: SourceOptions::default(),
        data_files,
        definition: source,
    })
}

fn unknown_column_message(what: &str, name: &str, schema: &TableSchema) -> String {
    let names = schema.names();
    let hint = closest(name, &names)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    format!("{what} `{name}` is not a field of the schema{hint}")
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn load_detections(
    root: &Path,
    log_tables: &[LogTable],
    delivery: &DeliverySettings,
    errors: &mut Vec<ConfigError>,
) -> Vec<DetectionDef> {
    let mut detections: Vec<DetectionDef> = Vec::new();
    for dir in component_dirs(&root.join("detections")) {
        let file = dir.join("detection.yml");
        if !file.exists() {
            errors.push(ConfigError::new(
                &file,
                "missing detection.yml for this detection folder",
            ));
            continue;
        }
        let Some((raw, source)) = read_yaml::<RawDetection>(&file, errors) else {
            continue;
        };
        let before = errors.len();
        let script = dir.join("detect.py");
        let logic = detection_logic(&raw, &file, &source, &script, errors);
        let tables = raw.tables.or(raw.log_sources).unwrap_or_default();
        if tables.is_empty() {
            errors.push(
                ConfigError::new(&file, "detection lists no `tables` to run on")
                    .at(locate_key(&source, "name")),
            );
        }
        for t in &tables {
            if !log_tables.iter().any(|l| &l.name == t) {
                let names: Vec<&str> = log_tables.iter().map(|l| l.name.as_str()).collect();
                let hint = closest(t, &names)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                errors.push(
                    ConfigError::new(
                        &file,
                        format!("table `{t}` has no schema in schemas/{hint}"),
                    )
                    .at(locate_key(&source, "tables").or(locate_key(&source, "log_sources"))),
                );
            }
        }
        let alert = raw.alert.unwrap_or_default();
        let threshold = alert.threshold.unwrap_or(1);
        if threshold == 0 {
            errors.push(
                ConfigError::new(&file, "alert.threshold must be at least 1")
                    .at(locate_key(&source, "threshold")),
            );
        }
        let window = alert
            .deduplication_window_minutes
            .unwrap_or(DEFAULT_DEDUPE_WINDOW_MINUTES);
        if window == 0 {
            errors.push(
                ConfigError::new(
                    &file,
                    "alert.deduplication_window_minutes must be at least 1",
                )
                .at(locate_key(&source, "deduplication_window_minutes")),
            );
        }
        // Absent: the project's default destinations; `[]`: none.
        let destinations = alert
            .destinations
            .unwrap_or_else(|| delivery.default_destinations.clone());
        for name in &destinations {
            if let Some(message) = destinations::unknown_destination(name, delivery) {
                errors.push(
                    ConfigError::new(&file, format!("alert.destinations: {message}"))
                        .at(locate_text_after(&source, "destinations", name)),
                );
            }
        }
        if detections.iter().any(|d| d.name == raw.name) {
            errors.push(
                ConfigError::new(&file, format!("detection `{}` is defined twice", raw.name))
                    .at(locate_key(&source, "name")),
            );
        }
        if errors.len() > before {
            continue;
        }
        let Some(logic) = logic else { continue };
        detections.push(DetectionDef {
            name: raw.name,
            dir: dir.clone(),
            file,
            script,
            logic,
            display_name: raw.display_name,
            description: raw.description,
            enabled: raw.enabled.unwrap_or(true),
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
        });
    }
    detections
}

/// Python (`detect.py`, optional `filter:`) or SQL (`query:` with
/// `dedupe:`/`title:` templates); mixing the two is an error.
fn detection_logic(
    raw: &RawDetection,
    file: &Path,
    source: &str,
    script: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<RuleLogic> {
    let before = errors.len();
    let Some(query) = &raw.query else {
        if !script.exists() {
            errors.push(ConfigError::new(
                script,
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
        return (errors.len() == before).then_some(RuleLogic::Python { filter });
    };
    if script.exists() {
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
    (errors.len() == before).then_some(RuleLogic::Sql {
        query,
        dedupe,
        title,
    })
}

/// Where the value of the top-level `key:` begins in `source`.
fn sql_text(source: &str, key: &str, text: &str) -> SqlText {
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

impl Severity {
    pub const ALL: [Severity; 6] = [
        Severity::Info,
        Severity::Notice,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        let lower = s.trim().to_ascii_lowercase();
        Severity::ALL.into_iter().find(|v| v.as_str() == lower)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
