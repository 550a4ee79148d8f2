//! View counting, for storage tiering: plays of each asset (requests for its
//! top-level manifests) and fetches of each rendition's media segments,
//! counted in memory and written to Postgres in batches
//! (`tiering::record_views`: one transaction per flush, never a write per
//! request).
//!
//! What is counted is what reaches the origin: behind a CDN, requests the
//! CDN answers from its cache are not seen. A played asset still shows as
//! viewed at least once per CDN node per manifest lifetime, which is what
//! "idle for days" needs; view counts over a window are a lower bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use cascade_platform::tiering::{self, ViewCount};
use cascade_schemas::{AssetId, RenditionName};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

/// Shards of the counters, so cores serving different objects rarely meet
/// on one lock.
const SHARDS: usize = 16;

/// Distinct counters held at most between flushes; more are dropped (and
/// logged), so a flood of distinct keys cannot grow memory without bound.
const MAX_KEYS: usize = 1_000_000;

/// What one request counts towards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ViewKey {
    pub(crate) asset: AssetId,
    pub(crate) version: u32,
    /// `None`: a play (a top-level manifest); else a rendition's segment.
    pub(crate) rendition: Option<RenditionName>,
}

/// The tiering policy's promotion rule, applied at each flush to the
/// renditions served from a colder tier since the last one.
#[derive(Debug, Clone, Copy)]
pub struct Promotion {
    /// Views within `window` that bring a rendition back to `hot`.
    pub promote_views: i64,
    /// The window they are counted over.
    pub window: Duration,
}

/// The counters.
pub(crate) struct Views {
    shards: Box<[Mutex<HashMap<ViewKey, u64>>]>,
    hasher: RandomState,
    /// Renditions served from a tier other than hot since the last flush.
    served_cold: Mutex<std::collections::HashSet<ViewKey>>,
}

impl Views {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            served_cold: Mutex::default(),
        }
    }

    /// Counts one request.
    pub(crate) fn record(&self, key: &ViewKey) {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut counts = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(key) {
            *n += 1;
        } else if counts.len() < MAX_KEYS / SHARDS {
            counts.insert(key.clone(), 1);
        }
    }

    /// Notes a rendition's segment served from a colder tier (bounded like
    /// the counters).
    pub(crate) fn record_cold_read(&self, key: &ViewKey) {
        let mut cold = self.served_cold.lock().unwrap_or_else(|e| e.into_inner());
        if cold.len() < MAX_KEYS / SHARDS && !cold.contains(key) {
            cold.insert(key.clone());
        }
    }

    /// Takes every counter (they start again from zero).
    fn take(&self) -> Vec<(ViewKey, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut counts = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(counts.drain());
        }
        out
    }

    /// Puts counts back after a failed write (the next flush retries them).
    fn restore(&self, counts: Vec<(ViewKey, u64)>) {
        for (key, n) in counts {
            let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
            let mut held = shard.lock().unwrap_or_else(|e| e.into_inner());
            if held.len() < MAX_KEYS / SHARDS || held.contains_key(&key) {
                *held.entry(key).or_default() += n;
            }
        }
    }

    /// Writes what was counted since the last flush, then queues the
    /// promotions the counts call for.
    pub(crate) async fn flush(&self, pool: &Pool, bucket: Duration, promotion: Option<Promotion>) {
        // The cold reads are taken before the counts: a request counts
        // itself before it notes its cold read, so every cold read taken
        // here has its view in the counts written below (taken the other
        // way round, a read noted during the write had its mark spent on
        // counts not yet written, and the rendition was never promoted).
        let cold_reads: Vec<ViewKey> = {
            let mut held = self.served_cold.lock().unwrap_or_else(|e| e.into_inner());
            held.drain().collect()
        };
        if !self.write_counts(pool, bucket).await {
            // Judged at the next flush, with these counts written.
            let mut held = self.served_cold.lock().unwrap_or_else(|e| e.into_inner());
            held.extend(cold_reads);
            return;
        }
        let Some(promotion) = promotion else { return };
        let cold: Vec<(AssetId, u32, String)> = cold_reads
            .into_iter()
            .filter_map(|k| Some((k.asset, k.version, k.rendition?.as_str().to_owned())))
            .collect();
        if cold.is_empty() {
            return;
        }
        let promoted = match pool.get().await {
            Ok(client) => {
                tiering::promote_watched(&client, &cold, promotion.promote_views, promotion.window)
                    .await
            }
            Err(error) => Err(error.into()),
        };
        match promoted {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                renditions = n,
                "watched renditions in colder tiers: moves to hot queued"
            ),
            Err(error) => {
                tracing::warn!(error = %error, "cannot queue promotions; the policy's next run will")
            }
        }
    }

    /// Writes the counts taken; false when they could not be (they are
    /// kept for the next flush).
    async fn write_counts(&self, pool: &Pool, bucket: Duration) -> bool {
        let counts = self.take();
        if counts.is_empty() {
            return true;
        }
        let rows: Vec<ViewCount> = counts
            .iter()
            .map(|(key, n)| ViewCount {
                asset: key.asset,
                version: key.version,
                rendition: key.rendition.as_ref().map(|r| r.as_str().to_owned()),
                views: i64::try_from(*n).unwrap_or(i64::MAX),
            })
            .collect();
        let written = match pool.get().await {
            Ok(client) => tiering::record_views(&client, &rows, bucket).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = written {
            tracing::warn!(error = %error, counters = rows.len(), "cannot write view counts; keeping them for the next flush");
            self.restore(counts);
            return false;
        }
        true
    }

    /// Flushes every `every` until `cancel`, and once more then.
    pub(crate) async fn run(
        &self,
        pool: Pool,
        every: Duration,
        bucket: Duration,
        promotion: Option<Promotion>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => self.flush(&pool, bucket, promotion).await,
            }
        }
        self.flush(&pool, bucket, promotion).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_a_failed_write_keeps_them() {
        let views = Views::new();
        let asset = AssetId::new();
        let play = ViewKey {
            asset,
            version: 1,
            rendition: None,
        };
        let segment = ViewKey {
            asset,
            version: 1,
            rendition: Some(RenditionName::new("480p").unwrap()),
        };
        for _ in 0..3 {
            views.record(&play);
        }
        views.record(&segment);
        let mut taken = views.take();
        taken.sort_by_key(|(k, _)| k.rendition.is_some());
        assert_eq!(taken, [(play.clone(), 3), (segment.clone(), 1)]);
        assert!(views.take().is_empty());
        views.restore(taken);
        views.record(&play);
        let mut again = views.take();
        again.sort_by_key(|(k, _)| k.rendition.is_some());
        assert_eq!(again, [(play, 4), (segment, 1)]);
    }
}
