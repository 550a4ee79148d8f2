//! `cascade bench ladder`: Cascade's in-process transcode of a fixed 1080p
//! fixture with the default ladder, and in the same run the `ffmpeg` CLI
//! doing the same ladder in one process (`-filter_complex split` + `scale`,
//! same x264 settings, same forced keyframes, same AAC audio). Prints wall
//! time, CPU time and per-rung PSNR-Y (against the source scaled to the
//! rung's size, frames paired by order) for both, and the ratios.

use cascade_schemas::keys;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use super::median;
use anyhow::{bail, Context};
use cascade_platform::config::{RateControl, TranscodeConfig};
use cascade_platform::Config;
use cascade_schemas::ladder::{self, PlannedRung};
use clap::Args;

const TARGET_WALL_RATIO: f64 = 1.0;
const TARGET_CPU_RATIO: f64 = 1.05;
const TARGET_PSNR_DELTA_DB: f64 = 0.2;

/// Arguments of `cascade bench ladder`.
#[derive(Debug, Args)]
pub struct LadderBenchArgs {
    /// Source to transcode (default: the 20 s 1080p bench fixture, generated if missing).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Keep the outputs in this directory instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Alternating runs of each; medians are compared (the machine is noisy).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub(super) fn cpu_seconds(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn probe_size(input: &Path) -> anyhow::Result<(u32, u32, f64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height:format=duration",
            "-of",
            "csv=p=0:s=x",
        ])
        .arg(input)
        .output()
        .context("running ffprobe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let size = lines.next().context("ffprobe printed no size")?;
    let (w, h) = size.split_once('x').context("ffprobe size")?;
    let duration: f64 = lines.next().unwrap_or("0").trim().parse().unwrap_or(0.0);
    Ok((w.trim().parse()?, h.trim().parse()?, duration))
}

/// The CLI arguments equivalent to what the pipeline does.
pub(super) fn cli_args(
    input: &Path,
    rungs: &[PlannedRung],
    config: &TranscodeConfig,
    out: &Path,
) -> Vec<String> {
    let gop = config.gop.as_secs_f64();
    let mut args: Vec<String> = ["-nostdin", "-y", "-v", "error", "-i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(input.display().to_string());
    let labels: String = (0..rungs.len()).map(|i| format!("[s{i}]")).collect();
    let mut graph = format!("[0:v]split={}{labels}", rungs.len());
    for (i, r) in rungs.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic,setsar=1,format=yuv420p[v{i}]",
            r.width, r.height
        ));
    }
    args.extend(["-filter_complex".to_owned(), graph]);
    for (i, r) in rungs.iter().enumerate() {
        let gop_frames = (gop * 30.0).round() as u32;
        let rate = match config.rate_control {
            RateControl::CappedCrf => vec![
                "-crf".to_owned(),
                config.crf.to_string(),
                "-maxrate".to_owned(),
                r.bitrate.to_string(),
            ],
            RateControl::Vbr => vec![
                "-b:v".to_owned(),
                r.bitrate.to_string(),
                "-maxrate".to_owned(),
                (r.bitrate * 3 / 2).to_string(),
            ],
            RateControl::Cbr => vec![
                "-b:v".to_owned(),
                r.bitrate.to_string(),
                "-maxrate".to_owned(),
                r.bitrate.to_string(),
            ],
        };
        args.extend([
            "-map".to_owned(),
            format!("[v{i}]"),
            "-c:v".to_owned(),
            "libx264".to_owned(),
            "-preset".to_owned(),
            config.preset.clone(),
        ]);
        args.extend(rate);
        args.extend([
            "-bufsize".to_owned(),
            (r.bitrate * 2).to_string(),
            "-profile:v".to_owned(),
            if r.width.min(r.height) > 480 {
                "high"
            } else {
                "main"
            }
            .to_owned(),
            "-bf".to_owned(),
            config.b_frames.to_string(),
            "-x264-params".to_owned(),
            format!(
                "keyint={}:min-keyint={}:scenecut=0:open-gop=0:b-pyramid=none:vbv-init={}",
                gop_frames * 2,
                gop_frames,
                cascade_workers::transcode::VBV_INITIAL_FULLNESS
            ),
            "-force_key_frames".to_owned(),
            format!("expr:gte(t,n_forced*{gop})"),
            "-forced-idr".to_owned(),
            "1".to_owned(),
            "-an".to_owned(),
            out.join(format!("{}.mp4", r.name)).display().to_string(),
        ]);
    }
    args.extend(
        [
            "-map",
            "0:a?",
            "-c:a",
            "aac",
            "-b:a",
            &config.audio_bitrate.to_string(),
            "-ac",
            "2",
            "-ar",
            "48000",
            "-vn",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.push(out.join("audio.m4a").display().to_string());
    args
}

/// PSNR-Y of `encoded` against `source` scaled to `width` x `height`.
fn psnr_y(encoded: &Path, source: &Path, width: u32, height: u32) -> anyhow::Result<f64> {
    let graph = format!(
        "[0:v]setpts=PTS-STARTPTS[d];[1:v]scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS[r];[d][r]psnr"
    );
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "info", "-i"])
        .arg(encoded)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .context("running ffmpeg psnr")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("PSNR y:"))
        .context("no PSNR in ffmpeg output")?;
    let y = line
        .split("y:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("PSNR y value")?;
    Ok(y.parse()?)
}

/// Runs the benchmark.
pub async fn run(args: LadderBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let input = match args.input {
        Some(path) => path,
        None => super::bench_fixture()?,
    };
    let (width, height, duration) = probe_size(&input)?;
    let mut transcode = config.transcode.clone();
    transcode.encoder = cascade_platform::config::EncoderChoice::Libx264;
    let rungs = ladder::plan(width, height, &transcode.ladder);
    let scratch = tempfile::tempdir()?;
    let root = args.keep.unwrap_or_else(|| scratch.path().to_owned());
    let ours_dir = root.join("cascade");
    let cli_dir = root.join("ffmpeg-cli");
    std::fs::create_dir_all(&ours_dir)?;
    std::fs::create_dir_all(&cli_dir)?;
    println!(
        "bench ladder: {} ({duration:.1} s, {width}x{height}), {} rungs, preset {}, {:?} crf {}",
        input.display(),
        rungs.len(),
        transcode.preset,
        transcode.rate_control,
        transcode.crf
    );

    let runs = args.runs.max(1);
    let (mut ours_walls, mut ours_cpus, mut cli_walls, mut cli_cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut summary = None;
    for run in 1..=runs {
        // Cascade: the worker's pipeline, in this process.
        let cpu_before = cpu_seconds(libc::RUSAGE_SELF);
        let started = Instant::now();
        summary = Some(super::transcode_to_dir(&input, &transcode, &ours_dir).await?);
        ours_walls.push(started.elapsed().as_secs_f64());
        ours_cpus.push(cpu_seconds(libc::RUSAGE_SELF) - cpu_before);

        // The ffmpeg CLI, same ladder and settings.
        let cli_cpu_before = cpu_seconds(libc::RUSAGE_CHILDREN);
        let started = Instant::now();
        let status = Command::new("ffmpeg")
            .args(cli_args(&input, &rungs, &transcode, &cli_dir))
            .status()
            .context("running the ffmpeg CLI")?;
        if !status.success() {
            bail!("the ffmpeg CLI failed: {status}");
        }
        cli_walls.push(started.elapsed().as_secs_f64());
        cli_cpus.push(cpu_seconds(libc::RUSAGE_CHILDREN) - cli_cpu_before);
        println!(
            "run {run}/{runs}: cascade {:.2} s wall {:.2} s cpu; ffmpeg CLI {:.2} s wall {:.2} s cpu",
            ours_walls[run - 1],
            ours_cpus[run - 1],
            cli_walls[run - 1],
            cli_cpus[run - 1]
        );
    }
    let summary = summary.context("no run")?;
    let ours_wall = Duration::from_secs_f64(median(&mut ours_walls));
    let cli_wall = Duration::from_secs_f64(median(&mut cli_walls));
    let ours_cpu = median(&mut ours_cpus);
    let cli_cpu = median(&mut cli_cpus);
    // Peak memory of this process (the pipeline ran in it), for the record.
    // SAFETY: getrusage fills the struct it is given.
    let peak_rss_mb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_maxrss as f64 / 1024.0
    };

    let wall_ratio = ours_wall.as_secs_f64() / cli_wall.as_secs_f64();
    let cpu_ratio = ours_cpu / cli_cpu;
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!("medians of {runs} alternating runs; cascade peak RSS {peak_rss_mb:.0} MB");
    println!(
        "{:<14} {:>12} {:>12} {:>10}",
        "", "cascade", "ffmpeg CLI", "ratio"
    );
    println!(
        "{:<14} {:>12} {:>12} {:>9.3}x  (target <= {TARGET_WALL_RATIO:.2}x)",
        "wall time",
        secs(ours_wall),
        secs(cli_wall),
        wall_ratio
    );
    println!(
        "{:<14} {:>10.2} s {:>10.2} s {:>9.3}x  (target <= {TARGET_CPU_RATIO:.2}x)",
        "cpu time", ours_cpu, cli_cpu, cpu_ratio
    );

    let mut psnr_ok = true;
    for rung in &rungs {
        // Our rung as one fragmented MP4: init + segments in order.
        let dir = ours_dir.join(&rung.name);
        let mut joined = std::fs::read(dir.join(keys::INIT_SEGMENT))?;
        let segments = summary
            .renditions
            .iter()
            .find(|(r, _)| r.name == rung.name)
            .map(|(r, _)| r.segments.len())
            .unwrap_or(0);
        for seq in 1..=segments {
            joined.extend(std::fs::read(dir.join(format!("{seq}.m4s")))?);
        }
        let ours_file = ours_dir.join(format!("{}.mp4", rung.name));
        std::fs::write(&ours_file, &joined)?;
        let ours = psnr_y(&ours_file, &input, rung.width, rung.height)?;
        let cli = psnr_y(
            &cli_dir.join(format!("{}.mp4", rung.name)),
            &input,
            rung.width,
            rung.height,
        )?;
        let delta = ours - cli;
        psnr_ok &= delta >= -TARGET_PSNR_DELTA_DB;
        println!(
            "{:<14} {:>9.2} dB {:>9.2} dB {:>+8.2} dB (target within {TARGET_PSNR_DELTA_DB} dB)",
            format!("PSNR-Y {}", rung.name),
            ours,
            cli,
            delta
        );
    }
    let ok = wall_ratio <= TARGET_WALL_RATIO && cpu_ratio <= TARGET_CPU_RATIO && psnr_ok;
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
