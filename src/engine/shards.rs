//! Alert grouping split across shards, so detection scales out while each
//! (rule, dedupe) key still has one writer.
//!
//! A storage whose `state/grouping.json` names K shards (written by the
//! first `worker`) keeps its alert windows in `state/alerts/<k>.json`, one
//! state per shard, each committed with its own conditional write. A
//! detection round reads none of them (its inputs' ledger markers say what
//! is processed): it writes its matches as batch files
//! `groups/<k>/<round>.jsonl`, one per shard that got matches (shard =
//! hash(rule, dedupe) mod K), then its inputs' markers: once a marker
//! claims an input, every batch of that input exists. A merge of
//! shard k (one at a time per shard: the FIFO group queue, or a
//! conditional write that fails) groups every pending batch of k in
//! event-time order into its windows, records the inputs it applied (a
//! batch sent again adds nothing), commits, then removes the batches.
//! Workers merge a shard once no round has written batches for the settle
//! time (or its oldest batch waited the longest wait), so rounds that
//! finish out of order within it are grouped as one run would group them.

use super::spool::{MatchSpool, Spooled};
use super::{
    finish_summary, group_commit_deliver, spool_error, Ending, EngineError, OutputTarget,
    RunReport, StateCommit,
};
use crate::alerts::{
    commit_state_file, write_state, AlertState, InputRecord, StateError, StateVersion,
};
use crate::config::Project;
use crate::engine::output::{RunOutputs, Summary};
use crate::storage::{Precondition, Storage, StorageError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

/// Where a storage says its grouping is sharded, and into how many.
pub const GROUPING_KEY: &str = "state/grouping.json";
/// The caching store's pointer when grouping is sharded (the shards'
/// states do not name it: detection rounds commit it).
const KV_POINTER_KEY: &str = "state/kv.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grouping {
    pub shards: u32,
}

/// Whether `e` is another process winning a race for the same object (a
/// conditional write refused, or a local lock held meanwhile): trying
/// again resolves it.
pub fn lost_race(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::State(
            StateError::Conflict { .. } | StateError::Storage(StorageError::Locked { .. })
        ) | EngineError::Storage(StorageError::Locked { .. } | StorageError::Conflict { .. })
    )
}

/// A conditional write that keeps what another process wrote first
/// (`Absent`: whoever creates it first wins), waiting out a held lock.
fn write_once(storage: &dyn Storage, key: &str, body: &[u8]) -> Result<(), EngineError> {
    for attempt in 0.. {
        match storage.write_if(key, body, &Precondition::Absent) {
            Ok(_) | Err(StorageError::Conflict { .. }) => return Ok(()),
            Err(StorageError::Locked { .. }) if attempt < 100 => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// `state/alerts/<k>.json`.
pub fn shard_key(shard: u32) -> String {
    format!("state/alerts/{shard:03}.json")
}

fn batches_prefix(shard: u32) -> String {
    format!("groups/{shard:03}/")
}

fn hash64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The shard that groups the matches of (rule, dedupe).
pub fn shard_of(rule: &str, dedupe: &str, shards: u32) -> u32 {
    u32::try_from(hash64(&[rule, dedupe]) % u64::from(shards.max(1))).unwrap_or(0)
}

/// The storage's grouping, if sharded.
///
/// # Errors
/// Storage failures, or an unreadable `state/grouping.json`.
pub fn grouping(storage: &dyn Storage) -> Result<Option<Grouping>, EngineError> {
    let Some(bytes) = storage.read(GROUPING_KEY)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        EngineError::State(StateError::Corrupt {
            location: storage.url(GROUPING_KEY),
            message: e.to_string(),
        })
    })
}

/// Shards the storage's grouping into `shards` (if it is not yet), and
/// returns the grouping in force (an existing one is kept: its windows are
/// placed by its shard count). A single state a `run` left is split into
/// the shards first, so its open windows and ledger carry on.
///
/// # Errors
/// Storage failures; another process changed the single state meanwhile.
pub fn enable(storage: &dyn Storage, shards: u32) -> Result<Grouping, EngineError> {
    if let Some(existing) = grouping(storage)? {
        return Ok(existing);
    }
    let wanted = Grouping {
        shards: shards.max(1),
    };
    let (single, version) = AlertState::load(storage)?;
    let mut parts: Vec<AlertState> = (0..wanted.shards)
        .map(|_| AlertState {
            watermark_us: single.watermark_us,
            ..AlertState::default()
        })
        .collect();
    for alert in single.alerts {
        let k = shard_of(&alert.rule, &alert.dedupe, wanted.shards) as usize;
        parts[k].alerts.push(alert);
    }
    // The ledger goes out as markers (rounds read those, not the shards).
    crate::alerts::write_markers(storage, &single.inputs)?;
    for (k, part) in parts.iter().enumerate() {
        let key = shard_key(u32::try_from(k).unwrap_or(0));
        let json = serde_json::to_vec(part).map_err(|e| EngineError::Internal(e.to_string()))?;
        write_once(storage, &key, &json)?;
    }
    if let Some(kv) = &single.kv {
        let pointer = AlertState {
            kv: Some(kv.clone()),
            ..AlertState::default()
        };
        let json =
            serde_json::to_vec(&pointer).map_err(|e| EngineError::Internal(e.to_string()))?;
        write_once(storage, KV_POINTER_KEY, &json)?;
    }
    let body = serde_json::to_vec(&wanted).map_err(|e| EngineError::Internal(e.to_string()))?;
    write_once(storage, GROUPING_KEY, &body)?;
    // Another worker may have enabled it first: theirs is in force.
    let in_force = grouping(storage)?.unwrap_or(wanted);
    if in_force != wanted {
        return Ok(in_force);
    }
    if version.exists() {
        // Split: the single state would mislead `query` about which run
        // wrote the windows; it stays beside as a record.
        if let Some(bytes) = storage.read(crate::alerts::STATE_KEY)? {
            storage.write("state/alerts.json.before-sharding", &bytes)?;
            storage.delete(crate::alerts::STATE_KEY)?;
        }
    }
    Ok(wanted)
}

/// What a round of a sharded storage starts from: the caching store's
/// pointer (its own state, committed per round), with no windows (the
/// shards hold those) and no ledger (the markers are the ledger).
///
/// # Errors
/// Storage failures or an unreadable pointer.
pub(super) fn round_state(
    storage: &dyn Storage,
) -> Result<(AlertState, StateVersion), EngineError> {
    let (pointer, kv_version) = AlertState::load_at(storage, KV_POINTER_KEY)?;
    let state = AlertState {
        kv: pointer.kv,
        ..AlertState::default()
    };
    Ok((state, kv_version))
}

/// Input name (as in a match's `source`) → ledger location, for the
/// inputs the ledger can record.
pub(super) fn input_names(inputs: &[crate::logs::Input]) -> HashMap<String, String> {
    inputs
        .iter()
        .filter_map(|i| Some((i.name(), i.stamp()?.0)))
        .collect()
}

/// The first line of a batch file.
#[derive(Serialize, Deserialize, Default)]
struct BatchHeader {
    round: String,
    /// A round's whole input ledger, in batches of earlier versions (the
    /// markers now claim a round's inputs): written out as markers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ledger: BTreeMap<String, InputRecord>,
    /// The inputs whose matches the file holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    inputs: BTreeMap<String, InputRecord>,
}

/// The other lines: a match and the input it came from.
#[derive(Serialize, Deserialize)]
struct BatchLine {
    input: Option<String>,
    m: Spooled,
}

#[derive(Deserialize)]
struct MatchKey<'a> {
    #[serde(borrow)]
    rule: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    dedupe: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
}

/// The input a match's `source` (`<input name>#n` or `<input name>:n`)
/// names, by the names of the round's inputs.
fn input_of<'a>(source: &str, names: &'a HashMap<String, String>) -> Option<&'a String> {
    let by = |c: char| source.rfind(c).and_then(|at| names.get(&source[..at]));
    by('#').or_else(|| by(':'))
}

/// Writes a round's matches as one batch file per shard that got some
/// (each naming the inputs whose matches it holds, for the shard's record
/// of what it applied). Returns the shards written.
///
/// # Errors
/// Temporary files or storage failures (then no marker was written, so the
/// round's inputs are not claimed).
pub(super) fn write_batches(
    storage: &dyn Storage,
    grouping: Grouping,
    round: &str,
    matches: MatchSpool,
    names: &HashMap<String, String>,
    ledger: &BTreeMap<String, InputRecord>,
) -> Result<Vec<u32>, EngineError> {
    let mut bodies: BTreeMap<u32, (tempfile::NamedTempFile, BatchHeader)> = BTreeMap::new();
    matches
        .for_each_text(|text| {
            let key: MatchKey<'_> = serde_json::from_slice(text).map_err(std::io::Error::other)?;
            let shard = shard_of(&key.rule, &key.dedupe, grouping.shards);
            let input = input_of(&key.source, names);
            let (file, header) = match bodies.entry(shard) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((tempfile::NamedTempFile::new()?, BatchHeader::default()))
                }
            };
            if let Some(location) = input {
                if let Some(record) = ledger.get(location) {
                    header.inputs.insert(location.clone(), record.clone());
                }
            }
            let line = serde_json::json!({ "input": input });
            let mut line = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
            // {"input":…,"m":<the match's text>}
            line.pop();
            line.extend_from_slice(b",\"m\":");
            line.extend_from_slice(text);
            line.extend_from_slice(b"}\n");
            file.write_all(&line)
        })
        .map_err(|e| spool_error(&e))?;
    let order: Vec<u32> = bodies.keys().copied().collect();
    for shard in &order {
        let (body, mut header) = bodies.remove(shard).expect("a body per shard");
        header.round = round.to_string();
        let file = tempfile::NamedTempFile::new().map_err(|e| spool_error(&e))?;
        let mut out = std::io::BufWriter::new(file.reopen().map_err(|e| spool_error(&e))?);
        let head = serde_json::to_vec(&header).map_err(|e| EngineError::Internal(e.to_string()))?;
        out.write_all(&head)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| std::io::copy(&mut body.reopen()?, &mut out).map(|_| ()))
            .and_then(|()| out.flush())
            .map_err(|e| spool_error(&e))?;
        storage.put_file(
            &format!("{}{round}.jsonl", batches_prefix(*shard)),
            file.path(),
        )?;
        crate::files::crash_point("between-batches");
    }
    Ok(order)
}

/// What a detection round hands on when grouping is sharded.
pub(super) struct Round {
    pub grouping: Grouping,
    pub summary: Summary,
    pub matches: MatchSpool,
    pub errors: Vec<crate::alerts::ErrorRecord>,
    /// The round's new inputs, claimed by their markers once its batches
    /// are written.
    pub ledger: BTreeMap<String, InputRecord>,
    /// Input name (as in a match's `source`) → ledger location.
    pub names: HashMap<String, String>,
    pub kv: Option<super::kv::RunKv>,
    /// The caching store pointer's version the round read.
    pub kv_version: StateVersion,
    pub started: std::time::Instant,
}

/// Commits the round's caching store, writes its batches (ledger last) and
/// its own outputs (errors, summary); then, unless the options defer it,
/// merges the shards it wrote (as `run` does: one process, at once).
///
/// # Errors
/// As [`write_batches`] and [`merge`]; a caching store another round
/// committed first is [`StateError::Conflict`] (nothing was written).
pub(super) fn finish_round(
    project: &Project,
    storage: &Arc<dyn Storage>,
    options: &super::RunOptions,
    round: Round,
) -> Result<RunReport, EngineError> {
    let Round {
        grouping,
        mut summary,
        matches,
        mut errors,
        ledger,
        names,
        kv,
        kv_version,
        started,
    } = round;
    let run_id = summary.run_id.clone();
    if let Some(kv) = &kv {
        commit_kv(storage.as_ref(), kv, &run_id, &kv_version)?;
    }
    let match_count = matches.len();
    let written = write_batches(
        storage.as_ref(),
        grouping,
        &run_id,
        matches,
        &names,
        &ledger,
    )?;
    // Every batch is written: the markers claim the inputs, so later
    // rounds and runs skip them. A round that dies before (or while)
    // writing them is read again when its messages come back, and the
    // shards' records of what they applied keep its matches from counting
    // twice.
    crate::alerts::write_markers(storage.as_ref(), &ledger)?;
    let no_alerts = super::spool::AlertSpool::new()
        .and_then(super::spool::AlertSpool::finish)
        .map_err(|e| spool_error(&e))?;
    let no_matches = tempfile::NamedTempFile::new().map_err(|e| spool_error(&e))?;
    finish_summary(&mut summary, match_count, &no_alerts, &errors, started);
    let target = OutputTarget::new(storage, options.output.as_ref(), &run_id);
    let outputs = RunOutputs {
        alerts: &no_alerts,
        matches: no_matches.path(),
        errors: &errors,
        summary: &summary,
    };
    super::output::write_outputs(target.storage.as_ref(), &target.prefix, &outputs)?;
    if options.defer_grouping {
        return Ok(RunReport {
            summary,
            alerts: Vec::new(),
            errors,
            unrecorded: Vec::new(),
            output_location: target.location(),
            batches: written,
        });
    }
    let mut shown = Vec::new();
    let mut unrecorded = Vec::new();
    for shard in &written {
        let report = merge_until_done(project, storage, *shard, options.deliver)?;
        if let Some(report) = report {
            summary.alerts += report.summary.alerts;
            summary.activated_alerts += report.summary.activated_alerts;
            shown.extend(report.alerts);
            // Its merges' problems (a batch set aside, delivery) are the run's.
            errors.extend(report.errors);
            unrecorded.extend(report.unrecorded);
        }
    }
    super::keep_most_pressing(&mut shown, options.shown_alerts);
    summary.errors = errors.len() as u64;
    if let Err(e) =
        super::rewrite_after_delivery(target.storage.as_ref(), &target.prefix, &errors, &summary)
    {
        unrecorded.push(crate::alerts::ErrorRecord {
            kind: crate::alerts::ErrorKind::Delivery,
            rule: None,
            function: None,
            source: Some(target.location()),
            error: format!("the round's summary could not be updated after grouping: {e}"),
            traceback: None,
        });
    }
    Ok(RunReport {
        summary,
        alerts: shown,
        errors,
        unrecorded,
        output_location: target.location(),
        batches: Vec::new(),
    })
}

/// Merges a shard now, trying again while other processes win the race.
fn merge_until_done(
    project: &Project,
    storage: &Arc<dyn Storage>,
    shard: u32,
    deliver_now: bool,
) -> Result<Option<RunReport>, EngineError> {
    for attempt in 0.. {
        match merge(project, storage, shard, None, deliver_now) {
            Ok(Merged::Done(report)) => return Ok(Some(*report)),
            Ok(Merged::Nothing | Merged::Waiting(_)) => return Ok(None),
            Err(e) if lost_race(&e) && attempt < 20 => {
                std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// How a worker decides when a shard's pending batches are merged.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// Merge once no batch arrived for this long…
    pub quiet: Duration,
    /// …or once the oldest batch waited this long.
    pub longest: Duration,
}

/// What a merge did.
#[derive(Debug)]
pub enum Merged {
    /// No pending batch.
    Nothing,
    /// Batches wait to settle; try again after this long.
    Waiting(Duration),
    /// Committed.
    Done(Box<RunReport>),
}

/// Merges shard `shard`'s pending batches into its windows and commits
/// them (with `settle`, only once they have settled), then delivers.
///
/// # Errors
/// Unreadable batches or state, storage failures; a lost race is
/// [`StateError::Conflict`] (the batches stay pending).
pub fn merge(
    project: &Project,
    storage: &Arc<dyn Storage>,
    shard: u32,
    settle: Option<Settle>,
    deliver_now: bool,
) -> Result<Merged, EngineError> {
    let started = std::time::Instant::now();
    let all = storage.list_info("groups/")?;
    let prefix = batches_prefix(shard);
    let mut pending: Vec<_> = all
        .iter()
        .filter(|o| o.key.starts_with(&prefix) && o.key.ends_with(".jsonl"))
        .cloned()
        .collect();
    pending.sort_by(|a, b| a.key.cmp(&b.key));
    if pending.is_empty() {
        return Ok(Merged::Nothing);
    }
    if let Some(settle) = settle {
        // Quiet means no round wrote batches anywhere lately: rounds that
        // finish out of order are then all in.
        let now = chrono::Utc::now().timestamp_millis();
        let age = |ms: i64| Duration::from_millis(u64::try_from(now - ms).unwrap_or(0));
        let newest = age(all.iter().map(|o| o.modified_ms).max().unwrap_or(now));
        let oldest = age(pending.iter().map(|o| o.modified_ms).min().unwrap_or(now));
        if newest < settle.quiet && oldest < settle.longest {
            let wait = (settle.quiet - newest).min(settle.longest - oldest);
            return Ok(Merged::Waiting(wait.max(Duration::from_secs(1))));
        }
    }
    let key = shard_key(shard);
    let (state, version) = AlertState::load_at(storage.as_ref(), &key)?;
    let mut inputs = state.inputs.clone();
    let mut applied = state.applied.clone();
    let mut matches = MatchSpool::new().map_err(|e| spool_error(&e))?;
    let mut rejected = Vec::new();
    for object in &pending {
        let read = read_batch(
            storage.as_ref(),
            &object.key,
            &mut applied,
            &mut inputs,
            &mut matches,
        );
        match read {
            Ok(()) => {}
            // A batch that does not parse would stop its shard for good:
            // it is moved aside, reported, and the others go on.
            Err(EngineError::State(StateError::Corrupt { location, message })) => {
                let aside = format!("rejected/{}", object.key);
                if let Some(bytes) = storage.read(&object.key)? {
                    storage.write(&aside, &bytes)?;
                }
                rejected.push(crate::alerts::ErrorRecord {
                    kind: crate::alerts::ErrorKind::Event,
                    rule: None,
                    function: None,
                    source: Some(location),
                    error: format!(
                        "unreadable match batch, moved to {} and not merged: {message}",
                        storage.url(&aside)
                    ),
                    traceback: None,
                });
            }
            Err(e) => return Err(e),
        }
    }
    // Ledgers of an earlier version (a shard state's, or a ledger batch's)
    // go out as markers; the shard keeps no ledger of its own.
    crate::alerts::write_markers(storage.as_ref(), &inputs)?;
    let now = chrono::Utc::now();
    forget_old_applied(&mut applied, now);
    let run_id = format!("{}-g{shard:03}", now.format("%Y%m%dT%H%M%S%.3fZ"));
    let rules: Vec<crate::config::DetectionDef> = project
        .detections
        .iter()
        .filter(|d| d.enabled)
        .cloned()
        .collect();
    let ending = Ending {
        rules: &rules,
        state,
        matches,
        summary: Summary {
            run_id,
            ..Summary::default()
        },
        errors: rejected,
        started,
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        output: None,
        shown: 10,
        deliver: deliver_now,
        commit: StateCommit {
            key: &key,
            version: &version,
            inputs: &BTreeMap::new(),
            applied: &applied,
            kv: None,
        },
    };
    let report = group_commit_deliver(project, storage, ending, || {
        for object in &pending {
            // Applied: a batch left behind adds nothing when merged again.
            let _ = storage.delete(&object.key);
        }
    })?;
    Ok(Merged::Done(Box::new(report)))
}

/// How long a shard remembers the inputs it applied: the longest an SQS
/// queue keeps a message (14 days), so a notification redelivered after a
/// worker died mid-round still finds its input applied.
const APPLIED_FOR: chrono::Duration = chrono::Duration::days(14);

/// Drops applied records of rounds older than [`APPLIED_FOR`] (a record
/// whose round time cannot be read is kept).
fn forget_old_applied(
    applied: &mut BTreeMap<String, InputRecord>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let horizon = now - APPLIED_FOR;
    applied.retain(|_, record| {
        let time = record.run_id.split('-').next().unwrap_or_default();
        chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.3fZ")
            .map_or(true, |t| t.and_utc() >= horizon)
    });
}

/// Adds a batch's matches of inputs not applied yet to `matches`, and its
/// inputs to `applied` and its ledger to `inputs`.
fn read_batch(
    storage: &dyn Storage,
    key: &str,
    applied: &mut BTreeMap<String, InputRecord>,
    inputs: &mut BTreeMap<String, InputRecord>,
    matches: &mut MatchSpool,
) -> Result<(), EngineError> {
    let corrupt = |message: String| {
        EngineError::State(StateError::Corrupt {
            location: storage.url(key),
            message,
        })
    };
    let reader = std::io::BufReader::new(storage.reader(key)?);
    let mut lines = reader.lines();
    let Some(head) = lines.next() else {
        return Ok(());
    };
    let head = head.map_err(|e| corrupt(e.to_string()))?;
    let header: BatchHeader =
        serde_json::from_str(&head).map_err(|e| corrupt(format!("line 1: {e}")))?;
    let fresh: std::collections::BTreeSet<&String> = header
        .inputs
        .iter()
        .filter(|(location, record)| {
            applied
                .get(*location)
                .is_none_or(|a| a.version != record.version)
        })
        .map(|(location, _)| location)
        .collect();
    let mut batch = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| corrupt(e.to_string()))?;
        let parsed: BatchLine =
            serde_json::from_str(&line).map_err(|e| corrupt(format!("line {}: {e}", n + 2)))?;
        if parsed.input.as_ref().is_none_or(|i| fresh.contains(&i)) {
            batch.push(parsed.m.into_match(0));
        }
    }
    matches.extend(batch).map_err(|e| spool_error(&e))?;
    for (location, record) in header.inputs {
        // A new version (the object re-uploaded) replaces the old one, so
        // a re-sent batch of it is recognised too.
        let known = applied.get(&location);
        if known.is_none_or(|a| a.version != record.version) {
            applied.insert(location, record);
        }
    }
    for (location, record) in header.ledger {
        inputs.insert(location, record);
    }
    Ok(())
}

/// Commits the caching store a round left (sharded grouping: its pointer
/// is its own state), conditionally on the version the round read.
///
/// # Errors
/// [`StateError::Conflict`] when another round committed it first (the
/// round must run again), storage failures.
pub(super) fn commit_kv(
    storage: &dyn Storage,
    kv: &super::kv::RunKv,
    run_id: &str,
    read: &StateVersion,
) -> Result<(), EngineError> {
    let key = kv.upload(storage, run_id)?;
    let file = tempfile::NamedTempFile::new().map_err(|e| spool_error(&e))?;
    let out = std::io::BufWriter::new(file.reopen().map_err(|e| spool_error(&e))?);
    let none = BTreeMap::new();
    write_state(
        out,
        run_id,
        i64::MIN,
        std::iter::empty::<std::io::Result<Vec<u8>>>(),
        (&none, &none),
        Some(&key),
    )
    .and_then(|mut out| out.flush())
    .map_err(|e| spool_error(&e))?;
    if let Err(e) = commit_state_file(storage, KV_POINTER_KEY, read, file.path()) {
        let _ = storage.delete(&key);
        return Err(e.into());
    }
    if let Some(previous) = kv.previous.as_ref().filter(|p| **p != key) {
        let _ = storage.delete(previous);
    }
    Ok(())
}

/// Shards with batches waiting, and the age of the oldest batch of each.
///
/// # Errors
/// Storage failures.
pub fn pending(storage: &dyn Storage) -> Result<BTreeMap<u32, Duration>, EngineError> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out: BTreeMap<u32, Duration> = BTreeMap::new();
    for object in storage.list_info("groups/")? {
        let Some(shard) = object
            .key
            .strip_prefix("groups/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let age = Duration::from_millis(u64::try_from(now - object.modified_ms).unwrap_or(0));
        let entry = out.entry(shard).or_insert(age);
        *entry = (*entry).max(age);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_shard_and_keys_spread() {
        let shards = 8;
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..200 {
            let dedupe = format!("user{n}");
            let k = shard_of("rule", &dedupe, shards);
            assert!(k < shards);
            assert_eq!(k, shard_of("rule", &dedupe, shards));
            seen.insert(k);
        }
        assert_eq!(seen.len(), 8, "200 keys reach every shard");
    }

    /// A batch of one match of `s3://b/x` at `version`.
    fn batch(storage: &dyn Storage, key: &str, version: &str) {
        let record = format!(r#"{{"version": "{version}", "stamp": "{version}", "run_id": "r"}}"#);
        let m = r#"{"rule": "r", "time_us": 0, "time": "", "dedupe": "d", "title": "t", "severity": "medium", "context": {}, "source": "s3://b/x#1", "event": {}, "description": null, "runbook": null, "reference": null, "destinations": [], "explicit_destinations": false}"#;
        let text = format!(
            "{{\"round\": \"r\", \"inputs\": {{\"s3://b/x\": {record}}}}}\n{{\"input\": \"s3://b/x\", \"m\": {m}}}\n"
        );
        storage.write(key, text.as_bytes()).unwrap();
    }

    #[test]
    fn a_batch_sent_again_adds_nothing_even_for_a_reuploaded_object() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::LocalStorage::new(dir.path());
        let (mut applied, mut inputs) = (BTreeMap::new(), BTreeMap::new());
        let mut matches = MatchSpool::new().unwrap();
        let mut merge = |version: &str| {
            batch(&storage, "b.jsonl", version);
            read_batch(&storage, "b.jsonl", &mut applied, &mut inputs, &mut matches).unwrap();
            matches.len()
        };
        assert_eq!(merge("v1"), 1);
        assert_eq!(merge("v1"), 1, "the same batch again adds nothing");
        assert_eq!(merge("v2"), 2, "a new version of the object counts");
        assert_eq!(merge("v2"), 2, "and its batch sent again does not");
    }

    #[test]
    fn applied_records_are_forgotten_after_fourteen_days() {
        let now = chrono::Utc::now();
        let at = |t: chrono::DateTime<chrono::Utc>| InputRecord {
            version: "v".into(),
            stamp: "v".into(),
            run_id: format!("{}-0a0b0c", t.format("%Y%m%dT%H%M%S%.3fZ")),
        };
        let mut applied = BTreeMap::from([
            ("old".to_string(), at(now - chrono::Duration::days(15))),
            ("recent".to_string(), at(now - chrono::Duration::days(13))),
            (
                "odd".to_string(),
                InputRecord {
                    run_id: "unknown".into(),
                    ..at(now)
                },
            ),
        ]);
        forget_old_applied(&mut applied, now);
        assert_eq!(applied.keys().collect::<Vec<_>>(), ["odd", "recent"]);
    }

    #[test]
    fn a_source_names_its_input() {
        let names = HashMap::from([
            ("s3://b/k.json".to_string(), "s3://b/k.json".to_string()),
            ("logs/a.jsonl".to_string(), "/abs/logs/a.jsonl".to_string()),
        ]);
        assert_eq!(
            input_of("s3://b/k.json#12", &names).map(String::as_str),
            Some("s3://b/k.json")
        );
        assert_eq!(
            input_of("logs/a.jsonl:3", &names).map(String::as_str),
            Some("/abs/logs/a.jsonl")
        );
        assert_eq!(input_of("-:3", &names), None);
    }
}
