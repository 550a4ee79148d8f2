//! The S3 backend, for any S3-compatible store (MinIO, SeaweedFS, AWS S3).
//!
//! Compatibility choices: path-style addressing and a custom endpoint from
//! config; request checksums only where the API requires them (the SDK's
//! newer default CRC trailers break several S3-compatible stores); retries
//! with exponential backoff and jitter on transient errors (the SDK's
//! standard retry strategy: throttling, 5xx, timeouts, connection errors).

use std::sync::Arc;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, CompletedMultipartUpload,
    CompletedPart, Delete, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use cascade_schemas::keys::TMP_PREFIX;
use cascade_schemas::ObjectKey;
use chrono::{DateTime, Utc};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{read_chunk, ByteRange, ObjectBody, ObjectMeta, PutOutcome, PutTuning, StorageError};
use crate::config::S3Config;

/// Lifecycle rule ids starting with this are Cascade's own (replaced at
/// start-up); every other rule on the bucket is the operator's and is kept.
pub const OWN_RULE_PREFIX: &str = "cascade-";

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// Chunk size when feeding a streamed part to the SDK.
const PART_CHUNK: usize = 256 * 1024;
/// Chunks queued between the reader and the SDK for a streamed part.
const PART_QUEUE: usize = 4;

/// A bucket in an S3-compatible store.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: Arc<str>,
    tuning: PutTuning,
    /// Longest wait for the store while streaming a part: to take the next
    /// chunk, then to answer once the part is sent (`attempt_timeout`).
    stall: std::time::Duration,
    connect_timeout: std::time::Duration,
    /// Timeouts of streamed part uploads: the connect timeout only, since
    /// a part moves at its producer's pace (guarded by `stall` instead).
    streaming_timeouts: TimeoutConfig,
    /// Storage class of every object written (`storage_class`).
    storage_class: Option<aws_sdk_s3::types::StorageClass>,
}

/// The body of a streamed part: chunks from a channel, of a known total
/// length (so the request carries a Content-Length and no chunked encoding).
struct ChannelBody {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.chunks.poll_recv(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Ready(Some(Err(e))) => std::task::Poll::Ready(Some(Err(e))),
            std::task::Poll::Ready(Some(Ok(chunk))) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// How feeding a streamed part ended.
enum Fed {
    /// All bytes went to the SDK.
    All,
    /// The request stopped taking bytes (it failed; its error says why).
    RequestGone,
}

/// Reads exactly `length` bytes of `body` into `chunks`. A read failure or
/// a body that ends early is also sent down the channel, so the request
/// fails instead of waiting for bytes that never come.
async fn feed_part(
    body: &mut (dyn AsyncRead + Unpin + Send),
    length: u64,
    chunks: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    stall: std::time::Duration,
) -> Result<Fed, StorageError> {
    let mut limited = (&mut *body).take(length);
    let mut sent = 0u64;
    while sent < length {
        let want = PART_CHUNK.min((length - sent) as usize);
        let mut buf = bytes::BytesMut::with_capacity(want);
        // Fill the chunk (request bodies arrive in small frames): fewer,
        // larger writes to the store's connection.
        let mut read = Ok(0);
        while buf.len() < want {
            read = limited.read_buf(&mut buf).await;
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
        let read = match read {
            Ok(_) if !buf.is_empty() => Ok(buf.len()),
            other => other,
        };
        let n = match read {
            Ok(0) => {
                let short = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the part's body ended after {sent} of {length} bytes"),
                );
                let _ = chunks.try_send(Err(std::io::Error::new(short.kind(), short.to_string())));
                return Err(StorageError::BodyRead(short));
            }
            Ok(n) => n,
            Err(e) => {
                let _ = chunks.try_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                return Err(StorageError::BodyRead(e));
            }
        };
        sent += n as u64;
        match tokio::time::timeout(stall, chunks.send(Ok(buf.freeze()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(Fed::RequestGone),
            Err(_) => {
                return Err(StorageError::Transient(format!(
                    "the store took no data for {stall:?} while receiving a part"
                )))
            }
        }
    }
    Ok(Fed::All)
}

/// Maps an SDK error to a [`StorageError`] by HTTP status and error code.
fn classify<E>(err: SdkError<E, HttpResponse>, key: &str) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let detail = match (&code, err.message()) {
        (Some(code), Some(message)) => {
            format!("S3 {code}: {message} (HTTP {})", status.unwrap_or(0))
        }
        (Some(code), None) => format!("S3 {code} (HTTP {})", status.unwrap_or(0)),
        _ => DisplayErrorContext(&err).to_string(),
    };
    match (&err, status, code.as_deref()) {
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NoSuchUpload" | "NotFound")) => {
            StorageError::NotFound {
                key: key.to_owned(),
            }
        }
        (_, Some(412), _) | (_, _, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            StorageError::PreconditionFailed {
                key: key.to_owned(),
            }
        }
        (_, Some(416), _) | (_, _, Some("InvalidRange")) => StorageError::InvalidRange { size: 0 },
        (_, Some(507), _) | (_, _, Some("XMinioStorageFull")) => StorageError::Full(detail),
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
            _,
        ) => StorageError::Transient(detail),
        (_, Some(408 | 429 | 500..=599), _)
        | (_, _, Some("SlowDown" | "RequestTimeout" | "InternalError")) => {
            StorageError::Transient(detail)
        }
        _ => StorageError::Permanent(detail),
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn abort_all(tasks: &[tokio::task::AbortHandle]) {
    for task in tasks {
        task.abort();
    }
}

/// Parses the total size out of `Content-Range: bytes a-b/total`.
fn total_from_content_range(value: &str) -> Option<u64> {
    value.rsplit('/').next()?.trim().parse().ok()
}

impl S3Store {
    /// Builds the client, makes sure the bucket exists (creating it when
    /// allowed) and applies the lifecycle rules.
    pub async fn connect(config: &S3Config, tuning: PutTuning) -> Result<Self, StorageError> {
        let pick = |configured: &str, env: &str| {
            if configured.is_empty() {
                std::env::var(env).unwrap_or_default()
            } else {
                configured.to_owned()
            }
        };
        let access_key = pick(config.access_key_id.expose(), "AWS_ACCESS_KEY_ID");
        let secret_key = pick(config.secret_access_key.expose(), "AWS_SECRET_ACCESS_KEY");
        if access_key.is_empty() || secret_key.is_empty() {
            return Err(StorageError::Permanent(
                "S3 credentials missing: set storage.s3.access_key_id and storage.s3.secret_access_key \
                 (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                    .to_owned(),
            ));
        }
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "cascade-config",
            ))
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(config.retry_initial_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: Arc::from(config.bucket.as_str()),
            tuning,
            stall: config.attempt_timeout,
            connect_timeout: config.connect_timeout,
            streaming_timeouts: TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .disable_operation_attempt_timeout()
                .disable_operation_timeout()
                .build(),
            storage_class: config
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
        };
        store.ensure_bucket(config).await?;
        if config.lifecycle.apply {
            store.apply_lifecycle(config).await;
        }
        Ok(store)
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client (benchmarks compare against a direct put).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn ensure_bucket(&self, config: &S3Config) -> Result<(), StorageError> {
        let bucket = self.bucket.as_ref();
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => match classify(e, bucket) {
                StorageError::NotFound { .. } if config.create_bucket => {}
                StorageError::NotFound { .. } => {
                    return Err(StorageError::Permanent(format!(
                        "bucket {bucket} does not exist and storage.s3.create_bucket is false"
                    )))
                }
                other => return Err(other),
            },
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => {
                tracing::info!(bucket, "created bucket");
                Ok(())
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e, bucket)),
        }
    }

    /// Applies the configured lifecycle rules, merged into the bucket's
    /// (see [`Self::merge_lifecycle_rules`]). A store that refuses them
    /// (some S3-compatible stores implement only part of the API) gets a
    /// warning with its answer; start-up goes on.
    async fn apply_lifecycle(&self, config: &S3Config) {
        let mut rules = Vec::new();
        if let Some(days) = config.lifecycle.abort_incomplete_multipart_days {
            rules.push(
                LifecycleRule::builder()
                    .id("cascade-abort-incomplete-multipart")
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix("").build())
                    .abort_incomplete_multipart_upload(
                        AbortIncompleteMultipartUpload::builder()
                            .days_after_initiation(i32::try_from(days).unwrap_or(i32::MAX))
                            .build(),
                    )
                    .build(),
            );
        }
        if let Some(days) = config.lifecycle.expire_tmp_days {
            rules.push(
                LifecycleRule::builder()
                    .id("cascade-expire-tmp")
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix(TMP_PREFIX).build())
                    .expiration(
                        LifecycleExpiration::builder()
                            .days(i32::try_from(days).unwrap_or(i32::MAX))
                            .build(),
                    )
                    .build(),
            );
        }
        let rules: Result<Vec<_>, _> = rules.into_iter().collect();
        let rules = match rules {
            Ok(rules) => rules,
            Err(error) => {
                tracing::warn!(error = %error, "cannot build lifecycle rules; none applied");
                return;
            }
        };
        let count = rules.len();
        match self
            .merge_lifecycle_rules(rules, |id| id.starts_with(OWN_RULE_PREFIX))
            .await
        {
            Ok(kept) => tracing::info!(
                bucket = %self.bucket,
                rules = count,
                operator_rules = kept,
                "applied bucket lifecycle rules, keeping the bucket's other rules"
            ),
            Err(error) => tracing::warn!(
                bucket = %self.bucket,
                error = %error,
                "the store refused the bucket lifecycle rules; continuing without them"
            ),
        }
    }

    /// Writes the bucket's lifecycle configuration as the rules it has,
    /// minus those `replaced` names (by id) and those `rules` carry ids of,
    /// plus `rules`: read, merge by rule id, write, so rules an operator put
    /// on the bucket survive. Returns how many of the bucket's rules were
    /// kept. (S3 has no conditional write for lifecycle configurations: two
    /// writers at once can lose one's change; Cascade writes at start-up.)
    pub async fn merge_lifecycle_rules(
        &self,
        rules: Vec<LifecycleRule>,
        replaced: impl Fn(&str) -> bool,
    ) -> Result<usize, StorageError> {
        let existing = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(self.bucket.as_ref())
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            // A bucket without a configuration answers this.
            Err(error) if error.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(error) => return Err(classify(error, &self.bucket)),
        };
        let new_ids: Vec<&str> = rules.iter().filter_map(|r| r.id()).collect();
        let kept: Vec<LifecycleRule> = existing
            .into_iter()
            .filter(|rule| {
                rule.id()
                    .is_none_or(|id| !replaced(id) && !new_ids.contains(&id))
            })
            .collect();
        let kept_count = kept.len();
        let merged: Vec<LifecycleRule> = kept.into_iter().chain(rules).collect();
        if merged.is_empty() {
            self.client
                .delete_bucket_lifecycle()
                .bucket(self.bucket.as_ref())
                .send()
                .await
                .map_err(|e| classify(e, &self.bucket))?;
            return Ok(0);
        }
        let lifecycle = BucketLifecycleConfiguration::builder()
            .set_rules(Some(merged))
            .build()
            .map_err(|e| StorageError::Permanent(format!("lifecycle configuration: {e}")))?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(self.bucket.as_ref())
            .lifecycle_configuration(lifecycle)
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket))?;
        Ok(kept_count)
    }

    /// Adds (or replaces, by id) one rule expiring objects under `prefix`
    /// after `days`, keeping the bucket's other rules: what an operator's
    /// tooling would do, and what the tests use to play the operator.
    pub async fn put_expiration_rule(
        &self,
        id: &str,
        prefix: &str,
        days: u32,
    ) -> Result<(), StorageError> {
        let rule = LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .expiration(
                LifecycleExpiration::builder()
                    .days(i32::try_from(days).unwrap_or(i32::MAX))
                    .build(),
            )
            .build()
            .map_err(|e| StorageError::Permanent(format!("lifecycle rule: {e}")))?;
        self.merge_lifecycle_rules(vec![rule], |_| false).await?;
        Ok(())
    }

    /// The lifecycle rule ids the bucket has (tests, diagnostics).
    pub async fn lifecycle_rule_ids(&self) -> Result<Vec<String>, StorageError> {
        let out = self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(self.bucket.as_ref())
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket))?;
        Ok(out
            .rules()
            .iter()
            .filter_map(|r| r.id().map(str::to_owned))
            .collect())
    }

    /// See [`super::ObjectStore::put_bytes`].
    pub async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .content_type(key.class().content_type())
            .set_storage_class(self.storage_class.clone())
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))?;
        Ok(())
    }

    /// See [`super::ObjectStore::put_if_absent`].
    pub async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<PutOutcome, StorageError> {
        let sent = self
            .client
            .put_object()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .content_type(key.class().content_type())
            .set_storage_class(self.storage_class.clone())
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match sent.map_err(|e| classify(e, key.as_str())) {
            Ok(_) => Ok(PutOutcome::Created),
            Err(StorageError::PreconditionFailed { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// See [`super::ObjectStore::put`]: one PutObject below the multipart
    /// threshold, otherwise a multipart upload with `upload_concurrency`
    /// parts in flight, aborted on any failure.
    pub async fn put(
        &self,
        key: &ObjectKey,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, StorageError> {
        let threshold = self.tuning.multipart_threshold;
        // Read up to the threshold (plus one byte) to learn which path to take.
        let head_limit = usize::try_from(threshold.saturating_add(1)).unwrap_or(usize::MAX);
        let first = read_chunk(body, head_limit).await?;
        if (first.len() as u64) <= threshold {
            let len = first.len() as u64;
            self.put_bytes(key, first).await?;
            return Ok(len);
        }
        let upload_id = self.create_multipart(key).await?;
        match self.upload_parts(key, &upload_id, first, body).await {
            Ok(written) => Ok(written),
            Err(error) => {
                if let Err(abort_error) = self.abort_multipart(key, &upload_id).await {
                    // The lifecycle rule cleans up what this leaves behind.
                    tracing::warn!(key = %key, error = %abort_error, "cannot abort multipart upload");
                }
                Err(error)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, StorageError> {
        let part_size = self.tuning.part_size;
        let mut in_flight = FuturesOrdered::new();
        let mut completed: Vec<(u32, String)> = Vec::new();
        let mut written = 0u64;
        let mut part_number = 0i32;
        let mut aborts = Vec::new();
        // The head read may hold more than one part; split it. Every part but
        // the last must be exactly `part_size` (S3 refuses small middle parts).
        let mut pending = first;
        let mut input_done = false;
        loop {
            while in_flight.len() < self.tuning.upload_concurrency
                && !(input_done && pending.is_empty())
            {
                if pending.len() < part_size && !input_done {
                    let more = match read_chunk(body, part_size - pending.len()).await {
                        Ok(more) => more,
                        Err(e) => {
                            abort_all(&aborts);
                            return Err(e);
                        }
                    };
                    if more.is_empty() {
                        input_done = true;
                    } else if pending.is_empty() {
                        pending = more;
                    } else {
                        let mut joined = bytes::BytesMut::with_capacity(pending.len() + more.len());
                        joined.extend_from_slice(&pending);
                        joined.extend_from_slice(&more);
                        pending = joined.freeze();
                    }
                    continue;
                }
                let take = pending.len().min(part_size);
                let part = pending.split_to(take);
                part_number += 1;
                written += part.len() as u64;
                let request = self
                    .client
                    .upload_part()
                    .bucket(self.bucket.as_ref())
                    .key(key.as_str())
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .body(ByteStream::from(part))
                    .send();
                let number = part_number;
                // Spawned, so parts upload while the next one is being read.
                let task = tokio::spawn(async move { (number, request.await) });
                aborts.push(task.abort_handle());
                in_flight.push_back(task);
            }
            match in_flight.next().await {
                Some(joined) => {
                    let (number, result) = match joined {
                        Ok(done) => done,
                        Err(e) => {
                            abort_all(&aborts);
                            return Err(StorageError::Permanent(format!(
                                "part upload task failed: {e}"
                            )));
                        }
                    };
                    let output = match result.map_err(|e| classify(e, key.as_str())) {
                        Ok(output) => output,
                        Err(e) => {
                            abort_all(&aborts);
                            return Err(e);
                        }
                    };
                    completed.push((
                        number.unsigned_abs(),
                        output.e_tag().unwrap_or_default().to_owned(),
                    ));
                }
                None => break,
            }
        }
        self.complete_multipart(key, upload_id, &completed).await?;
        Ok(written)
    }

    /// See [`super::ObjectStore::create_multipart`].
    pub async fn create_multipart(&self, key: &ObjectKey) -> Result<String, StorageError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .content_type(key.class().content_type())
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))?;
        upload.upload_id().map(str::to_owned).ok_or_else(|| {
            StorageError::Permanent("store returned no multipart upload id".to_owned())
        })
    }

    /// See [`super::ObjectStore::upload_part`]. The bytes go from `body`
    /// through a short channel into the request as they arrive; the request
    /// has no attempt timeout (a part moves at its producer's pace) but
    /// fails if the store stops taking bytes, or does not answer once they
    /// are sent, for `attempt_timeout`. Not retried by the SDK (the body
    /// cannot be replayed); the caller retries the whole part.
    pub async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        length: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<String, StorageError> {
        let (sender, receiver) = tokio::sync::mpsc::channel(PART_QUEUE);
        let content_length = i64::try_from(length)
            .map_err(|_| StorageError::Permanent(format!("part length {length} too large")))?;
        let part_number = i32::try_from(part_number)
            .map_err(|_| StorageError::Permanent(format!("part number {part_number} too large")))?;
        let request = self
            .client
            .upload_part()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(content_length)
            .body(ByteStream::from_body_1_x(ChannelBody {
                chunks: receiver,
                remaining: length,
            }))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .timeout_config(self.streaming_timeouts.clone()),
            )
            .send();
        let mut request = std::pin::pin!(request);
        let feed = feed_part(body, length, sender, self.stall);
        let mut feed = std::pin::pin!(feed);
        let fed = tokio::select! {
            biased;
            fed = &mut feed => fed,
            answered = &mut request => {
                // The request ended before taking all bytes: it failed.
                return match answered {
                    Err(e) => Err(classify(e, key.as_str())),
                    Ok(_) => Err(StorageError::Permanent(format!(
                        "the store accepted part {part_number} of {key} before receiving all of it"
                    ))),
                };
            }
        };
        // On a read failure the request is dropped here, which closes it.
        fed?;
        let answered = tokio::time::timeout(self.stall, request)
            .await
            .map_err(|_| {
                StorageError::Transient(format!(
                    "no answer for {:?} after sending part {part_number} of {key}",
                    self.stall
                ))
            })?
            .map_err(|e| classify(e, key.as_str()))?;
        answered.e_tag().map(str::to_owned).ok_or_else(|| {
            StorageError::Permanent(format!(
                "the store returned no ETag for part {part_number} of {key}"
            ))
        })
    }

    /// See [`super::ObjectStore::upload_part_copy`]. The copy happens in the
    /// store, so its time grows with `length`: the attempt may take the
    /// configured attempt timeout plus a second per 10 MB.
    pub async fn upload_part_copy(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        source: &ObjectKey,
        length: u64,
    ) -> Result<String, StorageError> {
        let part_number = i32::try_from(part_number)
            .map_err(|_| StorageError::Permanent(format!("part number {part_number} too large")))?;
        let allowed = self.stall + std::time::Duration::from_secs(length / 10_000_000);
        let output = self
            .client
            .upload_part_copy()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(part_number)
            // Keys are made by cascade_schemas::keys: URL-safe as they are.
            .copy_source(format!("{}/{}", self.bucket, source.as_str()))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(self.connect_timeout)
                        .operation_attempt_timeout(allowed)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))?;
        output
            .copy_part_result()
            .and_then(|result| result.e_tag())
            .map(str::to_owned)
            .ok_or_else(|| {
                StorageError::Permanent(format!(
                    "the store returned no ETag for copied part {part_number} of {key}"
                ))
            })
    }

    /// See [`super::ObjectStore::complete_multipart`].
    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), StorageError> {
        let mut completed = Vec::with_capacity(parts.len());
        for (number, etag) in parts {
            let number = i32::try_from(*number)
                .map_err(|_| StorageError::Permanent(format!("part number {number} too large")))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))?;
        Ok(())
    }

    /// See [`super::ObjectStore::abort_multipart`].
    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()));
        match aborted {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// See [`super::ObjectStore::get`].
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, StorageError> {
        let output = self
            .client
            .get_object()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .set_range(range.map(|r| r.header_value()))
            .send()
            .await;
        let output = match output.map_err(|e| classify(e, key.as_str())) {
            Ok(o) => o,
            Err(StorageError::InvalidRange { .. }) => {
                // Report the real size, as HTTP's 416 Content-Range needs it.
                let size = self.head(key).await?.size;
                return Err(StorageError::InvalidRange { size });
            }
            Err(e) => return Err(e),
        };
        let length = u64::try_from(output.content_length().unwrap_or(0)).unwrap_or(0);
        let (size, served) = match (
            range,
            output.content_range().and_then(total_from_content_range),
        ) {
            (Some(r), Some(total)) => (total, Some(r.resolve(total)?)),
            // A store that ignored the range sent the whole object.
            _ => (length, None),
        };
        let meta = ObjectMeta {
            key: key.to_string(),
            size,
            etag: output.e_tag().map(str::to_owned),
            last_modified: to_chrono(output.last_modified()),
            storage_class: output.storage_class().map(|c| c.as_str().to_owned()),
        };
        let owned_key = key.to_string();
        let stream = futures::stream::unfold(output.body, move |mut body| {
            let key = owned_key.clone();
            async move {
                match body.next().await {
                    Some(Ok(bytes)) => Some((Ok(bytes), body)),
                    Some(Err(e)) => Some((
                        Err(StorageError::Transient(format!("reading {key}: {e}"))),
                        body,
                    )),
                    None => None,
                }
            }
        })
        .boxed();
        Ok(ObjectBody {
            meta,
            range: served,
            stream,
        })
    }

    /// See [`super::ObjectStore::head`].
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let output = self
            .client
            .head_object()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: u64::try_from(output.content_length().unwrap_or(0)).unwrap_or(0),
            etag: output.e_tag().map(str::to_owned),
            last_modified: to_chrono(output.last_modified()),
            storage_class: output.storage_class().map(|c| c.as_str().to_owned()),
        })
    }

    /// See [`super::ObjectStore::list`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket.as_ref())
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, prefix))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                    etag: object.e_tag().map(str::to_owned),
                    last_modified: to_chrono(object.last_modified()),
                    storage_class: object.storage_class().map(|c| c.as_str().to_owned()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// See [`super::ObjectStore::delete`].
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(self.bucket.as_ref())
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(e, key.as_str()))
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// See [`super::ObjectStore::delete_prefix`].
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let objects = self.list(prefix).await?;
        for batch in objects.chunks(DELETE_BATCH) {
            let identifiers: Result<Vec<_>, _> = batch
                .iter()
                .map(|o| ObjectIdentifier::builder().key(&o.key).build())
                .collect();
            let delete = identifiers
                .and_then(|ids| Delete::builder().set_objects(Some(ids)).quiet(true).build())
                .map_err(|e| {
                    StorageError::Permanent(format!("cannot build delete request: {e}"))
                })?;
            let output = self
                .client
                .delete_objects()
                .bucket(self.bucket.as_ref())
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify(e, prefix))?;
            if let Some(failure) = output.errors().first() {
                return Err(StorageError::Transient(format!(
                    "deleting {}: {} {}",
                    failure.key().unwrap_or("?"),
                    failure.code().unwrap_or("?"),
                    failure.message().unwrap_or("")
                )));
            }
        }
        Ok(objects.len() as u64)
    }

    /// See [`super::ObjectStore::ping`].
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(self.bucket.as_ref())
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("garbage"), None);
    }
}
