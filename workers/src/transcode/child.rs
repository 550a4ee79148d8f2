//! The transcode pipeline in a child process.
//!
//! Decoding an uploaded file runs FFmpeg's demuxers and decoders on bytes a
//! stranger chose. In the worker process, a file that crashes a decoder or
//! exhausts memory would take down every other job running there. So the
//! worker runs the pipeline in a child (`cascade transcode-source`, this
//! same binary, the same config) under an address-space limit. The child
//! reads the stored source by ranged GETs and writes what the pipeline
//! emits to its standard output; the worker does everything else as
//! before (uploads, rows, progressive publish, metrics), so only encoded
//! output crosses the pipe (a few Mbit/s), never frames, and the child
//! needs no database.
//!
//! The stream is a sequence of frames: one line of JSON ([`Frame`]), then,
//! for init and media segments, exactly the number of bytes the line names.
//! The last frame is the run's outcome. A child that ends without one died
//! on the source (a signal: `SIGSEGV`, `SIGABRT` from a failed allocation
//! under the limit, `SIGKILL`; or a panic): [`TranscodeError::Crashed`],
//! retried with backoff and quarantined on the last attempt.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cascade_packager::{self as packager, Track};
use cascade_schemas::AssetId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;

use super::encoders::VideoEncoder;
use super::error::TranscodeError;
use super::pipeline::{Event, SourceInfo, Summary};

/// The child's subcommand.
pub const SUBCOMMAND: &str = "transcode-source";

/// The longest frame line a parent reads (a summary of a long asset lists
/// every segment of every rendition: about 100 bytes each).
const MAX_LINE: u64 = 64 << 20;
/// The largest segment a parent accepts.
const MAX_PAYLOAD: u64 = 1 << 30;

/// One frame of the child's output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum Frame {
    /// [`Event::Probed`].
    Probed {
        /// Duration from the container.
        duration: Option<f64>,
    },
    /// [`Event::Source`].
    Source {
        /// What the source carries.
        source: SourceInfo,
    },
    /// [`Event::Progress`].
    Progress {
        /// Seconds transcoded.
        seconds: f64,
    },
    /// [`Event::Init`]; `length` bytes follow.
    Init {
        /// Rendition name.
        rendition: String,
        /// Its track.
        track: Track,
        /// Declared bit rates.
        declared: packager::Bitrates,
        /// Bytes that follow.
        length: u64,
    },
    /// [`Event::Segment`]; `length` bytes follow.
    Segment {
        /// Rendition name.
        rendition: String,
        /// Its number.
        sequence: u64,
        /// Its timing and size.
        info: packager::SegmentInfo,
        /// Bytes that follow.
        length: u64,
    },
    /// The run succeeded (the last frame).
    Finished {
        /// What it produced.
        summary: Summary,
    },
    /// The source is refused (the last frame).
    Refused {
        /// Stable code.
        code: String,
        /// Creator-readable reason.
        message: String,
    },
    /// The run failed on our side (the last frame).
    Failed {
        /// What failed.
        message: String,
    },
}

/// Writes the child's frames.
pub struct FrameWriter<W> {
    out: W,
}

impl<W: Write> FrameWriter<W> {
    /// Frames into `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn frame(&mut self, frame: &Frame, payload: &[u8]) -> std::io::Result<()> {
        let line = serde_json::to_string(frame).map_err(std::io::Error::other)?;
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.write_all(payload)?;
        // Segments go out as they are cut: the parent uploads them while
        // the encode goes on.
        self.out.flush()
    }

    /// Writes a pipeline event (live-only events do not occur here and
    /// are skipped).
    pub fn event(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::Probed { duration } => self.frame(&Frame::Probed { duration }, &[]),
            Event::Source(source) => self.frame(&Frame::Source { source }, &[]),
            Event::Progress(seconds) => self.frame(&Frame::Progress { seconds }, &[]),
            Event::Init {
                rendition,
                track,
                declared,
                bytes,
            } => self.frame(
                &Frame::Init {
                    rendition,
                    track,
                    declared,
                    length: bytes.len() as u64,
                },
                &bytes,
            ),
            Event::Segment {
                rendition,
                sequence,
                info,
                bytes,
            } => self.frame(
                &Frame::Segment {
                    rendition,
                    sequence,
                    info,
                    length: bytes.len() as u64,
                },
                &bytes,
            ),
            Event::Gap { .. } | Event::Part { .. } | Event::Degraded { .. } => Ok(()),
        }
    }

    /// Writes the run's outcome, the last frame.
    pub fn outcome(&mut self, result: Result<Summary, TranscodeError>) -> std::io::Result<()> {
        let frame = match result {
            Ok(summary) => Frame::Finished { summary },
            Err(TranscodeError::Input { code, message }) => Frame::Refused {
                code: code.to_owned(),
                message,
            },
            Err(other) => Frame::Failed {
                message: other.to_string(),
            },
        };
        self.frame(&frame, &[])
    }
}

/// Reads a child's frames, forwarding its events, until its outcome.
async fn read_frames<R>(
    out: &mut R,
    events: &mpsc::Sender<Event>,
) -> Result<Result<Summary, TranscodeError>, String>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut *out)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading the child's output: {e}"))?;
        if read == 0 || line.last() != Some(&b'\n') {
            return Err("the child's output ended before its outcome".to_owned());
        }
        let frame: Frame = serde_json::from_slice(&line)
            .map_err(|e| format!("the child's output is not a frame: {e}"))?;
        let event = match frame {
            Frame::Probed { duration } => Event::Probed { duration },
            Frame::Source { source } => Event::Source(source),
            Frame::Progress { seconds } => Event::Progress(seconds),
            Frame::Init {
                rendition,
                track,
                declared,
                length,
            } => Event::Init {
                rendition,
                track,
                declared,
                bytes: read_payload(out, length).await?,
            },
            Frame::Segment {
                rendition,
                sequence,
                info,
                length,
            } => Event::Segment {
                rendition,
                sequence,
                info,
                bytes: read_payload(out, length).await?,
            },
            Frame::Finished { summary } => return Ok(Ok(summary)),
            Frame::Refused { code, message } => {
                return Ok(Err(TranscodeError::Input {
                    code: super::error::input_code(&code),
                    message,
                }))
            }
            Frame::Failed { message } => return Ok(Err(TranscodeError::Internal(message))),
        };
        if events.send(event).await.is_err() {
            return Ok(Err(TranscodeError::Internal(
                "the uploader stopped".to_owned(),
            )));
        }
    }
}

/// The `length` bytes that follow a frame's line.
async fn read_payload<R>(out: &mut R, length: u64) -> Result<Bytes, String>
where
    R: tokio::io::AsyncRead + Unpin,
{
    if length > MAX_PAYLOAD {
        return Err(format!("the child announced {length} bytes"));
    }
    // Memory follows the bytes that arrive, not the length announced.
    let mut bytes = Vec::with_capacity(length.min(8 << 20) as usize);
    out.take(length)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading a segment from the child: {e}"))?;
    if bytes.len() as u64 != length {
        return Err(format!(
            "the child's segment ended at {} of {length} bytes",
            bytes.len()
        ));
    }
    Ok(Bytes::from(bytes))
}

/// `flag` and `value` as JSON, when `wanted` (the child's default otherwise).
fn json_arg(flag: &str, value: &impl serde::Serialize, wanted: bool) -> Vec<String> {
    match serde_json::to_string(value) {
        Ok(json) if wanted => vec![flag.to_owned(), json],
        _ => Vec::new(),
    }
}

/// What a child transcodes: a stored source.
#[derive(Debug, Clone)]
pub struct SourceTarget {
    /// Its asset.
    pub asset: AssetId,
    /// Its version.
    pub version: u32,
    /// Its length in bytes.
    pub length: u64,
    /// What of it (a chunk's video, with or without the audio).
    pub scope: cascade_schemas::chunks::Scope,
    /// A corrective take's rate scale per rung (`TranscodeConfig::rate_scale`).
    pub rate_scale: std::collections::BTreeMap<String, f64>,
}

/// Runs the pipeline in children of `program`.
#[derive(Debug, Clone)]
pub struct ChildTranscoder {
    program: PathBuf,
    /// Arguments before the subcommand (`--config FILE`).
    leading: Vec<OsString>,
    /// Address space limit (`RLIMIT_AS`), bytes; `None`: none.
    memory_limit: Option<u64>,
}

impl ChildTranscoder {
    /// Transcodes with `program [leading...] transcode-source ...`, its
    /// address space limited to `memory_limit` bytes.
    pub fn new(program: PathBuf, leading: Vec<OsString>, memory_limit: Option<u64>) -> Self {
        Self {
            program,
            leading,
            memory_limit,
        }
    }

    /// Runs the pipeline on `source` with `encoder` in a child, sending
    /// its events to `events`, until it finishes or `cancel` is set (then
    /// the child is killed).
    pub async fn run(
        &self,
        source: SourceTarget,
        encoder: VideoEncoder,
        events: mpsc::Sender<Event>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Summary, TranscodeError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.leading)
            .arg(SUBCOMMAND)
            .args(["--asset", &source.asset.to_string()])
            .args(["--version", &source.version.to_string()])
            .args(["--length", &source.length.to_string()])
            .args(["--encoder", encoder.ffmpeg_name()])
            .args(json_arg("--scope", &source.scope, !source.scope.is_whole()))
            .args(json_arg(
                "--rate-scale",
                &source.rate_scale,
                !source.rate_scale.is_empty(),
            ))
            // Its spans join the job's trace, under this one.
            .args(
                cascade_platform::tracecontext::current_traceparent()
                    .map(|parent| ["--traceparent".to_owned(), parent])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        super::isolated::contain(&mut command, self.memory_limit, None);
        let mut child = command.spawn().map_err(|e| {
            TranscodeError::Internal(format!(
                "starting the transcode child ({}): {e}",
                self.program.display()
            ))
        })?;
        let stdout = child.stdout.take().ok_or_else(|| {
            TranscodeError::Internal("the transcode child has no stdout".to_owned())
        })?;
        let mut stdout = tokio::io::BufReader::with_capacity(1 << 20, stdout);
        let cancelled = async {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = read_frames(&mut stdout, &events) => outcome,
            () = cancelled => {
                let _ = child.kill().await;
                return Err(TranscodeError::Cancelled);
            }
        };
        let status = child.wait().await.map_err(|e| {
            TranscodeError::Internal(format!("waiting for the transcode child: {e}"))
        })?;
        use std::os::unix::process::ExitStatusExt;
        // A child ends with its outcome whatever the source does; one that
        // ended without it died on the source (a signal: a crash or the
        // memory limit; a panic's exit code).
        match (outcome, status.signal()) {
            (Ok(result), _) => result,
            (Err(reason), signal) => {
                tracing::warn!(asset_id = %source.asset, ?signal, %status, reason, "the transcode child died");
                Err(TranscodeError::Crashed(match signal {
                    Some(signal) => format!(
                        "the transcode child died on signal {signal} (a decoder crash or its memory limit)"
                    ),
                    None => format!("the transcode child ended without an outcome ({status})"),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_packager::{AudioTrack, Bitrates, SegmentInfo};

    fn events() -> Vec<Event> {
        let asc = [0x11, 0x90];
        let track = Track::Audio(AudioTrack::new(&asc, 48_000, 2).unwrap());
        vec![
            Event::Probed {
                duration: Some(12.5),
            },
            Event::Progress(1.5),
            Event::Init {
                rendition: "audio".to_owned(),
                track,
                declared: Bitrates {
                    peak: 170_000,
                    average: 140_000,
                },
                bytes: Bytes::from_static(b"init\nbytes"),
            },
            Event::Segment {
                rendition: "audio".to_owned(),
                sequence: 1,
                info: SegmentInfo {
                    sequence_number: 1,
                    start: 0,
                    duration: 96_256,
                    size: 7,
                },
                bytes: Bytes::from_static(b"\n{seg}\n"),
            },
        ]
    }

    /// The frames a child would write for `events` and `outcome`.
    fn written(outcome: Result<Summary, TranscodeError>) -> Vec<u8> {
        let mut writer = FrameWriter::new(Vec::new());
        for event in events() {
            writer.event(event).unwrap();
        }
        writer.outcome(outcome).unwrap();
        writer.out
    }

    async fn read(bytes: Vec<u8>) -> (Vec<Event>, Result<Result<Summary, TranscodeError>, String>) {
        let (sender, mut received) = mpsc::channel(16);
        let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(bytes));
        let outcome = read_frames(&mut reader, &sender).await;
        drop(sender);
        let mut got = Vec::new();
        while let Some(event) = received.recv().await {
            got.push(event);
        }
        (got, outcome)
    }

    #[tokio::test]
    async fn events_and_the_outcome_cross_the_pipe_intact() {
        let summary = Summary {
            renditions: Vec::new(),
            duration: 12.0,
            rung_busy: vec![("720p".to_owned(), Duration::from_millis(1500))],
        };
        let (got, outcome) = read(written(Ok(summary))).await;
        assert_eq!(format!("{got:?}"), format!("{:?}", events()));
        let summary = outcome.unwrap().unwrap();
        assert_eq!(summary.duration, 12.0);
        assert_eq!(summary.rung_busy[0].1, Duration::from_millis(1500));

        let (_, refused) = read(written(Err(TranscodeError::Input {
            code: "truncated",
            message: "the file ends at 3.2 s".to_owned(),
        })))
        .await;
        match refused.unwrap() {
            Err(TranscodeError::Input { code, message }) => {
                assert_eq!(
                    (code, message.as_str()),
                    ("truncated", "the file ends at 3.2 s")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cut_or_garbled_stream_is_an_error_not_an_outcome() {
        let whole = written(Err(TranscodeError::Internal("x".to_owned())));
        // Cut anywhere before the outcome's line ends.
        for cut in [0, 10, whole.len() / 2, whole.len() - 1] {
            let (_, outcome) = read(whole[..cut].to_vec()).await;
            assert!(outcome.is_err(), "cut at {cut}");
        }
        let (_, garbled) = read(b"hello\n".to_vec()).await;
        assert!(garbled.is_err());
        let (_, huge) = read(
            format!(
                "{}\n",
                serde_json::json!({"frame": "init", "rendition": "a", "track": null, "declared": null, "length": MAX_PAYLOAD + 1})
            )
            .into_bytes(),
        )
        .await;
        assert!(huge.is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a (compromised) child writes, the worker gets events and
        /// an outcome or an error: never a panic, never an allocation past
        /// the announced limits.
        #[test]
        fn any_bytes_from_a_child_are_an_outcome_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in 0usize..2048,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let _ = read(bytes).await;
                // A real stream cut anywhere, with noise after the cut.
                let mut whole = written(Err(TranscodeError::Internal("x".to_owned())));
                whole.truncate(cut.min(whole.len()));
                whole.extend_from_slice(b"\n{\"frame\":\"segment\"}\n");
                let _ = read(whole).await;
            });
        }
    }

    /// Runs a "child" that is a shell running `script`, until `cancel`.
    async fn run_shell(script: &str, cancel: Arc<AtomicBool>) -> Result<Summary, TranscodeError> {
        let (events, _received) = mpsc::channel(16);
        let child = ChildTranscoder::new(
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), script.into(), "transcode".into()],
            Some(512 << 20),
        );
        let source = SourceTarget {
            asset: AssetId::new(),
            version: 1,
            length: 10,
            scope: cascade_schemas::chunks::Scope::WHOLE,
            rate_scale: Default::default(),
        };
        child
            .run(source, VideoEncoder::Libx264, events, cancel)
            .await
    }

    #[tokio::test]
    async fn a_child_that_dies_on_a_signal_is_a_crash_and_one_that_hangs_is_cancelled() {
        let never = || Arc::new(AtomicBool::new(false));
        let crashed = run_shell("kill -SEGV $$", never()).await;
        assert!(
            matches!(crashed, Err(TranscodeError::Crashed(_))),
            "{crashed:?}"
        );
        let exits = run_shell("exit 101", never()).await;
        assert!(
            matches!(exits, Err(TranscodeError::Crashed(_))),
            "{exits:?}"
        );
        // Its own failure, reported as an outcome: retried as ours.
        let failed = run_shell(
            r#"echo '{"frame":"failed","message":"storage: timed out"}'"#,
            never(),
        )
        .await;
        assert!(
            matches!(&failed, Err(TranscodeError::Internal(m)) if m == "storage: timed out"),
            "{failed:?}"
        );
        let cancel = never();
        let started = std::time::Instant::now();
        let hangs = tokio::spawn(run_shell("sleep 30", cancel.clone()));
        cancel.store(true, Ordering::Relaxed);
        let hung = hangs.await.unwrap();
        assert!(matches!(hung, Err(TranscodeError::Cancelled)), "{hung:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
