//! Integration tests against the real services `scripts/stack.sh` starts:
//! Postgres for the queue and SeaweedFS for S3. Run through `make test`.

mod chunks;
mod common;
mod ingest;
mod live;
mod live_low_latency;
mod operations;
mod origin;
mod progressive;
mod qa;
mod queue;
mod storage;
mod tiers;
mod transcode;
mod watch;
mod webhooks;
mod workers;
