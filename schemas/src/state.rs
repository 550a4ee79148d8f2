//! Asset and job states. The text forms are what Postgres stores and the API
//! returns; they never change once released.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A state name that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {value:?}")]
pub struct UnknownState {
    /// Asset, job, upload, ...
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text form (SQL and JSON).
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState { kind: $kind, value: other.to_owned() }),
                }
            }
        }
    };
}

text_enum!(
    /// Where an asset is in its life: `waiting -> processing -> ready | errored`,
    /// and `ready -> archived -> restoring -> ready` in the archive tier.
    AssetState, "asset", {
        /// Created; no source uploaded yet.
        Waiting => "waiting",
        /// Source received; transcode queued or running.
        Processing => "processing",
        /// Published: manifests and segments are in storage.
        Ready => "ready",
        /// Failed permanently; the asset carries a creator-readable message.
        Errored => "errored",
        /// Idle so long that only its source is kept (the archive tier): its
        /// renditions' objects are deleted. The next play restores it.
        Archived => "archived",
        /// Being rebuilt from its source after a play of the archived asset;
        /// plays are answered 503 with `Retry-After` until it is `ready`.
        Restoring => "restoring",
    }
);

impl AssetState {
    /// In the archive tier: `archived`, or `restoring` from it (nothing
    /// plays until it is `ready` again).
    pub fn is_archived(self) -> bool {
        matches!(self, AssetState::Archived | AssetState::Restoring)
    }

    /// The version that plays while it is still being transcoded
    /// (progressive publish): the `playable` one, only while processing an
    /// asset's first version (a replacement plays once it is ready).
    pub fn growing_version<T>(self, published: Option<T>, playable: Option<T>) -> Option<T> {
        match (self, published) {
            (AssetState::Processing, None) => playable,
            _ => None,
        }
    }
}

text_enum!(
    /// Where a job is in the queue.
    JobState, "job", {
        /// Waiting to run at or after its `run_at` (new, or backing off after a retryable failure).
        Queued => "queued",
        /// Claimed by a worker holding an unexpired lease.
        Running => "running",
        /// Finished successfully.
        Succeeded => "succeeded",
        /// Failed permanently (the error says why); never retried automatically.
        Failed => "failed",
        /// Retryable failures exhausted its attempts; the last error is kept.
        Dead => "dead",
        /// Cancelled by an operator or by the system.
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Where a tus upload is: `receiving -> assembling -> probing -> complete`.
    UploadState, "upload", {
        /// Taking PATCH bodies until the offset reaches the length.
        Receiving => "receiving",
        /// All bytes arrived; the source is being made from them (multipart completion, concatenation).
        Assembling => "assembling",
        /// The source is durable (the client has its answer); the probe runs.
        Probing => "probing",
        /// Done: the source was handed on (or, for a partial upload, waits for a final one).
        Complete => "complete",
    }
);

impl UploadState {
    /// Complete for the client: every byte is durable.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Probing | Self::Complete)
    }
}

text_enum!(
    /// tus concatenation: what part an upload plays.
    ConcatKind, "concatenation", {
        /// An ordinary upload of a whole file.
        None => "none",
        /// A piece of a file, waiting for a final upload to take it.
        Partial => "partial",
        /// The file made of partial uploads, in order.
        Final => "final",
    }
);

text_enum!(
    /// Where a direct upload (a one-time upload URL) is:
    /// `waiting -> uploading -> complete`; `waiting -> cancelled | expired`.
    /// A simple upload that fails goes back to `waiting` (the URL may be
    /// tried again); a tus upload through the URL that is terminated or
    /// expires unfinished ends it (`cancelled`, `expired`).
    DirectUploadState, "direct upload", {
        /// The URL can start one upload until it expires.
        Waiting => "waiting",
        /// An upload through the URL was started (a tus upload created, or
        /// a simple upload streaming); the URL starts no other.
        Uploading => "uploading",
        /// The asset has its source (it is processing, or errored if the
        /// file was not media we can process).
        Complete => "complete",
        /// Cancelled through the API before any upload, or its tus upload
        /// was terminated through the URL; the URL is dead.
        Cancelled => "cancelled",
        /// The URL expired before an upload started, or its tus upload
        /// expired unfinished; the URL is dead.
        Expired => "expired",
    }
);

impl DirectUploadState {
    /// The URL is dead for good: it refuses every request.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired)
    }
}

text_enum!(
    /// How a direct upload's source is sent once it is `uploading`.
    DirectUploadProtocol, "direct upload protocol", {
        /// tus 1.0.0 at the URL (the tus upload's id is the direct upload's).
        Tus => "tus",
        /// One `PUT` of the whole file.
        Simple => "simple",
    }
);

text_enum!(
    /// Who may play an asset.
    PlaybackPolicy, "playback policy", {
        /// Anyone with the playback id.
        Public => "public",
        /// Only with a signed token.
        Signed => "signed",
    }
);

text_enum!(
    /// A live stream's state.
    LiveStreamState, "live stream state", {
        /// No publisher: waiting for one to connect with the stream key.
        Idle => "idle",
        /// A publisher is connected and the ladder is being published.
        Active => "active",
        /// Refuses publishers until enabled again.
        Disabled => "disabled",
    }
);

impl JobState {
    /// Terminal states are never left without an operator's retry.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in AssetState::ALL {
            assert_eq!(s.as_str().parse::<AssetState>().ok(), Some(*s));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().ok(), Some(*s));
        }
        for s in UploadState::ALL {
            assert_eq!(s.as_str().parse::<UploadState>().ok(), Some(*s));
        }
        for s in ConcatKind::ALL {
            assert_eq!(s.as_str().parse::<ConcatKind>().ok(), Some(*s));
        }
        for s in DirectUploadState::ALL {
            assert_eq!(s.as_str().parse::<DirectUploadState>().ok(), Some(*s));
        }
        for s in DirectUploadProtocol::ALL {
            assert_eq!(s.as_str().parse::<DirectUploadProtocol>().ok(), Some(*s));
        }
        for s in LiveStreamState::ALL {
            assert_eq!(s.as_str().parse::<LiveStreamState>().ok(), Some(*s));
        }
        assert!(DirectUploadState::Expired.is_closed() && !DirectUploadState::Complete.is_closed());
        for s in PlaybackPolicy::ALL {
            assert_eq!(s.as_str().parse::<PlaybackPolicy>().ok(), Some(*s));
        }
        assert!("done".parse::<JobState>().is_err());
        assert!(JobState::Dead.is_terminal() && !JobState::Queued.is_terminal());
    }
}
