//! Progressive publish (issue #16): a new asset plays while it is still
//! being transcoded, through the real CDN config, in hls.js in Chromium,
//! and ends as a complete presentation that `cascade qa` passes.

use std::collections::HashMap;
use std::time::Duration;

use cascade_origin::OriginConfig;
use cascade_platform::config::{EncoderChoice, PlaybackConfig, RungConfig, TranscodeConfig};
use cascade_platform::playback_token::Keyring;
use cascade_platform::{assets, Queue};
use cascade_schemas::AssetState;

use crate::common::{bench_fixture, eventually, fresh_db, repo_root};
use crate::origin::{get, local_store, nginx_available, serve, start_cdn};
use crate::qa::run_qa_with;
use crate::transcode::{attribute, start_worker_queue};

/// `(BANDWIDTH, CODECS, RESOLUTION)` of each variant, by its URI.
fn variants(master: &str) -> HashMap<String, (u64, String, String)> {
    let lines: Vec<&str> = master.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let attributes = w[0].strip_prefix("#EXT-X-STREAM-INF:")?;
            Some((
                w[1].to_owned(),
                (
                    attribute(attributes, "BANDWIDTH").parse().unwrap(),
                    attribute(attributes, "CODECS").to_owned(),
                    attribute(attributes, "RESOLUTION").to_owned(),
                ),
            ))
        })
        .collect()
}

/// The 20 s 1080p fixture, uploaded and transcoded (two rungs and audio)
/// by a worker while hls.js plays it through nginx: the asset turns
/// playable (and says so) while processing; its playlists grow (EVENT, no
/// ENDLIST, short-lived at the CDN) and only ever append; its segments are
/// immutable from the first; the growing master declares every rung with
/// the final codecs and a BANDWIDTH no lower than the measured one; the
/// player starts at the beginning, plays to the end without a stall over a
/// second; the finished asset passes `cascade qa`.
/// What `player` reported of the 20 s asset it played while it grew: no
/// fatal error, from the start to the end, no stall over a second, the
/// manifests growing and then ending.
fn played_through_while_growing(player: &str, out: std::io::Result<std::process::Output>) {
    let report = crate::common::player_report(player, out);
    println!("{player}: {report}");
    assert!(report["fatal"].is_null(), "{report}");
    assert!(
        report["played"].as_f64().unwrap_or(0.0) >= 19.0,
        "played to the end: {report}"
    );
    assert!(
        report["first_frame_at"].as_f64().unwrap_or(f64::MAX) < 0.5,
        "started at the beginning: {report}"
    );
    assert!(
        report["longest_stall"].as_f64().unwrap_or(f64::MAX) <= 1.0,
        "no stall over a second: {report}"
    );
    assert!(
        report["grew"] == true && report["ended_list"] == true,
        "the manifests grew, then ended: {report}"
    );
}

/// A stack whose one asset (the 20 s 1080p fixture) is being transcoded
/// (two rungs and audio) with progressive publish, served by an origin
/// behind nginx; returned once the asset is playable.
struct Growing {
    db: crate::common::TestDb,
    root: std::path::PathBuf,
    origin: std::net::SocketAddr,
    cdn: crate::origin::Cdn,
    asset: cascade_schemas::AssetId,
    playable: assets::Asset,
    worker: crate::transcode::Worker,
    source: std::path::PathBuf,
    ladder: Vec<RungConfig>,
}

impl Growing {
    async fn start(label: &str) -> Self {
        assert!(nginx_available(), "nginx is needed (Debian package nginx)");
        let db = fresh_db().await;
        let (store, root) = local_store().await;
        let origin = serve(cascade_origin::OriginState::new(
            OriginConfig::default(),
            Keyring::from_config(&PlaybackConfig::default()),
            db.pool.clone(),
            store.clone(),
        ))
        .await;
        let cdn = start_cdn(origin).await;

        let source = bench_fixture();
        let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
        let (asset, _) = cascade_ingest::import_file(&queue, &store, &source, Some("growing"))
            .await
            .unwrap();
        // Not playable yet: players polling for it are not held off by a cache.
        let pending_playback = assets::get(&db.pool, asset)
            .await
            .unwrap()
            .unwrap()
            .playback_id;
        for manifest in ["master.m3u8", "manifest.mpd"] {
            let pending = get(origin, &format!("/play/{pending_playback}/{manifest}")).await;
            assert_eq!(pending.status, 404);
            assert_eq!(pending.code(), "asset_not_ready");
            assert_eq!(pending.header("cache-control"), Some("no-store"));
        }

        let mut queue_config = db.config.queue.clone();
        queue_config.concurrency = 1;
        queue_config.poll_interval = Duration::from_millis(50);
        // Two rungs, so that the encode outruns playback on two cores shared
        // with the browser (a worker and a player do not share a machine).
        let ladder = vec![
            RungConfig {
                name: "720p".to_owned(),
                short_side: 720,
                bitrate: 2_000_000,
            },
            RungConfig {
                name: "240p".to_owned(),
                short_side: 240,
                bitrate: 500_000,
            },
        ];
        let worker = start_worker_queue(
            &db,
            &store,
            TranscodeConfig {
                encoder: EncoderChoice::Libx264,
                ladder: ladder.clone(),
                ..TranscodeConfig::default()
            },
            queue_config,
            label,
        );

        let playable = eventually("the asset playable", Duration::from_secs(120), || async {
            let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
            assert_ne!(a.state, AssetState::Errored, "{:?}", a.error_message);
            a.served_version().is_some().then_some(a)
        })
        .await;
        assert_eq!(
            playable.state,
            AssetState::Processing,
            "playable before it is ready"
        );
        Self {
            db,
            root,
            origin,
            cdn,
            asset,
            playable,
            worker,
            source,
            ladder,
        }
    }

    /// Waits for the asset to be ready.
    async fn ready(&self) -> assets::Asset {
        let ready = eventually("the asset ready", Duration::from_secs(240), || async {
            let a = assets::get(&self.db.pool, self.asset)
                .await
                .unwrap()
                .unwrap();
            assert_ne!(a.state, AssetState::Errored, "{:?}", a.error_message);
            (a.state == AssetState::Ready).then_some(a)
        })
        .await;
        assert_eq!(ready.playable_version, None);
        ready
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_asset_plays_from_the_start_to_the_end_in_hls_js_through_the_cdn() {
    let _cores = crate::common::exclusive_cores().await;
    let growing = Growing::start("progressive-test").await;
    let (db, origin, cdn, playable) =
        (&growing.db, growing.origin, &growing.cdn, &growing.playable);
    let base = format!("/play/{}", playable.playback_id);
    // The origin, which looked it up while pending, serves it at once.
    let marked = std::time::Instant::now();
    eventually("the origin to serve it", Duration::from_secs(1), || async {
        (get(origin, &format!("{base}/master.m3u8")).await.status == 200).then_some(())
    })
    .await;
    println!(
        "served {:?} after the asset was marked playable",
        marked.elapsed()
    );
    let master_url = format!("http://{}{base}/master.m3u8", cdn.addr);
    let player = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/players/play.mjs"))
        .args(["--player", "hls", "--url", &master_url, "--seconds", "19"])
        .output();
    let player = tokio::spawn(player);

    // What a CDN gets while it grows.
    let master = get(cdn.addr, &format!("{base}/master.m3u8")).await;
    assert_eq!(master.status, 200, "{}", master.text());
    assert_eq!(
        master.header("cache-control"),
        Some("public, max-age=1, s-maxage=1")
    );
    let growing_master = master.text();
    let growing_variants = variants(&growing_master);
    assert_eq!(
        growing_variants.len(),
        2,
        "the whole ladder: {growing_master}"
    );
    let first_variant = growing_variants.keys().min().unwrap().clone();
    let media_url = format!("{base}/{first_variant}");
    let media = get(cdn.addr, &media_url).await;
    assert_eq!(media.status, 200, "{}", media.text());
    assert_eq!(
        media.header("cache-control"),
        Some("public, max-age=1, s-maxage=1")
    );
    let growing_media = media.text();
    assert!(
        growing_media.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n")
            && growing_media.contains("#EXT-X-START:TIME-OFFSET=0\n")
            && !growing_media.contains("#EXT-X-ENDLIST"),
        "{growing_media}"
    );
    let segment_dir = first_variant.rsplit_once('/').unwrap().0;
    let segment = get(cdn.addr, &format!("{base}/{segment_dir}/1.m4s")).await;
    assert_eq!(segment.status, 200);
    assert_eq!(
        segment.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    // The DASH MPD grows too (dynamic; the dash.js test plays it).
    let mpd = get(cdn.addr, &format!("{base}/manifest.mpd")).await;
    assert_eq!(mpd.status, 200, "{}", mpd.text());
    assert_eq!(
        mpd.header("cache-control"),
        Some("public, max-age=1, s-maxage=1")
    );
    assert!(mpd.text().contains(r#"type="dynamic""#), "{}", mpd.text());
    assert_eq!(
        crate::common::count(
            db,
            "SELECT count(*) FROM jobs WHERE kind = 'webhook' AND payload->>'type' = 'asset.playable'"
        )
        .await,
        1,
        "asset.playable is queued once"
    );

    growing.ready().await;

    // The finished presentation, from the origin itself (the CDN may still
    // hold the growing copy for its second), once it has looked the asset
    // up again (`asset_ttl`; it is served meanwhile, as growing).
    let final_media = eventually(
        "the origin to serve it as ready",
        Duration::from_secs(10),
        || async {
            let reply = get(origin, &media_url).await;
            (reply.header("cache-control") == Some("public, max-age=60, s-maxage=86400"))
                .then_some(reply.text())
        },
    )
    .await;
    let final_master = get(origin, &format!("{base}/master.m3u8")).await.text();
    for (uri, (bandwidth, codecs, resolution)) in variants(&final_master) {
        let (declared, declared_codecs, declared_resolution) = &growing_variants[&uri];
        assert!(
            *declared >= bandwidth,
            "{uri}: declared {declared} while growing, measured {bandwidth}"
        );
        assert_eq!(
            (declared_codecs, declared_resolution),
            (&codecs, &resolution),
            "{uri}"
        );
    }
    assert!(
        final_media.starts_with(&growing_media) && final_media.ends_with("#EXT-X-ENDLIST\n"),
        "an EVENT playlist only appends:\n{growing_media}\n---\n{final_media}"
    );

    // hls.js saw the playlists grow and end.
    played_through_while_growing("hls", player.await.unwrap());

    // QA against the ladder the worker used.
    let config = tempfile::NamedTempFile::new().unwrap();
    let rungs: String = growing
        .ladder
        .iter()
        .map(|r| {
            format!(
                "[[transcode.ladder]]\nname = \"{}\"\nshort_side = {}\nbitrate = {}\n",
                r.name, r.short_side, r.bitrate
            )
        })
        .collect();
    std::fs::write(config.path(), rungs).unwrap();
    let config_path = config.path().display().to_string();
    let (code, qa, out) = run_qa_with(
        &master_url,
        &growing.source,
        &["--skip-quality"],
        &[("CASCADE_CONFIG", &config_path)],
    );
    assert_eq!(code, 0, "cascade qa on the finished asset: {out}\n{qa}");
    growing.worker.stop().await;
    let _ = std::fs::remove_dir_all(&growing.root);
}

/// The same growing asset in dash.js: its MPD is dynamic while the asset
/// grows (no `timeShiftBufferDepth`, a presentation delay longer than the
/// asset, so dash.js starts at the first segment) and turns static, with
/// the same Period and segments, when it is ready; dash.js plays it from
/// the start to the end without a stall over a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_asset_plays_from_the_start_to_the_end_in_dash_js_through_the_cdn() {
    let _cores = crate::common::exclusive_cores().await;
    let growing = Growing::start("progressive-dash-test").await;
    let base = format!("/play/{}", growing.playable.playback_id);
    let mpd_url = format!("http://{}{base}/manifest.mpd", growing.cdn.addr);
    let player = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/players/play.mjs"))
        .args(["--player", "dash", "--url", &mpd_url, "--seconds", "19"])
        .output();
    let player = tokio::spawn(player);

    let mpd = get(growing.cdn.addr, &format!("{base}/manifest.mpd")).await;
    assert_eq!(mpd.status, 200, "{}", mpd.text());
    assert_eq!(
        mpd.header("cache-control"),
        Some("public, max-age=1, s-maxage=1")
    );
    let growing_mpd = mpd.text();
    assert!(
        growing_mpd.contains(r#"type="dynamic""#)
            && growing_mpd.contains("availabilityStartTime=")
            && growing_mpd.contains("minimumUpdatePeriod=")
            && growing_mpd.contains(r#"<Period id="0" start="PT0S">"#)
            && !growing_mpd.contains("timeShiftBufferDepth")
            && !growing_mpd.contains("mediaPresentationDuration"),
        "{growing_mpd}"
    );

    growing.ready().await;
    let final_mpd = eventually(
        "the origin to serve it as ready",
        Duration::from_secs(10),
        || async {
            let reply = get(growing.origin, &format!("{base}/manifest.mpd")).await;
            (reply.header("cache-control") == Some("public, max-age=60, s-maxage=86400"))
                .then_some(reply.text())
        },
    )
    .await;
    assert!(
        final_mpd.contains(r#"type="static""#)
            && final_mpd.contains(r#"<Period id="0" start="PT0S">"#),
        "{final_mpd}"
    );

    // dash.js saw the MPD dynamic, then static.
    played_through_while_growing("dash", player.await.unwrap());
    growing.worker.stop().await;
    let _ = std::fs::remove_dir_all(&growing.root);
}

/// Only a new asset's first version grows in public, once: a replacement
/// (a version is published) plays when it is ready, and `asset.playable`
/// is queued once per version.
#[tokio::test]
async fn only_a_first_version_is_marked_playable_and_only_once() {
    let db = fresh_db().await;
    let (id, _) = crate::common::insert_asset(&db, "public").await;
    let client = db.pool.get().await.unwrap();
    let set = |sql: &'static str| {
        let client = &client;
        async move { client.execute(sql, &[&id.as_uuid()]).await.unwrap() }
    };
    let playable_events = || async {
        crate::common::count(
            &db,
            &format!(
                "SELECT count(*) FROM jobs WHERE kind = 'webhook' \
                 AND payload->>'type' = 'asset.playable' AND payload->'data'->>'asset_id' = '{id}'"
            ),
        )
        .await
    };

    // A replacement: version 1 published, version 2 processing.
    set("UPDATE assets SET state = 'processing', published_version = 1, source_version = 2 WHERE id = $1")
        .await;
    assert!(!assets::mark_playable(&db.pool, id, 2).await.unwrap());
    let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        (asset.playable_version, asset.served_version()),
        (None, Some(1))
    );

    // A first version: playable once, for the version being made only.
    set("UPDATE assets SET published_version = NULL, source_version = 1 WHERE id = $1").await;
    assert!(!assets::mark_playable(&db.pool, id, 2).await.unwrap());
    assert!(assets::mark_playable(&db.pool, id, 1).await.unwrap());
    assert!(!assets::mark_playable(&db.pool, id, 1).await.unwrap());
    assert_eq!(playable_events().await, 1);
    let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(asset.served_version(), Some(1));

    // Errored: nothing is served while growing.
    set("UPDATE assets SET state = 'errored' WHERE id = $1").await;
    let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(asset.served_version(), None);
}
