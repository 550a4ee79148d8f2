//! What operators run: a real Prometheus (Debian's) scrapes a running stack
//! while a fixture goes through the pipeline, and every query of the shipped
//! Grafana dashboard and every metric the alert rules read returns data;
//! SIGTERM drains (readiness 503 first, then the listener closes). The KEDA
//! scaler's SQL is run against the migrations by scripts/check-infra.sh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    eventually, fixtures_dir, free_port, fresh_db, http, http_get, repo_root, CascadeProcess,
};

const KEY: &str = "csk_test_operations";
const AUTH: (&str, &str) = ("Authorization", "Bearer csk_test_operations");

/// Debian's Prometheus server, installed by scripts/deps.sh.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus server on loopback, stopped when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `rules` every second.
    async fn start(target: SocketAddr, rules: &Path) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: scripts/deps.sh installs Debian's prometheus"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  \
                   - job_name: cascade\n    \
                     static_configs: [{{ targets: [\"{target}\"] }}]\n",
                rules = rules.display().to_string(),
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", server.base);
        eventually(
            "prometheus to be ready",
            Duration::from_secs(30),
            || async {
                let response = reqwest::get(ready.as_str()).await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
        server
    }

    /// The result vector of an instant query (panics on a query error).
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let url = format!("{}/api/v1/query?query={}", self.base, percent_encode(expr));
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The loaded rules (`/api/v1/rules`), flattened.
    async fn rules(&self) -> Vec<serde_json::Value> {
        let text = reqwest::get(format!("{}/api/v1/rules", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// `text` as a URL query value (everything but unreserved characters escaped).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `cascade_*` metric name an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"cascade_[a-z0-9_]+").unwrap();
    let mut names: Vec<String> = re.find_iter(expr).map(|m| m.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

fn infra(path: &str) -> PathBuf {
    repo_root().join("infra").join(path)
}

/// `cascade serve` with every role over local storage, delivering webhooks
/// to a receiver of its own; `extra` adds or overrides settings.
struct Stack {
    process: CascadeProcess,
    addr: SocketAddr,
    _root: tempfile::TempDir,
    _db: crate::common::TestDb,
}

async fn start_stack(extra: &[(&str, &str)]) -> Stack {
    // A webhook receiver, so deliveries happen (and are measured, traced).
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let db = fresh_db().await;
    let root = tempfile::tempdir().unwrap();
    let root_text = root.path().display().to_string();
    let endpoints = format!("[{{ url = \"{hook}\", secret = \"operations-webhook-secret\" }}]");
    let mut env = vec![
        ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
        ("CASCADE_STORAGE__LOCAL_ROOT", root_text.as_str()),
        ("CASCADE_WEBHOOKS__ENDPOINTS", endpoints.as_str()),
        ("CASCADE_TRANSCODE__ENCODER", "libx264"),
        ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
    ];
    env.extend_from_slice(extra);
    let process = CascadeProcess::serve(&db.url, "ingest,workers,origin", &env);
    let addr = process.http.unwrap();
    Stack {
        process,
        addr,
        _root: root,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_role_and_the_dashboard_and_alerts_read_real_series() {
    let stack = start_stack(&[
        ("CASCADE_METRICS__QUEUE_SAMPLE_INTERVAL", "\"1s\""),
        ("CASCADE_INGEST__PUBLIC_URL", "https://api.test"),
        ("CASCADE_PLAYBACK__PUBLIC_URL", "https://cdn.test/"),
    ])
    .await;
    let addr = stack.addr;
    let prometheus = Prometheus::start(addr, &infra("prometheus/alerts.yml")).await;

    // A fixture through the pipeline: simple upload, transcode, webhook,
    // playback through the origin.
    let (status, _, body) = http(addr, "POST", "/v1/assets", &[AUTH], b"");
    assert_eq!(status, 201, "{body}");
    let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = asset["id"].as_str().unwrap().to_owned();
    // API URLs under ingest.public_url, playback URLs under playback.public_url.
    let upload_url = asset["upload"]["simple"]["url"].as_str().unwrap();
    assert!(upload_url.starts_with("https://api.test/v1/"), "{asset}");
    let source = std::fs::read(fixtures_dir().join("tiny_320x180_stereo.mp4")).unwrap();
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        &source,
    );
    assert_eq!(status, 202, "{body}");
    let ready = eventually(
        "the asset to be ready",
        Duration::from_secs(180),
        || async {
            let (_, _, body) = http(addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
            let asset: serde_json::Value = serde_json::from_str(&body).ok()?;
            (asset["state"] == "ready").then_some(asset)
        },
    )
    .await;
    let playback_id = ready["playback_id"].as_str().unwrap();
    assert_eq!(
        ready["playback"]["hls"],
        format!("https://cdn.test/play/{playback_id}/master.m3u8"),
        "{ready}"
    );
    let (status, master) = http_get(addr, &format!("/play/{playback_id}/master.m3u8"));
    assert_eq!(status, 200);
    let media = master
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .unwrap()
        .to_owned();
    let (status, playlist) = http_get(addr, &format!("/play/{playback_id}/{media}"));
    assert_eq!(status, 200);
    let rendition = media.rsplit_once('/').map_or("", |(dir, _)| dir);
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .unwrap();
    let segment = if rendition.is_empty() {
        segment.to_owned()
    } else {
        format!("{rendition}/{segment}")
    };
    for _ in 0..3 {
        let path = format!("/play/{playback_id}/{segment}");
        let (status, headers, _) = http(addr, "GET", &path, &[("X-Request-Id", "cdn-7")], b"");
        assert_eq!(status, 200);
        // A CDN's request id comes back, for its logs and ours.
        assert_eq!(
            crate::common::header(&headers, "x-request-id"),
            Some("cdn-7")
        );
    }

    // Prometheus has scraped what happened, and rates have two samples.
    eventually(
        "prometheus to have scraped the finished transcode",
        Duration::from_secs(60),
        || async {
            let ready = prometheus
                .query("cascade_transcode_time_to_ready_seconds_count > 0")
                .await;
            let samples = prometheus
                .query("count_over_time(cascade_build_info[1m]) >= 3")
                .await;
            let delivered = prometheus
                .query("cascade_webhook_deliveries_total{result=\"delivered\"} > 0")
                .await;
            (!ready.is_empty() && !samples.is_empty() && !delivered.is_empty()).then_some(())
        },
    )
    .await;

    // Every dashboard query returns data.
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(infra("grafana/cascade-dashboard.json")).unwrap())
            .unwrap();
    let mut queries = 0;
    let mut empty = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            queries += 1;
            if prometheus.query(&expr).await.is_empty() {
                empty.push(format!("{}: {expr}", panel["title"]));
            }
        }
    }
    assert!(queries >= 25, "the dashboard has its queries ({queries})");
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // Every alert rule loaded, evaluates cleanly, reads only metrics that
    // exist, and none fires on a healthy stack.
    let rules = eventually("every rule evaluated", Duration::from_secs(30), || async {
        let rules = prometheus.rules().await;
        rules.iter().all(|r| r["health"] == "ok").then_some(rules)
    })
    .await;
    assert!(rules.len() >= 10, "{rules:?}");
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        assert_ne!(rule["state"], "firing", "{name} fires on a healthy stack");
        for metric in metric_names(expr) {
            let found = prometheus
                .query(&format!("count({{__name__=\"{metric}\"}})"))
                .await;
            assert!(
                !found.is_empty(),
                "alert {name} reads {metric}, which no role exports"
            );
        }
    }

    // Metric names follow the conventions, and no asset id is a label value.
    let (_, text) = http_get(addr, "/metrics");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics exposition");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("cascade_"), "{line}");
        assert!(!line.contains(&id), "an asset id in a label: {line}");
        assert!(
            !line.contains(playback_id),
            "a playback id in a label: {line}"
        );
    }
    for (family, kind) in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
    {
        if kind == "counter" {
            assert!(!family.ends_with("_total"), "counter family {family}");
        }
    }
    drop(stack.process);
}

#[test]
fn sigterm_drains_readiness_before_the_listener_closes() {
    let db = tokio::runtime::Runtime::new().unwrap().block_on(fresh_db());
    let mut process = CascadeProcess::serve(
        &db.url,
        "ingest,origin",
        &[("CASCADE_HTTP__DRAIN_DELAY", "\"3s\"")],
    );
    let addr = process.http.unwrap();
    assert_eq!(http_get(addr, "/readyz").0, 200);
    process.signal("TERM");
    // At once: not ready, still serving.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let (status, body) = loop {
        let (status, body) = http_get(addr, "/readyz");
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"draining\""), "{body}");
    assert_eq!(
        http_get(addr, "/healthz").0,
        200,
        "requests are still served"
    );
    let exit = process.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener is closed"
    );
}

/// The spans an OTLP/JSON receiver got, flattened.
type Received = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A stand-in OpenTelemetry Collector: OTLP over HTTP, JSON encoding.
async fn collector() -> (String, Received) {
    let received: Received = Default::default();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let received = received.clone();
            move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let mut spans = received.lock().unwrap();
                    for resource in request["resourceSpans"].as_array().unwrap() {
                        assert_eq!(
                            resource["resource"]["attributes"][0]["value"]["stringValue"],
                            "cascade-test"
                        );
                        for scope in resource["scopeSpans"].as_array().unwrap() {
                            spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_upload_through_the_queue_transcode_and_webhook() {
    let (otlp, received) = collector().await;
    let stack = start_stack(&[
        ("CASCADE_TRACES__OTLP_ENDPOINT", otlp.as_str()),
        ("CASCADE_TRACES__SERVICE_NAME", "cascade-test"),
        // The SDK's batch delay: export quickly.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await;
    let addr = stack.addr;

    // The client's own trace and request id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v1/assets",
        &[AUTH, ("X-Request-Id", "client-chosen-id-1")],
        b"",
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        crate::common::header(&headers, "x-request-id"),
        Some("client-chosen-id-1")
    );
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = std::fs::read(fixtures_dir().join("tiny_320x180_stereo.mp4")).unwrap();
    let (status, headers, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH, ("traceparent", &traceparent)],
        &source,
    );
    assert_eq!(status, 202, "{body}");
    let made_up = crate::common::header(&headers, "x-request-id").unwrap();
    assert_eq!(made_up.len(), 32, "a request id is made when none is sent");

    // upload -> probe -> queue -> transcode (rungs) -> publish -> webhook,
    // all in the client's trace.
    let wanted = [
        "http.request",
        "source.complete",
        "job",
        "transcode",
        "decode_and_encode",
        "encode_rung",
        "publish",
        "webhook.post",
    ];
    let spans = eventually(
        "the whole trace at the collector",
        Duration::from_secs(120),
        || async {
            let spans: Vec<serde_json::Value> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s["traceId"] == trace_id)
                .cloned()
                .collect();
            let jobs: Vec<String> = spans
                .iter()
                .filter(|s| s["name"] == "job")
                .filter_map(|s| {
                    s["attributes"]
                        .as_array()?
                        .iter()
                        .find(|a| a["key"] == "kind")
                        .and_then(|a| a["value"]["stringValue"].as_str().map(str::to_owned))
                })
                .collect();
            let complete = wanted
                .iter()
                .all(|name| spans.iter().any(|s| s["name"] == *name))
                && jobs.iter().any(|k| k == "transcode")
                && jobs.iter().any(|k| k == "webhook");
            complete.then_some(spans)
        },
    )
    .await;
    // One tree: every span's parent is in the trace, or is the client's span.
    let ids: Vec<&str> = spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    for span in &spans {
        let parent = span["parentSpanId"].as_str().unwrap();
        assert!(
            parent == client_span || ids.contains(&parent),
            "span {} has a parent outside the trace: {span}",
            span["name"]
        );
    }
    let rungs = spans.iter().filter(|s| s["name"] == "encode_rung").count();
    assert!(rungs >= 1, "a span per rung");
    drop(stack.process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_stays_ready_through_a_database_outage_and_ingest_does_not() {
    let db = fresh_db().await;
    let origin = CascadeProcess::serve(&db.url, "origin", &[]);
    let ingest = CascadeProcess::serve(&db.url, "ingest", &[]);
    let (origin_addr, ingest_addr) = (origin.http.unwrap(), ingest.http.unwrap());
    assert_eq!(http_get(origin_addr, "/readyz").0, 200);
    assert_eq!(http_get(ingest_addr, "/readyz").0, 200);
    crate::common::database_outage(&db, true).await;
    // The API cannot work without Postgres: out of its load balancer.
    let body = eventually(
        "ingest to turn unready",
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(ingest_addr, "/readyz");
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(body.contains("\"database\":\"unavailable\""), "{body}");
    // The origin serves what it has: ready, and saying what is missing.
    let (status, body) = http_get(origin_addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"degraded\""), "{body}");
    assert!(body.contains("\"database\":\"unavailable\""), "{body}");
    crate::common::database_outage(&db, false).await;
    eventually(
        "ingest to be ready again",
        Duration::from_secs(30),
        || async { (http_get(ingest_addr, "/readyz").0 == 200).then_some(()) },
    )
    .await;
}

#[test]
fn api_requests_write_a_json_access_log_line_with_their_request_id() {
    let db = tokio::runtime::Runtime::new().unwrap().block_on(fresh_db());
    let mut child = Command::new(crate::common::cascade_bin())
        .args(["serve", "--roles", "ingest"])
        .env("CASCADE_DATABASE__URL", &db.url)
        .env("CASCADE_HTTP__LISTEN", "127.0.0.1:0")
        .env("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0")
        .env("CASCADE_LOG__FORMAT", "json")
        .env("CASCADE_LOG__FILTER", "warn,cascade::access=info")
        .env("CASCADE_INGEST__BOOTSTRAP_KEY", KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout).map_while(Result::ok);
    let addr: SocketAddr = lines
        .find_map(|line| {
            let rest = line.split("serving").nth(1)?.split("http://").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("the listening address");
    // Keep draining stdout so the child never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/assets",
        &[AUTH, ("X-Request-Id", "access-log-probe")],
        b"",
    );
    assert_eq!(status, 201);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "cascade::access")
        .unwrap_or_else(|| panic!("no access log line in:\n{stderr}"));
    assert_eq!(line["request_id"], "access-log-probe", "{line}");
    assert_eq!(line["route"], "/v1/assets", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["status"], 201, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
}
