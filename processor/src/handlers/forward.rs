//! The forwarder: every event without a handler of its own (`bot.*`, `complete`, `failed`, …)
//! is POSTed, byte for byte, to `FORWARD_URL`. Unset: logged and acked.
//!
//! Delivery downstream is at least once: `x-hookstream-id` carries the dedup identity, the same
//! on every retry and redelivery, so the receiver can drop repeats.

use super::{Event, Handler, HandlerError, HandlerFuture};
use crate::downstream::breaker::Breaker;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;

pub const EVENT_HEADER: &str = "x-hookstream-event";
pub const ID_HEADER: &str = "x-hookstream-id";

pub struct Forward {
    http: reqwest::Client,
    url: Option<Url>,
    /// `FORWARD_URL`'s breaker: no call while it is open ([`crate::downstream::breaker`]).
    breaker: Breaker,
}

impl Forward {
    pub fn new(http: reqwest::Client, url: Option<Url>, breaker: Breaker) -> Self {
        Self { http, url, breaker }
    }

    async fn post(
        &self,
        url: &Url,
        event: &Event,
        event_name: HeaderValue,
        id: HeaderValue,
    ) -> Result<(), HandlerError> {
        // Never the URL itself: it may hold credentials or a token (SPEC §7).
        let what = format!("POST {}", shared::config::redact_http_url(url.as_str()));
        let span = crate::traces::call(&reqwest::Method::POST, url);
        let request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event_name)
            .header(ID_HEADER, id)
            .body(event.payload.clone());
        let response = crate::traces::send(request, span).await.map_err(|e| HandlerError::from_request(&what, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Err(HandlerError::from_answer(&what, status, &headers, &body))
    }
}

impl Handler for Forward {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(url) = &self.url else {
                tracing::debug!(stream_id = %event.id, event = %event.name, "no handler and no FORWARD_URL: nothing to do");
                return Ok(());
            };
            let header = |name: &str, value: &str| {
                HeaderValue::from_str(value)
                    .map_err(|_| HandlerError::permanent(format!("{name} {value:?} cannot be sent as an HTTP header")))
            };
            let (event_name, id) = (header(EVENT_HEADER, &event.name)?, header(ID_HEADER, &event.dedup_id)?);
            self.breaker.call(self.post(url, event, event_name, id)).await
        })
    }
}
