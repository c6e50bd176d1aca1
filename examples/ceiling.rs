//! The ingest benchmark's baseline: the same framework (axum on tokio) and the same Segment
//! parser as `bellwether serve`, answering 200 without storing anything. The ratio of
//! bellwether's durable ingest rate to this server's rate is the number bench/ reports.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bellwether::ingest::{self, Kind};
use bellwether::limits;
use serde_json::json;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn batch(body: Bytes) -> (StatusCode, Json<serde_json::Value>) {
    match ingest::parse_batch(&body, now_ms(), &ingest::TimeRange::default()) {
        Ok(parsed) if parsed.rejected.is_empty() => {
            (StatusCode::OK, Json(json!({"success": true})))
        }
        _ => (StatusCode::BAD_REQUEST, Json(json!({"success": false}))),
    }
}

async fn track(body: Bytes) -> (StatusCode, Json<serde_json::Value>) {
    match ingest::parse_call(Kind::Track, &body, now_ms(), &ingest::TimeRange::default()) {
        Ok(_) => (StatusCode::OK, Json(json!({"success": true}))),
        Err(_) => (StatusCode::BAD_REQUEST, Json(json!({"success": false}))),
    }
}

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Router::new()
            .route("/v1/batch", post(batch))
            .route("/v1/track", post(track))
            .layer(DefaultBodyLimit::max(limits::BATCH_BYTES_MAX));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("ceiling listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
