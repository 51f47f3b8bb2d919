//! Is a request genuine? (SPEC §3.2)
//!
//! Three ways, checked fail-closed:
//!
//! 1. a Standard Webhooks / Svix signature (Meeting BaaS API v2): `{id}.{timestamp}.{body}`
//!    signed with HMAC-SHA256 under any configured secret, timestamp within ±300 s. When any
//!    signature header is present, the signature decides alone: a wrong signature is refused
//!    even if the request also carries a valid API key, so a forged or replayed signed request
//!    cannot fall back to a weaker check;
//! 2. the `x-meeting-baas-api-key` header (API v1) equal to `MEETING_BAAS_API_KEY`;
//! 3. the `x-mb-secret` header (API v2 per-bot callbacks) equal to `CALLBACK_SECRET`.
//!
//! Comparisons are constant time: signatures through `subtle`, keys by comparing their SHA-256
//! digests in constant time, so neither content nor length leaks through timing.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use shared::config::ConfigError;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

pub const API_KEY_HEADER: &str = "x-meeting-baas-api-key";
pub const CALLBACK_SECRET_HEADER: &str = "x-mb-secret";

/// The signature headers, each under its Svix name and its Standard Webhooks name (parsed once:
/// looking a header up by `&str` parses the name on every call).
const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// What a request's head says about its authenticity (see [`Verifier::verify_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Genuine: no need to look further.
    Genuine,
    /// Signed: the signature covers the body, so only the body can tell.
    Signed,
}

/// Why a request is not genuine. Every variant is answered 401 `unauthorized`; the message says
/// which check failed, never what the expected value is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: sign the request (Standard Webhooks) or send x-meeting-baas-api-key or x-mb-secret")]
    Missing,
    #[error("incomplete signature headers: {0} is missing")]
    IncompleteSignature(&'static str),
    #[error("the signature timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("the signature timestamp is more than 300 seconds from now")]
    StaleTimestamp,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the {0} header does not match")]
    WrongSecret(&'static str),
}

/// The configured credentials.
#[derive(Clone)]
pub struct Verifier {
    signing_keys: Vec<Vec<u8>>,
    api_key: Option<[u8; 32]>,
    callback_secret: Option<[u8; 32]>,
    allow_unsigned: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("signing_keys", &self.signing_keys.len())
            .field("api_key", &self.api_key.is_some())
            .field("callback_secret", &self.callback_secret.is_some())
            .field("allow_unsigned", &self.allow_unsigned)
            .finish()
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// Decodes one Standard Webhooks secret: base64 after an optional `whsec_` prefix.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match BASE64.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("a secret is empty".into()),
        Err(_) => Err("a secret is not base64 after its whsec_ prefix".into()),
    }
}

impl Verifier {
    /// Builds the verifier; refuses a configuration that would accept nothing genuine-checked
    /// unless `allow_unsigned` says so.
    pub fn from_config(
        webhook_secrets: Option<&str>,
        api_key: Option<&str>,
        callback_secret: Option<&str>,
        allow_unsigned: bool,
    ) -> Result<Self, ConfigError> {
        let signing_keys = match webhook_secrets {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| decode_secret(s).map_err(|p| ConfigError::new("WEBHOOK_SECRETS", p)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let verifier = Self {
            signing_keys,
            api_key: api_key.map(|k| digest(k.as_bytes())),
            callback_secret: callback_secret.map(|k| digest(k.as_bytes())),
            allow_unsigned,
        };
        if !verifier.allow_unsigned && !verifier.has_credentials() {
            return Err(ConfigError::new(
                "WEBHOOK_SECRETS",
                "no authentication configured: set WEBHOOK_SECRETS, MEETING_BAAS_API_KEY or CALLBACK_SECRET \
                 (or ALLOW_UNSIGNED=true to accept everything, for local testing only)",
            ));
        }
        Ok(verifier)
    }

    pub fn has_credentials(&self) -> bool {
        !self.signing_keys.is_empty() || self.api_key.is_some() || self.callback_secret.is_some()
    }

    pub fn allows_unsigned(&self) -> bool {
        self.allow_unsigned
    }

    /// Checks a request; `now` is the current Unix time in seconds (a parameter, for tests).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), AuthError> {
        match self.verify_head(headers)? {
            Head::Genuine => Ok(()),
            Head::Signed => self.verify_body(headers, body, now),
        }
    }

    /// What the head alone tells: genuine (an API key or callback secret that matches, or
    /// `ALLOW_UNSIGNED`), not genuine, or signed — then only the body can tell
    /// ([`Self::verify_body`]). Lets the ingress refuse a stranger before reading any body.
    pub fn verify_head(&self, headers: &HeaderMap) -> Result<Head, AuthError> {
        if self.allow_unsigned {
            return Ok(Head::Genuine);
        }
        if let Some(signature) = SignatureHeaders::find(headers) {
            signature?;
            return Ok(Head::Signed);
        }
        self.verify_secrets(headers).map(|()| Head::Genuine)
    }

    /// The signature check of a request whose head said [`Head::Signed`].
    pub fn verify_body(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), AuthError> {
        match SignatureHeaders::find(headers) {
            Some(signature) => self.verify_signature(signature?, body, now),
            None => Err(AuthError::Missing),
        }
    }

    fn verify_secrets(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let mut failure = AuthError::Missing;
        for (header, expected) in [(API_KEY_HEADER, &self.api_key), (CALLBACK_SECRET_HEADER, &self.callback_secret)] {
            if let Some(sent) = headers.get(header) {
                match expected {
                    Some(expected) if bool::from(digest(sent.as_bytes()).ct_eq(expected)) => return Ok(()),
                    _ => failure = AuthError::WrongSecret(header),
                }
            }
        }
        Err(failure)
    }

    fn verify_signature(&self, sig: SignatureHeaders<'_>, body: &[u8], now: i64) -> Result<(), AuthError> {
        let timestamp: i64 = sig.timestamp.trim().parse().map_err(|_| AuthError::BadTimestamp)?;
        // `abs_diff` cannot overflow, whatever number the header carries.
        if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
            return Err(AuthError::StaleTimestamp);
        }
        let sent: Vec<Vec<u8>> = sig
            .signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| BASE64.decode(b64).ok())
            .collect();
        for key in &self.signing_keys {
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else { continue };
            mac.update(sig.id.as_bytes());
            mac.update(b".");
            mac.update(sig.timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            // Every candidate is compared, matched or not, so timing does not tell which one hit.
            let mut matched = subtle::Choice::from(0);
            for candidate in &sent {
                matched |= expected.as_slice().ct_eq(candidate);
            }
            if bool::from(matched) {
                return Ok(());
            }
        }
        Err(AuthError::BadSignature)
    }
}

/// The three Standard Webhooks headers, `svix-*` or `webhook-*`.
#[derive(Debug, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signatures: &'a str,
}

impl<'a> SignatureHeaders<'a> {
    /// `None` when no signature header is present; an error when some but not all are (or one is
    /// not text).
    pub fn find(headers: &'a HeaderMap) -> Option<Result<Self, AuthError>> {
        let get = |svix: &HeaderName, webhook: &HeaderName| -> Option<Result<&'a str, AuthError>> {
            let value = headers.get(svix).or_else(|| headers.get(webhook))?;
            Some(value.to_str().map_err(|_| AuthError::BadSignature))
        };
        let (id, timestamp, signatures) = (
            get(&SVIX_ID, &WEBHOOK_ID),
            get(&SVIX_TIMESTAMP, &WEBHOOK_TIMESTAMP),
            get(&SVIX_SIGNATURE, &WEBHOOK_SIGNATURE),
        );
        if id.is_none() && timestamp.is_none() && signatures.is_none() {
            return None;
        }
        Some((|| {
            Ok(Self {
                id: id.ok_or(AuthError::IncompleteSignature("svix-id / webhook-id"))??,
                timestamp: timestamp.ok_or(AuthError::IncompleteSignature("svix-timestamp / webhook-timestamp"))??,
                signatures: signatures
                    .ok_or(AuthError::IncompleteSignature("svix-signature / webhook-signature"))??,
            })
        })())
    }
}

/// The message id of a signed request (`svix-id` or `webhook-id`), the first dedup identity.
pub fn message_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(&SVIX_ID)
        .or_else(|| headers.get(&WEBHOOK_ID))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Signs like a Standard Webhooks sender: `v1,<base64 HMAC-SHA256>` (used by tests and tools).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = decode_secret(secret)?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const VECTORS: &str = include_str!("../../tests/fixtures/standard-webhooks.json");

    #[derive(serde::Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        msg_id: String,
        timestamp: i64,
        payload: String,
        signature: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str::<Vectors>(VECTORS).expect("vectors parse").vectors
    }

    fn signed(prefix: &str, v: &Vector, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(format!("{prefix}-id").as_bytes()).expect("name"),
            HeaderValue::from_str(&v.msg_id).expect("value"),
        );
        h.insert(
            http::HeaderName::from_bytes(format!("{prefix}-timestamp").as_bytes()).expect("name"),
            HeaderValue::from_str(&v.timestamp.to_string()).expect("value"),
        );
        h.insert(
            http::HeaderName::from_bytes(format!("{prefix}-signature").as_bytes()).expect("name"),
            HeaderValue::from_str(signature).expect("value"),
        );
        h
    }

    fn verifier(secrets: &str) -> Verifier {
        Verifier::from_config(Some(secrets), Some("key"), None, false).expect("config")
    }

    #[test]
    fn published_vectors_verify_with_both_header_prefixes() {
        for v in vectors() {
            assert_eq!(
                sign(&v.secret, &v.msg_id, v.timestamp, v.payload.as_bytes()).as_deref(),
                Ok(v.signature.as_str()),
                "{}",
                v.name
            );
            for prefix in ["svix", "webhook"] {
                let h = signed(prefix, &v, &v.signature);
                assert_eq!(
                    verifier(&v.secret).verify(&h, v.payload.as_bytes(), v.timestamp),
                    Ok(()),
                    "{} {prefix}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn tolerance_is_300_seconds_either_way() {
        for v in vectors() {
            let h = signed("svix", &v, &v.signature);
            let check = |now| verifier(&v.secret).verify(&h, v.payload.as_bytes(), now);
            assert_eq!(check(v.timestamp + 300), Ok(()));
            assert_eq!(check(v.timestamp - 300), Ok(()));
            assert_eq!(check(v.timestamp + 301), Err(AuthError::StaleTimestamp));
            assert_eq!(check(v.timestamp - 301), Err(AuthError::StaleTimestamp));
        }
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let v = &vectors()[0];
        let verifier = verifier(&v.secret);
        for (timestamp, now) in [
            ("0", v.timestamp),
            ("-1", v.timestamp),
            (&*i64::MAX.to_string(), v.timestamp),
            (&*i64::MIN.to_string(), v.timestamp),
            (&*i64::MAX.to_string(), i64::MIN),
            (&*i64::MIN.to_string(), i64::MAX),
        ] {
            let mut h = signed("svix", v, &v.signature);
            h.insert("svix-timestamp", HeaderValue::from_str(timestamp).expect("value"));
            assert_eq!(verifier.verify(&h, v.payload.as_bytes(), now), Err(AuthError::StaleTimestamp), "{timestamp}");
        }
        // Past i64: not a Unix time at all.
        let mut h = signed("svix", v, &v.signature);
        h.insert("svix-timestamp", HeaderValue::from_static("99999999999999999999"));
        assert_eq!(verifier.verify(&h, v.payload.as_bytes(), v.timestamp), Err(AuthError::BadTimestamp));
    }

    #[test]
    fn the_head_decides_for_keys_and_defers_signatures_to_the_body() {
        let v = &vectors()[0];
        let verifier = verifier(&v.secret);
        let mut key = HeaderMap::new();
        key.insert(API_KEY_HEADER, HeaderValue::from_static("key"));
        assert_eq!(verifier.verify_head(&key), Ok(Head::Genuine));
        key.insert(API_KEY_HEADER, HeaderValue::from_static("nope"));
        assert_eq!(verifier.verify_head(&key), Err(AuthError::WrongSecret(API_KEY_HEADER)));
        assert_eq!(verifier.verify_head(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(verifier.verify_head(&signed("webhook", v, &v.signature)), Ok(Head::Signed));
    }

    #[test]
    fn tampering_is_refused() {
        let v = &vectors()[0];
        let other = &vectors()[2];
        let ok = verifier(&v.secret);
        // Another payload, another id, another timestamp's signature: all refused.
        let h = signed("svix", v, &v.signature);
        assert_eq!(ok.verify(&h, b"{}", v.timestamp), Err(AuthError::BadSignature));
        let h = signed("svix", v, &other.signature);
        assert_eq!(ok.verify(&h, v.payload.as_bytes(), v.timestamp), Err(AuthError::BadSignature));
        // Wrong secret.
        let wrong = verifier("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let h = signed("svix", v, &v.signature);
        assert_eq!(wrong.verify(&h, v.payload.as_bytes(), v.timestamp), Err(AuthError::BadSignature));
        // Garbage entries next to a valid one still pass; only garbage does not.
        let list = format!("v1,bm9wZQ== v2,abc junk {}", v.signature);
        assert_eq!(ok.verify(&signed("svix", v, &list), v.payload.as_bytes(), v.timestamp), Ok(()));
        assert_eq!(
            ok.verify(&signed("svix", v, "v1,@@@ v1,"), v.payload.as_bytes(), v.timestamp),
            Err(AuthError::BadSignature)
        );
        // Not a number.
        let mut h = signed("svix", v, &v.signature);
        h.insert("svix-timestamp", HeaderValue::from_static("soon"));
        assert_eq!(ok.verify(&h, v.payload.as_bytes(), v.timestamp), Err(AuthError::BadTimestamp));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let v = &vectors()[0];
        let rotated = verifier(&format!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, {}", v.secret));
        assert_eq!(rotated.verify(&signed("svix", v, &v.signature), v.payload.as_bytes(), v.timestamp), Ok(()));
    }

    #[test]
    fn partial_signature_headers_are_refused_even_with_a_valid_api_key() {
        let v = &vectors()[0];
        let mut h = signed("svix", v, &v.signature);
        h.remove("svix-timestamp");
        h.insert(API_KEY_HEADER, HeaderValue::from_static("key"));
        assert!(matches!(
            verifier(&v.secret).verify(&h, v.payload.as_bytes(), v.timestamp),
            Err(AuthError::IncompleteSignature(_))
        ));
    }

    #[test]
    fn secrets_decode_with_or_without_prefix() {
        assert!(decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(decode_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(decode_secret("whsec_!!").is_err());
        assert!(decode_secret("whsec_").is_err());
    }
}
