//! The health API: indicators, models, recalibration, per-account health with its
//! breakdown and history, tier changes, and the backtest.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, ApiPath as Path, ApiQuery as Query, Caller};
use super::metrics::{bad, date_param, today, with_source};
use super::AppState;
use crate::health::backtest;
use crate::health::history;
use crate::store::Role;

/// Longest backtest horizon and history range per request.
pub const HORIZON_DAYS_MAX: i64 = 3 * 366;
pub const HISTORY_DAYS_MAX: i64 = 3 * 366;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/indicators", get(indicators))
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/{id}", get(model))
        .route("/api/v1/recalibrate", post(recalibrate))
        .route("/api/v1/health", get(all_health))
        .route("/api/v1/accounts/{id}/health", get(account_health))
        .route("/api/v1/accounts/{id}/health/history", get(history))
        .route("/api/v1/tier_changes", get(tier_changes))
        .route("/api/v1/backtest", get(backtest))
}

fn no_model() -> ApiError {
    ApiError::NotFound("no health model yet: the server builds the first once the rollups are up to date, or POST /api/v1/recalibrate".into())
}

#[derive(Debug, Deserialize)]
struct IndicatorsQuery {
    segment: Option<String>,
    as_of: Option<String>,
}

/// `GET /api/v1/indicators?segment=&as_of=`: the feature ranking per segment; with `as_of`
/// a fresh analysis of the renewals decided before that day, else the newest model.
async fn indicators(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<IndicatorsQuery>,
) -> Result<Json<Value>, ApiError> {
    let as_of = query
        .as_of
        .as_deref()
        .map(|t| date_param("as_of", Some(t), today()))
        .transpose()?;
    let segment = query.segment.clone();
    let model = with_source(&state, move |source, settings| {
        Ok(match as_of {
            Some(day) => Some(history::analyse(source, day, "indicators", settings)?),
            None => history::model_for(source, None)?,
        })
    })
    .await?
    .ok_or_else(no_model)?;
    if let Some(s) = &segment {
        if !model.segments.contains_key(s) {
            return Err(ApiError::NotFound(format!(
                "no segment {s:?}; segments: {}",
                model
                    .segments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let notes: serde_json::Map<String, Value> = model
        .segments
        .iter()
        .map(|(s, m)| (s.clone(), json!(m.note)))
        .collect();
    Ok(Json(
        json!({"model_id": model.id, "as_of": model.as_of, "notes": notes, "indicators": history::indicator_rows(&model, segment.as_deref())}),
    ))
}

async fn models(_caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let models = with_source(&state, |source, _| Ok(history::models(source)?)).await?;
    Ok(Json(json!({"models": models})))
}

async fn model(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let model = with_source(&state, move |source, _| Ok(history::model(source, id)?)).await?;
    let model = model.ok_or_else(|| ApiError::NotFound(format!("no model {id}")))?;
    Ok(Json(
        serde_json::to_value(model).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// `POST /api/v1/recalibrate` (admin): runs the analysis now and stores a new model.
async fn recalibrate(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let model = with_source(&state, |source, settings| {
        Ok(history::recalibrate(
            source,
            today(),
            "manual",
            false,
            settings,
        )?)
    })
    .await?;
    Ok(Json(
        json!({"model_id": model.id, "as_of": model.as_of, "decided_renewals": model.decided_renewals, "status": model.status, "gate": model.gate}),
    ))
}

#[derive(Debug, Deserialize)]
struct AsOf {
    as_of: Option<String>,
}

/// `GET /api/v1/health?as_of=`: every account's tier, score and breakdown.
async fn all_health(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param("as_of", query.as_of.as_deref(), today())?;
    let (model, rows) = with_source(&state, move |source, settings| {
        Ok(history::snapshot(source, as_of, settings)?)
    })
    .await?
    .ok_or_else(no_model)?;
    Ok(Json(
        json!({"as_of": as_of.to_string(), "model_id": model.id, "accounts": rows}),
    ))
}

/// `GET /api/v1/accounts/{id}/health?as_of=`: tier, expected renewal rate, score, colour,
/// the component breakdown and the model that gave them.
async fn account_health(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param("as_of", query.as_of.as_deref(), today())?;
    let peers = super::metrics::cached_snapshot(&state, as_of).await?;
    let account = id.clone();
    let result = with_source(&state, move |source, settings| {
        let Some(model) = history::model_for(source, Some(as_of))? else { return Ok(Err(no_model())) };
        let Some(row) = crate::metrics::read::account(source, &account, as_of, false, &peers, settings.metrics, settings.currency)? else {
            return Ok(Err(ApiError::NotFound(format!("no account {account}"))));
        };
        let health = history::assess_held(source, &row, &model, crate::metrics::activity::day_number(as_of), settings)?;
        let summary = json!({"id": model.id, "as_of": model.as_of, "created_at": model.created_at, "reason": model.reason, "status": model.status});
        Ok(Ok((health, summary)))
    })
    .await??;
    Ok(Json(
        json!({"as_of": as_of.to_string(), "health": result.0, "model": result.1}),
    ))
}

#[derive(Debug, Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/accounts/{id}/health/history?from=&to=`: stored daily score and tier.
async fn history(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let to = date_param("to", query.to.as_deref(), today())?;
    let from = date_param(
        "from",
        query.from.as_deref(),
        to - chrono::Duration::days(89),
    )?;
    if from > to || (to - from).num_days() >= HISTORY_DAYS_MAX {
        return Err(bad(
            "from",
            format!("must be on or before `to`, at most {HISTORY_DAYS_MAX} days"),
        ));
    }
    let account = id.clone();
    let points = with_source(&state, move |source, _| {
        Ok(source.history(&account, from, to)?)
    })
    .await?;
    Ok(Json(json!({"account_id": id, "points": points})))
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    account: Option<String>,
}

/// `GET /api/v1/tier_changes?since=&account=`: `tier_changed` events (default: last 30 days).
async fn tier_changes(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = date_param(
        "since",
        query.since.as_deref(),
        today() - chrono::Duration::days(30),
    )?;
    let account = query.account.clone();
    let changes = with_source(&state, move |source, _| {
        Ok(source.tier_changes(since, account.as_deref())?)
    })
    .await?;
    Ok(Json(
        json!({"since": since.to_string(), "tier_changes": changes}),
    ))
}

#[derive(Debug, Deserialize)]
struct BacktestQuery {
    as_of: Option<String>,
    horizon_days: Option<i64>,
}

/// `GET /api/v1/backtest?as_of=&horizon_days=`: see `health::backtest::backtest`.
async fn backtest(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<BacktestQuery>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param(
        "as_of",
        query.as_of.as_deref(),
        today() - chrono::Duration::days(180),
    )?;
    let horizon = query.horizon_days.unwrap_or(180);
    if !(1..=HORIZON_DAYS_MAX).contains(&horizon) {
        return Err(bad(
            "horizon_days",
            format!("must be 1 to {HORIZON_DAYS_MAX}"),
        ));
    }
    let report = with_source(&state, move |source, settings| {
        Ok(backtest::backtest(source, as_of, horizon, settings)?)
    })
    .await?;
    Ok(Json(report))
}
