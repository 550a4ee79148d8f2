//! Probing untrusted media in a child process.
//!
//! The ingest role probes every upload when its last byte is stored, in
//! the process that serves the creators' API. A file that crashes FFmpeg's
//! demuxer or decoder, exhausts memory or never finishes would take that
//! process (and every upload and request in it) down with it. Here the
//! probe runs in a child (`cascade probe-source`, this same binary) with a
//! memory limit and a deadline: whatever the file does, the parent gets a
//! report or a refusal. The child reads a stored source by ranged GETs as
//! the in-process probe does (it builds its own storage client from the
//! same config), so no bytes cross the pipe but the report.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cascade_schemas::AssetId;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::error::TranscodeError;
use super::pipeline::ProbeSummary;

/// The child's subcommand.
pub const SUBCOMMAND: &str = "probe-source";

/// What a child probes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeTarget {
    /// An uploaded source in the object store.
    Stored {
        /// Its asset.
        asset: AssetId,
        /// Its version (`1`: the first source).
        version: u32,
        /// Its length in bytes.
        length: u64,
    },
    /// A local file (the watch folder).
    File(PathBuf),
}

impl ProbeTarget {
    /// The child's arguments after [`SUBCOMMAND`].
    fn args(&self) -> Vec<OsString> {
        match self {
            Self::Stored {
                asset,
                version,
                length,
            } => vec![
                "--asset".into(),
                asset.to_string().into(),
                "--version".into(),
                version.to_string().into(),
                "--length".into(),
                length.to_string().into(),
            ],
            Self::File(path) => vec!["--file".into(), path.clone().into_os_string()],
        }
    }
}

/// The one line a child prints on its standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProbeReport {
    /// The source can be transcoded.
    Probed {
        /// Duration from the container, when it says.
        duration: Option<f64>,
        /// A video frame decoded.
        has_video: bool,
        /// An audio frame decoded.
        has_audio: bool,
    },
    /// The source is refused (the creator's problem).
    Refused {
        /// Stable code.
        code: String,
        /// Creator-readable reason.
        message: String,
    },
    /// The probe failed on our side (storage, say): worth a retry.
    Failed {
        /// What failed.
        message: String,
    },
}

impl From<Result<ProbeSummary, TranscodeError>> for ProbeReport {
    fn from(result: Result<ProbeSummary, TranscodeError>) -> Self {
        match result {
            Ok(summary) => Self::Probed {
                duration: summary.duration,
                has_video: summary.has_video,
                has_audio: summary.has_audio,
            },
            Err(TranscodeError::Input { code, message }) => Self::Refused {
                code: code.to_owned(),
                message,
            },
            Err(other) => Self::Failed {
                message: other.to_string(),
            },
        }
    }
}

impl ProbeReport {
    /// Back to what the in-process probe returns.
    pub fn into_result(self) -> Result<ProbeSummary, TranscodeError> {
        match self {
            Self::Probed {
                duration,
                has_video,
                has_audio,
            } => Ok(ProbeSummary {
                duration,
                has_video,
                has_audio,
            }),
            Self::Refused { code, message } => Err(TranscodeError::Input {
                code: super::error::input_code(&code),
                message,
            }),
            Self::Failed { message } => Err(TranscodeError::Internal(message)),
        }
    }
}

/// Runs probes in children of `program`.
#[derive(Debug, Clone)]
pub struct ChildProber {
    program: PathBuf,
    /// Arguments before the subcommand (`--config FILE`).
    leading: Vec<OsString>,
    timeout: Duration,
    /// Address space limit (`RLIMIT_AS`), bytes; `None`: none.
    memory_limit: Option<u64>,
}

/// A child that ran over its deadline is killed and the file refused: a
/// probe reads a header and a few packets, so a file that keeps it busy
/// that long is crafted or broken.
const TIMED_OUT: &str =
    "reading the file took too long; it may be damaged or crafted to stall decoders";
/// A child that died (a crash, or the memory limit) refuses the file.
const CRASHED: &str =
    "the file could not be read: it made the media reader fail; it may be damaged or crafted";

impl ChildProber {
    /// Probes with `program [leading...] probe-source ...`, killed after
    /// `timeout`, its address space limited to `memory_limit` bytes.
    pub fn new(
        program: PathBuf,
        leading: Vec<OsString>,
        timeout: Duration,
        memory_limit: Option<u64>,
    ) -> Self {
        Self {
            program,
            leading,
            timeout,
            memory_limit,
        }
    }

    /// Probes `target` in a child.
    pub async fn probe(&self, target: &ProbeTarget) -> Result<ProbeSummary, TranscodeError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.leading)
            .arg(SUBCOMMAND)
            .args(target.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // CPU seconds: the deadline again, enforced by the kernel, for a
        // child whose parent is gone.
        contain(
            &mut command,
            self.memory_limit,
            Some(self.timeout.as_secs() + 1),
        );
        let mut child = command.spawn().map_err(|e| {
            TranscodeError::Internal(format!(
                "starting the probe ({}): {e}",
                self.program.display()
            ))
        })?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| TranscodeError::Internal("the probe has no stdout".to_owned()))?;
        let run = async {
            // The report is one short line; more is not a report.
            let mut report = Vec::new();
            let read = (&mut stdout).take(64 * 1024).read_to_end(&mut report).await;
            let status = child.wait().await;
            (read, status, report)
        };
        let (read, status, report) = match tokio::time::timeout(self.timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                // Dropping the child (kill_on_drop) kills it.
                tracing::warn!(target = ?target, timeout = ?self.timeout, "the probe ran over its deadline; killed");
                return Err(TranscodeError::input("probe_timeout", TIMED_OUT));
            }
        };
        let status =
            status.map_err(|e| TranscodeError::Internal(format!("waiting for the probe: {e}")))?;
        read.map_err(|e| TranscodeError::Internal(format!("reading the probe's report: {e}")))?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                tracing::warn!(target = ?target, signal, "the probe died on a signal: the file is refused");
                return Err(TranscodeError::input("unreadable_media", CRASHED));
            }
            return Err(TranscodeError::Internal(format!(
                "the probe exited with {status}"
            )));
        }
        let line = String::from_utf8_lossy(&report);
        let report: ProbeReport = serde_json::from_str(line.trim()).map_err(|e| {
            TranscodeError::Internal(format!("the probe's report ({:?}): {e}", line.trim()))
        })?;
        report.into_result()
    }
}

/// Makes `command`'s child die with the process that started it (a
/// SIGKILLed worker or ingest leaves nothing running on) and limits its
/// address space to `memory_limit` bytes and its CPU time to `cpu_seconds`.
pub(crate) fn contain(
    command: &mut tokio::process::Command,
    memory_limit: Option<u64>,
    cpu_seconds: Option<u64>,
) {
    // SAFETY: between fork and exec only prctl and setrlimit run, which
    // are async-signal-safe; the closure takes no locks and allocates
    // nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let limit = |resource, value: u64| {
                let bound = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &bound) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            if let Some(seconds) = cpu_seconds {
                limit(libc::RLIMIT_CPU, seconds)?;
            }
            if let Some(bytes) = memory_limit {
                limit(libc::RLIMIT_AS, bytes)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prober whose "child" is a shell running `script`.
    fn shell(script: &str, timeout: Duration) -> ChildProber {
        ChildProber::new(
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), script.into(), "probe".into()],
            timeout,
            Some(512 << 20),
        )
    }

    fn target() -> ProbeTarget {
        ProbeTarget::File(PathBuf::from("/nowhere/source.mov"))
    }

    #[tokio::test]
    async fn a_childs_report_is_the_probes_result() {
        let ok = shell(
            r#"echo '{"outcome":"probed","duration":12.5,"has_video":true,"has_audio":false}'"#,
            Duration::from_secs(10),
        );
        assert_eq!(
            ok.probe(&target()).await.unwrap(),
            ProbeSummary {
                duration: Some(12.5),
                has_video: true,
                has_audio: false
            }
        );
        let refused = shell(
            r#"echo '{"outcome":"refused","code":"not_media","message":"the file is a PDF"}'"#,
            Duration::from_secs(10),
        );
        match refused.probe(&target()).await {
            Err(TranscodeError::Input { code, message }) => {
                assert_eq!((code, message.as_str()), ("not_media", "the file is a PDF"))
            }
            other => panic!("{other:?}"),
        }
        let failed = shell(
            r#"echo '{"outcome":"failed","message":"storage: timed out"}'"#,
            Duration::from_secs(10),
        );
        assert!(matches!(
            failed.probe(&target()).await,
            Err(TranscodeError::Internal(m)) if m == "storage: timed out"
        ));
        // The child was handed the target.
        let echo = shell(
            r#"[ "$1 $2 $3" = "probe-source --file /nowhere/source.mov" ] && echo '{"outcome":"failed","message":"args ok"}'"#,
            Duration::from_secs(10),
        );
        assert!(matches!(
            echo.probe(&target()).await,
            Err(TranscodeError::Internal(m)) if m == "args ok"
        ));
    }

    #[tokio::test]
    async fn a_child_that_crashes_or_hangs_refuses_the_file_and_nothing_else() {
        let crashes = shell("kill -SEGV $$", Duration::from_secs(10));
        match crashes.probe(&target()).await {
            Err(TranscodeError::Input { code, .. }) => assert_eq!(code, "unreadable_media"),
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        let hangs = shell("sleep 30", Duration::from_millis(300));
        match hangs.probe(&target()).await {
            Err(TranscodeError::Input { code, .. }) => assert_eq!(code, "probe_timeout"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // Garbage on stdout, or an exit code: our failure, retried.
        let garbage = shell("echo hello", Duration::from_secs(10));
        assert!(matches!(
            garbage.probe(&target()).await,
            Err(TranscodeError::Internal(_))
        ));
        let exits = shell("exit 3", Duration::from_secs(10));
        assert!(matches!(
            exits.probe(&target()).await,
            Err(TranscodeError::Internal(_))
        ));
        // The memory limit holds in the child: a gigabyte is refused it
        // (it would report success if it got one).
        let greedy = shell(
            r#"exec python3 -c 'bytearray(1 << 30); print("{\"outcome\":\"failed\",\"message\":\"got it\"}")' 2>/dev/null"#,
            Duration::from_secs(10),
        );
        match greedy.probe(&target()).await {
            Err(TranscodeError::Internal(message)) => {
                assert!(message.starts_with("the probe exited with"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_round_trip() {
        for report in [
            ProbeReport::Probed {
                duration: None,
                has_video: false,
                has_audio: true,
            },
            ProbeReport::Refused {
                code: "truncated".to_owned(),
                message: "the file ends at 1.2 s".to_owned(),
            },
            ProbeReport::Failed {
                message: "x".to_owned(),
            },
        ] {
            let line = serde_json::to_string(&report).unwrap();
            assert_eq!(serde_json::from_str::<ProbeReport>(&line).unwrap(), report);
        }
    }
}
