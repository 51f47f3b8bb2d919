//! The dedup identity of an event (SPEC §3.3) and the envelope checks (`event` must be a string
//! in a JSON object).
//!
//! First rule that applies:
//! 1. a v2 bot's final result — `bot.completed` or `bot.failed` with a string `data.bot_id` —
//!    `{event}:{bot_id}`: one result per bot, whichever message carries it (a Meeting BaaS
//!    retry, a resend asked for by the reconciler, a per-bot callback), each of which has a new
//!    message id;
//! 2. the sender's message id (`svix-id` / `webhook-id`), stable across its retries;
//! 3. for the v1 events that Meeting BaaS documents as retried without an id, the fields its
//!    guidance names: `calendar.sync_events:{calendar_id}:{last_updated_ts}`,
//!    `bot.status_change:{bot_id}:{status.code}:{status.created_at}`, `{event}:{bot_id}` for
//!    `complete`, `failed` and `transcription_complete`;
//! 4. otherwise `sha256:` + the hex SHA-256 of the raw body.
//!
//! When a rule-3 event lacks one of its fields, rule 4 applies: the body is still stored, and a
//! byte-identical retry is still recognised.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The top level of a webhook body: only what the ingress needs; every other field is ignored.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    pub event: String,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// Why a body is not a webhook envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body is not UTF-8 (JSON text is UTF-8, RFC 8259): invalid byte at offset {0}")]
    NotUtf8(usize),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("the body must have a string \"event\" field")]
    NoEvent,
}

/// Parses the envelope: a JSON object with a string `event` field.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, PayloadError> {
    // The whole body, not only the fields read: serde skips the others without checking their
    // bytes, and a body that is not UTF-8 could not be kept byte for byte by every consumer
    // downstream (a parked record is JSON text).
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::NotUtf8(e.valid_up_to()))?;
    // serde would also read a struct from a JSON array; the envelope must be an object.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => PayloadError::NotObject,
                Err(e) => PayloadError::NotJson(e.to_string()),
            })
        }
        None => return Err(PayloadError::NotJson("the body is empty".into())),
    }
    serde_json::from_str::<Envelope<'_>>(text).map_err(|e| {
        if e.is_data() {
            PayloadError::NoEvent
        } else {
            PayloadError::NotJson(e.to_string())
        }
    })
}

/// The dedup identity, by the rules in the module docs.
pub fn dedup_identity(message_id: Option<&str>, envelope: &Envelope<'_>, body: &[u8]) -> String {
    if let Some(identity) = final_result_identity(envelope) {
        return identity;
    }
    if let Some(id) = message_id {
        return id.to_string();
    }
    v1_identity(envelope).unwrap_or_else(|| body_identity(body))
}

/// `sha256:<hex>` of the body.
pub fn body_identity(body: &[u8]) -> String {
    let mut identity = String::with_capacity(7 + 64);
    identity.push_str("sha256:");
    shared::keys::push_hex(&mut identity, &Sha256::digest(body));
    identity
}

/// Rule 1: `{event}:{bot_id}` for a `bot.completed` / `bot.failed` with a string `data.bot_id`.
fn final_result_identity(envelope: &Envelope<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        bot_id: Option<std::borrow::Cow<'a, str>>,
    }
    let event = envelope.event.as_str();
    if !matches!(event, "bot.completed" | "bot.failed") {
        return None;
    }
    let data: Data<'_> = serde_json::from_str(envelope.data?.get()).ok()?;
    let bot_id = data.bot_id.filter(|id| !id.is_empty())?;
    Some(format!("{event}:{bot_id}"))
}

/// The v1 fields a rule-3 identity is made of. Each may be of any JSON type in the body; only
/// strings and numbers make an identity.
#[derive(Debug, Default, Deserialize)]
struct V1Data {
    calendar_id: Option<Value>,
    last_updated_ts: Option<Value>,
    bot_id: Option<Value>,
    status: Option<V1Status>,
}

#[derive(Debug, Default, Deserialize)]
struct V1Status {
    code: Option<Value>,
    created_at: Option<Value>,
}

/// A string or a number as text; anything else (null, object, empty string) is no value.
fn scalar(value: &Option<Value>) -> Option<String> {
    match value.as_ref()? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn v1_identity(envelope: &Envelope<'_>) -> Option<String> {
    let event = envelope.event.as_str();
    if !matches!(event, "calendar.sync_events" | "bot.status_change" | "complete" | "failed" | "transcription_complete")
    {
        return None;
    }
    let data: V1Data = serde_json::from_str(envelope.data?.get()).ok()?;
    match event {
        "calendar.sync_events" => {
            Some(format!("calendar.sync_events:{}:{}", scalar(&data.calendar_id)?, scalar(&data.last_updated_ts)?))
        }
        "bot.status_change" => {
            let status = data.status?;
            Some(format!(
                "bot.status_change:{}:{}:{}",
                scalar(&data.bot_id)?,
                scalar(&status.code)?,
                scalar(&status.created_at)?
            ))
        }
        _ => Some(format!("{event}:{}", scalar(&data.bot_id)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(body: &str) -> String {
        dedup_identity(None, &envelope(body.as_bytes()).expect("envelope"), body.as_bytes())
    }

    /// SPEC §3.3 rule 1: one result per bot, whatever message carries it — before the message
    /// id, which a Meeting BaaS retry, a resend and a per-bot callback each have anew.
    #[test]
    fn a_bot_s_final_result_is_one_identity_whatever_the_message() {
        for event in ["bot.completed", "bot.failed"] {
            let body = format!(r#"{{"event":"{event}","data":{{"bot_id":"b-1","extra":{{}}}}}}"#);
            let env = envelope(body.as_bytes()).expect("envelope");
            for message_id in [None, Some("msg_first"), Some("msg_resent")] {
                assert_eq!(dedup_identity(message_id, &env, body.as_bytes()), format!("{event}:b-1"));
            }
        }
        // Not a final result: the message id still wins.
        let body = br#"{"event":"bot.status_change","data":{"bot_id":"b-1"}}"#;
        assert_eq!(dedup_identity(Some("msg_1"), &envelope(body).expect("envelope"), body), "msg_1");
    }

    #[test]
    fn message_id_wins() {
        let body = br#"{"event":"complete","data":{"bot_id":"b"}}"#;
        let env = envelope(body).expect("envelope");
        assert_eq!(dedup_identity(Some("msg_1"), &env, body), "msg_1");
    }

    #[test]
    fn v1_rules() {
        assert_eq!(
            identity(
                r#"{"event":"calendar.sync_events","data":{"calendar_id":"c","last_updated_ts":"t","affected_event_uuids":[]}}"#
            ),
            "calendar.sync_events:c:t"
        );
        assert_eq!(
            identity(
                r#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"joining_call","created_at":"t"}}}"#
            ),
            "bot.status_change:b:joining_call:t"
        );
        for event in ["complete", "failed", "transcription_complete"] {
            assert_eq!(identity(&format!(r#"{{"event":"{event}","data":{{"bot_id":"b"}}}}"#)), format!("{event}:b"));
        }
    }

    #[test]
    fn missing_or_odd_fields_fall_back_to_the_body_hash() {
        for body in [
            r#"{"event":"complete","data":{}}"#,
            r#"{"event":"complete","data":"b"}"#,
            r#"{"event":"complete","data":{"bot_id":null}}"#,
            r#"{"event":"complete","data":{"bot_id":{"x":1}}}"#,
            r#"{"event":"bot.status_change","data":{"bot_id":"b"}}"#,
            r#"{"event":"calendar.sync_events","data":{"calendar_id":"c"}}"#,
            r#"{"event":"bot.completed","data":{"bot_id":7}}"#,
            r#"{"event":"bot.failed","data":{"bot_id":""}}"#,
            r#"{"event":"complete"}"#,
        ] {
            assert_eq!(identity(body), body_identity(body.as_bytes()), "{body}");
        }
        assert_eq!(body_identity(b"abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(envelope(b"[1]").expect_err("array"), PayloadError::NotObject);
        assert_eq!(envelope(br#""event""#).expect_err("string"), PayloadError::NotObject);
        assert_eq!(envelope(br#"{"event":1}"#).expect_err("number"), PayloadError::NoEvent);
        assert_eq!(envelope(br#"{"data":{}}"#).expect_err("missing"), PayloadError::NoEvent);
        assert!(matches!(envelope(b"{").expect_err("truncated"), PayloadError::NotJson(_)));
        assert!(matches!(envelope(b"").expect_err("empty"), PayloadError::NotJson(_)));
        assert!(matches!(envelope(br#"{"event":"x"} x"#).expect_err("trailing"), PayloadError::NotJson(_)));
        assert_eq!(envelope(b"\xff").expect_err("bytes"), PayloadError::NotUtf8(0));
        assert_eq!(
            envelope(b"{\"event\":\"x\",\"y\":\"\xe9\"}").expect_err("ignored field"),
            PayloadError::NotUtf8(18)
        );
        assert_eq!(envelope(br#" {"event":"x","extra":[1,2]} "#).expect("ok").event, "x");
    }
}
