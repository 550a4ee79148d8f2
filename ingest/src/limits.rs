//! What one client can cost the API, bounded.
//!
//! - **Bodies keep a pace** ([`Pace`], [`paced`]): a per-chunk stall timeout
//!   (`ingest.body_timeout`), a minimum average rate over each window once a
//!   grace period has passed (`ingest.body_min_rate`, `body_rate_window`,
//!   `body_rate_grace`) and a deadline for the whole body
//!   (`ingest.body_deadline`). A body that trickles a byte every few seconds
//!   is cut off (408) like one that stops.
//! - **JSON bodies are small** ([`read_json_body`]): a byte limit per route,
//!   413 before reading when the declared length is over and as soon as the
//!   bytes read pass it; the whole body within `ingest.json_body_deadline`.
//!   serde_json's recursion limit (128) turns deeply nested documents into a
//!   400 `invalid_json` before they cost memory.
//! - **Uploads are counted** ([`UploadSlots`], [`upload_slot`]): at most
//!   `ingest.max_uploads` bodies received at once per process and
//!   `ingest.max_uploads_per_key` per API key; beyond, 429
//!   `too_many_uploads` with Retry-After, before any byte of the body is read
//!   and before the database is asked anything.
//!
//! No handler holds a database connection while it waits for a client's
//! bytes: claims and leases are taken and renewed with short statements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use cascade_platform::config::IngestConfig;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::auth::{Caller, KeyRef};
use crate::error::ApiError;
use crate::request::declared_length;

/// Seconds a client refused for too many uploads is asked to wait.
pub const UPLOAD_RETRY_AFTER_SECS: u64 = 5;

/// What the API enforces per process, built from `[ingest]`.
pub struct Limits {
    /// How fast upload bodies must arrive.
    pub pace: Pace,
    /// A JSON body must arrive whole within this.
    pub json_deadline: Duration,
    /// Uploads in progress.
    pub slots: Arc<UploadSlots>,
}

impl Limits {
    /// From the `[ingest]` config.
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            pace: Pace::from_config(config),
            json_deadline: config.json_body_deadline,
            slots: Arc::new(UploadSlots::new(
                config.max_uploads,
                config.max_uploads_per_key,
            )),
        }
    }
}

/// How fast a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Longest wait for the next chunk.
    pub stall: Duration,
    /// Fewest bytes per second, averaged over `window`; 0 turns it off.
    pub min_rate: u64,
    /// The averaging window of `min_rate`.
    pub window: Duration,
    /// From the body's start, how long before `min_rate` applies.
    pub grace: Duration,
    /// Longest the whole body may take.
    pub deadline: Duration,
}

impl Pace {
    /// From `ingest.body_timeout`, `body_min_rate`, `body_rate_window`,
    /// `body_rate_grace` and `body_deadline`.
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            stall: config.body_timeout,
            min_rate: config.body_min_rate.0,
            window: config.body_rate_window,
            grace: config.body_rate_grace,
            deadline: config.body_deadline,
        }
    }

    /// Bytes each window must bring.
    fn per_window(&self) -> u64 {
        let bytes = u128::from(self.min_rate) * self.window.as_millis() / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// Marker inside the I/O error raised when a body does not arrive in time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyTimedOut {
    /// No chunk for this long.
    #[error("stopped arriving (nothing for {0:?})")]
    Stalled(Duration),
    /// A window brought fewer bytes than the minimum rate asks.
    #[error("arrived slower than {min_rate} bytes/s over {window:?}")]
    TooSlow {
        /// Bytes per second asked for.
        min_rate: u64,
        /// The window it was averaged over.
        window: Duration,
    },
    /// The whole body took longer than this.
    #[error("took longer than {0:?}")]
    Deadline(Duration),
}

impl BodyTimedOut {
    fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, self)
    }
}

/// Where a paced body stands.
struct Clock {
    /// When the body was first asked for.
    started: Instant,
    /// Time spent waiting for the client in the current rate window (only
    /// once the grace has passed).
    waited: Duration,
    /// Bytes received in the current rate window.
    window_bytes: u64,
}

/// The chunks of `chunks`, cut off with a [`BodyTimedOut`] error when no
/// chunk comes for `pace.stall`, when they arrive slower than
/// `pace.min_rate` once `pace.grace` has passed, or when they take longer
/// than `pace.deadline` in all. Time counts from the first poll.
///
/// The rate is judged over time spent waiting for the client: each window
/// is `pace.window` of waiting, and must bring `min_rate * window` bytes.
/// While the consumer does not ask for more (the store is slow to take a
/// part, say), the client cannot send and is not held to the rate.
pub fn paced<S, E>(chunks: S, pace: Pace) -> impl Stream<Item = std::io::Result<Bytes>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let rated = pace.min_rate > 0 && !pace.window.is_zero();
    futures::stream::unfold(
        (chunks, None::<Clock>, false),
        move |(mut chunks, clock, done)| async move {
            if done {
                return None;
            }
            let mut clock = clock.unwrap_or_else(|| Clock {
                started: Instant::now(),
                waited: Duration::ZERO,
                window_bytes: 0,
            });
            let grace_end = after(clock.started, pace.grace);
            let deadline = after(clock.started, pace.deadline);
            loop {
                let wait_start = Instant::now();
                let stall_at = after(wait_start, pace.stall);
                // Waiting counts towards the window from the grace's end on.
                let counted_from = grace_end.max(wait_start);
                let mut wake = deadline.min(stall_at);
                if rated {
                    wake = wake.min(after(
                        counted_from,
                        pace.window.saturating_sub(clock.waited),
                    ));
                }
                let next = tokio::time::timeout_at(wake, chunks.next()).await;
                let now = Instant::now();
                if rated {
                    clock.waited += now.saturating_duration_since(counted_from);
                }
                let chunk = match next {
                    Ok(None) => return None,
                    Ok(Some(Err(error))) => {
                        return Some((Err(std::io::Error::other(error)), (chunks, None, true)))
                    }
                    Ok(Some(Ok(bytes))) => {
                        if now >= grace_end {
                            clock.window_bytes =
                                clock.window_bytes.saturating_add(bytes.len() as u64);
                        }
                        Some(bytes)
                    }
                    Err(_elapsed) if now >= deadline => {
                        let cause = BodyTimedOut::Deadline(pace.deadline);
                        return Some((Err(cause.into_io()), (chunks, None, true)));
                    }
                    Err(_elapsed) if now >= stall_at => {
                        let cause = BodyTimedOut::Stalled(pace.stall);
                        return Some((Err(cause.into_io()), (chunks, None, true)));
                    }
                    Err(_elapsed) => None,
                };
                if rated && clock.waited >= pace.window {
                    if clock.window_bytes < pace.per_window() {
                        let cause = BodyTimedOut::TooSlow {
                            min_rate: pace.min_rate,
                            window: pace.window,
                        };
                        return Some((Err(cause.into_io()), (chunks, None, true)));
                    }
                    // Fast enough: the next window starts.
                    clock.waited = Duration::ZERO;
                    clock.window_bytes = 0;
                }
                if let Some(bytes) = chunk {
                    return Some((Ok(bytes), (chunks, Some(clock), false)));
                }
            }
        },
    )
}

/// `duration` after `instant`, or a century after it if that overflows
/// (however long a configured duration is).
fn after(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .or_else(|| instant.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(instant)
}

/// Whether a `Content-Type` names JSON (`application/json` or `*/*+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype.ends_with("+json"))
}

/// A small JSON request body, whole: at most `max` bytes (413 before
/// reading when `Content-Length` is over, or as soon as the bytes read
/// pass it), within `deadline` (408; `ingest.json_body_deadline`). A body
/// that is not empty must be JSON if its `Content-Type` is given (415
/// otherwise).
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::BodyTooLarge { max: max as u64 };
    if declared_length(headers, "content-length")?.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::bad_request("body_read_failed", "reading the request body failed")
            })?;
            if bytes.len() + chunk.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    };
    let bytes = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(BodyTimedOut::Deadline(deadline).to_string()))??;
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap_or(""));
    if !bytes.iter().all(u8::is_ascii_whitespace) && content_type.is_some_and(|t| !is_json(t)) {
        return Err(ApiError::UnsupportedMediaType(
            "a request body must be JSON (Content-Type: application/json)",
        ));
    }
    Ok(bytes)
}

/// Why an upload slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// The key has this many uploads in progress already.
    Key(usize),
    /// The process has this many uploads in progress already.
    Process(usize),
}

impl From<SlotRefused> for ApiError {
    fn from(refused: SlotRefused) -> Self {
        let message = match refused {
            SlotRefused::Key(max) => format!(
                "this API key has {max} uploads in progress on this server, the most it may; retry when one ends"
            ),
            SlotRefused::Process(max) => format!(
                "this server is receiving {max} uploads, the most it takes at once; retry shortly"
            ),
        };
        ApiError::TooManyUploads {
            message,
            retry_after: UPLOAD_RETRY_AFTER_SECS,
        }
    }
}

/// Counts of the uploads in progress, per process and per key.
pub struct UploadSlots {
    max_total: usize,
    max_per_key: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Keys with at least one upload in progress (others are removed, so
    /// the map never outgrows `max_total`).
    per_key: HashMap<KeyRef, usize>,
}

impl UploadSlots {
    /// At most `max_total` uploads at once, `max_per_key` of them per key.
    pub fn new(max_total: usize, max_per_key: usize) -> Self {
        Self {
            max_total,
            max_per_key,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one upload by `key`, held until the guard is dropped.
    pub fn acquire(self: &Arc<Self>, key: KeyRef) -> Result<UploadSlot, SlotRefused> {
        let mut counts = self.counts();
        let of_key = counts.per_key.get(&key).copied().unwrap_or(0);
        if of_key >= self.max_per_key {
            return Err(SlotRefused::Key(self.max_per_key));
        }
        if counts.total >= self.max_total {
            return Err(SlotRefused::Process(self.max_total));
        }
        counts.total += 1;
        counts.per_key.insert(key, of_key + 1);
        Ok(UploadSlot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Uploads in progress: in all, and of `key`.
    pub fn in_use(&self, key: KeyRef) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.per_key.get(&key).copied().unwrap_or(0))
    }
}

/// One upload in progress; its slot is freed on drop.
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    key: KeyRef,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_key.remove(&self.key);
            }
        }
    }
}

/// Whether a request on an upload route carries an upload's bytes: a
/// simple upload (PUT), a tus PATCH, or a tus creation with a body.
fn carries_upload(request: &Request) -> bool {
    match *request.method() {
        Method::PUT | Method::PATCH => true,
        Method::POST => request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(crate::tus::OFFSET_CONTENT_TYPE)),
        _ => false,
    }
}

/// Middleware of the upload routes (after authentication): a request that
/// carries an upload's bytes holds an upload slot of its key until its
/// response is made, or gets 429 `too_many_uploads` at once.
pub async fn upload_slot(
    State(slots): State<Arc<UploadSlots>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !carries_upload(&request) {
        return Ok(next.run(request).await);
    }
    let caller = request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or(ApiError::Unauthorized)?;
    let _slot = match slots.acquire(caller.key) {
        Ok(slot) => slot,
        Err(refused) => {
            if let SlotRefused::Process(max) = refused {
                // The operator's concern: every slot of the process is taken.
                tracing::info!(
                    max_uploads = max,
                    "upload refused: ingest.max_uploads uploads in progress"
                );
            }
            return Err(refused.into());
        }
    };
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> Pace {
        Pace {
            stall: Duration::from_secs(60),
            min_rate: 100,
            window: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            deadline: Duration::from_secs(3600),
        }
    }

    /// `n` chunks of `size` bytes, one every `every`.
    fn trickle(
        n: usize,
        size: usize,
        every: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
        Box::pin(futures::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from(vec![b'x'; size]))
        }))
    }

    /// Reads the paced stream to its end: (bytes read, the error if any, when).
    async fn drain(
        stream: impl Stream<Item = std::io::Result<Bytes>>,
    ) -> (usize, Option<BodyTimedOut>, Duration) {
        let start = Instant::now();
        let mut stream = std::pin::pin!(stream);
        let mut read = 0;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => read += bytes.len(),
                Err(error) => {
                    let cause = error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<BodyTimedOut>())
                        .cloned();
                    return (read, cause, start.elapsed());
                }
            }
        }
        (read, None, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_the_grace_and_one_window() {
        // One byte every 300 ms: never stalls, far below 100 bytes/s.
        let (read, cause, at) =
            drain(paced(trickle(1000, 1, Duration::from_millis(300)), pace())).await;
        assert!(
            matches!(cause, Some(BodyTimedOut::TooSlow { min_rate: 100, .. })),
            "{cause:?}"
        );
        assert_eq!(at, Duration::from_secs(3), "grace 1 s + window 2 s");
        // The byte due at 3 s may come just before the window is judged.
        assert!((9..=10).contains(&read), "{read}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_every_window() {
        // 50 bytes every 100 ms is 500 bytes/s, for 10 s.
        let (read, cause, _) =
            drain(paced(trickle(100, 50, Duration::from_millis(100)), pace())).await;
        assert!(cause.is_none(), "{cause:?}");
        assert_eq!(read, 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_a_trickle_is_cut_in_the_window_it_slows_down() {
        let fast = trickle(20, 100, Duration::from_millis(100));
        let slow = trickle(100, 1, Duration::from_millis(500));
        let (read, cause, at) = drain(paced(Box::pin(fast.chain(slow)), pace())).await;
        assert!(
            matches!(cause, Some(BodyTimedOut::TooSlow { .. })),
            "{cause:?}"
        );
        // Fast until 2 s; the window 1..3 s brought 1,000 bytes; 3..5 s a few.
        assert_eq!(at, Duration::from_secs(5));
        assert!(read > 2000, "{read}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_and_the_deadline_cut_too() {
        let quiet = Pace {
            min_rate: 0,
            stall: Duration::from_secs(5),
            ..pace()
        };
        let (_, cause, at) = drain(paced(trickle(3, 1, Duration::from_secs(6)), quiet)).await;
        assert!(matches!(cause, Some(BodyTimedOut::Stalled(_))), "{cause:?}");
        assert_eq!(at, Duration::from_secs(5));

        let short = Pace {
            min_rate: 0,
            deadline: Duration::from_secs(4),
            ..pace()
        };
        let (read, cause, at) =
            drain(paced(trickle(1000, 1, Duration::from_millis(300)), short)).await;
        assert!(
            matches!(cause, Some(BodyTimedOut::Deadline(_))),
            "{cause:?}"
        );
        assert_eq!(at, Duration::from_secs(4));
        assert_eq!(read, 13);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_consumer_does_not_ask_for_bytes_is_not_held_against_the_client() {
        // The client sends 1,000 bytes/s into its connection's buffers.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx
                    .send(Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 100])))
                    .is_err()
                {
                    return;
                }
            }
        });
        let stream = paced(
            tokio_stream_of(rx),
            Pace {
                stall: Duration::from_secs(5),
                ..pace()
            },
        );
        let mut stream = std::pin::pin!(stream);
        let mut read = 0;
        // Reads for 2 s, then the store takes nothing for 12 s (longer than
        // the stall timeout and several windows), then reads on.
        let started = Instant::now();
        let mut paused = false;
        while let Some(chunk) = stream.next().await {
            read += chunk.expect("not cut off").len();
            if !paused && started.elapsed() >= Duration::from_secs(2) {
                paused = true;
                tokio::time::sleep(Duration::from_secs(12)).await;
            }
        }
        assert_eq!(read, 20_000);
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Send + Unpin {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_is_not_judged() {
        let (read, cause, _) =
            drain(paced(trickle(2, 1, Duration::from_millis(300)), pace())).await;
        assert_eq!((read, cause.is_none()), (2, true));
    }

    #[test]
    fn slots_per_key_and_per_process() {
        let slots = Arc::new(UploadSlots::new(3, 2));
        let a = KeyRef::Bootstrap;
        let b = KeyRef::Key(uuid::Uuid::nil());
        let c = KeyRef::Key(uuid::Uuid::max());
        let a1 = slots.acquire(a).unwrap();
        let _a2 = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(a).err(), Some(SlotRefused::Key(2)));
        let _b1 = slots.acquire(b).unwrap();
        assert_eq!(slots.acquire(c).err(), Some(SlotRefused::Process(3)));
        drop(a1);
        assert_eq!(slots.in_use(a), (2, 1));
        let _c1 = slots.acquire(c).unwrap();
        assert_eq!(slots.acquire(b).err(), Some(SlotRefused::Process(3)));
    }

    #[test]
    fn freed_keys_leave_no_entry() {
        let slots = Arc::new(UploadSlots::new(10, 10));
        for n in 0..100u128 {
            let key = KeyRef::Key(uuid::Uuid::from_u128(n));
            drop(slots.acquire(key).unwrap());
        }
        assert!(slots.counts().per_key.is_empty());
        assert_eq!(slots.counts().total, 0);
    }

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "",
            "json",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn refusals_are_429_with_retry_after() {
        use axum::response::IntoResponse;
        let response = ApiError::from(SlotRefused::Key(16)).into_response();
        assert_eq!(response.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(UPLOAD_RETRY_AFTER_SECS.to_string().as_bytes())
        );
    }
}
