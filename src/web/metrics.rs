//! The metrics API: per-account metrics and time series, segment statistics, outcomes and
//! the full snapshot (the same rows as `bellwether metrics`). Every role may read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::blocking;
use super::api::{ApiError, ApiPath as Path, ApiQuery as Query, Caller};
use super::AppState;
use crate::health::model::Settings;
use crate::metrics::read as sm;
use crate::metrics::{self as m, outcomes::Interval, Row};
use crate::store::Storage;

/// Longest time series one request may ask for.
pub const TIMESERIES_DAYS_MAX: i64 = 1_000;
/// Longest outcome range.
pub const OUTCOME_DAYS_MAX: i64 = 20 * 366;
/// How long a segment snapshot serves to rank single accounts.
const SNAPSHOT_TTL: Duration = Duration::from_secs(300);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/metrics", get(all_metrics))
        .route("/api/v1/accounts/{id}/metrics", get(account_metrics))
        .route("/api/v1/accounts/{id}/timeseries", get(timeseries))
        .route("/api/v1/segments", get(segments))
        .route("/api/v1/outcomes", get(outcomes))
}

/// The last full snapshot: a single account's engagement score is ranked against it.
pub struct SnapshotCache {
    as_of: NaiveDate,
    made: Instant,
    rows: Arc<Vec<Row>>,
}

pub(super) fn bad(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::BadParameter {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A `YYYY-MM-DD` query parameter, `default` when absent.
pub(super) fn date_param(
    field: &str,
    text: Option<&str>,
    default: NaiveDate,
) -> Result<NaiveDate, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => crate::records::parse_date(text).map_err(|r| bad(field, r)),
    }
}

/// Runs `work` off the async threads with the store the metrics read (the embedded
/// store's connection, or ClickHouse) and the server's settings.
pub(super) async fn with_source<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&dyn Storage, Settings) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (metrics, health, currency) = (
        state.metrics.clone(),
        state.health.clone(),
        state.currency.clone(),
    );
    blocking(state, move |backend| {
        backend.run(|storage| {
            work(
                storage,
                Settings {
                    metrics: &metrics,
                    health: &health,
                    currency: &currency,
                },
            )
        })?
    })
    .await
}

pub(super) fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// The snapshot at `as_of`, from the cache when fresh enough.
async fn snapshot(
    state: &AppState,
    as_of: NaiveDate,
    fresh: bool,
) -> Result<Arc<Vec<Row>>, ApiError> {
    if !fresh {
        let cache = state.snapshots.lock().expect("invariant: not poisoned");
        if let Some(c) = cache
            .as_ref()
            .filter(|c| c.as_of == as_of && c.made.elapsed() < SNAPSHOT_TTL)
        {
            return Ok(c.rows.clone());
        }
    }
    let rows = Arc::new(
        with_source(state, move |source, s| {
            Ok(source.snapshot(as_of, s.metrics, s.currency)?)
        })
        .await?,
    );
    *state.snapshots.lock().expect("invariant: not poisoned") = Some(SnapshotCache {
        as_of,
        made: Instant::now(),
        rows: rows.clone(),
    });
    Ok(rows)
}

#[derive(Debug, Deserialize)]
struct AsOf {
    as_of: Option<String>,
}

/// The segment snapshot used to rank single accounts (cached up to `SNAPSHOT_TTL`).
pub async fn cached_snapshot(
    state: &AppState,
    as_of: NaiveDate,
) -> Result<Arc<Vec<Row>>, ApiError> {
    snapshot(state, as_of, false).await
}

/// `GET /api/v1/metrics?as_of=`: every account's metrics (the export's rows).
async fn all_metrics(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param("as_of", query.as_of.as_deref(), today())?;
    let rows = snapshot(&state, as_of, true).await?;
    Ok(Json(
        json!({"as_of": as_of.to_string(), "columns": &m::COLUMNS[..], "accounts": *rows}),
    ))
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    as_of: Option<String>,
    subtree: Option<bool>,
}

/// `GET /api/v1/accounts/{id}/metrics?as_of=&subtree=`: one account's metrics; with
/// `subtree=true` the account and every account below it counted as one.
async fn account_metrics(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<AccountQuery>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param("as_of", query.as_of.as_deref(), today())?;
    let subtree = query.subtree.unwrap_or(false);
    let peers = snapshot(&state, as_of, false).await?;
    let account = id.clone();
    let row = with_source(&state, move |source, s| {
        Ok(sm::account(
            source, &account, as_of, subtree, &peers, s.metrics, s.currency,
        )?)
    })
    .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no account {id}")))?;
    Ok(Json(
        json!({"as_of": as_of.to_string(), "subtree": subtree, "metrics": row}),
    ))
}

#[derive(Debug, Deserialize)]
struct SeriesQuery {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/accounts/{id}/timeseries?metric=&from=&to=`: one numeric metric per day
/// (default: the last 90 days).
async fn timeseries(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let metric = query
        .metric
        .ok_or_else(|| bad("metric", "required: one of the numeric metric names"))?;
    if !m::COLUMNS.contains(&metric.as_str()) || !m::is_numeric(&metric) {
        let names: Vec<&str> = m::COLUMNS
            .iter()
            .copied()
            .filter(|c| m::is_numeric(c))
            .collect();
        return Err(bad(
            "metric",
            format!(
                "{metric:?} is not a numeric metric; one of: {}",
                names.join(", ")
            ),
        ));
    }
    let to = date_param("to", query.to.as_deref(), today())?;
    let from = date_param(
        "from",
        query.from.as_deref(),
        to - chrono::Duration::days(89),
    )?;
    if from > to {
        return Err(bad("from", "must not be after `to`"));
    }
    if (to - from).num_days() >= TIMESERIES_DAYS_MAX {
        return Err(bad(
            "to",
            format!("at most {TIMESERIES_DAYS_MAX} days per request"),
        ));
    }
    let (account, name) = (id.clone(), metric.clone());
    let series = with_source(&state, move |source, s| {
        Ok(sm::timeseries(
            source, &account, &name, from, to, s.metrics, s.currency,
        )?)
    })
    .await?;
    let series = series.ok_or_else(|| ApiError::NotFound(format!("no account {id}")))?;
    let points: Vec<Value> = series
        .into_iter()
        .map(|(date, value)| json!({"date": date.to_string(), "value": value}))
        .collect();
    Ok(Json(
        json!({"account_id": id, "metric": metric, "points": points}),
    ))
}

#[derive(Debug, Deserialize)]
struct SegmentsQuery {
    as_of: Option<String>,
    by: Option<String>,
}

/// `GET /api/v1/segments?as_of=&by=segment|plan`: per segment (or plan) statistics.
async fn segments(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<SegmentsQuery>,
) -> Result<Json<Value>, ApiError> {
    let as_of = date_param("as_of", query.as_of.as_deref(), today())?;
    let by_plan = match query.by.as_deref() {
        None | Some("segment") => false,
        Some("plan") => true,
        Some(other) => return Err(bad("by", format!("{other:?} is not segment or plan"))),
    };
    let rows = snapshot(&state, as_of, true).await?;
    let infos = with_source(&state, |source, _| Ok(source.accounts()?)).await?;
    Ok(Json(
        json!({"as_of": as_of.to_string(), "by": if by_plan { "plan" } else { "segment" }, "groups": sm::segments(&rows, &infos, by_plan)}),
    ))
}

#[derive(Debug, Deserialize)]
struct OutcomesQuery {
    from: Option<String>,
    to: Option<String>,
    by: Option<String>,
    interval: Option<String>,
}

/// `GET /api/v1/outcomes?from=&to=&by=segment|all&interval=whole|month|quarter`: renewals,
/// expansion, contraction, churn, GRR, NRR and logo retention over [from, to)
/// (default: the last complete 12 months).
async fn outcomes(
    _caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<OutcomesQuery>,
) -> Result<Json<Value>, ApiError> {
    use chrono::Datelike;
    let this_month = today().with_day(1).expect("day 1 exists");
    let to = date_param("to", query.to.as_deref(), this_month)?;
    let from = date_param("from", query.from.as_deref(), to - chrono::Months::new(12))?;
    if from >= to {
        return Err(bad(
            "from",
            "must be before `to` (the period is [from, to))",
        ));
    }
    if (to - from).num_days() > OUTCOME_DAYS_MAX {
        return Err(bad("to", format!("at most {OUTCOME_DAYS_MAX} days")));
    }
    let by_segment = match query.by.as_deref() {
        None | Some("segment") => true,
        Some("all") => false,
        Some(other) => return Err(bad("by", format!("{other:?} is not segment or all"))),
    };
    let interval = match query.interval.as_deref() {
        None => Interval::Whole,
        Some(text) => Interval::parse(text).ok_or_else(|| {
            bad(
                "interval",
                format!("{text:?} is not whole, month or quarter"),
            )
        })?,
    };
    let rows = with_source(&state, move |source, s| {
        Ok(sm::outcomes(
            source, from, to, interval, by_segment, s.currency,
        )?)
    })
    .await?;
    Ok(Json(
        json!({"from": from.to_string(), "to": to.to_string(), "currency": state.currency.report, "periods": rows}),
    ))
}
