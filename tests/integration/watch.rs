//! The watch folder, through a real `cascade serve --roles ingest`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::{eventually, fresh_db, CascadeProcess, TestDb};

fn fixture(name: &str) -> PathBuf {
    crate::common::fixtures_dir().join(name)
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn serve(db: &TestDb, watch: &Path, root: &Path) -> CascadeProcess {
    serve_url(&db.url, watch, root)
}

fn serve_url(db_url: &str, watch: &Path, root: &Path) -> CascadeProcess {
    let watch = watch.display().to_string();
    let root = root.display().to_string();
    CascadeProcess::serve(
        db_url,
        "ingest",
        &[
            ("CASCADE_INGEST__WATCH_DIR", &watch),
            ("CASCADE_INGEST__WATCH_SETTLE", "\"700ms\""),
            ("CASCADE_STORAGE__LOCAL_ROOT", &root),
        ],
    )
}

async fn asset_titles(db: &TestDb) -> Vec<(uuid::Uuid, String, String)> {
    let client = db.pool.get().await.unwrap();
    client
        .query(
            "SELECT id, coalesce(title, ''), state FROM assets ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn dropped_files_are_ingested_once_they_stop_growing_and_only_once() {
    let db = fresh_db().await;
    let base =
        std::env::temp_dir().join(format!("cascade-watch-{}", uuid::Uuid::new_v4().simple()));
    let (watch, root) = (base.join("in"), base.join("objects"));
    std::fs::create_dir_all(&watch).unwrap();
    let server = serve(&db, &watch, &root);

    // A file that grows for a while (a slow copy), then stops.
    let original = fixture("tiny_320x180_stereo.mp4");
    let bytes = std::fs::read(&original).unwrap();
    let mut file = std::fs::File::create(watch.join("clip.mp4")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        // The writer's pace, slower than nothing but faster than the settle time.
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            !watch.join("done/clip.mp4").exists(),
            "taken while still growing"
        );
    }
    drop(file);
    std::fs::write(watch.join("notes.mp4"), b"just some text, not a video").unwrap();

    eventually(
        "clip.mp4 to be ingested",
        Duration::from_secs(30),
        || async { watch.join("done/clip.mp4").exists().then_some(()) },
    )
    .await;
    eventually("notes.mp4 to fail", Duration::from_secs(30), || async {
        watch
            .join("failed/notes.mp4.reason.txt")
            .exists()
            .then_some(())
    })
    .await;
    let reason = std::fs::read_to_string(watch.join("failed/notes.mp4.reason.txt")).unwrap();
    assert!(reason.contains("not_media"), "{reason}");
    assert!(watch.join("failed/notes.mp4").exists());

    let assets = asset_titles(&db).await;
    assert_eq!(assets.len(), 2, "{assets:?}");
    let (clip_id, _, clip_state) = assets.iter().find(|(_, t, _)| t == "clip.mp4").unwrap();
    assert_eq!(clip_state, "processing");
    assert_eq!(
        sha256(&root.join(format!("assets/{clip_id}/source"))),
        sha256(&original)
    );
    assert!(assets
        .iter()
        .any(|(_, t, s)| t == "notes.mp4" && s == "errored"));

    // A crash after claiming a file but before moving it: the claim is there,
    // the file is still in the folder. The restarted process finishes it into
    // the same asset instead of making a second one.
    server.signal("KILL");
    drop(server);
    let again = watch.join("again.mp4");
    std::fs::copy(&original, &again).unwrap();
    let meta = std::fs::metadata(&again).unwrap();
    let mtime_ns = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let claimed = uuid::Uuid::new_v4();
    {
        let client = db.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO watch_files (name, size, mtime_ns, asset_id) VALUES ('again.mp4', $1, $2, $3)",
                &[&(meta.len() as i64), &mtime_ns, &claimed],
            )
            .await
            .unwrap();
    }
    let _restarted = serve(&db, &watch, &root);
    eventually(
        "again.mp4 to be finished after the restart",
        Duration::from_secs(30),
        || async { watch.join("done/again.mp4").exists().then_some(()) },
    )
    .await;
    let assets = asset_titles(&db).await;
    assert_eq!(
        assets.len(),
        3,
        "one more asset, nothing ingested twice: {assets:?}"
    );
    assert!(
        assets
            .iter()
            .any(|(id, t, _)| *id == claimed && t == "again.mp4"),
        "resumed into the claimed asset"
    );
}

/// A file dropped while the database is down is not failed: it stays in
/// the folder and is ingested once the database is back. (The database is
/// reached through a proxy the test cuts; multi-threaded, so the proxy runs
/// while the test blocks on the child process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_during_a_database_outage_wait_and_are_ingested_after() {
    let db = fresh_db().await;
    let base =
        std::env::temp_dir().join(format!("cascade-watch-{}", uuid::Uuid::new_v4().simple()));
    let (watch, root) = (base.join("in"), base.join("objects"));
    std::fs::create_dir_all(&watch).unwrap();
    let (host_port, database) = db
        .url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .unwrap();
    let proxy = crate::common::FaultProxy::start(host_port.parse().unwrap()).await;
    let url = format!("postgres://cascade@{}/{database}", proxy.addr);
    let _server = serve_url(&url, &watch, &root);
    // The process is up (its first scan done) before the outage.
    eventually(
        "the watch folder's subfolders",
        Duration::from_secs(30),
        || async { watch.join("failed").exists().then_some(()) },
    )
    .await;
    proxy.set_down(true);
    let dropped = std::time::Instant::now();
    std::fs::copy(fixture("tiny_320x180_stereo.mp4"), watch.join("during.mp4")).unwrap();
    // Settled (700 ms) and tried more than once, each try refused.
    let settle = Duration::from_millis(700);
    eventually(
        "the file tried during the outage",
        Duration::from_secs(30),
        || async { (proxy.refused() >= 3 && dropped.elapsed() > settle * 3).then_some(()) },
    )
    .await;
    assert!(watch.join("during.mp4").exists(), "left in the folder");
    assert!(
        !watch.join("failed/during.mp4").exists(),
        "not failed for an outage"
    );
    proxy.set_down(false);
    eventually(
        "during.mp4 to be ingested after the outage",
        Duration::from_secs(30),
        || async { watch.join("done/during.mp4").exists().then_some(()) },
    )
    .await;
    let assets = asset_titles(&db).await;
    assert_eq!(assets.len(), 1, "{assets:?}");
    assert_eq!(assets[0].1, "during.mp4");
    let _ = std::fs::remove_dir_all(&base);
}
