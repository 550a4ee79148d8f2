//! CDN purge (issue #14): through the real CDN config (nginx with Debian's
//! cache-purge module), a republished asset's manifests show the new
//! version at once, and a deleted asset stops playing at once, although
//! the CDN had them cached for a day (manifests) and a year (segments).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{fixture, json, scratch_root, start, AUTH};
use crate::common::{count, eventually, free_port, fresh_db, http};
use crate::origin::{get, nginx_available, request, start_cdn_purged_at};

/// The first variant's media playlist, init and first segment, as paths
/// (read through the CDN).
async fn first_media(cdn: SocketAddr, base: &str, master: &str) -> (String, String, String) {
    let playlist = master
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .unwrap_or_else(|| panic!("no variant in {master}"))
        .to_owned();
    let dir = playlist
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or_default();
    let media = get(cdn, &format!("{base}/{playlist}")).await.text();
    let segment = media
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .unwrap_or_else(|| panic!("no segment in {media}"));
    (
        format!("{base}/{playlist}"),
        format!("{base}/{dir}/init.mp4"),
        format!("{base}/{dir}/{segment}"),
    )
}

/// Fetches `path` through the CDN until it is a hit, returning the body.
async fn cached(cdn: SocketAddr, path: &str) -> Vec<u8> {
    let first = get(cdn, path).await;
    assert_eq!(first.status, 200, "{path}: {}", first.text());
    let again = get(cdn, path).await;
    assert_eq!(again.header("x-cache-status"), Some("HIT"), "{path}");
    assert_eq!(again.body, first.body, "{path}");
    again.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_and_deleted_assets_are_purged_from_the_cdn_at_once() {
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let db = fresh_db().await;
    let root = scratch_root();
    let purge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let purge_urls = format!(r#"["http://{purge}"]"#);
    let server = start(
        &db,
        "ingest,workers,origin",
        &root,
        0,
        &[
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\""),
            ("CASCADE_QUEUE__RETRY_BASE", "\"1s\""),
            ("CASCADE_CDN__PURGE_URLS", &purge_urls),
        ],
    );
    let addr = server.addr;
    let cdn = start_cdn_purged_at(addr, purge).await;

    let asset = super::created_asset(addr, AUTH)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/assets/{asset}");
    let source = std::fs::read(fixture("tiny_320x180_stereo.mp4")).unwrap();
    let (status, _, body) = http(addr, "PUT", &format!("{path}/source"), &[AUTH], &source);
    assert_eq!(status, 202, "{body}");
    super::ready_at_version(&db, &asset, 1).await;
    let (_, _, view) = http(addr, "GET", &path, &[AUTH], b"");
    let base = format!("/play/{}", json(&view)["playback_id"].as_str().unwrap());
    let master_path = format!("{base}/master.m3u8");

    // Everything a player fetches is cached at the CDN: the manifests for a
    // day, the media for a year. Clients with and without gzip share one copy.
    let master = String::from_utf8(cached(cdn.addr, &master_path).await).unwrap();
    let gzipped = request(
        cdn.addr,
        "GET",
        &master_path,
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(gzipped.header("x-cache-status"), Some("HIT"));
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    let (playlist, init, segment) = first_media(cdn.addr, &base, &master).await;
    assert!(segment.contains("/v1/"), "{segment}");
    let old_segment = cached(cdn.addr, &segment).await;
    cached(cdn.addr, &init).await;
    cached(cdn.addr, &playlist).await;
    cached(cdn.addr, &format!("{base}/manifest.mpd")).await;
    // The unversioned (older) URL of the same media.
    let unversioned = segment.replace("/v1/", "/");
    cached(cdn.addr, &unversioned).await;

    // A replacement: once version 2 is published, the CDN's master names
    // it, at once, not a day later.
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("{path}/replacement"),
        &[AUTH],
        &std::fs::read(fixture("odd_853x479_mpeg4.mkv")).unwrap(),
    );
    assert_eq!(status, 202, "{body}");
    super::ready_at_version(&db, &asset, 2).await;
    let published = Instant::now();
    let new_master = eventually(
        "the CDN's master naming v2",
        Duration::from_secs(3),
        || async {
            let reply = get(cdn.addr, &master_path).await;
            (reply.status == 200 && reply.text().contains("v2/")).then(|| reply.text())
        },
    )
    .await;
    println!(
        "the CDN served the republished master {:?} after the publish was seen",
        published.elapsed()
    );
    assert!(!new_master.contains("v1/"), "{new_master}");
    // The replaced version's versioned media still name the same bytes:
    // kept. Its unversioned URL now means version 2: purged.
    let kept = get(cdn.addr, &segment).await;
    assert_eq!(kept.header("x-cache-status"), Some("HIT"));
    assert_eq!(kept.body, old_segment);
    let moved = get(cdn.addr, &unversioned).await;
    assert_ne!(moved.header("x-cache-status"), Some("HIT"), "{unversioned}");
    assert_ne!(moved.body, old_segment, "{unversioned} names version 2");
    let (_, _, new_segment) = first_media(cdn.addr, &base, &new_master).await;
    cached(cdn.addr, &new_segment).await;
    cached(cdn.addr, &master_path).await;

    // Deleted: the CDN stops serving it at once, manifests and media alike.
    let (status, _, body) = http(addr, "DELETE", &path, &[AUTH], b"");
    assert_eq!(status, 204, "{body}");
    let deleted = Instant::now();
    for path in [&master_path, &new_segment, &segment] {
        eventually(
            "the CDN to stop serving it",
            Duration::from_secs(3),
            || async { (get(cdn.addr, path).await.status == 404).then_some(()) },
        )
        .await;
    }
    println!(
        "the CDN stopped serving the deleted asset {:?} after DELETE",
        deleted.elapsed()
    );
    // Once no origin can still serve it, the objects go and the CDN is
    // purged once more; the purge job succeeds.
    eventually("the purge to finish", Duration::from_secs(60), || async {
        let done = count(
            &db,
            &format!(
                "SELECT count(*) FROM jobs WHERE kind = 'purge_asset' AND state = 'succeeded' \
                 AND payload->>'asset_id' = '{asset}'"
            ),
        )
        .await;
        (done == 1).then_some(())
    })
    .await;
    assert!(
        !root.join(format!("assets/{asset}")).exists()
            || std::fs::read_dir(root.join(format!("assets/{asset}")))
                .unwrap()
                .next()
                .is_none(),
        "objects of the deleted asset left"
    );
    for path in [&master_path, &new_segment, &segment] {
        assert_eq!(get(cdn.addr, path).await.status, 404, "{path}");
    }
    // The republish purge ran at once; its second pass, due once every
    // origin has settled, ran too or was cancelled by the deletion (whose
    // own last pass purges everything).
    let purges = |state: &str| {
        format!(
            "SELECT count(*) FROM jobs WHERE kind = 'purge_cdn' AND state = '{state}' \
             AND payload->>'asset_id' = '{asset}'"
        )
    };
    let succeeded = count(&db, &purges("succeeded")).await;
    let cancelled = count(&db, &purges("cancelled")).await;
    assert!(
        succeeded >= 1 && succeeded + cancelled == 2,
        "purge_cdn jobs: {succeeded} succeeded, {cancelled} cancelled"
    );
    drop(server);
}
