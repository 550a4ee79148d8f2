//! Test harness shared by the integration tests. `make test` runs them
//! inside `scripts/stack.sh`, which starts a private Postgres and a
//! SeaweedFS S3 endpoint and exports `CASCADE_TEST_*`. Each test gets its own
//! database (and its own bucket), so tests run in parallel without sharing state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_platform::config::{Config, S3Config, Secret};
use cascade_platform::db;
use deadpool_postgres::Pool;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through `make test` (scripts/stack.sh starts the services)")
    })
}

/// A fresh, migrated database and a config pointing at it.
pub struct TestDb {
    pub config: Config,
    pub pool: Pool,
    pub url: String,
}

/// Creates a database named after a random id, migrated.
pub async fn fresh_db() -> TestDb {
    let admin_url = required_env("CASCADE_TEST_DATABASE_URL");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("CASCADE_TEST_DATABASE_URL has no database name"),
    };
    let mut config = Config::default();
    config.database.url = Secret::new(url.clone());
    config.database.max_connections = 12;
    let pool = db::pool(&config.database).expect("pool");
    db::migrate(&pool).await.expect("migrate");
    TestDb { config, pool, url }
}

/// S3 settings for the stack's SeaweedFS, with a bucket of the test's own.
pub fn s3_config() -> S3Config {
    let endpoint = required_env("CASCADE_TEST_S3_ENDPOINT");
    S3Config {
        endpoint: Some(endpoint),
        bucket: format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
        access_key_id: Secret::new(required_env("AWS_ACCESS_KEY_ID")),
        secret_access_key: Secret::new(required_env("AWS_SECRET_ACCESS_KEY")),
        max_attempts: 2,
        ..S3Config::default()
    }
}

/// A TCP forwarder on loopback that a test can cut: while down, every open
/// connection is closed and new ones are closed as soon as accepted (what a
/// client sees of a store or database that went away). Stops with the test.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
    /// Connections cut or refused while down: the client met the outage.
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:(free port) to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (down, watch) = tokio::sync::watch::channel(false);
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    // Dropped: closed at once.
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self {
            addr,
            down,
            refused,
            task,
        }
    }

    /// Connections refused while down so far.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to `limit`) until clients have been refused `n` times
    /// since the outage began: they met it and tried again.
    pub async fn wait_refused(&self, n: usize, limit: Duration) {
        eventually("clients to meet the outage", limit, || async {
            (self.refused() >= n).then_some(())
        })
        .await;
    }

    /// Cuts (`true`) or restores the connection.
    pub fn set_down(&self, down: bool) {
        let _ = self.down.send(down);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set_down(true);
        self.task.abort();
    }
}

/// Held by the tests that need the machine's cores to themselves: a live
/// ladder with players in Chromium, or a ladder overloaded on purpose.
/// Tests run two at a time; two of these at once on two shared cores
/// would measure the machine, not Cascade.
static CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other core-heavy test runs; hold the guard to the end.
pub async fn exclusive_cores() -> tokio::sync::MutexGuard<'static, ()> {
    CORES.lock().await
}

/// The JSON report `tests/players/play.mjs` printed for `player` (its last
/// line), once the run itself succeeded.
pub fn player_report(
    player: &str,
    out: std::io::Result<std::process::Output>,
) -> serde_json::Value {
    let out = out.expect("node (tests/players: npm ci)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{player}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("{player}: no report in {stdout:?}"))
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `sql` on the test cluster's admin database.
pub async fn admin_sql(sql: &str) {
    let url = std::env::var("CASCADE_TEST_DATABASE_URL").expect("CASCADE_TEST_DATABASE_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

/// Starts (`true`) or ends a database outage for `db` alone: no new
/// connections, and every open one cut (as a Postgres restart does to its
/// clients), without touching the other tests' databases.
pub async fn database_outage(db: &TestDb, down: bool) {
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    if down {
        admin_sql(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}';"
        ))
        .await;
    } else {
        admin_sql(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS true;"
        ))
        .await;
    }
}

/// `cascade keys create NAME --environment ENV`: the printed secret.
pub fn create_key(db: &TestDb, name: &str, environment: &str) -> String {
    let output = Command::new(cascade_bin())
        .args(["keys", "create", name, "--environment", environment])
        .env("CASCADE_DATABASE__URL", &db.url)
        .output()
        .expect("cascade keys create");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("in environment {environment}")),
        "{stdout}"
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .expect("the secret")
        .trim()
        .to_owned()
}

/// A new waiting asset in the `default` environment, with `policy`.
pub async fn insert_asset(
    db: &TestDb,
    policy: &str,
) -> (cascade_schemas::AssetId, cascade_schemas::PlaybackId) {
    use cascade_platform::{assets, environments};
    let client = db.pool.get().await.unwrap();
    let environment = environments::ensure(&client, "default").await.unwrap();
    let id = cascade_schemas::AssetId::new();
    let metadata = serde_json::json!({});
    let playback = assets::insert(
        &client,
        id,
        &assets::NewAsset {
            environment,
            title: None,
            metadata: &metadata,
            policy: policy.parse().unwrap(),
            source_claim: None,
        },
    )
    .await
    .unwrap();
    (id, playback)
}

/// The single bigint a `SELECT count(*) ...` returns.
pub async fn count(db: &TestDb, sql: &str) -> i64 {
    db.pool
        .get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Path of the `cascade` binary under test.
pub fn cascade_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cascade"))
}

/// A `cascade` child process, killed when dropped.
pub struct CascadeProcess {
    pub child: Child,
    pub http: Option<SocketAddr>,
    /// The RTMP listener, when the ingest role runs one.
    pub rtmp: Option<SocketAddr>,
    /// Its object store, unless the caller named one: removed after the
    /// process ends.
    _scratch: Option<tempfile::TempDir>,
}

impl CascadeProcess {
    /// Starts `cascade serve` with the given extra environment, waiting until
    /// it prints its listening address.
    pub fn serve(db_url: &str, roles: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(cascade_bin());
        command
            .args(["serve", "--roles", roles])
            .env("CASCADE_DATABASE__URL", db_url)
            .env("CASCADE_HTTP__LISTEN", "127.0.0.1:0")
            .env("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0")
            .env("CASCADE_LOG__FORMAT", "json")
            // Warnings and errors only: enough to debug a failure, quiet otherwise.
            .env("CASCADE_LOG__FILTER", "warn")
            .env_remove("RUST_LOG")
            .env_remove("CASCADE_STORAGE__S3__ENDPOINT")
            .env_remove("CASCADE_STORAGE__S3__BUCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let scratch = tempfile::Builder::new()
            .prefix("cascade-test-")
            .tempdir()
            .expect("a scratch directory");
        command.env("CASCADE_STORAGE__LOCAL_ROOT", scratch.path());
        let scratch = (!env
            .iter()
            .any(|(key, _)| *key == "CASCADE_STORAGE__LOCAL_ROOT"))
        .then_some(scratch);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn cascade serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut http = None;
        let mut rtmp = None;
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("rtmp listening on rtmp://").nth(1) {
                        rtmp = rest.split('/').next().and_then(|a| a.parse().ok());
                        continue;
                    }
                    if let Some(rest) = line.split("http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        http = addr.parse().ok();
                        break;
                    }
                }
                _ => break,
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        assert!(http.is_some(), "cascade serve did not report its address");
        Self {
            child,
            http,
            rtmp,
            _scratch: scratch,
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cascade did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CascadeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A raw HTTP/1.1 exchange over a fresh connection, so tests can send what
/// real clients send, malformed headers included: (status, headers, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        has_length |= name.eq_ignore_ascii_case("content-length");
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length && method != "GET" && method != "HEAD" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Splits a raw HTTP/1.1 response (Content-Length bodies) into parts.
pub fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// A header's value from [`http`]'s result.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A free loopback port (for processes that must come back on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The repository root (for scripts, fixtures and test clients).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The generated fixtures (fixtures/generate.sh is idempotent and locks
/// against concurrent callers).
/// The 20 s 1080p30 fixture (about 13 MB), generated on first use: not
/// part of the default fixture set.
pub fn bench_fixture() -> PathBuf {
    static GENERATE: std::sync::Once = std::sync::Once::new();
    let dir = fixtures_dir();
    GENERATE.call_once(|| {
        let status = Command::new(repo_root().join("fixtures/generate.sh"))
            .arg("--bench")
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run fixtures/generate.sh --bench");
        assert!(status.success(), "fixtures/generate.sh --bench failed");
    });
    dir.join("bench_1080p30_20s.mp4")
}

pub fn fixtures_dir() -> PathBuf {
    static GENERATE: std::sync::Once = std::sync::Once::new();
    let dir = repo_root().join(".data/fixtures");
    GENERATE.call_once(|| {
        let status = Command::new(repo_root().join("fixtures/generate.sh"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run fixtures/generate.sh");
        assert!(status.success(), "fixtures/generate.sh failed");
    });
    dir
}

/// Like [`http`], with the body as bytes (media): (status, headers, body).
pub fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let (status, headers, _) = parse_response(&raw[..split + 4]);
    let mut body = raw[split + 4..].to_vec();
    if header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            out.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        body = out;
    }
    (status, headers, body)
}
