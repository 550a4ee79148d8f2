//! `cascade probe-source`: the child process the ingest role probes an
//! untrusted upload in (`cascade_workers::transcode::isolated`). It reads
//! the stored source by ranged GETs (or a watched file), probes it with the
//! same code as in-process, and prints one JSON line: the report.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_platform::storage::reader::ObjectReader;
use cascade_platform::{Config, ObjectStore};
use cascade_schemas::{AssetId, ObjectKey};
use cascade_workers::probe::{self as pipeline, ProbeReport};
use cascade_workers::transcode::TranscodeError;

/// What to probe: a stored source, or a local file.
#[derive(clap::Args)]
pub struct ProbeSourceArgs {
    /// The asset whose stored source to probe.
    #[arg(long, requires_all = ["version", "length"], conflicts_with = "file")]
    asset: Option<AssetId>,
    /// The source's version.
    #[arg(long)]
    version: Option<u32>,
    /// The source's length in bytes.
    #[arg(long)]
    length: Option<u64>,
    /// A local file instead.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// Probes and prints the report; exit 0 whenever a report is printed.
pub async fn run(args: ProbeSourceArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let transcode = config.transcode.clone();
    let result = match (args.file, args.asset, args.version, args.length) {
        (Some(path), _, _, _) => {
            tokio::task::spawn_blocking(move || pipeline::probe_file(&path, &transcode)).await?
        }
        (None, Some(asset), Some(version), Some(length)) => {
            match ObjectStore::from_config(&config.storage).await {
                Ok(store) => {
                    let reader = ObjectReader::new(
                        store,
                        ObjectKey::source_version(asset, version),
                        length,
                        tokio::runtime::Handle::current(),
                    );
                    tokio::task::spawn_blocking(move || pipeline::probe_reader(reader, &transcode))
                        .await?
                }
                Err(e) => Err(TranscodeError::Internal(format!(
                    "opening the object store: {e}"
                ))),
            }
        }
        _ => anyhow::bail!("probe-source needs --file, or --asset, --version and --length"),
    };
    let line = serde_json::to_string(&ProbeReport::from(result))?;
    // A parent that gave up (its request was cancelled) closed the pipe:
    // nobody is left to tell.
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(_) => Ok(ExitCode::FAILURE),
    }
}
