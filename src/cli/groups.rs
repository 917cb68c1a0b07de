//! The FIFO queue that orders the grouping shards' merges: a round sends
//! one message per shard it left batches for (message group = the shard,
//! so SQS hands one shard's messages to one consumer at a time); a worker
//! that receives one merges that shard once its batches have settled, and
//! deletes the message after the merge's commit (or puts it back until
//! they settle). A sweep re-sends a message for any shard with batches and
//! no message (a worker stopped between writing batches and sending), at
//! most once per settle period across all workers (deduplication ids).

use super::context::from_engine;
use crate::engine::{self, Merged, Settle};
use crate::queue::{QueueError, Received, SqsQueue};
use crate::text::count;
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How a worker merges the shards it is handed.
pub(super) struct MergeOptions {
    pub settle: Settle,
    /// How long a received group message stays hidden while merging.
    pub hold: Duration,
    pub deliver: bool,
}

/// The group queue: `url` (`--group-queue`, or `group_queue:` in
/// `ravenwatch.yml`), else `<input queue name>-groups.fifo` beside the
/// input queue (created if missing).
///
/// # Errors
/// The queue cannot be created.
pub(super) fn open(input: &SqsQueue, url: Option<&str>, settle: Settle) -> Result<SqsQueue> {
    if let Some(url) = url {
        return Ok(input.with_url(url));
    }
    let name = groups_name(input.url());
    input
        .create_fifo_beside(&name, settle.quiet.max(Duration::from_secs(30)))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nthe worker creates the queue of the grouping shards' merges, {name}, beside the input queue: allow it sqs:CreateQueue, or create it yourself (FIFO) and name it with --group-queue or group_queue: in ravenwatch.yml"
            )
        })
}

/// `<name>-groups.fifo` for the queue at `url` (a FIFO input queue's
/// `.fifo` is dropped first).
pub(super) fn groups_name(url: &str) -> String {
    let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
    let name = name.strip_suffix(".fifo").unwrap_or(name);
    // SQS names: at most 80 characters, `.fifo` included.
    let stem: String = name.chars().take(80 - "-groups.fifo".len()).collect();
    format!("{stem}-groups.fifo")
}

fn group_of(shard: u32) -> String {
    format!("shard-{shard:03}")
}

fn body(shard: u32) -> String {
    serde_json::json!({ "shard": shard }).to_string()
}

/// The shard a group message names.
pub(super) fn shard_of_message(message: &Received) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(&message.body).ok()?;
    u32::try_from(value.get("shard")?.as_u64()?).ok()
}

/// One message per (round, shard) a round left batches for.
///
/// # Errors
/// The send failed (the sweep sends them later).
pub(super) fn trigger(groups: &SqsQueue, rounds: &[(String, Vec<u32>)]) -> Result<(), QueueError> {
    let messages: Vec<(String, String, String)> = rounds
        .iter()
        .flat_map(|(round, shards)| {
            shards
                .iter()
                .map(move |&k| (group_of(k), format!("{round}-{k}"), body(k)))
        })
        .collect();
    groups.send_fifo(&messages)
}

/// A message for every shard with batches older than the settle time, one
/// per shard and settle period whichever worker sends it.
///
/// # Errors
/// The send failed.
pub(super) fn sweep(
    groups: &SqsQueue,
    pending: &BTreeMap<u32, Duration>,
    settle: Settle,
) -> Result<(), QueueError> {
    let period = settle.quiet.as_secs().max(1);
    let bucket = chrono::Utc::now().timestamp().unsigned_abs() / period;
    let messages: Vec<(String, String, String)> = pending
        .iter()
        .filter(|(_, age)| **age >= settle.quiet)
        .map(|(&k, _)| (group_of(k), format!("sweep-{k}-{bucket}"), body(k)))
        .collect();
    groups.send_fifo(&messages)
}

/// What one look at the group queue did.
pub(super) struct Merging {
    /// Messages handled.
    pub handled: usize,
    /// The soonest a shard whose batches are settling can be merged.
    pub next: Option<Duration>,
}

/// Receives the group queue's visible messages (a few receives) and merges
/// their shards.
///
/// # Errors
/// The queue could not be read or written; a merge that fails is printed
/// and its message left to come back.
pub(super) fn merge_ready(
    project: &crate::config::Project,
    storage: &Arc<dyn crate::storage::Storage>,
    groups: &SqsQueue,
    options: &MergeOptions,
) -> Result<Merging> {
    let hold = options.hold;
    let mut handled = 0;
    let mut next: Option<Duration> = None;
    for _ in 0..4 {
        let messages = groups.receive(10, Duration::ZERO, hold)?;
        if messages.is_empty() {
            break;
        }
        handled += messages.len();
        let mut by_shard: BTreeMap<u32, Vec<Received>> = BTreeMap::new();
        let mut junk = Vec::new();
        for m in messages {
            match shard_of_message(&m) {
                Some(k) => by_shard.entry(k).or_default().push(m),
                None => junk.push(m),
            }
        }
        if !junk.is_empty() {
            eprintln!(
                "warning: {} in the group queue named no shard (deleted)",
                count(junk.len() as u64, "message")
            );
            groups.delete(&junk.iter().collect::<Vec<_>>())?;
        }
        // Deleted, or handed back after a while, in as few calls as the
        // shards' outcomes allow (deleted only after their merges commit).
        let mut done: Vec<Received> = Vec::new();
        let mut later: BTreeMap<u64, Vec<Received>> = BTreeMap::new();
        for (shard, messages) in by_shard {
            match engine::merge(
                project,
                storage,
                shard,
                Some(options.settle),
                options.deliver,
            ) {
                Ok(Merged::Done(report)) => {
                    print_merge(shard, &report);
                    done.extend(messages);
                }
                Ok(Merged::Nothing) => done.extend(messages),
                Ok(Merged::Waiting(wait)) => {
                    later
                        .entry(wait.as_secs().max(1))
                        .or_default()
                        .extend(messages);
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                }
                Err(e) if engine::lost_race(&e) => {
                    // Another process merged it meanwhile: look again soon.
                    later.entry(1).or_default().extend(messages);
                }
                Err(e) => {
                    eprintln!(
                        "error: shard {shard}: {:#} (its batches stay; tried again in {}s)",
                        from_engine(e),
                        options.settle.quiet.as_secs()
                    );
                    later
                        .entry(options.settle.quiet.as_secs().max(1))
                        .or_default()
                        .extend(messages);
                }
            }
        }
        groups.delete(&done.iter().collect::<Vec<_>>())?;
        for (seconds, messages) in later {
            groups.extend(&messages, Duration::from_secs(seconds))?;
        }
    }
    Ok(Merging { handled, next })
}

fn print_merge(shard: u32, report: &engine::RunReport) {
    let s = &report.summary;
    println!(
        "merge {}: shard {shard}, {} -> {} ({} activated)",
        s.run_id,
        crate::text::count_as(s.rule_matches, "rule match", "rule matches"),
        count(s.alerts, "alert"),
        s.activated_alerts,
    );
    for e in report.errors.iter().chain(&report.unrecorded).take(3) {
        println!("  error: {} {}", e.source.as_deref().unwrap_or(""), e.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_queue_is_named_after_the_input_queue() {
        assert_eq!(
            groups_name("https://sqs.eu-west-1.amazonaws.com/111122223333/cloudtrail-objects"),
            "cloudtrail-objects-groups.fifo"
        );
        assert_eq!(
            groups_name("http://127.0.0.1:4566/000000000000/in.fifo"),
            "in-groups.fifo"
        );
        let long = format!("http://h/1/{}", "q".repeat(80));
        assert_eq!(groups_name(&long).len(), 80);
    }
}
