//! Files taken in from the watch folder, claimed by (name, size,
//! modification time) before anything else, so a restart never ingests one
//! twice and resumes an unfinished one into the same asset.

use cascade_schemas::AssetId;
use deadpool_postgres::GenericClient;

use crate::db::DbError;

/// A watched file's identity.
#[derive(Debug, Clone, Copy)]
pub struct WatchedFile<'a> {
    /// Its name in the folder.
    pub name: &'a str,
    /// Its size.
    pub size: u64,
    /// Its modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// Where a watched file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchState {
    /// Being ingested (or interrupted by a restart).
    Ingesting,
    /// Ingested; moved to `done/`.
    Done,
    /// Refused; moved to `failed/`.
    Failed,
}

impl WatchState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ingesting => "ingesting",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// What claiming a file found.
#[derive(Debug, Clone, Copy)]
pub struct Claimed {
    /// The file's asset (`candidate`, or the one an earlier claim chose).
    pub asset: AssetId,
    /// Where the file is.
    pub state: WatchState,
    /// This call made the claim (the asset does not exist yet).
    pub new: bool,
}

/// Claims `file` for `candidate`, or finds the earlier claim.
pub async fn claim(
    client: &impl GenericClient,
    file: WatchedFile<'_>,
    candidate: AssetId,
) -> Result<Claimed, DbError> {
    let row = client
        .query_one(
            "INSERT INTO watch_files (name, size, mtime_ns, asset_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name, size, mtime_ns) DO UPDATE SET name = EXCLUDED.name
             RETURNING asset_id, state, (xmax = 0) AS inserted",
            &[
                &file.name,
                &(file.size as i64),
                &file.mtime_ns,
                &candidate.as_uuid(),
            ],
        )
        .await?;
    let state = match row.get::<_, &str>(1) {
        "done" => WatchState::Done,
        "failed" => WatchState::Failed,
        _ => WatchState::Ingesting,
    };
    Ok(Claimed {
        asset: AssetId::from(row.get::<_, uuid::Uuid>(0)),
        state,
        new: row.get(2),
    })
}

/// Records where `file` ended.
pub async fn finish(
    client: &impl GenericClient,
    file: WatchedFile<'_>,
    state: WatchState,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE watch_files SET state = $4 WHERE name = $1 AND size = $2 AND mtime_ns = $3",
            &[
                &file.name,
                &(file.size as i64),
                &file.mtime_ns,
                &state.as_str(),
            ],
        )
        .await?;
    Ok(())
}
