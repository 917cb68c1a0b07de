//! `ravenwatch run --follow`: keeps polling folders or S3 prefixes and
//! processes each new input once. Every round is an ordinary committed run
//! over at most `--batch-inputs` new inputs (the input ledger says which
//! are new), so what exactly-once means for one run holds for the stream.
//! SIGTERM or SIGINT ends the round after the input in hand, commits what
//! it read (the rest stay new), then exits 0. Progress and lag go to the terminal and to
//! `<storage>/state/follow.json`. S3 prefixes are listed through
//! per-folder cursors ([`Follower`]), so a poll costs what is new.

use super::args::{FollowArgs, GlobalArgs, Outcome};
use super::context::{from_engine, from_log, load_project, open_storage};
use crate::engine::{self, RunOptions};
use crate::logs::{Cursors, Follower, Input};
use crate::text::count;
use anyhow::Result;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the follow status is written, beside the alert state.
const STATUS_KEY: &str = "state/follow.json";
/// Where the S3 listing cursors are kept between followers (losing them
/// costs one whole listing, nothing else: the ledger decides what is new).
const CURSORS_KEY: &str = "state/follow-cursors.json";

pub(super) fn follow(
    global: &GlobalArgs,
    mut options: RunOptions,
    every: &FollowArgs,
) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let stop = stop_flag()?;
    let batch = usize::try_from(every.batch_inputs).unwrap_or(usize::MAX);
    let poll = Duration::from_secs(every.poll_seconds);
    options.max_inputs = Some(batch);
    options.progress = false;
    // A stop ends the round after the input in hand, committing what it read.
    options.stop = Some(Arc::clone(&stop));
    let paths = options.inputs.clone();
    let cursors = match storage.read(CURSORS_KEY)? {
        // Unreadable cursors only cost a whole listing: start over.
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            eprintln!(
                "warning: {}: unreadable listing cursors ({e}); listing the prefixes whole once",
                storage.url(CURSORS_KEY)
            );
            Cursors::new()
        }),
        None => Cursors::new(),
    };
    let mut follower = Follower::new(
        &paths,
        &project.settings.aws,
        (
            Duration::from_secs(every.lookback_seconds),
            Duration::from_secs(every.discover_seconds),
        ),
        cursors,
    )
    .map_err(from_log)?;
    // Inputs found processed by the last poll: no ledger read for them.
    let mut seen = HashSet::new();
    let started = chrono::Utc::now();
    let (mut rounds, mut inputs_done, mut events) = (0u64, 0u64, 0u64);
    eprintln!(
        "following {} (every {}s when idle, up to {} per run); SIGTERM or Ctrl-C to stop",
        paths.join(", "),
        poll.as_secs(),
        count(batch as u64, "input")
    );
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let listed = follower.list().map_err(from_log)?;
        let newest = listed.iter().filter_map(Input::modified_ms).max();
        let mut pending =
            engine::pending_inputs(storage.as_ref(), listed, &mut seen).map_err(from_engine)?;
        let names: HashSet<String> = pending.iter().map(Input::name).collect();
        if follower.advance(&names, chrono::Utc::now().timestamp_millis()) {
            storage.write(CURSORS_KEY, &serde_json::to_vec(follower.cursors())?)?;
        }
        // Oldest written first, across folders and accounts.
        pending.sort_by_cached_key(|i| (i.modified_ms().unwrap_or(0), i.name()));
        let waiting = pending.len();
        if waiting > 0 {
            options.listed = Some(pending);
            let report = engine::run(&project, Arc::clone(&storage), options.clone())
                .map_err(from_engine)?;
            options.listed = None;
            let s = &report.summary;
            rounds += 1;
            let read = (waiting.min(batch) as u64).saturating_sub(s.inputs_left);
            inputs_done += read;
            events += s.events;
            let lag = newest.map(|ms| (chrono::Utc::now().timestamp_millis() - ms) / 1000);
            print_round(
                &report,
                &count(read, "input"),
                &lag.map_or(String::new(), |l| {
                    format!("; newest input written {l}s ago")
                }),
            );
            let cost = follower.cost();
            let status = serde_json::json!({
                "following": paths,
                "since": started.to_rfc3339(),
                "updated": chrono::Utc::now().to_rfc3339(),
                "last_run": s.run_id,
                "runs": rounds,
                "inputs_processed": inputs_done,
                "events": events,
                "pending_inputs": waiting.saturating_sub(batch) as u64 + s.inputs_left,
                "newest_input_lag_seconds": lag,
                "last_listing": {
                    "s3_partitions": cost.partitions,
                    "s3_requests": cost.requests,
                    "s3_objects": cost.objects,
                },
            });
            storage.write(STATUS_KEY, status.to_string().as_bytes())?;
            if waiting > batch {
                continue; // more waiting: no pause
            }
        }
        // Idle: wait, waking up early for a stop.
        let until = Instant::now() + poll;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100).min(poll));
        }
    }
    eprintln!(
        "stopped: {} in {}, {} since {}",
        count(inputs_done, "input"),
        count(rounds, "run"),
        count(events, "event"),
        started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if let Some(requests) = crate::storage::requests_line() {
        eprintln!("requests sent: {requests}");
    }
    Ok(Outcome::Done)
}

/// The line a round of `--follow` or `worker` prints for its committed
/// run (`read`: what it read, counted; `tail`: appended), and its first
/// errors.
pub(super) fn print_round(report: &engine::RunReport, read: &str, tail: &str) {
    let s = &report.summary;
    println!(
        "run {}: {read}, {}, {} -> {} ({} activated), {}{tail}",
        s.run_id,
        count(s.events, "event"),
        crate::text::count_as(s.rule_matches, "rule match", "rule matches"),
        count(s.alerts, "alert"),
        s.activated_alerts,
        count(s.errors, "error"),
    );
    for e in report.errors.iter().take(3) {
        println!("  error: {} {}", e.source.as_deref().unwrap_or(""), e.error);
    }
}

/// Set once SIGTERM or SIGINT arrives (the workers ignore both, so the
/// run in hand finishes).
pub(super) fn stop_flag() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    let set = Arc::clone(&flag);
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        set.store(true, Ordering::SeqCst);
        eprintln!("stopping after the inputs in hand are committed");
    });
    Ok(flag)
}
