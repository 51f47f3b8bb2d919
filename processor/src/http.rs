//! A downstream call: the one outbound HTTP client, and how a call that failed is classified —
//! transient (network errors, timeouts, HTTP 408, 425, 429, 5xx) or permanent (other 4xx, a
//! redirect, an answer that cannot be read) — where it arises ([`HandlerError::from_answer`],
//! [`HandlerError::from_request`]). The retry loop only reads the class; the breaker counts the
//! transient ones; the client span names the failure ([`RequestFailure`]).

use reqwest::StatusCode;
use std::time::Duration;

/// Why an attempt failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("{reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    #[error("{0}")]
    Permanent(String),
    /// The downstream was not called: its breaker is open ([`crate::downstream::breaker`]) for `wait` more.
    /// Not an attempt: the entry is parked (or, without parking, waits in place).
    #[error("{reason}")]
    Unavailable { reason: String, wait: Duration, downstream: &'static str },
}

impl HandlerError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient { reason: reason.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent(reason.into())
    }

    /// Classifies a non-2xx answer to `what` from its status and headers. A redirect (3xx) is
    /// never followed (a POST would become a GET without its body, and the API key would travel
    /// to whatever host the redirect names): it is a permanent error naming the status and the
    /// `Location`, so the entry lands in the dead stream where a person sees it.
    pub fn from_answer(what: &str, status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str) -> Self {
        if status.is_redirection() {
            let location = headers
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_else(|| "(none)".into());
            return Self::Permanent(format!(
                "{what} answered {status} redirecting to Location: {location}; redirects are not followed \
                 (point the URL at the final address)"
            ));
        }
        Self::from_status(what, status, retry_after(headers), body)
    }

    /// Classifies a non-2xx, non-3xx answer to `what` (e.g. "POST /calendar_events/…/bot").
    pub fn from_status(what: &str, status: StatusCode, retry_after: Option<Duration>, body: &str) -> Self {
        let snippet: String = body.chars().take(300).collect();
        let reason = format!("{what} answered {status}: {snippet}");
        let code = status.as_u16();
        if code == 408 || code == 425 || code == 429 || status.is_server_error() {
            Self::Transient { reason, retry_after }
        } else {
            Self::Permanent(reason)
        }
    }

    /// Classifies a failed request (no answer): always transient (connect errors, timeouts, resets).
    pub fn from_request(what: &str, err: &reqwest::Error) -> Self {
        let kind = match RequestFailure::of(err) {
            RequestFailure::Timeout => "timed out",
            RequestFailure::Connect => "could not connect",
            RequestFailure::Other => "failed",
        };
        // Without its URL: `what` names the call already, and a URL may carry credentials or a
        // token (SPEC §7).
        let err = RequestFailure::without_url(err);
        Self::transient(format!("{what} {kind}: {err}"))
    }
}

/// Why a request got no answer (for the error's wording and the client span's `error.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    Timeout,
    Connect,
    Other,
}

impl RequestFailure {
    /// `err`'s message without the URL reqwest puts in it, and without its source chain's
    /// copy of it: what is shown is the error itself.
    pub fn without_url(err: &reqwest::Error) -> String {
        use std::error::Error;
        let mut text = String::from(match () {
            _ if err.is_timeout() => "operation timed out",
            _ if err.is_connect() => "error trying to connect",
            _ if err.is_body() || err.is_decode() => "error reading the body",
            _ if err.is_request() => "error sending the request",
            _ => "error",
        });
        let mut source = err.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !cause_text.contains("://") {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    pub fn of(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect
        } else {
            Self::Other
        }
    }
}

/// The one outbound HTTP client (connection pool, rustls), reused by every handler. It never
/// follows redirects (see [`HandlerError::from_answer`]).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .user_agent(concat!("hookstream/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (when.with_timezone(&chrono::Utc) - crate::clock::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = |code: u16| HandlerError::from_status("x", StatusCode::from_u16(code).expect("code"), None, "");
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(matches!(t(code), HandlerError::Transient { .. }), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(matches!(t(code), HandlerError::Permanent(_)), "{code}");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::LOCATION, "https://elsewhere.example/hook".parse().expect("value"));
        for code in [301, 302, 303, 307, 308] {
            let status = StatusCode::from_u16(code).expect("code");
            match HandlerError::from_answer("POST /hook", status, &headers, "") {
                HandlerError::Permanent(reason) => {
                    assert!(reason.contains(&code.to_string()) && reason.contains("https://elsewhere.example/hook"))
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().expect("value"));
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(20)));
        // The form HTTP servers send (IMF-fixdate, RFC 9110): "Sun, 06 Nov 1994 08:49:37 GMT".
        let later =
            (chrono::Utc::now() + chrono::Duration::seconds(30)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().expect("value"));
        assert!(
            retry_after(&h).is_some_and(|d| d > Duration::from_secs(20) && d <= Duration::from_secs(30)),
            "{later}"
        );
        // A date in the past: no wait beyond the backoff's own.
        h.insert(reqwest::header::RETRY_AFTER, "Sun, 06 Nov 1994 08:49:37 GMT".parse().expect("value"));
        assert_eq!(retry_after(&h), None);
    }
}
