//! Cascade's workers: the job runner that executes queued jobs, the
//! transcoder that turns an asset's source into a CMAF ladder, and the live
//! ladder of RTMP streams (run by the ingest process holding the
//! connection, see [`live`]); the purges of deleted assets and CDN copies
//! ([`purge`], [`cdn_purge`]), the moves between storage tiers
//! ([`tiering`]) and the archive tier ([`archive`]: keep the source, rebuild
//! on a play).
//!
//! The runner claims jobs from the Postgres queue (`cascade_platform::queue`),
//! keeps each lease alive with heartbeats while its handler runs, and reports
//! the outcome. A handler says whether a failure is worth retrying; the queue
//! applies backoff and dead-lettering. FFmpeg types stay inside this crate:
//! other crates reach the FFmpeg side through the [`probe`] facade, and the
//! transcoder checks each version with a [`transcode::gate::PublishGate`]
//! before publishing it.

pub mod archive;
pub mod cdn_purge;
pub mod live;
pub mod metrics;
pub mod noop;
pub mod probe;
pub mod purge;
pub mod runner;
pub mod tiering;
pub mod transcode;
pub mod webhooks;

pub use runner::{HandlerRegistry, JobContext, JobError, JobHandler, Runner};
