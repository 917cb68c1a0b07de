//! The AWS requests this process sent, by service and operation (every
//! attempt, retries included: what AWS bills), counted by an interceptor
//! on the S3 and SQS clients, so a worker can say what an object costs in
//! requests.

use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts each request as it goes out.
#[derive(Debug)]
pub(crate) struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "ravenwatch-count-requests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let key = format!("{}:{}", metadata.service().to_lowercase(), metadata.name());
            if let Ok(mut counts) = COUNTS.lock() {
                *counts.entry(key).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// Requests sent so far (`s3:GetObject` → n).
pub fn request_counts() -> BTreeMap<String, u64> {
    COUNTS.lock().map(|c| c.clone()).unwrap_or_default()
}

/// `s3 1,234 (GetObject 600, PutObject 400, …), sqs 56 (…)`, or `None`
/// when no request was sent.
pub fn requests_line() -> Option<String> {
    let counts = request_counts();
    if counts.is_empty() {
        return None;
    }
    let mut services: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (key, n) in &counts {
        let (service, operation) = key.split_once(':').unwrap_or((key, ""));
        services.entry(service).or_default().push((operation, *n));
    }
    let parts: Vec<String> = services
        .iter()
        .map(|(service, ops)| {
            let total: u64 = ops.iter().map(|(_, n)| n).sum();
            let each: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
            format!("{service} {total} ({})", each.join(", "))
        })
        .collect();
    Some(parts.join(", "))
}
