//! `schemas/<table>.yml`: a log table's fields, its event-time field and
//! its `enrich:` selectors (checked against the enrichment tables).

use super::error::{ConfigError, Diagnostics};
use super::locate::{locate_key, locate_text, locate_text_after};
use super::read::{read_yaml, OneOrMany};
use super::EnrichmentDef;
use crate::schema::{Field, FieldType, TableSchema};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Clone, Deserialize)]
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

/// One `enrich:` entry of an enrichment.yml: `fields` of log table
/// `log_table` looked up in the enrichment table that declares it.
#[derive(Debug, Clone)]
pub struct EnrichEntry {
    pub log_table: String,
    pub fields: OneOrMany,
    pub key: Option<String>,
}

impl From<RawSelector> for EnrichEntry {
    fn from(raw: RawSelector) -> Self {
        Self {
            log_table: raw.table,
            fields: raw.fields,
            key: raw.key,
        }
    }
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

pub(super) fn check_unique_names(
    fields: &[crate::schema::Field],
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
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

pub(super) fn load_log_tables(
    root: &Path,
    enrichment: &[EnrichmentDef],
    errors: &mut Diagnostics,
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
        let mut enrich: Vec<Selector> = raw
            .enrich
            .unwrap_or_default()
            .into_iter()
            .filter_map(|sel| log_selector(sel, &schema, enrichment, &file, &source, errors))
            .collect();
        // Selectors written on enrichment tables, naming this log table.
        for def in enrichment {
            for entry in def.enrich.iter().filter(|e| e.log_table == raw.name) {
                let raw = RawSelector {
                    table: def.name.clone(),
                    fields: entry.fields.clone(),
                    key: entry.key.clone(),
                };
                enrich.extend(log_selector(
                    raw,
                    &schema,
                    enrichment,
                    &def.file,
                    &def.definition,
                    errors,
                ));
            }
        }
        tables.push(LogTable {
            name: raw.name,
            description: raw.description,
            file,
            timestamp,
            schema,
            enrich,
        });
    }
    check_enrich_targets(enrichment, &tables, errors);
    tables
}

/// Every log table an enrichment.yml's `enrich:` names exists.
fn check_enrich_targets(
    enrichment: &[EnrichmentDef],
    tables: &[LogTable],
    errors: &mut Diagnostics,
) {
    for def in enrichment {
        for entry in &def.enrich {
            if !tables.iter().any(|t| t.name == entry.log_table) {
                let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
                let hint = crate::suggest::did_you_mean(&entry.log_table, &names);
                errors.push(
                    ConfigError::new(
                        &def.file,
                        format!(
                            "enrich: no log table `{}` in schemas/{hint}",
                            entry.log_table
                        ),
                    )
                    .at(locate_text_after(
                        &def.definition,
                        "enrich",
                        &entry.log_table,
                    )),
                );
            }
        }
    }
}

/// A selector whose fields are declared lookup-able fields of the log
/// table and whose table and key exist (an absent key means the table's
/// first); a bad one is dropped with an error at its line.
pub(super) fn log_selector(
    raw: RawSelector,
    schema: &TableSchema,
    enrichment: &[EnrichmentDef],
    file: &Path,
    source: &str,
    errors: &mut Diagnostics,
) -> Option<Selector> {
    let fields = match raw.fields {
        OneOrMany::One(f) => vec![f],
        OneOrMany::Many(fs) => fs,
    };
    let mut errors = errors.scope();
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
            // Undeclared: decoded as a column of whatever type it holds,
            // unless a declared field above it cannot hold members.
            None => scalar_prefix(schema, field).map(|(prefix, ty)| {
                format!("goes through `{prefix}`, which is declared as {}", ty.describe())
            }),
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
        let hint = crate::suggest::did_you_mean(&raw.table, &names);
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
        Some(k) => (errors.is_clean()).then(|| Selector {
            key: k.name.clone(),
            table: raw.table,
            fields,
        }),
    }
}

/// The longest declared proper prefix of `path` whose type is not a struct.
fn scalar_prefix<'a>(schema: &'a TableSchema, path: &str) -> Option<(String, &'a FieldType)> {
    let parts: Vec<&str> = path.split('.').collect();
    (1..parts.len()).find_map(|n| {
        let prefix = parts[..n].join(".");
        match resolve_path(schema, &prefix) {
            Some(FieldType::Struct(_)) | None => None,
            Some(ty) => Some((prefix, ty)),
        }
    })
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
