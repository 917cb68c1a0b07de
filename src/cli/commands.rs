use super::args::{Cli, Command, Format, GlobalArgs, Outcome};
use super::context::{load_project, open_checked, open_storage};
use crate::alerts::ErrorKind;
use crate::config::Project;
use crate::engine::{self, EngineError, RunOptions};
use crate::query::{OutputFormat, QueryError, QueryOptions};
use crate::storage::{LocalStorage, Storage};
use crate::testing;
use crate::text::{count, count_as, rounded, thousands};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;

pub fn dispatch(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Init { dir, schema } => super::init::init(&dir, schema),
        Command::Validate => validate(&cli.global),
        Command::Bench { args } => Ok(super::bench::bench(&args)),
        Command::Test {
            rules,
            keyword,
            format,
            junit,
        } => test(&cli.global, rules, keyword, format, junit),
        Command::Enrichment(cmd) => super::enrichment::enrichment(&cli.global, cmd),
        Command::Query {
            sql,
            mut inputs,
            table,
            run,
            format,
        } => query(
            &cli.global,
            QueryOptions {
                sql: match statement(sql, &mut inputs) {
                    Some(sql) => sql,
                    None => {
                        eprintln!(
                            "error: query needs one SQL statement, e.g. ravenwatch query \"SELECT * FROM alerts\""
                        );
                        return Ok(Outcome::Usage);
                    }
                },
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
            workers,
            no_auto_filter,
            verify_filters,
            reprocess,
            follow,
            every,
        } => {
            let options = RunOptions {
                inputs,
                listed: None,
                table,
                output: None,
                progress: true,
                refresh_interval: Some(std::time::Duration::from_secs(refresh_seconds)),
                deliver: !no_deliver,
                workers: workers.map_or_else(
                    || std::thread::available_parallelism().map_or(1, usize::from),
                    usize::from,
                ),
                worker_command: None,
                shown_alerts: show,
                auto_filter: !no_auto_filter,
                verify_filters,
                reprocess,
                max_inputs: None,
                defer_grouping: false,
                stop: None,
            };
            if follow {
                super::follow::follow(&cli.global, options, &every)
            } else {
                run(&cli.global, options, output)
            }
        }
        Command::Explain {
            rules,
            inputs,
            table,
        } => super::explain::explain(&cli.global, &rules, &inputs, table.as_deref()),
        Command::Deliver { run, list } => deliver(&cli.global, run, list),
        Command::Gc { dry_run } => gc(&cli.global, dry_run),
        Command::Worker {
            queue,
            visibility_seconds,
            max_messages,
            until_empty,
            workers,
            no_deliver,
            grouping,
        } => super::queue::consume(
            &cli.global,
            &super::queue::QueueOptions {
                url: queue,
                visibility: std::time::Duration::from_secs(visibility_seconds),
                max_messages: usize::from(max_messages),
                until_empty,
                workers: workers.map(usize::from),
                deliver: !no_deliver,
                settle: grouping.settle(),
                group_queue: grouping.group_queue,
                shards: grouping.shards,
            },
        ),
        Command::Lambda { workers, grouping } => {
            super::lambda::serve(&cli.global, workers.map(usize::from), &grouping)
        }
        Command::PythonWorker { socket } => {
            let project = super::context::load_project(&cli.global)?;
            crate::engine::serve_worker(&project, &socket)?;
            Ok(Outcome::Done)
        }
    }
}

/// The SQL of `query`: the positional argument, or, when `--input`'s values
/// came first and took it (`query --input logs/ "SELECT …"`), its last value
/// if that names no file, folder or S3 prefix. `None`: no statement at all.
fn statement(sql: Option<String>, inputs: &mut Vec<String>) -> Option<String> {
    if sql.is_some() {
        return sql;
    }
    match inputs.last() {
        Some(last) if !last.starts_with("s3://") && !std::path::Path::new(last).exists() => {
            inputs.pop()
        }
        _ => None,
    }
}

/// `ravenwatch deliver`: sends what is pending; exit 3 if some stays.
fn gc(global: &GlobalArgs, dry_run: bool) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let report = crate::engine::gc(storage.as_ref(), !dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = std::io::stdout().lock();
    for id in &report.runs {
        writeln!(out, "  {verb} run {id} (stopped before its commit)")?;
    }
    for key in &report.snapshots {
        writeln!(out, "  {verb} {} (no manifest names it)", storage.url(key))?;
    }
    for path in &report.leftovers {
        writeln!(
            out,
            "  {verb} {path} (left by a process that no longer runs)"
        )?;
    }
    writeln!(
        out,
        "{verb} {} uncommitted run(s), {} orphan snapshot file(s), {} leftover file(s)",
        report.runs.len(),
        report.snapshots.len(),
        report.leftovers.len()
    )?;
    Ok(Outcome::Done)
}

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
        let Some(outputs) = crate::query::run_output(&project, storage.as_ref(), run)? else {
            eprintln!("error: the outputs of run `{run}` were replaced by a later run written to the same place");
            return Ok(Outcome::Usage);
        };
        match crate::delivery::requeue_run(storage.as_ref(), &outputs, settings) {
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
    // Only the tables the statement names are synced and loaded.
    let parsed = match crate::query::Parsed::new(&options.sql) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: SQL {e}");
            return Ok(Outcome::Failed);
        }
    };
    let named = parsed.tables();
    let wanted: Vec<String> = project
        .enrichment
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| named.as_ref().is_none_or(|named| named.contains(n)))
        .collect();
    let (tables, sync_errors) = if wanted.is_empty() {
        (crate::enrichment::Tables::new(), Vec::new())
    } else {
        engine::prepare_some_tables(&project, storage.as_ref(), &wanted)
    };
    let warnings = sync_errors
        .iter()
        .map(|e| {
            format!(
                "{}: {} (the previous snapshot is used)",
                e.source.as_deref().unwrap_or("enrichment"),
                e.error
            )
        })
        .collect();
    let result = match crate::query::run_query(
        &project,
        storage.as_ref(),
        &tables,
        warnings,
        &options,
        &parsed,
    ) {
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

fn panther_dir(global: &GlobalArgs) -> bool {
    super::context::is_panther_dir(&global.project)
}

/// Every problem in the project at once: configuration, static table data,
/// detections (imports, `detect`, function signatures, enrichment imports)
/// and test files.
fn validate(global: &GlobalArgs) -> Result<Outcome> {
    if panther_dir(global) {
        let dir = crate::panther::discover(&global.project);
        for p in &dir.problems {
            println!("{p}");
        }
        if dir.problems.is_empty() {
            let tests: usize = dir.rules.iter().map(|r| r.tests.len()).sum();
            println!(
                "ok: {} (Panther format), {}, {}, {}",
                count(dir.rules.len() as u64, "rule"),
                count(dir.globals.len() as u64, "global helper"),
                count(dir.data_models.len() as u64, "data model"),
                count(tests as u64, "test")
            );
            return Ok(Outcome::Done);
        }
        let n = dir.problems.len() as u64;
        println!("{} found", count(n, "error"));
        return Ok(Outcome::Failed);
    }
    super::context::require_project(&global.project)?;
    let checked = crate::validate::validate(&global.project);
    let project = &checked.project;
    for w in &checked.warnings {
        println!("warning: {w}");
    }
    if checked.problems.is_empty() {
        println!(
            "ok: {}, {}, {}, {}",
            count(project.log_tables.len() as u64, "log table"),
            count(project.enrichment.len() as u64, "enrichment table"),
            count(project.detections.len() as u64, "detection"),
            count(checked.test_cases as u64, "test case")
        );
        return Ok(Outcome::Done);
    }
    for p in &checked.problems {
        println!("{p}");
    }
    let n = checked.problems.len();
    println!("{n} error{} found", if n == 1 { "" } else { "s" });
    Ok(Outcome::Failed)
}

fn test(
    global: &GlobalArgs,
    rules: Vec<String>,
    keyword: Option<String>,
    format: Format,
    junit: Option<std::path::PathBuf>,
) -> Result<Outcome> {
    let selection = testing::Selection { rules, keyword };
    let report = if panther_dir(global) {
        crate::panther::run_tests(&global.project, &selection)
    } else {
        let project = load_project(global)?;
        let storage = open_storage(global, &project)?;
        testing::run_tests(&project, storage.as_ref(), &selection)
    };
    let report = match report {
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

/// Panther lookup tables refreshed from S3 that `enrichment sync` never
/// read are empty: say so rather than let their selectors find nothing.
fn note_unread_lookups(project: &Project, storage: &dyn Storage) {
    let unread: Vec<String> = project
        .enrichment
        .iter()
        .filter_map(|d| Some((d, d.refresh.as_ref()?)))
        .filter(|(d, _)| matches!(crate::enrichment::read_manifest(storage, &d.name), Ok(None)))
        .map(|(d, url)| format!("{} ({url})", d.name))
        .collect();
    if !unread.is_empty() {
        eprintln!(
            "note: {} not read yet, so empty: {}; `ravenwatch enrichment sync` reads them (schedule it as often as their PeriodMinutes)",
            count(unread.len() as u64, "refreshed lookup table"),
            unread.join(", ")
        );
    }
}

fn run(global: &GlobalArgs, mut options: RunOptions, output: Option<String>) -> Result<Outcome> {
    let project = load_project(global)?;
    if options.table.is_none() {
        options.table = global
            .log_types
            .first()
            .map(|t| crate::config::log_table_name(t));
    }
    if let Some(support) = project.panther.as_ref().filter(|s| !s.skipped.is_empty()) {
        let shown: Vec<String> = support
            .skipped
            .iter()
            .take(3)
            .map(|(rule, why)| format!("{rule} ({why})"))
            .collect();
        let more = support.skipped.len().saturating_sub(shown.len());
        eprintln!(
            "note: {} left out: {}{}",
            count(support.skipped.len() as u64, "Panther item"),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    let storage = open_storage(global, &project)?;
    note_unread_lookups(&project, storage.as_ref());
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
    if s.inputs_skipped > 0 {
        writeln!(
            out,
            "{} already processed, skipped; --reprocess to run {} again",
            count(s.inputs_skipped, "input"),
            if s.inputs_skipped == 1 { "it" } else { "them" }
        )?;
    }
    writeln!(
        out,
        "{}, {}, {:.2}s ({} events/s)",
        count(s.events, "event"),
        count(s.rules.len() as u64, "rule"),
        s.seconds,
        rounded(s.events_per_second)
    )?;
    writeln!(
        out,
        "{} -> {} ({} activated), {}",
        count_as(s.rule_matches, "rule match", "rule matches"),
        count(s.alerts, "alert"),
        thousands(s.activated_alerts),
        count(s.errors, "error")
    )?;
    for a in &report.alerts {
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
    let shown = report.alerts.len() as u64;
    if s.activated_alerts > shown {
        writeln!(
            out,
            "  … {} more (every alert is in the outputs)",
            thousands(s.activated_alerts - shown)
        )?;
    }
    // Delivery failures are listed with the deliveries below.
    let shown = report
        .errors
        .iter()
        .filter(|e| !(e.kind == ErrorKind::Delivery && e.function.is_none()));
    // Problems after the outputs were final are in no file: always shown.
    for e in shown.take(3).chain(&report.unrecorded) {
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
    if s.filter_violations > 0 {
        writeln!(
            out,
            "verify-filters: derived filters dropped {} that a rule matched or raised on (see errors.jsonl)",
            count(s.filter_violations, "event")
        )?;
        return Ok(Outcome::Failed);
    }
    Ok(if report.errors.is_empty() && !delivery_incomplete {
        Outcome::Done
    } else {
        Outcome::DoneWithErrors
    })
}
