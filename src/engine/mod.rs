//! A detection run, as a list of named steps: plan the rules, read and
//! evaluate every batch, group matches into alerts, commit the outputs and
//! the alert state, then deliver.
//!
//! Reading and decoding happen on a second thread (`pipeline`); Python
//! rules run in worker processes (`workers`, `worker`, `wire`), so
//! decoding, SQL and Python use every core. Matches wait on disk until
//! grouping (`spool`). Nothing persistent is written until every input is
//! processed: outputs first, alert state last, so a failed run leaves the
//! previous state intact.

mod collect;
mod gc;
mod kv;
mod output;
mod pipeline;
mod shards;
mod spool;
mod wire;
mod worker;
mod workers;

pub use collect::{collect_outcomes, sql_outcomes};
pub use gc::{gc, GcReport};
pub use output::{remove_outputs, rewrite_after_delivery, RuleSummary, Summary, OUTPUT_FILES};
pub use shards::{
    enable as enable_sharding, grouping, lost_race, merge, pending, Grouping, Merged, Settle,
};
pub use worker::serve as serve_worker;
pub use workers::WorkerCommand;

use crate::alerts::{commit_state_file, write_state, Alert, AlertGrouper, AlertState, InputRecord};
use crate::alerts::{ErrorKind, ErrorRecord, RuleSettings, StateError, StateVersion, STATE_KEY};
use crate::config::{ConfigErrors, DetectionDef, LogTable, Project};
use crate::enrichment::{
    sync_tables, EnrichmentError, Generation, SyncOptions, TableWatcher, Tables,
};
use crate::logs::{expand_inputs, EventBatch, EventReader, Input, LogError, ReadItem};
use crate::python::PythonError;
use crate::query::{run_incomplete_key, run_location_key, AutoFilter, RunPlan};
use crate::storage::{Storage, StorageError};
use kv::{RunKv, KV_ENV};
use output::{write_outputs, RunOutputs};
use pipeline::{evaluate_batch, python_selections, spawn_reader, BatchPreparer};
use shards::{finish_round, input_names, round_state, Round};
use spool::{AlertSpool, MatchSpool, RunAlerts};
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use workers::WorkerPool;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Logs(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Usage(String),
    /// A Python worker died on the same batch twice.
    #[error("{0}")]
    Worker(String),
    #[error("internal error (likely a bug): {0}")]
    Internal(String),
}

/// What to run on.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub inputs: Vec<String>,
    /// Inputs already listed (`--follow` lists through its cursors): read
    /// these instead of expanding `inputs`.
    pub listed: Option<Vec<Input>>,
    /// Log table of the inputs; optional when the project has one schema.
    pub table: Option<String>,
    /// Output location; `None` means `<storage>/runs/<run id>/`.
    pub output: Option<Arc<dyn Storage>>,
    pub progress: bool,
    /// How often to look for newer table snapshots between batches
    /// (`Some(0)`: before every batch; `None`: never).
    pub refresh_interval: Option<std::time::Duration>,
    /// Send pending deliveries after the run (they are queued either way).
    pub deliver: bool,
    /// Python worker processes (at least 1).
    pub workers: usize,
    /// How to start a worker; `None`: this executable.
    pub worker_command: Option<PathBuf>,
    /// How many activated alerts the report carries for the terminal.
    pub shown_alerts: usize,
    /// Derive pre-filters from the rules' code (`--no-auto-filter`: off).
    pub auto_filter: bool,
    /// Send what derived filters drop to `detect()` anyway and fail the run
    /// if a rule matches or raises on any of it (`--verify-filters`).
    pub verify_filters: bool,
    /// Read inputs the ledger says a committed run already processed
    /// (`--reprocess`); by default they are skipped.
    pub reprocess: bool,
    /// Read at most this many new inputs (in input order: oldest first for
    /// date-ordered keys); the rest wait for the next run (`--follow`).
    pub max_inputs: Option<usize>,
    /// Sharded grouping: leave the round's batches for the shards' merges
    /// (workers) instead of merging them at once (`run`).
    pub defer_grouping: bool,
    /// Once set, the run starts no further input and commits those read
    /// (`run --follow` on SIGTERM); the others stay new for the next run.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The result of a completed run.
#[derive(Debug)]
pub struct RunReport {
    pub summary: Summary,
    /// The activated alerts to show first (at most
    /// [`RunOptions::shown_alerts`]): most severe, most matched, most recent;
    /// every alert is in the outputs.
    pub alerts: Vec<Alert>,
    pub errors: Vec<ErrorRecord>,
    /// Problems met after the outputs were final (they could not be updated),
    /// so they are in no file: the caller must show them.
    pub unrecorded: Vec<ErrorRecord>,
    /// Where the outputs were written.
    pub output_location: String,
    /// Sharded grouping with `defer_grouping`: the shards the round left
    /// batches for (to merge).
    pub batches: Vec<u32>,
}

/// Syncs changed static tables and loads every table's current snapshot;
/// sync failures become error records (the previous snapshot is used).
pub fn prepare_tables(project: &Project, storage: &dyn Storage) -> (Tables, Vec<ErrorRecord>) {
    prepare_some_tables(project, storage, &[])
}

/// [`prepare_tables`] for the tables named `only` (every table when empty).
pub fn prepare_some_tables(
    project: &Project,
    storage: &dyn Storage,
    only: &[String],
) -> (Tables, Vec<ErrorRecord>) {
    let options = SyncOptions {
        only,
        ..SyncOptions::default()
    };
    let (report, tables) = sync_tables(project, storage, &options);
    let errors = report
        .failures()
        .map(|(table, e)| enrichment_error(table, e))
        .collect();
    (tables, errors)
}

fn enrichment_error(table: &str, e: &EnrichmentError) -> ErrorRecord {
    ErrorRecord {
        kind: ErrorKind::Enrichment,
        rule: None,
        function: None,
        source: Some(format!("enrichment/{table}")),
        error: e.to_string(),
        traceback: None,
    }
}

/// Runs every enabled detection of `table` over the inputs.
///
/// # Errors
/// Anything that prevents a complete run (missing input, a detection that
/// does not load, storage failures); nothing is written in that case.
pub fn run(
    project: &Project,
    storage: Arc<dyn Storage>,
    options: RunOptions,
) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let table = project
        .log_table_for(options.table.as_deref())
        .map_err(EngineError::Usage)?;
    let inputs = match options.listed.clone() {
        Some(listed) => listed,
        None => expand(project, &options.inputs)?,
    };
    let grouping = grouping(storage.as_ref())?;
    let (state, state_version) = load_state(storage.as_ref(), grouping)?;
    let now = chrono::Utc::now();
    let run_id = run_id(now, grouping.is_some());
    let Selected {
        inputs,
        mut ledger,
        skipped,
    } = select_inputs(
        storage.as_ref(),
        inputs,
        &state,
        &run_id,
        (options.reprocess, options.max_inputs),
    )?;
    let kv = RunKv::prepare(project, storage.as_ref(), &state)?;
    let names = grouping.map(|_| input_names(&inputs)).unwrap_or_default();
    let (tables, mut errors) = prepare_tables(project, storage.as_ref());
    let plan = plan_rules(project, table, &tables, &options)?;
    let rules: Vec<DetectionDef> = plan.rules().iter().map(|r| r.def.clone()).collect();
    let python_rules = plan.python_rules().into_iter().cloned().collect::<Vec<_>>();
    let generation = Arc::new(Generation {
        id: 0,
        tables: tables.clone(),
    });
    let kv_env = kv.iter().map(|k| (KV_ENV.to_string(), k.path.clone()));
    let pool = start_workers(
        project,
        (table, &python_rules),
        &generation,
        kv_env.collect(),
        &options,
    )?;

    let mut summary = new_summary(run_id, skipped, &rules);
    let watcher = TableWatcher::new(
        project.enrichment.clone(),
        Arc::clone(&storage),
        tables.clone(),
        options.refresh_interval.unwrap_or(std::time::Duration::MAX),
    );
    let decoded = run_read_paths(project, table, &python_rules, &plan);
    let preparer = BatchPreparer::new(watcher, plan, table);
    let mut matches = MatchSpool::new().map_err(|e| spool_error(&e))?;
    let reader = EventReader::with_read_paths(table, &decoded).stopping_on(options.stop.clone());
    let given: Vec<Input> = if options.stop.is_some() {
        inputs.clone()
    } else {
        Vec::new()
    };
    let (preparer, read) = read_and_evaluate(
        reader,
        inputs,
        preparer,
        &rules,
        pool,
        options.progress,
        (&mut summary, &mut matches, &mut errors),
    )?;
    record_reader_state(preparer, &rules, &mut summary, &mut errors);
    // Stopped early: the inputs not started are not recorded, so the next
    // run reads them.
    for unread in given.iter().skip(read) {
        summary.inputs_left += 1;
        if let Some((location, _)) = unread.stamp() {
            ledger.remove(&location);
        }
    }
    if let Some(grouping) = grouping {
        let round = Round {
            grouping,
            summary,
            matches,
            errors,
            ledger,
            names,
            kv,
            kv_version: state_version,
            started,
        };
        return finish_round(project, &storage, &options, round);
    }

    // The state carries this run's ledger entries (its journal); the
    // previous journal went out as markers when the state was loaded.
    let all_inputs = ledger;
    let ending = Ending {
        rules: &rules,
        state,
        matches,
        summary,
        errors,
        started,
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        output: options.output.as_ref(),
        shown: options.shown_alerts,
        deliver: options.deliver,
        commit: StateCommit {
            key: STATE_KEY,
            version: &state_version,
            inputs: &all_inputs,
            applied: &BTreeMap::new(),
            kv: kv.as_ref(),
        },
    };
    group_commit_deliver(project, &storage, ending, || {})
}

/// The end every grouping shares (a run's, a shard's merge): what it
/// groups, over which state, and where that state goes.
struct Ending<'a> {
    rules: &'a [DetectionDef],
    state: AlertState,
    matches: MatchSpool,
    summary: Summary,
    errors: Vec<ErrorRecord>,
    started: Instant,
    created_at: String,
    output: Option<&'a Arc<dyn Storage>>,
    shown: usize,
    deliver: bool,
    commit: StateCommit<'a>,
}

/// Matches → alerts continuing the state, outputs, the state commit
/// (`committed` runs right after it), then delivery.
fn group_commit_deliver(
    project: &Project,
    storage: &Arc<dyn Storage>,
    ending: Ending<'_>,
    committed: impl FnOnce(),
) -> Result<RunReport, EngineError> {
    let match_count = ending.matches.len();
    let grouped = group_alerts(
        ending.rules,
        ending.state,
        ending.created_at,
        ending.matches,
    )?;
    let seen = look_over(&grouped.alerts, project, ending.shown)?;
    let mut errors = ending.errors;
    errors.extend(seen.unknown_destinations);
    let mut summary = ending.summary;
    finish_summary(
        &mut summary,
        match_count,
        &grouped.alerts,
        &errors,
        ending.started,
    );
    summary.activated_alerts = seen.activated;
    let target = OutputTarget::new(storage, ending.output, &summary.run_id);
    let outputs = RunOutputs {
        alerts: &grouped.alerts,
        matches: grouped.matches.path(),
        errors: &errors,
        summary: &summary,
    };
    commit(
        storage.as_ref(),
        &target,
        &outputs,
        &grouped,
        &ending.commit,
    )?;
    committed();
    let unrecorded = deliver(
        project,
        storage.as_ref(),
        &target,
        &seen.routed,
        &mut summary,
        &mut errors,
        ending.deliver,
    );
    Ok(RunReport {
        summary,
        alerts: seen.shown,
        errors,
        unrecorded,
        output_location: target.location(),
        batches: Vec::new(),
    })
}

/// A run's summary before it reads anything: every rule listed.
fn new_summary(run_id: String, skipped: u64, rules: &[DetectionDef]) -> Summary {
    let mut summary = Summary {
        run_id,
        inputs_skipped: skipped,
        ..Default::default()
    };
    for rule in rules {
        summary
            .rules
            .entry(rule.name.clone())
            .or_default()
            .sql_plans = u64::from(rule.is_sql());
    }
    summary
}

/// The state a run continues: `state/alerts.json` (repaired after a kill;
/// its ledger journal written out as markers), or with sharded grouping
/// the caching store's pointer (whose version a round commits over).
fn load_state(
    storage: &dyn Storage,
    grouping: Option<Grouping>,
) -> Result<(AlertState, StateVersion), EngineError> {
    match grouping {
        None => {
            let loaded = AlertState::load(storage)?;
            repair_last_commit(storage, &loaded.0)?;
            // The last commit's journal goes out as markers before this
            // run's commit replaces it (a state of an older version holds
            // the whole ledger: it goes out once).
            crate::alerts::write_markers(storage, &loaded.0.inputs)?;
            Ok(loaded)
        }
        Some(_) => round_state(storage),
    }
}

/// A run's id: its start time, and with sharded grouping (where several
/// workers start rounds at once) a few characters that tell them apart.
fn run_id(now: chrono::DateTime<chrono::Utc>, unique: bool) -> String {
    let time = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    if !unique {
        return time;
    }
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, std::process::id().to_le_bytes());
    sha2::Digest::update(&mut h, now.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
    sha2::Digest::update(
        &mut h,
        format!("{:?}", std::thread::current().id()).as_bytes(),
    );
    let digest = sha2::Digest::finalize(h);
    format!("{time}-{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2])
}

/// What a run reads of its inputs.
struct Selected {
    inputs: Vec<Input>,
    /// The ledger entries the run adds once committed: its new inputs, and
    /// new stamps of known inputs that were only touched or copied.
    ledger: BTreeMap<String, InputRecord>,
    /// Inputs a committed run already processed.
    skipped: u64,
}

/// The inputs to read: those the ledger (the journal of `state`, then the
/// markers) does not hold at the same version (all of them with
/// `reprocess`).
///
/// # Errors
/// A local input that cannot be read, a marker that cannot be read.
fn select_inputs(
    storage: &dyn Storage,
    inputs: Vec<Input>,
    state: &AlertState,
    run_id: &str,
    (reprocess, max_inputs): (bool, Option<usize>),
) -> Result<Selected, EngineError> {
    let mut keep = Vec::with_capacity(inputs.len());
    let mut ledger = BTreeMap::new();
    let mut skipped = 0;
    let stamped: Vec<(Input, Option<(String, String)>)> = inputs
        .into_iter()
        .map(|input| {
            let stamp = input.stamp();
            (input, stamp)
        })
        .collect();
    let locations: Vec<String> = stamped
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|(location, _)| location.clone()))
        .collect();
    let records = crate::alerts::ledger_known(storage, &state.inputs, &locations)?;
    for (input, stamp) in stamped {
        if max_inputs.is_some_and(|max| keep.len() >= max) {
            break;
        }
        let Some((location, stamp)) = stamp else {
            keep.push(input);
            continue;
        };
        let known = records.get(&location);
        if !reprocess && known.is_some_and(|r| r.stamp == stamp) {
            skipped += 1;
            continue;
        }
        // The stamp changed (or the ledger does not know it): the content
        // decides.
        let version = input.content_version()?;
        if let Some(record) = known.filter(|r| !reprocess && r.version == version) {
            // Touched or copied, not changed: remember the new stamp.
            let refreshed = InputRecord {
                stamp,
                ..record.clone()
            };
            ledger.insert(location, refreshed);
            skipped += 1;
            continue;
        }
        let record = InputRecord {
            version,
            stamp,
            run_id: run_id.to_string(),
        };
        ledger.insert(location, record);
        keep.push(input);
    }
    Ok(Selected {
        inputs: keep,
        ledger,
        skipped,
    })
}

/// The inputs `paths` name (files, folders, S3 prefixes, `-`); a path that
/// does not exist is a usage error.
///
/// # Errors
/// As [`expand_inputs`].
pub fn expand(project: &Project, paths: &[String]) -> Result<Vec<Input>, EngineError> {
    expand_inputs(paths, &project.settings.aws).map_err(|e| {
        if e.is_usage() {
            EngineError::Usage(e.to_string())
        } else {
            e.into()
        }
    })
}

/// What `run --follow` reads next: those of `inputs` no committed run
/// processed yet (by stamp: a touched file counts, and the run it starts
/// finds its content unchanged and remembers the new stamp). `seen` holds
/// the (location, stamp) of inputs an earlier poll found processed, which
/// need no ledger read; it is left holding those of this poll.
///
/// # Errors
/// An unreadable alert state, or an input with nothing to recognise it by
/// (standard input, a named pipe).
pub fn pending_inputs(
    storage: &dyn Storage,
    inputs: Vec<Input>,
    seen: &mut HashSet<(String, String)>,
) -> Result<Vec<Input>, EngineError> {
    let journal = match grouping(storage)? {
        None => AlertState::load(storage)?.0.inputs,
        Some(_) => BTreeMap::new(),
    };
    let mut stamped = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Some((location, stamp)) = input.stamp() else {
            return Err(EngineError::Usage(
                "--follow needs files, folders or S3 prefixes (standard input and named pipes cannot be polled)".into(),
            ));
        };
        stamped.push((input, location, stamp));
    }
    let locations: Vec<String> = stamped
        .iter()
        .filter(|(_, l, s)| !seen.contains(&(l.clone(), s.clone())))
        .map(|(_, l, _)| l.clone())
        .collect();
    let records = crate::alerts::ledger_known(storage, &journal, &locations)?;
    let mut pending = Vec::new();
    let mut processed = HashSet::new();
    for (input, location, stamp) in stamped {
        let key = (location, stamp);
        let done = seen.contains(&key) || records.get(&key.0).is_some_and(|r| r.stamp == key.1);
        if done {
            processed.insert(key);
        } else {
            pending.push(input);
        }
    }
    *seen = processed;
    Ok(pending)
}

/// The enabled rules of `table`, planned once; SQL problems abort the run
/// before any input is read.
fn plan_rules(
    project: &Project,
    table: &LogTable,
    tables: &Tables,
    options: &RunOptions,
) -> Result<RunPlan, EngineError> {
    let defs: Vec<&DetectionDef> = project
        .detections
        .iter()
        .filter(|d| d.enabled && d.tables.contains(&table.name))
        .collect();
    let lib_dir = project.detection_lib_dir();
    let auto = options.auto_filter.then_some(AutoFilter {
        lib_dir: &lib_dir,
        verify: options.verify_filters,
    });
    RunPlan::new(&defs, table, tables, auto).map_err(|e| EngineError::Config(ConfigErrors(e)))
}

/// The event paths the Python rules among `rules` (and the helpers under
/// `_lib`) read with literal keys, and the `enrich:` selector fields of
/// `table`: what the reader decodes as columns.
pub fn read_paths(project: &Project, table: &LogTable, rules: &[DetectionDef]) -> Vec<String> {
    let mut paths: Vec<String> = table
        .enrich
        .iter()
        .flat_map(|s| s.fields.iter().cloned())
        .collect();
    if rules.iter().any(|r| !r.is_sql()) {
        paths.extend(crate::python::read_paths(&project.python_sources(rules)));
    }
    paths
}

/// What `run` decodes as columns: [`read_paths`] of the native rules, and
/// of Panther rules only what their derived filters read (the rules
/// themselves parse the event's text, so any other column would be unused).
fn run_read_paths(
    project: &Project,
    table: &LogTable,
    rules: &[DetectionDef],
    plan: &RunPlan,
) -> Vec<String> {
    let native: Vec<DetectionDef> = rules
        .iter()
        .filter(|r| r.panther.is_none())
        .cloned()
        .collect();
    let mut paths = read_paths(project, table, &native);
    paths.extend(plan.derived_paths());
    paths.sort();
    paths.dedup();
    paths
}

/// Starts the Python workers with the run's rules loaded; none when the
/// run has no Python rule.
fn start_workers(
    project: &Project,
    (table, rules): (&LogTable, &[DetectionDef]),
    generation: &Arc<Generation>,
    env: Vec<(String, std::path::PathBuf)>,
    options: &RunOptions,
) -> Result<Option<WorkerPool>, EngineError> {
    if rules.is_empty() {
        return Ok(None);
    }
    let exe = match &options.worker_command {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| {
            EngineError::Internal(format!("cannot find this executable to start workers: {e}"))
        })?,
    };
    let builtin = project.panther.iter().flat_map(|s| s.builtin.iter());
    let command = WorkerCommand {
        exe,
        project: project.root.clone(),
        args: builtin
            .flat_map(|t| ["--log-type".to_string(), t.clone()])
            .collect(),
        env,
    };
    let names = rules.iter().map(|r| r.name.clone()).collect();
    WorkerPool::start(command, options.workers, &table.name, names, generation).map(Some)
}

/// A batch or a bad event, waiting for its turn to be collected.
enum Waiting {
    Error(ErrorRecord),
    Batch {
        seq: u64,
        batch: Arc<EventBatch>,
        results: Vec<crate::query::RuleBatch>,
        python: bool,
    },
}

/// Reads every input on the reader thread, hands each batch to the Python
/// workers and collects outcomes in input order; returns the reader
/// thread's state once the inputs are exhausted.
fn read_and_evaluate(
    reader: EventReader,
    inputs: Vec<crate::logs::Input>,
    preparer: BatchPreparer,
    rules: &[DetectionDef],
    mut pool: Option<WorkerPool>,
    progress: bool,
    (summary, spool, errors): (&mut Summary, &mut MatchSpool, &mut Vec<ErrorRecord>),
) -> Result<(BatchPreparer, usize), EngineError> {
    let mut matches = Vec::new();
    let python_rules = rules.iter().filter(|r| !r.is_sql()).count();
    let mut progress = Progress::new(progress, &inputs);
    // Python workers keep their cores busy; decoding takes the rest (at
    // least one thread), as more threads would only hold more batches.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let decoders = cores
        .saturating_sub(pool.as_ref().map_or(0, WorkerPool::size))
        .max(1);
    let (receiver, reader_thread) = spawn_reader(reader, inputs, preparer, decoders);
    let mut waiting = std::collections::VecDeque::new();
    let mut seq = 0;
    let mut collect = |waiting: &mut std::collections::VecDeque<Waiting>,
                       pool: &mut Option<WorkerPool>,
                       wait: bool|
     -> Result<(), EngineError> {
        while let Some(front) = waiting.front() {
            let ready = match front {
                Waiting::Error(_) => true,
                Waiting::Batch { seq, python, .. } => {
                    !python || wait || pool.as_ref().is_some_and(|p| p.is_done(*seq))
                }
            };
            if !ready {
                break;
            }
            match waiting.pop_front().expect("a front item") {
                Waiting::Error(record) => errors.push(record),
                Waiting::Batch {
                    seq,
                    batch,
                    results,
                    python,
                } => {
                    let outcomes = match (python, pool.as_mut()) {
                        (true, Some(pool)) => pool.outcomes(seq)?,
                        _ => Vec::new(),
                    };
                    evaluate_batch(
                        rules,
                        outcomes,
                        &batch,
                        results,
                        summary,
                        &mut matches,
                        errors,
                    );
                    spool
                        .extend(matches.drain(..))
                        .map_err(|e| spool_error(&e))?;
                    if let Some(progress) = progress.as_mut() {
                        progress.batch_done(&batch, summary, spool.len());
                    }
                }
            }
        }
        Ok(())
    };
    for (item, generation, results) in receiver {
        match item {
            // Returning drops the receiver, which stops the reader; nothing is written.
            ReadItem::Fatal(e) => return Err(EngineError::Storage(e)),
            ReadItem::Error(e) => waiting.push_back(Waiting::Error(ErrorRecord {
                kind: ErrorKind::Event,
                rule: None,
                function: None,
                source: Some(e.source),
                error: e.message,
                traceback: None,
            })),
            ReadItem::Batch(batch) => {
                let batch: Arc<EventBatch> = Arc::from(batch);
                seq += 1;
                let selections = python_selections(&results, python_rules);
                let python = selections
                    .iter()
                    .any(|s| s.as_ref().is_none_or(|r| !r.is_empty()));
                if let (true, Some(pool)) = (python, pool.as_mut()) {
                    pool.submit(seq, Arc::clone(&batch), generation, selections)?;
                }
                waiting.push_back(Waiting::Batch {
                    seq,
                    batch,
                    results,
                    python,
                });
            }
        }
        collect(&mut waiting, &mut pool, false)?;
    }
    collect(&mut waiting, &mut pool, true)?;
    if let Some(pool) = pool {
        pool.finish();
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    reader_thread
        .join()
        .map_err(|_| EngineError::Internal("the log reader thread panicked".into()))
}

/// What the reader thread learnt: re-plans, tables that failed to refresh,
/// the refreshes themselves.
fn record_reader_state(
    preparer: BatchPreparer,
    rules: &[DetectionDef],
    summary: &mut Summary,
    errors: &mut Vec<ErrorRecord>,
) {
    for rule in rules.iter().filter(|r| r.is_sql()) {
        if let Some(stats) = summary.rules.get_mut(&rule.name) {
            stats.sql_plans += preparer.replans;
        }
    }
    errors.extend(
        preparer
            .replan_errors
            .into_iter()
            .map(|message| ErrorRecord {
                kind: ErrorKind::Enrichment,
                rule: None,
                function: None,
                source: None,
                error: format!("{message} (the queries kept their previous plans)"),
                traceback: None,
            }),
    );
    errors.extend(
        preparer
            .watcher
            .errors
            .iter()
            .map(|(table, e)| enrichment_error(table, e)),
    );
    summary.table_refreshes = preparer.watcher.refreshes;
}

fn spool_error(e: &std::io::Error) -> EngineError {
    EngineError::Internal(format!(
        "a temporary file for the run's matches and alerts failed: {e}"
    ))
}

/// What grouping leaves: the run's alerts and the windows the state keeps
/// (both on disk), `matches.jsonl` as a temporary file, the watermark.
struct Grouped {
    alerts: RunAlerts,
    matches: tempfile::NamedTempFile,
    watermark_us: i64,
}

/// Matches → alerts, continuing the windows of `state`.
fn group_alerts(
    rules: &[DetectionDef],
    state: AlertState,
    created_at: String,
    matches: MatchSpool,
) -> Result<Grouped, EngineError> {
    let settings: HashMap<String, RuleSettings> = rules
        .iter()
        .map(|r| (r.name.clone(), RuleSettings::from(r)))
        .collect();
    // A state written before event times were bounded may carry a
    // watermark far in the future; it would drop every window.
    let mut state = state;
    state.watermark_us = state.watermark_us.min(
        chrono::Utc::now()
            .timestamp_micros()
            .saturating_add(crate::logs::FUTURE_SKEW_US),
    );
    let grouper = AlertGrouper::new(settings, state, created_at, matches.newest_us());
    let mut alerts = AlertSpool::new().map_err(|e| spool_error(&e))?;
    let (lines, watermark_us) = matches
        .group(grouper, &mut alerts)
        .map_err(|e| spool_error(&e))?;
    Ok(Grouped {
        alerts: alerts.finish().map_err(|e| spool_error(&e))?,
        matches: lines,
        watermark_us,
    })
}

/// What one pass over the run's alerts gathers for the summary, the
/// terminal and delivery.
struct LookedOver {
    activated: u64,
    /// The first activated alerts, for the terminal.
    shown: Vec<Alert>,
    /// Activated alerts routed somewhere (only with destinations).
    routed: Vec<Alert>,
    unknown_destinations: Vec<ErrorRecord>,
}

fn look_over(
    alerts: &RunAlerts,
    project: &Project,
    show: usize,
) -> Result<LookedOver, EngineError> {
    let delivery = &project.settings.delivery;
    let mut seen = LookedOver {
        activated: 0,
        shown: Vec::new(),
        routed: Vec::new(),
        unknown_destinations: Vec::new(),
    };
    for alert in alerts.iter() {
        let alert = alert.map_err(|e| spool_error(&e))?;
        seen.unknown_destinations
            .extend(crate::delivery::unknown_destinations(
                std::slice::from_ref(&alert),
                delivery,
            ));
        if !alert.activated {
            continue;
        }
        seen.activated += 1;
        if !delivery.destinations.is_empty() && !crate::delivery::routes(&alert).is_empty() {
            seen.routed.push(alert.clone());
        }
        if show > 0 {
            seen.shown.push(alert);
            if seen.shown.len() >= 2 * show + 64 {
                keep_most_pressing(&mut seen.shown, show);
            }
        }
    }
    keep_most_pressing(&mut seen.shown, show);
    Ok(seen)
}

/// Keeps the `n` alerts an analyst should see first, in that order: the
/// most severe, then the most matched, then the most recent (last match).
fn keep_most_pressing(alerts: &mut Vec<Alert>, n: usize) {
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.match_count.cmp(&a.match_count))
            .then_with(|| b.last_match_time.cmp(&a.last_match_time))
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.dedupe.cmp(&b.dedupe))
    });
    alerts.truncate(n);
}

fn finish_summary(
    summary: &mut Summary,
    matches: u64,
    alerts: &RunAlerts,
    errors: &[ErrorRecord],
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    summary.rule_matches = matches;
    summary.alerts = alerts.len() as u64;
    summary.errors = errors.len() as u64;
    summary.seconds = (seconds * 1000.0).round() / 1000.0;
    summary.events_per_second = if seconds > 0.0 {
        (summary.events as f64 / seconds).round()
    } else {
        0.0
    };
}

/// Where a run's outputs go: `<storage>/runs/<run id>/`, or `--output`
/// (then `runs/<run id>/location.json` in storage records where, so
/// `query` finds every run's alerts).
struct OutputTarget {
    storage: Arc<dyn Storage>,
    prefix: String,
    /// `runs/<run id>/location.json` when the outputs are elsewhere.
    pointer: Option<String>,
}

impl OutputTarget {
    fn new(storage: &Arc<dyn Storage>, output: Option<&Arc<dyn Storage>>, run_id: &str) -> Self {
        match output {
            Some(s) => Self {
                storage: Arc::clone(s),
                prefix: String::new(),
                pointer: Some(run_location_key(run_id)),
            },
            None => Self {
                storage: Arc::clone(storage),
                prefix: format!("runs/{run_id}"),
                pointer: None,
            },
        }
    }

    fn location(&self) -> String {
        self.storage
            .url(&self.prefix)
            .trim_end_matches('/')
            .to_string()
    }
}

/// The alert state a commit writes: where, over which version, with what.
struct StateCommit<'a> {
    key: &'a str,
    version: &'a StateVersion,
    inputs: &'a BTreeMap<String, InputRecord>,
    applied: &'a BTreeMap<String, InputRecord>,
    kv: Option<&'a RunKv>,
}

/// Outputs, then where they are, then the alert state (conditionally on the
/// version read at the start). On a lost race the outputs are removed, so
/// the next run is the only record of these events.
fn commit(
    storage: &dyn Storage,
    target: &OutputTarget,
    outputs: &RunOutputs<'_>,
    grouped: &Grouped,
    state: &StateCommit<'_>,
) -> Result<(), EngineError> {
    let kv = state.kv;
    let run_id = &outputs.summary.run_id;
    // The caching store goes up under a new name; the state names it.
    let kv_key = kv.map(|k| k.upload(storage, run_id)).transpose()?;
    // The state file is written first and committed last.
    let state_file = tempfile::NamedTempFile::new().map_err(|e| spool_error(&e))?;
    let out = std::io::BufWriter::with_capacity(
        1 << 20,
        state_file.reopen().map_err(|e| spool_error(&e))?,
    );
    write_state(
        out,
        run_id,
        grouped.watermark_us,
        grouped.alerts.state_texts(),
        (state.inputs, state.applied),
        kv_key.as_deref(),
    )
    .and_then(|mut out| std::io::Write::flush(&mut out))
    .map_err(|e| spool_error(&e))?;
    // Until the state is committed, `query` does not count this run.
    let incomplete = run_incomplete_key(run_id);
    storage.write(
        &incomplete,
        b"outputs written before the alert state was committed\n",
    )?;
    write_outputs(target.storage.as_ref(), &target.prefix, outputs)?;
    if let Some(pointer) = &target.pointer {
        // Absolute, so `query` finds the outputs from any working directory.
        let location = target.location();
        let location = if location.contains("://") {
            location
        } else {
            std::path::absolute(&location)
                .map(|p| p.display().to_string())
                .unwrap_or(location)
        };
        let body = serde_json::json!({ "location": location }).to_string();
        storage.write(pointer, body.as_bytes())?;
    }
    crate::files::crash_point("before-state-commit");
    if let Err(e) = commit_state_file(storage, state.key, state.version, state_file.path()) {
        if matches!(e, StateError::Conflict { .. }) {
            let _ = remove_outputs(target.storage.as_ref(), &target.prefix);
            if let Some(pointer) = &target.pointer {
                let _ = storage.delete(pointer);
            }
            let _ = storage.delete(&incomplete);
            if let Some(key) = &kv_key {
                let _ = storage.delete(key);
            }
        }
        return Err(e.into());
    }
    // The state names this run, so a failure here hides nothing: the next
    // run removes the marker (see `repair_last_commit`).
    crate::files::crash_point("after-state-commit");
    let _ = storage.delete(&incomplete);
    if let Some(previous) = kv.and_then(|k| k.previous.as_ref()) {
        if Some(previous) != kv_key.as_ref() {
            let _ = storage.delete(previous);
        }
    }
    Ok(())
}

/// A run killed after its state commit but before removing its
/// `incomplete` marker is committed (the state names it): remove the marker.
fn repair_last_commit(storage: &dyn Storage, state: &AlertState) -> Result<(), EngineError> {
    if let Some(id) = &state.run_id {
        storage.delete(&run_incomplete_key(id))?;
    }
    Ok(())
}

/// Queues (and unless `send` is false, sends) the activated alerts, then
/// rewrites summary.json and errors.jsonl with the outcome. The run is
/// committed: what delivery does is reported, never undone. Returns the
/// problems that could not be written to the outputs.
fn deliver(
    project: &Project,
    storage: &dyn Storage,
    target: &OutputTarget,
    alerts: &[Alert],
    summary: &mut Summary,
    errors: &mut Vec<ErrorRecord>,
    send: bool,
) -> Vec<ErrorRecord> {
    if project.settings.delivery.destinations.is_empty() {
        return Vec::new();
    }
    let settings = &project.settings.delivery;
    let report = crate::delivery::after_run(storage, settings, alerts, &summary.run_id, send);
    errors.extend(report.error_records());
    summary.errors = errors.len() as u64;
    summary.delivery = Some(report);
    match rewrite_after_delivery(target.storage.as_ref(), &target.prefix, errors, summary) {
        Ok(()) => Vec::new(),
        Err(e) => {
            let unrecorded = ErrorRecord {
                kind: ErrorKind::Delivery,
                rule: None,
                function: None,
                source: Some(target.location()),
                error: format!(
                    "the run's outputs could not be updated with the delivery results: {e}"
                ),
                traceback: None,
            };
            errors.push(unrecorded.clone());
            summary.errors = errors.len() as u64;
            vec![unrecorded]
        }
    }
}

/// The terminal's progress line: percent done, events, events/s, matches
/// so far, inputs done of all, elapsed time and ETA; nothing when stderr is
/// not a terminal. Progress is measured in input bytes: an uncompressed
/// input advances with each batch, a compressed one (whose decoded size is
/// unknown) when it is done. Without a known total (stdin) there is no
/// percentage or ETA.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    /// Each input's size, and whether batches can advance it (uncompressed).
    sizes: HashMap<String, (u64, bool)>,
    inputs: usize,
    inputs_done: usize,
    file: Option<Arc<str>>,
    /// Bytes of the inputs done, and of the current one so far.
    done: u64,
    current: u64,
}

impl Progress {
    fn new(enabled: bool, inputs: &[crate::logs::Input]) -> Option<Self> {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let sizes: HashMap<String, (u64, bool)> = inputs
            .iter()
            .filter_map(|i| {
                let name = i.name();
                let streamed = !(name.ends_with(".gz") || name.ends_with(".zst"));
                Some((name, (i.size()?, streamed)))
            })
            .collect();
        let known = sizes.len() == inputs.len();
        let (bar, template) = if known {
            let total = sizes.values().map(|(s, _)| s).sum();
            (
                indicatif::ProgressBar::new(total),
                "{bar:24} {percent:>3}%  {msg}  {elapsed} elapsed, ETA {eta}",
            )
        } else {
            (
                indicatif::ProgressBar::no_length(),
                "{spinner} {msg}  {elapsed}",
            )
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(Self {
            bar,
            started: Instant::now(),
            sizes,
            inputs: inputs.len(),
            inputs_done: 0,
            file: None,
            done: 0,
            current: 0,
        })
    }

    fn batch_done(&mut self, batch: &EventBatch, summary: &Summary, matches: u64) {
        if self.file.as_ref() != Some(&batch.file) {
            if let Some(previous) = self.file.take() {
                self.input_done(&previous);
            }
            self.file = Some(Arc::clone(&batch.file));
        }
        if let Some((size, true)) = self.sizes.get(batch.file.as_ref()) {
            // The events' text and a line end each: close to the bytes read.
            let read = batch.raw.values().len() as u64 + batch.len() as u64;
            self.current = (self.current + read).min(*size);
        }
        self.bar.set_position(self.done + self.current);
        let rate = summary.events as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{}  {} events/s  {}  {}/{} inputs",
            crate::text::count(summary.events, "event"),
            crate::text::rounded(rate),
            crate::text::count_as(matches, "match", "matches"),
            self.inputs_done,
            self.inputs
        ));
    }

    fn input_done(&mut self, file: &str) {
        self.inputs_done += 1;
        self.done += self.sizes.get(file).map_or(0, |(size, _)| *size);
        self.current = 0;
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
