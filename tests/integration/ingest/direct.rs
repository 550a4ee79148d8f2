//! Direct uploads: one-time upload URLs made with an API key and used
//! without one, from a browser on another origin (CORS), by tus or one PUT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{b64, fixture, json, scratch_root, sha256_of, start, AUTH, TUS};
use crate::common::create_key;
use crate::common::{eventually, fresh_db, header, http, repo_root, TestDb};

/// The web origin the URLs are made for.
const APP: &str = "http://app.example.test";
const FROM_APP: (&str, &str) = ("Origin", APP);
const FROM_ELSEWHERE: (&str, &str) = ("Origin", "http://evil.example.test");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

fn code(body: &str) -> String {
    let value = json(body);
    assert!(value["message"].is_string(), "{body}");
    value["code"].as_str().unwrap_or_default().to_owned()
}

/// A direct upload made with `auth`: (its view, the URL's path).
fn create_direct(addr: SocketAddr, auth: (&str, &str), request: Value) -> (Value, String) {
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v1/direct_uploads",
        &[auth, JSON],
        request.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let view = json(&body);
    let url = view["url"].as_str().expect("the URL, once").to_owned();
    let path = url[url.find("/v1/direct_uploads/").expect("the URL's path")..].to_owned();
    (view, path)
}

fn get_direct(addr: SocketAddr, auth: (&str, &str), id: &str) -> (u16, Value) {
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/v1/direct_uploads/{id}"),
        &[auth],
        b"",
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn asset_state(addr: SocketAddr, asset: &str) -> Value {
    let (status, _, body) = http(addr, "GET", &format!("/v1/assets/{asset}"), &[AUTH], b"");
    assert_eq!(status, 200, "{body}");
    json(&body)
}

/// The same URL with one character of its secret changed.
fn forged(path: &str) -> String {
    let mut chars: Vec<char> = path.chars().collect();
    let last = chars.len() - 5;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

async fn stored_state(db: &TestDb, id: &str) -> (String, Option<uuid::Uuid>) {
    let id: uuid::Uuid = id.parse().unwrap();
    let row = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT d.state, a.source_claim FROM direct_uploads d JOIN assets a ON a.id = d.asset_id
             WHERE d.id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_tus_upload_through_a_direct_upload_url_needs_no_key_and_is_one_time() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let file = fixture("tiny_320x180_stereo.mp4");
    let data = std::fs::read(&file).unwrap();

    let (view, url) = create_direct(
        addr,
        AUTH,
        json!({"cors_origin": APP, "max_size": 10_000_000,
               "new_asset_settings": {"title": "from a browser", "metadata": {"user": "42"}}}),
    );
    assert_eq!(view["status"], "waiting");
    assert_eq!(view["cors_origin"], APP);
    assert_eq!(view["max_size"], 10_000_000);
    assert!(
        view["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{addr}/v1/direct_uploads/")),
        "{view}"
    );
    let id = view["id"].as_str().unwrap().to_owned();
    let asset = view["asset_id"].as_str().unwrap().to_owned();
    let created = asset_state(addr, &asset);
    assert_eq!(
        (
            &created["state"],
            &created["title"],
            &created["metadata"]["user"]
        ),
        (&json!("waiting"), &json!("from a browser"), &json!("42"))
    );
    // The URL owns the asset's source: no other path writes it.
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/assets/{asset}/source"),
        &[AUTH],
        &data,
    );
    assert_eq!((status, code(&body).as_str()), (409, "upload_in_progress"));
    let length = data.len().to_string();
    let metadata = format!("asset_id {}", b64(&asset));
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/uploads",
        &[
            AUTH,
            TUS,
            ("Upload-Length", &length),
            ("Upload-Metadata", &metadata),
        ],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (409, "upload_in_progress"));

    // Preflights: the app's origin gets the grant, another origin none.
    let preflight = |origin: &str, method: &str| {
        http(
            addr,
            "OPTIONS",
            &url,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                (
                    "Access-Control-Request-Headers",
                    "tus-resumable,upload-length,upload-metadata,upload-offset,content-type",
                ),
            ],
            b"",
        )
    };
    for method in ["POST", "PATCH", "HEAD", "DELETE", "PUT"] {
        let (status, headers, _) = preflight(APP, method);
        assert_eq!(status, 204);
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
        let methods = header(&headers, "access-control-allow-methods").unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = header(&headers, "access-control-allow-headers").unwrap();
        for name in [
            "Tus-Resumable",
            "Upload-Length",
            "Upload-Offset",
            "Upload-Metadata",
            "Upload-Checksum",
            "Upload-Concat",
            "Content-Type",
            "X-HTTP-Method-Override",
        ] {
            assert!(allowed.contains(name), "{name} in {allowed}");
        }
        assert!(header(&headers, "vary").unwrap().contains("Origin"));
        let (status, headers, _) = preflight("http://evil.example.test", method);
        assert_eq!(status, 204);
        assert_eq!(header(&headers, "access-control-allow-origin"), None);
        assert_eq!(header(&headers, "access-control-allow-methods"), None);
    }
    // Another origin's actual request is refused, and gets no grant.
    let (status, headers, body) = http(
        addr,
        "POST",
        &url,
        &[FROM_ELSEWHERE, TUS, ("Upload-Length", &length)],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (403, "origin_not_allowed"));
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // tus without any key: creation, then HEAD and PATCH at its Location.
    let (status, headers, body) = http(
        addr,
        "POST",
        &url,
        &[
            FROM_APP,
            TUS,
            ("Upload-Length", &length),
            ("Upload-Metadata", "filename YnJvd3Nlci5tcDQ="),
        ],
        b"",
    );
    assert_eq!(status, 201, "{body}");
    let location = header(&headers, "location").unwrap().to_owned();
    assert_eq!(location, view["url"].as_str().unwrap());
    assert_eq!(header(&headers, "cascade-asset-id"), Some(asset.as_str()));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    let exposed = header(&headers, "access-control-expose-headers").unwrap();
    for name in [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Tus-Resumable",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    let upload = &location[location.find("/v1/direct_uploads/").unwrap()..];
    let (_, body) = get_direct(addr, AUTH, &id);
    assert_eq!(body["status"], "uploading");
    assert!(
        body.get("url").is_none(),
        "the secret is shown once: {body}"
    );
    let head = || http(addr, "HEAD", upload, &[FROM_APP, TUS], b"");
    let (status, headers, _) = head();
    assert_eq!(
        (
            status,
            header(&headers, "upload-offset"),
            header(&headers, "upload-length")
        ),
        (200, Some("0"), Some(length.as_str()))
    );
    assert_eq!(
        header(&headers, "upload-metadata"),
        Some("filename YnJvd3Nlci5tcDQ=")
    );
    let half = data.len() / 2;
    let (status, headers, body) = http(
        addr,
        "PATCH",
        upload,
        &[FROM_APP, TUS, OCTETS, ("Upload-Offset", "0")],
        &data[..half],
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    let (_, headers, _) = head();
    assert_eq!(
        header(&headers, "upload-offset"),
        Some(half.to_string().as_str())
    );
    // A second creation while it uploads: one upload per URL.
    let (status, _, body) = http(addr, "POST", &url, &[TUS, ("Upload-Length", "10")], b"");
    assert_eq!((status, code(&body).as_str()), (409, "direct_upload_used"));
    let (status, _, body) = http(
        addr,
        "PATCH",
        upload,
        &[TUS, OCTETS, ("Upload-Offset", &half.to_string())],
        &data[half..],
    );
    assert_eq!(status, 204, "{body}");

    let ready = eventually("the asset processing", Duration::from_secs(30), || async {
        let asset = asset_state(addr, &asset);
        (asset["state"] != "waiting").then_some(asset)
    })
    .await;
    assert_eq!(ready["state"], "processing", "{ready}");
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/source"))),
        sha256_of(&file),
        "the stored source is the file"
    );
    let (_, body) = get_direct(addr, AUTH, &id);
    assert_eq!(body["status"], "complete");

    // One-time: the URL starts nothing more, by either protocol.
    let (status, headers, body) = http(
        addr,
        "POST",
        &url,
        &[FROM_APP, TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (409, "direct_upload_used"));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(APP),
        "errors are readable by the page"
    );
    let (status, _, body) = http(addr, "PUT", &url, &[], b"more bytes");
    assert_eq!((status, code(&body).as_str()), (409, "direct_upload_used"));
    let (status, _, body) = http(
        addr,
        "PATCH",
        upload,
        &[TUS, OCTETS, ("Upload-Offset", &length)],
        b"x",
    );
    assert_eq!(status, 409, "{body}");
    let (status, headers, _) = head();
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (200, Some(length.as_str()))
    );
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/direct_uploads/{id}/cancel"),
        &[AUTH],
        b"",
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (409, "direct_upload_not_waiting")
    );
    // A secret with one character changed is no URL at all.
    let wrong = forged(&url);
    assert_ne!(wrong, url);
    for method in ["POST", "PUT", "PATCH", "HEAD", "DELETE"] {
        let (status, headers, _) = http(addr, method, &wrong, &[FROM_APP, TUS], b"");
        assert_eq!(status, 404, "{method}");
        assert_eq!(header(&headers, "access-control-allow-origin"), None);
    }
    let (status, headers, _) = http(
        addr,
        "OPTIONS",
        &wrong,
        &[FROM_APP, ("Access-Control-Request-Method", "PATCH")],
        b"",
    );
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn direct_upload_urls_expire_are_cancelled_limited_and_kept_to_their_environment() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[
            // Short by default (config); the API's expires_in_seconds below
            // keeps the others open.
            ("CASCADE_INGEST__DIRECT_UPLOADS__DEFAULT_EXPIRY", "\"1s\""),
            ("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\""),
        ],
    );
    let addr = server.addr;
    let open = |extra: Value| {
        let mut request = json!({"cors_origin": APP, "expires_in_seconds": 600});
        if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            request.extend(extra.clone());
        }
        create_direct(addr, AUTH, request)
    };

    // Expired (by the configured default): 410 to every request, readable by the page.
    let (expiring, expiring_url) = create_direct(addr, AUTH, json!({"cors_origin": APP}));
    let expiring_id = expiring["id"].as_str().unwrap().to_owned();
    eventually("the URL expired", Duration::from_secs(10), || async {
        (get_direct(addr, AUTH, &expiring_id).1["status"] == "expired").then_some(())
    })
    .await;
    for method in ["POST", "PUT", "PATCH", "HEAD", "DELETE", "OPTIONS"] {
        let (status, headers, body) = http(addr, method, &expiring_url, &[FROM_APP, TUS], b"");
        assert_eq!(status, 410, "{method}");
        if method != "HEAD" {
            assert_eq!(code(&body), "upload_url_expired", "{method}");
        }
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    }
    // The preflight still passes, so the page can read that 410.
    let (status, headers, _) = http(
        addr,
        "OPTIONS",
        &expiring_url,
        &[FROM_APP, ("Access-Control-Request-Method", "POST")],
        b"",
    );
    assert_eq!(
        (status, header(&headers, "access-control-allow-origin")),
        (204, Some(APP))
    );
    // The sweeper stores it and frees the asset's source.
    eventually("the expiry stored", Duration::from_secs(10), || async {
        (stored_state(&db, &expiring_id).await == ("expired".to_owned(), None)).then_some(())
    })
    .await;

    // Cancelled through the API (twice: the same answer), then refused.
    let (cancelled, cancelled_url) = open(json!({}));
    let cancelled_id = cancelled["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, _, body) = http(
            addr,
            "PUT",
            &format!("/v1/direct_uploads/{cancelled_id}/cancel"),
            &[AUTH],
            b"",
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["status"], "cancelled");
    }
    let (status, _, body) = http(
        addr,
        "POST",
        &cancelled_url,
        &[TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (410, "upload_url_expired"));
    let (status, _, body) = http(addr, "PUT", &cancelled_url, &[], b"bytes");
    assert_eq!((status, code(&body).as_str()), (410, "upload_url_expired"));
    assert_eq!(
        stored_state(&db, &cancelled_id).await,
        ("cancelled".to_owned(), None),
        "the asset waits for a source by another path"
    );

    // Another environment's key sees none of it.
    let other_secret = create_key(&db, "tenant-b", "tenant-b");
    let other_auth = format!("Bearer {other_secret}");
    let other = ("Authorization", other_auth.as_str());
    let (mine, mine_url) = open(json!({}));
    let mine_id = mine["id"].as_str().unwrap().to_owned();
    assert_eq!(get_direct(addr, other, &mine_id).0, 404);
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("/v1/direct_uploads/{mine_id}/cancel"),
        &[other],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (404, "not_found"));
    assert_eq!(get_direct(addr, AUTH, &mine_id).1["status"], "waiting");
    // B's own direct upload is B's alone.
    let (theirs, _) = create_direct(addr, other, json!({"cors_origin": APP}));
    assert_eq!(
        get_direct(addr, AUTH, theirs["id"].as_str().unwrap()).0,
        404
    );
    assert_eq!(
        http(
            addr,
            "GET",
            &format!("/v1/assets/{}", theirs["asset_id"].as_str().unwrap()),
            &[AUTH],
            b""
        )
        .0,
        404
    );

    // A forged secret is refused; the real one still works.
    let (status, _, _) = http(
        addr,
        "POST",
        &forged(&mine_url),
        &[TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!(status, 404);
    // Limits: size, concatenation, method override.
    let (status, _, body) = http(
        addr,
        "POST",
        &mine_url,
        &[TUS, ("Upload-Concat", "partial"), ("Upload-Length", "10")],
        b"",
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "concatenation_unsupported")
    );
    let (small, small_url) = open(json!({"max_size": 10}));
    let (status, _, body) = http(
        addr,
        "POST",
        &small_url,
        &[TUS, ("Upload-Length", "11")],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (413, "too_large"));
    let (status, _, body) = http(addr, "PUT", &small_url, &[], b"eleven byte");
    assert_eq!((status, code(&body).as_str()), (413, "too_large"));
    assert_eq!(
        get_direct(addr, AUTH, small["id"].as_str().unwrap()).1["status"],
        "waiting"
    );
    // HEAD and PATCH before the upload exists: there is none.
    let (status, _, _) = http(addr, "HEAD", &small_url, &[TUS], b"");
    assert_eq!(status, 404);
    let (status, _, _) = http(
        addr,
        "POST",
        &small_url,
        &[TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!(status, 201);
    // PATCH through X-HTTP-Method-Override (tus core), then termination:
    // the URL is cancelled and its asset free.
    let (status, headers, body) = http(
        addr,
        "POST",
        &small_url,
        &[
            TUS,
            OCTETS,
            ("X-HTTP-Method-Override", "PATCH"),
            ("Upload-Offset", "0"),
        ],
        b"01234",
    );
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (204, Some("5")),
        "{body}"
    );
    let (status, _, body) = http(addr, "DELETE", &small_url, &[TUS], b"");
    assert_eq!(status, 204, "{body}");
    let small_id = small["id"].as_str().unwrap().to_owned();
    assert_eq!(get_direct(addr, AUTH, &small_id).1["status"], "cancelled");
    assert_eq!(stored_state(&db, &small_id).await.1, None);
    let (status, _, body) = http(
        addr,
        "POST",
        &small_url,
        &[TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (410, "upload_url_expired"));

    // Deleting the asset kills its URL.
    let asset = mine["asset_id"].as_str().unwrap();
    assert_eq!(
        http(addr, "DELETE", &format!("/v1/assets/{asset}"), &[AUTH], b"").0,
        204
    );
    let (status, _, body) = http(
        addr,
        "POST",
        &mine_url,
        &[TUS, ("Upload-Length", "10")],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (410, "upload_url_expired"));
    assert_eq!(get_direct(addr, AUTH, &mine_id).1["status"], "cancelled");
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").0, 200);
}

#[tokio::test]
async fn a_simple_put_through_a_direct_upload_url_lands_and_a_cut_off_one_can_be_retried() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let file = fixture("tiny_320x180_stereo.mp4");
    let data = std::fs::read(&file).unwrap();
    let (view, url) = create_direct(addr, AUTH, json!({"cors_origin": APP}));
    let id = view["id"].as_str().unwrap().to_owned();
    let asset = view["asset_id"].as_str().unwrap().to_owned();

    // A PUT whose client goes away half-way: the URL waits again.
    let mut cut = std::net::TcpStream::connect(addr).unwrap();
    write!(
        cut,
        "PUT {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    cut.write_all(&data[..data.len() / 2]).unwrap();
    eventually(
        "the PUT to hold the URL",
        Duration::from_secs(10),
        || async { (stored_state(&db, &id).await.0 == "uploading").then_some(()) },
    )
    .await;
    assert_eq!(get_direct(addr, AUTH, &id).1["status"], "uploading");
    // Meanwhile the URL starts nothing else.
    let (status, _, body) = http(addr, "POST", &url, &[TUS, ("Upload-Length", "10")], b"");
    assert_eq!((status, code(&body).as_str()), (409, "upload_in_progress"));
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = cut.read_to_end(&mut answer);
    eventually("the URL waiting again", Duration::from_secs(10), || async {
        (get_direct(addr, AUTH, &id).1["status"] == "waiting").then_some(())
    })
    .await;

    // The whole file, without a key, from the app's page.
    let (status, headers, body) = http(addr, "PUT", &url, &[FROM_APP], &data);
    assert_eq!(status, 202, "{body}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    let receipt = json(&body);
    assert_eq!(
        (&receipt["status"], &receipt["asset_id"]),
        (&json!("complete"), &json!(asset))
    );
    assert!(receipt.get("url").is_none(), "{receipt}");
    assert_eq!(asset_state(addr, &asset)["state"], "processing");
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/source"))),
        sha256_of(&file)
    );
    let (status, _, body) = http(addr, "PUT", &url, &[], &data);
    assert_eq!((status, code(&body).as_str()), (409, "direct_upload_used"));

    // A file that is not media: 422 to the uploader, the asset errored, the URL used.
    let (view, url) = create_direct(addr, AUTH, json!({"cors_origin": APP}));
    let garbage = std::fs::read(fixture("random_bytes.mp4")).unwrap();
    let (status, _, body) = http(addr, "PUT", &url, &[], &garbage);
    assert_eq!((status, code(&body).as_str()), (422, "not_media"));
    let asset = view["asset_id"].as_str().unwrap();
    assert_eq!(asset_state(addr, asset)["state"], "errored");
    assert_eq!(
        get_direct(addr, AUTH, view["id"].as_str().unwrap()).1["status"],
        "complete"
    );
}

/// A replica that dies in the middle of a PUT through the URL holds it only
/// until its lease lapses (`ingest.upload_lock`, 5 s here): then the URL
/// takes the file again, through another replica.
#[tokio::test]
async fn a_put_whose_replica_died_can_be_retried_once_its_lease_lapses() {
    let db = fresh_db().await;
    let root = scratch_root();
    let lock = [("CASCADE_INGEST__UPLOAD_LOCK", "\"5s\"")];
    let first = start(&db, "ingest", &root, 0, &lock);
    let second = start(&db, "ingest", &root, 0, &lock);
    let data = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let (view, url) = create_direct(first.addr, AUTH, json!({"cors_origin": APP}));
    let id = view["id"].as_str().unwrap().to_owned();
    let mut cut = std::net::TcpStream::connect(first.addr).unwrap();
    write!(
        cut,
        "PUT {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        first.addr,
        data.len()
    )
    .unwrap();
    cut.write_all(&data[..1000]).unwrap();
    eventually(
        "the PUT to hold the URL",
        Duration::from_secs(10),
        || async { (stored_state(&db, &id).await.0 == "uploading").then_some(()) },
    )
    .await;
    first.process.signal("KILL");
    drop(first);
    // Held while the lease runs; then the URL reads waiting and takes the file.
    let (status, _, body) = http(second.addr, "PUT", &url, &[], &data);
    assert_eq!((status, code(&body).as_str()), (409, "upload_in_progress"));
    let (status, body) = eventually("the lease to lapse", Duration::from_secs(20), || async {
        let (status, _, body) = http(second.addr, "PUT", &url, &[], &data);
        (status != 409).then_some((status, body))
    })
    .await;
    assert_eq!(status, 202, "{body}");
    let asset = view["asset_id"].as_str().unwrap();
    assert_eq!(asset_state(second.addr, asset)["state"], "processing");
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/source"))),
        sha256_of(&fixture("tiny_320x180_stereo.mp4"))
    );
}

/// The browser case the feature is for: a page on another origin (a second
/// loopback port) uploads with tus-js-client in headless Chromium through
/// the direct upload URL, with real CORS; the asset is then transcoded and
/// plays in hls.js.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_uploads_with_tus_js_client_and_the_video_plays() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest,workers,origin", &root, 0, &[]);
    let addr = server.addr;
    let file = fixture("tiny_320x180_stereo.mp4");
    let mut page = Command::new("node")
        .arg(repo_root().join("tests/players/direct_upload.mjs"))
        .arg("--file")
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (tests/players and tests/clients: npm ci)");
    let mut lines = BufReader::new(page.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let origin = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("ORIGIN ").map(str::to_owned))
        .expect("the page's origin");
    assert!(origin.starts_with("http://127.0.0.1:"), "{origin}");
    assert_ne!(
        origin,
        format!("http://{addr}"),
        "the page is on another origin"
    );
    let (view, _) = create_direct(addr, AUTH, json!({"cors_origin": origin}));
    let url = view["url"].as_str().unwrap();
    writeln!(page.stdin.as_mut().unwrap(), "{url}").unwrap();
    let result = lines
        .find_map(|l| l.strip_prefix("RESULT ").map(json))
        .expect("the page's result");
    assert!(page.wait().unwrap().success());
    assert_eq!(result["origin"], json!(origin), "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["uploadUrl"], json!(url), "{result}");
    assert!(result["chunks"].as_u64().unwrap_or(0) >= 2, "{result}");
    // A second upload from the page is refused, and the page can read why.
    assert_eq!(result["again"]["status"], 409, "{result}");
    assert_eq!(
        result["again"]["body"]["code"], "direct_upload_used",
        "{result}"
    );

    let asset = view["asset_id"].as_str().unwrap().to_owned();
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/source"))),
        sha256_of(&file),
        "the stored source is the file"
    );
    // The probe runs right after the last PATCH's answer; then processing.
    let probed = eventually("the asset probed", Duration::from_secs(30), || async {
        let asset = asset_state(addr, &asset);
        (asset["state"] != "waiting").then_some(asset)
    })
    .await;
    assert!(
        probed["state"] == "processing" || probed["state"] == "ready",
        "{probed}"
    );
    let ready = eventually("the asset ready", Duration::from_secs(180), || async {
        let asset = asset_state(addr, &asset);
        assert_ne!(asset["state"], "errored", "{asset}");
        (asset["state"] == "ready").then_some(asset)
    })
    .await;
    let hls = ready["playback"]["hls"].as_str().unwrap();
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/players/play.mjs"))
        .args(["--player", "hls", "--url", hls, "--seconds", "2"])
        .output()
        .await
        .expect("node (tests/players: npm ci)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(stdout.trim().lines().last().unwrap_or(""));
    assert!(report["fatal"].is_null(), "{report}");
    assert!(report["played"].as_f64().unwrap_or(0.0) >= 2.0, "{report}");
}
