//! SQL migrations, embedded in order. Applied by `cascade migrate` and at
//! start-up (see `cascade_platform::db::migrate`); each runs once, in its own
//! transaction, recorded in `schema_migrations`.

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version, from the file name's number.
    pub version: i32,
    /// Human name, from the file name.
    pub name: &'static str,
    /// The SQL, run as one transaction.
    pub sql: &'static str,
}

/// Every migration, oldest first. Never edit a released one; add a new file.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("../migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "assets",
        sql: include_str!("../migrations/0002_assets.sql"),
    },
    Migration {
        version: 3,
        name: "ingest",
        sql: include_str!("../migrations/0003_ingest.sql"),
    },
    Migration {
        version: 4,
        name: "webhooks",
        sql: include_str!("../migrations/0004_webhooks.sql"),
    },
    Migration {
        version: 5,
        name: "watch_folder",
        sql: include_str!("../migrations/0005_watch_folder.sql"),
    },
    Migration {
        version: 6,
        name: "tus_multipart",
        sql: include_str!("../migrations/0006_tus_multipart.sql"),
    },
    Migration {
        version: 7,
        name: "tus_concatenation",
        sql: include_str!("../migrations/0007_tus_concatenation.sql"),
    },
    Migration {
        version: 8,
        name: "tenancy_and_states",
        sql: include_str!("../migrations/0008_tenancy_and_states.sql"),
    },
    Migration {
        version: 9,
        name: "direct_uploads",
        sql: include_str!("../migrations/0009_direct_uploads.sql"),
    },
    Migration {
        version: 10,
        name: "live_streams",
        sql: include_str!("../migrations/0010_live_streams.sql"),
    },
    Migration {
        version: 11,
        name: "live_relay",
        sql: include_str!("../migrations/0011_live_relay.sql"),
    },
    Migration {
        version: 12,
        name: "job_trace_context",
        sql: include_str!("../migrations/0012_job_trace_context.sql"),
    },
    Migration {
        version: 13,
        name: "progressive_publish",
        sql: include_str!("../migrations/0013_progressive_publish.sql"),
    },
    Migration {
        version: 14,
        name: "storage_tiers",
        sql: include_str!("../migrations/0014_storage_tiers.sql"),
    },
    Migration {
        version: 15,
        name: "media_views",
        sql: include_str!("../migrations/0015_media_views.sql"),
    },
    Migration {
        version: 16,
        name: "archive",
        sql: include_str!("../migrations/0016_archive.sql"),
    },
    Migration {
        version: 17,
        name: "move_job",
        sql: include_str!("../migrations/0017_move_job.sql"),
    },
    Migration {
        version: 18,
        name: "live_segment_gaps",
        sql: include_str!("../migrations/0018_live_segment_gaps.sql"),
    },
    Migration {
        version: 19,
        name: "asset_quality",
        sql: include_str!("../migrations/0019_asset_quality.sql"),
    },
    Migration {
        version: 20,
        name: "transcode_chunks",
        sql: include_str!("../migrations/0020_transcode_chunks.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
