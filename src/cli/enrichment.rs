//! `ravenwatch enrichment …`: sync, upload, list, show and get, one
//! function each.

use super::args::{EnrichmentCommand, Format, GlobalArgs, Outcome};
use super::context::{load_project, open_storage, open_uploads};
use crate::config::{EnrichmentKind, Project, TableFormat};
use crate::enrichment::{
    composite_key, load_files, sync_tables, upload_key, EnrichmentTable, SyncOptions, SyncOutcome,
};
use crate::storage::Storage;
use crate::text::count;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::sync::Arc;

pub(super) fn enrichment(global: &GlobalArgs, cmd: EnrichmentCommand) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    match cmd {
        EnrichmentCommand::Sync { tables, force } => {
            sync(global, &project, storage.as_ref(), &tables, force)
        }
        EnrichmentCommand::Upload { table, files } => upload(global, &project, &table, &files),
        EnrichmentCommand::List => list(&project, storage.as_ref()),
        EnrichmentCommand::Show {
            table,
            limit,
            format,
        } => show(&project, storage.as_ref(), &table, limit, format),
        EnrichmentCommand::Get {
            table,
            key,
            index_key,
            all,
            select,
        } => {
            let lookup = Lookup {
                table: &table,
                key: &key,
                index_key: index_key.as_deref(),
                all,
                select: &select,
            };
            get(&project, storage.as_ref(), &lookup)
        }
    }
}

fn sync(
    global: &GlobalArgs,
    project: &Project,
    storage: &dyn Storage,
    tables: &[String],
    force: bool,
) -> Result<Outcome> {
    for name in tables {
        if project.enrichment_table(name).is_none() {
            bail!(
                "no enrichment table `{name}` (tables: {})",
                table_names(project)
            );
        }
    }
    let needs_uploads = project.enrichment.iter().any(|d| {
        d.kind == EnrichmentKind::Dynamic
            && d.refresh.is_none()
            && (tables.is_empty() || tables.contains(&d.name))
    });
    let uploads = if needs_uploads {
        Some(open_uploads(global, project)?)
    } else {
        None
    };
    let options = SyncOptions {
        only: tables,
        force,
        uploads: uploads.as_deref(),
        refresh: true,
    };
    let (report, _) = sync_tables(project, storage, &options);
    let refreshed = |name: &str| {
        project
            .enrichment_table(name)
            .is_some_and(|d| d.refresh.is_some())
    };
    let mut failed = false;
    for (name, outcome) in &report.outcomes {
        match outcome {
            SyncOutcome::Ingested {
                rows,
                snapshot_id,
                uploads,
            } if refreshed(name) => println!(
                "{name}: read {}, table has {} (snapshot {snapshot_id})",
                uploads.join(", "),
                count(*rows as u64, "row")
            ),
            SyncOutcome::Ingested {
                rows,
                snapshot_id,
                uploads,
            } => {
                println!(
                    "{name}: ingested {}, table has {} (snapshot {snapshot_id})",
                    count(uploads.len() as u64, "upload"),
                    count(*rows as u64, "row")
                );
                for u in uploads {
                    println!("  {u}");
                }
            }
            SyncOutcome::Loaded { rows, snapshot_id } => {
                println!(
                    "{name}: loaded {} (snapshot {snapshot_id})",
                    count(*rows as u64, "row")
                )
            }
            SyncOutcome::Unchanged { rows } => {
                println!("{name}: unchanged ({})", count(*rows as u64, "row"))
            }
            SyncOutcome::Skipped => {
                println!("{name}: dynamic table, changes only through uploads")
            }
            SyncOutcome::Failed(e) => {
                failed = true;
                eprintln!("{name}: FAILED, previous snapshot kept\n{e}");
            }
        }
    }
    Ok(if failed {
        Outcome::Failed
    } else {
        Outcome::Done
    })
}

fn list(project: &Project, storage: &dyn Storage) -> Result<Outcome> {
    let (report, tables) = sync_tables(project, storage, &SyncOptions::default());
    report_failures(&report);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<12} {:>9}  {:<28} SNAPSHOT",
        "TABLE", "TYPE", "ROWS", "KEYS"
    )?;
    for def in &project.enrichment {
        let kind = match (def.kind, def.format) {
            _ if def.refresh.is_some() => "refreshed",
            (EnrichmentKind::Static, TableFormat::Rows) => "static",
            (EnrichmentKind::Dynamic, TableFormat::Rows) => "dynamic",
            (EnrichmentKind::Static, TableFormat::Mmdb) => "static mmdb",
            (EnrichmentKind::Dynamic, TableFormat::Mmdb) => "dynamic mmdb",
        };
        let keys = def
            .lookup_keys
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let (rows, snapshot) = match tables.get(&def.name) {
            Some(t) => (
                t.len().to_string(),
                t.manifest
                    .as_ref()
                    .map(|m| m.snapshot_id.clone())
                    .unwrap_or_default(),
            ),
            None => ("-".into(), "(none)".into()),
        };
        writeln!(
            out,
            "{:<24} {:<12} {:>9}  {:<28} {}",
            def.name, kind, rows, keys, snapshot
        )?;
    }
    Ok(Outcome::Done)
}

fn show(
    project: &Project,
    storage: &dyn Storage,
    table: &str,
    limit: usize,
    format: Format,
) -> Result<Outcome> {
    let t = current_table(project, storage, table)?;
    if let Some(geo) = t.geo() {
        let built = chrono::DateTime::from_timestamp(geo.build_epoch() as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default();
        println!(
            "MaxMind DB `{}`: {} search-tree nodes, built {built}; look addresses up with `ravenwatch enrichment get {table} IP`",
            geo.database_type(),
            geo.node_count()
        );
        return Ok(Outcome::Done);
    }
    let n = limit.min(t.len());
    match format {
        Format::Table => {
            let shown = arrow::util::pretty::pretty_format_batches(&[t.batch.slice(0, n)])?;
            println!("{shown}");
            println!("{} of {} rows", n, t.len());
        }
        Format::Json => {
            let mut out = std::io::stdout().lock();
            for row in 0..n {
                writeln!(out, "{}", serde_json::Value::Object(t.row_json(row)))?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// `enrichment get`'s arguments.
struct Lookup<'a> {
    table: &'a str,
    key: &'a [String],
    index_key: Option<&'a str>,
    all: bool,
    select: &'a [String],
}

fn get(project: &Project, storage: &dyn Storage, lookup: &Lookup<'_>) -> Result<Outcome> {
    let Lookup {
        table,
        key,
        index_key,
        all,
        select,
    } = *lookup;
    let t = current_table(project, storage, table)?;
    for column in select {
        if !t.is_mmdb() && t.batch.column_by_name(column).is_none() {
            bail!("table `{table}` has no column `{column}`");
        }
    }
    let text = composite_key(key);
    let found = if all {
        t.find_all(&text, index_key)?
    } else {
        t.find(&text, index_key)?.into_iter().collect()
    };
    if found.is_empty() {
        eprintln!("no row in `{table}` for key {}", key.join(" "));
        return Ok(Outcome::Failed);
    }
    for mut json in found.iter().map(|hit| t.hit_json(hit)) {
        if let (false, serde_json::Value::Object(map)) = (select.is_empty(), &mut json) {
            map.retain(|k, _| select.contains(k));
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(Outcome::Done)
}

fn table_names(project: &Project) -> String {
    project
        .enrichment
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn report_failures(report: &crate::enrichment::SyncReport) {
    for (name, e) in report.failures() {
        eprintln!("warning: {name}: sync failed, using the previous snapshot\n{e}");
    }
}

/// Validates every file against the table's schema, then puts them under
/// `<uploads>/<table>/` (named `<UTC time>-<file>` so they sort by upload
/// time). One bad file refuses them all, so a half-uploaded batch never
/// reaches `sync`.
fn upload(
    global: &GlobalArgs,
    project: &Project,
    table: &str,
    files: &[std::path::PathBuf],
) -> Result<Outcome> {
    let Some(def) = project.enrichment_table(table) else {
        bail!(
            "no enrichment table `{table}` (tables: {})",
            table_names(project)
        );
    };
    if def.kind != EnrichmentKind::Dynamic {
        bail!(
            "table `{table}` is static: its data comes from files in {}; only dynamic tables take uploads",
            crate::files::display_path(&def.dir)
        );
    }
    let mut failed = false;
    for file in files {
        if !file.is_file() {
            eprintln!("{}: no such file", file.display());
            failed = true;
            continue;
        }
        match load_files(def, std::slice::from_ref(file)) {
            Ok(batch) => println!(
                "{}: ok, {}",
                file.display(),
                count(batch.num_rows() as u64, "row")
            ),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("nothing uploaded");
        return Ok(Outcome::Failed);
    }
    let uploads = open_uploads(global, project)?;
    let now = chrono::Utc::now();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let key = upload_key(table, &name, now);
        uploads.put_file(&key, file)?;
        println!("uploaded {}", uploads.url(&key));
    }
    println!("next: ravenwatch enrichment sync {table}");
    Ok(Outcome::Done)
}

fn current_table(
    project: &Project,
    storage: &dyn Storage,
    name: &str,
) -> Result<Arc<EnrichmentTable>> {
    if project.enrichment_table(name).is_none() {
        bail!(
            "no enrichment table `{name}` (tables: {})",
            table_names(project)
        );
    }
    let only = [name.to_string()];
    let options = SyncOptions {
        only: &only,
        ..Default::default()
    };
    let (report, tables) = sync_tables(project, storage, &options);
    report_failures(&report);
    tables
        .get(name)
        .cloned()
        .with_context(|| format!("table `{name}` has no snapshot"))
}
