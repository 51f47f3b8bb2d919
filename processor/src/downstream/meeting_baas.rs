//! The Meeting BaaS API client: one reused HTTP client, the API key on every call, answers
//! classified into [`HandlerError`]s. Every request is built to be valid for the published
//! OpenAPI documents (existing operations, no undeclared query parameters, schema-valid bodies).

use crate::clock::now_ms;
use crate::downstream::breaker::Breaker;
use crate::downstream::limiter::{Slot, WriteLimiter};
use crate::http::HandlerError;
use redis::RedisResult;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::config::Secret;
use shared::conn::Conn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const API_KEY_HEADER: &str = "x-meeting-baas-api-key";

/// Where the API is and what every bot request carries (`MEETING_BAAS_API_URL`,
/// `MEETING_BAAS_API_KEY`, `BOT_NAME`, `BOT_CONFIG`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub base: Url,
    pub api_key: Option<Secret<String>>,
    pub bot_name: String,
    pub bot_config: Map<String, Value>,
}

pub struct Api {
    http: reqwest::Client,
    base: Url,
    api_key: Option<Secret<String>>,
    bot_name: String,
    bot_config: Map<String, Value>,
    /// Every write (POST, PATCH, DELETE) waits for a slot of the shared write limit.
    limiter: WriteLimiter,
    /// Records which API versions' calendar webhooks are handled (for `RECONCILE_APIS=auto`).
    seen: Option<Seen>,
    /// The API's breaker: no call while it is open ([`crate::downstream::breaker`]).
    breaker: Breaker,
}

/// How often one process records an API version it has seen.
const RECORD_EVERY_MS: u64 = 3_600_000;

/// Which API a meeting lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    V1,
    V2,
}

/// `v1` or `v2`.
pub fn name(api: ApiVersion) -> &'static str {
    match api {
        ApiVersion::V1 => "v1",
        ApiVersion::V2 => "v2",
    }
}

/// Records the API versions whose calendar webhooks this process handles, for `auto`.
#[derive(Clone)]
pub struct Seen {
    con: Conn,
    key: String,
    /// When this process last recorded v1 and v2 (Unix ms).
    last: Arc<[AtomicU64; 2]>,
}

impl Seen {
    pub fn new(con: Conn, ns: &str) -> Self {
        Self { con, key: shared::keys::Keys::new(ns).reconcile_apis, last: Arc::default() }
    }

    /// A calendar entry of `api` was handled. At most one HSET an hour per version; an error
    /// is only logged (it changes nothing but `auto`'s view).
    pub async fn record(&self, api: ApiVersion) {
        let slot = &self.last[api as usize];
        let now = now_ms();
        if now.saturating_sub(slot.load(Ordering::Relaxed)) < RECORD_EVERY_MS {
            return;
        }
        slot.store(now, Ordering::Relaxed);
        let recorded: RedisResult<i64> =
            redis::cmd("HSET").arg(&self.key).arg(name(api)).arg(now).query_async(&mut self.con.clone()).await;
        if let Err(err) = recorded {
            slot.store(0, Ordering::Relaxed);
            tracing::debug!(error = %err, "recording the API version for RECONCILE_APIS=auto failed");
        }
    }
}

/// A successful answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        settings: &Settings,
        limiter: WriteLimiter,
        seen: Option<Seen>,
        breaker: Breaker,
    ) -> Self {
        Self {
            http,
            base: settings.base.clone(),
            api_key: settings.api_key.clone(),
            bot_name: settings.bot_name.clone(),
            bot_config: settings.bot_config.clone(),
            limiter,
            seen,
            breaker,
        }
    }

    /// A calendar webhook of `api` is being handled (see [`Seen`]).
    pub async fn saw(&self, api: ApiVersion) {
        if let Some(seen) = &self.seen {
            seen.record(api).await;
        }
    }

    /// `base` + the path segments, each percent-encoded (an id can never change the path).
    fn url(&self, segments: &[&str]) -> Result<Url, HandlerError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| HandlerError::permanent(format!("MEETING_BAAS_API_URL {} cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request. `Ok(None)` is a 404; other non-2xx answers are classified errors.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Option<Answer>, HandlerError> {
        self.call_accepting(method, segments, body, &[]).await
    }

    /// [`Self::call`], where the statuses in `accept` are answers too (`Ok(Some)`), not errors.
    pub async fn call_accepting(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        accept: &[StatusCode],
    ) -> Result<Option<Answer>, HandlerError> {
        self.send(method, self.url(segments)?, body, accept).await
    }

    /// GET a JSON document with `query` parameters (the list calls); `None` when it does not
    /// exist (404).
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Option<T>, HandlerError> {
        let mut url = self.url(segments)?;
        url.query_pairs_mut().extend_pairs(query);
        match self.send(Method::GET, url, None, &[]).await? {
            None => Ok(None),
            Some(answer) => serde_json::from_str(&answer.body).map(Some).map_err(|e| {
                HandlerError::permanent(format!(
                    "GET /{} answered a page hookstream cannot read: {e}",
                    segments.join("/")
                ))
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        accept: &[StatusCode],
    ) -> Result<Option<Answer>, HandlerError> {
        let what = format!("{method} {}", url.path());
        let is_write = method != Method::GET;
        // Asked first: a write refused by an open breaker takes no slot of the write limit.
        let pass = self.breaker.admit().await?;
        if is_write {
            // Never a write after the meeting's lock was lost (SPEC §4.2): the lock is confirmed
            // last thing before the request, in the limiter's script when there is a limit.
            let lost = |why: String| HandlerError::transient(format!("{what}: {why}"));
            let lock = crate::downstream::lock::proof().map_err(lost)?;
            // The wait is not this attempt's slowness: it does not count against its timeout.
            let slot = crate::downstream::waits::excluded(self.limiter.acquire(lock.as_ref().map(|(proof, _)| proof)))
                .await
                .map_err(|e| HandlerError::transient(format!("{what}: the API write limiter in Redis failed: {e}")))?;
            match (slot, &lock) {
                (Slot::LockLost, Some((_, confirm))) => return Err(lost(confirm.refused())),
                (Slot::Taken { lock_confirmed_at: Some(sent) }, Some((_, confirm))) => confirm.confirmed(sent),
                // No limit (or no lock): confirmed on its own.
                _ => crate::downstream::lock::confirm_held().await.map_err(lost)?,
            }
        }
        // Counted for the breaker however it ends, a timeout's drop included.
        let call = self.breaker.start(pass);
        let answer = self.request(&what, method, url, body, accept, is_write).await;
        call.finish(&answer).await;
        answer
    }

    /// The HTTP exchange itself: what the breaker judges the API by.
    async fn request(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<&Value>,
        accept: &[StatusCode],
        is_write: bool,
    ) -> Result<Option<Answer>, HandlerError> {
        let span = crate::traces::call(&method, &url);
        let mut request = self.http.request(method, url);
        if let Some(key) = &self.api_key {
            request = request.header(API_KEY_HEADER, key.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = crate::traces::send(request, span).await.map_err(|e| HandlerError::from_request(what, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|e| HandlerError::from_request(what, &e))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() && !accept.contains(&status) {
            let error = HandlerError::from_answer(what, status, &headers, &body);
            if let (true, HandlerError::Transient { retry_after: Some(wait), .. }) =
                (status == StatusCode::TOO_MANY_REQUESTS && is_write, &error)
            {
                // The limit is shared: pause every replica's writes, not only this entry's.
                self.limiter.pause(*wait).await;
            }
            return Err(error);
        }
        Ok(Some(Answer { status, body }))
    }

    /// GET a JSON document; `None` when it does not exist (404).
    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Option<T>, HandlerError> {
        match self.call(Method::GET, segments, None).await? {
            None => Ok(None),
            Some(answer) => serde_json::from_str(&answer.body).map(Some).map_err(|e| {
                HandlerError::permanent(format!(
                    "GET /{} answered a document hookstream cannot read: {e}",
                    segments.join("/")
                ))
            }),
        }
    }

    /// A bot request body: `BOT_CONFIG`, with `bot_name` and then `fields` set over it.
    pub fn bot_body(&self, fields: &[(&str, Value)]) -> Value {
        let mut body = self.bot_config.clone();
        body.insert("bot_name".into(), Value::String(self.bot_name.clone()));
        for (key, value) in fields {
            body.insert((*key).to_string(), value.clone());
        }
        Value::Object(body)
    }
}

/// Whether `id` matches the UUID pattern of the v2 OpenAPI document (version 1–8, RFC variant,
/// or the nil and max UUIDs), which the v2 API requires in paths and bodies.
pub fn is_uuid(id: &str) -> bool {
    if id == "00000000-0000-0000-0000-000000000000" || id.eq_ignore_ascii_case("ffffffff-ffff-ffff-ffff-ffffffffffff") {
        return true;
    }
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => (b'1'..=b'8').contains(c),
            19 => matches!(c, b'8' | b'9' | b'a' | b'b' | b'A' | b'B'),
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks an id before it goes into a v2 request; a malformed one is a permanent error, since
/// no retry can make the request valid.
pub fn require_uuid(field: &str, id: &str) -> Result<(), HandlerError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(HandlerError::permanent(format!("{field} {id:?} is not a UUID; the v2 API accepts only UUIDs")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("647da78e-783d-4a7a-be5c-117ad3b10d5c"));
        assert!(!is_uuid("evt-1"));
        assert!(!is_uuid("647da78e-783d-4a7a-be5c-117ad3b10d5"));
        assert!(!is_uuid("647da78e+783d-4a7a-be5c-117ad3b10d5c"));
        assert!(!is_uuid("647da78e-783d-9a7a-be5c-117ad3b10d5c"), "version nibble");
        assert!(!is_uuid("647da78e-783d-4a7a-ce5c-117ad3b10d5c"), "variant nibble");
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
    }
}
