//! Operational endpoints: `/healthz` (the process answers), `/readyz` (it can take
//! events now), `/metrics` (Prometheus text format), `/js/activity.js` and `/js/survey.js`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/js/activity.js", get(|| async { script(ACTIVITY_JS) }))
        .route("/js/survey.js", get(|| async { script(SURVEY_JS) }))
}

/// The active-time script (see its header). Embedded in the binary: no CDN, no files.
const ACTIVITY_JS: &str = include_str!("assets/activity.js");

/// The survey snippet (see its header).
const SURVEY_JS: &str = include_str!("assets/survey.js");

fn script(body: &'static str) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the writer runs, the queue has room and the database answers.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let writer = state.ingestor.writer_alive();
    let queue_room = state.ingestor.depth_bytes() < state.ingestor.capacity_bytes();
    let database = state.backend.ping().await;
    let ready = writer && queue_room && database;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"ready": ready, "writer": writer, "queue_room": queue_room, "database": database}),
        ),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .telemetry
        .queue_bytes
        .set(state.ingestor.depth_bytes() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.telemetry.render(),
    )
}
