//! `hookstream.resend` (SPEC §4.1, §4.5): a v2 bot that ended and whose final webhook
//! (`bot.completed` / `bot.failed`) the ingress never accepted — payload `{"api": "v2",
//! "bot_id"}`, appended by the reconciler. `POST /v2/bots/{bot_id}/resend-webhook` asks Meeting
//! BaaS to send it again; the ingress then accepts it once (its dedup identity is the bot's
//! result, SPEC §3.3) and it is forwarded like any. The call is a write like any other: the
//! shared write limit, the API's breaker, retries and parking. A 404 (no such bot) or a 409 (not
//! in a final state, or nothing to resend) is done, logged.

use super::{parse_payload, Event, Handler, HandlerError, HandlerFuture};
use crate::downstream::meeting_baas::{require_uuid, Api};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::sync::Arc;

/// The event name of the reconciler's resend entries.
pub const EVENT: &str = "hookstream.resend";

/// The payload of a `hookstream.resend` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ResendPayload {
    pub api: String,
    pub bot_id: String,
}

impl ResendPayload {
    pub fn parse(event: &Event) -> Result<Self, HandlerError> {
        let payload: Self = parse_payload(event)?;
        if payload.api != "v2" {
            return Err(HandlerError::permanent(format!(
                "malformed {} payload: api {:?}; only v2 can resend a result",
                event.name, payload.api
            )));
        }
        require_uuid("bot_id", &payload.bot_id)?;
        Ok(payload)
    }
}

/// Asks Meeting BaaS to send a bot's final webhook again.
pub struct Resend {
    api: Arc<Api>,
}

impl Resend {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }
}

impl Handler for Resend {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p = ResendPayload::parse(event)?;
            let segments = ["v2", "bots", p.bot_id.as_str(), "resend-webhook"];
            match self.api.call_accepting(Method::POST, &segments, None, &[StatusCode::CONFLICT]).await? {
                None => tracing::info!(
                    stream_id = %event.id,
                    bot_id = %p.bot_id,
                    "resend-webhook answered 404: no such bot; nothing to resend"
                ),
                Some(answer) if answer.status == StatusCode::CONFLICT => tracing::info!(
                    stream_id = %event.id,
                    bot_id = %p.bot_id,
                    answer = %answer.body.chars().take(300).collect::<String>(),
                    "resend-webhook answered 409: nothing to resend now"
                ),
                Some(_) => tracing::info!(
                    stream_id = %event.id,
                    bot_id = %p.bot_id,
                    "asked Meeting BaaS to resend the bot's final webhook"
                ),
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Event {
        Event { id: "1-0".into(), name: EVENT.into(), dedup_id: "d".into(), payload: payload.as_bytes().to_vec() }
    }

    #[test]
    fn payloads() {
        let bot = "e8570526-3b2c-4776-ad1c-1303ccb5bc2d";
        assert_eq!(
            ResendPayload::parse(&event(&format!(r#"{{"api":"v2","bot_id":"{bot}"}}"#))).expect("valid").bot_id,
            bot
        );
        for bad in [
            r#"{"api":"v1","bot_id":"e8570526-3b2c-4776-ad1c-1303ccb5bc2d"}"#,
            r#"{"api":"v2","bot_id":"b-1"}"#,
            r#"{"api":"v2"}"#,
            "[]",
        ] {
            assert!(matches!(ResendPayload::parse(&event(bad)), Err(HandlerError::Permanent(_))), "{bad}");
        }
    }
}
