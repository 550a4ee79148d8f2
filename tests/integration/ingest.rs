//! The creators' API and uploads, through real `cascade serve` processes and
//! a real tus client (tuspy).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::{eventually, fresh_db, header, http, CascadeProcess, TestDb};

mod cdn_purge;
mod concat;
mod direct;
mod limits;
mod multipart;
mod trust;

const KEY: &str = "csk_test_bootstrap_key";
const AUTH: (&str, &str) = ("Authorization", "Bearer csk_test_bootstrap_key");
const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

fn fixture(name: &str) -> PathBuf {
    crate::common::fixtures_dir().join(name)
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

struct Ingest {
    process: CascadeProcess,
    addr: SocketAddr,
}

/// `cascade serve` with `roles` on `port` (0: any; the process reports the
/// port it got, and its public URL follows it), objects under `root`.
fn start(db: &TestDb, roles: &str, root: &Path, port: u16, extra: &[(&str, &str)]) -> Ingest {
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://{listen}");
    let root = root.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("CASCADE_HTTP__LISTEN", &listen),
        ("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0"),
        ("CASCADE_INGEST__PUBLIC_URL", &public),
        ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
        ("CASCADE_STORAGE__LOCAL_ROOT", &root),
        ("CASCADE_INGEST__UPLOAD_LOCK", "\"2s\""),
        ("CASCADE_TRANSCODE__ENCODER", "libx264"),
    ];
    env.extend_from_slice(extra);
    let process = CascadeProcess::serve(&db.url, roles, &env);
    let addr = process.http.expect("address");
    Ingest { process, addr }
}

/// Waits until asset `asset` (its id as text) is ready with `version` published.
async fn ready_at_version(db: &TestDb, asset: &str, version: i32) {
    eventually("the asset ready", Duration::from_secs(120), || async {
        let row = db
            .pool
            .get()
            .await
            .ok()?
            .query_one(
                "SELECT state, published_version FROM assets WHERE id = $1::text::uuid",
                &[&asset],
            )
            .await
            .ok()?;
        let (state, published): (String, Option<i32>) = (row.get(0), row.get(1));
        (state == "ready" && published == Some(version)).then_some(())
    })
    .await
}

/// A JSON response body (panics with the body when it is not JSON).
fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// Base64 of `text`, as tus Upload-Metadata values are.
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A new waiting asset made with `auth`, as the API returns it.
fn created_asset(addr: SocketAddr, auth: (&str, &str)) -> serde_json::Value {
    let (status, _, body) = http(addr, "POST", "/v1/assets", &[auth], b"");
    assert_eq!(status, 201, "{body}");
    json(&body)
}

/// Asset `id`'s stored state and the writer holding its source claim.
async fn asset_claim(db: &TestDb, id: &str) -> (String, Option<uuid::Uuid>) {
    let id: uuid::Uuid = id.parse().unwrap();
    let row = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT state, source_claim FROM assets WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("cascade-ingest-{}", uuid::Uuid::new_v4().simple()))
}

/// The tuspy driver, started; returns the child and a line reader.
fn tuspy(
    endpoints: &[SocketAddr],
    file: &Path,
    pause_after: usize,
) -> (std::process::Child, impl Iterator<Item = String>) {
    let script = crate::common::repo_root().join("tests/clients/tus_upload.py");
    let mut command = Command::new("python3");
    command.arg(script).args([
        "--key",
        KEY,
        "--chunk-size",
        "262144",
        "--pause-after",
        &pause_after.to_string(),
    ]);
    command.arg("--file").arg(file);
    for endpoint in endpoints {
        command.args(["--endpoint", &format!("http://{endpoint}")]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with tuspy");
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    (child, lines)
}

/// After a tus upload finished: the stored original matches the file, the
/// asset is processing and its transcode job is queued.
async fn assert_upload_landed(db: &TestDb, root: &Path, original: &Path) {
    let client = db.pool.get().await.unwrap();
    // The probe runs after the final PATCH's response.
    crate::common::eventually("the upload's probe", Duration::from_secs(60), || async {
        let state: String = db
            .pool
            .get()
            .await
            .ok()?
            .query_one("SELECT state FROM uploads", &[])
            .await
            .ok()?
            .get(0);
        (state == "complete").then_some(())
    })
    .await;
    let row = client
        .query_one(
            "SELECT asset_id, state, \"offset\", length FROM uploads",
            &[],
        )
        .await
        .unwrap();
    let asset: uuid::Uuid = row.get(0);
    assert_eq!(row.get::<_, &str>(1), "complete");
    assert_eq!(row.get::<_, i64>(2), row.get::<_, i64>(3));
    let stored = root.join(format!("assets/{asset}/source"));
    assert_eq!(
        sha256_of(&stored),
        sha256_of(original),
        "the stored original is byte-identical"
    );
    assert!(
        !root.join("uploads").exists()
            || std::fs::read_dir(root.join("uploads"))
                .unwrap()
                .next()
                .is_none(),
        "parts removed"
    );
    let state: String = client
        .query_one("SELECT state FROM assets WHERE id = $1", &[&asset])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "processing");
    let jobs: i64 = client
        .query_one(
            "SELECT count(*) FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = $1",
            &[&asset.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn tus_upload_resumes_after_the_ingest_process_is_killed() {
    let db = fresh_db().await;
    let root = scratch_root();
    let first = start(&db, "ingest", &root, 0, &[]);
    // The second process takes over the first one's address.
    let port = first.addr.port();
    let addr = first.addr;
    let file = fixture("landscape_1080p30_stereo.mp4");
    let (mut child, mut lines) = tuspy(&[addr], &file, 3);
    assert!(
        lines.by_ref().any(|l| l == "PAUSED"),
        "tuspy paused mid-upload"
    );
    // The ingest process dies mid-upload and comes back on the same address.
    first.process.signal("KILL");
    drop(first);
    let _second = start(&db, "ingest", &root, port, &[]);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let resumed = lines
        .by_ref()
        .find(|l| l.starts_with("RESUMED"))
        .expect("resumed");
    assert_eq!(
        resumed,
        format!("RESUMED {}", 3 * 262_144),
        "HEAD answered the stored offset"
    );
    assert!(lines.any(|l| l.starts_with("DONE")), "upload finished");
    assert!(child.wait().unwrap().success());
    assert_upload_landed(&db, &root, &file).await;
}

#[tokio::test]
async fn tus_chunks_alternating_between_two_replicas() {
    let db = fresh_db().await;
    let root = scratch_root();
    let a = start(&db, "ingest", &root, 0, &[]);
    let b = start(&db, "ingest", &root, 0, &[]);
    let file = fixture("portrait_720x1280_30fps_stereo.mp4");
    let (mut child, mut lines) = tuspy(&[a.addr, b.addr], &file, 0);
    assert!(lines.any(|l| l.starts_with("DONE")));
    assert!(child.wait().unwrap().success());
    assert_upload_landed(&db, &root, &file).await;
}

/// Uploads are probed in a child process (`cascade probe-source`): it
/// reports in one JSON line, and one that runs over its deadline is killed
/// and refuses that file with a clear error while the API process serves
/// on.
#[tokio::test]
async fn uploads_are_probed_in_a_child_that_cannot_take_the_api_down() {
    let probe = |file: &Path| {
        let out = std::process::Command::new(crate::common::cascade_bin())
            .args(["probe-source", "--file"])
            .arg(file)
            .env("CASCADE_LOG__FILTER", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        json(String::from_utf8_lossy(&out.stdout).trim())
    };
    let media = probe(&fixture("tiny_320x180_stereo.mp4"));
    assert_eq!(
        (&media["outcome"], &media["has_video"], &media["has_audio"]),
        (&"probed".into(), &true.into(), &true.into()),
        "{media}"
    );
    let text = scratch_root().join("notes.txt");
    std::fs::create_dir_all(text.parent().unwrap()).unwrap();
    std::fs::write(&text, "not a video at all, just words\n".repeat(100)).unwrap();
    let refused = probe(&text);
    assert_eq!(refused["outcome"], "refused", "{refused}");

    let db = fresh_db().await;
    let root = scratch_root();
    // No probe finishes in a millisecond: every child is killed.
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[("CASCADE_INGEST__PROBE_TIMEOUT", "1ms")],
    );
    let asset = created_asset(server.addr, AUTH);
    let id = asset["id"].as_str().unwrap();
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let (status, _, body) = http(
        server.addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        &source,
    );
    assert_eq!(
        (status, json_code(&body).as_str()),
        (422, "probe_timeout"),
        "{body}"
    );
    let (_, _, body) = http(
        server.addr,
        "GET",
        &format!("/v1/assets/{id}"),
        &[AUTH],
        b"",
    );
    let refused = json(&body);
    assert_eq!(refused["state"], "errored", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too long")),
        "{refused}"
    );
    // The API process serves on.
    let next = created_asset(server.addr, AUTH);
    assert_eq!(next["state"], "waiting");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn simple_upload_ends_ready_with_playback_urls() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest,workers", &root, 0, &[]);
    let (status, _, body) = http(
        server.addr,
        "POST",
        "/v1/assets",
        &[AUTH, ("Content-Type", "application/json")],
        br#"{"title":"tiny"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(asset["state"], "waiting");
    assert_ne!(asset["playback_id"], asset["id"]);
    let id = asset["id"].as_str().unwrap().to_owned();
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let (status, _, body) = http(
        server.addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        &source,
    );
    assert_eq!(status, 202, "{body}");
    let ready = eventually(
        "the asset to be ready",
        Duration::from_secs(120),
        || async {
            let (_, _, body) = http(
                server.addr,
                "GET",
                &format!("/v1/assets/{id}"),
                &[AUTH],
                b"",
            );
            let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
            (asset["state"] == "ready").then_some(asset)
        },
    )
    .await;
    let hls = ready["playback"]["hls"].as_str().unwrap();
    assert!(
        hls.ends_with(&format!(
            "/play/{}/master.m3u8",
            ready["playback_id"].as_str().unwrap()
        )),
        "{hls}"
    );
    assert!(ready["playback"]["dash"]
        .as_str()
        .unwrap()
        .ends_with("/manifest.mpd"));
    assert_eq!(
        ready["renditions"].as_array().unwrap().len(),
        2,
        "180p and audio"
    );
    assert_eq!(ready["progress"], 100.0);
    // Listed, then deleted (twice: idempotent), objects and all.
    let (_, _, list) = http(server.addr, "GET", "/v1/assets?limit=10", &[AUTH], b"");
    assert!(list.contains(&id));
    assert_eq!(
        http(
            server.addr,
            "DELETE",
            &format!("/v1/assets/{id}"),
            &[AUTH],
            b""
        )
        .0,
        204
    );
    assert_eq!(
        http(
            server.addr,
            "DELETE",
            &format!("/v1/assets/{id}"),
            &[AUTH],
            b""
        )
        .0,
        204
    );
    assert_eq!(
        http(
            server.addr,
            "GET",
            &format!("/v1/assets/{id}"),
            &[AUTH],
            b""
        )
        .0,
        404
    );
    // Its purge job (woken by the deletion) removes the objects.
    eventually(
        "the deleted asset's objects gone",
        Duration::from_secs(10),
        || async { (!root.join(format!("assets/{id}")).exists()).then_some(()) },
    )
    .await;
}

fn json_code(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(value["message"].is_string(), "{body}");
    value["code"].as_str().unwrap().to_owned()
}

fn create_upload(addr: SocketAddr, length: usize) -> String {
    let length = length.to_string();
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v1/uploads",
        &[AUTH, TUS, ("Upload-Length", &length)],
        b"",
    );
    assert_eq!(status, 201, "{body}");
    let location = header(&headers, "location").unwrap();
    location[location.find("/v1/uploads/").expect("upload path")..].to_owned()
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_a_json_error() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[("CASCADE_INGEST__MAX_UPLOAD_SIZE", "\"10MiB\"")],
    );
    let addr = server.addr;
    let post =
        |path: &str, headers: &[(&str, &str)], body: &[u8]| http(addr, "POST", path, headers, body);

    // Keys.
    let (status, _, body) = post("/v1/assets", &[], b"");
    assert_eq!((status, json_code(&body).as_str()), (401, "unauthorized"));
    let (status, _, body) = post("/v1/assets", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!((status, json_code(&body).as_str()), (401, "unauthorized"));
    // Unknown ids.
    for path in [
        "/v1/assets/4b7e0c55-52b4-4ab0-9d9d-0b0f2f4b8a55",
        "/v1/assets/not-an-id",
        "/v1/assets/..%2f..%2fetc",
    ] {
        let (status, _, body) = http(addr, "GET", path, &[AUTH], b"");
        assert_eq!(status, 404, "{path}: {body}");
        json_code(&body);
    }
    // Malformed bodies and parameters.
    let (status, _, body) = post("/v1/assets", &[AUTH], b"{not json");
    assert_eq!((status, json_code(&body).as_str()), (400, "invalid_json"));
    let (status, _, body) = post("/v1/assets", &[AUTH], br#"{"playback_policy":"secret"}"#);
    assert_eq!(
        (status, json_code(&body).as_str()),
        (400, "invalid_playback_policy")
    );
    // Postgres stores no NUL in text: refused, not a 500.
    let (status, _, body) = post("/v1/assets", &[AUTH], br#"{"title":"a\u0000b"}"#);
    assert_eq!((status, json_code(&body).as_str()), (400, "invalid_title"));
    for query in [
        "limit=0",
        "limit=101",
        "limit=99999999999999999999",
        "limit=ten",
    ] {
        let (status, _, body) = http(addr, "GET", &format!("/v1/assets?{query}"), &[AUTH], b"");
        assert_eq!(
            (status, json_code(&body).as_str()),
            (400, "invalid_limit"),
            "{query}"
        );
    }
    let (status, _, body) = http(addr, "GET", "/v1/assets?cursor=garbage!", &[AUTH], b"");
    assert_eq!((status, json_code(&body).as_str()), (400, "invalid_cursor"));

    // Simple uploads: garbage, empty, oversized (refused before the body is read).
    let new_asset = || {
        let (_, _, body) = post("/v1/assets", &[AUTH], b"");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let id = new_asset();
    let garbage = std::fs::read(fixture("random_bytes.mp4")).unwrap();
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        &garbage,
    );
    assert_eq!((status, json_code(&body).as_str()), (422, "not_media"));
    let (status, _, body) = http(addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
    assert!(
        status == 200 && body.contains("\"errored\"") && body.contains("not_media"),
        "{body}"
    );
    let id = new_asset();
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        b"",
    );
    assert_eq!((status, json_code(&body).as_str()), (422, "empty"));
    let id = new_asset();
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH, ("Content-Length", "99999999999")],
        b"",
    );
    assert_eq!((status, json_code(&body).as_str()), (413, "too_large"));

    // tus: version, lengths, offsets, content type, checksum, unknown ids.
    let (status, headers, body) = post("/v1/uploads", &[AUTH, ("Upload-Length", "10")], b"");
    assert_eq!(
        (status, json_code(&body).as_str()),
        (412, "unsupported_tus_version")
    );
    assert_eq!(header(&headers, "tus-version"), Some("1.0.0"));
    for bad in ["-5", "abc", "1e3"] {
        let (status, _, body) = post("/v1/uploads", &[AUTH, TUS, ("Upload-Length", bad)], b"");
        assert_eq!(
            (status, json_code(&body).as_str()),
            (400, "invalid_header"),
            "Upload-Length {bad}"
        );
    }
    let (status, _, body) = post(
        "/v1/uploads",
        &[AUTH, TUS, ("Upload-Length", "99999999999")],
        b"",
    );
    assert_eq!((status, json_code(&body).as_str()), (413, "too_large"));
    let (status, _, body) = post(
        "/v1/uploads",
        &[
            AUTH,
            TUS,
            ("Upload-Length", "10"),
            ("Upload-Metadata", "filename !!!"),
        ],
        b"",
    );
    assert_eq!(
        (status, json_code(&body).as_str()),
        (400, "invalid_upload_metadata")
    );
    // Values with NUL (base64 "a\0b"), for the title or any other key.
    for metadata in ["title YQBi", "filename abc,note YQBi"] {
        let (status, _, body) = post(
            "/v1/uploads",
            &[
                AUTH,
                TUS,
                ("Upload-Length", "10"),
                ("Upload-Metadata", metadata),
            ],
            b"",
        );
        assert_eq!(
            (status, json_code(&body).as_str()),
            (400, "invalid_upload_metadata"),
            "{metadata}"
        );
    }

    let upload = create_upload(addr, 10);
    let octets = ("Content-Type", "application/offset+octet-stream");
    let patch = |offset: &str, extra: &[(&str, &str)], body: &[u8]| {
        let mut headers = vec![AUTH, TUS, ("Upload-Offset", offset)];
        headers.extend_from_slice(extra);
        http(addr, "PATCH", &upload, &headers, body)
    };
    for bad in ["-1", "x", ""] {
        let (status, _, body) = patch(bad, &[octets], b"abc");
        assert_eq!(
            (status, json_code(&body).as_str()),
            (400, "invalid_header"),
            "Upload-Offset {bad:?}"
        );
    }
    let (status, _, body) = patch("5", &[octets], b"abc");
    assert_eq!(
        (status, json_code(&body).as_str()),
        (409, "offset_mismatch")
    );
    let (status, _, body) = patch("0", &[("Content-Type", "text/plain")], b"abc");
    assert_eq!(
        (status, json_code(&body).as_str()),
        (415, "unsupported_media_type")
    );
    let (status, _, body) = patch(
        "0",
        &[
            octets,
            ("Upload-Checksum", "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ],
        b"abc",
    );
    assert_eq!(
        (status, json_code(&body).as_str()),
        (460, "checksum_mismatch")
    );
    let (status, _, body) = patch("0", &[octets, ("Upload-Checksum", "md5 AAAA")], b"abc");
    assert_eq!(
        (status, json_code(&body).as_str()),
        (400, "unsupported_checksum_algorithm")
    );
    let (status, _, body) = patch("0", &[octets], b"this is far more than ten bytes");
    assert_eq!(
        (status, json_code(&body).as_str()),
        (400, "exceeds_upload_length")
    );
    // An empty PATCH changes nothing and leaves the upload unlocked.
    let (status, headers, _) = patch("0", &[octets], b"");
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (204, Some("0"))
    );
    // A correct checksum is accepted, and HEAD reports the offset.
    let sha1 = base64_sha1(b"abc");
    let (status, headers, _) = patch(
        "0",
        &[octets, ("Upload-Checksum", &format!("sha1 {sha1}"))],
        b"abc",
    );
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (204, Some("3"))
    );
    let (status, headers, _) = http(addr, "HEAD", &upload, &[AUTH, TUS], b"");
    assert_eq!(
        (
            status,
            header(&headers, "upload-offset"),
            header(&headers, "upload-length")
        ),
        (200, Some("3"), Some("10"))
    );
    assert!(header(&headers, "upload-expires").is_some());
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let (status, _, body) = http(
        addr,
        "HEAD",
        "/v1/uploads/00000000-0000-0000-0000-000000000000",
        &[AUTH, TUS],
        b"",
    );
    assert_eq!(status, 404, "{body}");
    // Termination.
    assert_eq!(http(addr, "DELETE", &upload, &[AUTH, TUS], b"").0, 204);
    assert_eq!(http(addr, "HEAD", &upload, &[AUTH, TUS], b"").0, 404);
    // Discovery needs no key.
    let (status, headers, _) = http(addr, "OPTIONS", "/v1/uploads", &[], b"");
    assert_eq!(status, 204);
    assert!(header(&headers, "tus-extension")
        .unwrap()
        .contains("checksum"));
    assert_eq!(header(&headers, "tus-max-size"), Some("10485760"));
    // Still alive after all that.
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").0, 200);
}

fn base64_sha1(data: &[u8]) -> String {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(data);
    base64_encode(&digest)
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn concurrent_patches_get_one_winner_and_a_clean_423() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let upload = create_upload(addr, 100);
    // The first PATCH sends its headers and part of its body, then stalls.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "PATCH {upload} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 20\r\n\r\n0123456789"
    )
    .unwrap();
    // Once the first holds the upload (its lease is in Postgres), a second is refused.
    eventually(
        "the first PATCH to hold the upload",
        Duration::from_secs(10),
        || async {
            let client = db.pool.get().await.unwrap();
            let held: bool = client
                .query_one("SELECT lock_id IS NOT NULL FROM uploads", &[])
                .await
                .unwrap()
                .get(0);
            held.then_some(())
        },
    )
    .await;
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
        b"abcdefghij",
    );
    assert_eq!((status, json_code(&body).as_str()), (423, "upload_locked"));
    // The first finishes and wins.
    slow.write_all(b"0123456789").unwrap();
    let mut response = Vec::new();
    std::io::Read::read_to_end(&mut slow, &mut response).unwrap();
    let (status, headers, _) = crate::common::parse_response(&response);
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (204, Some("20"))
    );
}

#[tokio::test]
async fn expired_uploads_are_cleaned_up() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[
            ("CASCADE_INGEST__UPLOAD_EXPIRY", "\"2s\""),
            ("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\""),
        ],
    );
    let addr = server.addr;
    let upload = create_upload(addr, 100);
    let (status, headers, _) = http(
        addr,
        "PATCH",
        &upload,
        &[
            AUTH,
            TUS,
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        b"some bytes",
    );
    assert_eq!(status, 204);
    let expires = header(&headers, "upload-expires").unwrap().to_owned();
    assert!(expires.ends_with("GMT"), "{expires}");
    let id = upload.trim_start_matches("/v1/uploads/").to_owned();
    assert!(
        root.join(format!("uploads/{id}")).exists(),
        "a part is stored"
    );
    eventually(
        "the expired upload to be removed",
        Duration::from_secs(15),
        || async {
            (crate::common::count(&db, "SELECT count(*) FROM uploads").await == 0).then_some(())
        },
    )
    .await;
    assert!(
        !root.join(format!("uploads/{id}")).exists(),
        "its parts are gone"
    );
    assert_eq!(http(addr, "HEAD", &upload, &[AUTH, TUS], b"").0, 404);
}

/// schemathesis (PyPI) generates requests from `/v1/openapi.json` and checks
/// that none gets a 5xx, and that the tus operations answer as documented
/// (statuses, content types, headers, bodies). Bounded: a fixed seed and a
/// few examples per operation.
#[tokio::test]
async fn generated_requests_from_the_openapi_document_never_get_a_5xx() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let base = format!("http://{}", server.addr);
    let (status, _, body) = http(server.addr, "GET", "/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (path, method) in [
        ("/v1/assets", "post"),
        ("/v1/assets", "get"),
        ("/v1/assets/{id}", "get"),
        ("/v1/assets/{id}", "delete"),
        ("/v1/assets/{id}/source", "put"),
        ("/v1/assets/{id}/playback_tokens", "post"),
        ("/v1/uploads", "options"),
        ("/v1/uploads", "post"),
        ("/v1/uploads/{id}", "head"),
        ("/v1/uploads/{id}", "patch"),
        ("/v1/uploads/{id}", "delete"),
        ("/v1/webhook_endpoints", "post"),
        ("/v1/webhook_endpoints", "get"),
        ("/v1/webhook_endpoints/{id}", "get"),
        ("/v1/webhook_endpoints/{id}", "delete"),
        ("/v1/live_streams", "post"),
        ("/v1/live_streams", "get"),
        ("/v1/live_streams/{id}", "get"),
        ("/v1/live_streams/{id}", "delete"),
        ("/v1/live_streams/{id}/reset_stream_key", "post"),
        ("/v1/live_streams/{id}/disable", "post"),
        ("/v1/live_streams/{id}/enable", "post"),
        ("/v1/live_streams/{id}/playback_tokens", "post"),
        ("/v1/direct_uploads", "post"),
        ("/v1/direct_uploads/{id}", "get"),
        ("/v1/direct_uploads/{id}/cancel", "put"),
        ("/v1/direct_uploads/{id}/{secret}", "options"),
        ("/v1/direct_uploads/{id}/{secret}", "post"),
        ("/v1/direct_uploads/{id}/{secret}", "put"),
        ("/v1/direct_uploads/{id}/{secret}", "head"),
        ("/v1/direct_uploads/{id}/{secret}", "patch"),
        ("/v1/direct_uploads/{id}/{secret}", "delete"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "the document covers {method} {path}"
        );
    }
    // Real uploads for the operations on /v1/uploads/{id} (schemathesis cannot
    // take the id from Location), so they reach more than the 404.
    let patched = create_upload(server.addr, 100);
    let terminated = create_upload(server.addr, 100);
    let upload_id = |path: &str| path.trim_start_matches("/v1/uploads/").to_owned();
    // And a real direct upload URL for the operations at such a URL.
    let (status, _, body) = http(
        server.addr,
        "POST",
        "/v1/direct_uploads",
        &[AUTH, ("Content-Type", "application/json")],
        br#"{"cors_origin": "https://app.example"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let direct: serde_json::Value = serde_json::from_str(&body).unwrap();
    let direct_id = direct["id"].as_str().unwrap().to_owned();
    let direct_secret = direct["url"]
        .as_str()
        .and_then(|url| url.rsplit('/').next())
        .unwrap()
        .to_owned();
    // And a real live stream for the operations on /v1/live_streams/{id}.
    let (status, _, body) = http(
        server.addr,
        "POST",
        "/v1/live_streams",
        &[AUTH, ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(status, 201, "{body}");
    let live_id = json(&body)["id"].as_str().unwrap().to_owned();
    let tus_checks = "checks = { not_a_server_error = { enabled = true }, \
        status_code_conformance = { enabled = true }, content_type_conformance = { enabled = true }, \
        response_headers_conformance = { enabled = true }, response_schema_conformance = { enabled = true } }";
    let config = root.join("schemathesis.toml");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"[checks]
enabled = false
not_a_server_error.enabled = true

[[operations]]
include-operation-id = ["create_asset", "get_asset", "list_assets", "delete_asset", "put_source", "create_playback_token",
    "create_webhook_endpoint", "list_webhook_endpoints", "get_webhook_endpoint", "delete_webhook_endpoint",
    "create_direct_upload", "get_direct_upload", "cancel_direct_upload", "create_live_stream", "list_live_streams"]
{tus_checks}

[[operations]]
include-operation-id = ["get_live_stream", "reset_stream_key", "disable_live_stream", "enable_live_stream",
    "create_live_playback_token", "delete_live_stream"]
parameters = {{ "path.id" = "{live_id}" }}
{tus_checks}

[[operations]]
include-operation-id = ["direct_upload_options", "direct_upload_tus_create", "direct_upload_tus_head",
    "direct_upload_tus_patch", "direct_upload_tus_terminate", "direct_upload_put"]
parameters = {{ "path.id" = "{direct_id}", "path.secret" = "{direct_secret}" }}
{tus_checks}

[[operations]]
include-operation-id = ["tus_options", "tus_create"]
{tus_checks}

[[operations]]
include-operation-id = ["tus_head", "tus_patch"]
parameters = {{ "path.id" = "{}" }}
{tus_checks}

[[operations]]
include-operation-id = "tus_terminate"
parameters = {{ "path.id" = "{}" }}
{tus_checks}
"#,
            upload_id(&patched),
            upload_id(&terminated)
        ),
    )
    .unwrap();
    let out = Command::new("python3")
        // The console script's entry point, so pip's scripts directory need not be on PATH.
        // tus bodies (application/offset+octet-stream) are raw bytes, like application/octet-stream.
        .args(["-c", "import sys, schemathesis; from schemathesis.cli import schemathesis as st; \
            schemathesis.serializer.alias('application/offset+octet-stream', 'application/octet-stream'); \
            sys.argv[0] = 'st'; sys.exit(st())"])
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/v1/openapi.json")])
        .args(["--url", &base, "--max-examples", "15", "--seed", "1"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .output()
        .expect("python3 with schemathesis (scripts/deps.sh installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("passed") && !report.contains("Server error"),
        "{report}"
    );
}

/// The final PATCH answers once the bytes are durable; the probe runs after
/// it. A probe that never finished (its replica died) is redone by the sweeper.
#[tokio::test]
async fn a_probe_interrupted_after_the_final_patch_is_finished_by_the_sweeper() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\"")],
    );
    let addr = server.addr;
    let data = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let upload = create_upload(addr, data.len());
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
        &data,
    );
    assert_eq!(status, 204, "{body}");
    let landed = || async {
        let client = db.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT u.state, a.state, (SELECT count(*) FROM jobs j WHERE j.payload->>'asset_id' = a.id::text)
                 FROM uploads u JOIN assets a ON a.id = u.asset_id",
                &[],
            )
            .await
            .ok()?;
        let (upload, asset, jobs): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        (upload == "complete" && asset == "processing" && jobs == 1).then_some(())
    };
    eventually("the first probe", Duration::from_secs(30), landed).await;
    // As if the replica died between the 204 and the probe's end.
    {
        let client = db.pool.get().await.unwrap();
        client
            .batch_execute(
                "UPDATE uploads SET state = 'probing', locked_until = now() - interval '1 second';
                 UPDATE assets SET state = 'waiting', duration_seconds = NULL,
                     source_claim = (SELECT id FROM uploads), source_claimed_until = now() + interval '1 hour';
                 DELETE FROM jobs;",
            )
            .await
            .unwrap();
    }
    let (status, headers, _) = http(addr, "HEAD", &upload, &[AUTH, TUS], b"");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "upload-offset"),
        Some(data.len().to_string().as_str()),
        "complete for the client while the probe is pending"
    );
    eventually("the sweeper's probe", Duration::from_secs(30), landed).await;
}

/// `PUT /v1/assets/{id}/source` with `source`.
fn put_source(addr: SocketAddr, id: &str, source: &[u8]) -> (u16, Vec<(String, String)>, String) {
    http(
        addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        source,
    )
}

/// Asset `id` as the API shows it.
fn get_asset(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (_, _, body) = http(addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
    json(&body)
}

/// A tmpfs of `bytes` mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let path = scratch_root();
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs (the fault tests run as root, as CI does)"
        );
        Self { path }
    }

    /// Fills the disk but for about `left` bytes; the filler's path.
    fn fill_leaving(&self, left: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let free = fs2_free(&self.path);
        let size = free.saturating_sub(left);
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 * 1024];
        let mut written = 0;
        while written + block.len() as u64 <= size {
            file.write_all(&block).unwrap();
            written += block.len() as u64;
        }
        file.sync_all().unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Free bytes on the filesystem holding `path`.
fn fs2_free(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// The value of counter `name` in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The object store's disk fills up: an upload is refused with 507
/// `storage_full` (JSON, Retry-After) and the asset waits for its source
/// again, while the API serves on; once space is back the same upload
/// works. A transcode whose outputs meet the full disk waits (counted in
/// `cascade_transcode_storage_waits_total`) without losing its attempt,
/// and finishes once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_uploads_clearly_and_holds_transcodes_until_space_returns() {
    let db = fresh_db().await;
    let disk = SmallDisk::mount(8 << 20);
    let server = start(&db, "ingest", &disk.path, 0, &[]);
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();

    let filler = disk.fill_leaving(16 * 1024);
    let id = created_asset(server.addr, AUTH)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, headers, body) = put_source(server.addr, &id, &source);
    assert_eq!(status, 507, "{body}");
    assert_eq!(json_code(&body), "storage_full", "{body}");
    assert!(header(&headers, "retry-after").is_some(), "{headers:?}");
    assert_eq!(get_asset(server.addr, &id)["state"], "waiting");

    // Space back: the same upload is stored and probed.
    std::fs::remove_file(&filler).unwrap();
    let (status, _, body) = put_source(server.addr, &id, &source);
    assert_eq!(status, 202, "{body}");

    // The disk fills again before a worker takes the transcode: its
    // outputs cannot be written, and it waits rather than failing.
    let filler = disk.fill_leaving(4 * 1024);
    let worker = start(&db, "workers", &disk.path, 0, &[]);
    let waits = eventually(
        "the worker waiting on the full disk",
        Duration::from_secs(60),
        || async {
            let (_, page) = crate::common::http_get(worker.addr, "/metrics");
            let waits = counter(&page, "cascade_transcode_storage_waits_total");
            (waits >= 2.0).then_some(waits)
        },
    )
    .await;
    assert!(waits >= 2.0);
    assert_eq!(get_asset(server.addr, &id)["state"], "processing");
    std::fs::remove_file(&filler).unwrap();
    ready_at_version(&db, &id, 1).await;
    let attempts: i32 = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT attempts FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1, "the wait cost no attempt");
}

/// The origin role SIGKILLed while players pull through the CDN: what the
/// CDN holds keeps playing, what it does not fails at once with a 5xx (no
/// hang), and an origin started again on the same address serves it all:
/// an origin keeps no state a crash could lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_under_the_cdn_loses_nothing_and_a_new_one_serves_on() {
    assert!(crate::origin::nginx_available(), "nginx is needed");
    let db = fresh_db().await;
    let root = scratch_root();
    let api = start(&db, "ingest,workers", &root, 0, &[]);
    let id = created_asset(api.addr, AUTH)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let (status, _, body) = put_source(api.addr, &id, &source);
    assert_eq!(status, 202, "{body}");
    ready_at_version(&db, &id, 1).await;
    let playback = get_asset(api.addr, &id)["playback_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let origin = start(&db, "origin", &root, 0, &[]);
    // A new origin comes back on the same address.
    let port = origin.addr.port();
    let cdn = crate::origin::start_cdn(origin.addr).await;
    let master = format!("/play/{playback}/master.m3u8");
    let listed = crate::origin::get(cdn.addr, &master).await;
    assert_eq!(listed.status, 200);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    let rungs: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("/index.m3u8"))
        .map(|l| l.trim_end_matches("/index.m3u8"))
        .collect();
    assert!(!rungs.is_empty(), "{text}");
    let cached = format!("/play/{playback}/{}/1.m4s", rungs[0]);
    let first = crate::origin::get(cdn.addr, &cached).await;
    assert_eq!(first.status, 200);

    origin.process.signal("KILL");
    drop(origin);
    let held = crate::origin::get(cdn.addr, &cached).await;
    assert_eq!(held.status, 200, "the CDN's copy plays on");
    assert_eq!(held.body, first.body);
    let uncached = format!("/play/{playback}/audio/1.m4s");
    let started = std::time::Instant::now();
    let missing = crate::origin::get(cdn.addr, &uncached).await;
    assert!((500..600).contains(&missing.status), "{}", missing.status);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead origin fails fast"
    );

    let _again = start(&db, "origin", &root, port, &[]);
    let served = crate::origin::get(cdn.addr, &uncached).await;
    assert_eq!(served.status, 200, "a new origin on the address serves on");
    let direct = crate::origin::get(cdn.addr, &master).await;
    assert_eq!(direct.status, 200);
}

/// Postgres goes away in the middle of a tus upload: the PATCH that meets
/// the outage gets a retryable 503 (JSON, Retry-After) and records nothing
/// past what is stored; once the database is back the client asks for the
/// offset and resumes, and the source comes out byte-identical, one
/// transcode queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_upload_is_resumed_after_it() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let original = fixture("tiny_320x180_stereo.mp4");
    let source = std::fs::read(&original).unwrap();
    let half = source.len() / 2;
    let upload = create_upload(server.addr, source.len());
    let octets = ("Content-Type", "application/offset+octet-stream");
    let patch = |offset: usize, body: &[u8]| {
        let offset = offset.to_string();
        http(
            server.addr,
            "PATCH",
            &upload,
            &[AUTH, TUS, octets, ("Upload-Offset", &offset)],
            body,
        )
    };
    let (status, _, body) = patch(0, &source[..half]);
    assert_eq!(status, 204, "{body}");

    crate::common::database_outage(&db, true).await;
    let (status, headers, body) = patch(half, &source[half..]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(json_code(&body), "unavailable", "{body}");
    assert!(header(&headers, "retry-after").is_some(), "{headers:?}");
    crate::common::database_outage(&db, false).await;

    // The client asks where to resume (a HEAD), and does.
    let offset = eventually(
        "the offset after the outage",
        Duration::from_secs(30),
        || async {
            let (status, headers, _) = http(server.addr, "HEAD", &upload, &[AUTH, TUS], b"");
            (status == 200)
                .then(|| header(&headers, "upload-offset").and_then(|o| o.parse::<usize>().ok()))
                .flatten()
        },
    )
    .await;
    assert!(offset <= source.len(), "{offset}");
    let (status, _, body) = patch(offset, &source[offset..]);
    assert_eq!(status, 204, "{body}");
    assert_upload_landed(&db, &root, &original).await;
}
