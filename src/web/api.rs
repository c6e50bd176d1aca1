//! The REST API under `/api/v1`, authenticated by bearer API tokens
//! (`bellwether token create`). Errors are RFC 9457 `application/problem+json`.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::store::{Backend, EventFilter, Role, StoreError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/openapi.json", get(openapi))
}

async fn openapi() -> Response {
    let document = super::openapi::document();
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

/// One error shape for the whole API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a bearer API token is required")]
    Unauthenticated,
    #[error("this token's role cannot do that")]
    Forbidden,
    #[error("{field}: {reason}")]
    BadParameter { field: String, reason: String },
    #[error("{}", .0.iter().map(|(f, r)| format!("{f}: {r}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("import stored nothing: {} error(s)", .0.error_count)]
    ImportFailed(Box<crate::import::ImportReport>),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadParameter { .. } => (StatusCode::BAD_REQUEST, "bad parameter"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid record"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too large"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::ImportFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "import failed"),
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "api internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        let mut body = json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": self.to_string()});
        match &self {
            ApiError::BadParameter { field, .. } => body["field"] = json!(field),
            ApiError::Invalid(errors) => {
                body["errors"] = errors
                    .iter()
                    .map(|(field, reason)| json!({"field": field, "reason": reason}))
                    .collect();
            }
            ApiError::ImportFailed(report) => {
                body["errors"] = json!(report.errors);
                body["error_count"] = json!(report.error_count);
                body["rows"] = json!(report.rows);
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `Path` whose rejection is an [`ApiError`] (problem+json), not axum's plain text.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e| ApiError::BadParameter {
                field: "path".into(),
                reason: e.body_text(),
            })
    }
}

/// `Query` whose rejection is an [`ApiError`] (problem+json), not axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::BadParameter {
                field: "query".into(),
                reason: e.body_text(),
            })
    }
}

/// A request carrying a valid API token; `role` says what it may do.
pub struct Caller {
    pub role: Role,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = super::credentials(&parts.headers, "bearer").map(str::to_string) else {
            return session_reader(parts, state).await;
        };
        let role = blocking(state, move |backend| Ok(backend.token_role(&token)?)).await?;
        role.map(|role| Caller { role })
            .ok_or(ApiError::Unauthenticated)
    }
}

/// A read (GET or HEAD) with a dashboard session and no token: a reader, as every
/// signed-in user may read every page. Writes need a token; a cross-site page cannot read
/// the answer (no CORS for `/api`).
async fn session_reader(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    use axum::http::Method;
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(ApiError::Unauthenticated);
    }
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(&parts.headers);
    let Some(secret) = jar
        .get(super::SESSION_COOKIE)
        .map(|c| c.value().to_string())
    else {
        return Err(ApiError::Unauthenticated);
    };
    let session = blocking(state, move |backend| {
        Ok(backend.run(|source| crate::users::session(source, &secret))??)
    })
    .await?;
    session
        .map(|_| Caller { role: Role::Read })
        .ok_or(ApiError::Unauthenticated)
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    user: Option<String>,
    account: Option<String>,
    limit: Option<usize>,
    format: Option<String>,
}

/// `GET /api/v1/events?since=&until=&user=&account=&limit=&format=json|ndjson`: stored
/// events by the time they were received, for debugging an integration.
async fn list_events(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let _ = caller.role; // every role may read events
    let now_ms = chrono::Utc::now().timestamp_millis();
    let bad = |field: &str, reason: String| ApiError::BadParameter {
        field: field.into(),
        reason,
    };
    let since_ms = match &query.since {
        Some(text) => crate::ingest::parse_date_or_time(text).map_err(|r| bad("since", r))?,
        None => now_ms - 86_400_000,
    };
    let until_ms = match &query.until {
        Some(text) => Some(crate::ingest::parse_date_or_time(text).map_err(|r| bad("until", r))?),
        None => None,
    };
    let limit = query.limit.unwrap_or(1_000);
    if limit == 0 || limit > crate::limits::EVENTS_LIST_ROWS_MAX {
        return Err(bad(
            "limit",
            format!("must be 1 to {}", crate::limits::EVENTS_LIST_ROWS_MAX),
        ));
    }
    let ndjson = match query.format.as_deref() {
        None | Some("json") => false,
        Some("ndjson") => true,
        Some(other) => return Err(bad("format", format!("{other:?} is not json or ndjson"))),
    };
    let filter = EventFilter {
        since_ms,
        until_ms,
        user: query.user,
        account: query.account,
        limit,
    };
    let events = blocking(&state, move |backend| Ok(backend.list_events(&filter)?)).await?;
    if ndjson {
        let mut body = String::new();
        for event in &events {
            body.push_str(&serde_json::Value::Object(event.as_received()).to_string());
            body.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    Ok(Json(json!({"events": events})).into_response())
}

/// Runs storage work off the async threads: `work` gets the configured backend.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Backend) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let backend = state.backend.clone();
    tokio::task::spawn_blocking(move || work(&backend))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}
