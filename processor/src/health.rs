//! `/healthz`, `/readyz` and `/metrics` on `METRICS_ADDR`.

use crate::stream::{Gauges, Stream};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use shared::http::{json, metrics_response, ApiError, Body};

#[derive(serde::Serialize)]
struct Status {
    status: &'static str,
}

fn set_gauges(g: &Gauges) {
    metrics::gauge!("hookstream_stream_length").set(g.stream_length as f64);
    metrics::gauge!("hookstream_dead_length").set(g.dead_length as f64);
    metrics::gauge!("hookstream_group_pending").set(g.group_pending as f64);
    metrics::gauge!("hookstream_group_lag").set(g.group_lag as f64);
    metrics::gauge!(crate::metrics::RETRY_PARKED).set(g.parked as f64);
}

/// `hookstream_breaker_open{downstream}`: 1 while open or half open, as Redis has it.
async fn set_breaker_gauges(stream: &Stream) {
    for downstream in crate::downstream::breaker::Downstream::ALL {
        let key = stream.keys.breaker(downstream.label());
        if let Ok(state) = crate::downstream::breaker::state(&mut stream.connection(), &key).await {
            let open = if state.is_open() { 1.0 } else { 0.0 };
            metrics::gauge!(crate::metrics::BREAKER_OPEN, "downstream" => downstream.label()).set(open);
        }
    }
}

/// The gauges summed over every partition's stream; each partition's lag, pending and parked
/// entries are also set on their own (`hookstream_partition_*{partition}`), so a dashboard can
/// show which partition is behind.
async fn gauges(streams: &[Stream]) -> redis::RedisResult<Gauges> {
    let mut total = Gauges::default();
    for stream in streams {
        let g = stream.gauges().await?;
        let partition = stream.keys.partition.to_string();
        metrics::gauge!(crate::metrics::PARTITION_LAG, "partition" => partition.clone()).set(g.group_lag as f64);
        metrics::gauge!(crate::metrics::PARTITION_PENDING, "partition" => partition.clone())
            .set(g.group_pending as f64);
        metrics::gauge!(crate::metrics::PARTITION_PARKED, "partition" => partition).set(g.parked as f64);
        total.stream_length += g.stream_length;
        total.dead_length += g.dead_length;
        total.group_pending += g.group_pending;
        total.group_lag += g.group_lag;
        total.parked += g.parked;
    }
    Ok(total)
}

pub async fn answer(streams: &[Stream], req: Request<Incoming>) -> Response<Body> {
    let method = req.method();
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" | "/metrics" if method != Method::GET && method != Method::HEAD => {
            ApiError::method_not_allowed(method, path, "GET, HEAD").into_response()
        }
        "/healthz" => json(StatusCode::OK, &Status { status: "ok" }),
        "/readyz" => match gauges(streams).await {
            Ok(_) => json(StatusCode::OK, &Status { status: "ready" }),
            Err(err) => ApiError::unavailable(format!("Redis does not answer: {err}")).into_response(),
        },
        "/metrics" => {
            // The gauges are read when scraped, so they are never stale.
            if let Ok(gauges) = gauges(streams).await {
                set_gauges(&gauges);
            }
            if let Some(stream) = streams.first() {
                set_breaker_gauges(stream).await;
                if let Ok(records) = crate::calendars::all(&mut stream.connection(), &stream.keys.calendars).await {
                    crate::metrics::calendar_connections(&crate::calendars::count(&records));
                }
            }
            metrics_response()
        }
        _ => ApiError::not_found(method, path).into_response(),
    }
}
