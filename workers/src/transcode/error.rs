//! Transcode failures, split into the creator's problem and ours.

/// Why a transcode failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The source cannot be turned into a ladder; retrying will not help.
    /// `code` is stable (API clients match on it); `message` is for the creator.
    #[error("{message}")]
    Input {
        /// Stable error code.
        code: &'static str,
        /// Creator-readable explanation.
        message: String,
    },
    /// Something on our side failed (encoder, storage, database); worth a retry.
    #[error("{0}")]
    Internal(String),
    /// The job was cancelled or the worker is shutting down.
    #[error("transcode cancelled")]
    Cancelled,
}

impl TranscodeError {
    pub(crate) fn input(code: &'static str, message: impl Into<String>) -> Self {
        Self::Input {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{context}: {error}"))
    }
}
