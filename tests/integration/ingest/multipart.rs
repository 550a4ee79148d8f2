//! tus PATCH bodies into the source's multipart upload: parts and staged
//! pieces, lapsed leases, termination and expiry, on both storage backends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use cascade_platform::config::StorageConfig;
use cascade_platform::ObjectStore;
use cascade_schemas::{AssetId, ObjectKey};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::{create_upload, scratch_root, start, Ingest, AUTH, KEY, TUS};
use crate::common::{eventually, fresh_db, header, http, parse_response, TestDb};

const MIB: usize = 1024 * 1024;
const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

/// Where the ingest processes of a test keep their objects.
pub(super) struct Backend {
    pub(super) root: PathBuf,
    /// The test's own bucket, for the S3 backend.
    bucket: Option<String>,
}

impl Backend {
    pub(super) fn local() -> Self {
        Self {
            root: scratch_root(),
            bucket: None,
        }
    }

    pub(super) fn s3() -> Self {
        Self {
            root: scratch_root(),
            bucket: Some(crate::common::s3_config().bucket),
        }
    }

    pub(super) fn start(&self, db: &TestDb, extra: &[(&str, &str)]) -> Ingest {
        let endpoint = std::env::var("CASCADE_TEST_S3_ENDPOINT").unwrap_or_default();
        let mut env: Vec<(&str, &str)> = extra.to_vec();
        if let Some(bucket) = &self.bucket {
            env.push(("CASCADE_STORAGE__S3__ENDPOINT", &endpoint));
            env.push(("CASCADE_STORAGE__S3__BUCKET", bucket));
        }
        start(db, "ingest", &self.root, 0, &env)
    }

    pub(super) async fn store(&self) -> ObjectStore {
        let config = match &self.bucket {
            Some(bucket) => StorageConfig {
                s3: Some(cascade_platform::config::S3Config {
                    bucket: bucket.clone(),
                    ..crate::common::s3_config()
                }),
                ..StorageConfig::default()
            },
            None => StorageConfig {
                local_root: self.root.clone(),
                ..StorageConfig::default()
            },
        };
        ObjectStore::from_config(&config).await.unwrap()
    }

    /// Multipart uploads left open in the store.
    pub(super) async fn open_multipart_uploads(&self) -> usize {
        crate::storage::open_multipart_uploads(&self.store().await).await
    }

    /// Objects under the upload's prefix (staged pieces).
    async fn staged_objects(&self, upload: &str) -> usize {
        let id: uuid::Uuid = upload.trim_start_matches("/v1/uploads/").parse().unwrap();
        self.store()
            .await
            .list(&ObjectKey::upload_prefix(id))
            .await
            .unwrap()
            .len()
    }

    pub(super) async fn source_sha256(&self, asset: uuid::Uuid) -> String {
        let body = self
            .store()
            .await
            .get(&ObjectKey::source(AssetId::from(asset)), None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        hex::encode(Sha256::digest(&body))
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn base64_sha256(data: &[u8]) -> String {
    super::base64_encode(&Sha256::digest(data))
}

/// A PATCH with Content-Length (and a sha256 Upload-Checksum if asked).
fn patch(
    addr: SocketAddr,
    upload: &str,
    offset: usize,
    body: &[u8],
    checksum: Option<&str>,
) -> (u16, Option<String>) {
    let offset = offset.to_string();
    let checksum = checksum.map(|c| format!("sha256 {c}"));
    let mut headers = vec![AUTH, TUS, OCTETS, ("Upload-Offset", offset.as_str())];
    if let Some(checksum) = &checksum {
        headers.push(("Upload-Checksum", checksum));
    }
    let (status, headers, _) = http(addr, "PATCH", upload, &headers, body);
    (status, header(&headers, "upload-offset").map(str::to_owned))
}

/// A PATCH whose body has no declared length (chunked transfer encoding).
fn patch_chunked(
    addr: SocketAddr,
    upload: &str,
    offset: usize,
    body: &[u8],
) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "PATCH {upload} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for chunk in body.chunks(100_000) {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let (status, headers, _) = parse_response(&raw);
    (status, header(&headers, "upload-offset").map(str::to_owned))
}

/// The upload's row: (asset, state, offset, part numbers, staged keys).
async fn upload_row(db: &TestDb) -> (uuid::Uuid, String, i64, Vec<i32>, Vec<String>) {
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT asset_id, state, \"offset\", part_numbers, staged_keys FROM uploads",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

/// Small and large, declared and chunked PATCHes, a checksum mismatch on a
/// part: the source is the file, byte for byte.
async fn parts_and_staged_pieces_make_the_exact_source(backend: Backend) {
    let db = fresh_db().await;
    let server = backend.start(&db, &[]);
    let addr = server.addr;
    let data = random_bytes(16 * MIB + 12_345, 7);
    let upload = create_upload(addr, data.len());
    let mut offset = 0;
    let send = |offset: &mut usize, len: usize, chunked: bool| {
        let body = &data[*offset..*offset + len];
        let (status, new_offset) = if chunked {
            patch_chunked(addr, &upload, *offset, body)
        } else {
            patch(addr, &upload, *offset, body, Some(&base64_sha256(body)))
        };
        assert_eq!(status, 204, "PATCH of {len} bytes at {offset}");
        *offset += len;
        assert_eq!(new_offset, Some(offset.to_string()));
    };
    // Small pieces are staged: one declared, one chunked.
    send(&mut offset, MIB, false);
    send(&mut offset, 300 * 1024, true);
    assert_eq!(upload_row(&db).await.4.len(), 2, "two staged pieces");
    // 6 MiB: one part, the staged pieces first.
    send(&mut offset, 6 * MIB, false);
    let (_, _, _, parts, staged) = upload_row(&db).await;
    assert_eq!((parts, staged.len()), (vec![1], 0));
    assert_eq!(
        backend.staged_objects(&upload).await,
        0,
        "staged pieces folded in"
    );
    // A part whose checksum does not match is not recorded.
    let body = &data[offset..offset + 5 * MIB];
    let wrong = base64_sha256(b"something else");
    assert_eq!(patch(addr, &upload, offset, body, Some(&wrong)).0, 460);
    let (_, _, stored, parts, _) = upload_row(&db).await;
    assert_eq!((stored, parts), (offset as i64, vec![1]));
    // The next part takes a fresh number.
    send(&mut offset, 5 * MIB, false);
    assert_eq!(upload_row(&db).await.3, vec![1, 3]);
    // The rest chunked, staged, and made the last part at completion.
    send(&mut offset, 2 * MIB, true);
    let rest = data.len() - offset;
    send(&mut offset, rest, true);
    let (asset, state, stored, _, _) = upload_row(&db).await;
    // Complete for the client; the probe may still be running.
    assert!(matches!(state.as_str(), "probing" | "complete"), "{state}");
    assert_eq!(stored, data.len() as i64);
    assert_eq!(
        backend.source_sha256(asset).await,
        hex::encode(Sha256::digest(&data)),
        "the stored source is byte-identical"
    );
    assert_eq!(backend.open_multipart_uploads().await, 0);
    assert_eq!(backend.staged_objects(&upload).await, 0);
    // Random bytes are not media: the asset says so, the upload itself succeeded.
    // The probe runs after the final PATCH's response.
    crate::common::eventually(
        "the asset to be errored",
        Duration::from_secs(60),
        || async {
            let (_, _, body) = http(addr, "GET", &format!("/v1/assets/{asset}"), &[AUTH], b"");
            body.contains("\"errored\"").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn parts_and_staged_pieces_make_the_exact_source_local() {
    parts_and_staged_pieces_make_the_exact_source(Backend::local()).await
}

#[tokio::test]
async fn parts_and_staged_pieces_make_the_exact_source_s3() {
    parts_and_staged_pieces_make_the_exact_source(Backend::s3()).await
}

/// A PATCH that stalls past its lease (its replica frozen) while another
/// replica writes the same offset: its part, uploaded after it resumes, is
/// never recorded, and the source is the right bytes.
async fn a_lapsed_patch_cannot_corrupt_the_upload(backend: Backend) {
    let db = fresh_db().await;
    let a = backend.start(&db, &[]);
    let b = backend.start(&db, &[]);
    let data = random_bytes(12 * MIB, 9);
    let upload = create_upload(b.addr, data.len());
    // Replica A receives 6 MiB of wrong bytes at offset 0, in two halves.
    let garbage = vec![0xEEu8; 6 * MIB];
    let mut slow = TcpStream::connect(a.addr).unwrap();
    write!(
        slow,
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        a.addr,
        garbage.len()
    )
    .unwrap();
    slow.write_all(&garbage[..3 * MIB]).unwrap();
    // Held, and its part number drawn (the multipart upload is created
    // between the two, so holding the lease alone is too early to freeze it).
    eventually("A to hold the upload", Duration::from_secs(10), || async {
        let client = db.pool.get().await.unwrap();
        let held: bool = client
            .query_one(
                "SELECT lock_id IS NOT NULL AND next_part > 1 FROM uploads",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        held.then_some(())
    })
    .await;
    // A freezes (its lease stops being renewed) until the lease lapses.
    a.process.signal("STOP");
    eventually("A's lease to lapse", Duration::from_secs(30), || async {
        let client = db.pool.get().await.unwrap();
        let lapsed: bool = client
            .query_one("SELECT locked_until < now() FROM uploads", &[])
            .await
            .unwrap()
            .get(0);
        lapsed.then_some(())
    })
    .await;
    // Replica B writes the right bytes at the same offset.
    let (status, new_offset) = patch(b.addr, &upload, 0, &data[..6 * MIB], None);
    assert_eq!((status, new_offset.as_deref()), (204, Some("6291456")));
    let parts = upload_row(&db).await.3;
    assert_eq!(parts, vec![2], "A drew part 1, B part 2");
    // A wakes up and finishes its body: its part is uploaded, not recorded.
    a.process.signal("CONT");
    slow.write_all(&garbage[3 * MIB..]).unwrap();
    let mut response = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _ = slow.read_to_end(&mut response);
    let (status, _, body) = parse_response(&response);
    assert_eq!(status, 423, "{body}");
    assert_eq!(upload_row(&db).await.3, vec![2]);
    // The rest, through A this time.
    let (status, _) = patch(a.addr, &upload, 6 * MIB, &data[6 * MIB..], None);
    assert_eq!(status, 204);
    let (asset, state, _, _, _) = upload_row(&db).await;
    assert!(matches!(state.as_str(), "probing" | "complete"), "{state}");
    assert_eq!(
        backend.source_sha256(asset).await,
        hex::encode(Sha256::digest(&data)),
        "A's bytes are nowhere in the source"
    );
    assert_eq!(backend.open_multipart_uploads().await, 0);
}

#[tokio::test]
async fn a_lapsed_patch_cannot_corrupt_the_upload_local() {
    a_lapsed_patch_cannot_corrupt_the_upload(Backend::local()).await
}

#[tokio::test]
async fn a_lapsed_patch_cannot_corrupt_the_upload_s3() {
    a_lapsed_patch_cannot_corrupt_the_upload(Backend::s3()).await
}

/// Termination and expiry abort the multipart upload and delete the staged
/// pieces: nothing is left in the store.
async fn termination_and_expiry_leave_no_parts(backend: Backend) {
    let db = fresh_db().await;
    let server = backend.start(
        &db,
        &[
            ("CASCADE_INGEST__UPLOAD_EXPIRY", "\"6s\""),
            ("CASCADE_INGEST__CLEANUP_INTERVAL", "\"200ms\""),
        ],
    );
    let addr = server.addr;
    let data = random_bytes(8 * MIB, 11);
    let terminated = create_upload(addr, 12 * MIB);
    let expiring = create_upload(addr, 12 * MIB);
    for upload in [&terminated, &expiring] {
        // A part (6 MiB) and a staged piece (2 MiB).
        assert_eq!(patch(addr, upload, 0, &data[..6 * MIB], None).0, 204);
        assert_eq!(patch(addr, upload, 6 * MIB, &data[6 * MIB..], None).0, 204);
        assert_eq!(backend.staged_objects(upload).await, 1);
    }
    assert_eq!(backend.open_multipart_uploads().await, 2);
    assert_eq!(http(addr, "DELETE", &terminated, &[AUTH, TUS], b"").0, 204);
    assert_eq!(http(addr, "HEAD", &terminated, &[AUTH, TUS], b"").0, 404);
    assert_eq!(backend.open_multipart_uploads().await, 1);
    assert_eq!(backend.staged_objects(&terminated).await, 0);
    eventually(
        "the expired upload to be removed",
        Duration::from_secs(20),
        || async {
            (crate::common::count(&db, "SELECT count(*) FROM uploads").await == 0).then_some(())
        },
    )
    .await;
    assert_eq!(backend.open_multipart_uploads().await, 0);
    assert_eq!(backend.staged_objects(&expiring).await, 0);
    if backend.bucket.is_none() {
        assert!(
            !backend.root.join("assets").exists()
                || std::fs::read_dir(backend.root.join("assets"))
                    .unwrap()
                    .next()
                    .is_none(),
            "no directories left behind"
        );
    }
}

#[tokio::test]
async fn termination_and_expiry_leave_no_parts_local() {
    termination_and_expiry_leave_no_parts(Backend::local()).await
}

#[tokio::test]
async fn termination_and_expiry_leave_no_parts_s3() {
    termination_and_expiry_leave_no_parts(Backend::s3()).await
}

/// The object store goes away in the middle of a tus upload (S3 through a
/// proxy the test cuts): the PATCHes that meet the outage fail with a
/// retryable error and record nothing past what is stored, the client
/// (tuspy, retrying once a second) carries on, and once the store is back
/// the upload completes with a byte-identical source. (Multi-threaded: the
/// proxy runs in this runtime while the test blocks on the client.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_mid_upload_is_retried_to_a_whole_source() {
    let db = fresh_db().await;
    let backend = Backend::s3();
    let target: SocketAddr = std::env::var("CASCADE_TEST_S3_ENDPOINT")
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = crate::common::FaultProxy::start(target).await;
    let endpoint = format!("http://{}", proxy.addr);
    let bucket = backend.bucket.clone().unwrap();
    let ingest = start(
        &db,
        "ingest",
        &backend.root,
        0,
        &[
            ("CASCADE_STORAGE__S3__ENDPOINT", &endpoint),
            ("CASCADE_STORAGE__S3__BUCKET", &bucket),
        ],
    );
    let file = super::fixture("landscape_1080p30_stereo.mp4");
    let (mut child, mut lines) = super::tuspy(&[ingest.addr], &file, 3);
    assert!(lines.by_ref().any(|l| l == "PAUSED"), "paused mid-upload");
    proxy.set_down(true);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    // The PATCHes met the outage and tuspy tried again.
    proxy.wait_refused(2, Duration::from_secs(30)).await;
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one("SELECT \"offset\", length FROM uploads", &[])
        .await
        .unwrap();
    let (offset, length): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        offset < length,
        "nothing recorded past what the store holds: {offset} of {length}"
    );
    proxy.set_down(false);
    assert!(lines.any(|l| l.starts_with("DONE")), "upload finished");
    assert!(child.wait().unwrap().success());

    eventually("the upload complete", Duration::from_secs(60), || async {
        let row = client
            .query_one("SELECT state, asset_id FROM uploads", &[])
            .await
            .ok()?;
        (row.get::<_, &str>(0) == "complete").then(|| row.get::<_, uuid::Uuid>(1))
    })
    .await;
    let asset: uuid::Uuid = client
        .query_one("SELECT asset_id FROM uploads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        backend.source_sha256(asset).await,
        hex::encode(Sha256::digest(std::fs::read(&file).unwrap())),
        "the stored source is byte-identical"
    );
}
