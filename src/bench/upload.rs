//! `cascade bench upload`: a generated file (1 GiB by default) through the
//! ingest API into the S3 store, by tus (8 MiB PATCHes) and by simple
//! upload, against a real `cascade serve --roles ingest` child process; and
//! in the same run a direct aws-sdk-s3 multipart put of the same bytes.
//! Prints MB/s for each, the ratio to the direct put, and the ingest
//! process's peak RSS (VmHWM). The data is random, so the probe refuses it
//! after the transfer (422): the transfer is what is measured.

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

async fn tus_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
    chunk: usize,
) -> anyhow::Result<()> {
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
    let mut file = tokio::fs::File::open(path).await?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; chunk];
    while offset < size {
        let mut filled = 0;
        while filled < chunk {
            let n = file.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let response = client
            .patch(&location)
            .bearer_auth(KEY)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(buf[..filled].to_vec())
            .send()
            .await?;
        if response.status().as_u16() != 204 {
            bail!("tus PATCH at {offset}: {}", response.status());
        }
        offset += filled as u64;
    }
    Ok(())
}

async fn simple_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
) -> anyhow::Result<()> {
    let created = client
        .post(format!("{base}/v1/assets"))
        .bearer_auth(KEY)
        .send()
        .await?
        .bytes()
        .await?;
    let asset: serde_json::Value = serde_json::from_slice(&created)?;
    let id = asset["id"].as_str().context("asset id")?;
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
    Ok(())
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

    // Direct put through aws-sdk-s3 (multipart, same part size and concurrency).
    let store = ObjectStore::from_config(&config.storage).await?;
    let key = ObjectKey::scratch(uuid::Uuid::new_v4());
    let started = Instant::now();
    let mut file = tokio::fs::File::open(&data).await?;
    store.put(&key, &mut file).await?;
    let direct = mb / started.elapsed().as_secs_f64();
    store.delete(&key).await?;

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
    let started = Instant::now();
    let tus = tus_upload(&client, &base, &data, size, args.chunk.as_usize()).await;
    let tus_rate = mb / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let simple = simple_upload(&client, &base, &data, size).await;
    let simple_rate = mb / started.elapsed().as_secs_f64();
    let rss = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    tus?;
    simple?;

    println!("{:<34} {:>10} {:>8}", "", "MB/s", "ratio");
    println!(
        "{:<34} {:>10.1} {:>8}",
        "direct S3 multipart put", direct, "1.00x"
    );
    println!(
        "{:<34} {:>10.1} {:>7.2}x  (target >= {TARGET_RATIO:.2}x)",
        "tus (incl. assembly and probe)",
        tus_rate,
        tus_rate / direct
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
