//! The publish gate's checks (`transcode.qa_gate`): `cascade qa` over a
//! version read back from the object store, against the stored source (a
//! live recording, which has none, is checked for itself).
//! It lives in the binary because the `qa` crate depends on `workers`.

use std::sync::Arc;
use std::time::Instant;

use cascade_platform::config::TranscodeConfig;
use cascade_platform::storage::reader::ObjectReader;
use cascade_platform::ObjectStore;
use cascade_qa::ladder::ExpectedLadder;
use cascade_qa::media::ReferenceMedia;
use cascade_qa::report::{Report, Status};
use cascade_qa::sampled::{ReadSeek, SourceOpener};
use cascade_qa::thresholds::Thresholds;
use cascade_qa::GateOptions;
use cascade_schemas::ObjectKey;
use cascade_workers::transcode::gate::{
    GateFailure, GateReport, GateRequest, PublishGate, RenditionQuality, StoredSource as GateSource,
};
use futures::future::BoxFuture;
use futures::FutureExt;

/// `cascade qa`'s checks as the transcode handler's gate.
pub struct QaGate {
    store: ObjectStore,
    ladder: ExpectedLadder,
    thresholds: Thresholds,
}

impl QaGate {
    pub fn new(store: ObjectStore, transcode: &TranscodeConfig) -> Self {
        Self {
            store,
            ladder: ExpectedLadder::from_config(transcode),
            thresholds: Thresholds::default(),
        }
    }
}

impl PublishGate for QaGate {
    fn check(&self, request: GateRequest) -> BoxFuture<'static, Result<GateReport, String>> {
        let (store, ladder, thresholds) = (
            self.store.clone(),
            self.ladder.clone(),
            self.thresholds.clone(),
        );
        async move {
            let started = Instant::now();
            let max_peak_to_target = thresholds.max_peak_to_target;
            let manifests = vec![
                ObjectKey::hls_master(request.asset, request.version),
                ObjectKey::dash_manifest(request.asset, request.version),
            ];
            let options = match request.source {
                Some(source) => against_source(store, manifests, source, ladder, thresholds),
                // A live recording: the version checked for itself.
                None => GateOptions {
                    store,
                    manifests,
                    reference: futures::future::ready(Ok(ReferenceMedia::default())).boxed(),
                    source: None,
                    reference_name: "no source (a live recording)".to_owned(),
                    ladder: None,
                    thresholds,
                },
            };
            // Both manifests: they name the same segments, and each has
            // its own rules (HLS BANDWIDTH and EXTINF; the MPD's duration,
            // timeline and delivery model).
            let reports = cascade_qa::gate(options).await.map_err(|e| e.0)?;
            Ok(summarise(
                &reports,
                started.elapsed().as_secs_f64(),
                max_peak_to_target,
            ))
        }
        .boxed()
    }
}

/// The gate's options for a version made from `source`: the source read
/// as FFmpeg's demuxer reads it (packets only, by ranged GETs, no copy, no
/// decoding) while the presentations are, and again for sampled frames.
fn against_source(
    store: ObjectStore,
    manifests: Vec<ObjectKey>,
    source: GateSource,
    ladder: ExpectedLadder,
    thresholds: Thresholds,
) -> GateOptions {
    let reference_name = source.key.as_str().to_owned();
    let stored = Arc::new(StoredSource {
        store: store.clone(),
        source,
        runtime: tokio::runtime::Handle::current(),
    });
    let reader = stored.reader();
    let name = reference_name.clone();
    let reference = async move {
        tokio::task::spawn_blocking(move || {
            cascade_qa::media::analyse_reference_reader(reader, &name)
        })
        .await
        .map_err(|e| format!("reading the source: {e}"))?
    }
    .boxed();
    GateOptions {
        store,
        manifests,
        reference,
        source: Some(stored),
        reference_name,
        ladder: Some(ladder),
        thresholds,
    }
}

/// The stored source, read by ranged GETs: once for the reference, and
/// again by each thread sampling frames.
struct StoredSource {
    store: ObjectStore,
    source: GateSource,
    runtime: tokio::runtime::Handle,
}

impl StoredSource {
    fn reader(&self) -> ObjectReader {
        ObjectReader::new(
            self.store.clone(),
            self.source.key.clone(),
            self.source.size,
            self.runtime.clone(),
        )
    }
}

impl SourceOpener for StoredSource {
    fn open(&self) -> Box<dyn ReadSeek> {
        Box::new(self.reader())
    }
}

/// The reports (HLS first, then DASH) as the asset keeps them: counts and
/// failures of both, per-rendition measures of the first.
/// `max_peak_to_target`: `bitrate.peak`'s limit as a share of the target.
fn summarise(reports: &[Report], seconds: f64, max_peak_to_target: f64) -> GateReport {
    let Some((first, rest)) = reports.split_first() else {
        return GateReport {
            checks_passed: 0,
            checks_failed: 0,
            checks_skipped: 0,
            failures: Vec::new(),
            renditions: Vec::new(),
            seconds,
        };
    };
    let mut summary = summarise_one(first, seconds, max_peak_to_target);
    for report in rest {
        let format = match report.format {
            cascade_qa::report::Format::Hls => "HLS",
            cascade_qa::report::Format::Dash => "DASH",
        };
        let more = summarise_one(report, seconds, max_peak_to_target);
        summary.checks_passed += more.checks_passed;
        summary.checks_failed += more.checks_failed;
        summary.checks_skipped += more.checks_skipped;
        summary
            .failures
            .extend(more.failures.into_iter().map(|mut failure| {
                failure.message = format!("{format}: {}", failure.message);
                failure
            }));
    }
    summary
}

fn summarise_one(report: &Report, seconds: f64, max_peak_to_target: f64) -> GateReport {
    let count = |rendition: &str, status: Status| {
        report
            .checks
            .iter()
            .filter(|c| c.rendition.as_deref() == Some(rendition) && c.status == status)
            .count() as u32
    };
    GateReport {
        checks_passed: report.summary.passed,
        checks_failed: report.summary.failed,
        checks_skipped: report.summary.skipped,
        failures: report
            .failures()
            .map(|c| GateFailure {
                check: c.id.clone(),
                rendition: c.rendition.clone(),
                message: c.message.clone(),
                expected: c.expected.clone(),
                measured: c.measured.clone(),
            })
            .collect(),
        renditions: report
            .renditions
            .iter()
            .map(|r| RenditionQuality {
                name: r.name.clone(),
                kind: match r.kind {
                    cascade_qa::report::MediaKind::Video => "video",
                    cascade_qa::report::MediaKind::Audio => "audio",
                }
                .to_owned(),
                codecs: r.measured.codecs.clone(),
                frames: r.measured.frames,
                duration_s: r.measured.duration_s,
                average_bitrate: r.measured.average_bitrate,
                peak_bitrate: r.measured.peak_bitrate,
                target_bitrate: r.target_bitrate,
                peak_bitrate_limit: r
                    .target_bitrate
                    .map(|target| (target as f64 * max_peak_to_target) as u64),
                passed: count(&r.name, Status::Pass),
                failed: count(&r.name, Status::Fail),
                psnr_y_mean: r.quality.as_ref().map(|q| q.psnr_y_mean),
                psnr_y_min: r
                    .quality
                    .as_ref()
                    .map(|q| q.psnr_y.iter().copied().fold(f64::INFINITY, f64::min)),
                ssim_y_mean: r.quality.as_ref().map(|q| q.ssim_y_mean),
                frames_sampled: r.quality.as_ref().map(|q| q.frames_compared),
            })
            .collect(),
        seconds,
    }
}
