//! The playback origin (issue #5) against real Postgres, a local object
//! store, a really transcoded fixture, a real nginx acting as the CDN and
//! FFmpeg's HLS demuxer as the player. HTTP goes over loopback sockets on
//! ephemeral ports, spoken by the small client below.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cascade_origin::{router, OriginConfig, OriginState, FRONT_TTL};
use cascade_platform::config::{
    EncoderChoice, IngestConfig, PlaybackConfig, Secret, SigningKeyConfig, StorageConfig,
    TranscodeConfig,
};
use cascade_platform::playback_token::Keyring;
use cascade_platform::{assets, ObjectStore, Queue};
use cascade_schemas::{AssetId, AssetState, ObjectKey, PlaybackId, RenditionName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{eventually, fixtures_dir, fresh_db, repo_root, TestDb};

const SIGNING_KEY: &str = "test signing key";

/// `[playback]` with these `(id, secret)` signing keys, the first signing.
fn playback_keys(keys: &[(&str, &str)]) -> PlaybackConfig {
    PlaybackConfig {
        signing_keys: keys
            .iter()
            .map(|(id, secret)| SigningKeyConfig {
                id: id.parse().unwrap(),
                secret: Secret::new(*secret),
            })
            .collect(),
        ..PlaybackConfig::default()
    }
}

// ---------------------------------------------------------------- HTTP client

/// One HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON error body's `code`.
    pub(crate) fn code(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.text()));
        assert!(value["message"].is_string(), "{value}");
        value["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    request_with_body(addr, method, target, headers, b"").await
}

/// [`request`] with a body (and its `Content-Length` when not empty).
async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write the body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if method != "HEAD"
        && reply
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        reply.body = dechunk(&reply.body);
    }
    reply
}

pub(crate) async fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[]).await
}

// ---------------------------------------------------------------- set-up

pub(crate) async fn local_store() -> (ObjectStore, PathBuf) {
    let root =
        std::env::temp_dir().join(format!("cascade-origin-{}", uuid::Uuid::new_v4().simple()));
    let store = ObjectStore::from_config(&StorageConfig {
        local_root: root.clone(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    (store, root)
}

/// A published asset in a fresh database and store.
struct Published {
    db: TestDb,
    store: ObjectStore,
    root: PathBuf,
    asset: AssetId,
    playback: PlaybackId,
    version: u32,
    renditions: Vec<String>,
}

impl Published {
    fn origin(&self, config: OriginConfig) -> OriginState {
        self.origin_with_keys(config, &PlaybackConfig::default())
    }

    /// An origin verifying tokens with `playback`'s signing keys.
    fn origin_with_keys(&self, config: OriginConfig, playback: &PlaybackConfig) -> OriginState {
        OriginState::new(
            config,
            Keyring::from_config(playback),
            self.db.pool.clone(),
            self.store.clone(),
        )
    }

    /// Makes the asset's playback policy `signed`.
    async fn make_signed(&self) {
        let client = self.db.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE assets SET playback_policy = 'signed' WHERE id = $1",
                &[&self.asset.as_uuid()],
            )
            .await
            .unwrap();
    }

    fn url(&self, rest: &str) -> String {
        format!("/play/{}/{rest}", self.playback)
    }
}

/// Imports and really transcodes the tiny fixture (one rung plus audio, ~1 s).
async fn transcoded() -> Published {
    transcoded_file(&fixtures_dir().join("tiny_320x180_stereo.mp4")).await
}

/// The 20 s 1080p fixture, long enough for players.
fn long_fixture() -> PathBuf {
    crate::common::bench_fixture()
}

/// Imports and really transcodes `path`.
async fn transcoded_file(path: &Path) -> Published {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("fixture");
    let (asset, _) = cascade_ingest::import_file(&queue, &store, path, Some(file))
        .await
        .unwrap();

    let mut queue_config = db.config.queue.clone();
    queue_config.concurrency = 1;
    queue_config.poll_interval = Duration::from_millis(200);
    let worker = crate::transcode::start_worker_queue(
        &db,
        &store,
        TranscodeConfig {
            encoder: EncoderChoice::Libx264,
            ..TranscodeConfig::default()
        },
        queue_config,
        "origin-test",
    );
    let row = eventually(
        "the asset to be ready",
        Duration::from_secs(240),
        || async {
            let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
            assert_ne!(
                a.state,
                AssetState::Errored,
                "transcode failed: {:?}",
                a.error_message
            );
            (a.state == AssetState::Ready).then_some(a)
        },
    )
    .await;
    worker.stop().await;
    let version = row.published_version.unwrap() as u32;
    let renditions = assets::renditions(&db.pool, asset, version as i32)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    Published {
        db,
        store,
        root,
        asset,
        playback: row.playback_id,
        version,
        renditions,
    }
}

/// An asset row published at version 1 with no renditions (objects are put
/// by the test), in `state`.
async fn inserted(db: &TestDb, state: AssetState, policy: &str) -> (AssetId, PlaybackId) {
    let (id, playback) = crate::common::insert_asset(db, policy).await;
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE assets SET state = 'processing' WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap();
    drop(client);
    assert!(assets::publish(&db.pool, id, 1, 1.0, &[], None)
        .await
        .unwrap());
    if state != AssetState::Ready {
        let client = db.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE assets SET state = $2 WHERE id = $1",
                &[&id.as_uuid(), &state.as_str()],
            )
            .await
            .unwrap();
    }
    (id, playback)
}

/// Serves `state`'s router behind its front cache (as `cascade serve`
/// does) on 127.0.0.1:0.
pub(crate) async fn serve(state: OriginState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let front = state.front();
    // `cascade serve` serves /metrics beside the routes; so does this.
    let metrics = state.clone();
    let app = router(state).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.metrics_text().await }
        }),
    );
    let service = cascade_origin::Fronted::new(app, Some(front));
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(service),
        )
        .await;
    });
    addr
}

/// A metric's value in the Prometheus text (0 when absent).
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn first_rendition(p: &Published) -> &str {
    p.renditions
        .iter()
        .find(|r| r.as_str() != "audio")
        .unwrap_or(&p.renditions[0])
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_a_transcoded_asset_with_http_semantics() {
    let p = transcoded().await;
    let addr = serve(p.origin(OriginConfig::default())).await;
    let rendition = first_rendition(&p).to_owned();
    let surrogate = format!("asset-{}", p.asset);

    // Content types and Cache-Control by object class; Surrogate-Key everywhere.
    let manifest_cc = "public, max-age=60, s-maxage=86400";
    let immutable = "public, max-age=31536000, immutable";
    for (path, content_type, cache_control) in [
        (
            "master.m3u8".to_owned(),
            "application/vnd.apple.mpegurl",
            manifest_cc,
        ),
        (
            "manifest.mpd".to_owned(),
            "application/dash+xml",
            manifest_cc,
        ),
        (
            format!("{rendition}/index.m3u8"),
            "application/vnd.apple.mpegurl",
            manifest_cc,
        ),
        (format!("{rendition}/init.mp4"), "video/mp4", immutable),
        (format!("{rendition}/1.m4s"), "video/mp4", immutable),
    ] {
        let r = get(addr, &p.url(&path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("cache-control"), Some(cache_control), "{path}");
        assert_eq!(
            r.header("surrogate-key"),
            Some(surrogate.as_str()),
            "{path}"
        );
        assert_eq!(r.header("cache-tag"), Some(surrogate.as_str()), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        let stored = p
            .store
            .get(&stored_key(&p, &path), None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // The top-level manifests name their media by version (`v1/...`).
        let stored = match path.as_str() {
            "master.m3u8" => {
                Bytes::from(versioned_hls(&String::from_utf8_lossy(&stored), p.version))
            }
            "manifest.mpd" => Bytes::from(
                String::from_utf8_lossy(&stored)
                    .replace(
                        " initialization=\"",
                        &format!(" initialization=\"v{}/", p.version),
                    )
                    .replace(" media=\"", &format!(" media=\"v{}/", p.version)),
            ),
            _ => stored,
        };
        assert_eq!(
            Bytes::from(r.body.clone()),
            stored,
            "{path}: body is the stored object"
        );
        assert_eq!(
            r.header("content-length"),
            Some(stored.len().to_string().as_str())
        );
    }

    // The served master names the media playlists the origin serves.
    let master = get(addr, &p.url("master.m3u8")).await.text();
    assert!(
        master.contains(&format!("v{}/{rendition}/index.m3u8", p.version)),
        "{master}"
    );
    let versioned = get(addr, &p.url(&format!("v{}/{rendition}/1.m4s", p.version))).await;
    assert_eq!(versioned.status, 200);
    assert_eq!(
        versioned.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );

    // Strong ETag and If-None-Match.
    let segment = p.url(&format!("{rendition}/1.m4s"));
    let full = get(addr, &segment).await;
    let etag = full.header("etag").expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let not_modified = request(addr, "GET", &segment, &[("If-None-Match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("cache-control"), Some(immutable));
    let changed = request(addr, "GET", &segment, &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(changed.status, 200);

    // Ranges: 206 with Content-Range; 416 with bytes */size.
    let size = full.body.len();
    let partial = request(addr, "GET", &segment, &[("Range", "bytes=10-99")]).await;
    assert_eq!(partial.status, 206);
    assert_eq!(
        partial.header("content-range"),
        Some(format!("bytes 10-99/{size}").as_str())
    );
    assert_eq!(partial.body, full.body[10..100]);
    let suffix = request(addr, "GET", &segment, &[("Range", "bytes=-16")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, full.body[size - 16..]);
    let past = request(
        addr,
        "GET",
        &segment,
        &[("Range", &format!("bytes={size}-"))],
    )
    .await;
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert_eq!(past.code(), "range_not_satisfiable");
    // Multiple ranges and nonsense are answered with the whole object.
    for ignored in [
        "bytes=0-1,5-6",
        "bytes=9-3",
        "bytes=99999999999999999999999-",
        "lines=1-2",
    ] {
        let r = request(addr, "GET", &segment, &[("Range", ignored)]).await;
        assert_eq!(r.status, 200, "{ignored}");
        assert_eq!(r.body.len(), size, "{ignored}");
    }
    let stale_if_range = request(
        addr,
        "GET",
        &segment,
        &[("Range", "bytes=0-9"), ("If-Range", "\"not-it\"")],
    )
    .await;
    assert_eq!(stale_if_range.status, 200);

    // HEAD: same headers, no body.
    let head = request(addr, "HEAD", &segment, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert_eq!(head.header("cache-control"), Some(immutable));

    // CORS preflight and exposed headers.
    let preflight = request(
        addr,
        "OPTIONS",
        &segment,
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .await;
    assert!(
        preflight.status == 204 || preflight.status == 200,
        "{}",
        preflight.status
    );
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    assert!(preflight
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase()
        .contains("range"));
    let exposed = full
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in ["content-length", "content-range", "etag"] {
        assert!(exposed.contains(name), "{exposed}");
    }

    // gzip of manifests, with Vary and a distinct ETag; segments are never compressed.
    let plain = get(addr, &p.url("manifest.mpd")).await;
    let gz = request(
        addr,
        "GET",
        &p.url("manifest.mpd"),
        &[("Accept-Encoding", "gzip, br")],
    )
    .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_ne!(gz.header("etag"), plain.header("etag"));
    assert_eq!(gunzip(&gz.body), plain.body);
    let seg_gz = request(addr, "GET", &segment, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(seg_gz.header("content-encoding"), None);

    // Metrics: requests by class and status, cache figures.
    let text = get(addr, "/metrics").await.text();
    assert!(requests(&text, "media_segment", "200") >= 3.0, "{text}");
    assert!(requests(&text, "media_segment", "206") >= 2.0);
    assert!(metric(&text, "cascade_origin_cache_hits_total") >= 5.0);
    assert!(metric(&text, "cascade_origin_cache_size_bytes") > 0.0);
    assert!(text.contains(
        "cascade_origin_request_duration_seconds_bucket{le=\"+Inf\",route=\"media_segment\"}"
    ));
    assert!(text.contains("cascade_origin_storage_read_duration_seconds_count"));
}

/// A stored master playlist as the origin serves it: every URI under `v{version}/`.
fn versioned_hls(text: &str, version: u32) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with('#') {
                line.replace("URI=\"", &format!("URI=\"v{version}/"))
            } else if line.is_empty() {
                String::new()
            } else {
                format!("v{version}/{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

fn stored_key(p: &Published, path: &str) -> ObjectKey {
    match path.split_once('/') {
        None if path == "master.m3u8" => ObjectKey::hls_master(p.asset, p.version),
        None => ObjectKey::dash_manifest(p.asset, p.version),
        Some((rendition, file)) => {
            let r = RenditionName::new(rendition).unwrap();
            match file {
                "index.m3u8" => ObjectKey::media_playlist(p.asset, p.version, &r),
                "init.mp4" => ObjectKey::init_segment(p.asset, p.version, &r),
                seg => ObjectKey::media_segment(
                    p.asset,
                    p.version,
                    &r,
                    seg.trim_end_matches(".m4s").parse().unwrap(),
                ),
            }
        }
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.gz");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("gzip").arg("-dc").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "gzip -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_coalesces_concurrent_misses_into_one_storage_read() {
    let p = transcoded().await;
    let rendition = first_rendition(&p).to_owned();

    // 200 concurrent requests for one uncached object: one storage read.
    // Whether any of them lands while that read is in flight (a coalesced
    // wait, rather than a hit after it) is up to the scheduler, so further
    // uncached objects are tried, and then a fresh origin (a cold cache),
    // until one batch overlaps.
    let mut objects = vec![
        format!("{rendition}/1.m4s"),
        format!("{rendition}/init.mp4"),
    ];
    objects.extend(
        p.renditions
            .iter()
            .filter(|r| **r != rendition)
            .flat_map(|r| [format!("{r}/1.m4s"), format!("{r}/init.mp4")]),
    );
    let mut last = None;
    'origins: for _ in 0..8 {
        let state = p.origin(OriginConfig::default());
        let addr = serve(state.clone()).await;
        // Resolve the playback id first so the 200 requests race on the
        // object only.
        assert_eq!(get(addr, &p.url("master.m3u8")).await.status, 200);
        let mut batches = 0.0;
        for object in &objects {
            let before = state.storage_reads();
            let target = p.url(object);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..200 {
                let target = target.clone();
                tasks.spawn(async move { get(addr, &target).await });
            }
            let mut lengths = std::collections::BTreeSet::new();
            while let Some(reply) = tasks.join_next().await {
                let reply = reply.unwrap();
                assert_eq!(reply.status, 200);
                lengths.insert(reply.body.len());
            }
            assert_eq!(lengths.len(), 1, "every request got the same object");
            assert_eq!(
                state.storage_reads() - before,
                1,
                "200 concurrent misses, one storage read"
            );
            batches += 1.0;
            let text = state.metrics_text().await;
            let coalesced = metric(&text, "cascade_origin_cache_coalesced_waits_total");
            let hits = metric(&text, "cascade_origin_cache_hits_total");
            // Every request but the one that read waited or hit.
            assert!(
                coalesced + hits >= 199.0 * batches,
                "coalesced {coalesced} + hits {hits}"
            );
            last = Some((state.clone(), addr, text));
            if coalesced >= 1.0 {
                break 'origins;
            }
        }
    }
    let (state, addr, text) = last.expect("a batch ran");
    assert!(
        metric(&text, "cascade_origin_cache_coalesced_waits_total") >= 1.0,
        "{text}"
    );

    // A missing segment is read once, then remembered as missing.
    let missing = p.url(&format!("{rendition}/9999.m4s"));
    let before = state.storage_reads();
    for _ in 0..5 {
        let r = get(addr, &missing).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.code(), "not_found");
    }
    assert_eq!(state.storage_reads() - before, 1);
    assert!(
        metric(
            &state.metrics_text().await,
            "cascade_origin_cache_negative_hits_total"
        ) >= 4.0
    );
    let _ = std::fs::remove_dir_all(&p.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_answers_bad_requests_with_4xx_json() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let (ready_id, ready) = inserted(&db, AssetState::Ready, "public").await;
    let (_, waiting_pid) = crate::common::insert_asset(&db, "public").await;
    let addr = serve(OriginState::new(
        OriginConfig::default(),
        Keyring::default(),
        db.pool.clone(),
        store.clone(),
    ))
    .await;
    let unknown = PlaybackId::new();
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("/play/{unknown}/master.m3u8"), 404, "not_found"),
        (
            "/play/not-a-playback-id/master.m3u8".to_owned(),
            404,
            "not_found",
        ),
        (format!("/play/{ready}/master.m3u8"), 404, "not_found"), // published, object absent
        (format!("/play/{ready}/source"), 404, "not_found"),
        (format!("/play/{ready}/v1/master.m3u8"), 404, "not_found"),
        (
            format!("/play/{waiting_pid}/master.m3u8"),
            404,
            "asset_not_ready",
        ),
        ("/play/../../etc/passwd".to_owned(), 404, "not_found"),
        (
            "/play/%2e%2e/%2e%2e/etc/passwd".to_owned(),
            404,
            "not_found",
        ),
        (format!("/play/{ready}/%2e%2e/index.m3u8"), 404, "not_found"),
        (
            format!("/play/{ready}/..%2f..%2fsource/init.mp4"),
            404,
            "not_found",
        ),
        (format!("/play/{ready}/a%2Fb/index.m3u8"), 404, "not_found"),
        (
            format!("/play/{ready}/720p/..%2F..%2Fsource"),
            404,
            "not_found",
        ),
        (format!("/play/{ready}/720p/-1.m4s"), 404, "not_found"),
        (format!("/play/{ready}/720p/01.m4s"), 404, "not_found"),
        (format!("/play/{ready}/720p/abc.m4s"), 404, "not_found"),
        (
            format!("/play/{ready}/720p/184467440737095516160.m4s"),
            404,
            "not_found",
        ),
        (format!("/play/{ready}/720p/1.m4s/extra"), 404, "not_found"),
        (format!("/play/{ready}/%ff%fe/index.m3u8"), 404, "not_found"),
        ("/play/".to_owned(), 404, "not_found"),
    ];
    for (path, status, code) in &cases {
        let r = get(addr, path).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        assert_eq!(r.code(), *code, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        let cc = r.header("cache-control").unwrap();
        assert!(
            cc == "public, max-age=2" || cc == "no-store",
            "{path}: {cc}"
        );
    }
    // Not playable yet, but maybe in a moment: no cache holds players off.
    let not_ready = get(addr, &format!("/play/{waiting_pid}/master.m3u8")).await;
    assert_eq!(not_ready.header("cache-control"), Some("no-store"));

    let post = request(
        addr,
        "POST",
        &format!("/play/{ready}/master.m3u8"),
        &[("Content-Length", "0")],
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.code(), "method_not_allowed");

    // Absurd ranges on a real object, and a huge header.
    let key = ObjectKey::media_segment(ready_id, 1, &RenditionName::new("720p").unwrap(), 1);
    store
        .put_bytes(&key, Bytes::from(vec![7u8; 1000]))
        .await
        .unwrap();
    let segment = format!("/play/{ready}/720p/1.m4s");
    for (range, status) in [
        ("bytes=1000-", 416),
        ("bytes=18446744073709551615-", 416),
        ("bytes=0-18446744073709551615", 206),
        ("bytes=-0", 416),
        ("bytes=-99999999999", 206),
        ("bytes=0-1,2-3,4-5", 200),
        ("bytes=--1", 200),
    ] {
        let r = request(addr, "GET", &segment, &[("Range", range)]).await;
        assert_eq!(r.status, status, "{range}: {}", r.text());
    }
    let huge = "x".repeat(128 * 1024);
    let r = request(addr, "GET", &segment, &[("X-Huge", &huge)]).await;
    assert_eq!(r.status, 431, "huge header");
    assert_eq!(r.code(), "headers_too_large");
    let text = get(addr, "/metrics").await.text();
    for line in text
        .lines()
        .filter(|l| l.starts_with("cascade_origin_requests_total"))
    {
        assert!(
            !line.contains("status=\"5"),
            "a bad request got a 5xx: {line}"
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_signed_playback_needs_a_valid_token_and_carries_it() {
    let p = transcoded().await;
    p.make_signed().await;
    let playback = playback_keys(&[("k1", SIGNING_KEY)]);
    let addr = serve(p.origin_with_keys(OriginConfig::default(), &playback)).await;
    let rendition = first_rendition(&p).to_owned();
    let keys = Keyring::from_config(&playback);
    let token = keys.sign(&p.playback, now_unix() + 600).unwrap();

    // Without, with a wrong one, with an expired one: 403 JSON.
    let expired = keys.sign(&p.playback, now_unix() - 1).unwrap();
    let other = Keyring::from_config(&playback_keys(&[("k1", "another key, 16 bytes")]))
        .sign(&p.playback, now_unix() + 600)
        .unwrap();
    let unknown = Keyring::from_config(&playback_keys(&[("k9", SIGNING_KEY)]))
        .sign(&p.playback, now_unix() + 600)
        .unwrap();
    for (query, code) in [
        (String::new(), "token_required"),
        (format!("?token={other}"), "token_invalid"),
        (format!("?token={unknown}"), "token_invalid"),
        ("?token=garbage".to_owned(), "token_invalid"),
        (format!("?token={expired}"), "token_expired"),
    ] {
        for path in [
            "master.m3u8".to_owned(),
            "manifest.mpd".to_owned(),
            format!("{rendition}/1.m4s"),
        ] {
            let r = get(addr, &format!("{}{query}", p.url(&path))).await;
            assert_eq!(r.status, 403, "{path}{query}");
            assert_eq!(r.code(), code, "{path}{query}");
            assert_eq!(r.header("cache-control"), Some("private, no-store"));
        }
    }

    // With a valid token: every URI in the manifests carries it.
    let master = get(addr, &format!("{}?token={token}", p.url("master.m3u8"))).await;
    assert_eq!(master.status, 200, "{}", master.text());
    assert_eq!(master.header("cache-control"), Some("private, no-store"));
    let text = master.text();
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(!uris.is_empty());
    for uri in &uris {
        assert!(uri.ends_with(&format!("?token={token}")), "{uri}");
    }
    for line in text.lines().filter(|l| l.contains("URI=\"")) {
        assert!(line.contains(&format!("?token={token}\"")), "{line}");
    }
    let media = get(
        addr,
        &format!(
            "{}?token={token}",
            p.url(&format!("{rendition}/index.m3u8"))
        ),
    )
    .await;
    assert_eq!(media.status, 200);
    let media_text = media.text();
    assert!(
        media_text.contains(&format!("URI=\"init.mp4?token={token}\"")),
        "{media_text}"
    );
    assert!(
        media_text.contains(&format!("\n1.m4s?token={token}")),
        "{media_text}"
    );
    let mpd = get(addr, &format!("{}?token={token}", p.url("manifest.mpd")))
        .await
        .text();
    assert!(mpd.contains(&format!("init.mp4?token={token}\"")), "{mpd}");
    assert!(
        mpd.contains(&format!("$Number$.m4s?token={token}\"")),
        "{mpd}"
    );
    let segment = get(
        addr,
        &format!("{}?token={token}", p.url(&format!("{rendition}/1.m4s"))),
    )
    .await;
    assert_eq!(segment.status, 200);
    assert_eq!(
        segment.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );

    // A player following the rewritten URIs plays it with no special code.
    let url = format!("http://{addr}{}?token={token}", p.url("master.m3u8"));
    ffmpeg_decodes(&url).await;
    let _ = std::fs::remove_dir_all(&p.root);
}

/// Serves the creators' API (`cascade_ingest::router`) on 127.0.0.1:0 over
/// `p`'s database and store, minting with `playback`'s keys; the playback
/// URLs it returns point at `origin`.
async fn serve_api(p: &Published, origin: SocketAddr, playback: &PlaybackConfig) -> SocketAddr {
    let state = cascade_ingest::AppState::new(
        p.db.pool.clone(),
        p.store.clone(),
        Queue::new(p.db.pool.clone(), p.db.config.queue.clone()),
        IngestConfig {
            public_url: format!("http://{origin}"),
            ..IngestConfig::default()
        },
        TranscodeConfig::default(),
    )
    .with_playback(playback.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = cascade_ingest::router(std::sync::Arc::new(state));
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `POST /v1/assets/{asset}/playback_tokens` with `body`, authenticated with `api_key`.
async fn mint_through_api(api: SocketAddr, api_key: &str, asset: AssetId, body: &str) -> Reply {
    let auth = format!("Bearer {api_key}");
    request_with_body(
        api,
        "POST",
        &format!("/v1/assets/{asset}/playback_tokens"),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await
}

/// A 201 from the minting API: the token, its key id, its lifetime left in
/// seconds, and the HLS and DASH URLs.
fn minted(reply: &Reply) -> (String, String, i64, String, String) {
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let value: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let text = |field: &serde_json::Value| {
        field
            .as_str()
            .unwrap_or_else(|| panic!("{value}"))
            .to_owned()
    };
    let expires_at = chrono::DateTime::parse_from_rfc3339(&text(&value["expires_at"]))
        .unwrap_or_else(|e| panic!("expires_at is not RFC 3339 ({e}): {value}"));
    (
        text(&value["token"]),
        text(&value["key_id"]),
        expires_at.timestamp() - now_unix() as i64,
        text(&value["playback"]["hls"]),
        text(&value["playback"]["dash"]),
    )
}

/// The path and query of `url`, which must be on `origin`.
fn target_on(origin: SocketAddr, url: &str) -> String {
    url.strip_prefix(&format!("http://{origin}"))
        .unwrap_or_else(|| panic!("{url} is not on {origin}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_plays_tokens_minted_by_the_api_across_a_key_rotation() {
    const OLD: (&str, &str) = ("k1", "the first signing secret");
    const NEW: (&str, &str) = ("k2", "the second signing secret");
    let p = transcoded().await;
    p.make_signed().await;
    let rendition = first_rendition(&p).to_owned();
    let api_key = {
        // A key of the environment the imported asset is in.
        let client = p.db.pool.get().await.unwrap();
        let environment = cascade_platform::environments::ensure(&client, "default")
            .await
            .unwrap();
        cascade_platform::api_keys::create(&client, "origin-test", environment)
            .await
            .unwrap()
            .1
    };

    // Before the rotation: k1 alone signs and verifies.
    let before = playback_keys(&[OLD]);
    let origin = serve(p.origin_with_keys(OriginConfig::default(), &before)).await;
    let api = serve_api(&p, origin, &before).await;
    let reply = mint_through_api(api, &api_key, p.asset, r#"{"ttl_seconds": 600}"#).await;
    let (old_token, key_id, lifetime, hls, dash) = minted(&reply);
    assert_eq!(key_id, "k1");
    assert!(old_token.starts_with("k1."), "{old_token}");
    assert!((590..=600).contains(&lifetime), "{lifetime}");
    assert_eq!(
        hls,
        format!("http://{origin}{}?token={old_token}", p.url("master.m3u8"))
    );
    assert_eq!(
        dash,
        format!("http://{origin}{}?token={old_token}", p.url("manifest.mpd"))
    );
    // The URLs the API returned play through the origin, token carried along.
    let master = get(origin, &target_on(origin, &hls)).await;
    assert_eq!(master.status, 200, "{}", master.text());
    assert!(
        master
            .text()
            .contains(&format!("index.m3u8?token={old_token}")),
        "{}",
        master.text()
    );
    let mpd = get(origin, &target_on(origin, &dash)).await;
    assert_eq!(mpd.status, 200, "{}", mpd.text());
    ffmpeg_decodes(&hls).await;
    // No body: the default lifetime (1 hour).
    let (_, _, lifetime, _, _) = minted(&mint_through_api(api, &api_key, p.asset, "").await);
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");

    // Refusals, each with its stable code.
    for body in [r#"{"ttl_seconds": 0}"#, r#"{"ttl_seconds": 86401}"#] {
        let r = mint_through_api(api, &api_key, p.asset, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.code(), "invalid_ttl", "{body}");
    }
    let r = mint_through_api(api, &api_key, p.asset, r#"{"ttl_seconds": "1h"}"#).await;
    assert_eq!((r.status, r.code()), (400, "invalid_json".to_owned()));
    let r = mint_through_api(api, &api_key, AssetId::new(), "").await;
    assert_eq!((r.status, r.code()), (404, "not_found".to_owned()));
    let (public, _) = inserted(&p.db, AssetState::Ready, "public").await;
    let r = mint_through_api(api, &api_key, public, "").await;
    assert_eq!((r.status, r.code()), (409, "not_signed".to_owned()));
    let r = mint_through_api(api, "csk_not_a_key", p.asset, "").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized".to_owned()));
    let unconfigured = serve_api(&p, origin, &PlaybackConfig::default()).await;
    let r = mint_through_api(unconfigured, &api_key, p.asset, "").await;
    assert_eq!(
        (r.status, r.code()),
        (503, "signing_not_configured".to_owned())
    );

    // Rotation, step 1 (the services restarted with the new config): the
    // new key first, the old one kept. Old tokens still play; new ones are
    // signed with k2.
    let during = playback_keys(&[NEW, OLD]);
    let origin = serve(p.origin_with_keys(OriginConfig::default(), &during)).await;
    let api = serve_api(&p, origin, &during).await;
    for path in [
        "master.m3u8".to_owned(),
        "manifest.mpd".to_owned(),
        format!("{rendition}/1.m4s"),
    ] {
        let r = get(origin, &format!("{}?token={old_token}", p.url(&path))).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let reply = mint_through_api(api, &api_key, p.asset, r#"{"ttl_seconds": 600}"#).await;
    let (new_token, key_id, _, hls, _) = minted(&reply);
    assert_eq!(key_id, "k2");
    assert!(new_token.starts_with("k2."), "{new_token}");
    assert_eq!(get(origin, &target_on(origin, &hls)).await.status, 200);

    // Step 2: the old key removed. Its tokens get the origin's 403; the new
    // key's tokens play.
    let after = playback_keys(&[NEW]);
    let origin = serve(p.origin_with_keys(OriginConfig::default(), &after)).await;
    for path in [
        "master.m3u8".to_owned(),
        "manifest.mpd".to_owned(),
        format!("{rendition}/1.m4s"),
    ] {
        let r = get(origin, &format!("{}?token={old_token}", p.url(&path))).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.code(), "token_invalid", "{path}");
        assert_eq!(r.header("cache-control"), Some("private, no-store"));
        let r = get(origin, &format!("{}?token={new_token}", p.url(&path))).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let _ = std::fs::remove_dir_all(&p.root);
}

/// `ffmpeg -i <url> -map 0 -f null -` succeeds with no error output, and reads every stream.
async fn ffmpeg_decodes(url: &str) {
    // Async: the origin under test runs on this runtime.
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-i", url, "-map", "0", "-f", "null", "-",
        ])
        .output()
        .await
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg {url}: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg {url} reported: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_cached_objects_while_storage_fails_and_breaks_the_circuit() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let (asset, playback) = inserted(&db, AssetState::Ready, "public").await;
    let rendition = RenditionName::new("720p").unwrap();
    for seq in [1, 2] {
        store
            .put_bytes(
                &ObjectKey::media_segment(asset, 1, &rendition, seq),
                Bytes::from(vec![seq as u8; 4096]),
            )
            .await
            .unwrap();
    }
    let config = OriginConfig {
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_millis(500),
        ..OriginConfig::default()
    };
    let state = OriginState::new(config, Keyring::default(), db.pool.clone(), store);
    let addr = serve(state.clone()).await;
    let cached = format!("/play/{playback}/720p/1.m4s");
    let uncached = format!("/play/{playback}/720p/2.m4s");
    assert_eq!(get(addr, &cached).await.status, 200);

    // Break the store: the asset's directory becomes a file, so reads fail
    // with an I/O error (not "not found").
    let asset_dir = root.join(ObjectKey::asset_prefix(asset).trim_end_matches('/'));
    let moved = root.join("moved-away");
    std::fs::rename(&asset_dir, &moved).unwrap();
    std::fs::write(&asset_dir, b"not a directory").unwrap();

    // L1 still answers (stale-if-error); a miss is a fast 503 with Retry-After.
    let hit = get(addr, &cached).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body, vec![1u8; 4096]);
    for _ in 0..3 {
        let r = get(addr, &uncached).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.code(), "storage_unavailable");
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // The breaker is open: further misses do not reach the store.
    let reads = state.storage_reads();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(get(addr, &uncached).await.status, 503);
    }
    assert_eq!(
        state.storage_reads(),
        reads,
        "the open breaker sends no reads"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = state.metrics_text().await;
    assert_eq!(metric(&text, "cascade_origin_breaker_state"), 1.0, "{text}");
    assert!(metric(&text, "cascade_origin_breaker_rejections_total") >= 20.0);
    assert!(
        metric(
            &text,
            "cascade_origin_storage_read_errors_total{error_type=\"permanent\"}"
        ) >= 3.0
    );

    // Repair the store: after the cool-down one probe closes the breaker.
    std::fs::remove_file(&asset_dir).unwrap();
    std::fs::rename(&moved, &asset_dir).unwrap();
    let body = eventually(
        "the breaker to let a probe through",
        Duration::from_secs(10),
        || async {
            let r = get(addr, &uncached).await;
            (r.status == 200).then_some(r.body)
        },
    )
    .await;
    assert_eq!(body, vec![2u8; 4096]);
    assert_eq!(
        metric(&state.metrics_text().await, "cascade_origin_breaker_state"),
        0.0
    );
    let _ = std::fs::remove_dir_all(root);
}

// ---------------------------------------------------------------- nginx as the CDN

/// nginx running `infra/cdn/nginx.conf` in a temporary prefix, killed on drop.
pub(crate) struct Cdn {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Cdn {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cdn {
    /// nginx's error log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub(crate) async fn start_cdn(origin: SocketAddr) -> Cdn {
    start_cdn_purged_at(origin, free_port()).await
}

/// As [`start_cdn`], with the purge listener on `purge` (known before the
/// origin's process starts, which is told where to purge).
pub(crate) async fn start_cdn_purged_at(origin: SocketAddr, purge: SocketAddr) -> Cdn {
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(repo_root().join("infra/cdn/nginx.conf")).unwrap();
    // nginx needs the port up front; a just-freed ephemeral port is the
    // closest to `:0` it offers. A lost race shows as a bind error below.
    let addr = free_port();
    let conf = template
        .replace("{{USER}}", "root")
        .replace("{{LISTEN}}", &addr.to_string())
        .replace("{{ORIGIN}}", &origin.to_string())
        .replace(
            "{{CACHE_DIR}}",
            &dir.path().join("cache").display().to_string(),
        )
        .replace("{{PURGE_LISTEN}}", &purge.to_string());
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("error.log")).unwrap())
        .spawn()
        .expect("start nginx");
    let mut cdn = Cdn {
        child,
        addr,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = cdn.child.try_wait().unwrap() {
            panic!("nginx exited at start: {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not listen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cdn.addr = addr;
    cdn
}

/// Requests the origin answered for a class and status.
async fn count(state: &OriginState, class: &str, status: &str) -> f64 {
    requests(&state.metrics_text().await, class, status)
}

/// Requests for a class (route) with a status in the metrics text, every
/// method summed.
fn requests(text: &str, class: &str, status: &str) -> f64 {
    let prefix = format!("cascade_origin_requests_total{{route=\"{class}\",");
    let suffix = format!("status=\"{status}\"}}");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(labels, _)| labels.ends_with(&suffix))
        .map(|(_, value)| value.trim().parse::<f64>().unwrap())
        .sum()
}

pub(crate) fn nginx_available() -> bool {
    Path::new("/usr/sbin/nginx").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_behind_nginx_cdn_caches_segments_and_plays() {
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let p = transcoded().await;
    let state = p.origin(OriginConfig::default());
    let origin = serve(state.clone()).await;
    let cdn = start_cdn(origin).await;
    let rendition = first_rendition(&p).to_owned();

    // A segment: the second request is a CDN hit; the origin saw one request.
    let segment = p.url(&format!("{rendition}/1.m4s"));
    let first = get(cdn.addr, &segment).await;
    assert_eq!(
        first.status,
        200,
        "{}\nnginx log:\n{}",
        first.text(),
        cdn.log()
    );
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    let second = get(cdn.addr, &segment).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        count(&state, "media_segment", "200").await,
        1.0,
        "the origin saw one request"
    );
    // Ranges are served by the CDN from its cached copy.
    let range = request(cdn.addr, "GET", &segment, &[("Range", "bytes=0-99")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, first.body[..100]);
    assert_eq!(count(&state, "media_segment", "200").await, 1.0);
    assert_eq!(count(&state, "media_segment", "206").await, 0.0);

    // Cache-busting parameters do not split the cache.
    let busted = get(cdn.addr, &format!("{segment}?cb=123")).await;
    assert_eq!(busted.header("x-cache-status"), Some("HIT"));
    // An encoded slash is not the same object (no poisoning of the real entry).
    let encoded = get(cdn.addr, &p.url(&format!("{rendition}%2Findex.m3u8"))).await;
    assert_eq!(encoded.status, 404);
    let media = get(cdn.addr, &p.url(&format!("{rendition}/index.m3u8"))).await;
    assert_eq!(media.status, 200);
    assert!(media.text().starts_with("#EXTM3U"));

    // A processing asset's manifest is not kept by the CDN.
    let (asset, playback) = inserted(&p.db, AssetState::Processing, "public").await;
    p.store
        .put_bytes(
            &ObjectKey::hls_master(asset, 1),
            Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:7\n"),
        )
        .await
        .unwrap();
    let processing = format!("/play/{playback}/master.m3u8");
    let before = count(&state, "hls_playlist", "200").await;
    for _ in 0..3 {
        let r = get(cdn.addr, &processing).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_ne!(r.header("x-cache-status"), Some("HIT"));
    }
    assert_eq!(
        count(&state, "hls_playlist", "200").await - before,
        3.0,
        "every request reached the origin"
    );

    // FFmpeg plays every rung through the CDN.
    let master = format!("http://{}{}", cdn.addr, p.url("master.m3u8"));
    ffmpeg_decodes(&master).await;
    let probe = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json", &master])
        .output()
        .await
        .unwrap();
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let video_streams = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .count();
    let video_rungs = p
        .renditions
        .iter()
        .filter(|r| r.as_str() != "audio")
        .count();
    assert_eq!(
        video_streams, video_rungs,
        "every video rung is a stream: {probe}"
    );
    // Replaying is served by the CDN: no new segment request reaches the origin.
    let seen = count(&state, "media_segment", "200").await;
    ffmpeg_decodes(&master).await;
    assert_eq!(count(&state, "media_segment", "200").await, seen);
    let _ = std::fs::remove_dir_all(&p.root);
}

/// hls.js and dash.js in headless Chromium (tests/players/play.mjs), through
/// the nginx CDN: at least 8 s of playback, no fatal error, and at least two
/// video rungs fetched (the driver starts on the lowest and switches to the
/// highest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_players_in_chromium_play_through_the_cdn_and_switch_rungs() {
    let _cores = crate::common::exclusive_cores().await;
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let p = transcoded_file(&long_fixture()).await;
    let state = p.origin(OriginConfig::default());
    let origin = serve(state.clone()).await;
    let cdn = start_cdn(origin).await;
    for (player, manifest) in [("hls", "master.m3u8"), ("dash", "manifest.mpd")] {
        let url = format!("http://{}{}", cdn.addr, p.url(manifest));
        let out = tokio::process::Command::new("node")
            .arg(repo_root().join("tests/players/play.mjs"))
            .args(["--player", player, "--url", &url, "--seconds", "8"])
            .output()
            .await;
        let report = crate::common::player_report(player, out);
        assert!(report["fatal"].is_null(), "{player}: {report}");
        assert!(
            report["played"].as_f64().unwrap_or(0.0) >= 8.0,
            "{player}: {report}"
        );
        let video_rungs: Vec<&str> = report["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .filter(|r| *r != "audio")
            .collect();
        assert!(
            video_rungs.len() >= 2,
            "{player} fetched only {video_rungs:?}: {report}"
        );
    }
    // The audio's first input sample plays with the first frame: Chromium's
    // MSE honours the edit list that skips the AAC encoder's priming
    // (1024 samples), so at a timestamp offset of 1 s the priming sits
    // just before 1 s and the input's first sample at 1 s (tests/players/audio_start.mjs;
    // the packager's test shows FFmpeg and GStreamer present it alike).
    let object = |name: &str| {
        format!(
            "http://{}{}",
            cdn.addr,
            p.url(&format!("v{}/audio/{name}", p.version))
        )
    };
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/players/audio_start.mjs"))
        .args(["--init", &object("init.mp4"), "--segment", &object("1.m4s")])
        .output()
        .await;
    let placed = crate::common::player_report("audio_start", out);
    let start = placed["start"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (start - (1.0 - 1024.0 / 48_000.0)).abs() < 0.0005,
        "the priming is not skipped: {placed}"
    );
    drop(cdn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_keeps_serving_resolved_assets_through_a_database_outage() {
    let p = transcoded().await;
    let addr = serve(p.origin(OriginConfig {
        asset_ttl: Duration::from_millis(100),
        ..OriginConfig::default()
    }))
    .await;
    let rendition = first_rendition(&p).to_owned();
    assert_eq!(get(addr, &p.url("master.m3u8")).await.status, 200);
    // The outage: no new connections, every open one cut.
    crate::common::database_outage(&p.db, true).await;
    // Past the lookup's freshness: the origin must ask Postgres again, fails,
    // and answers from the last known asset: the cached master, and a segment
    // it never read before (from storage).
    let master = crate::common::eventually(
        "a lookup answered from the last known asset",
        Duration::from_secs(10),
        || async {
            let master = get(addr, &p.url("master.m3u8")).await;
            let text = get(addr, "/metrics").await.text();
            (metric(&text, "cascade_origin_asset_lookup_stale_total") >= 1.0).then_some(master)
        },
    )
    .await;
    assert_eq!(master.status, 200, "{}", master.text());
    let segment = get(addr, &p.url(&format!("v{}/{rendition}/1.m4s", p.version))).await;
    assert_eq!(segment.status, 200, "{}", segment.text());
    // A playback id never resolved cannot be known: 503, not 404.
    let unknown = get(addr, &format!("/play/{}/master.m3u8", PlaybackId::new())).await;
    assert_eq!(unknown.status, 503, "{}", unknown.text());
    crate::common::database_outage(&p.db, false).await;
    let text = get(addr, "/metrics").await.text();
    assert!(
        metric(&text, "cascade_origin_asset_lookup_stale_total") >= 2.0,
        "{text}"
    );
}

/// The front cache answers repeated plain GETs (and HEADs) of public
/// objects with exactly what the full path answered, keeps conditional and
/// ranged requests and other encodings apart, and lets go of an asset once
/// it stops resolving as it was (here: made signed) within `asset_ttl` plus
/// its own second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_front_cache_repeats_plain_answers_only() {
    let p = transcoded().await;
    let state = p.origin(OriginConfig {
        asset_ttl: Duration::from_millis(500),
        ..OriginConfig::default()
    });
    let addr = serve(state).await;
    let front_hits = || async {
        metric(
            &get(addr, "/metrics").await.text(),
            "cascade_origin_front_hits_total",
        )
    };
    let without_date = |reply: &Reply| -> Vec<(String, String)> {
        let mut headers: Vec<_> = reply
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("date"))
            .cloned()
            .collect();
        headers.sort();
        headers
    };
    let rendition = first_rendition(&p).to_owned();
    for path in [
        "master.m3u8".to_owned(),
        format!("{rendition}/index.m3u8"),
        format!("v{}/{rendition}/1.m4s", p.version),
    ] {
        let url = p.url(&path);
        let before = front_hits().await;
        let full = get(addr, &url).await;
        assert_eq!(full.status, 200, "{path}: {}", full.text());
        let again = get(addr, &url).await;
        assert_eq!(
            front_hits().await,
            before + 1.0,
            "{path}: answered by the front"
        );
        assert_eq!(again.status, 200, "{path}");
        assert_eq!(again.body, full.body, "{path}");
        assert_eq!(without_date(&again), without_date(&full), "{path}");

        // HEAD: the same head, no body.
        let head = request(addr, "HEAD", &url, &[]).await;
        assert_eq!(head.status, 200, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(head.header("content-length"), full.header("content-length"));

        // Ranged and conditional requests take the full path.
        let hits = front_hits().await;
        let ranged = request(addr, "GET", &url, &[("range", "bytes=0-9")]).await;
        assert_eq!(ranged.status, 206, "{path}");
        assert_eq!(ranged.body, full.body[..10], "{path}");
        let etag = full.header("etag").unwrap();
        let conditional = request(addr, "GET", &url, &[("if-none-match", etag)]).await;
        assert_eq!(conditional.status, 304, "{path}");
        assert_eq!(front_hits().await, hits, "{path}: not from the front");
    }

    // Another encoding is another answer: gzip is kept beside the plain one.
    let url = p.url(&format!("{rendition}/index.m3u8"));
    let plain = get(addr, &url).await;
    let gzip = [("accept-encoding", "gzip")];
    let zipped = request(addr, "GET", &url, &gzip).await;
    let zipped_again = request(addr, "GET", &url, &gzip).await;
    assert_eq!(zipped_again.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&zipped_again.body), plain.body);
    assert_eq!(zipped_again.body, zipped.body);
    let plain_again = get(addr, &url).await;
    assert_eq!(plain_again.header("content-encoding"), None);
    assert_eq!(plain_again.body, plain.body);

    // Signed from now on: within asset_ttl and the front's second, a plain
    // GET is refused, and stays refused.
    p.make_signed().await;
    let changed_at = std::time::Instant::now();
    eventually("the front to let go", Duration::from_secs(5), || async {
        (get(addr, &url).await.status == 403).then_some(())
    })
    .await;
    assert!(
        changed_at.elapsed()
            < Duration::from_millis(500) * 2 + FRONT_TTL + Duration::from_millis(500),
        "{:?}",
        changed_at.elapsed()
    );
    let hits = front_hits().await;
    assert_eq!(get(addr, &url).await.status, 403);
    assert_eq!(front_hits().await, hits, "a refusal is never kept");
}

/// A playback id asked for again soon after its lookup went stale gets the
/// last answer at once while one background query refreshes it: a slow
/// database never holds up playback of a busy asset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refreshes_busy_lookups_in_the_background() {
    let p = transcoded().await;
    let ttl = Duration::from_secs(1);
    let addr = serve(p.origin(OriginConfig {
        asset_ttl: ttl,
        ..OriginConfig::default()
    }))
    .await;
    let url = p.url(&format!("{}/index.m3u8", first_rendition(&p)));
    // Ranged: past the front cache, so every request resolves.
    let ranged = [("range", "bytes=0-9")];
    assert_eq!(request(addr, "GET", &url, &ranged).await.status, 206);
    let resolved_at = std::time::Instant::now();
    // Lookups of the asset now wait for this transaction's lock.
    let mut blocker = p.db.pool.get().await.unwrap();
    let transaction = blocker.transaction().await.unwrap();
    transaction
        .batch_execute("LOCK TABLE assets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let lookups = || async {
        let text = get(addr, "/metrics").await.text();
        metric(&text, "cascade_origin_asset_lookups_total")
    };
    let lookups_before = lookups().await;
    eventually("the lookup to go stale", ttl * 2, || async {
        (resolved_at.elapsed() > ttl + Duration::from_millis(100)).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let stale = request(addr, "GET", &url, &ranged).await;
    assert_eq!(stale.status, 206, "{}", stale.text());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a busy asset's lookup waited on the database: {:?}",
        started.elapsed()
    );
    // One refresh went out (and waits for the lock).
    eventually("the background refresh", Duration::from_secs(5), || async {
        (lookups().await == lookups_before + 1.0).then_some(())
    })
    .await;
    let again = request(addr, "GET", &url, &ranged).await;
    assert_eq!(again.status, 206);
    assert_eq!(
        lookups().await,
        lookups_before + 1.0,
        "one refresh at a time"
    );
    transaction.rollback().await.unwrap();
}
