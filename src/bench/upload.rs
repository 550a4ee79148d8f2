//! `cascade bench upload`: a generated file (1 GiB by default) through the
//! ingest API into the S3 store, by tus (8 MiB PATCHes) and by simple
//! upload, against a real `cascade serve --roles ingest` child process; and
//! in the same run a direct aws-sdk-s3 multipart put of the same bytes (the
//! store's `put`: in-memory parts, signed payloads, `upload_concurrency` in
//! flight), the peer. For context it also puts the file as streamed parts
//! (no payload hashing, like ingest's) with as many and with one in flight
//! (the floor of a client sending one PATCH at a time).
//!
//! tus runs two ways: one PATCH at a time, timed to the last PATCH's 204,
//! and as `--parallel` partial uploads joined by a final upload (the
//! concatenation extension, as tus-js-client's `parallelUploads`), timed to
//! the final upload's 201; both are durable then, and both are also timed
//! to the end of the probe that follows. The data is random, so the probe
//! refuses it after the transfer (422 / errored): the transfer is measured.
//!
//! Prints MB/s for each and the ratio to the direct put (medians over
//! rounds; each round runs every method once, in a rotating order, and its
//! ratios are to that round's direct put, since the store's speed drifts by
//! 20% on a shared 2-core machine), and the ingest process's peak RSS
//! (VmHWM). An unmeasured put first lets the store allocate its volumes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use super::{median, peak_rss_mb};
use anyhow::{bail, Context};
use cascade_platform::config::ByteSize;
use cascade_platform::{Config, ObjectStore};
use cascade_schemas::ObjectKey;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TARGET_RATIO: f64 = 0.8;
const TARGET_RSS_MB: f64 = 150.0;
const KEY: &str = "csk_bench_upload";

/// Arguments of `cascade bench upload`.
#[derive(Debug, Args)]
pub struct UploadBenchArgs {
    /// Bytes to upload.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// tus PATCH size.
    #[arg(long, default_value = "8MiB")]
    chunk: ByteSize,
    /// Rounds of every method; medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Partial uploads in flight for parallel tus (the concatenation
    /// extension, as tus-js-client's `parallelUploads`).
    #[arg(long, default_value_t = 4)]
    parallel: u64,
}

/// One way of moving the bytes into the store.
#[derive(Debug, Clone, Copy)]
enum Method {
    Direct,
    DirectStreamed,
    SequentialParts,
    Tus,
    TusParallel,
    Simple,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::Direct,
        Method::DirectStreamed,
        Method::SequentialParts,
        Method::Tus,
        Method::TusParallel,
        Method::Simple,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::DirectStreamed => "direct streamed",
            Method::SequentialParts => "sequential parts",
            Method::Tus => "tus",
            Method::TusParallel => "parallel tus",
            Method::Simple => "simple",
        }
    }
}

/// A reported figure (tus gives two: to its 204 and to the probe's end).
#[derive(Debug, Clone, Copy)]
enum Figure {
    Direct,
    DirectStreamed,
    SequentialParts,
    Tus,
    TusProbed,
    TusParallel,
    TusParallelProbed,
    Simple,
}

impl Figure {
    const ALL: [Figure; 8] = [
        Figure::Direct,
        Figure::DirectStreamed,
        Figure::SequentialParts,
        Figure::Tus,
        Figure::TusProbed,
        Figure::TusParallel,
        Figure::TusParallelProbed,
        Figure::Simple,
    ];

    fn short(self) -> &'static str {
        match self {
            Figure::Direct => "direct",
            Figure::DirectStreamed => "direct streamed",
            Figure::SequentialParts => "sequential parts",
            Figure::Tus => "tus",
            Figure::TusProbed => "tus to the probe's end",
            Figure::TusParallel => "parallel tus",
            Figure::TusParallelProbed => "parallel tus to the probe's end",
            Figure::Simple => "simple",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Figure::Direct => "direct S3 multipart put",
            Figure::DirectStreamed => "direct put, streamed parts",
            Figure::SequentialParts => "direct put, streamed, one by one",
            Figure::Tus => "tus, one PATCH at a time (204)",
            Figure::TusProbed => "  to the probe's end",
            Figure::TusParallel => "tus, parallel partials (final 201)",
            Figure::TusParallelProbed => "  to the probe's end",
            Figure::Simple => "simple upload (incl. probe)",
        }
    }
}

/// What every method needs.
struct Bench<'a> {
    store: &'a ObjectStore,
    client: &'a reqwest::Client,
    base: &'a str,
    data: &'a Path,
    size: u64,
    chunk: u64,
    parallel: u64,
    /// Parts the direct put keeps in flight (`storage.upload_concurrency`).
    in_flight: usize,
}

impl Bench<'_> {
    /// Moves the bytes by `method`; returns seconds per figure.
    async fn run(&self, method: Method) -> anyhow::Result<Vec<(Figure, f64)>> {
        let (store, client, base) = (self.store, self.client, self.base);
        Ok(match method {
            Method::Direct => {
                // aws-sdk-s3 multipart, same part size and concurrency as ingest's puts.
                let key = ObjectKey::scratch(uuid::Uuid::new_v4());
                let started = Instant::now();
                let mut file = tokio::fs::File::open(self.data).await?;
                store.put(&key, &mut file).await?;
                let seconds = started.elapsed().as_secs_f64();
                store.delete(&key).await?;
                vec![(Figure::Direct, seconds)]
            }
            Method::DirectStreamed => {
                // Parts streamed from the file without payload hashing, as
                // ingest streams PATCH bodies, as many in flight as the
                // direct put: the store's pace without the SDK's SHA-256.
                let key = ObjectKey::scratch(uuid::Uuid::new_v4());
                let seconds = streamed_parts(
                    store,
                    &key,
                    self.data,
                    self.size,
                    self.chunk,
                    self.in_flight,
                )
                .await?;
                store.delete(&key).await?;
                vec![(Figure::DirectStreamed, seconds)]
            }
            Method::SequentialParts => {
                // The same parts one after another, as tus's one-PATCH-at-a-time
                // protocol must send them: the floor for tus against this store.
                let key = ObjectKey::scratch(uuid::Uuid::new_v4());
                let seconds =
                    streamed_parts(store, &key, self.data, self.size, self.chunk, 1).await?;
                store.delete(&key).await?;
                vec![(Figure::SequentialParts, seconds)]
            }
            Method::Tus => {
                let chunk = usize::try_from(self.chunk)?;
                let started = Instant::now();
                let asset = tus_upload(client, base, self.data, self.size, chunk).await?;
                let answered = started.elapsed().as_secs_f64();
                wait_probed(client, base, &asset).await?;
                let probed = started.elapsed().as_secs_f64();
                delete_asset(client, base, &asset).await?;
                vec![(Figure::Tus, answered), (Figure::TusProbed, probed)]
            }
            Method::TusParallel => {
                let started = Instant::now();
                let asset = tus_parallel_upload(
                    client,
                    base,
                    self.data,
                    self.size,
                    self.chunk,
                    self.parallel,
                )
                .await?;
                let answered = started.elapsed().as_secs_f64();
                wait_probed(client, base, &asset).await?;
                let probed = started.elapsed().as_secs_f64();
                delete_asset(client, base, &asset).await?;
                vec![
                    (Figure::TusParallel, answered),
                    (Figure::TusParallelProbed, probed),
                ]
            }
            Method::Simple => {
                let started = Instant::now();
                let asset = simple_upload(client, base, self.data, self.size).await?;
                let seconds = started.elapsed().as_secs_f64();
                delete_asset(client, base, &asset).await?;
                vec![(Figure::Simple, seconds)]
            }
        })
    }
}

/// Waits until the asset has left `waiting` (its source probed).
async fn wait_probed(client: &reqwest::Client, base: &str, asset: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while Instant::now() < deadline {
        let body = client
            .get(format!("{base}/v1/assets/{asset}"))
            .bearer_auth(KEY)
            .send()
            .await?
            .bytes()
            .await?;
        let view: serde_json::Value = serde_json::from_slice(&body)?;
        if view["state"] != "waiting" {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    bail!("asset {asset} was not probed within 120 s")
}

/// A multipart put of `path` in `chunk`-sized parts streamed from the file
/// (as ingest streams PATCH bodies: no payload hashing), `in_flight` at a
/// time; seconds.
async fn streamed_parts(
    store: &ObjectStore,
    key: &ObjectKey,
    path: &Path,
    size: u64,
    chunk: u64,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let upload = store.create_multipart(key).await?;
    let parts: Vec<_> = (0..size.div_ceil(chunk))
        .map(|i| {
            let (store, key, upload) = (store.clone(), key.clone(), upload.clone());
            async move {
                let start = i * chunk;
                let mut file = tokio::fs::File::open(path).await?;
                file.seek(std::io::SeekFrom::Start(start)).await?;
                let number = u32::try_from(i + 1)?;
                let length = chunk.min(size - start);
                let etag = store
                    .upload_part(&key, &upload, number, length, &mut file)
                    .await?;
                Ok::<_, anyhow::Error>((number, etag))
            }
        })
        .collect();
    let parts: Vec<(u32, String)> = futures::stream::iter(parts)
        .buffered(in_flight.max(1))
        .try_collect()
        .await?;
    store.complete_multipart(key, &upload, &parts).await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn delete_asset(client: &reqwest::Client, base: &str, asset: &str) -> anyhow::Result<()> {
    let response = client
        .delete(format!("{base}/v1/assets/{asset}"))
        .bearer_auth(KEY)
        .send()
        .await?;
    if response.status().as_u16() != 204 {
        bail!("deleting asset {asset}: {}", response.status());
    }
    Ok(())
}

fn generate(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut rng = rand::rng();
    let mut left = size;
    while left > 0 {
        rng.fill_bytes(&mut block);
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// Creates a tus upload of `length` bytes (with `concat` as its
/// Upload-Concat, if any); returns its Location and, unless partial, its
/// asset id.
/// The tus PATCH size the benches that time a transcode upload with.
pub(super) const TUS_PATCH: usize = 8 << 20;

/// [`tus_create`] of an upload that makes an asset: its URL and the asset.
pub(super) async fn tus_create_asset(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    length: u64,
) -> anyhow::Result<(String, cascade_schemas::AssetId)> {
    let (location, asset) = tus_create(client, base, key, length, None).await?;
    let asset = asset
        .context("no Cascade-Asset-Id")?
        .parse()
        .context("Cascade-Asset-Id")?;
    Ok((location, asset))
}

pub(super) async fn tus_create(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    length: u64,
    concat: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let mut request = client
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(key)
        .header("tus-resumable", "1.0.0");
    match concat {
        Some(concat) if concat.starts_with("final;") => {
            request = request.header("upload-concat", concat);
        }
        Some(concat) => {
            request = request
                .header("upload-concat", concat)
                .header("upload-length", length.to_string());
        }
        None => request = request.header("upload-length", length.to_string()),
    }
    let created = request.send().await?;
    if created.status().as_u16() != 201 {
        bail!("tus create: {}", created.status());
    }
    let header = |name: &str| {
        created
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header("location").context("no Location")?;
    Ok((location, header("cascade-asset-id")))
}

/// PATCHes `length` bytes of `file` from its position to the upload at
/// `location`, `chunk` bytes at a time. Like an efficient client, it reads
/// the next chunk from disk while the current PATCH is in flight, so the
/// client's own reads are not timed as the server's.
pub(super) async fn tus_send(
    client: &reqwest::Client,
    location: &str,
    key: &str,
    file: &mut tokio::fs::File,
    length: u64,
    chunk: usize,
) -> anyhow::Result<()> {
    // The next body: a chunk, or what is left of `length`.
    let want = |offset: u64| chunk.min(usize::try_from(length - offset).unwrap_or(chunk));
    let mut next = Some(read_chunk(file, want(0)).await?);
    let mut offset = 0u64;
    while offset < length {
        let Some(body) = next.take().filter(|b| !b.is_empty()) else {
            bail!("the file ended at {offset} of {length} bytes");
        };
        let sent = body.len() as u64;
        let request = client
            .patch(location)
            .bearer_auth(key)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .send();
        let last = offset + sent >= length;
        let (response, more) = if last {
            (request.await, None)
        } else {
            let (response, more) = tokio::join!(request, read_chunk(file, want(offset + sent)));
            (response, Some(more))
        };
        let response = response?;
        if response.status().as_u16() != 204 {
            bail!("tus PATCH at {offset}: {}", response.status());
        }
        offset += sent;
        if let Some(more) = more {
            next = Some(more?);
        }
    }
    Ok(())
}

/// One tus upload, one PATCH at a time; returns the asset id.
async fn tus_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
    chunk: usize,
) -> anyhow::Result<String> {
    let (location, asset) = tus_create(client, base, KEY, size, None).await?;
    let mut file = tokio::fs::File::open(path).await?;
    tus_send(client, &location, KEY, &mut file, size, chunk).await?;
    asset.context("no Cascade-Asset-Id")
}

/// `parallel` partial uploads of consecutive ranges of the file (whole
/// chunks each, the last takes the rest), sent at the same time, then the
/// final upload that joins them (the concatenation extension, as
/// tus-js-client's `parallelUploads`); returns the asset id once the
/// final upload is created (the bytes are durable then).
async fn tus_parallel_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
    chunk: u64,
    parallel: u64,
) -> anyhow::Result<String> {
    let per_partial = size.div_ceil(parallel).div_ceil(chunk) * chunk;
    let ranges: Vec<(u64, u64)> = (0..parallel)
        .map(|i| {
            (
                i * per_partial,
                (size.min((i + 1) * per_partial)).saturating_sub(i * per_partial),
            )
        })
        .filter(|(_, length)| *length > 0)
        .collect();
    let chunk = usize::try_from(chunk)?;
    let partials =
        futures::future::try_join_all(ranges.into_iter().map(|(start, length)| async move {
            let (location, _) = tus_create(client, base, KEY, length, Some("partial")).await?;
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            tus_send(client, &location, KEY, &mut file, length, chunk).await?;
            Ok::<_, anyhow::Error>(location)
        }))
        .await?;
    let concat = format!("final;{}", partials.join(" "));
    let (_, asset) = tus_create(client, base, KEY, size, Some(&concat)).await?;
    asset.context("no Cascade-Asset-Id")
}

/// Up to `chunk` bytes from `file` (fewer only at its end).
async fn read_chunk(file: &mut tokio::fs::File, chunk: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; chunk];
    let mut filled = 0;
    while filled < chunk {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

async fn simple_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
) -> anyhow::Result<String> {
    let created = client
        .post(format!("{base}/v1/assets"))
        .bearer_auth(KEY)
        .send()
        .await?
        .bytes()
        .await?;
    let asset: serde_json::Value = serde_json::from_slice(&created)?;
    let id = asset["id"].as_str().context("asset id")?.to_owned();
    let file = tokio::fs::File::open(path).await?;
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let response = client
        .put(format!("{base}/v1/assets/{id}/source"))
        .bearer_auth(KEY)
        .header("content-length", size.to_string())
        .body(body)
        .send()
        .await?;
    // 422: the random bytes are refused by the probe after being stored.
    if !matches!(response.status().as_u16(), 202 | 422) {
        bail!("simple upload: {}", response.status());
    }
    Ok(id)
}

/// Runs the benchmark.
pub async fn run(args: UploadBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    if config.storage.s3.is_none() {
        bail!("bench upload needs the S3 backend: run it under scripts/stack.sh (CASCADE_STORAGE__S3__ENDPOINT)");
    }
    let size = args.size.0;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data.bin");
    generate(&data, size)?;
    let mb = size as f64 / 1e6;
    println!(
        "bench upload: {} of random data, tus chunks of {}",
        args.size, args.chunk
    );

    let store = ObjectStore::from_config(&config.storage).await?;

    // The ingest API in its own process, so its memory is its own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--roles", "ingest"])
        .env("CASCADE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0")
        .env("CASCADE_INGEST__PUBLIC_URL", &base)
        .env("CASCADE_INGEST__BOOTSTRAP_KEY", KEY)
        .env("CASCADE_INGEST__MAX_UPLOAD_SIZE", format!("{}", size * 2))
        .env("CASCADE_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting cascade serve --roles ingest")?;
    let client = reqwest::Client::new();
    let ready = async {
        for _ in 0..100 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    if !ready.await {
        let _ = child.kill();
        bail!("the ingest process did not start");
    }

    // One unmeasured put first: the store allocates its volumes on the
    // first writes, which would otherwise land in whichever upload came first.
    let warm_up = ObjectKey::scratch(uuid::Uuid::new_v4());
    store
        .put(&warm_up, &mut tokio::fs::File::open(&data).await?)
        .await?;
    store.delete(&warm_up).await?;

    let rounds = args.rounds.max(1);
    let mut rates: [Vec<f64>; Figure::ALL.len()] = Default::default();
    let mut ratios: [Vec<f64>; Figure::ALL.len()] = Default::default();
    let measured = async {
        for round in 0..rounds {
            // Each round runs every method once, in an order that rotates,
            // so none always follows the same neighbour; ratios are taken
            // within the round (the store's speed drifts between rounds).
            let mut this_round = [0.0; Figure::ALL.len()];
            for step in 0..Method::ALL.len() {
                let method = Method::ALL[(round + step) % Method::ALL.len()];
                let bench = Bench {
                    store: &store,
                    client: &client,
                    base: &base,
                    data: &data,
                    size,
                    chunk: args.chunk.0,
                    parallel: args.parallel.max(1),
                    in_flight: config.storage.upload_concurrency,
                };
                for (figure, seconds) in bench.run(method).await? {
                    this_round[figure as usize] = mb / seconds;
                }
            }
            let direct = this_round[Figure::Direct as usize];
            for figure in Figure::ALL {
                rates[figure as usize].push(this_round[figure as usize]);
                ratios[figure as usize].push(this_round[figure as usize] / direct);
            }
            println!(
                "round {}/{rounds} (from {}): {} MB/s",
                round + 1,
                Method::ALL[round % Method::ALL.len()].name(),
                Figure::ALL
                    .iter()
                    .map(|f| format!("{} {:.1}", f.short(), this_round[*f as usize]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = measured.await;
    let rss = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    result?;
    let rate = |f: Figure| median(&mut rates[f as usize].clone());
    let ratio = |f: Figure| median(&mut ratios[f as usize].clone());

    println!("medians of {rounds} rounds (ratios to the same round's direct put)");
    println!("{:<34} {:>10} {:>8}", "", "MB/s", "ratio");
    for figure in Figure::ALL {
        let note = match figure {
            Figure::SequentialParts => "  (the floor of tus one PATCH at a time)".to_owned(),
            Figure::TusParallel | Figure::Simple => format!("  (target >= {TARGET_RATIO:.2}x)"),
            Figure::DirectStreamed => "  (no payload hashing, as ingest's parts)".to_owned(),
            Figure::Direct | Figure::TusProbed | Figure::Tus | Figure::TusParallelProbed => {
                String::new()
            }
        };
        println!(
            "{:<34} {:>10.1} {:>7.2}x{note}",
            figure.label(),
            rate(figure),
            ratio(figure)
        );
    }
    println!("ingest peak RSS: {rss:.0} MB (target < {TARGET_RSS_MB:.0} MB)");
    let ok = ratio(Figure::TusParallel) >= TARGET_RATIO
        && ratio(Figure::Simple) >= TARGET_RATIO
        && rss < TARGET_RSS_MB;
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
