//! Cascade's plumbing, shared by the ingest, workers and origin roles:
//!
//! - [`config`]: the one typed configuration tree (TOML plus `CASCADE_*` overrides);
//! - [`db`]: the Postgres pool and the migration runner;
//! - [`playback_token`]: signed playback tokens (minted by ingest, checked by the origin);
//! - [`queue`]: the Postgres job queue (leases, heartbeats, retries, LISTEN/NOTIFY);
//!   [`listen`]: a reconnecting LISTEN connection (job wake-ups, playback changes);
//!   [`queue_metrics`] samples its depth for Prometheus;
//! - [`metrics`]: Prometheus metrics (the registry every role registers into);
//! - [`tracecontext`]: W3C trace context carried from API requests to jobs;
//! - [`storage`]: the object store (S3-compatible or a local directory);
//! - the model layer, typed functions over the rows with the state rules
//!   enforced in their SQL (every transition a conditional update naming the
//!   state it leaves): [`environments`], [`api_keys`], [`assets`], [`uploads`],
//!   [`watch_files`], [`webhook_endpoints`], [`direct_uploads`], [`live_streams`],
//!   [`tiering`] (which storage tier holds each rendition, and moves),
//!   [`archive`] (the archive tier: keep the source, rebuild on a play).
//!
//! Everything here is I/O at the edges of the system; domain names come from
//! `cascade_schemas`.

pub mod api_keys;
pub mod archive;
pub mod assets;
pub mod chunks;
pub mod config;
pub mod db;
pub mod direct_uploads;
pub mod environments;
pub mod listen;
pub mod live_streams;
pub mod metrics;
pub mod outage;
pub mod outbound;
pub mod playback_token;
pub mod queue;
pub mod queue_metrics;
pub mod storage;
pub mod tiering;
pub mod tracecontext;
pub mod uploads;
pub mod watch_files;
pub mod webhook_endpoints;

pub use config::Config;
pub use queue::{NewJob, Queue};
pub use storage::{ObjectStore, StorageError};
