//! The Segment HTTP Tracking API: `/v1/track|identify|group|page|screen|alias` (one message
//! each) and `/v1/batch` (`/v1/import` is the same). A 200 means durably committed.
//!
//! Responses: `200 {"success":true}`; a batch with refused items still stores the valid
//! ones and answers `200 {"success":true,"rejected":[{"index","field","reason"}]}`; a batch
//! with no valid item, or any refused single call, is `400 {"success":false,"field","reason"}`
//! (plus `rejected` for batches). 401 unknown write key, 413 too large, 415 unknown
//! Content-Encoding (and 413 for a batch larger than the source's one-second allowance),
//! 429 over the source's or the address's rate limit (Retry-After), 503 queue full or
//! storage failing (retry later). Browsers may call from `[ingest] cors_origins`.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;

use super::AppState;
use crate::ingest::{self, Kind, Rejection, SubmitError};
use crate::limits;

pub fn router() -> Router<AppState> {
    let single = |kind: Kind| {
        post(
            move |state: State<AppState>, headers: HeaderMap, body: Body| {
                call(state, headers, body, kind)
            },
        )
    };
    Router::new()
        .route("/v1/track", single(Kind::Track))
        .route("/v1/identify", single(Kind::Identify))
        .route("/v1/group", single(Kind::Group))
        .route("/v1/page", single(Kind::Page))
        .route("/v1/screen", single(Kind::Screen))
        .route("/v1/alias", single(Kind::Alias))
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
}

/// What every tracking call does first: authenticate by the Basic header if there is one
/// (an unknown key is refused before the body is read), read the body within `limit`, and
/// note the receive time.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(i64, Option<Arc<str>>, Bytes), Response> {
    let header_source = header_source(state, headers)?;
    let bytes = read_body(state, headers, body, limit).await?;
    // Received when the whole body is in: a slow upload is not received at its start.
    let received_ms = chrono::Utc::now().timestamp_millis();
    Ok((received_ms, header_source, bytes))
}

async fn call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Response {
    let (received_ms, header_source, bytes) =
        match receive(&state, &headers, body, limits::CALL_BYTES_MAX).await {
            Ok(received) => received,
            Err(response) => return response,
        };
    let (body_key, message) =
        match ingest::parse_call(kind, &bytes, received_ms, &state.event_times) {
            Ok(parsed) => parsed,
            Err(rejection) => return bad_request(&state, rejection, None),
        };
    let Some(source) = header_source.or_else(|| body_source(&state, body_key.as_deref())) else {
        return unauthorized(&state);
    };
    if let Err(response) = rate_check(&state, &source, 1) {
        return response;
    }
    match state
        .ingestor
        .submit(source, vec![message], bytes.len() as u64)
        .await
    {
        Ok(_) => (StatusCode::OK, Json(json!({"success": true}))).into_response(),
        Err(e) => unavailable(&state, e),
    }
}

async fn batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (received_ms, header_source, bytes) =
        match receive(&state, &headers, body, limits::BATCH_BYTES_MAX).await {
            Ok(received) => received,
            Err(response) => return response,
        };
    let parsed = match ingest::parse_batch(&bytes, received_ms, &state.event_times) {
        Ok(parsed) => parsed,
        Err(rejection) => return bad_request(&state, rejection, None),
    };
    let Some(source) = header_source.or_else(|| body_source(&state, parsed.write_key.as_deref()))
    else {
        return unauthorized(&state);
    };
    for item in &parsed.rejected {
        state.telemetry.reject(
            Rejection {
                field: item.field.clone(),
                reason: item.reason.clone(),
            }
            .metric_label(),
        );
    }
    if parsed.messages.is_empty() && !parsed.rejected.is_empty() {
        let rejection = Rejection {
            field: "batch".into(),
            reason: "no valid message".into(),
        };
        return bad_request(&state, rejection, Some(json!(parsed.rejected)));
    }
    if let Err(response) = rate_check(&state, &source, parsed.messages.len()) {
        return response;
    }
    match state
        .ingestor
        .submit(source, parsed.messages, bytes.len() as u64)
        .await
    {
        Ok(_) if parsed.rejected.is_empty() => {
            (StatusCode::OK, Json(json!({"success": true}))).into_response()
        }
        Ok(_) => (
            StatusCode::OK,
            Json(json!({"success": true, "rejected": parsed.rejected})),
        )
            .into_response(),
        Err(e) => unavailable(&state, e),
    }
}

/// The source of an `Authorization: Basic` write key. `Ok(None)` when there is no such
/// header (the body may carry `writeKey`); an unknown key is a 401 at once.
// The error is the response that ends the request: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
pub(super) fn header_source(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<str>>, Response> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let key = super::credentials(headers, "basic")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .map(|user_pass| {
            user_pass
                .split_once(':')
                .map(|(user, _)| user.to_string())
                .unwrap_or(user_pass)
        });
    match key.and_then(|k| state.write_keys.get(&super::key_digest(&k)).cloned()) {
        Some(source) => Ok(Some(source)),
        None => Err(unauthorized(state)),
    }
}

pub(super) fn body_source(state: &AppState, key: Option<&str>) -> Option<Arc<str>> {
    key.and_then(|k| state.write_keys.get(&super::key_digest(k)).cloned())
}

/// Reads the body up to `limit` bytes after gzip decompression.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Response> {
    let too_large = || {
        state.telemetry.reject("too_large");
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            &format!("longer than {limit} bytes"),
        )
    };
    let raw = super::read_body_limited(headers, body, limit)
        .await
        .map_err(|e| match e {
            super::BodyError::TooLarge => too_large(),
            super::BodyError::Stalled => {
                state.telemetry.reject("body_timeout");
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body",
                    "the body stopped arriving before its announced end; nothing was stored",
                )
            }
        })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let read = flate2::read::MultiGzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Err(e) => {
                    state.telemetry.reject("invalid_gzip");
                    Err(error(
                        StatusCode::BAD_REQUEST,
                        "body",
                        &format!("invalid gzip: {e}"),
                    ))
                }
                Ok(n) if n > limit => Err(too_large()),
                Ok(_) => Ok(Bytes::from(out)),
            }
        }
        other => {
            state.telemetry.reject("unsupported_encoding");
            Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding",
                &format!("{other:?} is not supported; send identity or gzip"),
            ))
        }
    }
}

/// The source's rate limit: `n` messages more now, or a 429 saying when to retry. A batch
/// larger than one second's allowance is a 413 naming the limit (retrying would never pass).
// The error is the response that ends the request: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
fn rate_check(state: &AppState, source: &str, n: usize) -> Result<(), Response> {
    let Some(limiter) = state.rate_limiters.get(source) else {
        return Ok(());
    };
    let Some(n) = std::num::NonZeroU32::new(n.max(1) as u32) else {
        return Ok(());
    };
    let refuse = |retry: u64, reason: String| {
        state.telemetry.reject("rate_limited");
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "writeKey", &reason);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry));
        response
    };
    match limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(refuse(
            super::shield::retry_after(&not_until),
            format!("source {source} is over its rate limit; retry later"),
        )),
        // Retrying cannot help: the batch is larger than the bucket ever holds.
        Err(governor::InsufficientCapacity(most)) => {
            state.telemetry.reject("too_large");
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch",
                &format!("{n} messages are more than source {source} may send in one second ([ingest] rate limit {most}); send batches of at most {most}"),
            ))
        }
    }
}

fn error(status: StatusCode, field: &str, reason: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "field": field, "reason": reason})),
    )
        .into_response()
}

fn bad_request(
    state: &AppState,
    rejection: Rejection,
    rejected: Option<serde_json::Value>,
) -> Response {
    state.telemetry.reject(rejection.metric_label());
    tracing::debug!(field = %rejection.field, reason = %rejection.reason, "rejected request");
    let mut body = json!({"success": false, "field": rejection.field, "reason": rejection.reason});
    if let Some(rejected) = rejected {
        body["rejected"] = rejected;
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn unauthorized(state: &AppState) -> Response {
    state.telemetry.reject("unauthorized");
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "writeKey",
        "unknown write key; send it as the Basic auth user name or as writeKey",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"bellwether\""),
    );
    response
}

fn unavailable(state: &AppState, e: SubmitError) -> Response {
    let reason = match &e {
        SubmitError::QueueFull => {
            state.telemetry.reject("queue_full");
            "ingest queue is full; retry later"
        }
        SubmitError::WriterGone | SubmitError::Commit(_) => {
            tracing::error!(error = %e, "ingest failed; answered 503");
            "storage is unavailable; nothing of this request was stored; retry later"
        }
    };
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"success": false, "reason": reason})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
