//! `cascade bench tiers`: the tiering policy on a simulated catalogue.
//!
//! Thousands of small published assets (three renditions each, segment
//! sizes in the ladder's proportions, ages spread over the policy's idle
//! times) in three tiers (`hot`, `warm`, `cold`: buckets of their own on
//! the configured S3 store, or directories), an origin and a worker in this
//! process with the policy on a clock of seconds, and players replaying a
//! Zipf-like popularity against the origin for a bounded time. Prints the
//! bytes per tier, the share of segment requests served from `hot`, the
//! estimated monthly cost against keeping everything hot, and the policy's
//! run time per 10,000 assets; exits 1 when a target is missed (at least
//! 60% cheaper while at least 95% of plays hit `hot`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use cascade_platform::config::{
    ByteSize, OriginConfig, PlaybackConfig, StorageConfig, TierConfig, TierPolicyConfig,
};
use cascade_platform::playback_token::Keyring;
use cascade_platform::queue::JobNotifier;
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::{db, environments, tiering, Config, Queue};
use cascade_schemas::{AssetId, ObjectKey, PlaybackId, RenditionName};
use cascade_workers::tiering::{policy_tier, register, schedule_policy};
use cascade_workers::{HandlerRegistry, Runner};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

/// `cascade bench tiers` options.
#[derive(Debug, Args)]
pub struct TiersBenchArgs {
    /// Assets in the simulated catalogue.
    #[arg(long, default_value_t = 2000)]
    assets: usize,
    /// Exponent of the Zipf-like popularity (plays of the asset ranked r
    /// proportional to 1 / r^s). The default makes the top 3.7% of the
    /// catalogue draw 93% of the plays, as measured on a random sample of
    /// YouTube videos (3.7% of them drew 94% of the views: Zuckerman et
    /// al., 2023); `1.0` is a flatter catalogue (the top 10% draw 72%).
    #[arg(long, default_value_t = 1.5)]
    zipf: f64,
    /// Plays per second replayed against the origin.
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// Seconds of replay before measuring (the policy settles: three
    /// "days" by default).
    #[arg(long, default_value_t = 90)]
    warmup: u64,
    /// Seconds of replay measured.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The policy's "day", in seconds: idle one of these, a rendition goes
    /// warm; three, cold. Long enough that what takes real time (the
    /// origins' flush of their counts, a move) is as small a part of a
    /// "day" as it is of a real one.
    #[arg(long, default_value_t = 30)]
    day: u64,
}

/// The simulated ladder: name, share of the video plays, bytes per segment
/// (5 Mbit/s, 1.2 Mbit/s and 128 kbit/s over 2 s, scaled down 50x).
const RENDITIONS: [(&str, f64, usize); 3] = [
    ("1080p", 0.6, 25_000),
    ("480p", 0.4, 6_000),
    ("audio", 0.0, 640),
];
/// Segments per rendition.
const SEGMENTS: u64 = 4;
/// What each tier costs per GB-month (S3 Standard, Standard-IA, Glacier IR).
const PRICES: [(&str, f64); 3] = [("hot", 0.023), ("warm", 0.0125), ("cold", 0.004)];

/// Runs the benchmark.
pub async fn run(args: TiersBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // A database of its own (the policy places every asset it finds), with
    // room for 32 moves at once beside the origin's lookups.
    let (database, scratch_db) = scratch_database(&config).await?;
    let mut config = config;
    config.database = database;
    config.database.max_connections = config.database.max_connections.max(48);
    let pool = db::pool(&config.database)?;
    db::migrate(&pool)
        .await
        .context("migrating the bench database")?;
    let outcome = measure(&args, &config, &pool, started).await;
    pool.close();
    scratch_db.drop_it().await;
    outcome
}

async fn measure(
    args: &TiersBenchArgs,
    config: &Config,
    pool: &deadpool_postgres::Pool,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir()?;
    let storage = bench_storage(&config.storage, scratch.path());
    let tiers = Tiers::from_config(&storage)
        .await
        .context("opening the bench's storage tiers")?;
    let policy = TierPolicyConfig {
        interval: Duration::from_secs(1),
        idle_after: vec![
            Duration::from_secs(args.day),
            Duration::from_secs(3 * args.day),
        ],
        promote_views: 2,
        views_window: Duration::from_secs(args.day),
        keep_low_rungs_warmer: 1,
        max_moves_per_run: 5000,
        // The seeded catalogue has no sources to rebuild from.
        archive_after: None,
        archive_source_tier: None,
    };

    // The catalogue: rows, then objects.
    let catalogue = seed(pool, &tiers, args.assets, args.day).await?;
    println!(
        "catalogue: {} assets x {} renditions x {SEGMENTS} segments seeded in {:.1} s",
        catalogue.len(),
        RENDITIONS.len(),
        started.elapsed().as_secs_f64()
    );

    // How long one policy evaluation takes over the catalogue.
    let names: Vec<String> = tiers.all().iter().map(|t| t.name.clone()).collect();
    let evaluated = Instant::now();
    let inputs = tiering::policy_inputs(&pool.get().await?, policy.views_window).await?;
    let decided = inputs
        .iter()
        .filter(|i| policy_tier(i, &policy, &names) != i.tier)
        .count();
    let policy_seconds = evaluated.elapsed().as_secs_f64();
    let per_10k = policy_seconds * 10_000.0 / args.assets.max(1) as f64;

    let stop = CancellationToken::new();
    let policy_stop = CancellationToken::new();
    let promotion = cascade_origin::Promotion {
        promote_views: policy.promote_views,
        window: policy.views_window,
    };
    let origin = start_origin(config, pool, &tiers, promotion, &stop).await?;
    start_worker(config, pool, &tiers, policy.clone(), &stop, &policy_stop)?;

    // Players: warm-up, then the measured window.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let weights = zipf_weights(catalogue.len(), args.zipf);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    replay(
        &client,
        origin.addr,
        &catalogue,
        &weights,
        args.rate,
        args.warmup,
        &mut rng,
    )
    .await?;
    // The first runs move most of the catalogue at once (it starts all
    // hot); measured is the steady state after that wave, not the wave.
    let waited = Instant::now();
    loop {
        let moving = unfinished_jobs(pool, &["move_rendition"]).await?;
        if moving * 100 < (catalogue.len() * RENDITIONS.len()) as i64
            || waited.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        replay(
            &client,
            origin.addr,
            &catalogue,
            &weights,
            args.rate,
            5,
            &mut rng,
        )
        .await?;
    }
    println!(
        "warm-up: {} s, then {:.0} s until the first moves were done",
        args.warmup,
        waited.elapsed().as_secs_f64()
    );
    let before = origin.state.segments_served_by_tier();
    // What is stored where during the measured window (a month's bill
    // charges the bytes held through it, not at its end): the placement
    // Postgres records, sampled every second.
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample_placement(pool.clone(), sampling.clone()));
    let failed = replay(
        &client,
        origin.addr,
        &catalogue,
        &weights,
        args.rate,
        args.seconds,
        &mut rng,
    )
    .await?;
    let after = origin.state.segments_served_by_tier();
    sampling.cancel();
    let held = sampler.await??;
    // Where the renditions are at the end of the window, by popularity rank.
    let placed: Vec<(uuid::Uuid, String)> = pool
        .get()
        .await?
        .query("SELECT asset_id, tier FROM renditions", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rank_of: std::collections::HashMap<uuid::Uuid, usize> = catalogue
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.as_uuid(), i + 1))
        .collect();
    let bands = [10, 50, 125, 500, usize::MAX];
    let mut outside_hot = [(0u32, 0u32); 5];
    for (asset, tier) in &placed {
        let rank = rank_of.get(asset).copied().unwrap_or(usize::MAX);
        let band = bands.iter().position(|b| rank <= *b).unwrap_or(4);
        outside_hot[band].1 += 1;
        if tier != "hot" {
            outside_hot[band].0 += 1;
        }
    }
    // The bytes are counted once the moves under way and the drops of the
    // copies they left (10 s after each switch) are done.
    policy_stop.cancel();
    let settled = Instant::now();
    loop {
        let busy =
            unfinished_jobs(pool, &["move_rendition", "drop_tier_copy", "tier_policy"]).await?;
        if busy == 0 {
            break;
        }
        anyhow::ensure!(
            settled.elapsed() < Duration::from_secs(120),
            "{busy} tiering jobs still queued or running after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();

    let served: Vec<(String, u64)> = after
        .iter()
        .zip(&before)
        .map(|((name, a), (_, b))| (name.clone(), a - b))
        .collect();
    let total_served: u64 = served.iter().map(|(_, n)| n).sum();
    let hot_share = served
        .first()
        .map_or(0.0, |(_, n)| *n as f64 / total_served.max(1) as f64);

    // Once settled, the stores hold exactly what Postgres places in them.
    let mut stored_by_tier = BTreeMap::new();
    for tier in tiers.all() {
        let listed = tier.store.list("assets/").await?;
        stored_by_tier.insert(
            tier.name.clone(),
            listed.iter().map(|o| o.size).sum::<u64>(),
        );
    }
    let placed_by_tier = placement_bytes(pool).await?;
    for (tier, stored) in &stored_by_tier {
        let placed = placed_by_tier.get(tier).copied().unwrap_or(0);
        anyhow::ensure!(
            *stored == placed,
            "tier {tier} stores {stored} bytes, Postgres places {placed} there"
        );
    }
    let bytes_by_tier = held;
    let total_bytes: u64 = bytes_by_tier.values().sum();
    let price = |tier: &str| {
        PRICES
            .iter()
            .find(|(n, _)| *n == tier)
            .map_or(0.0, |(_, p)| *p)
    };
    let cost: f64 = bytes_by_tier
        .iter()
        .map(|(tier, bytes)| *bytes as f64 / 1e9 * price(tier))
        .sum();
    let all_hot = total_bytes as f64 / 1e9 * price("hot");
    let saving = 1.0 - cost / all_hot.max(f64::MIN_POSITIVE);

    println!(
        "zipf exponent {}, {} plays/s, a {} s \"day\", {} s measured after {} s",
        args.zipf, args.rate, args.day, args.seconds, args.warmup
    );
    println!("bytes per tier, averaged over the measured window:");
    for (tier, bytes) in &bytes_by_tier {
        let share = *bytes as f64 / total_bytes.max(1) as f64 * 100.0;
        println!(
            "tier {tier:<5} {bytes:>12} bytes ({share:5.1}%), ${:.6}/month at ${}/GB-month",
            *bytes as f64 / 1e9 * price(tier),
            price(tier)
        );
    }
    for (tier, n) in &served {
        println!("segments served from {tier:<5} {n:>8}");
    }
    let mut from = 1;
    for (band, (outside, all)) in bands.iter().zip(outside_hot) {
        let to = if *band == usize::MAX {
            "last".to_owned()
        } else {
            band.to_string()
        };
        println!("popularity ranks {from}-{to}: {outside} of {all} renditions outside hot");
        from = band.saturating_add(1);
    }
    if failed > 0 {
        println!("failed requests: {failed}");
    }
    println!(
        "policy evaluation: {:.3} s for {} assets ({decided} moves decided at start): {:.3} s per 10,000 assets",
        policy_seconds,
        args.assets,
        per_10k
    );
    let saving_ok = saving >= 0.60;
    let hot_ok = hot_share >= 0.95;
    println!(
        "monthly cost {:.1}% below keeping everything hot (target >= 60%): {}",
        saving * 100.0,
        if saving_ok { "met" } else { "MISSED" }
    );
    println!(
        "plays served from hot: {:.1}% (target >= 95%): {}",
        hot_share * 100.0,
        if hot_ok { "met" } else { "MISSED" }
    );
    let ok = saving_ok && hot_ok && failed == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The bench's own database beside the configured one (same cluster and
/// credentials), dropped at the end.
struct ScratchDatabase {
    admin: tokio_postgres::Client,
    name: String,
}

impl ScratchDatabase {
    async fn drop_it(self) {
        let dropped = self
            .admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
        if let Err(error) = dropped {
            eprintln!("bench: could not drop database {}: {error}", self.name);
        }
    }
}

async fn scratch_database(
    config: &Config,
) -> anyhow::Result<(cascade_platform::config::DatabaseConfig, ScratchDatabase)> {
    let (admin, connection) = db::pg_config(&config.database)?
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to Postgres")?;
    tokio::spawn(connection);
    let name = format!("bench_tiers_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("creating the bench's database (run it through scripts/stack.sh)")?;
    let url = config.database.url.expose();
    let base = url.split('?').next().unwrap_or(url);
    let (server, _) = base
        .rsplit_once('/')
        .context("database.url names no database")?;
    let mut database = config.database.clone();
    database.url = cascade_platform::config::Secret::new(format!("{server}/{name}"));
    Ok((database, ScratchDatabase { admin, name }))
}

/// Three tiers of the bench's own: buckets on the configured S3 store, or
/// directories under `scratch`.
fn bench_storage(configured: &StorageConfig, scratch: &std::path::Path) -> StorageConfig {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let place = |name: &str| match &configured.s3 {
        Some(s3) => {
            let mut s3 = s3.clone();
            s3.bucket = format!("bench-tiers-{}-{name}", &run[..8]);
            (None, Some(s3))
        }
        None => (Some(scratch.join(name)), None),
    };
    let (local_root, s3) = place("hot");
    let tiers = ["warm", "cold"]
        .into_iter()
        .map(|name| {
            let (local_root, s3) = place(name);
            TierConfig {
                name: name.to_owned(),
                local_root,
                s3,
                price_per_gb_month: PRICES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, p)| *p),
            }
        })
        .collect();
    StorageConfig {
        local_root: local_root.unwrap_or_default(),
        s3,
        tiers,
        ..configured.clone()
    }
}

/// One asset of the catalogue.
struct Asset {
    id: AssetId,
    playback: PlaybackId,
}

/// Jobs of `kinds` queued or running.
async fn unfinished_jobs(pool: &deadpool_postgres::Pool, kinds: &[&str]) -> anyhow::Result<i64> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM jobs WHERE kind = ANY($1) AND state IN ('queued', 'running')",
            &[&kinds],
        )
        .await?
        .get(0))
}

/// Writes the catalogue's rows (published, ages spread over four "days")
/// and its segments into `hot`.
async fn seed(
    pool: &deadpool_postgres::Pool,
    tiers: &Tiers,
    count: usize,
    day: u64,
) -> anyhow::Result<Vec<Asset>> {
    let client = pool.get().await?;
    let environment = environments::ensure(&client, "bench-tiers").await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let catalogue: Vec<Asset> = (0..count)
        .map(|_| Asset {
            id: AssetId::new(),
            playback: PlaybackId::new(),
        })
        .collect();
    let ids: Vec<uuid::Uuid> = catalogue.iter().map(|a| a.id.as_uuid()).collect();
    let playbacks: Vec<String> = catalogue.iter().map(|a| a.playback.to_string()).collect();
    let ages: Vec<f64> = (0..count)
        .map(|_| rng.random_range(0.0..(4 * day) as f64))
        .collect();
    client
        .execute(
            "INSERT INTO assets (id, environment_id, playback_id, state, published_version,
                                 source_version, progress, duration_seconds)
             SELECT id, $2, pid, 'ready', 1, 1, 100, 8 FROM unnest($1::uuid[], $3::text[]) AS t(id, pid)",
            &[&ids, &environment.as_uuid(), &playbacks],
        )
        .await?;
    for (name, _, size) in RENDITIONS {
        let (kind, height) = match name {
            "audio" => ("audio", None),
            other => ("video", other.trim_end_matches('p').parse::<i32>().ok()),
        };
        client
            .execute(
                "INSERT INTO renditions (asset_id, version, name, kind, codecs, height, bandwidth,
                                         average_bandwidth, segment_count, encoder, published_at)
                 SELECT id, 1, $2, $3, 'avc1.640028', $4, $5, $5, $6, 'bench',
                        now() - make_interval(secs => age)
                 FROM unnest($1::uuid[], $7::float8[]) AS t(id, age)",
                &[
                    &ids,
                    &name,
                    &kind,
                    &height,
                    &((size * 4) as i64),
                    &(SEGMENTS as i32),
                    &ages,
                ],
            )
            .await?;
    }
    drop(client);
    let hot = tiers.hot().clone();
    let objects = catalogue.iter().flat_map(|asset| {
        RENDITIONS.iter().flat_map(move |(name, _, size)| {
            (0..SEGMENTS).map(move |seq| (asset.id, *name, *size, seq))
        })
    });
    futures::stream::iter(objects)
        .map(|(asset, name, size, seq)| {
            let hot = hot.clone();
            async move {
                let rendition = RenditionName::new(name)?;
                let key = ObjectKey::media_segment(asset, 1, &rendition, seq);
                hot.put_bytes(&key, Bytes::from(vec![seq as u8; size]))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(catalogue)
}

struct Origin {
    addr: SocketAddr,
    state: cascade_origin::OriginState,
}

/// The origin over the bench's tiers, counting views every 200 ms in
/// buckets of a second, with no front cache (every segment request is
/// counted by the tier it was served from).
async fn start_origin(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    tiers: &Tiers,
    promotion: cascade_origin::Promotion,
    stop: &CancellationToken,
) -> anyhow::Result<Origin> {
    let state = cascade_origin::OriginState::with_tiers(
        OriginConfig {
            front_cache_bytes: ByteSize(0),
            cache_capacity: ByteSize::mib(16),
            view_flush_interval: Duration::from_millis(200),
            view_bucket: Duration::from_secs(1),
            ..config.origin.clone()
        },
        Keyring::from_config(&PlaybackConfig::default()),
        pool.clone(),
        tiers.clone(),
    );
    state.follow_changes(db::pg_config(&config.database)?, stop.clone());
    state.count_views(stop.clone(), Some(promotion));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = cascade_origin::router(state.clone());
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    Ok(Origin { addr, state })
}

/// A worker running moves, drops and the policy.
fn start_worker(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    tiers: &Tiers,
    policy: TierPolicyConfig,
    stop: &CancellationToken,
    policy_stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut queue_config = config.queue.clone();
    queue_config.concurrency = 32;
    queue_config.poll_interval = Duration::from_millis(200);
    let queue = Queue::new(pool.clone(), queue_config);
    let notifier = JobNotifier::start(db::pg_config(&config.database)?, stop.clone());
    tokio::spawn(schedule_policy(
        queue.clone(),
        policy.interval,
        policy_stop.clone(),
    ));
    let handlers = register(HandlerRegistry::new(), &queue, tiers, Some(policy));
    let runner = Runner::new(queue, handlers, notifier, "bench-tiers");
    tokio::spawn(runner.run(stop.clone()));
    Ok(())
}

/// Bytes of media per tier as Postgres places the renditions (each
/// rendition's segments are its ladder size).
async fn placement_bytes(pool: &deadpool_postgres::Pool) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT tier, name, count(*) FROM renditions GROUP BY tier, name",
            &[],
        )
        .await?;
    let mut bytes = BTreeMap::new();
    for row in &rows {
        let (tier, name, count): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let size = RENDITIONS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(0, |(_, _, size)| *size as u64);
        *bytes.entry(tier).or_default() += size * SEGMENTS * u64::try_from(count).unwrap_or(0);
    }
    Ok(bytes)
}

/// The mean of [`placement_bytes`] sampled every second until `stop`.
async fn sample_placement(
    pool: deadpool_postgres::Pool,
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (tier, bytes) in placement_bytes(&pool).await? {
            *sums.entry(tier).or_default() += bytes;
        }
        samples += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(tier, sum)| (tier, sum / samples.max(1)))
        .collect())
}

/// Cumulative Zipf weights over `n` ranks (rank 1 the most played).
fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    let mut total = 0.0;
    (1..=n)
        .map(|rank| {
            total += 1.0 / (rank as f64).powf(s);
            total
        })
        .collect()
}

/// Replays plays at `rate` per second for `seconds`: each play fetches a
/// segment of one video rendition and of the audio of an asset drawn by
/// popularity (at most 256 requests in flight). The number of failed
/// requests.
async fn replay(
    client: &reqwest::Client,
    origin: SocketAddr,
    catalogue: &[Asset],
    weights: &[f64],
    rate: u32,
    seconds: u64,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<u64> {
    let total = weights.last().copied().unwrap_or(1.0);
    let plays = u64::from(rate) * seconds;
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plays {
        pace.tick().await;
        let drawn = rng.random_range(0.0..total);
        let index = weights
            .partition_point(|w| *w < drawn)
            .min(catalogue.len() - 1);
        let asset = &catalogue[index];
        let video = if rng.random_bool(RENDITIONS[0].1) {
            RENDITIONS[0].0
        } else {
            RENDITIONS[1].0
        };
        let seq = rng.random_range(0..SEGMENTS);
        for rendition in [video, "audio"] {
            let url = format!(
                "http://{origin}/play/{}/v1/{rendition}/{seq}.m4s",
                asset.playback
            );
            let (client, failed) = (client.clone(), failed.clone());
            let permit = slots.clone().acquire_owned().await?;
            tasks.spawn(async move {
                let ok = matches!(client.get(url).send().await, Ok(r) if r.status().is_success());
                if !ok {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(failed.load(std::sync::atomic::Ordering::Relaxed))
}
