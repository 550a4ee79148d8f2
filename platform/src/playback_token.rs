//! Signed playback tokens: minted by ingest (the API and `cascade tokens
//! sign`), checked by the origin on every request for a signed asset.
//! Pure functions over bytes and a caller-supplied clock; no I/O.
//!
//! A token is `<kid>.<expiry>.<signature>`:
//!
//! - `kid`: the id of the signing key, 1-32 of `A-Z a-z 0-9 _ -` ([`KeyId`]);
//! - `expiry`: unix seconds, decimal, canonical (no sign, no leading zero);
//! - `signature`: base64url without padding (43 characters) of
//!   HMAC-SHA256(secret of `kid`, `"<kid>:<playback_id>:<expiry>"`).
//!
//! A token is bound to one playback id and carries its own expiry, so the
//! origin needs no state. Keys are named so they can be rotated: the first
//! key of `playback.signing_keys` signs, every listed key verifies; a token
//! stops working when its key is removed from the list.
//!
//! **Legacy form**: `<expiry>.<signature>` with the signature over
//! `"<playback_id>:<expiry>"` (what Cascade minted before key ids) is still
//! accepted, verified with the key whose id is [`LEGACY_KEY_ID`] (`default`)
//! if one is configured; it is never minted. The two signed messages cannot
//! be confused: a playback id has no `:`, so the legacy message has one
//! colon and the current one two.
//!
//! Verification caps the length before any parsing, refuses non-canonical
//! spellings, and compares signatures in constant time (HMAC's
//! `verify_slice`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cascade_schemas::PlaybackId;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::PlaybackConfig;

type HmacSha256 = Hmac<Sha256>;

/// Id of the key that verifies legacy two-part tokens.
pub const LEGACY_KEY_ID: &str = "default";
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Digits of the largest `u64`.
const MAX_EXPIRY_DIGITS: usize = 20;
/// base64url, no padding, of 32 bytes.
const SIGNATURE_LEN: usize = 43;
/// Longest token accepted: a key id, an expiry, a signature and two dots.
pub const MAX_TOKEN_LEN: usize = MAX_KEY_ID_LEN + 1 + MAX_EXPIRY_DIGITS + 1 + SIGNATURE_LEN;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not in the `<kid>.<expiry>.<signature>` form (or the legacy one), too
    /// long, or not canonically spelled.
    #[error("malformed token")]
    Malformed,
    /// Well formed, but no configured key has its key id.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not match this playback id, key and expiry.
    #[error("signature mismatch")]
    BadSignature,
    /// Authentic but past its expiry.
    #[error("token expired")]
    Expired,
}

/// Why a token could not be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// `playback.signing_keys` is empty.
    #[error("no playback signing key is configured (playback.signing_keys)")]
    NoSigningKey,
    /// The lifetime asked for is under one second or over `playback.max_token_ttl`.
    #[error("the token lifetime must be between 1 second and {} seconds", .max.as_secs())]
    InvalidTtl {
        /// The longest lifetime allowed.
        max: Duration,
    },
}

/// The id of a signing key: 1-32 of `A-Z a-z 0-9 _ -`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// A string that is not a valid [`KeyId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key id {0:?}: use 1-32 of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidKeyId(String);

impl KeyId {
    fn is_valid(s: &str) -> bool {
        (1..=MAX_KEY_ID_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = InvalidKeyId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(s) {
            Ok(Self(s.to_owned()))
        } else {
            // Cap what an error message repeats of its input.
            Err(InvalidKeyId(s.chars().take(64).collect()))
        }
    }
}

impl TryFrom<String> for KeyId {
    type Error = InvalidKeyId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<KeyId> for String {
    fn from(value: KeyId) -> Self {
        value.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One named key: its id and secret.
#[derive(Clone)]
struct Key {
    id: KeyId,
    secret: Vec<u8>,
}

/// The keys that sign and verify tokens; the first one signs. Its `Debug`
/// shows the key ids only.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

impl Keyring {
    /// Keys in order, the signing key first. A key with an empty secret is
    /// left out (it would sign nothing worth trusting); of two keys with the
    /// same id the first wins (the config refuses both cases).
    pub fn new(keys: impl IntoIterator<Item = (KeyId, Vec<u8>)>) -> Self {
        let mut ring = Self::default();
        for (id, secret) in keys {
            if !secret.is_empty() && ring.secret(id.as_str()).is_none() {
                ring.keys.push(Key { id, secret });
            }
        }
        ring
    }

    /// The keys of `playback.signing_keys`.
    pub fn from_config(config: &PlaybackConfig) -> Self {
        Self::new(
            config
                .signing_keys
                .iter()
                .map(|k| (k.id.clone(), k.secret.expose().as_bytes().to_vec())),
        )
    }

    /// Whether there is no key at all (every signed asset is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> Option<&KeyId> {
        self.keys.first().map(|k| &k.id)
    }

    fn secret(&self, id: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|k| k.id.as_str() == id)
            .map(|k| k.secret.as_slice())
    }

    /// A token for `playback_id` valid until `expiry` (unix seconds), signed
    /// with the first key; `None` without keys.
    pub fn sign(&self, playback_id: &PlaybackId, expiry: u64) -> Option<String> {
        let key = self.keys.first()?;
        Some(sign(&key.id, &key.secret, playback_id, expiry))
    }

    /// Checks `token` for `playback_id` at `now` (unix seconds); returns the
    /// id of the key that verified it.
    pub fn verify(
        &self,
        playback_id: &PlaybackId,
        token: &str,
        now: u64,
    ) -> Result<&KeyId, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (kid, expiry_text, signature_text) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(kid), Some(expiry), Some(signature), None) => (Some(kid), expiry, signature),
                (Some(expiry), Some(signature), None, None) => (None, expiry, signature),
                _ => return Err(TokenError::Malformed),
            };
        if kid.is_some_and(|k| !KeyId::is_valid(k)) {
            return Err(TokenError::Malformed);
        }
        let expiry = parse_expiry(expiry_text)?;
        if signature_text.len() != SIGNATURE_LEN {
            return Err(TokenError::Malformed);
        }
        // The engine refuses padding and non-zero trailing bits: one spelling per signature.
        let signature = URL_SAFE_NO_PAD
            .decode(signature_text)
            .map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id.as_str() == kid.unwrap_or(LEGACY_KEY_ID))
            .ok_or(TokenError::UnknownKey)?;
        let kid = kid.map(|_| &key.id);
        mac(&key.secret, kid, playback_id, expiry)
            .ok_or(TokenError::BadSignature)?
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        if expiry <= now {
            return Err(TokenError::Expired);
        }
        Ok(&key.id)
    }
}

/// Decimal unix seconds, only as `u64::to_string` spells them.
fn parse_expiry(text: &str) -> Result<u64, TokenError> {
    if text.is_empty()
        || text.len() > MAX_EXPIRY_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(TokenError::Malformed);
    }
    text.parse().map_err(|_| TokenError::Malformed)
}

/// HMAC over `"<kid>:<playback_id>:<expiry>"`, or `"<playback_id>:<expiry>"`
/// for the legacy form (`kid` `None`).
fn mac(
    secret: &[u8],
    kid: Option<&KeyId>,
    playback_id: &PlaybackId,
    expiry: u64,
) -> Option<HmacSha256> {
    // HMAC takes keys of any length; the error arm is unreachable in practice.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    if let Some(kid) = kid {
        mac.update(kid.as_str().as_bytes());
        mac.update(b":");
    }
    mac.update(playback_id.as_str().as_bytes());
    mac.update(b":");
    mac.update(expiry.to_string().as_bytes());
    Some(mac)
}

/// A token for `playback_id` valid until `expiry` (unix seconds), signed
/// with the key `key_id` whose secret is `secret`.
pub fn sign(key_id: &KeyId, secret: &[u8], playback_id: &PlaybackId, expiry: u64) -> String {
    let signature = mac(secret, Some(key_id), playback_id, expiry)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{key_id}.{expiry}.{signature}")
}

/// A token fresh from [`mint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The token, for `?token=`.
    pub token: String,
    /// The key that signed it.
    pub key_id: KeyId,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The lifetime of a token asked for with `requested` (`None`: the
/// configured default): whole seconds, 1 to `max_token_ttl`.
pub fn token_ttl(
    config: &PlaybackConfig,
    requested: Option<Duration>,
) -> Result<Duration, MintError> {
    let ttl = requested.unwrap_or(config.default_token_ttl);
    let ttl = Duration::from_secs(ttl.as_secs());
    if ttl.is_zero() || ttl > config.max_token_ttl {
        return Err(MintError::InvalidTtl {
            max: config.max_token_ttl,
        });
    }
    Ok(ttl)
}

/// A token for `playback_id` living `ttl` from `now` (unix seconds), signed
/// with the first of `playback.signing_keys`.
pub fn mint(
    config: &PlaybackConfig,
    playback_id: &PlaybackId,
    ttl: Duration,
    now: u64,
) -> Result<Minted, MintError> {
    let ttl = token_ttl(config, Some(ttl))?;
    let keyring = Keyring::from_config(config);
    let key_id = keyring
        .signing_key_id()
        .cloned()
        .ok_or(MintError::NoSigningKey)?;
    let invalid = MintError::InvalidTtl {
        max: config.max_token_ttl,
    };
    let expiry = now.checked_add(ttl.as_secs()).ok_or(invalid)?;
    let expires_at = i64::try_from(expiry)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or(invalid)?;
    let token = keyring
        .sign(playback_id, expiry)
        .ok_or(MintError::NoSigningKey)?;
    Ok(Minted {
        token,
        key_id,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, SigningKeyConfig};

    fn pid(s: &str) -> PlaybackId {
        s.parse().unwrap()
    }

    fn kid(s: &str) -> KeyId {
        s.parse().unwrap()
    }

    fn ring(keys: &[(&str, &str)]) -> Keyring {
        Keyring::new(
            keys.iter()
                .map(|(id, secret)| (kid(id), secret.as_bytes().to_vec())),
        )
    }

    const A: &str = "abcdefghijklmnopqrstuvwx";
    const B: &str = "bbcdefghijklmnopqrstuvwx";

    #[test]
    fn round_trip_binds_playback_id_key_and_expiry() {
        let keys = ring(&[("k1", "first secret, 16+ bytes")]);
        let token = keys.sign(&pid(A), 2_000).unwrap();
        assert!(token.starts_with("k1.2000."), "{token}");
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(keys.verify(&pid(A), &token, 1_999), Ok(&kid("k1")));
        assert_eq!(
            keys.verify(&pid(B), &token, 1_000),
            Err(TokenError::BadSignature)
        );
        // Same id, another secret.
        let other = ring(&[("k1", "another secret entirely")]);
        assert_eq!(
            other.verify(&pid(A), &token, 1_000),
            Err(TokenError::BadSignature)
        );
        // The free function and the keyring agree.
        assert_eq!(
            sign(&kid("k1"), b"first secret, 16+ bytes", &pid(A), 2_000),
            token
        );
    }

    #[test]
    fn expiry_in_the_past_or_now_is_expired() {
        let keys = ring(&[("k1", "secret")]);
        let token = keys.sign(&pid(A), 2_000).unwrap();
        assert_eq!(
            keys.verify(&pid(A), &token, 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&pid(A), &token, 9_999),
            Err(TokenError::Expired)
        );
        // A forgery is a bad signature, whatever its expiry.
        let forged = ring(&[("k1", "guess")]).sign(&pid(A), 1).unwrap();
        assert_eq!(
            keys.verify(&pid(A), &forged, 9_999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_until_their_key_is_removed() {
        let before = ring(&[("k1", "old secret")]);
        let old = before.sign(&pid(A), 5_000).unwrap();
        // The new key is put first, the old one kept.
        let during = ring(&[("k2", "new secret"), ("k1", "old secret")]);
        assert_eq!(during.signing_key_id(), Some(&kid("k2")));
        assert_eq!(during.verify(&pid(A), &old, 1_000), Ok(&kid("k1")));
        let new = during.sign(&pid(A), 5_000).unwrap();
        assert!(new.starts_with("k2."), "{new}");
        assert_eq!(during.verify(&pid(A), &new, 1_000), Ok(&kid("k2")));
        // The old key is removed: its tokens stop working, the new ones do not.
        let after = ring(&[("k2", "new secret")]);
        assert_eq!(
            after.verify(&pid(A), &old, 1_000),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(after.verify(&pid(A), &new, 1_000), Ok(&kid("k2")));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let keys = ring(&[("k1", "secret one"), ("k2", "secret two")]);
        let token = keys.sign(&pid(A), 5_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let (id, expiry, signature) = (parts[0], parts[1], parts[2]);
        // Another known kid with the same signature.
        assert_eq!(
            keys.verify(&pid(A), &format!("k2.{expiry}.{signature}"), 1_000),
            Err(TokenError::BadSignature)
        );
        // Moving the expiry.
        assert_eq!(
            keys.verify(&pid(A), &format!("{id}.5001.{signature}"), 1_000),
            Err(TokenError::BadSignature)
        );
        // Flipping one signature character (keeping it canonical base64url).
        let mut flipped = signature.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            keys.verify(&pid(A), &format!("{id}.{expiry}.{flipped}"), 1_000),
            Err(TokenError::BadSignature)
        );
        // A kid no key has.
        assert_eq!(
            keys.verify(&pid(A), &format!("k9.{expiry}.{signature}"), 1_000),
            Err(TokenError::UnknownKey)
        );
        // No key at all.
        assert_eq!(
            Keyring::default().verify(&pid(A), &token, 1_000),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn malformed_and_oversized_tokens() {
        let keys = ring(&[("k1", "secret")]);
        let good = keys.sign(&pid(A), 5_000).unwrap();
        let signature = good.rsplit('.').next().unwrap();
        let long_kid = "k".repeat(MAX_KEY_ID_LEN + 1);
        let cases = [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            "12".to_owned(),
            format!("k1.5000.{signature}.x"),
            format!(".5000.{signature}"),
            format!("k:1.5000.{signature}"),
            format!("k 1.5000.{signature}"),
            format!("{long_kid}.5000.{signature}"),
            format!("k1..{signature}"),
            format!("k1.x.{signature}"),
            format!("k1.-5000.{signature}"),
            format!("k1.+5000.{signature}"),
            format!("k1.05000.{signature}"),
            format!("k1.99999999999999999999.{signature}"),
            format!("k1.5000.{signature}="),
            format!("k1.5000.{}", &signature[1..]),
            format!("k1.5000.{}!", &signature[1..]),
            "k1.5000.".to_owned(),
            "9".repeat(MAX_TOKEN_LEN + 1),
            format!("{good}{}", "A".repeat(MAX_TOKEN_LEN)),
        ];
        for bad in &cases {
            assert_eq!(
                keys.verify(&pid(A), bad, 0),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        // A signature whose last character has non-zero trailing bits is a
        // second spelling of the same bytes: refused.
        let last = signature.as_bytes()[SIGNATURE_LEN - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let sibling = alphabet[index ^ 1] as char;
        let respelled = format!("k1.5000.{}{sibling}", &signature[..SIGNATURE_LEN - 1]);
        assert_eq!(
            keys.verify(&pid(A), &respelled, 0),
            Err(TokenError::Malformed),
            "{respelled}"
        );
    }

    #[test]
    fn legacy_tokens_verify_with_the_default_key_only() {
        let secret = b"the key of before";
        let legacy = {
            let mut mac = HmacSha256::new_from_slice(secret).unwrap();
            mac.update(format!("{A}:5000").as_bytes());
            format!(
                "5000.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        let keys = Keyring::new([
            (kid("k2"), b"new".to_vec()),
            (kid(LEGACY_KEY_ID), secret.to_vec()),
        ]);
        assert_eq!(
            keys.verify(&pid(A), &legacy, 1_000),
            Ok(&kid(LEGACY_KEY_ID))
        );
        assert_eq!(
            keys.verify(&pid(A), &legacy, 5_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&pid(B), &legacy, 1_000),
            Err(TokenError::BadSignature)
        );
        // Without a `default` key, legacy tokens name no key.
        assert_eq!(
            ring(&[("k2", "new")]).verify(&pid(A), &legacy, 1_000),
            Err(TokenError::UnknownKey)
        );
        // A current token's signature does not pass as a legacy one.
        let current = keys.sign(&pid(A), 5_000).unwrap();
        let (_, rest) = current.split_once('.').unwrap();
        assert_eq!(
            Keyring::new([(kid(LEGACY_KEY_ID), b"new".to_vec())]).verify(&pid(A), rest, 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn keyring_skips_empty_secrets_and_duplicate_ids() {
        let keys = Keyring::new([
            (kid("empty"), Vec::new()),
            (kid("k1"), b"first".to_vec()),
            (kid("k1"), b"second".to_vec()),
        ]);
        assert_eq!(keys.signing_key_id(), Some(&kid("k1")));
        assert_eq!(format!("{keys:?}"), r#"["k1"]"#);
        let token = sign(&kid("k1"), b"second", &pid(A), 5_000);
        assert_eq!(
            keys.verify(&pid(A), &token, 0),
            Err(TokenError::BadSignature)
        );
        assert!(Keyring::default().sign(&pid(A), 5_000).is_none());
    }

    #[test]
    fn key_ids() {
        for good in ["k1", "default", "2024-06_a", &"x".repeat(32)] {
            assert_eq!(good.parse::<KeyId>().unwrap().as_str(), good);
        }
        for bad in ["", "k.1", "k:1", "ключ", "k 1", &"x".repeat(33)] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad:?}");
        }
    }

    fn config(keys: &[(&str, &str)]) -> PlaybackConfig {
        PlaybackConfig {
            signing_keys: keys
                .iter()
                .map(|(id, secret)| SigningKeyConfig {
                    id: kid(id),
                    secret: Secret::new(*secret),
                })
                .collect(),
            ..PlaybackConfig::default()
        }
    }

    #[test]
    fn minting_uses_the_first_key_and_the_ttl_rules() {
        let config = config(&[("k2", "new secret"), ("k1", "old secret")]);
        let hour = Duration::from_secs(3600);
        let minted = mint(&config, &pid(A), hour, 1_700_000_000).unwrap();
        assert_eq!(minted.key_id, kid("k2"));
        assert_eq!(minted.expires_at.timestamp(), 1_700_003_600);
        assert_eq!(
            Keyring::from_config(&config).verify(&pid(A), &minted.token, 1_700_000_000),
            Ok(&kid("k2"))
        );
        // Default and bounds.
        assert_eq!(token_ttl(&config, None), Ok(hour));
        assert_eq!(
            token_ttl(&config, Some(Duration::from_secs(86_400))),
            Ok(Duration::from_secs(86_400))
        );
        let invalid = MintError::InvalidTtl {
            max: Duration::from_secs(86_400),
        };
        for ttl in [
            Duration::from_secs(86_401),
            Duration::ZERO,
            Duration::from_millis(999),
        ] {
            assert_eq!(token_ttl(&config, Some(ttl)), Err(invalid), "{ttl:?}");
        }
        assert_eq!(
            mint(&config, &pid(A), Duration::from_secs(86_401), 0).map(|m| m.token),
            Err(invalid)
        );
        assert_eq!(
            mint(&config, &pid(A), hour, u64::MAX).map(|m| m.token),
            Err(invalid)
        );
        // No key.
        assert_eq!(
            mint(&PlaybackConfig::default(), &pid(A), hour, 0).map(|m| m.token),
            Err(MintError::NoSigningKey)
        );
    }
}

/// Property tests: a token is untrusted input.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn ring() -> Keyring {
        Keyring::new([
            ("k1".parse().unwrap(), b"0123456789abcdef0123".to_vec()),
            ("default".parse().unwrap(), b"fedcba9876543210fedc".to_vec()),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever is sent as a token, verification answers (and, without
        /// the secret, never says yes).
        #[test]
        fn arbitrary_tokens_are_refused_without_panic(token in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,40}\\.[0-9]{0,25}\\.[A-Za-z0-9_-]{0,60}",
            "[0-9]{0,25}\\.[A-Za-z0-9_=+/-]{0,60}",
        ]) {
            let playback = PlaybackId::new();
            prop_assert!(ring().verify(&playback, &token, 1_000).is_err());
        }

        /// A signed token verifies until it expires; any one-byte change
        /// to it is refused.
        #[test]
        fn signed_tokens_verify_and_altered_ones_do_not(
            expiry in 1u64..4_000_000_000,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let ring = ring();
            let playback = PlaybackId::new();
            let token = ring.sign(&playback, expiry).unwrap();
            prop_assert!(ring.verify(&playback, &token, expiry - 1).is_ok());
            prop_assert!(ring.verify(&playback, &token, expiry + 1).is_err());
            let mut altered = token.clone().into_bytes();
            let i = at.index(altered.len());
            if altered[i] != byte {
                altered[i] = byte;
                let altered = String::from_utf8_lossy(&altered).into_owned();
                prop_assert!(ring.verify(&playback, &altered, expiry - 1).is_err(), "{} -> {}", token, altered);
            }
        }

        #[test]
        fn key_ids_parse_without_panic(text in any::<String>()) {
            let _ = text.parse::<KeyId>();
        }
    }
}
