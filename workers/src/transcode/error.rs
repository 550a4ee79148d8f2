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
    /// The child process decoding the source died (a signal: a decoder
    /// crash, its memory limit). Retried with backoff like an internal
    /// failure; on the last attempt the source is quarantined.
    #[error("{0}")]
    Crashed(String),
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

/// Every `code` of [`TranscodeError::Input`] (what a probe child reports
/// comes back through [`input_code`]).
const INPUT_CODES: [&str; 15] = [
    "decode_too_slow",
    "empty",
    "no_media_streams",
    "no_source",
    "not_media",
    "probe_timeout",
    "source_too_long",
    "too_many_frames",
    "truncated",
    "undecodable",
    "unreadable_media",
    "unreadable_stream",
    "unsupported_codec",
    "unsupported_container",
    "unsupported_dimensions",
];

/// The stable code named `code` (`unreadable_media` for one this build
/// does not know).
pub(crate) fn input_code(code: &str) -> &'static str {
    INPUT_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("unreadable_media")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the transcoder refuses with, found in its source.
    fn codes_in_source() -> Vec<String> {
        let mut codes = Vec::new();
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for call in text.split("TranscodeError::input(").skip(1) {
                    let call = call.trim_start();
                    if let Some(rest) = call.strip_prefix('"') {
                        let code: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if rest[code.len()..].starts_with('"') && !code.is_empty() {
                            codes.push(code);
                        }
                    }
                }
            }
        }
        codes
    }

    #[test]
    fn every_refusal_code_survives_a_probe_child() {
        let codes = codes_in_source();
        assert!(codes.len() > 10, "{codes:?}");
        for code in codes {
            assert_eq!(input_code(&code), code, "add {code} to INPUT_CODES");
        }
        assert_eq!(input_code("from_a_newer_build"), "unreadable_media");
    }
}
