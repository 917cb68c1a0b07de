use super::{Cli, Command, EnrichmentCommand, Format, GlobalArgs, Outcome};
use crate::config::{EnrichmentKind, Project, TableFormat};
use crate::engine::{self, EngineError, RunOptions};
use crate::enrichment::{
    composite_key, load_files, sync_tables, EnrichmentTable, SyncOptions, SyncOutcome, Tables,
};
use crate::python::{self, PythonError, PythonRuntime};
use crate::query::{OutputFormat, QueryError, QueryOptions, SqlDetections};
use crate::storage::{self, LocalStorage, Storage};
use crate::testing;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::sync::Arc;

pub fn dispatch(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Init { dir } => super::init::init(&dir),
        Command::Validate => validate(&cli.global),
        Command::Test {
            rules,
            keyword,
            format,
            junit,
        } => test(&cli.global, rules, keyword, format, junit),
        Command::Enrichment(cmd) => enrichment(&cli.global, cmd),
        Command::Query {
            sql,
            inputs,
            table,
            run,
            format,
        } => query(
            &cli.global,
            QueryOptions {
                sql,
                inputs,
                table,
                run,
                partitions: std::thread::available_parallelism().map_or(1, usize::from),
            },
            format,
        ),
        Command::Run {
            inputs,
            table,
            output,
            show,
            refresh_seconds,
            no_deliver,
        } => run(
            &cli.global,
            RunOptions {
                inputs,
                table,
                output: None,
                progress: true,
                refresh_interval: Some(std::time::Duration::from_secs(refresh_seconds)),
                deliver: !no_deliver,
            },
            output,
            show,
        ),
        Command::Deliver { run, list } => deliver(&cli.global, run, list),
    }
}

/// `ravenwatch deliver`: sends what is pending; exit 3 if some stays.
fn deliver(global: &GlobalArgs, run: Option<String>, list: bool) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    if list {
        let stored = crate::delivery::StoredState::load(storage.as_ref())?;
        let mut out = std::io::stdout().lock();
        for (id, entry, name, target) in stored.owed() {
            writeln!(
                out,
                "  {name} {} alert {id} ({} matches, queued by run {}){}",
                entry.rule,
                entry.match_count,
                entry.run_id,
                target
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {} failed attempt(s), last: {e}", target.failures))
                    .unwrap_or_default()
            )?;
        }
        writeln!(out, "{} pending", stored.pending())?;
        return Ok(Outcome::Done);
    }
    let settings = &project.settings.delivery;
    if settings.destinations.is_empty() {
        println!("no destinations in ravenwatch.yml: nothing to deliver");
        return Ok(Outcome::Done);
    }
    if let Some(run) = &run {
        match crate::delivery::requeue_run(storage.as_ref(), settings, run) {
            Ok(_) => {}
            Err(e @ crate::delivery::DeliveryError::UnknownRun { .. }) => {
                eprintln!("error: {e}");
                return Ok(Outcome::Usage);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let report = crate::delivery::deliver_pending(storage.as_ref(), settings, run.as_deref())?;
    let mut out = std::io::stdout().lock();
    print_delivery(&mut out, &report)?;
    Ok(if report.incomplete() {
        Outcome::DoneWithErrors
    } else {
        Outcome::Done
    })
}

fn print_delivery(out: &mut impl Write, report: &crate::delivery::DeliveryReport) -> Result<()> {
    for s in &report.sent {
        writeln!(
            out,
            "  {} {} {} alert {} ({} matches){}",
            if s.update { "updated" } else { "sent" },
            s.destination,
            s.rule,
            s.alert_id,
            s.match_count,
            s.reference
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )?;
    }
    for f in &report.failures {
        writeln!(
            out,
            "  pending {} alert {}: {}",
            f.destination, f.alert_id, f.error
        )?;
    }
    for p in &report.problems {
        writeln!(out, "  error: {p}")?;
    }
    writeln!(
        out,
        "deliveries: {} sent, {} updated, {} pending",
        report.delivered, report.updated, report.pending
    )?;
    Ok(())
}

/// `ravenwatch query`: exit 0 with the result, 3 when some log lines could
/// not be read (reported on stderr), 1 for SQL that does not plan or run.
fn query(global: &GlobalArgs, options: QueryOptions, format: OutputFormat) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let result = match crate::query::run_query(&project, storage.as_ref(), &options) {
        Ok(r) => r,
        Err(QueryError::Sql(e)) => {
            eprintln!("error: SQL {e}");
            return Ok(Outcome::Failed);
        }
        Err(QueryError::Usage(message)) => {
            eprintln!("error: {message}");
            return Ok(Outcome::Usage);
        }
        Err(e) => return Err(e.into()),
    };
    for warning in &result.warnings {
        eprintln!("warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    crate::query::write_result(&result, format, &mut out)?;
    out.flush()?;
    Ok(if result.warnings.is_empty() {
        Outcome::Done
    } else {
        Outcome::DoneWithErrors
    })
}

fn load_project(global: &GlobalArgs) -> Result<Project> {
    Project::load(&global.project).map_err(|errors| anyhow::anyhow!("{errors}"))
}

/// Opens `location` (`what` names it in errors) and checks it is usable,
/// so a bad bucket or credentials fail before any work.
fn open_checked(project: &Project, location: &str, what: &str) -> Result<Arc<dyn Storage>> {
    let opened = storage::open(location, &project.root, &project.settings.aws)
        .with_context(|| format!("cannot open {what} `{location}`"))?;
    opened.check()?;
    Ok(opened)
}

fn storage_location<'a>(global: &'a GlobalArgs, project: &'a Project) -> &'a str {
    global
        .storage
        .as_deref()
        .unwrap_or(&project.settings.storage)
}

fn open_storage(global: &GlobalArgs, project: &Project) -> Result<Arc<dyn Storage>> {
    open_checked(project, storage_location(global, project), "storage")
}

/// Where dynamic tables' uploads live: `enrichment_uploads`, else
/// `<storage>/uploads`.
fn open_uploads(global: &GlobalArgs, project: &Project) -> Result<Arc<dyn Storage>> {
    let location = match &project.settings.enrichment_uploads {
        Some(l) => l.clone(),
        None => {
            let storage = storage_location(global, project);
            if storage.starts_with("s3://") {
                format!("{}/uploads", storage.trim_end_matches('/'))
            } else {
                std::path::Path::new(storage)
                    .join("uploads")
                    .display()
                    .to_string()
            }
        }
    };
    open_checked(project, &location, "the uploads location")
}

/// Every problem in the project at once: configuration, static table data,
/// detections (imports, `detect`, function signatures, enrichment imports)
/// and test files.
fn validate(global: &GlobalArgs) -> Result<Outcome> {
    let (project, config_errors) = Project::load_partial(&global.project);
    let mut problems: Vec<String> = config_errors.iter().map(ToString::to_string).collect();

    let mut tables = Tables::new();
    for def in &project.enrichment {
        let loaded = if def.kind == EnrichmentKind::Dynamic {
            EnrichmentTable::empty(def)
        } else {
            match load_files(def, &def.data_files) {
                Ok(batch) => EnrichmentTable::build(def, batch, None),
                Err(e) => {
                    problems.extend(e.errors.iter().map(|r| format!("{r}")));
                    // Detections importing the table are still checked.
                    EnrichmentTable::empty(def)
                }
            }
        };
        match loaded {
            Ok(t) => {
                tables.insert(def.name.clone(), Arc::new(t));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }

    let known: Vec<&str> = project.enrichment.iter().map(|t| t.name.as_str()).collect();
    // Tables whose enrichment.yml has errors (already reported): imports of
    // them are not reported again.
    let broken: Vec<String> = std::fs::read_dir(project.root.join("enrichment"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("enrichment.yml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(&n.as_str()))
        .collect();
    let mut scripts: Vec<std::path::PathBuf> = project
        .detections
        .iter()
        .filter(|d| !d.is_sql())
        .map(|d| d.script.clone())
        .collect();
    scripts.extend(python_files(&project.detection_lib_dir()));
    let mut import_errors = python::unknown_table_imports(&scripts, &known);
    import_errors.retain(|e| {
        !broken.iter().any(|b| {
            e.message
                .starts_with(&format!("imports enrichment table `{b}`,"))
        })
    });
    let flagged: std::collections::HashSet<&str> =
        import_errors.iter().map(|e| e.file.as_str()).collect();
    let mut load_errors = Vec::new();
    let rules: Vec<_> = project.detections.iter().filter(|d| !d.is_sql()).collect();
    match PythonRuntime::new(&project.detection_lib_dir(), &tables, &rules) {
        Ok(_) => {}
        Err(PythonError::Load(errors)) => load_errors = errors,
        Err(e) => problems.push(e.to_string()),
    }
    // The static check already names every unknown table of a flagged file,
    // and broken tables have their own errors.
    load_errors.retain(|e| {
        let about_table = e.message.starts_with("ImportError: enrichment table");
        let broken_table = broken.iter().any(|b| {
            e.message
                .starts_with(&format!("ImportError: enrichment table '{b}'"))
        });
        !(about_table && (flagged.contains(e.file.as_str()) || broken_table))
    });
    problems.extend(import_errors.iter().map(ToString::to_string));
    problems.extend(load_errors.iter().map(ToString::to_string));
    // Queries and filters are planned against each log table's schema and
    // the tables' data, exactly as `run` plans them.
    for log in &project.log_tables {
        let rules: Vec<_> = project
            .detections
            .iter()
            .filter(|d| d.tables.contains(&log.name))
            .collect();
        if let Err(errors) = SqlDetections::new(&rules, log, &tables) {
            problems.extend(errors.iter().map(ToString::to_string));
        }
    }

    let mut cases = 0;
    for def in &project.detections {
        let (found, errors) = testing::load_cases(&project, def);
        cases += found.len();
        problems.extend(errors.iter().map(ToString::to_string));
    }

    if problems.is_empty() {
        println!(
            "ok: {} log table(s), {} enrichment table(s), {} detection(s), {} test case(s)",
            project.log_tables.len(),
            project.enrichment.len(),
            project.detections.len(),
            cases
        );
        Ok(Outcome::Done)
    } else {
        for p in &problems {
            println!("{p}");
        }
        println!(
            "{} error{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        Ok(Outcome::Failed)
    }
}

/// `.py` files under `dir`, recursively, in name order.
fn python_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                out.extend(python_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
    out
}

fn test(
    global: &GlobalArgs,
    rules: Vec<String>,
    keyword: Option<String>,
    format: Format,
    junit: Option<std::path::PathBuf>,
) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let selection = testing::Selection { rules, keyword };
    let report = match testing::run_tests(&project, storage.as_ref(), &selection) {
        Ok(r) => r,
        Err(testing::TestError::Usage(message)) => {
            eprintln!("error: {message}");
            return Ok(Outcome::Usage);
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => testing::write_human(&report, &mut out)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &testing::json_report(&report))?;
            writeln!(out)?;
        }
    }
    if let Some(path) = junit {
        std::fs::write(&path, testing::junit_xml(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.ok() {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}

fn enrichment(global: &GlobalArgs, cmd: EnrichmentCommand) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    match cmd {
        EnrichmentCommand::Sync { tables, force } => {
            for name in &tables {
                if project.enrichment_table(name).is_none() {
                    bail!(
                        "no enrichment table `{name}` (tables: {})",
                        table_names(&project)
                    );
                }
            }
            let needs_uploads = project.enrichment.iter().any(|d| {
                d.kind == EnrichmentKind::Dynamic && (tables.is_empty() || tables.contains(&d.name))
            });
            let uploads = if needs_uploads {
                Some(open_uploads(global, &project)?)
            } else {
                None
            };
            let options = SyncOptions {
                only: &tables,
                force,
                uploads: uploads.as_deref(),
            };
            let (report, _) = sync_tables(&project, storage.as_ref(), &options);
            let mut failed = false;
            for (name, outcome) in &report.outcomes {
                match outcome {
                    SyncOutcome::Ingested {
                        rows,
                        snapshot_id,
                        uploads,
                    } => {
                        println!(
                            "{name}: ingested {} upload(s), table has {rows} rows (snapshot {snapshot_id})",
                            uploads.len()
                        );
                        for u in uploads {
                            println!("  {u}");
                        }
                    }
                    SyncOutcome::Loaded { rows, snapshot_id } => {
                        println!("{name}: loaded {rows} rows (snapshot {snapshot_id})")
                    }
                    SyncOutcome::Unchanged { rows } => println!("{name}: unchanged ({rows} rows)"),
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
        EnrichmentCommand::Upload { table, files } => upload(global, &project, &table, &files),
        EnrichmentCommand::List => {
            let (report, tables) = sync_tables(&project, storage.as_ref(), &SyncOptions::default());
            report_failures(&report);
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<24} {:<12} {:>9}  {:<28} SNAPSHOT",
                "TABLE", "TYPE", "ROWS", "KEYS"
            )?;
            for def in &project.enrichment {
                let kind = match (def.kind, def.format) {
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
        EnrichmentCommand::Show {
            table,
            limit,
            format,
        } => {
            let t = current_table(&project, storage.as_ref(), &table)?;
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
        EnrichmentCommand::Get {
            table,
            key,
            index_key,
            all,
            select,
        } => {
            let t = current_table(&project, storage.as_ref(), &table)?;
            for column in &select {
                if !t.is_mmdb() && t.batch.column_by_name(column).is_none() {
                    bail!("table `{table}` has no column `{column}`");
                }
            }
            let text = composite_key(&key);
            let found = if all {
                t.find_all(&text, index_key.as_deref())?
            } else {
                t.find(&text, index_key.as_deref())?.into_iter().collect()
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
    }
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
            crate::config::display_path(&def.dir)
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
            Ok(batch) => println!("{}: ok, {} rows", file.display(), batch.num_rows()),
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
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let key = storage::key(&[table, &format!("{stamp}-{name}")]);
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

fn run(
    global: &GlobalArgs,
    mut options: RunOptions,
    output: Option<String>,
    show: usize,
) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let output = match output {
        None => None,
        Some(location) if location.starts_with("s3://") => {
            Some(open_checked(&project, &location, "output")?)
        }
        Some(dir) => Some(Arc::new(LocalStorage::new(dir)) as Arc<dyn Storage>),
    };
    options.output = output;
    let report = match engine::run(&project, storage, options) {
        Ok(r) => r,
        Err(EngineError::Usage(message)) => {
            eprintln!("error: {message}");
            return Ok(Outcome::Usage);
        }
        Err(e) => return Err(e.into()),
    };
    let s = &report.summary;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} events, {} rule(s), {:.2}s ({:.0} events/s)",
        s.events,
        s.rules.len(),
        s.seconds,
        s.events_per_second
    )?;
    writeln!(
        out,
        "{} rule matches -> {} alerts ({} activated), {} errors",
        s.rule_matches, s.alerts, s.activated_alerts, s.errors
    )?;
    let activated: Vec<_> = report.alerts.iter().filter(|a| a.activated).collect();
    for a in activated.iter().take(show) {
        writeln!(
            out,
            "  {:<8} {:<34} {} (x{}, dedupe {})",
            a.severity.as_str().to_uppercase(),
            a.rule,
            a.title,
            a.match_count,
            a.dedupe
        )?;
    }
    if activated.len() > show {
        writeln!(out, "  … {} more activated alerts", activated.len() - show)?;
    }
    // Delivery failures are listed with the deliveries below.
    let shown = report
        .errors
        .iter()
        .filter(|e| !(e.kind == "delivery" && e.function.is_none()));
    for e in shown.take(3) {
        writeln!(
            out,
            "  error: {} {}",
            e.source.as_deref().unwrap_or(""),
            e.error
        )?;
    }
    if let Some(delivery) = &s.delivery {
        print_delivery(&mut out, delivery)?;
    }
    writeln!(out, "outputs: {}", report.output_location)?;
    let delivery_incomplete = s.delivery.as_ref().is_some_and(|d| d.incomplete());
    Ok(if report.errors.is_empty() && !delivery_incomplete {
        Outcome::Done
    } else {
        Outcome::DoneWithErrors
    })
}
