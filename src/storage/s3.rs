//! S3 storage (aws-sdk-s3 on a shared tokio runtime).
//!
//! The rest of the engine is synchronous, so each call blocks on the
//! runtime; concurrency comes from callers running several calls at once
//! (log objects are fetched ahead on reader threads). Large writes use
//! multipart upload, large reads stream, listings follow continuation
//! tokens, and conditional writes (`If-Match` / `If-None-Match`) protect
//! objects that several runs may update. Transient failures are retried by
//! the SDK's standard retry strategy with exponential backoff.

use super::{AwsSettings, Listing, ObjectInfo, Precondition, Result, Storage, StorageError};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

/// Objects above this size are uploaded in parts of this size.
pub const MULTIPART_PART_SIZE: usize = 16 * 1024 * 1024;

/// The tokio runtime AWS clients run on (S3 here, SQS in `queue`).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ravenwatch-s3")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime for S3")
    })
}

/// The innermost error of a chain ("Connection refused (os error 111)"),
/// which is what a person needs, without the SDK's wrapper layers.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A bucket and a key prefix.
#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Storage(s3://{}/{})", self.bucket, self.prefix)
    }
}

/// Splits `s3://bucket/prefix` into bucket and prefix (no trailing `/`).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| StorageError::Config(format!("`{url}` is not an s3:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StorageError::Config(format!(
            "`{url}` names no bucket (expected s3://bucket/prefix)"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// A 404 that is not a missing bucket: the object is absent (servers
/// that do not name the error in a typed way still say 404).
fn is_missing_object<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
        && err.code() != Some("NoSuchBucket")
}

/// Whether a call failed because no credentials provider had any (the
/// SDK then names only the last one it tried, e.g. "IMDS is disabled").
fn is_credentials_failure<E: std::error::Error + 'static>(err: &E) -> bool {
    let text = DisplayErrorContext(err).to_string().to_ascii_lowercase();
    text.contains("no credentials")
        || text.contains("credentials provider")
        || text.contains("failed to load credentials")
        || text.contains("credentialserror")
}

/// What was looked for and how to give credentials.
fn no_credentials_message() -> String {
    let imds = match std::env::var("AWS_EC2_METADATA_DISABLED") {
        Ok(v) if v.eq_ignore_ascii_case("true") => {
            "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"
        }
        _ => "EC2 instance metadata",
    };
    format!(
        "no AWS credentials found (checked: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
         AWS_PROFILE and the shared config and credentials files, web identity \
         (AWS_WEB_IDENTITY_TOKEN_FILE), ECS container credentials, {imds}): set \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an \
         instance or task role"
    )
}

/// The AWS settings every client starts from: ravenwatch.yml's values win
/// over the standard environment (region, endpoint, profile, credentials).
pub(crate) async fn shared_config(aws: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &aws.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(profile) = &aws.profile {
        loader = loader.profile_name(profile);
    }
    loader.load().await
}

impl S3Storage {
    /// A client for `s3://bucket/prefix`. Settings from ravenwatch.yml win
    /// over the standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// profiles, the credentials chain). Nothing is contacted here.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn open(url: &str, aws: &AwsSettings) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        let client = runtime().block_on(async {
            let shared = shared_config(aws).await;
            let mut config = aws_sdk_s3::config::Builder::from(&shared)
                .retry_config(
                    aws_sdk_s3::config::retry::RetryConfig::standard()
                        .with_max_attempts(aws.max_attempts.unwrap_or(4))
                        .with_initial_backoff(Duration::from_millis(200))
                        .with_max_backoff(Duration::from_secs(5)),
                )
                .timeout_config(
                    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(Duration::from_secs(120))
                        .build(),
                );
            if shared.region().is_none() {
                // A custom endpoint (SeaweedFS, MinIO) needs some region to sign with.
                config = config.region(aws_config::Region::new("us-east-1"));
            }
            config = config.interceptor(super::requests::CountRequests);
            if let Some(path_style) = aws.force_path_style {
                config = config.force_path_style(path_style);
            }
            Client::from_conf(config.build())
        });
        let endpoint = aws
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| "AWS S3".into());
        Ok(Self {
            client,
            bucket,
            prefix,
            endpoint,
        })
    }

    fn full_key(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, key),
        }
    }

    /// A listed object, its key relative to the root.
    fn object_info(&self, key: &str, object: &aws_sdk_s3::types::Object) -> ObjectInfo {
        ObjectInfo {
            key: self.relative(key).to_string(),
            size: object.size().unwrap_or(0).max(0) as u64,
            version: object.e_tag().unwrap_or_default().to_string(),
            modified_ms: object
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
        }
    }

    /// One clear error for a failed call: unreachable endpoint, the S3 error
    /// code (NoSuchBucket, AccessDenied, InvalidAccessKeyId, …), or a failed
    /// precondition.
    fn error<E>(&self, operation: &'static str, key: &str, err: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.url(key);
        match &err {
            SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
                return StorageError::Unreachable {
                    location,
                    endpoint: self.endpoint.clone(),
                    message: root_cause(&err),
                }
            }
            SdkError::DispatchFailure(_) if is_credentials_failure(&err) => {
                return StorageError::S3 {
                    location,
                    operation,
                    code: "NoCredentials".into(),
                    message: no_credentials_message(),
                }
            }
            SdkError::TimeoutError(_) => {
                return StorageError::Unreachable {
                    location,
                    endpoint: self.endpoint.clone(),
                    message: "timed out".into(),
                }
            }
            _ => {}
        }
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err
            .code()
            .map(str::to_string)
            .or_else(|| match status {
                Some(404) => Some("NotFound".into()),
                Some(403) => Some("Forbidden".into()),
                Some(412) => Some("PreconditionFailed".into()),
                Some(s) => Some(format!("HTTP {s}")),
                None => None,
            })
            .unwrap_or_else(|| "Error".into());
        if code == "PreconditionFailed" || code == "ConditionalRequestConflict" {
            return StorageError::Conflict { location };
        }
        let message = match code.as_str() {
            "NoSuchBucket" => format!("bucket `{}` does not exist", self.bucket),
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" => format!(
                "{} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile)",
                err.message().unwrap_or("the credentials were not accepted")
            ),
            _ => match (err.message(), status) {
                (Some(m), _) => m.to_string(),
                (None, Some(s)) => format!("HTTP {s}"),
                (None, None) => root_cause(&err),
            },
        };
        StorageError::S3 {
            location,
            operation,
            code,
            message,
        }
    }

    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let full = self.full_key(key);
        runtime().block_on(async {
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(err) => {
                    if err.as_service_error().is_some_and(|e| e.is_no_such_key())
                        || is_missing_object(&err)
                    {
                        return Ok(None);
                    }
                    return Err(self.error("GetObject", key, err));
                }
            };
            let etag = out.e_tag().unwrap_or_default().to_string();
            let bytes = out.body.collect().await.map_err(|e| StorageError::S3 {
                location: self.url(key),
                operation: "GetObject",
                code: "ReadError".into(),
                message: e.to_string(),
            })?;
            Ok(Some((bytes.into_bytes().to_vec(), etag)))
        })
    }

    /// A single PUT (multipart above the part size when unconditional);
    /// returns the ETag the server gave.
    fn put(
        &self,
        key: &str,
        data: &[u8],
        condition: Option<&Precondition>,
    ) -> Result<Option<String>> {
        let full = self.full_key(key);
        if data.len() > MULTIPART_PART_SIZE && condition.is_none() {
            return self
                .put_multipart(key, &mut std::io::Cursor::new(data))
                .map(|()| None);
        }
        runtime().block_on(async {
            let mut request = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .body(ByteStream::from(data.to_vec()));
            match condition {
                Some(Precondition::Absent) => request = request.if_none_match("*"),
                Some(Precondition::Version(etag)) => request = request.if_match(etag),
                None => {}
            }
            request
                .send()
                .await
                .map(|out| out.e_tag().map(str::to_string))
                .map_err(|e| self.error("PutObject", key, e))
        })
    }

    /// Uploads from a reader in parts; aborts the upload on any failure so
    /// no partial object appears.
    fn put_multipart(&self, key: &str, reader: &mut dyn Read) -> Result<()> {
        let full = self.full_key(key);
        let upload = runtime()
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send(),
            )
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = (|| -> Result<Vec<CompletedPart>> {
            let mut parts = Vec::new();
            let mut number = 1;
            loop {
                let mut buffer = Vec::with_capacity(MULTIPART_PART_SIZE);
                reader
                    .take(MULTIPART_PART_SIZE as u64)
                    .read_to_end(&mut buffer)
                    .map_err(|source| StorageError::Io {
                        location: self.url(key),
                        source,
                    })?;
                if buffer.is_empty() && number > 1 {
                    break;
                }
                let last = buffer.len() < MULTIPART_PART_SIZE;
                let part = runtime()
                    .block_on(
                        self.client
                            .upload_part()
                            .bucket(&self.bucket)
                            .key(&full)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .body(ByteStream::from(buffer))
                            .send(),
                    )
                    .map_err(|e| self.error("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .part_number(number)
                        .build(),
                );
                number += 1;
                if last {
                    break;
                }
            }
            Ok(parts)
        })();
        let completed = result.and_then(|parts| {
            runtime()
                .block_on(
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .send(),
                )
                .map(|_| ())
                .map_err(|e| self.error("CompleteMultipartUpload", key, e))
        });
        if completed.is_err() {
            let _ = runtime().block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        completed
    }
}

impl Storage for S3Storage {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?.map(|(data, _)| data))
    }

    fn info(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(key);
        let out = runtime().block_on(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send(),
        );
        let out = match out {
            Ok(out) => out,
            Err(err) => {
                if err.as_service_error().is_some_and(|e| e.is_not_found())
                    || is_missing_object(&err)
                {
                    return Ok(None);
                }
                return Err(self.error("HeadObject", key, err));
            }
        };
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            version: out.e_tag().unwrap_or_default().to_string(),
            modified_ms: out
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
        }))
    }

    fn read_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        self.get(key)
    }

    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let full = self.full_key(key);
        let out = runtime()
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send(),
            )
            .map_err(|e| self.error("GetObject", key, e))?;
        let body = out.body.into_async_read();
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            Box::pin(body),
            runtime().handle().clone(),
        )))
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put(key, data, None).map(|_| ())
    }

    fn write_if(&self, key: &str, data: &[u8], condition: &Precondition) -> Result<String> {
        match self.put(key, data, Some(condition))? {
            Some(etag) => Ok(etag),
            // A server that returns no ETag: the version is what a read sees.
            None => Ok(self
                .read_versioned(key)?
                .map(|(_, version)| version)
                .unwrap_or_default()),
        }
    }

    fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        let io = |source| StorageError::Io {
            location: path.display().to_string(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size as usize <= MULTIPART_PART_SIZE {
            let data = std::fs::read(path).map_err(io)?;
            return self.write(key, &data);
        }
        let mut file = std::fs::File::open(path).map_err(io)?;
        self.put_multipart(key, &mut file)
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self.list_after(prefix, None, false)?.objects)
    }

    fn list_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        delimited: bool,
    ) -> Result<Listing> {
        let folder = self.full_key(prefix.trim_end_matches('/'));
        let folder = if folder.is_empty() {
            folder
        } else {
            format!("{folder}/")
        };
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = runtime()
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&folder)
                        .set_start_after(start_after.map(|k| self.full_key(k)))
                        .set_delimiter(delimited.then(|| "/".to_string()))
                        .set_continuation_token(token.take())
                        .send(),
                )
                .map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            listing.requests += 1;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if !key.ends_with('/') {
                    listing.objects.push(self.object_info(key, object));
                }
            }
            for common in page.common_prefixes() {
                if let Some(p) = common.prefix() {
                    let p = self.relative(p).trim_end_matches('/');
                    listing.folders.push(p.to_string());
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        listing.folders.sort();
        Ok(listing)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        runtime()
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error("DeleteObject", key, e))
    }

    /// Lists at most one key under the prefix: this proves the endpoint
    /// answers, the bucket exists and the credentials may list it, and
    /// (unlike HeadBucket) a failure carries an S3 error code.
    fn check(&self) -> Result<()> {
        let prefix = self.full_key("");
        runtime()
            .block_on(
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .max_keys(1)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error("ListObjectsV2", "", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        assert_eq!(
            parse_url("s3://b/some/prefix/").unwrap(),
            ("b".to_string(), "some/prefix".to_string())
        );
        assert_eq!(
            parse_url("s3://b").unwrap(),
            ("b".to_string(), String::new())
        );
        assert!(parse_url("s3:///x").is_err());
    }
}
