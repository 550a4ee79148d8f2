//! `cascade bench upload`: a generated file (1 GiB by default) through the
//! ingest API into the S3 store, by tus (8 MiB PATCHes) and by simple
//! upload, against a real `cascade serve --roles ingest` child process; and
//! in the same run a direct aws-sdk-s3 multipart put of the same bytes.
//! Prints MB/s for each (medians of alternating rounds: single runs on a
//! shared 2-core machine vary by 20%), the ratio to the direct put, and the
//! ingest process's peak RSS (VmHWM). tus is timed to the final PATCH's 204
//! (the bytes are in the store; the probe runs after the response) and, for
//! the record, to the end of that probe. The data is random, so the probe
//! refuses it after the transfer (422 / errored): the transfer is measured.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use cascade_platform::config::ByteSize;
use cascade_platform::{Config, ObjectStore};
use cascade_schemas::ObjectKey;
use clap::Args;
use rand::RngCore;
use tokio::io::AsyncReadExt;

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
    /// Alternating rounds of the three; medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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

/// A multipart put of `path` in `chunk`-sized parts, one at a time; seconds.
async fn serial_parts(
    store: &ObjectStore,
    key: &ObjectKey,
    path: &Path,
    size: u64,
    chunk: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let upload = store.create_multipart(key).await?;
    let mut file = tokio::fs::File::open(path).await?;
    let mut parts = Vec::new();
    let mut offset = 0;
    while offset < size {
        let length = chunk.min(size - offset);
        let number = parts.len() as u32 + 1;
        let etag = store
            .upload_part(key, &upload, number, length, &mut file)
            .await?;
        parts.push((number, etag));
        offset += length;
    }
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

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
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

/// Returns how long the last PATCH took (it completes the source, fetches
/// it for the probe and probes it).
async fn tus_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
    chunk: usize,
) -> anyhow::Result<String> {
    let created = client
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(KEY)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", size.to_string())
        .send()
        .await?;
    if created.status().as_u16() != 201 {
        bail!("tus create: {}", created.status());
    }
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location")?
        .to_owned();
    let asset = created
        .headers()
        .get("cascade-asset-id")
        .and_then(|v| v.to_str().ok())
        .context("no Cascade-Asset-Id")?
        .to_owned();
    // Like an efficient client, read the next chunk from disk while the
    // current PATCH is in flight, so the client's own reads are not timed
    // as the server's.
    let mut file = tokio::fs::File::open(path).await?;
    let mut next = Some(read_chunk(&mut file, chunk).await?);
    let mut offset = 0u64;
    while offset < size {
        let Some(body) = next.take().filter(|b| !b.is_empty()) else {
            bail!("the file ended at {offset} of {size} bytes");
        };
        let length = body.len() as u64;
        let request = client
            .patch(&location)
            .bearer_auth(KEY)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .send();
        let last = offset + length >= size;
        let (response, read) = if last {
            (request.await, None)
        } else {
            let (response, read) = tokio::join!(request, read_chunk(&mut file, chunk));
            (response, Some(read))
        };
        let response = response?;
        if response.status().as_u16() != 204 {
            bail!("tus PATCH at {offset}: {}", response.status());
        }
        offset += length;
        if let Some(read) = read {
            next = Some(read?);
        }
    }
    Ok(asset)
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

    let rounds = args.rounds.max(1);
    let (mut directs, mut tuses, mut probeds, mut simples, mut serials) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let measured = async {
        for round in 1..=rounds {
            // Direct put through aws-sdk-s3 (multipart, same part size and concurrency).
            let key = ObjectKey::scratch(uuid::Uuid::new_v4());
            let started = Instant::now();
            let mut file = tokio::fs::File::open(&data).await?;
            store.put(&key, &mut file).await?;
            directs.push(mb / started.elapsed().as_secs_f64());
            store.delete(&key).await?;

            // The same parts one after another, as tus's one-PATCH-at-a-time
            // protocol must send them: the floor for tus against this store.
            let key = ObjectKey::scratch(uuid::Uuid::new_v4());
            serials.push(mb / serial_parts(&store, &key, &data, size, args.chunk.0).await?);
            store.delete(&key).await?;

            let started = Instant::now();
            let asset = tus_upload(&client, &base, &data, size, args.chunk.as_usize()).await?;
            tuses.push(mb / started.elapsed().as_secs_f64());
            wait_probed(&client, &base, &asset).await?;
            probeds.push(mb / started.elapsed().as_secs_f64());
            delete_asset(&client, &base, &asset).await?;

            let started = Instant::now();
            let asset = simple_upload(&client, &base, &data, size).await?;
            simples.push(mb / started.elapsed().as_secs_f64());
            delete_asset(&client, &base, &asset).await?;
            println!(
                "round {round}/{rounds}: direct {:.1}, sequential parts {:.1}, tus {:.1} ({:.1} to the probe's end), simple {:.1} MB/s",
                directs[round - 1],
                serials[round - 1],
                tuses[round - 1],
                probeds[round - 1],
                simples[round - 1]
            );
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = measured.await;
    let rss = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    result?;
    let direct = median(&mut directs);
    let tus_rate = median(&mut tuses);
    let probed_rate = median(&mut probeds);
    let simple_rate = median(&mut simples);
    let serial_rate = median(&mut serials);

    println!("medians of {rounds} alternating rounds");
    println!("{:<34} {:>10} {:>8}", "", "MB/s", "ratio");
    println!(
        "{:<34} {:>10.1} {:>8}",
        "direct S3 multipart put", direct, "1.00x"
    );
    println!(
        "{:<34} {:>10.1} {:>7.2}x  (tus's floor: one part at a time)",
        "direct put, sequential parts",
        serial_rate,
        serial_rate / direct
    );
    println!(
        "{:<34} {:>10.1} {:>7.2}x  (target >= {TARGET_RATIO:.2}x)",
        "tus (to the final PATCH's 204)",
        tus_rate,
        tus_rate / direct
    );
    println!(
        "{:<34} {:>10.1} {:>7.2}x",
        "  tus to the probe's end",
        probed_rate,
        probed_rate / direct
    );
    println!(
        "{:<34} {:>10.1} {:>7.2}x  (target >= {TARGET_RATIO:.2}x)",
        "simple upload (incl. probe)",
        simple_rate,
        simple_rate / direct
    );
    println!("ingest peak RSS: {rss:.0} MB (target < {TARGET_RSS_MB:.0} MB)");
    let ok = tus_rate / direct >= TARGET_RATIO
        && simple_rate / direct >= TARGET_RATIO
        && rss < TARGET_RSS_MB;
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
