//! The SQS calls a queue worker makes (aws-sdk-sqs on the runtime the S3
//! client uses, with the same settings): receive, delete after commit,
//! extend the visibility of messages still in hand, and send to (and
//! create) the FIFO queue that orders each grouping shard's merges.

use crate::storage::{aws_runtime, aws_shared_config, AwsSettings};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use std::time::Duration;

/// An SQS call that failed, naming the queue and the operation.
#[derive(Debug, thiserror::Error)]
#[error("{queue}: {operation} failed: {message}")]
pub struct QueueError {
    pub queue: String,
    pub operation: &'static str,
    pub message: String,
}

/// A message in hand.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed this message out (1 the first time).
    pub receive_count: u32,
}

/// One queue, by URL.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    /// A client for the queue at `url`; nothing is contacted here.
    pub fn open(url: &str, aws: &AwsSettings) -> Self {
        let client = aws_runtime().block_on(async {
            let shared = aws_shared_config(aws).await;
            let mut config = aws_sdk_sqs::config::Builder::from(&shared).retry_config(
                aws_sdk_sqs::config::retry::RetryConfig::standard()
                    .with_max_attempts(aws.max_attempts.unwrap_or(4)),
            );
            config = config.interceptor(crate::storage::CountRequests);
            if shared.region().is_none() {
                config = config.region(aws_config::Region::new("us-east-1"));
            }
            Client::from_conf(config.build())
        });
        Self {
            client,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Another queue reached with the same client.
    #[must_use]
    pub fn with_url(&self, url: &str) -> Self {
        Self {
            client: self.client.clone(),
            url: url.to_string(),
        }
    }

    fn error(&self, operation: &'static str, e: &impl std::fmt::Display) -> QueueError {
        QueueError {
            queue: self.url.clone(),
            operation,
            message: e.to_string(),
        }
    }

    /// The first entry a batch call refused, as an error naming it.
    fn refused(
        &self,
        operation: &'static str,
        failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    ) -> Result<(), QueueError> {
        match failed.first() {
            None => Ok(()),
            Some(f) => Err(self.error(
                operation,
                &format!("message {}: {}", f.id(), f.message().unwrap_or(f.code())),
            )),
        }
    }

    /// A failed call, with the SDK's whole chain of causes.
    fn sdk_error(&self, operation: &'static str, e: impl std::error::Error) -> QueueError {
        self.error(operation, &aws_sdk_sqs::error::DisplayErrorContext(e))
    }

    /// Up to `max` messages (1..=10), waiting up to `wait` for the first;
    /// each stays invisible to other consumers for `visibility`.
    ///
    /// # Errors
    /// The call failed after retries.
    pub fn receive(
        &self,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = aws_runtime()
            .block_on(
                self.client
                    .receive_message()
                    .queue_url(&self.url)
                    .max_number_of_messages(max.clamp(1, 10))
                    .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
                    .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX))
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send(),
            )
            .map_err(|e| self.sdk_error("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Received {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    /// Deletes `messages` (after their work is committed).
    ///
    /// # Errors
    /// The call failed, or SQS refused some entries (named).
    pub fn delete(&self, messages: &[&Received]) -> Result<(), QueueError> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .build()
                        .map_err(|e| self.error("DeleteMessageBatch", &e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = aws_runtime()
                .block_on(
                    self.client
                        .delete_message_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries))
                        .send(),
                )
                .map_err(|e| self.sdk_error("DeleteMessageBatch", e))?;
            self.refused("DeleteMessageBatch", out.failed())?;
        }
        Ok(())
    }

    /// A FIFO queue named `name` beside this one (same account and
    /// region), created if missing (`CreateQueue` returns an existing
    /// queue of the same attributes).
    ///
    /// # Errors
    /// The call failed (e.g. no `sqs:CreateQueue` permission).
    pub fn create_fifo_beside(&self, name: &str, visibility: Duration) -> Result<Self, QueueError> {
        let seconds = visibility.as_secs().to_string();
        let out = aws_runtime()
            .block_on(
                self.client
                    .create_queue()
                    .queue_name(name)
                    .attributes(QueueAttributeName::FifoQueue, "true")
                    .attributes(QueueAttributeName::VisibilityTimeout, seconds)
                    .send(),
            )
            .map_err(|e| self.sdk_error("CreateQueue", e))?;
        Ok(Self {
            client: self.client.clone(),
            url: out.queue_url().unwrap_or_default().to_string(),
        })
    }

    /// Sends `(group, deduplication id, body)` messages to this FIFO queue:
    /// SQS hands out one group's messages in order and one at a time, and
    /// drops a message whose deduplication id it saw in the last 5 minutes.
    ///
    /// # Errors
    /// The call failed, or SQS refused some entries (named).
    pub fn send_fifo(&self, messages: &[(String, String, String)]) -> Result<(), QueueError> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (group, dedup, body))| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_group_id(group)
                        .message_deduplication_id(dedup)
                        .message_body(body)
                        .build()
                        .map_err(|e| self.error("SendMessageBatch", &e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = aws_runtime()
                .block_on(
                    self.client
                        .send_message_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries))
                        .send(),
                )
                .map_err(|e| self.sdk_error("SendMessageBatch", e))?;
            self.refused("SendMessageBatch", out.failed())?;
        }
        Ok(())
    }

    /// Keeps `messages` invisible for `visibility` more.
    ///
    /// # Errors
    /// The call failed.
    pub fn extend(&self, messages: &[Received], visibility: Duration) -> Result<(), QueueError> {
        let seconds = i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX);
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .visibility_timeout(seconds)
                        .build()
                        .map_err(|e| self.error("ChangeMessageVisibilityBatch", &e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            aws_runtime()
                .block_on(
                    self.client
                        .change_message_visibility_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(entries))
                        .send(),
                )
                .map_err(|e| self.sdk_error("ChangeMessageVisibilityBatch", e))?;
        }
        Ok(())
    }
}
