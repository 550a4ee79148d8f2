//! The front cache: finished responses to the plainest and commonest
//! requests (a CDN or player fetching a whole public object), answered
//! before routing.
//!
//! Why: for small objects (LL-HLS parts, playlists) the per-request work of
//! the full path (routing, extractors, playback id lookup, object key, the
//! memory tier's bookkeeping, building headers) costs more than the bytes.
//! A CDN asks the same URL many times a second, so the answer is kept
//! finished, headers and body, for a short time and sent again as it is.
//!
//! What is kept: `200` answers to `GET` without a query string (so no
//! token, no LL-HLS directive), without `Range`, `If-Range`,
//! `If-None-Match` or `If-Modified-Since`, for public assets only (signed
//! playback checks a token on every request; live objects come and go by
//! the part). The key is the path with what the answer depends on among
//! the request's headers (`Origin` for CORS, whether gzip is accepted), and
//! an answer is kept at most [`FRONT_TTL`] and never longer than
//! `asset_ttl`, so a revoked or replaced asset stops being served by the
//! front no later than it stops being resolved. The bytes are shared with
//! the memory tier (`Bytes`), and the whole front is bounded by
//! `front_cache_bytes` (0 turns it off).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tower_service::Service;

use crate::metrics::Metrics;
use crate::views::{ViewKey, Views};

/// How long a finished answer is reused at most.
pub const FRONT_TTL: Duration = Duration::from_secs(1);

/// Shards of the map, so cores serving different objects rarely meet on one lock.
const SHARDS: usize = 16;

/// Every this many inserts into a shard, its expired answers are dropped.
const SWEEP_EVERY: u64 = 64;

/// Marks a response the front may keep, with the exact body it carries.
#[derive(Clone)]
pub(crate) struct Reusable {
    pub(crate) body: Bytes,
    pub(crate) class: usize,
    /// What serving it again counts as (storage tiering).
    pub(crate) view: Option<ViewKey>,
}

/// What a response depends on besides the path.
#[derive(Clone, PartialEq, Eq)]
struct Variant {
    gzip: bool,
    origin: Option<HeaderValue>,
}

/// Where a missed request's answer goes once the full path made it.
pub struct FrontKey {
    path: Box<str>,
    variant: Variant,
    /// [`Inner::forgets`] when the request came: an answer made before a
    /// playback id was forgotten is not kept after it.
    forgets: u64,
}

struct Kept {
    variant: Variant,
    headers: HeaderMap,
    body: Bytes,
    class: usize,
    view: Option<ViewKey>,
    expires: Instant,
}

#[derive(Default)]
struct Shard {
    by_path: HashMap<Box<str>, Vec<Kept>>,
    inserts: u64,
}

/// What [`Front::answer`] did with a request.
pub enum Answer {
    /// Answered from the front.
    Served(Response),
    /// Not kept: take the full path. With a key, the answer may be kept
    /// ([`Front::remember`]).
    Miss(Option<FrontKey>),
}

/// The front cache. Cheap to clone.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    bytes: AtomicUsize,
    max_bytes: usize,
    ttl: Duration,
    max_header_bytes: usize,
    metrics: Arc<Metrics>,
    views: Arc<Views>,
    /// Playback ids forgotten so far ([`Front::forget_playback`]).
    forgets: AtomicU64,
}

impl Front {
    pub(crate) fn new(
        max_bytes: usize,
        asset_ttl: Duration,
        max_header_bytes: usize,
        metrics: Arc<Metrics>,
        views: Arc<Views>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                bytes: AtomicUsize::new(0),
                max_bytes,
                ttl: FRONT_TTL.min(asset_ttl),
                max_header_bytes,
                metrics,
                views,
                forgets: AtomicU64::new(0),
            }),
        }
    }

    /// Answers `request` from the front when it holds a fresh answer to it.
    pub fn answer<B>(&self, request: &Request<B>) -> Answer {
        self.answer_at(request, Instant::now())
    }

    fn answer_at<B>(&self, request: &Request<B>, now: Instant) -> Answer {
        let started = Instant::now();
        let inner = &self.inner;
        if inner.max_bytes == 0 || inner.ttl.is_zero() {
            return Answer::Miss(None);
        }
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Answer::Miss(None),
        };
        let uri = request.uri();
        let path = uri.path();
        if uri.query().is_some() || !path.starts_with("/play/") {
            return Answer::Miss(None);
        }
        let headers = request.headers();
        let conditional = [
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ]
        .iter()
        .any(|name| headers.contains_key(name));
        // Oversized headers get their 431 from the full path.
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if conditional || header_bytes > inner.max_header_bytes {
            return Answer::Miss(None);
        }
        let variant = Variant {
            gzip: headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(crate::http::accepts_gzip),
            origin: headers.get(header::ORIGIN).cloned(),
        };
        let found = {
            let shard = inner.shard(path).read().unwrap_or_else(|e| e.into_inner());
            shard.by_path.get(path).and_then(|kept| {
                kept.iter()
                    .find(|k| k.variant == variant && k.expires > now)
                    .map(|k| (k.headers.clone(), k.body.clone(), k.class, k.view.clone()))
            })
        };
        let Some((headers, body, class, view)) = found else {
            // Only whole answers to GET are kept (a HEAD's body is empty).
            return Answer::Miss((!head).then(|| FrontKey {
                path: path.into(),
                variant,
                forgets: inner.forgets.load(SeqCst),
            }));
        };
        let metrics = &inner.metrics;
        metrics.cache_hits.inc();
        metrics.cache_hit_bytes.inc_by(body.len() as u64);
        metrics.front_hits.inc();
        if let Some(view) = &view {
            inner.views.record(view);
        }
        let mut response = Response::new(if head { Body::empty() } else { body.into() });
        *response.headers_mut() = headers;
        let method = if head { Method::HEAD } else { Method::GET };
        metrics.request(class, &method, StatusCode::OK.as_u16(), started.elapsed());
        Answer::Served(response)
    }

    /// Keeps the full path's answer to a missed request, when it is one the
    /// front may reuse.
    pub fn remember(&self, key: FrontKey, response: &mut Response) {
        let Some(reusable) = response.extensions_mut().remove::<Reusable>() else {
            return;
        };
        let inner = &self.inner;
        if response.status() != StatusCode::OK || inner.forgets.load(SeqCst) != key.forgets {
            return;
        }
        let len = reusable.body.len();
        let now = Instant::now();
        let mut shard = inner
            .shard(&key.path)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        shard.inserts += 1;
        // The answer it replaces, if any, gives its bytes back.
        let replaced = shard
            .by_path
            .get(&key.path)
            .and_then(|kept| kept.iter().find(|k| k.variant == key.variant))
            .map_or(0, |k| k.body.len());
        let fits = |bytes: usize| bytes.saturating_sub(replaced) + len <= inner.max_bytes;
        if shard.inserts % SWEEP_EVERY == 0 || !fits(inner.bytes.load(Relaxed)) {
            inner.sweep(&mut shard, now);
        }
        if !fits(inner.bytes.load(Relaxed)) {
            return;
        }
        let kept = shard.by_path.entry(key.path).or_default();
        if let Some(old) = kept.iter().position(|k| k.variant == key.variant) {
            let old = kept.swap_remove(old);
            inner.bytes.fetch_sub(old.body.len(), Relaxed);
        }
        inner.bytes.fetch_add(len, Relaxed);
        kept.push(Kept {
            variant: key.variant,
            headers: response.headers().clone(),
            body: reusable.body,
            class: reusable.class,
            view: reusable.view,
            expires: now + inner.ttl,
        });
    }

    /// Drops every answer about `playback_id` (it was deleted, or another
    /// version published), and keeps none that was being made meanwhile.
    pub fn forget_playback(&self, playback_id: &str) {
        let inner = &self.inner;
        inner.forgets.fetch_add(1, SeqCst);
        let prefix = format!("{}{playback_id}/", cascade_schemas::playback::PLAY_PREFIX);
        for shard in inner.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            let mut freed = 0;
            shard.by_path.retain(|path, kept| {
                let about = path.starts_with(&prefix);
                if about {
                    freed += kept.iter().map(|k| k.body.len()).sum::<usize>();
                }
                !about
            });
            inner.bytes.fetch_sub(freed, Relaxed);
        }
    }

    /// Body bytes the front holds (expired answers included until swept).
    pub fn held_bytes(&self) -> usize {
        self.inner.bytes.load(Relaxed)
    }
}

impl Inner {
    fn shard(&self, path: &str) -> &RwLock<Shard> {
        let index = self.hasher.hash_one(path) as usize % self.shards.len();
        &self.shards[index]
    }

    fn sweep(&self, shard: &mut Shard, now: Instant) {
        let mut freed = 0;
        shard.by_path.retain(|_, kept| {
            kept.retain(|k| {
                let fresh = k.expires > now;
                if !fresh {
                    freed += k.body.len();
                }
                fresh
            });
            !kept.is_empty()
        });
        self.bytes.fetch_sub(freed, Relaxed);
    }
}

/// A service (the router) behind the front cache: what the HTTP server
/// runs for each connection.
#[derive(Clone)]
pub struct Fronted<S> {
    inner: S,
    front: Option<Front>,
}

impl<S> Fronted<S> {
    /// `inner` behind `front` (`None`: `inner` alone).
    pub fn new(inner: S, front: Option<Front>) -> Self {
        Self { inner, front }
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S, B> Service<Request<B>> for Fronted<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures::future::Either<std::future::Ready<Result<Response, Infallible>>, BoxedResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        use futures::future::Either;
        let Some(front) = &self.front else {
            return Either::Right(Box::pin(self.inner.call(request)));
        };
        match front.answer(&request) {
            Answer::Served(response) => Either::Left(std::future::ready(Ok(response))),
            Answer::Miss(None) => Either::Right(Box::pin(self.inner.call(request))),
            Answer::Miss(Some(key)) => {
                let front = front.clone();
                let answered = self.inner.call(request);
                Either::Right(Box::pin(async move {
                    let mut response = answered.await?;
                    front.remember(key, &mut response);
                    Ok(response)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(max_bytes: usize, ttl: Duration) -> Front {
        Front::new(
            max_bytes,
            ttl,
            16 * 1024,
            Arc::new(Metrics::new()),
            Arc::new(Views::new()),
        )
    }

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    /// What the full path answers: a 200 marked reusable.
    fn answer_of(body: &'static [u8]) -> Response {
        let mut response = Response::new(Body::from(body));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        response.extensions_mut().insert(Reusable {
            body: Bytes::from_static(body),
            class: 0,
            view: None,
        });
        response
    }

    fn miss_key(front: &Front, request: &Request<()>) -> FrontKey {
        match front.answer(request) {
            Answer::Miss(Some(key)) => key,
            Answer::Miss(None) => panic!("not keepable"),
            Answer::Served(_) => panic!("served"),
        }
    }

    #[test]
    fn only_plain_gets_of_play_urls_are_kept() {
        let front = front(1 << 20, Duration::from_secs(3));
        let keepable = |r: Request<()>| matches!(front.answer(&r), Answer::Miss(Some(_)));
        assert!(keepable(request(Method::GET, "/play/p/a.m3u8", &[])));
        assert!(!keepable(request(
            Method::GET,
            "/play/p/a.m3u8?token=x",
            &[]
        )));
        assert!(!keepable(request(
            Method::GET,
            "/play/p/a.m3u8?_HLS_msn=3",
            &[]
        )));
        assert!(!keepable(request(Method::POST, "/play/p/a.m3u8", &[])));
        assert!(!keepable(request(Method::HEAD, "/play/p/a.m3u8", &[])));
        assert!(!keepable(request(Method::GET, "/metrics", &[])));
        for conditional in ["range", "if-range", "if-none-match", "if-modified-since"] {
            let r = request(Method::GET, "/play/p/a.m3u8", &[(conditional, "x")]);
            assert!(!keepable(r), "{conditional}");
        }
        let huge = "x".repeat(17 * 1024);
        let r = request(Method::GET, "/play/p/a.m3u8", &[("cookie", &huge)]);
        assert!(
            !keepable(r),
            "oversized headers get their 431 from the full path"
        );
    }

    #[test]
    fn answers_are_reused_per_variant_until_they_expire() {
        let front = front(1 << 20, Duration::from_millis(50));
        let plain = request(Method::GET, "/play/p/a.m3u8", &[]);
        let key = miss_key(&front, &plain);
        front.remember(key, &mut answer_of(b"plain"));
        let Answer::Served(served) = front.answer(&plain) else {
            panic!("not served from the front");
        };
        assert_eq!(served.headers()[header::CONTENT_LENGTH], "5");
        // HEAD: the same head.
        let head = request(Method::HEAD, "/play/p/a.m3u8", &[]);
        assert!(matches!(front.answer(&head), Answer::Served(_)));
        // Another Origin or encoding is another answer.
        let cors = request(
            Method::GET,
            "/play/p/a.m3u8",
            &[("origin", "https://a.example")],
        );
        assert!(matches!(front.answer(&cors), Answer::Miss(Some(_))));
        let gzip = request(
            Method::GET,
            "/play/p/a.m3u8",
            &[("accept-encoding", "gzip")],
        );
        assert!(matches!(front.answer(&gzip), Answer::Miss(Some(_))));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            matches!(front.answer(&plain), Answer::Miss(Some(_))),
            "expired"
        );
    }

    #[test]
    fn unmarked_or_failed_answers_are_not_kept_and_bytes_are_bounded() {
        let front = front(8, Duration::from_secs(3));
        let r = request(Method::GET, "/play/p/a.m3u8", &[]);
        // No Reusable mark (a live object, a signed asset): not kept.
        let mut unmarked = Response::new(Body::from("x"));
        front.remember(miss_key(&front, &r), &mut unmarked);
        assert!(matches!(front.answer(&r), Answer::Miss(Some(_))));
        // Not a 200: not kept.
        let mut refused = answer_of(b"no");
        *refused.status_mut() = StatusCode::FORBIDDEN;
        front.remember(miss_key(&front, &r), &mut refused);
        assert!(matches!(front.answer(&r), Answer::Miss(Some(_))));
        // Over the byte bound: not kept.
        front.remember(miss_key(&front, &r), &mut answer_of(b"123456789"));
        assert!(matches!(front.answer(&r), Answer::Miss(Some(_))));
        assert_eq!(front.held_bytes(), 0);
        front.remember(miss_key(&front, &r), &mut answer_of(b"1234"));
        assert_eq!(front.held_bytes(), 4);
        // Replacing an answer replaces its bytes.
        let same = FrontKey {
            path: "/play/p/a.m3u8".into(),
            variant: Variant {
                gzip: false,
                origin: None,
            },
            forgets: 0,
        };
        front.remember(same, &mut answer_of(b"12345"));
        assert_eq!(front.held_bytes(), 5);
    }

    #[test]
    fn a_forgotten_playback_id_loses_its_answers_and_keeps_none_made_meanwhile() {
        let front = front(1024, Duration::from_secs(3));
        let mine = request(Method::GET, "/play/p/master.m3u8", &[]);
        let other = request(Method::GET, "/play/q/master.m3u8", &[]);
        front.remember(miss_key(&front, &mine), &mut answer_of(b"mine"));
        front.remember(miss_key(&front, &other), &mut answer_of(b"other"));
        // An answer under way when the id is forgotten.
        let late = miss_key(&front, &request(Method::GET, "/play/p/v1/a/0.m4s", &[]));
        front.forget_playback("p");
        assert!(matches!(front.answer(&mine), Answer::Miss(Some(_))));
        assert!(matches!(front.answer(&other), Answer::Served(_)));
        front.remember(late, &mut answer_of(b"old"));
        let late = request(Method::GET, "/play/p/v1/a/0.m4s", &[]);
        assert!(matches!(front.answer(&late), Answer::Miss(Some(_))));
        assert_eq!(front.held_bytes(), 5);
        // Answers made after it are kept as usual.
        front.remember(miss_key(&front, &mine), &mut answer_of(b"new"));
        assert!(matches!(front.answer(&mine), Answer::Served(_)));
    }

    #[test]
    fn a_zero_bound_turns_the_front_off() {
        let front = front(0, Duration::from_secs(3));
        let r = request(Method::GET, "/play/p/a.m3u8", &[]);
        assert!(matches!(front.answer(&r), Answer::Miss(None)));
    }
}
