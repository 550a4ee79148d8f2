//! The tus concatenation extension: partial uploads made into one source by
//! a final upload (copied inside the store, or streamed when part sizes
//! forbid a copy), on both storage backends; what a final upload refuses;
//! termination and expiry of partials.

use std::net::SocketAddr;
use std::time::Duration;

use cascade_schemas::ObjectKey;
use sha2::{Digest, Sha256};

use super::multipart::Backend;
use super::{fixture, AUTH, TUS};
use crate::common::{count, eventually, fresh_db, header, http, TestDb};

const MIB: usize = 1024 * 1024;
const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");
const PARTIAL: (&str, &str) = ("Upload-Concat", "partial");

/// Creates a partial upload of `data` and PATCHes it in two halves;
/// returns its path (`/v1/uploads/{id}`).
fn partial_upload(addr: SocketAddr, data: &[u8]) -> String {
    let length = data.len().to_string();
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v1/uploads",
        &[AUTH, TUS, PARTIAL, ("Upload-Length", &length)],
        b"",
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&headers, "cascade-asset-id"), None, "no asset yet");
    let location = header(&headers, "location").unwrap();
    let path = location[location.find("/v1/uploads/").unwrap()..].to_owned();
    let half = data.len() / 2;
    for (offset, chunk) in [(0, &data[..half]), (half, &data[half..])] {
        let offset = offset.to_string();
        let (status, _, body) = http(
            addr,
            "PATCH",
            &path,
            &[AUTH, TUS, OCTETS, ("Upload-Offset", &offset)],
            chunk,
        );
        assert_eq!(status, 204, "{body}");
    }
    path
}

/// POSTs a final upload of `partials` (as listed); returns the status,
/// headers and body.
fn final_upload(addr: SocketAddr, partials: &[String]) -> (u16, Vec<(String, String)>, String) {
    let concat = format!("final;{}", partials.join(" "));
    http(
        addr,
        "POST",
        "/v1/uploads",
        &[
            AUTH,
            TUS,
            ("Upload-Concat", &concat),
            // base64("concatenated")
            ("Upload-Metadata", "title Y29uY2F0ZW5hdGVk"),
        ],
        b"",
    )
}

async fn asset_state(db: &TestDb, asset: uuid::Uuid) -> (String, Option<String>) {
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT state, error_message FROM assets WHERE id = $1",
            &[&asset],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A real video cut in `cuts`, uploaded as partials, named by a final
/// upload: the source is the file byte for byte, the probe accepts it, and
/// the partials are gone (rows, objects, multipart uploads).
async fn partials_make_the_exact_source(backend: Backend, file: &std::path::Path, cuts: &[usize]) {
    let db = fresh_db().await;
    let server = backend.start(&db, &[]);
    let addr = server.addr;
    let data = std::fs::read(file).unwrap();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(data.len());
    let partials: Vec<String> = bounds
        .windows(2)
        .map(|w| partial_upload(addr, &data[w[0]..w[1]]))
        .collect();
    let (status, headers, _) = http(addr, "HEAD", &partials[0], &[AUTH, TUS], b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "upload-concat"), Some("partial"));
    assert!(
        header(&headers, "upload-expires").is_some(),
        "an unclaimed partial expires"
    );

    // Absolute URLs (as clients get them in Location) and paths both name uploads.
    let mut named = partials.clone();
    named[0] = format!("http://{addr}{}", partials[0]);
    let (status, headers, body) = final_upload(addr, &named);
    assert_eq!(status, 201, "{body}");
    let asset: uuid::Uuid = header(&headers, "cascade-asset-id")
        .unwrap()
        .parse()
        .unwrap();
    let location = header(&headers, "location").unwrap();
    let final_path = location[location.find("/v1/uploads/").unwrap()..].to_owned();

    let (status, headers, _) = http(addr, "HEAD", &final_path, &[AUTH, TUS], b"");
    assert_eq!(status, 200);
    let total = data.len().to_string();
    assert_eq!(header(&headers, "upload-offset"), Some(total.as_str()));
    assert_eq!(header(&headers, "upload-length"), Some(total.as_str()));
    let concat = header(&headers, "upload-concat").unwrap();
    assert!(concat.starts_with("final;"), "{concat}");
    for partial in &partials {
        assert!(
            concat.contains(partial.as_str()),
            "{concat} lists {partial}"
        );
    }
    let (status, _, body) = http(
        addr,
        "PATCH",
        &final_path,
        &[AUTH, TUS, OCTETS, ("Upload-Offset", &total)],
        b"x",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("final_upload"), "{body}");

    let state = eventually(
        "the final upload probed",
        Duration::from_secs(60),
        || async {
            let (state, error) = asset_state(&db, asset).await;
            (state != "waiting").then_some((state, error))
        },
    )
    .await;
    assert_eq!(state.0, "processing", "{state:?}");
    assert_eq!(
        backend.source_sha256(asset).await,
        hex::encode(Sha256::digest(&data))
    );
    eventually(
        "the final upload complete and its partials gone",
        Duration::from_secs(30),
        || async {
            let left = count(&db, "SELECT count(*) FROM uploads WHERE concat = 'partial'").await;
            let done = count(&db, "SELECT count(*) FROM uploads WHERE state = 'complete'").await;
            (left == 0 && done == 1).then_some(())
        },
    )
    .await;
    let store = backend.store().await;
    for partial in &partials {
        let id: uuid::Uuid = partial.trim_start_matches("/v1/uploads/").parse().unwrap();
        assert!(store
            .list(&ObjectKey::upload_prefix(id))
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(backend.open_multipart_uploads().await, 0);

    // A partial serves one final only.
    let (status, _, body) = final_upload(addr, &partials[..1]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_partial_upload"), "{body}");
}

/// Partials of 6 MiB, 6 MiB and the rest: copied inside the store.
#[tokio::test]
async fn partials_are_copied_into_the_exact_source_local() {
    partials_make_the_exact_source(
        Backend::local(),
        &crate::common::bench_fixture(),
        &[6 * MIB, 12 * MIB],
    )
    .await
}

#[tokio::test]
async fn partials_are_copied_into_the_exact_source_s3() {
    partials_make_the_exact_source(
        Backend::s3(),
        &crate::common::bench_fixture(),
        &[6 * MIB, 12 * MIB],
    )
    .await
}

/// Partials under S3's 5 MiB part minimum: streamed into the source.
#[tokio::test]
async fn small_partials_are_streamed_into_the_exact_source_s3() {
    partials_make_the_exact_source(
        Backend::s3(),
        &fixture("landscape_1080p30_stereo.mp4"),
        &[100_000, 1_500_000],
    )
    .await
}

#[tokio::test]
async fn final_uploads_refuse_what_they_cannot_take_and_leave_nothing() {
    let db = fresh_db().await;
    let backend = Backend::local();
    let server = backend.start(&db, &[]);
    let addr = server.addr;
    let complete = partial_upload(addr, b"some bytes of a file");
    let assets_before = count(&db, "SELECT count(*) FROM assets").await;

    let incomplete = {
        let (status, headers, _) = http(
            addr,
            "POST",
            "/v1/uploads",
            &[AUTH, TUS, PARTIAL, ("Upload-Length", "100")],
            b"",
        );
        assert_eq!(status, 201);
        let location = header(&headers, "location").unwrap();
        location[location.find("/v1/uploads/").unwrap()..].to_owned()
    };
    let ordinary = super::create_upload(addr, 10);
    let ordinary_assets = count(&db, "SELECT count(*) FROM assets").await;
    let unknown = format!("/v1/uploads/{}", uuid::Uuid::new_v4());
    for (partials, status, code) in [
        (
            vec![complete.clone(), incomplete.clone()],
            400,
            "partial_upload_incomplete",
        ),
        (
            vec![complete.clone(), ordinary.clone()],
            400,
            "invalid_partial_upload",
        ),
        (vec![unknown.clone()], 400, "invalid_partial_upload"),
        (
            vec![complete.clone(), complete.clone()],
            400,
            "invalid_upload_concat",
        ),
        (
            vec!["/v1/assets/nothing".to_owned()],
            400,
            "invalid_upload_concat",
        ),
        (vec![], 400, "invalid_upload_concat"),
    ] {
        let (got, _, body) = final_upload(addr, &partials);
        assert_eq!(got, status, "{partials:?}: {body}");
        assert!(body.contains(code), "{partials:?}: {body}");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM assets").await,
        ordinary_assets,
        "refused final uploads make no asset"
    );
    assert_eq!(
        ordinary_assets,
        assets_before + 1,
        "the ordinary upload's asset"
    );
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/uploads",
        &[AUTH, TUS, ("Upload-Concat", "whole")],
        b"",
    );
    assert_eq!(status, 400, "{body}");

    // A complete partial no final took can be terminated.
    let (status, _, body) = http(addr, "DELETE", &complete, &[AUTH, TUS], b"");
    assert_eq!(status, 204, "{body}");
    let id: uuid::Uuid = complete.trim_start_matches("/v1/uploads/").parse().unwrap();
    assert!(!backend.root.join(format!("uploads/{id}")).exists());
    let (status, _, _) = http(addr, "HEAD", &complete, &[AUTH, TUS], b"");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn complete_partials_no_final_takes_expire() {
    let db = fresh_db().await;
    let backend = Backend::local();
    let server = backend.start(
        &db,
        &[
            ("CASCADE_INGEST__UPLOAD_EXPIRY", "\"2s\""),
            ("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\""),
        ],
    );
    let partial = partial_upload(server.addr, b"a piece nobody claims");
    let id: uuid::Uuid = partial.trim_start_matches("/v1/uploads/").parse().unwrap();
    assert!(backend.root.join(format!("uploads/{id}")).exists());
    eventually(
        "the expired partial removed",
        Duration::from_secs(15),
        || async {
            let rows = count(&db, "SELECT count(*) FROM uploads").await;
            (rows == 0 && !backend.root.join(format!("uploads/{id}")).exists()).then_some(())
        },
    )
    .await;
}

/// tus-js-client (npm), which nobody here wrote, uploads a video with
/// `parallelUploads: 2`: two partial uploads in parallel, then the final
/// upload; the stored original is the file.
#[tokio::test]
async fn tus_js_client_parallel_uploads_make_the_exact_source() {
    let db = fresh_db().await;
    let backend = Backend::s3();
    let server = backend.start(&db, &[]);
    let file = crate::common::bench_fixture();
    let output = std::process::Command::new("node")
        .arg(crate::common::repo_root().join("tests/clients/tus_parallel.mjs"))
        .args([
            &format!("http://{}", server.addr),
            super::KEY,
            &file.display().to_string(),
            "2",
            &(4 * MIB).to_string(),
        ])
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DONE "))
        .unwrap_or_else(|| panic!("no DONE line: {stdout}"));
    let final_path = &url[url.find("/v1/uploads/").unwrap()..];
    let (status, headers, _) = http(server.addr, "HEAD", final_path, &[AUTH, TUS], b"");
    assert_eq!(status, 200);
    let concat = header(&headers, "upload-concat").unwrap_or_default();
    assert_eq!(concat.matches("/v1/uploads/").count(), 2, "{concat}");
    let asset: uuid::Uuid = only_asset(&db).await;
    let state = eventually("the upload probed", Duration::from_secs(60), || async {
        let (state, error) = asset_state(&db, asset).await;
        (state != "waiting").then_some((state, error))
    })
    .await;
    assert_eq!(state.0, "processing", "{state:?}");
    assert_eq!(backend.source_sha256(asset).await, super::sha256_of(&file));
}

/// The only asset of a fresh database.
async fn only_asset(db: &TestDb) -> uuid::Uuid {
    db.pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT id FROM assets", &[])
        .await
        .unwrap()
        .get(0)
}

/// A replica that died right after creating a final upload leaves it in
/// `assembling` with no lease: the sweeper assembles and probes it.
#[tokio::test]
async fn the_sweeper_assembles_a_final_upload_whose_replica_died() {
    let db = fresh_db().await;
    let backend = Backend::local();
    let server = backend.start(&db, &[("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\"")]);
    let file = fixture("landscape_1080p30_stereo.mp4");
    let data = std::fs::read(&file).unwrap();
    let cut = data.len() / 3;
    let partials: Vec<uuid::Uuid> = [&data[..cut], &data[cut..]]
        .into_iter()
        .map(|piece| {
            partial_upload(server.addr, piece)
                .trim_start_matches("/v1/uploads/")
                .parse()
                .unwrap()
        })
        .collect();
    let (status, _, body) = http(server.addr, "POST", "/v1/assets", &[AUTH], b"");
    assert_eq!(status, 201, "{body}");
    let asset: uuid::Uuid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // What create_final commits before its response.
    let final_id = uuid::Uuid::new_v4();
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO uploads (id, environment_id, asset_id, length, \"offset\", state, expires_at, concat, partial_ids)
             VALUES ($1, (SELECT environment_id FROM assets WHERE id = $2), $2, $3, $3, 'assembling',
                     now() + interval '1 hour', 'final', $4)",
            &[&final_id, &asset, &(data.len() as i64), &partials],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE assets SET source_claim = $1, source_claimed_until = now() + interval '1 hour' WHERE id = $2",
            &[&final_id, &asset],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE uploads SET claimed_by = $1 WHERE id = ANY($2)",
            &[&final_id, &partials],
        )
        .await
        .unwrap();
    let state = eventually(
        "the sweeper's assembly",
        Duration::from_secs(30),
        || async {
            let (state, error) = asset_state(&db, asset).await;
            (state != "waiting").then_some((state, error))
        },
    )
    .await;
    assert_eq!(state.0, "processing", "{state:?}");
    assert_eq!(backend.source_sha256(asset).await, super::sha256_of(&file));
    eventually("the partials removed", Duration::from_secs(30), || async {
        (count(&db, "SELECT count(*) FROM uploads WHERE concat = 'partial'").await == 0)
            .then_some(())
    })
    .await;
}
