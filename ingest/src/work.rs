//! The error of background work on uploads: the assembly of a source once
//! every byte arrived, the probe's hand-off, the sweeps of expired and
//! interrupted uploads, and the watch folder. It is logged (or written to a
//! watched file's reason file), never sent to a client; what a request runs
//! inline (the final PATCH's assembly) maps to the API's error at the edge.

use cascade_platform::db::DbError;
use cascade_platform::StorageError;

use crate::error::ApiError;
use crate::IngestError;

/// Why background work on an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The database failed (the sweeper tries again).
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// The object store failed (the sweeper tries again).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// What is stored contradicts itself (a bug, or a hand-made change).
    #[error("{0}")]
    Inconsistent(String),
    /// Probing the source and moving the asset on failed.
    #[error("probe: {0}")]
    Probe(String),
    /// The media is not something we can process (watch folder: the reason
    /// a creator reads).
    #[error("{code}: {message}")]
    Refused {
        /// Stable code (from the probe).
        code: &'static str,
        /// Creator-readable reason.
        message: String,
    },
    /// Importing a watched file failed.
    #[error(transparent)]
    Import(#[from] IngestError),
    /// A blocking task (the probe) died.
    #[error("task: {0}")]
    Task(String),
}

impl WorkError {
    /// Whether the same work may succeed later (the database or the store
    /// was unavailable), as opposed to a verdict on the file.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => e.is_retryable(),
            Self::Storage(e) => e.is_retryable(),
            Self::Import(IngestError::Db(e)) => e.is_retryable(),
            Self::Import(IngestError::Storage(e)) => e.is_retryable(),
            Self::Import(IngestError::Queue(cascade_platform::queue::QueueError::Db(e))) => {
                e.is_retryable()
            }
            Self::Probe(_) => true,
            // A probe that died (a panic) says something about the file.
            Self::Task(_) | Self::Inconsistent(_) | Self::Refused { .. } | Self::Import(_) => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for WorkError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::Unavailable(e))
    }
}

impl From<deadpool_postgres::tokio_postgres::Error> for WorkError {
    fn from(e: deadpool_postgres::tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<WorkError> for ApiError {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::Db(db) => db.into(),
            // A multipart upload that vanished: the upload was terminated.
            WorkError::Storage(StorageError::NotFound { .. }) => ApiError::NotFound("upload"),
            WorkError::Storage(storage) => storage.into(),
            WorkError::Refused { code, message } => ApiError::Unprocessable { code, message },
            other => ApiError::Internal(other.to_string()),
        }
    }
}
