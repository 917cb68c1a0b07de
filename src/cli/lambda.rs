//! `ravenwatch lambda`: the same binary as an AWS Lambda custom runtime
//! (`bootstrap`) behind SQS event source mappings. Records of the input
//! queue are processed as a queue worker's round (`queue::process`); with
//! `--group-queue`, the round leaves batches for the grouping shards and
//! triggers them, and records of that FIFO queue (a second mapping) merge
//! their shards. The answer lists the messages that failed or must wait
//! (`batchItemFailures`, with `ReportBatchItemFailures` on the mapping), so
//! SQS deletes the others and hands those out again.

use super::args::{GlobalArgs, GroupingArgs, Outcome};
use super::context::{from_engine, load_project, open_storage};
use super::queue::{process, round_options};
use crate::engine::{self, Merged};
use crate::queue::{Received, SqsQueue};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::time::Duration;

const API_VERSION: &str = "2018-06-01";

pub(super) fn serve(
    global: &GlobalArgs,
    workers: Option<usize>,
    grouping: &GroupingArgs,
) -> Result<Outcome> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .context("AWS_LAMBDA_RUNTIME_API is not set: `ravenwatch lambda` runs inside AWS Lambda (or its emulator)")?;
    let base = format!("http://{api}/{API_VERSION}/runtime");
    // The next invocation is a long poll: no timeout on it.
    let http = reqwest::blocking::Client::builder()
        .timeout(None::<Duration>)
        .build()?;
    let ready = load_project(global).and_then(|p| {
        let storage = open_storage(global, &p)?;
        let named = grouping
            .group_queue
            .as_ref()
            .or(p.settings.group_queue.as_ref());
        let groups = match named {
            Some(url) => {
                engine::enable_sharding(storage.as_ref(), grouping.shards).map_err(from_engine)?;
                Some(SqsQueue::open(url, &p.settings.aws))
            }
            None => None,
        };
        Ok((storage, groups, p))
    });
    let (storage, groups, project) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            let _ = http
                .post(format!("{base}/init/error"))
                .header("Lambda-Runtime-Function-Error-Type", "Ravenwatch.Init")
                .body(
                    json!({"errorMessage": format!("{e:#}"), "errorType": "Ravenwatch.Init"})
                        .to_string(),
                )
                .send();
            return Err(e);
        }
    };
    let options = round_options(workers, true);
    let settle = grouping.settle();
    loop {
        let next = http
            .get(format!("{base}/invocation/next"))
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .context("the Lambda runtime API did not hand out the next invocation")?;
        let request = next
            .headers()
            .get("Lambda-Runtime-Aws-Request-Id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let event: Value = next
            .text()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let answer = match records(&event) {
            Ok(records) => {
                let (merges, messages): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(|(_, fifo)| *fifo);
                let messages: Vec<Received> = messages.into_iter().map(|(m, _)| m).collect();
                let round = process(&project, &storage, &options, &messages);
                let mut failures: Vec<Value> = round
                    .failed
                    .iter()
                    .map(|m| json!({"itemIdentifier": m.id}))
                    .collect();
                if let Some(groups) = &groups {
                    if let Err(e) = super::groups::trigger(groups, &round.batches) {
                        // Left to the sweep of a later invocation.
                        eprintln!("warning: {e}");
                    }
                    let merges: Vec<Received> = merges.into_iter().map(|(m, _)| m).collect();
                    failures.extend(
                        merge_records(&project, &storage, &merges, settle)
                            .into_iter()
                            .map(|id| json!({"itemIdentifier": id})),
                    );
                    let swept = engine::pending(storage.as_ref())
                        .map_err(from_engine)
                        .and_then(|p| Ok(super::groups::sweep(groups, &p, settle)?));
                    if let Err(e) = swept {
                        eprintln!("warning: {e:#}");
                    }
                }
                http.post(format!("{base}/invocation/{request}/response"))
                    .body(json!({"batchItemFailures": failures}).to_string())
                    .send()
            }
            Err(why) => http
                .post(format!("{base}/invocation/{request}/error"))
                .header("Lambda-Runtime-Function-Error-Type", "Ravenwatch.Event")
                .body(json!({"errorMessage": why, "errorType": "Ravenwatch.Event"}).to_string())
                .send(),
        };
        answer
            .and_then(reqwest::blocking::Response::error_for_status)
            .context("the Lambda runtime API refused the answer")?;
    }
}

/// Merges the shards the group queue's records name; returns the ids of
/// the records to hand out again (batches still settling, a lost race, a
/// failure), which SQS does after the group queue's visibility timeout.
fn merge_records(
    project: &crate::config::Project,
    storage: &std::sync::Arc<dyn crate::storage::Storage>,
    records: &[Received],
    settle: engine::Settle,
) -> Vec<String> {
    let mut again = Vec::new();
    let mut done: std::collections::BTreeMap<u32, bool> = std::collections::BTreeMap::new();
    for record in records {
        let Some(shard) = super::groups::shard_of_message(record) else {
            eprintln!(
                "warning: group message {} names no shard (dropped)",
                record.id
            );
            continue;
        };
        let merged = *done.entry(shard).or_insert_with(|| {
            match engine::merge(project, storage, shard, Some(settle), true) {
                Ok(Merged::Done(_) | Merged::Nothing) => true,
                Ok(Merged::Waiting(_)) => false,
                Err(e) => {
                    if !engine::lost_race(&e) {
                        eprintln!("error: shard {shard}: {:#}", from_engine(e));
                    }
                    false
                }
            }
        });
        if !merged {
            again.push(record.id.clone());
        }
    }
    again
}

/// The SQS messages of an event source mapping's invocation, each with
/// whether it came from a FIFO queue (the grouping shards' queue).
fn records(event: &Value) -> Result<Vec<(Received, bool)>, String> {
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or("the invocation is not an SQS event (no Records)")?;
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
            if text("eventSource").as_deref() != Some("aws:sqs") {
                return Err(format!("Records[{i}] is not an SQS message"));
            }
            let fifo = text("eventSourceARN").is_some_and(|arn| arn.ends_with(".fifo"));
            let message = Received {
                id: text("messageId").ok_or(format!("Records[{i}] has no messageId"))?,
                receipt: text("receiptHandle").unwrap_or_default(),
                body: text("body").unwrap_or_default(),
                receive_count: r
                    .pointer("/attributes/ApproximateReceiveCount")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            };
            Ok((message, fifo))
        })
        .collect()
}
