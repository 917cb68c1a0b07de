//! `ravenwatch lambda`: the same binary as an AWS Lambda custom runtime
//! (`bootstrap`) behind an SQS event source mapping. Each invocation's
//! records are processed as a queue worker's round (`queue::process`); the
//! answer lists the messages that failed (`batchItemFailures`, with
//! `ReportBatchItemFailures` on the mapping), so SQS deletes the others and
//! hands those out again, toward the dead-letter queue.

use super::args::{GlobalArgs, Outcome};
use super::context::{load_project, open_storage};
use super::queue::{process, round_options};
use crate::queue::Received;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::time::Duration;

const API_VERSION: &str = "2018-06-01";

pub(super) fn serve(global: &GlobalArgs, workers: Option<usize>) -> Result<Outcome> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .context("AWS_LAMBDA_RUNTIME_API is not set: `ravenwatch lambda` runs inside AWS Lambda (or its emulator)")?;
    let base = format!("http://{api}/{API_VERSION}/runtime");
    // The next invocation is a long poll: no timeout on it.
    let http = reqwest::blocking::Client::builder()
        .timeout(None::<Duration>)
        .build()?;
    let ready = load_project(global).and_then(|p| Ok((open_storage(global, &p)?, p)));
    let (storage, project) = match ready {
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
            Ok(messages) => {
                let round = process(&project, &storage, &options, &messages);
                let failures: Vec<Value> = round
                    .failed
                    .iter()
                    .map(|m| json!({"itemIdentifier": m.id}))
                    .collect();
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

/// The SQS messages of an event source mapping's invocation.
fn records(event: &Value) -> Result<Vec<Received>, String> {
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
            Ok(Received {
                id: text("messageId").ok_or(format!("Records[{i}] has no messageId"))?,
                receipt: text("receiptHandle").unwrap_or_default(),
                body: text("body").unwrap_or_default(),
                receive_count: r
                    .pointer("/attributes/ApproximateReceiveCount")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
        })
        .collect()
}
