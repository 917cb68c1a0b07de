//! S3 event notifications read from SQS: what `ravenwatch worker --queue`
//! consumes. Parsing is pure (the three shapes AWS delivers: S3's own,
//! wrapped in SNS, and EventBridge); `sqs.rs` is the client.

mod sqs;

pub use sqs::{QueueError, Received, SqsQueue};

use serde_json::Value;

/// One object a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    /// As the notification gave it (the ledger compares the listed ETag).
    pub etag: Option<String>,
}

impl ObjectRef {
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Objects created (other S3 events in the message are left out).
    Objects(Vec<ObjectRef>),
    /// `s3:TestEvent`, sent when a notification is configured: nothing to do.
    Test,
}

/// Reads a message body.
///
/// # Errors
/// A body that is none of the shapes, with why.
pub fn parse_notice(body: &str) -> Result<Notice, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the message is not JSON: {e}"))?;
    parse_value(&value, 0)
}

fn parse_value(value: &Value, depth: u8) -> Result<Notice, String> {
    let text = |v: &Value, path: &[&str]| -> Option<String> {
        let mut v = v;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_str().map(str::to_string)
    };
    // SNS wraps the S3 notification as a JSON string in `Message`.
    if let (Some("Notification"), Some(inner)) = (
        value.get("Type").and_then(Value::as_str),
        value.get("Message").and_then(Value::as_str),
    ) {
        if depth > 0 {
            return Err("an SNS envelope inside another".into());
        }
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| format!("the SNS message is not JSON: {e}"))?;
        return parse_value(&inner, depth + 1);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        let mut objects = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let name = text(record, &["eventName"]).unwrap_or_default();
            if text(record, &["eventSource"]).as_deref() != Some("aws:s3") {
                return Err(format!("Records[{i}] is not an S3 event"));
            }
            if !name.starts_with("ObjectCreated:") {
                continue;
            }
            let bucket = text(record, &["s3", "bucket", "name"])
                .ok_or_else(|| format!("Records[{i}] has no s3.bucket.name"))?;
            let key = text(record, &["s3", "object", "key"])
                .ok_or_else(|| format!("Records[{i}] has no s3.object.key"))?;
            objects.push(ObjectRef {
                bucket,
                key: decode_key(&key).ok_or_else(|| {
                    format!("Records[{i}]: s3.object.key {key:?} is not URL-encoded text")
                })?,
                etag: text(record, &["s3", "object", "eTag"]),
            });
        }
        return Ok(Notice::Objects(objects));
    }
    if text(value, &["source"]).as_deref() == Some("aws.s3") {
        if text(value, &["detail-type"]).as_deref() != Some("Object Created") {
            return Ok(Notice::Objects(Vec::new()));
        }
        let bucket = text(value, &["detail", "bucket", "name"])
            .ok_or("the EventBridge event has no detail.bucket.name")?;
        let key = text(value, &["detail", "object", "key"])
            .ok_or("the EventBridge event has no detail.object.key")?;
        return Ok(Notice::Objects(vec![ObjectRef {
            bucket,
            key,
            etag: text(value, &["detail", "object", "etag"]),
        }]));
    }
    Err("not an S3 event notification (neither Records, an SNS envelope, nor an EventBridge event from aws.s3)".into())
}

/// S3 notifications URL-encode keys, with `+` for a space.
fn decode_key(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(bucket: &str, key: &str, etag: Option<&str>) -> ObjectRef {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            etag: etag.map(Into::into),
        }
    }

    #[test]
    fn s3_notifications_in_their_three_shapes() {
        let direct = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"logs"},"object":{"key":"AWSLogs/a+b%2Bc%3D.json.gz","eTag":"e1"}}},
            {"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete",
            "s3":{"bucket":{"name":"logs"},"object":{"key":"gone"}}}]}"#;
        assert_eq!(
            parse_notice(direct),
            Ok(Notice::Objects(vec![object(
                "logs",
                "AWSLogs/a b+c=.json.gz",
                Some("e1")
            )]))
        );
        let sns = serde_json::json!({"Type": "Notification", "Message": direct}).to_string();
        assert_eq!(parse_notice(&sns), parse_notice(direct));
        let bridge = r#"{"source":"aws.s3","detail-type":"Object Created",
            "detail":{"bucket":{"name":"logs"},"object":{"key":"a b.json","etag":"e2"}}}"#;
        assert_eq!(
            parse_notice(bridge),
            Ok(Notice::Objects(vec![object(
                "logs",
                "a b.json",
                Some("e2")
            )]))
        );
        assert_eq!(
            parse_notice(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"logs"}"#),
            Ok(Notice::Test)
        );
    }

    #[test]
    fn other_messages_say_what_they_lack() {
        insta::assert_snapshot!(
            [
                parse_notice("not json").unwrap_err(),
                parse_notice(r#"{"hello":1}"#).unwrap_err(),
                parse_notice(r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"}}}]}"#).unwrap_err(),
                parse_notice(r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#).unwrap_err(),
            ]
            .join("\n")
        );
    }
}
