//! `/api/v1/<kind>`: create, read, update, delete and list for every record kind of
//! `records::KINDS`, imports (`/api/v1/import/<kind>`) and GDPR erasure
//! (`DELETE /api/v1/users/{id}`). Read tokens may GET; writes need an admin token.

use std::collections::HashMap;

use super::api::blocking;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};

use super::api::{ApiError, ApiPath as Path, ApiQuery as Query, Caller};
use super::AppState;
use crate::import::{self, Format};
use crate::import::{Checks, Import, ImportReport};
use crate::limits;
use crate::records::{self, FieldError, Filter, Kind, Record};
use crate::store::Role;
use crate::store::{Deleted, ListFilter, Records};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/{kind}", get(list).post(create))
        .route("/api/v1/{kind}/{id}", get(read).put(replace).delete(remove))
        .route(
            "/api/v1/kpis/{account_id}/{name}/{date}",
            get(read_kpi).put(replace_kpi).delete(remove_kpi),
        )
        .route("/api/v1/import/{kind}", post(import_file))
        .route("/api/v1/users/{id}", delete(delete_user))
}

fn kind_of(name: &str) -> Result<&'static Kind, ApiError> {
    records::kind(name).ok_or_else(|| ApiError::NotFound(format!("no such record kind: {name}")))
}

fn single_key_kind(name: &str) -> Result<&'static Kind, ApiError> {
    let kind = kind_of(name)?;
    if kind.key.len() != 1 {
        return Err(ApiError::NotFound(format!(
            "{name} are addressed as /api/v1/{name}/{}",
            kind.key
                .iter()
                .map(|k| format!("{{{k}}}"))
                .collect::<Vec<_>>()
                .join("/")
        )));
    }
    Ok(kind)
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Runs record work off the async threads on the store that keeps the records (the
/// embedded store's connection, or ClickHouse).
pub(crate) async fn with_records<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut dyn Records) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(state, move |backend| {
        backend.run(|storage| work(storage))?
    })
    .await
}

fn field_errors(errors: Vec<FieldError>) -> ApiError {
    ApiError::Invalid(errors.into_iter().map(|e| (e.column, e.reason)).collect())
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let _ = caller.role; // every role may read
    let kind = kind_of(&kind)?;
    let mut filters = Vec::new();
    let mut limit = 100;
    let mut cursor = None;
    for (name, value) in &query {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=limits::API_PAGE_ROWS_MAX).contains(n))
                    .ok_or_else(|| ApiError::BadParameter {
                        field: "limit".into(),
                        reason: format!("must be 1 to {}", limits::API_PAGE_ROWS_MAX),
                    })?;
            }
            "cursor" => cursor = Some(decode_cursor(kind, value)?),
            _ => filters.push(list_filter(kind, name, value)?),
        }
    }
    let page = with_records(&state, move |records| {
        Ok(records.list(kind, &filters, cursor.as_deref(), limit)?)
    })
    .await?;
    let items: Vec<Value> = page.records.iter().map(|r| r.to_json(kind)).collect();
    Ok(Json(
        json!({"items": items, "next_cursor": page.next_cursor.map(|c| encode_cursor(&c))}),
    ))
}

/// `column=value` for equality filters, `column_from` / `column_to` for ranges.
fn list_filter(kind: &Kind, name: &str, value: &str) -> Result<ListFilter, ApiError> {
    let bad = |reason: String| ApiError::BadParameter {
        field: name.to_string(),
        reason,
    };
    let (column_name, bound) = match (name.strip_suffix("_from"), name.strip_suffix("_to")) {
        (Some(c), _) => (c, Some(true)),
        (_, Some(c)) => (c, Some(false)),
        _ => (name, None),
    };
    let column = kind
        .columns
        .iter()
        .find(|c| {
            c.name == column_name
                && ((bound.is_some() && c.filter == Filter::Range)
                    || (bound.is_none() && c.filter == Filter::Equals))
        })
        .ok_or_else(|| bad(format!("not a filter of {}", kind.name)))?;
    let cell = records::parse_filter_value(column.ty, value).map_err(bad)?;
    Ok(match bound {
        None => ListFilter::Equals(column.name, cell),
        Some(true) => ListFilter::AtLeast(column.name, cell),
        Some(false) => ListFilter::AtMost(column.name, cell),
    })
}

fn encode_cursor(key: &[String]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Value::from(key.to_vec()).to_string())
}

fn decode_cursor(kind: &Kind, text: &str) -> Result<Vec<String>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        .filter(|key| key.len() == kind.key.len())
        .ok_or_else(|| ApiError::BadParameter {
            field: "cursor".into(),
            reason: "not a cursor from a previous page".into(),
        })
}

async fn read(
    caller: Caller,
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let _ = caller.role;
    let kind = single_key_kind(&kind)?;
    read_record(&state, kind, vec![id]).await
}

async fn read_kpi(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let _ = caller.role;
    read_record(&state, &records::KPIS, vec![key.0, key.1, key.2]).await
}

async fn read_record(
    state: &AppState,
    kind: &'static Kind,
    key: Vec<String>,
) -> Result<Json<Value>, ApiError> {
    let shown = key.join("/");
    let record = with_records(state, move |records| Ok(records.get(kind, &key)?)).await?;
    record
        .map(|r| Json(r.to_json(kind)))
        .ok_or_else(|| ApiError::NotFound(format!("no {} {shown}", kind.singular)))
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let kind = kind_of(&kind)?;
    let object = json_body(&headers, body).await?;
    let record = records::from_json(kind, &object).map_err(field_errors)?;
    let key = record.key(kind);
    let exists = with_records(&state, {
        let key = key.clone();
        move |records| Ok(records.get(kind, &key)?.is_some())
    })
    .await?;
    if exists {
        return Err(ApiError::Conflict(format!(
            "{} {} already exists; use PUT to replace it",
            kind.singular,
            key.join("/")
        )));
    }
    save(&state, kind, record).await?;
    let Json(stored) = read_record(&state, kind, key).await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

async fn replace(
    caller: Caller,
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let kind = single_key_kind(&kind)?;
    replace_record(&state, kind, vec![id], headers, body).await
}

async fn replace_kpi(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    replace_record(
        &state,
        &records::KPIS,
        vec![key.0, key.1, key.2],
        headers,
        body,
    )
    .await
}

/// PUT: the body is the whole record; the key comes from the path (and must match if the
/// body repeats it). 201 when it was created, 200 when replaced.
async fn replace_record(
    state: &AppState,
    kind: &'static Kind,
    key: Vec<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut object = json_body(&headers, body).await?;
    for (name, value) in kind.key.iter().zip(&key) {
        match object.get(*name) {
            Some(given) if records::json_field_text(given).as_deref() != Some(value.as_str()) => {
                return Err(ApiError::Invalid(vec![(
                    name.to_string(),
                    format!("does not match the path ({value:?})"),
                )]));
            }
            _ => {
                object.insert(name.to_string(), Value::String(value.clone()));
            }
        }
    }
    let record = records::from_json(kind, &object).map_err(field_errors)?;
    // The key is stored as validated (trimmed, dates as YYYY-MM-DD): a path that is not
    // already in that form would write one record and read back another.
    if record.key(kind) != key {
        return Err(ApiError::Invalid(vec![(
            kind.key.join("/"),
            format!(
                "the path must give the key in canonical form: {}",
                record.key(kind).join("/")
            ),
        )]));
    }
    let report = save(state, kind, record).await?;
    let Json(stored) = read_record(state, kind, key).await?;
    let status = if report.inserted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)).into_response())
}

/// Stores one record through the same checks as an import (account exists, hierarchy,
/// currency rate).
async fn save(
    state: &AppState,
    kind: &'static Kind,
    record: Record,
) -> Result<ImportReport, ApiError> {
    let (currency, listening) = (state.currency.clone(), state.listening.clone());
    let report = with_records(state, move |records| {
        let check = move |code: &str| currency.check(code);
        let reason = move |code: &str| listening.check_reason(code);
        let mut import = Import::into_target(
            records.import_target(kind)?,
            kind,
            Checks {
                currency: &check,
                reason: &reason,
            },
        );
        import.row(1, Ok(record))?;
        Ok(import.finish()?)
    })
    .await?;
    if !report.stored {
        return Err(ApiError::Invalid(
            report
                .errors
                .into_iter()
                .map(|e| (e.column, e.reason))
                .collect(),
        ));
    }
    state.signals.poke();
    Ok(report)
}

async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let kind = single_key_kind(&kind)?;
    remove_record(&state, kind, vec![id]).await
}

async fn remove_kpi(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    remove_record(&state, &records::KPIS, vec![key.0, key.1, key.2]).await
}

async fn remove_record(
    state: &AppState,
    kind: &'static Kind,
    key: Vec<String>,
) -> Result<StatusCode, ApiError> {
    let shown = key.join("/");
    match with_records(state, move |records| Ok(records.delete(kind, &key)?)).await? {
        Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        Deleted::NotFound => Err(ApiError::NotFound(format!("no {} {shown}", kind.singular))),
        Deleted::Referenced(why) => Err(ApiError::Conflict(why)),
    }
}

async fn json_body(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_limited(headers, body, limits::RECORD_BODY_BYTES_MAX).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::BadParameter {
            field: "body".into(),
            reason: "expected a JSON object".into(),
        }),
        Err(e) => Err(ApiError::BadParameter {
            field: "body".into(),
            reason: format!("invalid JSON: {e}"),
        }),
    }
}

async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    super::read_body_limited(headers, body, limit)
        .await
        .map_err(|e| match e {
            super::BodyError::TooLarge => {
                ApiError::TooLarge(format!("body longer than {limit} bytes"))
            }
            super::BodyError::Stalled => ApiError::Timeout(
                "the body stopped arriving before its announced end; nothing was stored".into(),
            ),
        })
}

#[derive(serde::Deserialize)]
struct ImportQuery {
    format: Option<String>,
}

/// `POST /api/v1/import/<kind>` with a CSV (`text/csv`) or NDJSON
/// (`application/x-ndjson`) body, or `?format=csv|ndjson`. 200 with the report when
/// stored; 422 with the report's errors when nothing was stored.
async fn import_file(
    caller: Caller,
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if kind == "activities" {
        return import_activities(&state, &headers, body).await;
    }
    let kind = kind_of(&kind)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match query.format.as_deref() {
        Some(f) => Format::parse(f).ok_or_else(|| ApiError::BadParameter {
            field: "format".into(),
            reason: format!("{f:?} is not csv or ndjson"),
        })?,
        None if content_type.starts_with("text/csv") => Format::Csv,
        None if content_type.starts_with("application/x-ndjson")
            || content_type.starts_with("application/jsonl") =>
        {
            Format::Ndjson
        }
        None => {
            return Err(ApiError::BadParameter {
                field: "Content-Type".into(),
                reason: "send text/csv or application/x-ndjson, or ?format=csv|ndjson".into(),
            })
        }
    };
    let bytes = read_limited(&headers, body, limits::IMPORT_BODY_BYTES_MAX).await?;
    let (currency, listening) = (state.currency.clone(), state.listening.clone());
    let report = with_records(&state, move |records| {
        let check = move |code: &str| currency.check(code);
        let reason = move |code: &str| listening.check_reason(code);
        let target = Import::into_target(
            records.import_target(kind)?,
            kind,
            Checks {
                currency: &check,
                reason: &reason,
            },
        );
        Ok(import::read_into(target, format, &bytes[..], &mut |_| {})?)
    })
    .await?;
    if report.stored {
        // New tickets, answers or contracts may make rules fire.
        state.signals.poke();
        Ok(Json(report).into_response())
    } else {
        Err(ApiError::ImportFailed(Box::new(report)))
    }
}

/// `POST /api/v1/import/activities`: logged calls, meetings, emails and notes from a CSV
/// (see `import::activities`), all or none.
async fn import_activities(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/csv") {
        return Err(ApiError::BadParameter {
            field: "Content-Type".into(),
            reason: "activities are imported from CSV: send text/csv".into(),
        });
    }
    let bytes = read_limited(headers, body, limits::IMPORT_BODY_BYTES_MAX).await?;
    let report = crate::web::api::blocking(state, move |backend| {
        Ok(backend.run(|storage| {
            crate::import::activities::import(
                storage,
                &bytes[..],
                chrono::Utc::now().timestamp_millis(),
            )
        })??)
    })
    .await?;
    if report.stored {
        Ok(Json(report).into_response())
    } else {
        Err(ApiError::ImportFailed(Box::new(report)))
    }
}

async fn delete_user(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let deletion = blocking(&state, move |backend| Ok(backend.delete_user(&id)?)).await?;
    Ok(Json(
        serde_json::to_value(deletion).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}
