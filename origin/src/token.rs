//! Signed playback tokens: `<expiry>.<base64url(HMAC-SHA256(key, "<playback_id>:<expiry>"))>`,
//! expiry in unix seconds. A token is bound to one playback id and carries
//! its own expiry, so it needs no state on the origin; rotating the key
//! revokes every token at once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cascade_schemas::PlaybackId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted: 20 digits, a dot and 43 base64url characters.
const MAX_TOKEN_LEN: usize = 64;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not in the `<expiry>.<signature>` form.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match this playback id and expiry (or no key is configured).
    #[error("signature mismatch")]
    BadSignature,
    /// Authentic but past its expiry.
    #[error("token expired")]
    Expired,
}

fn mac(key: &[u8], playback_id: &PlaybackId, expiry: u64) -> Option<HmacSha256> {
    // HMAC takes keys of any length; the error arm is unreachable in practice.
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(playback_id.as_str().as_bytes());
    mac.update(b":");
    mac.update(expiry.to_string().as_bytes());
    Some(mac)
}

/// A token for `playback_id` valid until `expiry` (unix seconds), for the
/// API to hand to players as `?token=`.
pub fn sign(key: &[u8], playback_id: &PlaybackId, expiry: u64) -> String {
    let signature = mac(key, playback_id, expiry)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{expiry}.{signature}")
}

/// Checks `token` for `playback_id` at time `now` (unix seconds). An empty
/// key refuses every token.
pub fn verify(
    key: &[u8],
    playback_id: &PlaybackId,
    token: &str,
    now: u64,
) -> Result<(), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (expiry_text, signature_text) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if expiry_text.is_empty() || !expiry_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expiry: u64 = expiry_text.parse().map_err(|_| TokenError::Malformed)?;
    // Only the canonical spelling is signed ("007" is not "7").
    if expiry.to_string() != expiry_text {
        return Err(TokenError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_text)
        .map_err(|_| TokenError::Malformed)?;
    if key.is_empty() {
        return Err(TokenError::BadSignature);
    }
    let mac = mac(key, playback_id, expiry).ok_or(TokenError::BadSignature)?;
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if expiry <= now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> PlaybackId {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_expiry_and_binding() {
        let key = b"secret key";
        let a = pid("abcdefghijklmnopqrstuvwx");
        let b = pid("bbcdefghijklmnopqrstuvwx");
        let token = sign(key, &a, 2_000);
        assert!(token.starts_with("2000."));
        assert_eq!(verify(key, &a, &token, 1_999), Ok(()));
        assert_eq!(verify(key, &a, &token, 2_000), Err(TokenError::Expired));
        assert_eq!(
            verify(key, &b, &token, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"other", &a, &token, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"", &a, &token, 1_000),
            Err(TokenError::BadSignature)
        );
        // Moving the expiry invalidates the signature.
        let (_, sig) = token.split_once('.').unwrap();
        assert_eq!(
            verify(key, &a, &format!("9999.{sig}"), 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens() {
        let a = pid("abcdefghijklmnopqrstuvwx");
        for bad in [
            "",
            ".",
            "12",
            "x.abc",
            "-1.abc",
            "12.!!",
            "012.abc",
            &"9".repeat(70),
        ] {
            assert_eq!(
                verify(b"k", &a, bad, 0),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }
}
