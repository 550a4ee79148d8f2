//! Waiting out an outage: one retry loop for every caller that would
//! rather pause than fail when the database or the object store is briefly
//! gone (a job's final writes, a transcode's outputs and source reads).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// First wait between tries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Calls `call` until it succeeds, retrying failures that `retryable`
/// accepts with backoff (250 ms doubling to 5 s) for up to `grace`, and no
/// longer once `cancel` fires. `on_retry` sees each failure retried and the
/// wait before the next try (for logs and health bookkeeping). The last
/// failure is returned when the grace is spent or the failure is final.
pub async fn retry<T, E, F, Fut>(
    grace: Duration,
    cancel: Option<&CancellationToken>,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, Duration),
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + grace;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error)
                if retryable(&error)
                    && Instant::now() + backoff < deadline
                    && !cancel.is_some_and(CancellationToken::is_cancelled) =>
            {
                on_retry(&error, backoff);
                match cancel {
                    Some(cancel) => {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = cancel.cancelled() => {}
                        }
                    }
                    None => tokio::time::sleep(backoff).await,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_what_may_pass_until_it_does_and_nothing_else() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, &str> = retry(
            Duration::from_secs(60),
            None,
            |e| *e == "down",
            |_, _| {},
            || async {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    Err("down")
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        let final_error: Result<(), &str> = retry(
            Duration::from_secs(60),
            None,
            |e| *e == "down",
            |_, _| {},
            || async { Err("bad") },
        )
        .await;
        assert_eq!(final_error, Err("bad"));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let cancelled: Result<(), &str> = retry(
            Duration::from_secs(60),
            Some(&cancel),
            |_| true,
            |_, _| {},
            || async { Err("down") },
        )
        .await;
        assert_eq!(cancelled, Err("down"));
        let out_of_grace: Result<(), &str> = retry(
            Duration::from_millis(100),
            None,
            |_| true,
            |_, _| {},
            || async { Err("down") },
        )
        .await;
        assert_eq!(out_of_grace, Err("down"));
    }
}
