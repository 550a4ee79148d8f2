//! The `noop` job: does nothing, or sleeps for `sleep_ms` (cancellably).
//! Queue diagnostics, `cascade bench queue`, and the queue's crash tests.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::runner::{JobContext, JobError, JobHandler};

/// Handler for [`cascade_schemas::job_kind::NOOP`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

impl JobHandler for NoopHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        async move {
            let sleep_ms = ctx.payload.get("sleep_ms").and_then(|v| v.as_u64()).unwrap_or(0);
            if let Some(message) = ctx.payload.get("fail").and_then(|v| v.as_str()) {
                let retryable = ctx.payload.get("retryable").and_then(|v| v.as_bool()).unwrap_or(true);
                return Err(if retryable {
                    JobError::Retryable(message.to_owned())
                } else {
                    JobError::Permanent(message.to_owned())
                });
            }
            if sleep_ms > 0 {
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Err(JobError::Retryable("cancelled".to_owned())),
                    _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                }
            }
            Ok(())
        }
        .boxed()
    }
}
