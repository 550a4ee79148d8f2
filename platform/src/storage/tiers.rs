//! Storage tiers: the `hot` store (`storage`) and the colder ones of
//! `storage.tiers`, each its own [`ObjectStore`] (a bucket, another S3
//! store, or a directory). Object keys are the same in every tier; which
//! tier holds a rendition's media is recorded in Postgres
//! (`renditions.tier`), never found by probing the tiers.

use cascade_schemas::ObjectKey;

use crate::config::StorageConfig;
use crate::storage::{ObjectStore, StorageError};

/// Name of the tier `storage` itself is.
pub const HOT: &str = "hot";

/// One tier.
#[derive(Clone)]
pub struct Tier {
    /// Its name.
    pub name: String,
    /// Where its objects are.
    pub store: ObjectStore,
    /// Price of a GB-month, for estimates.
    pub price_per_gb_month: f64,
}

/// A tier could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("listing tier {tier}: {source}")]
pub struct TierListError {
    /// The tier.
    pub tier: String,
    /// The store's error.
    pub source: StorageError,
}

/// Every configured tier, `hot` first, then warmest to coldest. Cheap to clone.
#[derive(Clone)]
pub struct Tiers {
    tiers: std::sync::Arc<Vec<Tier>>,
}

impl Tiers {
    /// Opens every tier of `config` (`hot` is `config`'s own store).
    pub async fn from_config(config: &StorageConfig) -> Result<Self, StorageError> {
        let hot = ObjectStore::from_config(config).await?;
        Self::with_hot(config, hot).await
    }

    /// The tiers of `config` around an already opened `hot` store.
    pub async fn with_hot(config: &StorageConfig, hot: ObjectStore) -> Result<Self, StorageError> {
        let mut tiers = vec![Tier {
            name: HOT.to_owned(),
            store: hot,
            price_per_gb_month: config.price_per_gb_month,
        }];
        for tier in &config.tiers {
            let own = StorageConfig {
                local_root: tier.local_root.clone().unwrap_or_default(),
                s3: tier.s3.clone(),
                tiers: Vec::new(),
                ..config.clone()
            };
            tiers.push(Tier {
                name: tier.name.clone(),
                store: ObjectStore::from_config(&own).await?,
                price_per_gb_month: tier.price_per_gb_month,
            });
        }
        Ok(Self {
            tiers: std::sync::Arc::new(tiers),
        })
    }

    /// Only `hot`, on `store` (tests, tools).
    pub fn only_hot(store: ObjectStore) -> Self {
        Self {
            tiers: std::sync::Arc::new(vec![Tier {
                name: HOT.to_owned(),
                store,
                price_per_gb_month: 0.0,
            }]),
        }
    }

    /// The `hot` tier's store.
    pub fn hot(&self) -> &ObjectStore {
        &self.tiers[0].store
    }

    /// Every tier, `hot` first.
    pub fn all(&self) -> &[Tier] {
        &self.tiers
    }

    /// Every key under `prefix`, in every tier (during a move, a key is
    /// listed once per tier holding it).
    pub async fn keys_everywhere(&self, prefix: &str) -> Result<Vec<ObjectKey>, TierListError> {
        let mut keys = Vec::new();
        for tier in self.tiers.iter() {
            let listed = tier
                .store
                .list(prefix)
                .await
                .map_err(|source| TierListError {
                    tier: tier.name.clone(),
                    source,
                })?;
            keys.extend(
                listed
                    .into_iter()
                    .map(|meta| ObjectKey::from_stored(meta.key)),
            );
        }
        Ok(keys)
    }

    /// The store of tier `name`.
    pub fn store(&self, name: &str) -> Option<&ObjectStore> {
        self.tiers.iter().find(|t| t.name == name).map(|t| &t.store)
    }
}
