//! The listening API: comments (every stream, with theme and sentiment), CSM notes,
//! themes over all comments, detractors' or red accounts', and the churn-reason report;
//! reports answer JSON or, with `format=csv`, CSV.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, ApiPath as Path, ApiQuery as Query, Caller};
use super::metrics::{bad, cached_snapshot, date_param, today, with_source};
use super::AppState;
use crate::accounts;
use crate::listening::report::{self as sl, Among};
use crate::store::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/comments", get(comments))
        .route("/api/v1/accounts/{id}/notes", get(notes).post(add_note))
        .route("/api/v1/themes", get(themes))
        .route("/api/v1/reports/churn_reasons", get(churn_reasons))
}

fn csv_wanted(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(bad("format", format!("{other:?} is not json or csv"))),
    }
}

fn csv_response(header_row: &[&str], rows: Vec<Vec<String>>) -> Result<Response, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(header_row)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    for row in rows {
        writer
            .write_record(row.iter().map(|cell| crate::metrics::csv_text(cell)))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Deserialize)]
struct CommentsQuery {
    account: Option<String>,
    source: Option<String>,
    format: Option<String>,
}

const SOURCES: &[&str] = &["survey", "ticket", "suggestion", "churn", "note"];

/// `GET /api/v1/comments?account=&source=&format=`: every comment stream in one list, each
/// with its theme and sentiment.
async fn comments(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<CommentsQuery>,
) -> Result<Response, ApiError> {
    let csv = csv_wanted(query.format.as_deref())?;
    if let Some(source) = query.source.as_deref().filter(|s| !SOURCES.contains(s)) {
        return Err(bad(
            "source",
            format!("{source:?} is not one of {}", SOURCES.join(", ")),
        ));
    }
    let rules = state.listening.themes.clone();
    let all = with_source(&state, |source, _| Ok(sl::comments(source)?)).await?;
    let (themed, _) = crate::listening::themes(&all, &rules);
    let rows: Vec<Value> = all
        .iter()
        .zip(themed)
        .filter(|(c, _)| query.account.as_ref().is_none_or(|a| &c.account_id == a) && query.source.as_ref().is_none_or(|s| &c.source == s))
        .map(|(c, t)| json!({"source": c.source, "account_id": c.account_id, "person": c.person, "date": c.date, "text": c.text, "theme": t.theme, "theme_by": t.by, "sentiment": t.sentiment}))
        .collect();
    if csv {
        let columns = [
            "date",
            "source",
            "account_id",
            "person",
            "theme",
            "theme_by",
            "sentiment",
            "text",
        ];
        return csv_response(
            &columns,
            rows.iter()
                .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
                .collect(),
        );
    }
    Ok(Json(json!({"comments": rows})).into_response())
}

async fn notes(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account = id.clone();
    let notes = with_source(&state, move |source, _| Ok(sl::notes(source, &account)?)).await?;
    Ok(Json(json!({"account_id": id, "notes": notes})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
    person: Option<String>,
    author: Option<String>,
    /// `note` (the default), `call`, `meeting` or `email`.
    kind: Option<String>,
    /// When it happened (RFC 3339; default now).
    at: Option<String>,
}

/// `POST /api/v1/accounts/{id}/notes` (admin): `{"text", "person"?, "author"?, "kind"?,
/// "at"?}`: a note, or a call, meeting or email logged against the account.
async fn add_note(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let note: NoteBody = serde_json::from_slice(&body).map_err(|e| bad("body", e.to_string()))?;
    let text = note.text.trim().to_string();
    let kind = note.kind.unwrap_or_else(|| "note".into());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let at_ms = match &note.at {
        None => now_ms,
        Some(at) => chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| bad("at", format!("an RFC 3339 time: {e}")))?
            .timestamp_millis(),
    };
    sl::check_activity(&kind, &text, at_ms, now_ms).map_err(|e| ApiError::Invalid(vec![e]))?;
    if note
        .person
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > crate::limits::ID_BYTES_MAX)
        || note
            .author
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.len() > 64)
    {
        return Err(ApiError::Invalid(vec![(
            "person".into(),
            "1 to 256 bytes; author 1 to 64".into(),
        )]));
    }
    let account = id.clone();
    let author = note.author.unwrap_or_else(|| "api".into());
    let stored = with_source(&state, move |source, _| {
        Ok(source.add_note(&crate::store::NewNote {
            account: &account,
            author: &author,
            person: note.person.as_deref(),
            kind: &kind,
            text: &text,
            at_ms,
        })?)
    })
    .await?;
    match stored {
        Some(note_id) => Ok((
            StatusCode::CREATED,
            Json(json!({"id": note_id, "account_id": id})),
        )
            .into_response()),
        None => Err(ApiError::NotFound(format!("no account {id}"))),
    }
}

/// Theme reports for each of `among` (`all`, `detractors`, `red`) from one load of the
/// comments and one pass over the accounts. Health (for `red`) is assessed only when asked
/// for: the other reports need each account's ARR alone.
pub async fn theme_rows(state: &AppState, among: &[&str]) -> Result<Vec<Vec<Value>>, ApiError> {
    let as_of = today();
    // Assessing every account needs the metrics snapshot; ARR does not.
    let snapshot = if among.contains(&"red") {
        Some(cached_snapshot(state, as_of).await?)
    } else {
        None
    };
    let rules = state.listening.themes.clone();
    let among: Vec<String> = among.iter().map(|a| a.to_string()).collect();
    with_source(state, move |source, s| {
        let facts = accounts::facts(
            source,
            as_of,
            snapshot.as_deref().map_or(&[], |rows| rows.as_slice()),
            s,
        )?;
        let red: HashSet<String> = facts
            .iter()
            .filter(|f| f.health.as_ref().and_then(|h| h.tier.as_deref()) == Some("red"))
            .map(|f| f.account_id.clone())
            .collect();
        let arr: HashMap<String, f64> = facts
            .iter()
            .map(|f| (f.account_id.clone(), f.arr))
            .collect();
        let which: Vec<Among> = among
            .iter()
            .map(|a| match a.as_str() {
                "detractors" => Among::Detractors,
                "red" => Among::Accounts(&red),
                _ => Among::All,
            })
            .collect();
        Ok(sl::themes(source, &rules, as_of, &which, &arr)?)
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ThemesQuery {
    among: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/themes?among=all|detractors|red&format=json|csv`.
async fn themes(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ThemesQuery>,
) -> Result<Response, ApiError> {
    let csv = csv_wanted(query.format.as_deref())?;
    let among = query.among.unwrap_or_else(|| "all".into());
    if !["all", "detractors", "red"].contains(&among.as_str()) {
        return Err(bad(
            "among",
            format!("{among:?} is not all, detractors or red"),
        ));
    }
    let rows = theme_rows(&state, &[among.as_str()])
        .await?
        .pop()
        .unwrap_or_default();
    if csv {
        let columns = [
            "theme",
            "comments",
            "accounts",
            "arr",
            "share_churned",
            "share_retained",
            "churned_accounts_raising",
            "retained_accounts_raising",
            "sentiment",
            "keywords",
        ];
        let cells = rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|c| {
                        if *c == "keywords" {
                            r[*c]
                                .as_array()
                                .map(|k| k.iter().map(cell).collect::<Vec<_>>().join("; "))
                                .unwrap_or_default()
                        } else {
                            cell(&r[*c])
                        }
                    })
                    .collect()
            })
            .collect();
        return csv_response(&columns, cells);
    }
    Ok(
        Json(json!({"among": among, "currency": state.currency.report, "themes": rows}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
struct ReasonsQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/reports/churn_reasons?from=&to=&format=`: terms ending in [from, to)
/// (default: the last 12 months) by quarter, segment, reason and kind.
async fn churn_reasons(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ReasonsQuery>,
) -> Result<Response, ApiError> {
    let csv = csv_wanted(query.format.as_deref())?;
    let to = date_param(
        "to",
        query.to.as_deref(),
        today() + chrono::Duration::days(1),
    )?;
    let from = date_param("from", query.from.as_deref(), to - chrono::Months::new(12))?;
    if from >= to || (to - from).num_days() > super::metrics::OUTCOME_DAYS_MAX {
        return Err(bad("from", "must be before `to`, at most 20 years apart"));
    }
    let rows = with_source(&state, move |source, s| {
        Ok(sl::churn_reasons(source, from, to, s.currency)?)
    })
    .await?;
    if csv {
        let columns = [
            "quarter", "segment", "reason", "kind", "accounts", "terms", "arr_lost",
        ];
        return csv_response(
            &columns,
            rows.iter()
                .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
                .collect(),
        );
    }
    Ok(Json(json!({"from": from.to_string(), "to": to.to_string(), "currency": state.currency.report, "reasons": rows})).into_response())
}
