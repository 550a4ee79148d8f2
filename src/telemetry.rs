//! Logging and traces. Logs: human-readable on a terminal, JSON lines
//! otherwise (or as configured), filtered by `log.filter`. Traces, when
//! `traces.otlp_endpoint` is set: every span at info and above goes to an
//! OpenTelemetry tracer exported as OTLP/JSON ([`crate::traces`]), whatever
//! the log filter says.

use std::io::IsTerminal;

use cascade_platform::config::{LogConfig, LogFormat, TracesConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::traces::OtlpJsonExporter;

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by the export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("cascade: flushing traces: {error}");
            }
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter`.
/// Export requests run on `runtime`.
pub fn init(log: &LogConfig, traces: &TracesConfig, runtime: &tokio::runtime::Handle) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = traces.otlp_endpoint.as_ref().and_then(|url| {
        match OtlpJsonExporter::new(
            url.clone(),
            traces.service_name.clone(),
            traces.export_timeout,
            runtime.clone(),
        ) {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    // A trace is kept or dropped where it starts; children follow.
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        traces.sample_ratio,
                    ))))
                    .build(),
            ),
            Err(error) => {
                eprintln!("cascade: traces off: {error}");
                None
            }
        }
    });
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cascade"))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .init();
    Telemetry { provider }
}
