//! One storage suite, run against both backends: the local directory and
//! S3 (SeaweedFS from the stack, through the real aws-sdk-s3 client).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use cascade_platform::config::{ByteSize, StorageConfig};
use cascade_platform::storage::{ByteRange, ObjectStore, PutOutcome, StorageError};
use cascade_schemas::{AssetId, ObjectKey, RenditionName};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, ReadBuf};

/// A 6 MiB threshold and 5 MiB parts, so a 13 MiB object takes three parts.
fn tuned(mut config: StorageConfig) -> StorageConfig {
    config.multipart_threshold = ByteSize::mib(6);
    config.part_size = ByteSize::mib(5);
    config.upload_concurrency = 2;
    config
}

pub async fn local_store() -> ObjectStore {
    let dir = std::env::temp_dir().join(format!("cascade-store-{}", uuid::Uuid::new_v4().simple()));
    let config = tuned(StorageConfig {
        local_root: dir,
        ..StorageConfig::default()
    });
    ObjectStore::from_config(&config).await.unwrap()
}

pub async fn s3_store() -> ObjectStore {
    let config = tuned(StorageConfig {
        s3: Some(crate::common::s3_config()),
        ..StorageConfig::default()
    });
    ObjectStore::from_config(&config).await.unwrap()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn segment_key(asset: AssetId, seq: u64) -> ObjectKey {
    ObjectKey::media_segment(asset, 1, &RenditionName::new("720p").unwrap(), seq)
}

/// A reader that yields `ok_bytes` bytes, then fails, like a client that disconnects.
struct FailingReader {
    remaining: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.remaining == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )));
        }
        let n = self.remaining.min(buf.remaining()).min(64 * 1024);
        buf.put_slice(&vec![1u8; n]);
        self.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

pub async fn put_get_head_round_trip(store: ObjectStore) {
    let asset = AssetId::new();
    let key = segment_key(asset, 1);
    let data = random_bytes(100_000, 1);
    store
        .put_bytes(&key, Bytes::from(data.clone()))
        .await
        .unwrap();
    let body = store.get(&key, None).await.unwrap();
    assert_eq!(body.meta.size, 100_000);
    assert!(body.meta.etag.is_some());
    assert_eq!(body.collect().await.unwrap().as_ref(), data.as_slice());
    let meta = store.head(&key).await.unwrap();
    assert_eq!(meta.size, 100_000);
    // Overwrite replaces the whole object.
    store
        .put_bytes(&key, Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&key, None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .as_ref(),
        b"short"
    );
}

pub async fn ranges(store: ObjectStore) {
    let key = segment_key(AssetId::new(), 2);
    let data = random_bytes(10_000, 2);
    store
        .put_bytes(&key, Bytes::from(data.clone()))
        .await
        .unwrap();
    for (range, expect) in [
        (ByteRange::Inclusive { first: 0, last: 99 }, 0..100),
        (
            ByteRange::Inclusive {
                first: 9_990,
                last: 20_000,
            },
            9_990..10_000,
        ),
        (ByteRange::From(5_000), 5_000..10_000),
        (ByteRange::Suffix(16), 9_984..10_000),
    ] {
        let body = store.get(&key, Some(range)).await.unwrap();
        assert_eq!(
            body.meta.size, 10_000,
            "{range:?}: size is the whole object's"
        );
        assert_eq!(
            body.range,
            Some((expect.start as u64, expect.end as u64 - 1)),
            "{range:?}"
        );
        assert_eq!(body.len(), (expect.end - expect.start) as u64);
        assert_eq!(
            body.collect().await.unwrap().as_ref(),
            &data[expect.clone()],
            "{range:?}"
        );
    }
    match store.get(&key, Some(ByteRange::From(10_000))).await {
        Err(StorageError::InvalidRange { size }) => assert_eq!(size, 10_000),
        other => panic!("expected InvalidRange, got {other:?}"),
    }
}

pub async fn multipart_put_streams_large_objects(store: ObjectStore) {
    let key = ObjectKey::source(AssetId::new());
    let data = random_bytes(13 * 1024 * 1024 + 123, 3);
    let written = store.put(&key, &mut data.as_slice()).await.unwrap();
    assert_eq!(written, data.len() as u64);
    assert_eq!(store.head(&key).await.unwrap().size, data.len() as u64);
    let back = store
        .get(&key, None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(back.as_ref() == data.as_slice(), "multipart object differs");
    if let ObjectStore::S3(s3) = &store {
        // SeaweedFS, like S3, gives multipart objects an etag "<md5>-<parts>".
        let etag = store.head(&key).await.unwrap().etag.unwrap_or_default();
        assert!(
            etag.trim_matches('"').ends_with("-3"),
            "expected 3 parts, etag {etag}"
        );
        let uploads = s3
            .client()
            .list_multipart_uploads()
            .bucket(s3.bucket())
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "no multipart upload left open"
        );
    }
}

pub async fn failed_body_leaves_no_object(store: ObjectStore) {
    let key = ObjectKey::source(AssetId::new());
    // Small (single put) and large (multipart) bodies both fail cleanly.
    for ok_bytes in [1_000usize, 12 * 1024 * 1024] {
        let result = store
            .put(
                &key,
                &mut FailingReader {
                    remaining: ok_bytes,
                },
            )
            .await;
        assert!(
            matches!(result, Err(StorageError::BodyRead(_))),
            "{ok_bytes}: {result:?}"
        );
        assert!(store.head(&key).await.unwrap_err().is_not_found());
    }
    if let ObjectStore::S3(s3) = &store {
        let uploads = s3
            .client()
            .list_multipart_uploads()
            .bucket(s3.bucket())
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "the failed multipart upload was aborted"
        );
    }
}

pub async fn list_and_delete_prefix(store: ObjectStore) {
    let asset = AssetId::new();
    let other = AssetId::new();
    for seq in 1..=5 {
        store
            .put_bytes(&segment_key(asset, seq), Bytes::from(vec![seq as u8; 10]))
            .await
            .unwrap();
    }
    store
        .put_bytes(&ObjectKey::source(asset), Bytes::from_static(b"src"))
        .await
        .unwrap();
    store
        .put_bytes(&segment_key(other, 1), Bytes::from_static(b"keep"))
        .await
        .unwrap();

    let listed = store.list(&ObjectKey::asset_prefix(asset)).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(
        listed.windows(2).all(|w| w[0].key < w[1].key),
        "sorted by key"
    );
    assert!(listed
        .iter()
        .all(|o| o.key.starts_with(&ObjectKey::asset_prefix(asset))));
    let segments = store
        .list(&ObjectKey::version_prefix(asset, 1))
        .await
        .unwrap();
    assert_eq!(segments.len(), 5);
    assert_eq!(segments[0].size, 10);

    assert_eq!(
        store
            .delete_prefix(&ObjectKey::asset_prefix(asset))
            .await
            .unwrap(),
        6
    );
    assert!(store
        .list(&ObjectKey::asset_prefix(asset))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .delete_prefix(&ObjectKey::asset_prefix(asset))
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(
        store
            .list(&ObjectKey::asset_prefix(other))
            .await
            .unwrap()
            .len(),
        1,
        "other assets untouched"
    );
    assert!(
        store.delete_prefix("").await.is_err(),
        "an empty prefix is refused"
    );
}

pub async fn create_if_absent(store: ObjectStore) {
    let key = ObjectKey::hls_master(AssetId::new(), 1);
    assert_eq!(
        store
            .put_if_absent(&key, Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put_if_absent(&key, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        store
            .get(&key, None)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .as_ref(),
        b"first"
    );
    // Racing writers: exactly one wins.
    let race_key = ObjectKey::dash_manifest(AssetId::new(), 1);
    let attempts = (0..6).map(|n| {
        let store = store.clone();
        let key = race_key.clone();
        tokio::spawn(async move {
            store
                .put_if_absent(&key, Bytes::from(format!("writer {n}")))
                .await
                .unwrap()
        })
    });
    let outcomes = futures::future::join_all(attempts).await;
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(PutOutcome::Created)))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
}

pub async fn missing_objects(store: ObjectStore) {
    let key = segment_key(AssetId::new(), 9);
    assert!(store.get(&key, None).await.unwrap_err().is_not_found());
    assert!(store.head(&key).await.unwrap_err().is_not_found());
    store.delete(&key).await.unwrap();
    assert!(store
        .list("assets/does-not-exist/")
        .await
        .unwrap()
        .is_empty());
    store.ping().await.unwrap();
}

const MIB: usize = 1024 * 1024;

/// Multipart uploads the store has open (S3), or upload directories (local).
pub(crate) async fn open_multipart_uploads(store: &ObjectStore) -> usize {
    match store {
        ObjectStore::S3(s3) => s3
            .client()
            .list_multipart_uploads()
            .bucket(s3.bucket())
            .send()
            .await
            .unwrap()
            .uploads()
            .len(),
        ObjectStore::Local(local) => {
            let mut found = 0;
            let mut dirs = vec![local.root().to_owned()];
            while let Some(dir) = dirs.pop() {
                // A store nothing was written to has no root directory yet.
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.map(Result::unwrap) {
                    if !entry.file_type().unwrap().is_dir() {
                        continue;
                    }
                    if entry.file_name() == ".multipart" {
                        found += std::fs::read_dir(entry.path()).unwrap().count();
                    } else {
                        dirs.push(entry.path());
                    }
                }
            }
            found
        }
    }
}

pub async fn multipart_upload_joins_listed_parts_in_order(store: ObjectStore) {
    let asset = AssetId::new();
    let key = ObjectKey::source(asset);
    let first = random_bytes(5 * MIB + 17, 11);
    let second = random_bytes(6 * MIB, 12);
    let last = random_bytes(1_234, 13);
    let upload = store.create_multipart(&key).await.unwrap();
    // Out of order, with gaps in the numbers; one reader feeds two parts.
    let last_tag = store
        .upload_part(&key, &upload, 9, last.len() as u64, &mut last.as_slice())
        .await
        .unwrap();
    let joined = [first.as_slice(), second.as_slice()].concat();
    let mut reader = joined.as_slice();
    let first_tag = store
        .upload_part(&key, &upload, 2, first.len() as u64, &mut reader)
        .await
        .unwrap();
    assert_eq!(reader.len(), second.len(), "read no further than the part");
    // Part 5 uploaded twice: the second replaces the first.
    let junk = random_bytes(6 * MIB, 14);
    store
        .upload_part(&key, &upload, 5, junk.len() as u64, &mut junk.as_slice())
        .await
        .unwrap();
    let second_tag = store
        .upload_part(&key, &upload, 5, second.len() as u64, &mut reader)
        .await
        .unwrap();
    // A part never listed (a writer whose lease lapsed) is left out.
    store
        .upload_part(&key, &upload, 7, junk.len() as u64, &mut junk.as_slice())
        .await
        .unwrap();
    assert!(
        store.head(&key).await.unwrap_err().is_not_found(),
        "nothing visible before completion"
    );
    assert!(
        store
            .list(&ObjectKey::asset_prefix(asset))
            .await
            .unwrap()
            .is_empty(),
        "parts are not objects"
    );
    assert_eq!(open_multipart_uploads(&store).await, 1);
    let parts = [(2, first_tag), (5, second_tag), (9, last_tag)];
    store
        .complete_multipart(&key, &upload, &parts)
        .await
        .unwrap();
    let expected = [first.as_slice(), second.as_slice(), last.as_slice()].concat();
    assert_eq!(store.head(&key).await.unwrap().size, expected.len() as u64);
    let back = store
        .get(&key, None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        back.as_ref() == expected.as_slice(),
        "completed object differs"
    );
    assert_eq!(open_multipart_uploads(&store).await, 0, "nothing left open");
    // Completing again: S3 may answer as before, or that the upload is gone
    // (the local store does); either way the object stays as it was.
    match store.complete_multipart(&key, &upload, &parts).await {
        Ok(()) | Err(StorageError::NotFound { .. }) => {}
        Err(other) => panic!("completing again: {other:?}"),
    }
    let back = store
        .get(&key, None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        back.as_ref() == expected.as_slice(),
        "completed object changed"
    );
}

pub async fn multipart_upload_refuses_bad_parts(store: ObjectStore) {
    let key = ObjectKey::source(AssetId::new());
    let upload = store.create_multipart(&key).await.unwrap();
    // A body shorter than the declared length.
    let short = vec![3u8; 1_000];
    match store
        .upload_part(&key, &upload, 1, 2_000, &mut short.as_slice())
        .await
    {
        Err(StorageError::BodyRead(_)) => {}
        other => panic!("expected BodyRead, got {other:?}"),
    }
    // A body that fails, like a client that goes away.
    match store
        .upload_part(
            &key,
            &upload,
            1,
            2 * MIB as u64,
            &mut FailingReader { remaining: MIB },
        )
        .await
    {
        Err(StorageError::BodyRead(_)) => {}
        other => panic!("expected BodyRead, got {other:?}"),
    }
    for number in [0, 10_001] {
        let result = store
            .upload_part(&key, &upload, number, 1, &mut &b"x"[..])
            .await;
        assert!(
            matches!(&result, Err(e) if !e.is_retryable()),
            "{number}: {result:?}"
        );
    }
    let tag = store
        .upload_part(&key, &upload, 1, 3, &mut &b"abc"[..])
        .await
        .unwrap();
    assert!(
        store
            .complete_multipart(&key, &upload, &[(2, tag.clone()), (1, tag.clone())])
            .await
            .is_err(),
        "descending part numbers are refused"
    );
    // An upload that does not exist.
    let other = ObjectKey::source(AssetId::new());
    let missing = "0123456789abcdef0123456789abcdef";
    let result = store
        .upload_part(&other, missing, 1, 3, &mut &b"abc"[..])
        .await;
    assert!(
        matches!(result, Err(StorageError::NotFound { .. })),
        "{result:?}"
    );
    if matches!(store, ObjectStore::Local(_)) {
        // What S3 checks and SeaweedFS may not: a small middle part, a wrong ETag.
        let tag2 = store
            .upload_part(&key, &upload, 2, 3, &mut &b"def"[..])
            .await
            .unwrap();
        let refused = store
            .complete_multipart(&key, &upload, &[(1, tag.clone()), (2, tag2)])
            .await;
        assert!(
            matches!(&refused, Err(e) if !e.is_retryable()),
            "{refused:?}"
        );
        let refused = store
            .complete_multipart(&key, &upload, &[(1, "\"nope\"".to_owned())])
            .await;
        assert!(
            matches!(&refused, Err(e) if !e.is_retryable()),
            "{refused:?}"
        );
    }
    store.abort_multipart(&key, &upload).await.unwrap();
    assert!(store.head(&key).await.unwrap_err().is_not_found());
}

pub async fn aborted_multipart_upload_leaves_nothing(store: ObjectStore) {
    let asset = AssetId::new();
    let key = ObjectKey::source(asset);
    let upload = store.create_multipart(&key).await.unwrap();
    let data = random_bytes(5 * MIB, 21);
    let tag = store
        .upload_part(&key, &upload, 1, data.len() as u64, &mut data.as_slice())
        .await
        .unwrap();
    assert_eq!(open_multipart_uploads(&store).await, 1);
    store.abort_multipart(&key, &upload).await.unwrap();
    store.abort_multipart(&key, &upload).await.unwrap();
    assert_eq!(open_multipart_uploads(&store).await, 0);
    assert!(store.head(&key).await.unwrap_err().is_not_found());
    assert!(store
        .complete_multipart(&key, &upload, &[(1, tag)])
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .upload_part(&key, &upload, 2, 3, &mut &b"abc"[..])
        .await
        .unwrap_err()
        .is_not_found());
    if let ObjectStore::Local(local) = &store {
        assert!(
            !local.root().join(format!("assets/{asset}")).exists(),
            "no directory left behind"
        );
    }
}

macro_rules! storage_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            #[tokio::test]
            async fn put_get_head_round_trip() {
                super::put_get_head_round_trip($make().await).await
            }
            #[tokio::test]
            async fn ranges() {
                super::ranges($make().await).await
            }
            #[tokio::test]
            async fn multipart_put_streams_large_objects() {
                super::multipart_put_streams_large_objects($make().await).await
            }
            #[tokio::test]
            async fn failed_body_leaves_no_object() {
                super::failed_body_leaves_no_object($make().await).await
            }
            #[tokio::test]
            async fn list_and_delete_prefix() {
                super::list_and_delete_prefix($make().await).await
            }
            #[tokio::test]
            async fn create_if_absent() {
                super::create_if_absent($make().await).await
            }
            #[tokio::test]
            async fn missing_objects() {
                super::missing_objects($make().await).await
            }
            #[tokio::test]
            async fn multipart_upload_joins_listed_parts_in_order() {
                super::multipart_upload_joins_listed_parts_in_order($make().await).await
            }
            #[tokio::test]
            async fn multipart_upload_refuses_bad_parts() {
                super::multipart_upload_refuses_bad_parts($make().await).await
            }
            #[tokio::test]
            async fn aborted_multipart_upload_leaves_nothing() {
                super::aborted_multipart_upload_leaves_nothing($make().await).await
            }
        }
    };
}

storage_suite!(local, super::local_store);
storage_suite!(s3, super::s3_store);

#[tokio::test]
async fn s3_lifecycle_rules_are_applied_at_start_up() {
    let store = s3_store().await;
    let ObjectStore::S3(s3) = &store else {
        unreachable!()
    };
    let mut ids = s3.lifecycle_rule_ids().await.unwrap();
    ids.sort();
    assert_eq!(
        ids,
        vec!["cascade-abort-incomplete-multipart", "cascade-expire-tmp"]
    );
}

/// Starts an S3 store with `config` and lists its bucket's lifecycle rule ids.
async fn rule_ids_after_start_up(config: &StorageConfig) -> Vec<String> {
    let store = ObjectStore::from_config(config).await.unwrap();
    let ObjectStore::S3(s3) = &store else {
        unreachable!()
    };
    let mut ids = s3.lifecycle_rule_ids().await.unwrap();
    ids.sort();
    ids
}

#[tokio::test]
async fn s3_start_up_keeps_the_operators_lifecycle_rules() {
    let config = tuned(StorageConfig {
        s3: Some(crate::common::s3_config()),
        ..StorageConfig::default()
    });
    let store = ObjectStore::from_config(&config).await.unwrap();
    let ObjectStore::S3(s3) = &store else {
        unreachable!()
    };
    // The operator's own rule, put beside Cascade's.
    s3.put_expiration_rule("operator-archive-expiry", "archive/", 365)
        .await
        .unwrap();
    // Start-up again (a restart, another replica): Cascade's rules are
    // written again, the operator's stays, nothing is duplicated.
    for _ in 0..2 {
        assert_eq!(
            rule_ids_after_start_up(&config).await,
            vec![
                "cascade-abort-incomplete-multipart",
                "cascade-expire-tmp",
                "operator-archive-expiry"
            ]
        );
    }
    // A rule Cascade no longer configures goes; the operator's stays.
    let mut without_tmp = config.clone();
    if let Some(s3) = without_tmp.s3.as_mut() {
        s3.lifecycle.expire_tmp_days = None;
    }
    assert_eq!(
        rule_ids_after_start_up(&without_tmp).await,
        vec![
            "cascade-abort-incomplete-multipart",
            "operator-archive-expiry"
        ]
    );
}

/// A colder tier's bucket: every object written there, whole or in parts,
/// takes the configured storage class, and listings and HEAD report it.
#[tokio::test]
async fn s3_writes_take_the_configured_storage_class() {
    let mut s3 = crate::common::s3_config();
    s3.storage_class = Some("STANDARD_IA".to_owned());
    let store = ObjectStore::from_config(&tuned(StorageConfig {
        s3: Some(s3),
        ..StorageConfig::default()
    }))
    .await
    .unwrap();
    let asset = AssetId::new();
    let small = segment_key(asset, 1);
    store
        .put_bytes(&small, Bytes::from(random_bytes(1000, 1)))
        .await
        .unwrap();
    let large = segment_key(asset, 2);
    let data = random_bytes(12 * 1024 * 1024, 2);
    store.put(&large, &mut data.as_slice()).await.unwrap();
    for key in [&small, &large] {
        let head = store.head(key).await.unwrap();
        assert_eq!(head.storage_class.as_deref(), Some("STANDARD_IA"), "{key}");
    }
    let listed = store.list(&ObjectKey::asset_prefix(asset)).await.unwrap();
    assert!(
        listed
            .iter()
            .all(|m| m.storage_class.as_deref() == Some("STANDARD_IA")),
        "{listed:?}"
    );
}

#[tokio::test]
async fn s3_with_wrong_credentials_fails_with_a_permanent_error() {
    let mut config = crate::common::s3_config();
    config.secret_access_key = cascade_platform::config::Secret::new("wrong");
    let result = ObjectStore::from_config(&StorageConfig {
        s3: Some(config),
        ..StorageConfig::default()
    })
    .await;
    match result {
        Err(e) => assert!(!e.is_retryable(), "{e}"),
        Ok(_) => panic!("wrong credentials accepted"),
    }
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_transient() {
    let mut config = crate::common::s3_config();
    config.endpoint = Some("http://127.0.0.1:9".to_owned());
    config.max_attempts = 1;
    let result = ObjectStore::from_config(&StorageConfig {
        s3: Some(config),
        ..StorageConfig::default()
    })
    .await;
    match result {
        Err(e) => assert!(e.is_retryable(), "{e}"),
        Ok(_) => panic!("connected to nothing"),
    }
}
