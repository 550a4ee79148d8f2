//! `cascade bench live --low-latency`: a `latency_mode: low` stream of
//! 720p30 (H.264 + AAC, copied) published by ffmpeg in real time over RTMP
//! into one `cascade serve` child (ingest and the live ladder), served by a
//! second child (origin only, reaching the parts through the first one's
//! relay) behind the nginx CDN of `infra/cdn/nginx.conf`.
//!
//! Prints, and holds to targets (exit 1 when one is missed):
//! - glass-to-glass latency in hls.js (low-latency mode, headless
//!   Chromium, through the CDN): wall clock minus the program date-time of
//!   the frame on screen (the wall clock at ingest of that frame; the
//!   publisher sends in real time), sampled over the measured time after
//!   the first 5 s of playback: median < 2.0 s and p95 < 2.5 s;
//! - how long a blocking playlist reload takes after its part exists
//!   (through the CDN, from the `cascade-part-cut-at` time the relay
//!   reports to the response at the client): p99 < 50 ms;
//! - origin CPU for 100 simulated LL-HLS players (blocking reloads and
//!   part fetches straight at the origin, no CDN in front), for information.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use cascade_platform::Config;

use super::live::{
    fixture, play_hls, process_cpu_seconds, publish, start_live_stack, LiveBenchArgs, LiveStack,
    KEY,
};
use super::median;
use super::origin::{require_tool, ChildGuard};

/// Glass-to-glass latency targets, seconds.
const TARGET_MEDIAN: f64 = 2.0;
const TARGET_P95: f64 = 2.5;
/// A blocking reload answered after its part exists, milliseconds (p99).
const TARGET_RELOAD_P99_MS: f64 = 50.0;
/// Simulated players for the origin CPU figure, and for how long.
const PLAYERS: usize = 100;
const LOAD_SECONDS: u64 = 20;

/// The `q`-quantile (0..=1) of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The next part a player at the end of `playlist` blocks for:
/// (`_HLS_msn`, `_HLS_part`), and the URI of the newest part.
fn next_part(playlist: &str) -> Option<((u64, u32), Option<String>)> {
    let mut media_sequence = None;
    let mut segments = 0u64;
    let mut trailing = 0u32;
    let mut newest_part = None;
    for line in playlist.lines() {
        if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = value.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            segments += value.trim().parse::<u64>().ok()?;
        } else if line.starts_with("#EXT-X-PART:") {
            trailing += 1;
            newest_part = line
                .split("URI=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            segments += 1;
            trailing = 0;
        }
    }
    Some(((media_sequence? + segments, trailing), newest_part))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Blocking reloads, one after the other, until `until`: for each, the
/// milliseconds from the part's cut to the response.
async fn probe_blocking_reloads(
    client: &reqwest::Client,
    playlist_url: &str,
    until: Instant,
) -> Vec<f64> {
    let mut delays = Vec::new();
    let Ok(response) = client.get(playlist_url).send().await else {
        return delays;
    };
    let mut text = response.text().await.unwrap_or_default();
    while Instant::now() < until {
        let Some(((msn, part), _)) = next_part(&text) else {
            break;
        };
        let url = format!("{playlist_url}?_HLS_msn={msn}&_HLS_part={part}");
        let Ok(response) = client.get(&url).send().await else {
            continue;
        };
        let cut_at = response
            .headers()
            .get("cascade-part-cut-at")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let received = unix_micros();
        if !status.is_success() {
            continue;
        }
        // Only answers that waited for a new part (a cached answer to an
        // earlier request would measure the cache's age).
        if let (Some(cut_at), Some((next, _))) = (cut_at, next_part(&body)) {
            if next > (msn, part) && received >= cut_at {
                delays.push((received - cut_at) as f64 / 1000.0);
            }
        }
        text = body;
    }
    delays
}

/// One simulated LL-HLS player straight at the origin: a blocking reload
/// for the next part, then the newest part, until `until`. Counts requests.
async fn simulated_player(
    client: reqwest::Client,
    base: String,
    rendition_playlist: String,
    until: Instant,
    requests: Arc<AtomicU64>,
) {
    let Ok(response) = client.get(&rendition_playlist).send().await else {
        return;
    };
    let mut text = response.text().await.unwrap_or_default();
    while Instant::now() < until {
        let Some(((msn, part), _)) = next_part(&text) else {
            return;
        };
        let Ok(response) = client
            .get(format!(
                "{rendition_playlist}?_HLS_msn={msn}&_HLS_part={part}"
            ))
            .send()
            .await
        else {
            continue;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        text = response.text().await.unwrap_or_default();
        if let Some((_, Some(uri))) = next_part(&text) {
            let url = format!("{base}/{}", uri.trim_start_matches("../"));
            if let Ok(response) = client.get(&url).send().await {
                let _ = response.bytes().await;
                requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: &LiveBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let input = fixture()?;
    require_tool("nginx")?;
    require_tool("node")?;
    let seconds = args.seconds();
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    println!(
        "bench live --low-latency: {seconds} s of 720p30 published in real time; ladder {:?}, parts of at most {:?}",
        config.live.ladder.iter().map(|r| &r.name).collect::<Vec<_>>(),
        config.live.part_duration
    );

    // The live process (ingest + ladder), an origin of its own, the CDN.
    let LiveStack {
        mut live,
        base: live_base,
        rtmp,
        mut origin,
        origin_base,
        cdn: _cdn,
        cdn_port,
    } = start_live_stack(&client, &config, dir.path()).await?;

    let response = client
        .post(format!("{live_base}/v1/live_streams"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(r#"{"recording": false, "latency_mode": "low"}"#)
        .send()
        .await?
        .error_for_status()?;
    let created: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    let key = created["rtmp"]["stream_key"]
        .as_str()
        .context("stream key")?;
    let playback = created["playback_id"]
        .as_str()
        .context("playback id")?
        .to_owned();
    let total = seconds + u32::try_from(LOAD_SECONDS)? + 40;
    let mut publisher = ChildGuard {
        name: "ffmpeg publisher",
        child: publish(&input, &format!("{rtmp}/{key}"), total)?,
    };

    let cdn_play = format!("http://127.0.0.1:{cdn_port}/play/{playback}");
    let media = format!("{cdn_play}/720p/index.m3u8");
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        publisher.check_running()?;
        live.check_running()?;
        origin.check_running()?;
        let listed = match client.get(&media).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if listed.contains("#EXT-X-PART:") && listed.matches("#EXTINF").count() >= 2 {
            break;
        }
        if started.elapsed() > Duration::from_secs(40) {
            bail!("the low-latency stream did not start within 40 s");
        }
    }

    // The player and the blocking-reload probe, side by side.
    let until = Instant::now() + Duration::from_secs(u64::from(seconds) + 8);
    let master = format!("{cdn_play}/master.m3u8");
    let (player, delays) = tokio::join!(
        play_hls(&master, seconds, true),
        probe_blocking_reloads(&client, &media, until)
    );
    let player = player?;
    let latencies: Vec<f64> = player["latencies"]
        .as_array()
        .map(|samples| samples.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();

    // 100 players straight at the origin; its CPU over the time.
    let requests = Arc::new(AtomicU64::new(0));
    let origin_pid = origin.child.id();
    let cpu_start = process_cpu_seconds(origin_pid);
    let load_start = Instant::now();
    let load_until = load_start + Duration::from_secs(LOAD_SECONDS);
    let load_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(PLAYERS * 2)
        .build()?;
    let mut players = tokio::task::JoinSet::new();
    for index in 0..PLAYERS {
        let rendition = ["720p", "480p", "240p"][index % 3];
        players.spawn(simulated_player(
            load_client.clone(),
            format!("{origin_base}/play/{playback}/{rendition}"),
            format!("{origin_base}/play/{playback}/{rendition}/index.m3u8"),
            load_until,
            requests.clone(),
        ));
    }
    while players.join_next().await.is_some() {}
    let load_seconds = load_start.elapsed().as_secs_f64();
    let origin_cores = (process_cpu_seconds(origin_pid) - cpu_start) / load_seconds;
    let request_rate = requests.load(Ordering::Relaxed) as f64 / load_seconds;
    drop(publisher);

    let mut sorted_latencies = latencies.clone();
    let median_latency = median(&mut sorted_latencies);
    let p95 = quantile(&latencies, 0.95);
    let mut sorted_delays = delays.clone();
    let reload_median = median(&mut sorted_delays);
    let reload_p99 = quantile(&delays, 0.99);
    println!(
        "glass to glass in hls.js (LL mode, through the CDN), {} samples: median {median_latency:.3} s, p95 {p95:.3} s, range {:.3}-{:.3} s (targets: median < {TARGET_MEDIAN} s, p95 < {TARGET_P95} s); played {} s, low-latency mode: {}, fatal: {}",
        latencies.len(),
        quantile(&latencies, 0.0),
        quantile(&latencies, 1.0),
        player["played"],
        player["low_latency"],
        player["fatal"],
    );
    println!(
        "blocking reload after its part exists (through the CDN), {} reloads: median {reload_median:.1} ms, p99 {reload_p99:.1} ms, max {:.1} ms (target: p99 < {TARGET_RELOAD_P99_MS} ms)",
        delays.len(),
        quantile(&delays, 1.0),
    );
    println!(
        "origin CPU for {PLAYERS} LL-HLS players straight at the origin: {:.1}% of one core ({request_rate:.0} requests/s)",
        origin_cores * 100.0
    );
    let met = !latencies.is_empty()
        && median_latency < TARGET_MEDIAN
        && p95 < TARGET_P95
        && !delays.is_empty()
        && reload_p99 < TARGET_RELOAD_P99_MS
        && player["fatal"].is_null()
        && player["low_latency"] == true;
    println!("{}", if met { "targets met" } else { "TARGET MISSED" });
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_part_follows_the_playlist_end() {
        let open = "#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:2,\n../s1/720p/4.m4s\n#EXTINF:2,\n../s1/720p/5.m4s\n\
                    #EXT-X-PART:DURATION=0.3,URI=\"../s1/720p/6.0.m4s\"\n#EXT-X-PART:DURATION=0.3,URI=\"../s1/720p/6.1.m4s\"\n";
        assert_eq!(
            next_part(open),
            Some(((6, 2), Some("../s1/720p/6.1.m4s".to_owned())))
        );
        let closed = "#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXTINF:2,\n../s1/720p/7.m4s\n";
        assert_eq!(next_part(closed), Some(((8, 0), None)));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
