//! Resource limits through a real `cascade serve`: bodies that trickle are
//! cut by the minimum rate and the deadline (and leave the asset or upload
//! ready for a good attempt), many slow uploads cost no database connection
//! and slow nothing else down, the upload slots answer 429 beyond their
//! count, slow headers are cut off, oversized and deeply nested JSON cost no
//! memory, and pooled connections carry the statement timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    asset_claim, create_upload, created_asset, fixture, json, json_code, scratch_root, start, AUTH,
    TUS,
};
use crate::common::create_key;
use crate::common::{eventually, fresh_db, header, http, parse_response, TestDb};

/// Sends `head` (a request's line and headers), then its body one byte
/// every `every` until the server answers and closes, or `limit` passes:
/// (status, headers, body, time to the answer). Dropping the future closes
/// the connection.
async fn trickle(
    addr: SocketAddr,
    head: String,
    every: Duration,
    limit: Duration,
) -> (u16, Vec<(String, String)>, String, Duration) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send head");
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sending = true;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            },
            _ = ticks.tick(), if sending => {
                // The server may have answered and stopped reading.
                sending = stream.write_all(b"x").await.is_ok();
            }
            _ = tokio::time::sleep_until(deadline) => panic!("no answer within {limit:?}"),
        }
    }
    let elapsed = started.elapsed();
    let (status, headers, body) = parse_response(&raw);
    (status, headers, body, elapsed)
}

fn put_head(addr: SocketAddr, asset: &str, auth: (&str, &str), length: u64) -> String {
    format!(
        "PUT /v1/assets/{asset}/source HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        auth.0, auth.1
    )
}

fn patch_head(addr: SocketAddr, upload: &str, auth: (&str, &str), length: u64) -> String {
    format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        auth.0, auth.1
    )
}

/// A new waiting asset: (id, playback id).
fn new_asset(addr: SocketAddr, auth: (&str, &str)) -> (String, String) {
    let asset = created_asset(addr, auth);
    (
        asset["id"].as_str().unwrap().to_owned(),
        asset["playback_id"].as_str().unwrap().to_owned(),
    )
}

/// The asset's state and whether an upload holds its source.
async fn asset_row(db: &TestDb, id: &str) -> (String, bool) {
    let (state, claim) = asset_claim(db, id).await;
    (state, claim.is_some())
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn trickling_bodies_are_cut_by_the_minimum_rate_and_the_deadline() {
    let db = fresh_db().await;
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();

    // At least 100 bytes/s over each second once half a second has passed;
    // the stall timeout alone (30 s) would never fire on a byte every 300 ms.
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[
            ("CASCADE_INGEST__BODY_TIMEOUT", "\"30s\""),
            ("CASCADE_INGEST__BODY_MIN_RATE", "100"),
            ("CASCADE_INGEST__BODY_RATE_WINDOW", "\"1s\""),
            ("CASCADE_INGEST__BODY_RATE_GRACE", "\"500ms\""),
        ],
    );
    let addr = server.addr;
    let (asset, _) = new_asset(addr, AUTH);
    let (status, _, body, took) = trickle(
        addr,
        put_head(addr, &asset, AUTH, 1000),
        Duration::from_millis(300),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!((status, json_code(&body).as_str()), (408, "body_timeout"));
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("slower than 100 bytes/s"),
        "{body}"
    );
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    eprintln!("simple upload trickling 1 byte/300 ms: 408 after {took:?} (min rate 100 B/s, window 1 s, grace 0.5 s)");
    // The asset waits again, its source unclaimed: a good upload succeeds.
    assert_eq!(asset_row(&db, &asset).await, ("waiting".to_owned(), false));
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{asset}/source"),
        &[AUTH],
        &source,
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(json(&body)["state"], "processing");

    // A tus PATCH trickling the same way: cut, and the upload is free for
    // the next PATCH at the same offset.
    let upload = create_upload(addr, source.len());
    let (status, _, body, took) = trickle(
        addr,
        patch_head(addr, &upload, AUTH, source.len() as u64),
        Duration::from_millis(300),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!((status, json_code(&body).as_str()), (408, "body_timeout"));
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    let (status, headers, _) = http(addr, "HEAD", &upload, &[AUTH, TUS], b"");
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (200, Some("0"))
    );
    let (status, _, body) = http(
        addr,
        "PATCH",
        &upload,
        &[
            AUTH,
            TUS,
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        &source,
    );
    assert_eq!(status, 204, "{body}");
    drop(server);

    // With no minimum rate, the deadline cuts a steady trickle.
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[
            ("CASCADE_INGEST__BODY_TIMEOUT", "\"30s\""),
            ("CASCADE_INGEST__BODY_MIN_RATE", "0"),
            ("CASCADE_INGEST__BODY_DEADLINE", "\"2s\""),
        ],
    );
    let addr = server.addr;
    let (asset, _) = new_asset(addr, AUTH);
    let (status, _, body, took) = trickle(
        addr,
        put_head(addr, &asset, AUTH, 1000),
        Duration::from_millis(300),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!((status, json_code(&body).as_str()), (408, "body_timeout"));
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("took longer than 2s"),
        "{body}"
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&took),
        "cut after {took:?}"
    );
    eprintln!("simple upload trickling 1 byte/300 ms: 408 after {took:?} (deadline 2 s)");
    assert_eq!(asset_row(&db, &asset).await, ("waiting".to_owned(), false));
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{asset}/source"),
        &[AUTH],
        &source,
    );
    assert_eq!(status, 202, "{body}");
}

/// How long one request over a fresh connection takes: (status, time).
async fn timed(
    addr: SocketAddr,
    path: String,
    auth: Option<(&'static str, String)>,
) -> (u16, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, _) = http(addr, "GET", &path, &headers, b"");
        (status, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_uploads_hold_no_connection_and_slow_nothing_else() {
    const PER_KEY: usize = 30;
    const PER_PROCESS: usize = 50;
    const POOL: usize = 4;
    let db = fresh_db().await;
    let root = scratch_root();
    let pool = POOL.to_string();
    let per_key = PER_KEY.to_string();
    let per_process = PER_PROCESS.to_string();
    // Named, so its connections can be told from the test's own.
    let url = format!("{}?application_name=cascade-limits", db.url);
    let server = start(
        &db,
        "ingest,origin",
        &root,
        0,
        &[
            ("CASCADE_DATABASE__URL", &url),
            ("CASCADE_DATABASE__MAX_CONNECTIONS", &pool),
            ("CASCADE_INGEST__MAX_UPLOADS", &per_process),
            ("CASCADE_INGEST__MAX_UPLOADS_PER_KEY", &per_key),
            ("CASCADE_INGEST__MAX_UPLOAD_SIZE", "\"100MiB\""),
            // The trickles must stay in flight for the whole test.
            ("CASCADE_INGEST__BODY_MIN_RATE", "0"),
        ],
    );
    let addr = server.addr;
    let secret = create_key(&db, "second", "default");
    let other_value = format!("Bearer {secret}");
    let other: (&str, &str) = ("Authorization", other_value.as_str());
    const LENGTH: u64 = 1 << 20;

    // The bootstrap key trickles PER_KEY simple uploads; the other key
    // trickles tus PATCHes until the process is full.
    let assets: Vec<(String, String)> = (0..PER_KEY).map(|_| new_asset(addr, AUTH)).collect();
    let uploads: Vec<String> = (0..PER_PROCESS - PER_KEY + 1)
        .map(|_| {
            let length = LENGTH.to_string();
            let (status, headers, body) = http(
                addr,
                "POST",
                "/v1/uploads",
                &[other, TUS, ("Upload-Length", &length)],
                b"",
            );
            assert_eq!(status, 201, "{body}");
            let location = header(&headers, "location").unwrap();
            location[location.find("/v1/uploads/").unwrap()..].to_owned()
        })
        .collect();
    let mut slow = Vec::new();
    let mut heads: Vec<String> = assets
        .iter()
        .map(|(id, _)| put_head(addr, id, AUTH, LENGTH))
        .collect();
    heads.extend(
        uploads[..PER_PROCESS - PER_KEY]
            .iter()
            .map(|upload| patch_head(addr, upload, other, LENGTH)),
    );
    for head in heads {
        slow.push(tokio::spawn(trickle(
            addr,
            head,
            Duration::from_millis(300),
            Duration::from_secs(120),
        )));
    }

    // Past the key's count, and then the process's, an upload gets 429
    // before its body is read (an upload within the limits would get 413
    // here: its declared size is over the maximum).
    let probe_asset = new_asset(addr, AUTH).0;
    let probe_put = format!("/v1/assets/{probe_asset}/source");
    let refused = |path: String, auth: (&'static str, String), tus: bool| async move {
        tokio::task::spawn_blocking(move || {
            let mut headers = vec![(auth.0, auth.1.as_str()), ("Content-Length", "200000000")];
            if tus {
                headers.extend([
                    TUS,
                    ("Upload-Offset", "0"),
                    ("Content-Type", "application/offset+octet-stream"),
                ]);
            }
            let method = if tus { "PATCH" } else { "PUT" };
            let (status, headers, body) = http(addr, method, &path, &headers, b"");
            (status == 429).then(|| {
                assert_eq!(json_code(&body), "too_many_uploads");
                assert_eq!(header(&headers, "retry-after"), Some("5"));
                json(&body)["message"].as_str().unwrap().to_owned()
            })
        })
        .await
        .unwrap()
    };
    let message = eventually(
        "the key's uploads all in flight",
        Duration::from_secs(20),
        || refused(probe_put.clone(), (AUTH.0, AUTH.1.to_owned()), false),
    )
    .await;
    assert!(message.contains("API key"), "{message}");
    let last_upload = uploads[PER_PROCESS - PER_KEY].clone();
    let message = eventually(
        "the process's uploads all in flight",
        Duration::from_secs(20),
        || refused(last_upload.clone(), (other.0, other.1.to_owned()), true),
    )
    .await;
    assert!(message.contains("server"), "{message}");

    // With PER_PROCESS uploads trickling on a pool of POOL connections, every
    // other request still answers at once.
    let pid = server.process.child.id();
    let playback = &assets[0].1;
    let auth = Some((AUTH.0, AUTH.1.to_owned()));
    let mut worst: Vec<(String, Duration)> = Vec::new();
    for (path, auth, expected) in [
        ("/v1/assets?limit=100".to_owned(), auth.clone(), 200),
        (format!("/v1/assets/{}", assets[1].0), auth.clone(), 200),
        ("/healthz".to_owned(), None, 200),
        ("/readyz".to_owned(), None, 200),
        (format!("/play/{playback}/master.m3u8"), None, 404),
    ] {
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let (status, took) = timed(addr, path.clone(), auth.clone()).await;
            assert_eq!(status, expected, "{path}");
            slowest = slowest.max(took);
        }
        assert!(
            slowest < Duration::from_secs(1),
            "{path} took {slowest:?} with {PER_PROCESS} slow uploads in flight"
        );
        worst.push((path, slowest));
    }
    eprintln!(
        "with {PER_PROCESS} uploads trickling (pool of {POOL}, process {pid}), slowest of 5: {worst:?}"
    );
    // No connection waits in a transaction on a client.
    let idle_in_transaction = crate::common::count(
        &db,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .await;
    assert_eq!(idle_in_transaction, 0);
    let server_connections = crate::common::count(
        &db,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'cascade-limits'",
    )
    .await;
    // The pool, and the origin's own LISTEN connection (playback changes).
    assert!(
        server_connections <= POOL as i64 + 1,
        "{server_connections}"
    );
    assert!(
        slow.iter().all(|task| !task.is_finished()),
        "every trickle still in flight"
    );

    // The clients go away: their slots and source claims are freed.
    for task in &slow {
        task.abort();
    }
    eventually("the slots freed", Duration::from_secs(20), || async {
        let probe_put = probe_put.clone();
        tokio::task::spawn_blocking(move || {
            let (status, _, _) = http(
                addr,
                "PUT",
                &probe_put,
                &[AUTH, ("Content-Length", "200000000")],
                b"",
            );
            (status == 413).then_some(())
        })
        .await
        .unwrap()
    })
    .await;
    for (id, _) in &assets {
        let row = eventually(
            "the source claim released",
            Duration::from_secs(20),
            || async {
                let row = asset_row(&db, id).await;
                (!row.1).then_some(row)
            },
        )
        .await;
        assert_eq!(row.0, "waiting");
    }
}

#[tokio::test]
async fn connections_that_send_headers_slowly_are_closed() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[("CASCADE_HTTP__HEADER_READ_TIMEOUT", "\"1s\"")],
    );
    let addr = server.addr;
    let connect = || {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        stream
    };
    /// Feeds `bytes` one every 200 ms until the server closes the
    /// connection; returns when it did and what it answered.
    fn until_closed(mut stream: TcpStream, bytes: &[u8]) -> (Duration, Vec<u8>) {
        let started = Instant::now();
        let mut answer = Vec::new();
        let mut next = 0;
        let mut last_write = Instant::now() - Duration::from_secs(1);
        while started.elapsed() < Duration::from_secs(10) {
            if next < bytes.len() && last_write.elapsed() >= Duration::from_millis(200) {
                if stream.write_all(&bytes[next..=next]).is_err() {
                    return (started.elapsed(), answer);
                }
                next += 1;
                last_write = Instant::now();
            }
            let mut buf = [0u8; 1024];
            match stream.read(&mut buf) {
                Ok(0) => return (started.elapsed(), answer),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (started.elapsed(), answer),
            }
        }
        panic!("the connection stayed open for 10 s");
    }
    // Headers a byte every 200 ms: a whole header block would take 10 s.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {}\r\n\r\n",
        "s".repeat(30)
    );
    let (took, answer) = until_closed(connect(), head.as_bytes());
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&took),
        "closed after {took:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    eprintln!("headers at 5 bytes/s: connection closed after {took:?} (header_read_timeout 1 s)");
    // A connection that sends nothing is closed too.
    let (took, _) = until_closed(connect(), b"");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    // So is a keep-alive connection idle after its request.
    let mut stream = connect();
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let (took, answer) = until_closed(stream, b"");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    // Requests that send their headers at once are served as ever.
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").0, 200);
}

#[tokio::test]
async fn oversized_and_deeply_nested_json_cost_no_memory() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let pid = server.process.child.id();
    let deep = format!("{{\"metadata\": {}", "[".repeat(60_000));
    let big = vec![b' '; 4 << 20];
    let round = |n: usize| {
        for _ in 0..n {
            // Declared too large: 413 before a byte is read.
            let started = Instant::now();
            let (status, _, body) = http(
                addr,
                "POST",
                "/v1/assets",
                &[
                    AUTH,
                    ("Content-Type", "application/json"),
                    ("Content-Length", "104857600"),
                ],
                b"",
            );
            assert_eq!((status, json_code(&body).as_str()), (413, "too_large"));
            assert!(started.elapsed() < Duration::from_secs(1));
            // Sent anyway (4 MiB, chunked): 413 once 64 KiB are read.
            let head = format!(
                "POST /v1/assets HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                AUTH.0, AUTH.1
            );
            let (status, _, body) = exchange(addr, &head, chunked(&big));
            assert_eq!((status, json_code(&body).as_str()), (413, "too_large"));
            // Nested 60,000 deep: 400 at serde_json's recursion limit.
            let (status, _, body) = http(
                addr,
                "POST",
                "/v1/assets",
                &[AUTH, ("Content-Type", "application/json")],
                deep.as_bytes(),
            );
            assert_eq!((status, json_code(&body).as_str()), (400, "invalid_json"));
        }
    };
    // Warm up (threads, buffers), then measure.
    round(5);
    let before = rss_kib(pid);
    round(50);
    let after = rss_kib(pid);
    eprintln!("RSS of the ingest process: {before} KiB before, {after} KiB after 50 rounds of 100 MiB declared, 4 MiB chunked and 60,000-deep JSON bodies");
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// `data` in chunked transfer coding, 16 KiB a chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 16);
    for chunk in data.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends `head`, then `body` from another thread (the server may answer
/// and close before it has read it all), and reads the answer.
fn exchange(addr: SocketAddr, head: &str, body: Vec<u8>) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = feeder.join();
    parse_response(&raw)
}

#[tokio::test]
async fn pooled_connections_carry_the_statement_timeout() {
    let db = fresh_db().await;
    let mut config = db.config.database.clone();
    config.statement_timeout = Duration::from_millis(300);
    let pool = cascade_platform::db::pool(&config).unwrap();
    let client = pool.get().await.unwrap();
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "300ms");
    let error = client
        .batch_execute("SELECT pg_sleep(2)")
        .await
        .expect_err("cancelled by the statement timeout");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    drop(client);
    // Migrations run without it, and leave the connection as they found it.
    cascade_platform::db::migrate(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "300ms");
}
