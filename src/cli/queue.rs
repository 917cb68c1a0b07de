//! `ravenwatch worker --queue URL`: consumes S3 event notifications from
//! SQS and processes each announced object once. A round runs the rules
//! over the objects of the messages in hand and leaves its matches as
//! batches for the grouping shards (see `engine::shards`), with its input
//! ledger; the shards' merges come through a FIFO queue (`groups.rs`).
//! Messages are deleted only once the round's batches are written, so a
//! redelivered message is a no-op (ledger) or re-sent batches that the
//! shards recognise. While a round lasts, the messages' visibility is
//! extended, so a large object is not handed to another worker.

use super::args::{GlobalArgs, Outcome};
use super::context::{from_engine, load_project, open_storage};
use super::follow::{print_round, stop_flag};
use crate::engine::{self, RunOptions};
use crate::queue::{parse_notice, Notice, Received, SqsQueue};
use crate::text::count;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What `worker --queue` was asked to do.
pub(super) struct QueueOptions {
    pub url: String,
    /// How long a received message stays invisible; extended every third
    /// of it while its run lasts.
    pub visibility: Duration,
    pub max_messages: usize,
    /// Stop when a receive finds the queue empty (tests, draining a backlog).
    pub until_empty: bool,
    /// Python worker processes (default: the cores available).
    pub workers: Option<usize>,
    pub deliver: bool,
    /// The FIFO queue of the shards' merges (`None`: `group_queue:` of
    /// `ravenwatch.yml`, else beside the input queue).
    pub group_queue: Option<String>,
    /// Shards when the storage is not sharded yet.
    pub shards: u32,
    pub settle: crate::engine::Settle,
}

/// Times a run that lost the commit race is tried again at once.
const CONFLICT_RETRIES: usize = 5;

pub(super) fn consume(global: &GlobalArgs, queue_options: &QueueOptions) -> Result<Outcome> {
    let project = load_project(global)?;
    let storage = open_storage(global, &project)?;
    let stop = stop_flag()?;
    let queue = SqsQueue::open(&queue_options.url, &project.settings.aws);
    let grouping =
        engine::enable_sharding(storage.as_ref(), queue_options.shards).map_err(from_engine)?;
    let named = queue_options
        .group_queue
        .as_deref()
        .or(project.settings.group_queue.as_deref());
    let groups = super::groups::open(&queue, named, queue_options.settle)?;
    let merging = super::groups::MergeOptions {
        settle: queue_options.settle,
        hold: queue_options.visibility,
        deliver: queue_options.deliver,
    };
    let options = round_options(queue_options.workers, queue_options.deliver);
    eprintln!(
        "consuming {} (up to {} per run); alerts grouped in {} through {}; SIGTERM or Ctrl-C to stop",
        queue.url(),
        count(queue_options.max_messages as u64, "message"),
        count(u64::from(grouping.shards), "shard"),
        groups.url(),
    );
    let (mut objects_done, mut events, mut failed) = (0u64, 0u64, 0u64);
    let mut merge_due: Option<Duration> = None;
    while !stop.load(Ordering::SeqCst) {
        // Short waits: the shards' merges take turns with the rounds.
        let idle = Duration::from_secs(if queue_options.until_empty { 1 } else { 5 });
        let wait = merge_due.map_or(idle, |due| due.min(idle));
        let messages = receive(&queue, queue_options, wait, &stop)?;
        if !messages.is_empty() {
            let keep_alive = KeepAlive::start(&queue, &messages, queue_options.visibility);
            let round = process(&project, &storage, &options, &messages);
            objects_done += round.objects;
            events += round.events;
            failed += round.failed.len() as u64;
            keep_alive.stop();
            // A batch whose trigger is lost is found by the sweep below.
            if let Err(e) = super::groups::trigger(&groups, &round.batches) {
                eprintln!("warning: {e}");
            }
            if !round.done.is_empty() {
                queue.delete(&round.done)?;
            }
        }
        let merged = super::groups::merge_ready(&project, &storage, &groups, &merging)?;
        merge_due = merged.next;
        if messages.is_empty() {
            let pending = engine::pending(storage.as_ref()).map_err(from_engine)?;
            super::groups::sweep(&groups, &pending, queue_options.settle)?;
            if queue_options.until_empty && pending.is_empty() && merged.handled == 0 {
                break;
            }
        }
    }
    eprintln!(
        "stopped: {}, {}{}",
        count(objects_done, "object"),
        count(events, "event"),
        if failed > 0 {
            format!("; {} left in the queue", count(failed, "failed message"))
        } else {
            String::new()
        }
    );
    if let Some(requests) = crate::storage::requests_line() {
        eprintln!("requests sent: {requests}");
    }
    Ok(Outcome::Done)
}

/// The run options of a round (a worker's or a Lambda invocation's): no
/// progress bar, tables refreshed as in `run`, every core by default.
pub(super) fn round_options(workers: Option<usize>, deliver: bool) -> RunOptions {
    RunOptions {
        refresh_interval: Some(Duration::from_secs(30)),
        defer_grouping: true,
        deliver,
        workers: workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        auto_filter: true,
        ..RunOptions::default()
    }
}

/// What became of the messages of one round.
pub(super) struct Round<'m> {
    /// Committed (or nothing to do): to delete.
    pub done: Vec<&'m Received>,
    /// Not a notification, or their objects' run failed: to hand out again.
    pub failed: Vec<&'m Received>,
    pub events: u64,
    pub objects: u64,
    /// (round id, shards it left batches for): to trigger their merges.
    pub batches: Vec<(String, Vec<u32>)>,
}

/// Runs the objects `messages` announce: all in one committed run (an
/// object named twice read once); if that fails, each message on its own,
/// so one bad object does not hold the others back. Errors are printed
/// with the message they leave in the queue.
pub(super) fn process<'m>(
    project: &crate::config::Project,
    storage: &Arc<dyn crate::storage::Storage>,
    options: &RunOptions,
    messages: &'m [Received],
) -> Round<'m> {
    let mut round = Round {
        done: Vec::new(),
        failed: Vec::new(),
        events: 0,
        objects: 0,
        batches: Vec::new(),
    };
    let mut work: Vec<(&Received, Vec<String>)> = Vec::new();
    for message in messages {
        match parse_notice(&message.body) {
            Ok(Notice::Test) => round.done.push(message),
            Ok(Notice::Objects(objects)) => {
                work.push((message, objects.iter().map(|o| o.url()).collect()));
            }
            // Handed out again; after the redrive count it goes to the
            // dead-letter queue, where it can be read.
            Err(why) => {
                eprintln!(
                    "error: message {} (received {} times) is left to the queue's redrive policy: {why}",
                    message.id, message.receive_count
                );
                round.failed.push(message);
            }
        }
    }
    let mut all: Vec<String> = Vec::new();
    for url in work.iter().flat_map(|(_, urls)| urls) {
        if !all.contains(url) {
            all.push(url.clone());
        }
    }
    if all.is_empty() {
        return round;
    }
    let tally = |round: &mut Round<'m>, done: RoundDone| {
        round.events += done.events;
        round.objects += done.objects;
        if !done.batches.is_empty() {
            round.batches.push((done.run_id, done.batches));
        }
    };
    match run_once(project, storage, options, all) {
        Ok(report) => {
            tally(&mut round, report);
            round.done.extend(work.iter().map(|(m, _)| *m));
        }
        Err(e) if work.len() == 1 => {
            left_in_queue(work[0].0, &e);
            round.failed.push(work[0].0);
        }
        Err(e) => {
            eprintln!("error: {e:#}; running each message on its own");
            for (message, urls) in &work {
                match run_once(project, storage, options, urls.clone()) {
                    Ok(report) => {
                        tally(&mut round, report);
                        round.done.push(message);
                    }
                    Err(e) => {
                        left_in_queue(message, &e);
                        round.failed.push(message);
                    }
                }
            }
        }
    }
    round
}

/// Up to `max_messages`: the first receive waits up to `wait`; more are
/// taken, 10 at a time, while the queue has them (a run costs the same
/// fixed start whatever it reads, so it should read many objects).
fn receive(
    queue: &SqsQueue,
    options: &QueueOptions,
    wait: Duration,
    stop: &AtomicBool,
) -> Result<Vec<Received>> {
    let batch = |n: usize| i32::try_from(n.min(10)).unwrap_or(10);
    let mut messages = queue.receive(batch(options.max_messages), wait, options.visibility)?;
    while !messages.is_empty()
        && messages.len() < options.max_messages
        && !stop.load(Ordering::SeqCst)
    {
        let more = queue.receive(
            batch(options.max_messages - messages.len()),
            Duration::ZERO,
            options.visibility,
        )?;
        if more.is_empty() {
            break;
        }
        messages.extend(more);
    }
    Ok(messages)
}

/// A message whose run failed stays in the queue: SQS hands it out again
/// after its visibility timeout, and to the dead-letter queue after the
/// redrive count.
fn left_in_queue(message: &Received, e: &anyhow::Error) {
    eprintln!(
        "error: message {} (received {} times) stays in the queue: {e:#}",
        message.id, message.receive_count
    );
}

/// What a round's run did.
struct RoundDone {
    events: u64,
    objects: u64,
    run_id: String,
    batches: Vec<u32>,
}

/// One run over `urls`, tried again when another worker committed first
/// (the caching store of Panther rules).
fn run_once(
    project: &crate::config::Project,
    storage: &Arc<dyn crate::storage::Storage>,
    options: &RunOptions,
    urls: Vec<String>,
) -> Result<RoundDone> {
    let mut options = options.clone();
    options.inputs = urls;
    for attempt in 0.. {
        match engine::run(project, Arc::clone(storage), options.clone()) {
            Ok(report) => {
                let s = &report.summary;
                let read = options.inputs.len() as u64 - s.inputs_skipped;
                let skipped = if s.inputs_skipped > 0 {
                    format!("; {} already processed", count(s.inputs_skipped, "object"))
                } else {
                    String::new()
                };
                if report.batches.is_empty() {
                    print_round(&report, &count(read, "object"), &skipped);
                } else {
                    // Its alerts come from the shards' merges.
                    println!(
                        "run {}: {}, {}, {} -> batches for {}{skipped}",
                        s.run_id,
                        count(read, "object"),
                        count(s.events, "event"),
                        crate::text::count_as(s.rule_matches, "rule match", "rule matches"),
                        count(report.batches.len() as u64, "shard"),
                    );
                }
                return Ok(RoundDone {
                    events: s.events,
                    objects: read,
                    run_id: s.run_id.clone(),
                    batches: report.batches,
                });
            }
            Err(e) if engine::lost_race(&e) && attempt < CONFLICT_RETRIES => {}
            Err(e) => return Err(from_engine(e)),
        }
    }
    unreachable!("the loop returns")
}

/// Extends the visibility of the messages in hand until stopped.
struct KeepAlive {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAlive {
    fn start(queue: &SqsQueue, messages: &[Received], visibility: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let queue = queue.clone();
        let messages = messages.to_vec();
        let period = (visibility / 3).max(Duration::from_secs(1));
        let thread = std::thread::spawn(move || {
            let mut next = std::time::Instant::now() + period;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() >= next {
                    if let Err(e) = queue.extend(&messages, visibility) {
                        eprintln!("warning: {e}");
                    }
                    next += period;
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
