//! Tiered storage (issue #14): a rendition's media move between two real
//! S3 buckets (copy, verify, switch, drop) while the origin keeps serving
//! them from the tier Postgres names; a worker SIGKILLed anywhere in a move
//! leaves the asset playable, and once the moves are done every rendition's
//! objects are in exactly one tier; deleting the asset empties every tier.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cascade_origin::OriginConfig;
use cascade_platform::config::{
    ByteSize, CdnConfig, EncoderChoice, PlaybackConfig, RungConfig, StorageConfig, TierConfig,
    TierPolicyConfig, TranscodeConfig,
};
use cascade_platform::playback_token::Keyring;
use cascade_platform::queue::JobNotifier;
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::{assets, db, tiering, Queue};
use cascade_schemas::{job_kind, AssetId, AssetState, ObjectKey, RenditionName};
use cascade_workers::cdn_purge::CdnPurger;
use cascade_workers::purge::PurgeHandler;
use cascade_workers::tiering::{register, schedule_policy};
use cascade_workers::transcode::{TranscodeHandler, VideoEncoder};
use cascade_workers::{HandlerRegistry, Runner};
use tokio_util::sync::CancellationToken;

use crate::common::{
    bench_fixture, count, eventually, fixtures_dir, fresh_db, repo_root, s3_config, CascadeProcess,
    TestDb,
};
use crate::origin::{get, nginx_available, serve, start_cdn_purged_at};

/// Hot in one bucket, `cold` in another, of the stack's SeaweedFS.
fn two_buckets() -> StorageConfig {
    StorageConfig {
        s3: Some(s3_config()),
        tiers: vec![TierConfig {
            name: "cold".to_owned(),
            local_root: None,
            s3: Some(s3_config()),
            price_per_gb_month: 0.004,
        }],
        ..StorageConfig::default()
    }
}

/// Hot, `warm` and `cold`, each a bucket of the stack's SeaweedFS.
fn three_buckets() -> StorageConfig {
    let tier = |name: &str, price| TierConfig {
        name: name.to_owned(),
        local_root: None,
        s3: Some(s3_config()),
        price_per_gb_month: price,
    };
    StorageConfig {
        s3: Some(s3_config()),
        tiers: vec![tier("warm", 0.0125), tier("cold", 0.004)],
        ..StorageConfig::default()
    }
}

/// A worker in this process for transcodes, moves, drops and purges.
fn start_worker(db: &TestDb, tiers: &Tiers, stop: &CancellationToken) {
    start_worker_with_policy(db, tiers, stop, None);
}

/// [`start_worker`], also running the tiering policy every second.
fn start_worker_with_policy(
    db: &TestDb,
    tiers: &Tiers,
    stop: &CancellationToken,
    policy: Option<TierPolicyConfig>,
) {
    start_worker_purging(db, tiers, stop, policy, CdnConfig::default());
}

/// [`start_worker_with_policy`], purging the CDN nodes of `cdn`.
fn start_worker_purging(
    db: &TestDb,
    tiers: &Tiers,
    stop: &CancellationToken,
    policy: Option<TierPolicyConfig>,
    cdn: CdnConfig,
) {
    let mut queue_config = db.config.queue.clone();
    queue_config.poll_interval = Duration::from_millis(100);
    queue_config.retry_base = Duration::from_millis(200);
    let queue = Queue::new(db.pool.clone(), queue_config);
    let notifier = JobNotifier::start(db::pg_config(&db.config.database).unwrap(), stop.clone());
    let transcode = TranscodeHandler::new(
        db.pool.clone(),
        tiers.hot().clone(),
        TranscodeConfig {
            encoder: EncoderChoice::Libx264,
            ladder: vec![
                RungConfig {
                    name: "480p".to_owned(),
                    short_side: 480,
                    bitrate: 1_500_000,
                },
                RungConfig {
                    name: "240p".to_owned(),
                    short_side: 240,
                    bitrate: 400_000,
                },
            ],
            ..TranscodeConfig::default()
        },
        VideoEncoder::Libx264,
    );
    let cdn = CdnPurger::new(&cdn).unwrap();
    let handlers = HandlerRegistry::new()
        .register(job_kind::TRANSCODE, transcode)
        .register(
            job_kind::PURGE_ASSET,
            PurgeHandler::new(db.pool.clone(), tiers.clone(), cdn.clone()),
        );
    // Archived sources go to the coldest tier.
    let coldest = tiers.all().last().map(|t| t.name.clone()).unwrap();
    let handlers = cascade_workers::archive::register(
        handlers,
        &db.pool,
        tiers,
        &cdn,
        &coldest,
        queue.config().max_attempts,
    );
    if let Some(policy) = &policy {
        tokio::spawn(schedule_policy(
            queue.clone(),
            policy.interval,
            stop.clone(),
        ));
    }
    let handlers = register(handlers, &queue, tiers, policy);
    let runner = Runner::new(queue, handlers, notifier, "tiers-test");
    tokio::spawn(runner.run(stop.clone()));
}

/// An origin over `tiers` that keeps nothing in memory (every object is
/// read from the tier the asset's lookup names), follows changes and
/// counts views (written every 200 ms, in buckets of a second).
async fn start_origin(db: &TestDb, tiers: &Tiers, stop: &CancellationToken) -> SocketAddr {
    start_origin_promoting(db, tiers, stop, None).await
}

/// [`start_origin`], queueing promotions at each flush.
async fn start_origin_promoting(
    db: &TestDb,
    tiers: &Tiers,
    stop: &CancellationToken,
    promotion: Option<cascade_origin::Promotion>,
) -> SocketAddr {
    let state = cascade_origin::OriginState::with_tiers(
        OriginConfig {
            max_cached_object: ByteSize(0),
            front_cache_bytes: ByteSize(0),
            view_flush_interval: Duration::from_millis(200),
            view_bucket: Duration::from_secs(1),
            ..OriginConfig::default()
        },
        Keyring::from_config(&PlaybackConfig::default()),
        db.pool.clone(),
        tiers.clone(),
    );
    state.follow_changes(db::pg_config(&db.config.database).unwrap(), stop.clone());
    state.count_views(stop.clone(), promotion);
    serve(state).await
}

/// Every object a player fetches from the master playlist down, by path.
async fn play_everything(origin: SocketAddr, base: &str) -> BTreeMap<String, Vec<u8>> {
    let mut fetched = BTreeMap::new();
    let fetch = |path: String| async move {
        let reply = get(origin, &path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        (path, reply.body)
    };
    let (path, master) = fetch(format!("{base}/master.m3u8")).await;
    let master_text = String::from_utf8(master.clone()).unwrap();
    fetched.insert(path, master);
    let playlists: Vec<String> = master_text
        .lines()
        .filter_map(|l| {
            if l.starts_with('#') {
                l.split_once("URI=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(uri, _)| uri.to_owned())
            } else {
                l.ends_with(".m3u8").then(|| l.to_owned())
            }
        })
        .collect();
    assert!(!playlists.is_empty(), "{master_text}");
    for playlist in playlists {
        let (path, body) = fetch(format!("{base}/{playlist}")).await;
        let text = String::from_utf8(body.clone()).unwrap();
        fetched.insert(path, body);
        let dir = playlist
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or_default();
        for line in text.lines() {
            let media = if let Some((_, rest)) = line.split_once("URI=\"") {
                rest.split_once('"').map(|(uri, _)| uri.to_owned())
            } else {
                (!line.starts_with('#') && !line.is_empty()).then(|| line.to_owned())
            };
            if let Some(media) = media {
                let (path, body) = fetch(format!("{base}/{dir}/{media}")).await;
                fetched.insert(path, body);
            }
        }
    }
    fetched
}

/// Each published rendition's tier, by name.
async fn placements(db: &TestDb, asset: AssetId) -> BTreeMap<String, String> {
    assets::renditions(&db.pool, asset, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.tier))
        .collect()
}

async fn wait_in(db: &TestDb, asset: AssetId, tier: &str, within: Duration) {
    eventually(&format!("every rendition in {tier}"), within, || async {
        placements(db, asset)
            .await
            .values()
            .all(|t| t == tier)
            .then_some(())
    })
    .await;
}

/// Moves every rendition of `asset` to `tier` by hand, as an operator
/// would, and waits until they are all there.
async fn moved_to(db: &TestDb, asset: AssetId, tier: &str) {
    tiering::request_moves(&db.pool, asset, tier).await.unwrap();
    wait_in(db, asset, tier, Duration::from_secs(30)).await;
}

/// Waits until no move or drop is queued or running.
async fn wait_tiering_done(db: &TestDb) {
    eventually(
        "the moves and drops to finish",
        Duration::from_secs(60),
        || async {
            let busy = count(
                db,
                "SELECT count(*) FROM jobs WHERE kind IN ('move_rendition', 'drop_tier_copy') \
             AND state IN ('queued', 'running')",
            )
            .await;
            (busy == 0).then_some(())
        },
    )
    .await;
}

/// Object keys of `asset`'s version 1 renditions in each tier.
async fn stored(tiers: &Tiers, asset: AssetId) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for tier in tiers.all() {
        let keys = tier
            .store
            .list(&ObjectKey::version_prefix(asset, 1))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .filter(|k| k.matches('/').count() == 4) // rendition media, not manifests
            .collect();
        out.insert(tier.name.clone(), keys);
    }
    out
}

/// Every rendition's media wholly in the tier Postgres names, and nowhere else.
async fn assert_in_one_tier(db: &TestDb, tiers: &Tiers, asset: AssetId) {
    let placed = placements(db, asset).await;
    let stored = stored(tiers, asset).await;
    for (rendition, tier) in &placed {
        let prefix = ObjectKey::rendition_prefix(asset, 1, &RenditionName::new(rendition).unwrap());
        for (name, keys) in &stored {
            let here = keys.iter().filter(|k| k.starts_with(&prefix)).count();
            if name == tier {
                assert!(
                    here > 0,
                    "{rendition} is placed in {tier}, which holds nothing of it"
                );
            } else {
                assert_eq!(here, 0, "{rendition} (in {tier}) left objects in {name}");
            }
        }
    }
}

async fn transcoded(db: &TestDb, tiers: &Tiers) -> (AssetId, String) {
    transcoded_from(
        db,
        tiers,
        &fixtures_dir().join("landscape_1080p30_stereo.mp4"),
    )
    .await
}

async fn transcoded_from(
    db: &TestDb,
    tiers: &Tiers,
    source: &std::path::Path,
) -> (AssetId, String) {
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let (asset, playback) = cascade_ingest::import_file(&queue, tiers.hot(), source, Some("tiers"))
        .await
        .unwrap();
    eventually("the asset ready", Duration::from_secs(120), || async {
        let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
        assert_ne!(a.state, AssetState::Errored, "{:?}", a.error_message);
        (a.published_version == Some(1)).then_some(())
    })
    .await;
    (asset, format!("/play/{playback}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_move_between_buckets_while_served_and_end_in_one_tier_s3() {
    let db = fresh_db().await;
    let storage = two_buckets();
    let tiers = Tiers::from_config(&storage).await.unwrap();
    let stop = CancellationToken::new();
    start_worker(&db, &tiers, &stop);
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    assert!(placements(&db, asset).await.values().all(|t| t == "hot"));
    let published = play_everything(origin, &base).await;

    // To cold: the switch comes once every object is copied and checked;
    // the hot copy goes once no origin can still read it there. Then only
    // the cold bucket can be what the origin plays from.
    let moved = Instant::now();
    assert_eq!(
        tiering::request_moves(&db.pool, asset, "cold")
            .await
            .unwrap(),
        Some(3)
    );
    wait_in(&db, asset, "cold", Duration::from_secs(30)).await;
    println!("three renditions moved to cold in {:?}", moved.elapsed());
    assert_eq!(play_everything(origin, &base).await, published);
    wait_tiering_done(&db).await;
    assert_in_one_tier(&db, &tiers, asset).await;
    assert_eq!(play_everything(origin, &base).await, published);
    let placed = [("hot", 0), ("cold", 3)];
    assert_tiers_status_matches_the_stores(&db, &storage, &tiers, &placed).await;

    // Back to hot, one rendition's move superseded midway by nothing: the
    // same bytes are served throughout.
    moved_to(&db, asset, "hot").await;
    assert_eq!(play_everything(origin, &base).await, published);
    wait_tiering_done(&db).await;
    assert_in_one_tier(&db, &tiers, asset).await;

    // Deleted: nothing of it is left in either tier.
    moved_to(&db, asset, "cold").await;
    let environment = assets::get(&db.pool, asset)
        .await
        .unwrap()
        .unwrap()
        .environment_id;
    assets::delete(&db.pool, environment, asset, 20)
        .await
        .unwrap();
    eventually("the purge", Duration::from_secs(60), || async {
        let left = tiers
            .keys_everywhere(&ObjectKey::asset_prefix(asset))
            .await
            .unwrap();
        left.is_empty().then_some(())
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_anywhere_in_a_move_leaves_the_asset_playable_s3() {
    let db = fresh_db().await;
    let storage = two_buckets();
    let tiers = Tiers::from_config(&storage).await.unwrap();
    let stop = CancellationToken::new();
    let in_process = CancellationToken::new();
    start_worker(&db, &tiers, &in_process);
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    // From here on, moves run in worker processes this test kills.
    in_process.cancel();
    let published = play_everything(origin, &base).await;

    let env = killed_worker_env(&storage);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Kill points, each a state the worker is seen in: before it claims a
    // move, once it runs one, once one, two or all three renditions have
    // switched (the old copies not dropped yet). A move takes tens of
    // milliseconds here, so a state may be seen a little late.
    let kill_points = [
        KillPoint::Started,
        KillPoint::Claimed,
        KillPoint::Switched(1),
        KillPoint::Switched(2),
        KillPoint::Switched(3),
        KillPoint::Claimed,
    ];
    for (round, kill_point) in kill_points.into_iter().enumerate() {
        let to = if round % 2 == 0 { "cold" } else { "hot" };
        tiering::request_moves(&db.pool, asset, to).await.unwrap();
        let worker = CascadeProcess::serve(&db.url, "workers", &env);
        kill_point.reached(&db, asset, to).await;
        drop(worker); // SIGKILL
        let at_kill = placements(&db, asset).await;
        // Whatever the kill interrupted, the asset plays, byte for byte.
        assert_eq!(
            play_everything(origin, &base).await,
            published,
            "round {round}: killed at {kill_point:?} with {at_kill:?}"
        );
        let worker = CascadeProcess::serve(&db.url, "workers", &env);
        wait_in(&db, asset, to, Duration::from_secs(30)).await;
        assert_eq!(play_everything(origin, &base).await, published);
        println!(
            "round {round}: killed at {kill_point:?}, placed {at_kill:?}; the move to {to} finished"
        );
        if round == kill_points.len() - 1 {
            wait_tiering_done(&db).await;
        }
        drop(worker); // SIGKILL
    }
    assert_in_one_tier(&db, &tiers, asset).await;
    assert_eq!(play_everything(origin, &base).await, published);
    stop.cancel();
}

/// `cascade tiers status --json`, run as an operator would: per tier, the
/// objects and bytes the store holds, the renditions Postgres places there
/// (`renditions`: tier and count) and their monthly cost at the tier's
/// price; nothing for the policy to do (the renditions were moved by hand).
async fn assert_tiers_status_matches_the_stores(
    db: &TestDb,
    storage: &StorageConfig,
    tiers: &Tiers,
    renditions: &[(&str, u64)],
) {
    let output = std::process::Command::new(crate::common::cascade_bin())
        .args(["tiers", "status", "--json"])
        .env("CASCADE_DATABASE__URL", &db.url)
        .envs(killed_worker_env(storage))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (name, expected) in renditions {
        let row = status["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tier"] == *name)
            .unwrap_or_else(|| panic!("no row for {name}: {status}"));
        let tier = tiers.all().iter().find(|t| t.name == *name).unwrap();
        let listed = tier.store.list("assets/").await.unwrap();
        let bytes: u64 = listed.iter().map(|o| o.size).sum();
        assert_eq!(row["renditions"], *expected, "{status}");
        assert_eq!(row["objects"], listed.len(), "{status}");
        assert_eq!(row["bytes"], bytes, "{status}");
        let cost = row["monthly_cost"].as_f64().unwrap();
        let expected_cost = bytes as f64 / 1e9 * tier.price_per_gb_month;
        assert!((cost - expected_cost).abs() < 1e-12, "{status}");
    }
    assert_eq!(status["policy_next"], serde_json::json!([]), "{status}");
    assert_eq!(status["archive"]["archived"], 0, "{status}");
}

/// The environment of the worker processes the kill tests kill: the two
/// buckets, a short lease, quick retries.
fn killed_worker_env(storage: &StorageConfig) -> Vec<(&'static str, String)> {
    let hot = storage.s3.clone().unwrap();
    let cold = storage.tiers[0].s3.clone().unwrap();
    let endpoint = hot.endpoint.clone().unwrap();
    let key_id = hot.access_key_id.expose().to_owned();
    let secret = hot.secret_access_key.expose().to_owned();
    let tiers_env = format!(
        r#"[{{name = "cold", price_per_gb_month = 0.004, s3 = {{endpoint = "{endpoint}", bucket = "{}", access_key_id = "{key_id}", secret_access_key = "{secret}"}}}}]"#,
        cold.bucket
    );
    vec![
        ("CASCADE_STORAGE__S3__ENDPOINT", endpoint),
        ("CASCADE_STORAGE__S3__BUCKET", hot.bucket),
        ("CASCADE_STORAGE__S3__ACCESS_KEY_ID", key_id),
        ("CASCADE_STORAGE__S3__SECRET_ACCESS_KEY", secret),
        ("CASCADE_STORAGE__TIERS", tiers_env),
        ("CASCADE_QUEUE__LEASE", "\"2s\"".to_owned()),
        ("CASCADE_QUEUE__HEARTBEAT", "\"500ms\"".to_owned()),
        ("CASCADE_QUEUE__REAP_INTERVAL", "\"500ms\"".to_owned()),
        ("CASCADE_QUEUE__RETRY_BASE", "\"200ms\"".to_owned()),
        ("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\"".to_owned()),
    ]
}

/// Where in a move the kill test kills the worker.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as the process is up.
    Started,
    /// Once a move job of the asset is running.
    Claimed,
    /// Once this many renditions are in the target tier.
    Switched(usize),
}

impl KillPoint {
    /// Waits until the worker reaches this point of the move to `to`.
    async fn reached(self, db: &TestDb, asset: AssetId, to: &str) {
        // Claimed: a move of this round (the newest moves of the asset) is
        // running or already done, however fast it went.
        let claimed = format!(
            "SELECT count(*) FROM jobs WHERE kind = 'move_rendition' \
             AND state IN ('running', 'succeeded') AND payload->>'asset_id' = '{asset}' \
             AND payload->>'to' = '{to}' AND attempts > 0 \
             AND id > (SELECT coalesce(max(id), 0) FROM jobs WHERE kind = 'move_rendition' \
                       AND payload->>'asset_id' = '{asset}' AND payload->>'to' <> '{to}')"
        );
        match self {
            KillPoint::Started => {}
            KillPoint::Claimed => {
                eventually("a move claimed", Duration::from_secs(10), || async {
                    (count(db, &claimed).await > 0).then_some(())
                })
                .await
            }
            KillPoint::Switched(n) => {
                eventually("renditions switched", Duration::from_secs(10), || async {
                    let placed = placements(db, asset).await;
                    (placed.values().filter(|t| *t == to).count() >= n).then_some(())
                })
                .await
            }
        }
    }
}

/// The policy on a clock of seconds: renditions nobody watches go cold
/// (the top rung; the lowest video rung and the audio wait for the next
/// threshold),
/// and one that is watched again comes back hot by itself. The views that
/// drive it are the origin's, written in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_cools_idle_renditions_and_warms_watched_ones_s3() {
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&two_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    let policy = TierPolicyConfig {
        interval: Duration::from_secs(1),
        idle_after: vec![Duration::from_secs(3), Duration::from_secs(3600)],
        promote_views: 6,
        views_window: Duration::from_secs(4),
        keep_low_rungs_warmer: 1,
        max_moves_per_run: 100,
        archive_after: None,
        archive_source_tier: None,
    };
    start_worker_with_policy(&db, &tiers, &stop, Some(policy));
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    let published = play_everything(origin, &base).await;

    let cooled = Instant::now();
    let expected: BTreeMap<String, String> = [("240p", "hot"), ("480p", "cold"), ("audio", "hot")]
        .map(|(r, t)| (r.to_owned(), t.to_owned()))
        .into();
    eventually(
        "the idle top rung cooled",
        Duration::from_secs(30),
        || async { (placements(&db, asset).await == expected).then_some(()) },
    )
    .await;
    println!(
        "idle top rung moved to cold {:?} after playback",
        cooled.elapsed()
    );
    assert_eq!(play_everything(origin, &base).await, published);

    // Watched again: its segments fetched, counted, written, and the next
    // run brings it back.
    let segments: Vec<&String> = published
        .keys()
        .filter(|p| p.contains("/480p/") && p.ends_with(".m4s"))
        .collect();
    assert!(!segments.is_empty());
    let mut fetched = 0;
    let watched = Instant::now();
    while fetched < 12 {
        for path in &segments {
            assert_eq!(get(origin, path).await.status, 200);
            fetched += 1;
        }
    }
    eventually(
        "the watched rung back in hot",
        Duration::from_secs(30),
        || async { (placements(&db, asset).await["480p"] == "hot").then_some(()) },
    )
    .await;
    println!(
        "watched rung back in hot {:?} after {fetched} fetches began",
        watched.elapsed()
    );
    // Counted in batches: every fetch (two plays through before this, then
    // the ones above), in a row per second at most.
    let views_expected = fetched as i64 + 2 * segments.len() as i64;
    let rows = eventually("every fetch counted", Duration::from_secs(5), || async {
        let row = db
            .pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT coalesce(sum(views), 0)::int8, count(*) FROM media_views
                 WHERE asset_id = $1 AND rendition = '480p'",
                &[&asset.as_uuid()],
            )
            .await
            .unwrap();
        let (views, rows): (i64, i64) = (row.get(0), row.get(1));
        (views == views_expected).then_some(rows)
    })
    .await;
    assert!(
        rows < views_expected,
        "{rows} rows for {views_expected} views"
    );
    let viewed = count(
        &db,
        &format!("SELECT count(*) FROM assets WHERE id = '{asset}' AND last_viewed_at IS NOT NULL"),
    )
    .await;
    assert_eq!(viewed, 1);
    stop.cancel();
}

/// A rendition in a colder tier that players come back to is queued for
/// hot by the origin's next flush of its counts, without waiting for the
/// policy's next run (none runs here at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_watched_again_in_a_cold_tier_are_promoted_by_the_origins_counts_s3() {
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&two_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    start_worker(&db, &tiers, &stop);
    let promotion = cascade_origin::Promotion {
        promote_views: 20,
        window: Duration::from_secs(60),
    };
    let origin = start_origin_promoting(&db, &tiers, &stop, Some(promotion)).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    moved_to(&db, asset, "cold").await;
    // Handed back to the policy: no longer pinned in cold.
    assert!(tiering::unpin(&db.pool, asset).await.unwrap());
    let published = play_everything(origin, &base).await;
    let segments: Vec<&String> = published
        .keys()
        .filter(|p| p.contains("/240p/") && p.ends_with(".m4s"))
        .collect();
    // Fewer views than the rule asks for (one per segment, and three):
    // counted, and it stays cold.
    let one = segments[0];
    for _ in 0..3 {
        assert_eq!(get(origin, one).await.status, 200);
    }
    let few = segments.len() as i64 + 3;
    assert!(few < promotion.promote_views, "{few} views already");
    eventually("the few views written", Duration::from_secs(5), || async {
        let views = count(
            &db,
            &format!(
                "SELECT coalesce(sum(views), 0)::int8 FROM media_views \
                 WHERE asset_id = '{asset}' AND rendition = '240p'"
            ),
        )
        .await;
        (views == few).then_some(())
    })
    .await;
    assert_eq!(placements(&db, asset).await["240p"], "cold");
    let watched = Instant::now();
    for path in segments.iter().cycle().take(15) {
        assert_eq!(get(origin, path).await.status, 200);
    }
    eventually(
        "the watched rendition back in hot",
        Duration::from_secs(15),
        || async { (placements(&db, asset).await["240p"] == "hot").then_some(()) },
    )
    .await;
    println!(
        "promoted to hot {:?} after it was watched again",
        watched.elapsed()
    );
    let placed = placements(&db, asset).await;
    assert_eq!(
        placed["480p"], "cold",
        "{placed:?}: only what was watched moves"
    );
    assert_eq!(play_everything(origin, &base).await, published);
    stop.cancel();
}

/// The policy on a clock of seconds walks an asset hot -> warm -> cold ->
/// archive, and hls.js plays it through a CDN at every stage (a CDN of
/// its own each time, so the segments come from the tier the asset is
/// in); the archived asset played is restored and plays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_walks_an_asset_to_the_archive_and_hls_js_plays_it_at_every_stage_s3() {
    let _cores = crate::common::exclusive_cores().await;
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&three_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    let policy = TierPolicyConfig {
        interval: Duration::from_secs(1),
        idle_after: vec![Duration::from_secs(3), Duration::from_secs(6)],
        // Plays never promote here: the walk only goes down.
        promote_views: i64::MAX,
        views_window: Duration::from_secs(60),
        keep_low_rungs_warmer: 0,
        max_moves_per_run: 100,
        // Eight seconds after cold: a loaded machine needs several to
        // start the CDN and Chromium for the play at the cold stage (at 9 s
        // the asset was archived before hls.js asked for its master).
        archive_after: Some(Duration::from_secs(14)),
        archive_source_tier: None,
    };
    start_worker_with_policy(&db, &tiers, &stop, Some(policy));
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded_from(&db, &tiers, &bench_fixture()).await;
    let play = |poll: bool| {
        let base = base.clone();
        async move {
            let cdn = crate::origin::start_cdn(origin).await;
            let url = format!("http://{}{base}/master.m3u8", cdn.addr);
            let out = tokio::process::Command::new("node")
                .arg(repo_root().join("tests/players/play.mjs"))
                .args(["--player", "hls", "--url", &url, "--seconds", "4"])
                .args(if poll { &["--poll", "1"][..] } else { &[][..] })
                .output()
                .await;
            let report = crate::common::player_report("hls", out);
            assert!(report["fatal"].is_null(), "{report}");
            assert!(report["played"].as_f64().unwrap_or(0.0) >= 4.0, "{report}");
            drop(cdn);
            report
        }
    };
    let walk = Instant::now();
    assert!(placements(&db, asset).await.values().all(|t| t == "hot"));
    play(false).await;
    // What hls.js played is idle from the end of its play, the rest from
    // publication: the asset is warm once nothing is hot any more and the
    // renditions just played are warm (the others may be colder already).
    eventually(
        "nothing hot, the renditions played warm",
        Duration::from_secs(60),
        || async {
            let placed = placements(&db, asset).await;
            (!placed.values().any(|t| t == "hot") && placed.values().any(|t| t == "warm"))
                .then_some(())
        },
    )
    .await;
    println!("warm after {:?}", walk.elapsed());
    play(false).await;
    wait_in(&db, asset, "cold", Duration::from_secs(60)).await;
    println!("cold after {:?}", walk.elapsed());
    play(false).await;
    eventually("archived", Duration::from_secs(60), || async {
        let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
        (a.state == AssetState::Archived).then_some(())
    })
    .await;
    println!("archived after {:?}", walk.elapsed());
    // The player polls the master (503 until restored) and then plays.
    let report = play(true).await;
    let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
    // Restored from its source as version 2. On this clock (archived after
    // 14 s without plays) a loaded machine can archive the restored asset
    // again while the player runs, before its plays are counted, and the
    // player's next requests restore it once more: version 3 (seen once
    // in CI). Either way it is ready and played.
    assert_eq!(a.state, AssetState::Ready);
    assert!(
        a.published_version.is_some_and(|v| v >= 2),
        "{:?}",
        a.published_version
    );
    println!("restored and played after {:?}: {report}", walk.elapsed());
    stop.cancel();
}

/// The archive tier: an asset idle past `archive_after` keeps only its
/// source (moved to the coldest tier) and its renditions' objects go; a
/// play is answered 503 with `Retry-After` (never a 404 a CDN would keep)
/// and restores it as the next version, playable again, with webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_asset_is_archived_to_its_source_and_a_play_restores_it_s3() {
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&two_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    let policy = TierPolicyConfig {
        interval: Duration::from_secs(1),
        idle_after: vec![Duration::from_secs(3600)],
        archive_after: Some(Duration::from_secs(3)),
        ..TierPolicyConfig::default()
    };
    start_worker_with_policy(&db, &tiers, &stop, Some(policy));
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    let published = play_everything(origin, &base).await;
    let state = || async { assets::get(&db.pool, asset).await.unwrap().unwrap() };

    // Idle: archived by the policy; once no origin can still read them,
    // the version's objects are gone from every tier and the source is in
    // the coldest one only.
    let idle = Instant::now();
    eventually(
        "the idle asset archived",
        Duration::from_secs(30),
        || async { (state().await.state == AssetState::Archived).then_some(()) },
    )
    .await;
    println!("archived {:?} after its last play", idle.elapsed());
    let source = ObjectKey::source_version(asset, 1);
    eventually(
        "the archived version dropped, the source in cold",
        Duration::from_secs(60),
        || async {
            let left = tiers
                .keys_everywhere(&ObjectKey::version_prefix(asset, 1))
                .await
                .unwrap();
            let in_hot = tiers.hot().head(&source).await.is_ok();
            let in_cold = tiers.store("cold").unwrap().head(&source).await.is_ok();
            (left.is_empty() && !in_hot && in_cold).then_some(())
        },
    )
    .await;
    let source_tier = count(
        &db,
        &format!("SELECT count(*) FROM assets WHERE id = '{asset}' AND source_tier = 'cold'"),
    )
    .await;
    assert_eq!(source_tier, 1);
    assert_eq!(state().await.served_version(), None);

    // Played: 503 with Retry-After, not stored, and the restore queued
    // once however many plays come.
    let master = format!("{base}/master.m3u8");
    for _ in 0..3 {
        let reply = get(origin, &master).await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.header("retry-after"), Some("10"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.text().contains("asset_restoring"), "{}", reply.text());
        assert_eq!(state().await.state, AssetState::Restoring);
    }
    let segment = published
        .keys()
        .find(|p| p.ends_with(".m4s"))
        .unwrap()
        .clone();
    assert_eq!(get(origin, &segment).await.status, 503);
    let restore_jobs = count(
        &db,
        &format!(
            "SELECT count(*) FROM jobs WHERE kind = 'restore_asset' AND payload->>'asset_id' = '{asset}'"
        ),
    )
    .await;
    assert_eq!(restore_jobs, 1);

    // Rebuilt from the cold source as version 2: plays again, its objects
    // in hot, nothing left of version 1 or of the old source anywhere.
    let restoring = Instant::now();
    eventually("the asset restored", Duration::from_secs(120), || async {
        let a = state().await;
        assert_ne!(a.state, AssetState::Errored, "{:?}", a.error_message);
        (a.state == AssetState::Ready).then_some(a.published_version)
    })
    .await;
    println!("restored {:?} after the first play", restoring.elapsed());
    assert_eq!(state().await.published_version, Some(2));
    let replayed = play_everything(origin, &base).await;
    assert_eq!(replayed.len(), published.len());
    let v2 = tiers
        .hot()
        .list(&ObjectKey::version_prefix(asset, 2))
        .await
        .unwrap();
    assert!(
        v2.len() >= replayed.len(),
        "{} objects of version 2",
        v2.len()
    );
    for tier in tiers.all() {
        assert!(
            tier.store.head(&source).await.is_err(),
            "old source in {}",
            tier.name
        );
        let v1 = tier
            .store
            .list(&ObjectKey::version_prefix(asset, 1))
            .await
            .unwrap();
        assert!(v1.is_empty(), "version 1 objects left in {}", tier.name);
    }
    tiers
        .hot()
        .head(&ObjectKey::source_version(asset, 2))
        .await
        .unwrap();
    let events = |kind: &str| {
        format!(
            "SELECT count(*) FROM jobs WHERE kind = 'webhook' AND payload->>'type' = '{kind}' \
             AND payload->'data'->>'asset_id' = '{asset}'"
        )
    };
    assert_eq!(count(&db, &events("asset.archived")).await, 1);
    assert_eq!(count(&db, &events("asset.restored")).await, 1);

    // Archived again (version 2 keeps its source under its own prefix:
    // dropping the version's objects must leave it), and its source then
    // lost from the archive: the
    // play's restore fails, and the asset turns errored with a message for
    // the creator instead of staying `restoring` (503) for ever.
    let source_v2 = ObjectKey::source_version(asset, 2);
    let cold = tiers.store("cold").unwrap();
    eventually(
        "archived again, the source in cold",
        Duration::from_secs(60),
        || async {
            let archived = state().await.state == AssetState::Archived;
            let in_cold = cold.head(&source_v2).await.is_ok();
            let in_hot = tiers.hot().head(&source_v2).await.is_ok();
            (archived && in_cold && !in_hot).then_some(())
        },
    )
    .await;
    cold.delete(&source_v2).await.unwrap();
    assert_eq!(get(origin, &master).await.status, 503);
    let failed = eventually("the restore failed", Duration::from_secs(60), || async {
        let a = state().await;
        (a.state == AssetState::Errored).then_some(a)
    })
    .await;
    assert_eq!(failed.error_code.as_deref(), Some("restore_failed"));
    let message = failed.error_message.unwrap_or_default();
    assert!(message.contains("Upload it again"), "{message}");
    assert_eq!(failed.published_version, None);
    let reply = get(origin, &master).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(count(&db, &events("asset.errored")).await, 1);
    stop.cancel();
}

/// hls.js in Chromium plays through the nginx CDN while the asset's
/// renditions move hot -> cold -> hot -> cold under it; then the asset is
/// archived (the CDN purged of it), and a player that asks for it again is
/// answered 503 until the restore is done, and then plays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_through_the_cdn_while_renditions_move_and_after_a_restore_s3() {
    let _cores = crate::common::exclusive_cores().await;
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&two_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    let origin = start_origin(&db, &tiers, &stop).await;
    let purge = SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    let cdn = start_cdn_purged_at(origin, purge).await;
    start_worker_purging(
        &db,
        &tiers,
        &stop,
        None,
        CdnConfig {
            purge_urls: vec![format!("http://{purge}").parse().unwrap()],
            ..CdnConfig::default()
        },
    );
    let (asset, base) = transcoded_from(&db, &tiers, &bench_fixture()).await;
    let url = format!("http://{}{base}/master.m3u8", cdn.addr);
    let play = |poll: bool| {
        let url = url.clone();
        async move {
            let out = tokio::process::Command::new("node")
                .arg(repo_root().join("tests/players/play.mjs"))
                .args(["--player", "hls", "--url", &url, "--seconds", "8"])
                .args(if poll { &["--poll", "1"][..] } else { &[][..] })
                .output()
                .await;
            crate::common::player_report("hls", out)
        }
    };

    // Moves under a playing hls.js: every segment it fetches comes through
    // the CDN from whichever tier holds the rendition at that moment.
    let player = tokio::spawn(play(false));
    let mut moves = 0;
    for tier in ["cold", "hot", "cold"] {
        moved_to(&db, asset, tier).await;
        moves += 1;
    }
    let report = player.await.unwrap();
    assert!(report["fatal"].is_null(), "{report}");
    assert!(report["played"].as_f64().unwrap_or(0.0) >= 8.0, "{report}");
    println!("hls.js played through {moves} moves: {report}");
    wait_tiering_done(&db).await;
    assert_in_one_tier(&db, &tiers, asset).await;

    // Archived: the CDN no longer serves it (purged), nothing is stored
    // but the source.
    let client = db.pool.get().await.unwrap();
    assert!(cascade_platform::archive::request_archive(&client, asset)
        .await
        .unwrap());
    eventually("archived and dropped", Duration::from_secs(60), || async {
        let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
        let left = tiers
            .keys_everywhere(&ObjectKey::version_prefix(asset, 1))
            .await
            .unwrap();
        let dropped = count(
            &db,
            &format!(
                "SELECT count(*) FROM jobs WHERE kind = 'drop_archived' AND state = 'succeeded' \
                     AND payload->>'asset_id' = '{asset}'"
            ),
        )
        .await;
        (a.state == AssetState::Archived && left.is_empty() && dropped == 1).then_some(())
    })
    .await;
    let reply = get(cdn.addr, &format!("{base}/master.m3u8")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());

    // The player polls the master (503 until restored) and then plays.
    let report = play(true).await;
    assert!(report["fatal"].is_null(), "{report}");
    assert!(report["played"].as_f64().unwrap_or(0.0) >= 8.0, "{report}");
    let a = assets::get(&db.pool, asset).await.unwrap().unwrap();
    assert_eq!((a.state, a.published_version), (AssetState::Ready, Some(2)));
    println!("hls.js played the restored asset: {report}");
    drop(cdn);
    stop.cancel();
}

/// SIGKILL of the worker process at points of an archive and a restore,
/// each a state seen in Postgres: whatever was interrupted, the asset
/// plays (200) or answers that it is restoring (503, never a 404), the
/// restarted worker finishes the step, and at the end every object is in
/// exactly one place: version 2 and its source in hot, nothing left of
/// version 1 or of the old source in any tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_anywhere_in_an_archive_or_restore_loses_nothing_s3() {
    let db = fresh_db().await;
    let storage = two_buckets();
    let tiers = Tiers::from_config(&storage).await.unwrap();
    let stop = CancellationToken::new();
    let in_process = CancellationToken::new();
    start_worker(&db, &tiers, &in_process);
    let origin = start_origin(&db, &tiers, &stop).await;
    let (asset, base) = transcoded(&db, &tiers).await;
    in_process.cancel();
    play_everything(origin, &base).await;
    let env = killed_worker_env(&storage);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let master = format!("{base}/master.m3u8");
    // The jobs of a kind for this asset (transcodes: of version 2).
    let jobs = |kind: &str, condition: &str| {
        let version = if kind == "transcode" {
            "AND payload->>'version' = '2'"
        } else {
            ""
        };
        format!(
            "SELECT count(*) FROM jobs WHERE kind = '{kind}' AND {condition} \
             AND payload->>'asset_id' = '{asset}' {version}"
        )
    };
    let state = || async { assets::get(&db.pool, asset).await.unwrap().unwrap().state };
    // Each round: the worker is killed once a job of the kind is claimed,
    // and the restarted one must finish it.
    let client = db.pool.get().await.unwrap();
    assert!(cascade_platform::archive::request_archive(&client, asset)
        .await
        .unwrap());
    let rounds = [
        "archive_asset",
        "drop_archived",
        "restore_asset",
        "transcode",
    ];
    for (round, killed_in) in rounds.into_iter().enumerate() {
        let worker = CascadeProcess::serve(&db.url, "workers", &env);
        let kill_at = jobs(killed_in, "attempts > 0");
        eventually(
            &format!("{killed_in} claimed"),
            Duration::from_secs(60),
            || async { (count(&db, &kill_at).await > 0).then_some(()) },
        )
        .await;
        drop(worker); // SIGKILL
        let at_kill = state().await;
        // Played: a ready asset plays, a restoring one answers 503. (An
        // archived one is not played here: that would begin its restore,
        // which comes after round 1.)
        if at_kill != AssetState::Archived {
            let reply = get(origin, &master).await;
            let expected = if at_kill == AssetState::Ready {
                200
            } else {
                503
            };
            assert_eq!(
                reply.status,
                expected,
                "round {round}: killed in {killed_in}, {at_kill:?}: {}",
                reply.text()
            );
        }
        // The restarted worker finishes the step.
        let worker = CascadeProcess::serve(&db.url, "workers", &env);
        let done = jobs(killed_in, "state = 'succeeded'");
        eventually(
            &format!("{killed_in} done after the kill"),
            Duration::from_secs(120),
            || async { (count(&db, &done).await > 0).then_some(()) },
        )
        .await;
        println!("round {round}: killed in {killed_in} ({at_kill:?}); finished after a restart");
        if round == 1 {
            // Archived for good: nothing of version 1 but its source, in cold.
            assert_eq!(state().await, AssetState::Archived);
            assert!(tiers
                .keys_everywhere(&ObjectKey::version_prefix(asset, 1))
                .await
                .unwrap()
                .is_empty());
            // Played: the restore is queued for the next rounds.
            assert_eq!(get(origin, &master).await.status, 503);
        }
        drop(worker); // SIGKILL
    }
    let worker = CascadeProcess::serve(&db.url, "workers", &env);
    eventually("restored", Duration::from_secs(120), || async {
        (state().await == AssetState::Ready).then_some(())
    })
    .await;
    assert_eq!(get(origin, &master).await.status, 200);
    play_everything(origin, &base).await;
    let everywhere = tiers
        .keys_everywhere(&ObjectKey::asset_prefix(asset))
        .await
        .unwrap();
    let v2 = ObjectKey::version_prefix(asset, 2);
    let source_v2 = ObjectKey::source_version(asset, 2);
    for key in &everywhere {
        let key = key.as_str();
        assert!(
            key.starts_with(&v2) || key == source_v2.as_str(),
            "left over: {key}"
        );
    }
    let cold = tiers
        .store("cold")
        .unwrap()
        .list(&ObjectKey::asset_prefix(asset))
        .await
        .unwrap();
    assert!(cold.is_empty(), "left in cold: {cold:?}");
    drop(worker);
    stop.cancel();
}

/// Deleting an asset whose published renditions are in the cold tier while
/// its replacement's transcode writes to hot: the transcode stops, and
/// once it has, nothing of the asset is left in any tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_during_a_transcode_leaves_nothing_in_any_tier_s3() {
    let db = fresh_db().await;
    let tiers = Tiers::from_config(&two_buckets()).await.unwrap();
    let stop = CancellationToken::new();
    start_worker(&db, &tiers, &stop);
    let (asset, _) = transcoded(&db, &tiers).await;
    moved_to(&db, asset, "cold").await;

    // A replacement (a longer source), its transcode writing version 2 to hot.
    let environment = assets::get(&db.pool, asset)
        .await
        .unwrap()
        .unwrap()
        .environment_id;
    let claim = assets::SourceClaim {
        id: uuid::Uuid::new_v4(),
        hold: Duration::from_secs(60),
    };
    let client = db.pool.get().await.unwrap();
    let version = assets::claim_replacement(&client, environment, asset, claim)
        .await
        .unwrap()
        .unwrap();
    let source = tokio::fs::read(bench_fixture()).await.unwrap();
    tiers
        .hot()
        .put_bytes(
            &ObjectKey::source_version(asset, version),
            bytes::Bytes::from(source),
        )
        .await
        .unwrap();
    assert!(
        assets::start_replacement(&client, asset, claim.id, version, None)
            .await
            .unwrap()
    );
    Queue::new(db.pool.clone(), db.config.queue.clone())
        .enqueue(
            &cascade_platform::NewJob::new(
                job_kind::TRANSCODE,
                serde_json::json!({ "asset_id": asset, "version": version }),
            )
            .idempotency_key(format!("{asset}/v{version}")),
        )
        .await
        .unwrap();
    let writing = ObjectKey::version_prefix(asset, version);
    eventually(
        "the replacement's segments being written",
        Duration::from_secs(60),
        || async {
            let written = tiers.hot().list(&writing).await.unwrap();
            (!written.is_empty()).then_some(())
        },
    )
    .await;

    assets::delete(&db.pool, environment, asset, 20)
        .await
        .unwrap();
    eventually(
        "the transcode stopped and the purge done",
        Duration::from_secs(60),
        || async {
            let live = count(
                &db,
                &format!(
                    "SELECT count(*) FROM jobs WHERE kind = 'transcode' AND state IN ('queued', 'running') \
                     AND payload->>'asset_id' = '{asset}'"
                ),
            )
            .await;
            let purged = count(
                &db,
                &format!(
                    "SELECT count(*) FROM jobs WHERE kind = 'purge_asset' AND state = 'succeeded' \
                     AND payload->>'asset_id' = '{asset}'"
                ),
            )
            .await;
            (live == 0 && purged == 1).then_some(())
        },
    )
    .await;
    let left = tiers
        .keys_everywhere(&ObjectKey::asset_prefix(asset))
        .await
        .unwrap();
    assert!(left.is_empty(), "left after the purge: {left:?}");
    stop.cancel();
}
