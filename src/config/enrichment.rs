//! `enrichment/<table>/enrichment.yml`: a table's schema, lookup keys,
//! source options and format (rows or a MaxMind DB).

use super::error::{ConfigError, Diagnostics, Scope};
use super::locate::{locate_key, locate_text};
use super::log_table::check_unique_names;
use super::read::{read_components, OneOrMany};
use super::{DATA_EXTENSIONS, MMDB_EXTENSION};
use crate::files::{display_path, format_of};
use crate::schema::{Field, FieldType, TableSchema};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// Selectors written on the table (as Panther's lookup tables do):
    /// which fields of which log tables look this table up before rules run.
    pub enrich: Option<Vec<super::log_table::RawSelector>>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrichmentSchema {
    pub primary_key: Option<String>,
    pub fields: Vec<Field>,
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
    /// `enrich:` of enrichment.yml: here `table` names a log table; checked
    /// (and turned into that log table's selectors) with the log tables.
    pub enrich: Vec<super::log_table::EnrichEntry>,
    /// One object the table is read from whole by `enrichment sync` (a
    /// Panther lookup table's `Refresh.ObjectPath`): a dynamic table whose
    /// columns are inferred from the data, as Panther's managed schemas are
    /// not in the repository.
    pub refresh: Option<String>,
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

    /// This table with the columns its data turned out to have (a table
    /// whose schema is inferred: see [`EnrichmentDef::refresh`]); `cidr`
    /// makes the first lookup key match IP ranges.
    #[must_use]
    pub fn with_columns(&self, fields: Vec<Field>, cidr: bool) -> Self {
        let mut def = self.clone();
        def.schema = TableSchema::new(fields);
        if let Some(key) = def.lookup_keys.first_mut() {
            key.matching = if cidr {
                KeyMatch::Cidr
            } else {
                KeyMatch::Exact
            };
        }
        def
    }
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

pub(super) fn load_enrichment(root: &Path, errors: &mut Diagnostics) -> Vec<EnrichmentDef> {
    let mut tables: Vec<EnrichmentDef> = Vec::new();
    let section = root.join("enrichment");
    for (dir, file, raw, source) in
        read_components::<RawEnrichment>(&section, "enrichment.yml", "table", &|_| false, errors)
    {
        let folder = TableFolder {
            dir: &dir,
            file: &file,
            data_files: find_data_files(&dir),
        };
        if let Some(def) = validate_enrichment(raw, folder, source, errors) {
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

/// What a table folder holds, found before validation so validation does no I/O.
pub(super) struct TableFolder<'a> {
    pub dir: &'a Path,
    pub file: &'a Path,
    /// Data files beside enrichment.yml ([`find_data_files`]).
    pub data_files: Vec<PathBuf>,
}

/// `raw` (the text `source` of `folder.file`) → a validated table, or its
/// errors in `errors`.
pub(super) fn validate_enrichment(
    raw: RawEnrichment,
    folder: TableFolder<'_>,
    source: String,
    errors: &mut Diagnostics,
) -> Option<EnrichmentDef> {
    let mut errors = errors.scope();
    let doc = Doc {
        file: folder.file,
        source: &source,
    };
    if !is_identifier(&raw.name) {
        errors.push(doc.error(
            format!(
                "table name `{}` must be a Python identifier (letters, digits, _)",
                raw.name
            ),
            "name",
        ));
    }
    if raw.format == Some(RawTableFormat::Mmdb) {
        return validate_mmdb(raw, folder, source, &mut errors);
    }
    let Some(raw_schema) = raw.schema else {
        errors.push(doc.error(
            "missing `schema` (the table's fields; only `format: mmdb` tables go without)",
            "name",
        ));
        return None;
    };
    check_unique_names(&raw_schema.fields, doc.file, doc.source, &mut errors);
    let schema = TableSchema::new(raw_schema.fields);
    let raw_keys = with_primary_key(
        raw.lookup_keys.unwrap_or_default(),
        raw_schema.primary_key.as_deref(),
        &schema,
        &doc,
        &mut errors,
    );
    let lookup_keys = lookup_keys(raw_keys, &schema, &doc, &mut errors);
    let list_delimiter = list_delimiter(raw.list_delimiter.as_deref(), &doc, &mut errors);
    let source_options = source_options(raw.source.unwrap_or_default(), &schema, &doc, &mut errors);
    let kind = enrichment_kind(raw.enrichment_type);
    check_data_files(
        &folder.data_files,
        kind,
        &raw.name,
        &schema,
        &doc,
        &mut errors,
    );
    if !errors.is_clean() {
        return None;
    }
    Some(EnrichmentDef {
        description: raw.description,
        name: raw.name,
        dir: folder.dir.to_path_buf(),
        file: folder.file.to_path_buf(),
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
        data_files: folder.data_files,
        definition: source,
        enrich: raw
            .enrich
            .into_iter()
            .flatten()
            .map(super::log_table::EnrichEntry::from)
            .collect(),
        refresh: None,
    })
}

/// The YAML file being validated and its text, to locate errors in.
struct Doc<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Doc<'_> {
    /// An error at the YAML key `key` (or unlocated when the key is absent).
    fn error(&self, message: impl Into<String>, key: &str) -> ConfigError {
        ConfigError::new(self.file, message).at(locate_key(self.source, key))
    }

    /// The line of lookup key `name` within `lookup_keys:`, else that section.
    fn lookup_key_position(&self, name: &str) -> Option<(usize, usize)> {
        let section = locate_key(self.source, "lookup_keys");
        let start = section.map(|(l, _)| l).unwrap_or(1);
        self.source
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
    }

    fn key_error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, message).at(self.lookup_key_position(name))
    }
}

fn raw_key_name(key: &RawLookupKey) -> &str {
    match key {
        RawLookupKey::Name(n) => n,
        RawLookupKey::Spec(s) => &s.name,
    }
}

/// The declared lookup keys, with the primary key first unless it is one of them.
fn with_primary_key(
    mut raw_keys: Vec<RawLookupKey>,
    primary_key: Option<&str>,
    schema: &TableSchema,
    doc: &Doc<'_>,
    errors: &mut Diagnostics,
) -> Vec<RawLookupKey> {
    if let Some(pk) = primary_key {
        if schema.field(pk).is_none() {
            // Reported once, here, not again as a lookup key.
            errors.push(doc.error(
                unknown_column_message("primary_key", pk, schema),
                "primary_key",
            ));
        } else if !raw_keys.iter().any(|k| raw_key_name(k) == pk) {
            raw_keys.insert(0, RawLookupKey::Name(pk.to_string()));
        }
    }
    if raw_keys.is_empty() && primary_key.is_none() {
        errors.push(doc.error(
            "table has no lookup key: set schema.primary_key or lookup_keys",
            "schema",
        ));
    }
    raw_keys
}

/// Every valid lookup key; the others are errors.
fn lookup_keys(
    raw_keys: Vec<RawLookupKey>,
    schema: &TableSchema,
    doc: &Doc<'_>,
    errors: &mut Diagnostics,
) -> Vec<LookupKey> {
    let mut keys: Vec<LookupKey> = Vec::new();
    for raw_key in raw_keys {
        let Some(key) = lookup_key(raw_key, doc, errors) else {
            continue;
        };
        if keys.iter().any(|k| k.name == key.name) {
            errors.push(doc.key_error(
                &key.name,
                format!("lookup key `{}` is defined twice", key.name),
            ));
            continue;
        }
        if key_columns_ok(&key, schema, doc, errors) {
            keys.push(key);
        }
    }
    keys
}

fn lookup_key(raw_key: RawLookupKey, doc: &Doc<'_>, errors: &mut Diagnostics) -> Option<LookupKey> {
    Some(match raw_key {
        RawLookupKey::Name(name) => LookupKey {
            columns: vec![name.clone()],
            name,
            matching: KeyMatch::Exact,
            case_sensitive: true,
        },
        RawLookupKey::Spec(spec) => {
            let columns = match (spec.column, spec.columns) {
                (Some(_), Some(_)) => {
                    errors.push(doc.key_error(
                        &spec.name,
                        format!(
                            "lookup key `{}`: set `column` or `columns`, not both",
                            spec.name
                        ),
                    ));
                    return None;
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
    })
}

/// Whether every column of `key` exists and has a key type.
fn key_columns_ok(
    key: &LookupKey,
    schema: &TableSchema,
    doc: &Doc<'_>,
    errors: &mut Diagnostics,
) -> bool {
    let mut ok = true;
    if key.columns.is_empty() {
        errors.push(doc.key_error(
            &key.name,
            format!("lookup key `{}` has an empty `columns` list", key.name),
        ));
        ok = false;
    }
    for column in &key.columns {
        let field_type = schema.field(column).map(|f| &f.field_type);
        let message = match field_type {
            None if *column == key.name => {
                Some(unknown_column_message("lookup key", column, schema))
            }
            None => Some(unknown_column_message(
                &format!("lookup key `{}`: column", key.name),
                column,
                schema,
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
        if key.matching == KeyMatch::Cidr && message.is_none() {
            let is_string = match field_type {
                Some(FieldType::String) => true,
                Some(FieldType::List(e)) => **e == FieldType::String,
                _ => false,
            };
            if !is_string || key.is_composite() {
                errors.push(doc.key_error(
                    &key.name,
                    format!(
                        "lookup key `{}`: `match: cidr` needs one string column (or list of strings) of CIDRs or IPs",
                        key.name
                    ),
                ));
                ok = false;
            }
        }
        if let Some(message) = message {
            errors.push(doc.key_error(&key.name, message));
            ok = false;
        }
    }
    ok
}

fn list_delimiter(raw: Option<&str>, doc: &Doc<'_>, errors: &mut Diagnostics) -> char {
    match raw {
        None => ';',
        Some(d) if d.chars().count() == 1 => d.chars().next().unwrap_or(';'),
        Some(d) => {
            errors.push(doc.error(
                format!("list_delimiter must be one character, got {d:?}"),
                "list_delimiter",
            ));
            ';'
        }
    }
}

/// `source:` → how data files are read.
fn source_options(
    raw: RawSource,
    schema: &TableSchema,
    doc: &Doc<'_>,
    errors: &mut Diagnostics,
) -> SourceOptions {
    let mut options = SourceOptions {
        records: match raw.records {
            None => Vec::new(),
            Some(OneOrMany::One(r)) => vec![r],
            Some(OneOrMany::Many(rs)) => rs,
        },
        comment: None,
        has_header: raw.has_header.unwrap_or(true),
        columns: raw.columns,
        rename: raw.rename.unwrap_or_default().into_iter().collect(),
    };
    match raw.comment.as_deref() {
        None => {}
        Some(c) if c.len() == 1 && c.is_ascii() => options.comment = Some(c.as_bytes()[0]),
        Some(c) => errors.push(doc.error(
            format!("source.comment must be one ASCII character, got {c:?}"),
            "comment",
        )),
    }
    if !options.has_header && options.columns.is_none() {
        errors.push(doc.error(
            "source.has_header is false, so source.columns must name the columns",
            "has_header",
        ));
    }
    if options.records.iter().any(|r| r.trim().is_empty()) {
        errors.push(doc.error(
            "source.records must name the array holding the rows (a dotted path)",
            "records",
        ));
    }
    for (from, to) in &options.rename {
        if schema.field(to).is_none() {
            errors.push(
                ConfigError::new(
                    doc.file,
                    unknown_column_message(&format!("source.rename of `{from}` to"), to, schema),
                )
                .at(locate_text(doc.source, from).or(locate_key(doc.source, "rename"))),
            );
        }
    }
    options
}

/// The data files fit the table: no MaxMind DB in a row table, at least one
/// for a static table, one field for text files.
fn check_data_files(
    data_files: &[PathBuf],
    kind: EnrichmentKind,
    name: &str,
    schema: &TableSchema,
    doc: &Doc<'_>,
    errors: &mut Diagnostics,
) {
    if let Some(mmdb) = data_files.iter().find(|p| format_of(p) == MMDB_EXTENSION) {
        errors.push(ConfigError::new(
            doc.file,
            format!(
                "{} is a MaxMind DB: set `format: mmdb` to make this a GeoIP table",
                display_path(mmdb)
            ),
        ));
    }
    if kind == EnrichmentKind::Static && data_files.is_empty() {
        errors.push(ConfigError::new(
            doc.file,
            format!(
                "static table `{name}` has no data file next to it (expected data.jsonl, data.json, data.csv, data.txt or data.parquet, optionally .gz)"
            ),
        ));
    }
    let text_files = data_files.iter().any(|p| {
        let n = p.to_string_lossy();
        n.ends_with(".txt") || n.ends_with(".txt.gz")
    });
    if text_files && schema.fields.len() != 1 {
        errors.push(ConfigError::new(
            doc.file,
            "text data files hold one value per line, so the table must declare exactly one field",
        ));
    }
}

pub(super) fn enrichment_kind(raw: Option<RawEnrichmentType>) -> EnrichmentKind {
    match raw.unwrap_or(RawEnrichmentType::Static) {
        RawEnrichmentType::Static => EnrichmentKind::Static,
        RawEnrichmentType::Dynamic => EnrichmentKind::Dynamic,
    }
}

/// A `format: mmdb` table: one MaxMind DB file (static) or uploaded
/// databases (dynamic, overwrite only); no schema, no row-format options.
pub(super) fn validate_mmdb(
    raw: RawEnrichment,
    folder: TableFolder<'_>,
    source: String,
    errors: &mut Scope<'_>,
) -> Option<EnrichmentDef> {
    let file = folder.file;
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
    let data_files = folder.data_files;
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
    if !errors.is_clean() {
        return None;
    }
    Some(EnrichmentDef {
        description: raw.description,
        name: raw.name,
        dir: folder.dir.to_path_buf(),
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
        enrich: raw
            .enrich
            .into_iter()
            .flatten()
            .map(super::log_table::EnrichEntry::from)
            .collect(),
        refresh: None,
    })
}

pub(super) fn unknown_column_message(what: &str, name: &str, schema: &TableSchema) -> String {
    let names = schema.names();
    let hint = crate::suggest::did_you_mean(name, &names);
    format!("{what} `{name}` is not a field of the schema{hint}")
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(yaml: &str, data_files: &[&str]) -> (Option<EnrichmentDef>, Vec<ConfigError>) {
        let raw: RawEnrichment = serde_yaml::from_str(yaml).unwrap();
        // Nothing here exists on disk: validation reads only what it is given.
        let folder = TableFolder {
            dir: Path::new("/nonexistent/t"),
            file: Path::new("/nonexistent/t/enrichment.yml"),
            data_files: data_files.iter().map(PathBuf::from).collect(),
        };
        let mut errors = Diagnostics::default();
        let def = validate_enrichment(raw, folder, yaml.to_string(), &mut errors);
        (def, errors.into_vec())
    }

    const TABLE: &str = "name: t\nschema:\n  primary_key: ip\n  fields:\n    - { name: ip, type: string }\n    - { name: tags, type: { type: list, element: string } }\nlookup_keys:\n  - { name: by_tag, column: tags, case_sensitive: false }\n";

    #[test]
    fn a_valid_table_gets_its_keys_with_the_primary_key_first() {
        let (def, errors) = validate(TABLE, &["/nonexistent/t/data.csv"]);
        assert!(errors.is_empty(), "{errors:?}");
        let def = def.unwrap();
        let keys: Vec<&str> = def.lookup_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["ip", "by_tag"]);
        assert!(!def.lookup_keys[1].case_sensitive);
    }

    #[test]
    fn a_static_table_without_data_files_is_an_error() {
        let (def, errors) = validate(TABLE, &[]);
        assert!(def.is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0]
            .message
            .starts_with("static table `t` has no data file"));
    }
}
