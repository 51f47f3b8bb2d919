//! Why a webhook request is not accepted: one type for every answer the pipeline can give
//! instead of `200`, knowing its HTTP status, its `error` code and its metric outcome, so the
//! pipeline reads top to bottom with `?`.

use crate::auth::AuthError;
use crate::metrics::Outcome;
use http::header::{HeaderValue, CONNECTION};
use http::{Response, StatusCode};
use shared::http::{ApiError, Body};

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request did not arrive within REQUEST_TIMEOUT_MS={ms}")]
    Timeout { ms: u128 },
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Invalid(String),
    #[error("{backlog} events wait for processing (more than MAX_BACKLOG={max}); retry later")]
    BacklogFull { backlog: u64, max: u64 },
    #[error("the event could not be stored, retry later: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error(
        "the event is stored but only {got} of MIN_REPLICAS_ACK={wanted} Redis replicas confirmed it in time; \
         retry later (the retry is answered once it is replicated)"
    )]
    NotReplicated { wanted: u32, got: u32 },
    #[error("hookstream is misconfigured, retry later: {0}")]
    Misconfigured(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::BacklogFull { .. } | Self::Unavailable(_) | Self::NotReplicated { .. } | Self::Misconfigured(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `error` code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooLarge { .. } => "payload_too_large",
            Self::Timeout { .. } => "request_timeout",
            Self::Unauthorized(_) => "unauthorized",
            Self::Invalid(_) => "invalid_payload",
            Self::BacklogFull { .. } => "backlog_full",
            Self::Unavailable(_) | Self::NotReplicated { .. } | Self::Misconfigured(_) => "unavailable",
        }
    }

    /// The `outcome` label of `hookstream_ingress_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::UnsupportedMediaType => Outcome::Unsupported,
            Self::TooLarge { .. } => Outcome::TooLarge,
            Self::Timeout { .. } => Outcome::Timeout,
            Self::Unauthorized(_) => Outcome::Unauthorized,
            Self::Invalid(_) => Outcome::Invalid,
            Self::BacklogFull { .. } | Self::Unavailable(_) | Self::NotReplicated { .. } | Self::Misconfigured(_) => {
                Outcome::Unavailable
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let unread_body = matches!(self, Self::Timeout { .. } | Self::TooLarge { .. });
        let mut response = ApiError::new(self.status(), self.code(), self.to_string()).into_response();
        if unread_body {
            // The rest of the body was never read: the connection cannot carry another request.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
