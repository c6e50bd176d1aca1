//! Health on the store: decided renewals as examples, versioned models, per-account health
//! (tier, score, breakdown), the daily history with tier changes, and the backtest.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::metrics::{self as sm, AccountInfo};
use super::StoreError;
use crate::config::{CurrencyConfig, HealthConfig, MetricsConfig};
use crate::health::{self, Example, SegmentModel};
use crate::metrics::activity::{day_date, day_number};
use crate::metrics::{self, Row};

/// Everything health needs from the config.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    pub metrics: &'a MetricsConfig,
    pub health: &'a HealthConfig,
    pub currency: &'a CurrencyConfig,
}

/// A stored model: the analysis of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub id: i64,
    pub created_at: String,
    /// Renewals decided before this day trained it; tiers from it apply from this day on.
    pub as_of: String,
    pub reason: String,
    /// First and last day of the renewal terms it learned from.
    pub data_from: Option<String>,
    pub data_to: Option<String>,
    pub decided_renewals: usize,
    /// Subscriptions with a decided outcome ending before `as_of` when it was trained
    /// (whole terms or not), to notice new outcomes.
    #[serde(default)]
    pub subscriptions_decided: i64,
    pub segments: BTreeMap<String, SegmentModel>,
}

/// One account's health on one day, as the daily history keeps it.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub account_id: String,
    pub engagement: Option<f64>,
    pub score: Option<f64>,
    pub band: Option<String>,
    pub tier: Option<String>,
    pub expected_rate: Option<f64>,
    pub monthly_uses: Option<f64>,
}

/// A tier different from the account's tier 7 days earlier.
#[derive(Debug, Clone)]
pub struct TierChange {
    pub account_id: String,
    pub day: i32,
    pub from_tier: String,
    pub to_tier: String,
    pub model_id: i64,
}

/// What health reads and writes beyond the metrics: feature uses over spans of days, the
/// first day of activity, the stored models and the daily history. The embedded store (a
/// `Connection`) and ClickHouse implement it; the analysis, scoring, history and backtest
/// are written once over it.
pub trait HealthSource: sm::Source {
    /// The first (local) day with activity in the rollups (`config` says what activity is).
    fn data_start(&self, config: &MetricsConfig) -> Result<Option<i32>, StoreError>;
    /// Each span's (account, first day, last day, inclusive) uses of each feature, in the
    /// order of `spans`.
    fn feature_uses(&self, spans: &[(String, i32, i32)], config: &MetricsConfig) -> Result<Vec<HashMap<String, i64>>, StoreError>;
    /// The model in force on `day` (see [`model_for`]).
    fn model_for(&self, day: Option<NaiveDate>) -> Result<Option<Model>, StoreError>;
    fn model(&self, id: i64) -> Result<Option<Model>, StoreError>;
    /// Every model as (id, body), newest first.
    fn model_bodies(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Stores a model as a new version; returns its id.
    fn store_model(&self, model: &Model) -> Result<i64, StoreError>;

    /// The last day with stored history.
    fn history_last_day(&self) -> Result<Option<i32>, StoreError>;
    /// How many accounts have history on `day`, and how many of those rows came from another
    /// model than `model_id`.
    fn history_on(&self, day: i32, model_id: i64) -> Result<(i64, i64), StoreError>;
    /// Each account's stored history row of `day`.
    fn day_history(&self, day: i32) -> Result<HashMap<String, HistoryRow>, StoreError>;
    /// (account, tier changed to) of the changes recorded on days after `after` through `through`.
    fn changes_between(&self, after: i32, through: i32) -> Result<HashSet<(String, String)>, StoreError>;
    /// Stores one day's rows, replacing what that day had, with the changes found on it.
    fn write_history(&self, day: i32, model_id: i64, rows: &[HistoryRow], changes: &[TierChange]) -> Result<(), StoreError>;
    /// One account's stored history over [from, to], oldest first.
    fn history(&self, account: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<Value>, StoreError>;
    /// Tier changes on or after `since` (optionally of one account), oldest first.
    fn tier_changes(&self, since: NaiveDate, account: Option<&str>) -> Result<Vec<Value>, StoreError>;
}

/// A stored history day as the API shows it.
pub(crate) fn history_point(day: i32, row: &HistoryRow, model_id: i64) -> Value {
    json!({"date": day_date(day).to_string(), "health_score": row.score, "health_band": row.band, "tier": row.tier,
           "expected_renewal_rate": row.expected_rate, "power_feature_monthly_uses": row.monthly_uses, "model_id": model_id,
           "engagement_score": row.engagement})
}

/// A stored tier change as the API shows it.
pub(crate) fn change_value(id: i64, change: &TierChange) -> Value {
    json!({"id": id, "account_id": change.account_id, "date": day_date(change.day).to_string(), "from": change.from_tier, "to": change.to_tier,
           "model_id": change.model_id})
}

impl HealthSource for Connection {
    fn data_start(&self, _config: &MetricsConfig) -> Result<Option<i32>, StoreError> {
        Ok(self.query_row("SELECT min(day) FROM user_days", [], |r| r.get(0))?)
    }

    fn feature_uses(&self, spans: &[(String, i32, i32)], _config: &MetricsConfig) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let mut usage = self.prepare_cached("SELECT feature, sum(uses) FROM user_day_features WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3 GROUP BY feature")?;
        spans
            .iter()
            .map(|(account, first, last)| Ok(usage.query_map(params![account, first, last], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?))
            .collect()
    }

    fn model_for(&self, day: Option<NaiveDate>) -> Result<Option<Model>, StoreError> {
        let newest = |sql: &str, arg: String| -> Result<Option<(i64, String)>, StoreError> {
            Ok(self.query_row(sql, [arg], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
        };
        let row = match day {
            Some(day) => match newest("SELECT id, body FROM health_models WHERE as_of <= ?1 ORDER BY as_of DESC, id DESC LIMIT 1", day.to_string())? {
                Some(row) => Some(row),
                None => newest("SELECT id, body FROM health_models WHERE ?1 = ?1 ORDER BY as_of ASC, id DESC LIMIT 1", String::new())?,
            },
            None => newest("SELECT id, body FROM health_models WHERE ?1 = ?1 ORDER BY id DESC LIMIT 1", String::new())?,
        };
        row.map(|(id, body)| parse_model(id, body)).transpose()
    }

    fn model(&self, id: i64) -> Result<Option<Model>, StoreError> {
        let row: Option<String> = self.query_row("SELECT body FROM health_models WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        row.map(|body| parse_model(id, body)).transpose()
    }

    fn model_bodies(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut query = self.prepare("SELECT id, body FROM health_models ORDER BY id DESC")?;
        let rows = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn store_model(&self, model: &Model) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO health_models (created_ms, as_of, reason, body) VALUES (?1, ?2, ?3, ?4)",
            params![chrono::Utc::now().timestamp_millis(), model.as_of, model.reason, model_body(model)?],
        )?;
        Ok(self.last_insert_rowid())
    }

    fn history_last_day(&self) -> Result<Option<i32>, StoreError> {
        Ok(self.query_row("SELECT max(day) FROM health_history", [], |r| r.get(0))?)
    }

    fn history_on(&self, day: i32, model_id: i64) -> Result<(i64, i64), StoreError> {
        Ok(self.query_row(
            "SELECT count(*), count(*) FILTER (WHERE model_id != ?2) FROM health_history WHERE day = ?1",
            params![day, model_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn day_history(&self, day: i32) -> Result<HashMap<String, HistoryRow>, StoreError> {
        Ok(history_where(self, "day = ?1", [day])?.into_iter().map(|(_, _, row)| (row.account_id.clone(), row)).collect())
    }

    fn changes_between(&self, after: i32, through: i32) -> Result<HashSet<(String, String)>, StoreError> {
        let mut query = self.prepare_cached("SELECT account_id, to_tier FROM tier_changes WHERE day > ?1 AND day <= ?2")?;
        let rows = query.query_map([after, through], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_history(&self, day: i32, model_id: i64, rows: &[HistoryRow], changes: &[TierChange]) -> Result<(), StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO health_history (account_id, day, score, band, tier, expected_rate, monthly_uses, model_id, engagement)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for row in rows {
            insert.execute(params![row.account_id, day, row.score, row.band, row.tier, row.expected_rate, row.monthly_uses, model_id, row.engagement])?;
        }
        drop(insert);
        let now = chrono::Utc::now().timestamp_millis();
        for change in changes {
            tx.prepare_cached("INSERT INTO tier_changes (account_id, day, from_tier, to_tier, model_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![change.account_id, change.day, change.from_tier, change.to_tier, change.model_id, now])?;
        }
        Ok(tx.commit()?)
    }

    fn history(&self, account: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<Value>, StoreError> {
        let rows = history_where(self, "account_id = ?1 AND day BETWEEN ?2 AND ?3", params![account, day_number(from), day_number(to)])?;
        Ok(rows.iter().map(|(day, model_id, row)| history_point(*day, row, *model_id)).collect())
    }

    fn tier_changes(&self, since: NaiveDate, account: Option<&str>) -> Result<Vec<Value>, StoreError> {
        let mut query = self.prepare(
            "SELECT id, account_id, day, from_tier, to_tier, model_id FROM tier_changes
             WHERE day >= ?1 AND (?2 IS NULL OR account_id = ?2) ORDER BY day, id",
        )?;
        let rows = query.query_map(params![day_number(since), account], |r| {
            let change = TierChange { account_id: r.get(1)?, day: r.get(2)?, from_tier: r.get(3)?, to_tier: r.get(4)?, model_id: r.get(5)? };
            Ok(change_value(r.get(0)?, &change))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The stored history rows meeting `condition`, oldest first, as (day, model id, row).
fn history_where(conn: &Connection, condition: &str, params: impl rusqlite::Params) -> Result<Vec<(i32, i64, HistoryRow)>, StoreError> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT account_id, day, score, band, tier, expected_rate, monthly_uses, model_id, engagement FROM health_history WHERE {condition} ORDER BY day"
    ))?;
    let rows = query.query_map(params, |r| {
        let row = HistoryRow {
            account_id: r.get(0)?,
            score: r.get(2)?,
            band: r.get(3)?,
            tier: r.get(4)?,
            expected_rate: r.get(5)?,
            monthly_uses: r.get(6)?,
            engagement: r.get(8)?,
        };
        Ok((r.get(1)?, r.get(7)?, row))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn model_body(model: &Model) -> Result<String, StoreError> {
    serde_json::to_string(model).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Every renewal decided before `as_of` whose whole term lies inside the data, with the
/// account's monthly use of each feature in the term (`subscriptions`: those of `infos`).
pub fn examples(
    source: &dyn HealthSource,
    as_of: i32,
    infos: &[AccountInfo],
    subscriptions: &HashMap<String, Vec<metrics::Subscription>>,
    settings: Settings,
) -> Result<(Vec<Example>, Option<(i32, i32)>), StoreError> {
    let Some(start) = source.data_start(settings.metrics)? else { return Ok((Vec::new(), None)) };
    let mut terms = Vec::new();
    for info in infos {
        let mut decided: Vec<&metrics::Subscription> = subscriptions
            .get(&info.account_id)
            .into_iter()
            .flatten()
            .filter(|s| matches!(s.outcome.as_deref(), Some("renewed" | "churned")) && s.end.is_some())
            .collect();
        decided.sort_by_key(|s| s.start);
        for sub in decided {
            let (first, last) = (sub.start, sub.end.expect("invariant: decided terms have an end"));
            if first < start || last >= as_of || last < first {
                continue;
            }
            terms.push((info, sub, first, last));
        }
    }
    let spans: Vec<(String, i32, i32)> = terms.iter().map(|(info, _, first, last)| (info.account_id.clone(), *first, *last)).collect();
    let uses = source.feature_uses(&spans, settings.metrics)?;
    let mut out = Vec::new();
    let mut span: Option<(i32, i32)> = None;
    for ((info, sub, first, last), uses) in terms.into_iter().zip(uses) {
        let days = f64::from(last - first + 1);
        let monthly: HashMap<String, f64> = uses.into_iter().map(|(f, uses)| (f, uses as f64 * 30.0 / days)).collect();
        span = Some(span.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
        let renewed = sub.outcome.as_deref() == Some("renewed");
        out.push(Example { account_id: info.account_id.clone(), segment: info.segment.clone(), arr: sub.arr, renewed, monthly });
    }
    Ok((out, span))
}

/// Subscriptions with a decided outcome that ended before `day` (whole terms or not).
fn decided_before(subscriptions: &HashMap<String, Vec<metrics::Subscription>>, day: NaiveDate) -> i64 {
    let day = day_number(day);
    subscriptions.values().flatten().filter(|s| matches!(s.outcome.as_deref(), Some("renewed" | "churned")) && s.end.is_some_and(|end| end < day)).count() as i64
}

/// Builds a model from the renewals decided before `as_of` (not stored).
pub fn analyse(source: &dyn HealthSource, as_of: NaiveDate, reason: &str, settings: Settings) -> Result<Model, StoreError> {
    let infos = source.accounts()?;
    let subscriptions = source.subscriptions(&infos, settings.currency)?;
    let (examples, span) = examples(source, day_number(as_of), &infos, &subscriptions, settings)?;
    let subscriptions_decided = decided_before(&subscriptions, as_of);
    let mut segments: Vec<String> = infos.iter().map(|i| i.segment.clone()).collect();
    segments.sort();
    segments.dedup();
    Ok(Model {
        id: 0,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        as_of: as_of.to_string(),
        reason: reason.to_string(),
        data_from: span.map(|s| day_date(s.0).to_string()),
        data_to: span.map(|s| day_date(s.1).to_string()),
        decided_renewals: examples.len(),
        subscriptions_decided,
        segments: health::build_models(&examples, &segments, settings.health),
    })
}

/// Runs the analysis and stores it as a new model version.
pub fn recalibrate(source: &dyn HealthSource, as_of: NaiveDate, reason: &str, settings: Settings) -> Result<Model, StoreError> {
    let mut model = analyse(source, as_of, reason, settings)?;
    model.id = source.store_model(&model)?;
    Ok(model)
}

pub(crate) fn parse_model(id: i64, body: String) -> Result<Model, StoreError> {
    let mut model: Model = serde_json::from_str(&body).map_err(|e| StoreError::Invalid(format!("health model {id}: {e}")))?;
    model.id = id;
    Ok(model)
}

/// The model in force on `day`: the newest trained as of that day or before; for days
/// before the first model, the newest of the earliest `as_of` (history computed on a first
/// start uses the model trained that day). `None` when there is no model at all.
pub fn model_for(source: &dyn HealthSource, day: Option<NaiveDate>) -> Result<Option<Model>, StoreError> {
    source.model_for(day)
}

pub fn model(source: &dyn HealthSource, id: i64) -> Result<Option<Model>, StoreError> {
    source.model(id)
}

/// Every model, newest first, without its indicator lists.
pub fn models(source: &dyn HealthSource) -> Result<Vec<Value>, StoreError> {
    source
        .model_bodies()?
        .into_iter()
        .map(|(id, body)| {
            let model = parse_model(id, body)?;
            let segments: Map<String, Value> = model
                .segments
                .iter()
                .map(|(name, s)| (name.clone(), json!({"power_feature": s.power_feature, "fallback": s.fallback, "cut_points": s.cut_points})))
                .collect();
            Ok(json!({"id": model.id, "created_at": model.created_at, "as_of": model.as_of, "reason": model.reason,
                      "data_from": model.data_from, "data_to": model.data_to, "decided_renewals": model.decided_renewals, "segments": segments}))
        })
        .collect()
}

/// Adds health to one account's metrics row: power feature use, tier, expected renewal
/// rate, score, band, breakdown and the model that gave them.
pub fn assess(source: &dyn HealthSource, row: &Row, model: &Model, as_of: i32, settings: Settings) -> Result<Map<String, Value>, StoreError> {
    Ok(assess_all(source, std::slice::from_ref(row), model, as_of, settings)?.pop().expect("invariant: one row in, one out"))
}

/// [`assess`] for many rows, reading what they need in one go. The power feature's monthly
/// uses are its uses in the last `usage_days` days (or since the account's first
/// subscription started, if shorter) x 30 / days.
pub fn assess_all(source: &dyn HealthSource, rows: &[Row], model: &Model, as_of: i32, settings: Settings) -> Result<Vec<Map<String, Value>>, StoreError> {
    Ok(assess_days(source, &[(rows, model, as_of)], settings)?.pop().expect("invariant: one day in, one out"))
}

/// [`assess_all`] for several days (rows, model in force, day) at once: the subscriptions
/// and the feature uses are read once for all of them.
pub fn assess_days(source: &dyn HealthSource, days: &[(&[Row], &Model, i32)], settings: Settings) -> Result<Vec<Vec<Map<String, Value>>>, StoreError> {
    let has_power = |row: &Row, model: &Model| segment_model(model, row).is_some_and(|m| m.power_feature.is_some());
    let wanted: HashSet<&str> = days
        .iter()
        .flat_map(|(rows, model, _)| rows.iter().filter(|r| has_power(r, model)).map(|r| r["account_id"].as_str().unwrap_or_default()))
        .collect();
    let mut since: HashMap<String, i32> = HashMap::new();
    if !wanted.is_empty() {
        let infos: Vec<AccountInfo> = source.accounts()?.into_iter().filter(|i| wanted.contains(i.account_id.as_str())).collect();
        for (account, subscriptions) in source.subscriptions(&infos, settings.currency)? {
            if let Some(first) = subscriptions.iter().map(|s| s.start).min() {
                since.insert(account, first);
            }
        }
    }
    let usage_days = settings.health.usage_days as i32;
    let first_of = |account: &str, as_of: i32| since.get(account).map_or(as_of - usage_days + 1, |&since| (as_of - usage_days + 1).max(since));
    let spans: Vec<(String, i32, i32)> = days
        .iter()
        .flat_map(|(rows, model, as_of)| {
            rows.iter().filter(|r| has_power(r, model)).map(|r| {
                let account = r["account_id"].as_str().unwrap_or_default();
                (account.to_string(), first_of(account, *as_of), *as_of)
            })
        })
        .collect();
    let mut uses: HashMap<(String, i32), HashMap<String, i64>> = spans.iter().map(|s| (s.0.clone(), s.2)).zip(source.feature_uses(&spans, settings.metrics)?).collect();
    Ok(days.iter().map(|(rows, model, as_of)| assess_rows(rows, model, *as_of, &mut uses, &first_of, settings)).collect())
}

/// The model of a row's segment, else the all-accounts one.
fn segment_model<'m>(model: &'m Model, row: &Row) -> Option<&'m SegmentModel> {
    let segment = row["segment"].as_str().unwrap_or_default();
    model.segments.get(segment).or_else(|| model.segments.get("all"))
}

/// One day's assessment, with the power feature uses of each (account, day) read before.
fn assess_rows(
    rows: &[Row],
    model: &Model,
    as_of: i32,
    uses: &mut HashMap<(String, i32), HashMap<String, i64>>,
    first_of: &dyn Fn(&str, i32) -> i32,
    settings: Settings,
) -> Vec<Map<String, Value>> {
    let power_of = |row: &Row| segment_model(model, row).and_then(|m| m.power_feature.as_ref().map(|p| (m, p)));
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let account = row["account_id"].as_str().unwrap_or_default();
        let segment = row["segment"].as_str().unwrap_or_default();
        let mut health = Map::new();
        health.insert("account_id".into(), account.into());
        health.insert("segment".into(), segment.into());
        health.insert("model_id".into(), model.id.into());
        let (tier, rate, monthly, power) = match power_of(row) {
            Some((m, power)) => {
                let days = (as_of - first_of(account, as_of) + 1).max(1);
                let count = uses.get_mut(&(account.to_string(), as_of)).and_then(|u| u.remove(power.as_str())).unwrap_or(0);
                let monthly = count as f64 * 30.0 / f64::from(days);
                let (tier, rate) = health::tier_of(m, monthly);
                (Some(tier), rate, Some(monthly), Some(power.clone()))
            }
            None => (None, None, None, None),
        };
        health.insert("engagement_score".into(), row.get("engagement_score").cloned().unwrap_or(Value::Null));
        health.insert("model_fallback".into(), segment_model(model, row).map(|m| m.fallback).into());
        health.insert("power_feature".into(), power.into());
        health.insert("power_feature_monthly_uses".into(), monthly.into());
        health.insert("tier".into(), tier.clone().into());
        health.insert("expected_renewal_rate".into(), rate.into());
        let mut measures = row.clone();
        measures.insert("tier".into(), tier.into());
        measures.insert("expected_renewal_rate".into(), rate.into());
        let (score, band, components) = health::score(&measures, settings.health);
        health.insert("health_score".into(), score.into());
        health.insert("health_band".into(), band.into());
        health.insert("components".into(), serde_json::to_value(components).unwrap_or_default());
        out.push(health);
    }
    out
}

/// Every account's health at `as_of` under the model in force that day.
pub fn snapshot(source: &dyn HealthSource, as_of: NaiveDate, settings: Settings) -> Result<Option<(Model, Vec<Map<String, Value>>)>, StoreError> {
    let Some(model) = source.model_for(Some(as_of))? else { return Ok(None) };
    let rows = source.snapshot(as_of, settings.metrics, settings.currency)?;
    let assessed = assess_all(source, &rows, &model, day_number(as_of), settings)?;
    Ok(Some((model, assessed)))
}

/// Computes and stores the daily history of the last `history_days` days through
/// `through` (only the days that need it), and the tier changes: a tier different from the
/// account's tier 7 days earlier, recorded once per change. Returns the days written.
pub fn update_history(source: &dyn HealthSource, through: NaiveDate, settings: Settings, progress: &mut dyn FnMut(usize, usize)) -> Result<usize, StoreError> {
    let end = day_number(through);
    let first = end - settings.health.history_days as i32 + 1;
    // A day is (re)computed when it has no rows, when its rows came from another model
    // than the one now in force that day (a first real model replacing an empty one), or
    // when it is the last stored day (it may have been written before the day was over).
    let last = source.history_last_day()?;
    // (day, the model in force that day).
    let mut todo: Vec<(i32, Model)> = Vec::new();
    for day in first..=end {
        let Some(model) = source.model_for(Some(day_date(day)))? else { return Ok(0) };
        let (rows, other) = source.history_on(day, model.id)?;
        if rows == 0 || other > 0 || Some(day) >= last {
            todo.push((day, model));
        }
    }
    let total = todo.len();
    let mut written = 0;
    // Days in runs: one load of the metrics and one read of the feature uses per run.
    for run in todo.chunks(source.days_per_load().max(1)) {
        let dates: Vec<NaiveDate> = run.iter().map(|(day, _)| day_date(*day)).collect();
        let snapshots = source.snapshots(&dates, settings.metrics, settings.currency)?;
        let days: Vec<(&[Row], &Model, i32)> = snapshots.iter().zip(run).map(|(rows, (day, model))| (rows.as_slice(), model, *day)).collect();
        let assessed_days = assess_days(source, &days, settings)?;
        for ((day, model), assessed) in run.iter().zip(assessed_days) {
            write_history_day(source, *day, model, &assessed)?;
            written += 1;
            progress(written, total);
        }
    }
    Ok(total)
}

/// Stores one day's assessed health with the tier changes against a week before.
fn write_history_day(source: &dyn HealthSource, day: i32, model: &Model, assessed: &[Map<String, Value>]) -> Result<(), StoreError> {
    let before = source.day_history(day - 7)?;
    let recorded = source.changes_between(day - 7, day)?;
    let mut rows = Vec::with_capacity(assessed.len());
    let mut changes = Vec::new();
    for health in assessed {
        let row = HistoryRow {
            account_id: health["account_id"].as_str().unwrap_or_default().to_string(),
            engagement: health["engagement_score"].as_f64(),
            score: health["health_score"].as_f64(),
            band: health["health_band"].as_str().map(str::to_string),
            tier: health["tier"].as_str().map(str::to_string),
            expected_rate: health["expected_renewal_rate"].as_f64(),
            monthly_uses: health["power_feature_monthly_uses"].as_f64(),
        };
        if let (Some(Some(from)), Some(to)) = (before.get(&row.account_id).map(|b| &b.tier), &row.tier) {
            if from != to && !recorded.contains(&(row.account_id.clone(), to.clone())) {
                changes.push(TierChange { account_id: row.account_id.clone(), day, from_tier: from.clone(), to_tier: to.clone(), model_id: model.id });
            }
        }
        rows.push(row);
    }
    source.write_history(day, model.id, &rows, &changes)?;
    Ok(())
}

/// Backtest: a model trained on renewals decided before `as_of`, every account scored with
/// data before `as_of` only (metrics as of the day before), against the renewals decided
/// in the `horizon_days` from `as_of`. Per segment and overall: ROC AUC of the health
/// score, of the tier, of the expected renewal rate and, as a baseline, of logins per user
/// and week; a calibration table per tier with lift.
pub fn backtest(source: &dyn HealthSource, as_of: NaiveDate, horizon_days: i64, settings: Settings) -> Result<Value, StoreError> {
    let mut model = analyse(source, as_of, "backtest", settings)?;
    model.id = 0;
    let scored_at = as_of - chrono::Duration::days(1);
    let rows = source.snapshot(scored_at, settings.metrics, settings.currency)?;
    let day = day_number(scored_at);
    let healths = assess_all(source, &rows, &model, day, settings)?;
    let assessed: HashMap<String, (Map<String, Value>, Row)> =
        healths.into_iter().zip(&rows).map(|(health, row)| (row["account_id"].as_str().unwrap_or_default().to_string(), (health, row.clone()))).collect();
    let (from, to) = (day_number(as_of), day_number(as_of + chrono::Duration::days(horizon_days)));
    let infos = source.accounts()?;
    let mut decided: Vec<(String, bool)> = Vec::new();
    let mut subscriptions = source.subscriptions(&infos, settings.currency)?;
    for info in &infos {
        for sub in subscriptions.remove(&info.account_id).unwrap_or_default() {
            if matches!(sub.outcome.as_deref(), Some("renewed" | "churned")) && sub.end.is_some_and(|end| end >= from && end < to) {
                decided.push((info.account_id.clone(), sub.outcome.as_deref() == Some("renewed")));
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<(&Map<String, Value>, &Row, bool)>> = BTreeMap::new();
    for (account, renewed) in &decided {
        if let Some((health, row)) = assessed.get(account) {
            let segment = health["segment"].as_str().unwrap_or_default().to_string();
            groups.entry(segment).or_default().push((health, row, *renewed));
            groups.entry("all".into()).or_default().push((health, row, *renewed));
        }
    }
    let segments: Vec<Value> = groups
        .into_iter()
        .map(|(segment, items)| {
            let auc_of = |f: &dyn Fn(&Map<String, Value>, &Row) -> Option<f64>| {
                let points: Vec<(f64, bool, f64)> = items.iter().map(|(h, r, renewed)| (f(h, r).unwrap_or(0.0), *renewed, 1.0)).collect();
                health::auc(&points)
            };
            let tier_index = |h: &Map<String, Value>| h["tier"].as_str().and_then(|t| health::TIERS.iter().position(|x| *x == t)).map(|i| i as f64);
            let renewed = items.iter().filter(|i| i.2).count();
            let overall = renewed as f64 / items.len() as f64;
            let calibration: Vec<Value> = health::TIERS
                .iter()
                .map(|tier| {
                    let inside: Vec<&(&Map<String, Value>, &Row, bool)> = items.iter().filter(|(h, _, _)| h["tier"] == *tier).collect();
                    let n = inside.len();
                    let observed = (n > 0).then(|| inside.iter().filter(|i| i.2).count() as f64 / n as f64);
                    let predicted = (n > 0).then(|| inside.iter().filter_map(|i| i.0["expected_renewal_rate"].as_f64()).sum::<f64>() / n as f64);
                    json!({"tier": tier, "decided": n, "predicted_renewal_rate": predicted, "observed_renewal_rate": observed,
                           "lift": observed.map(|o| if overall > 0.0 { o / overall } else { 0.0 })})
                })
                .collect();
            json!({
                "segment": segment,
                "decided": items.len(),
                "renewed": renewed,
                "churned": items.len() - renewed,
                "auc_health_score": auc_of(&|h, _| h["health_score"].as_f64()),
                "auc_tier": auc_of(&|h, _| tier_index(h)),
                "auc_expected_renewal_rate": auc_of(&|h, _| h["expected_renewal_rate"].as_f64()),
                "auc_logins_per_user_week": auc_of(&|_, r| r["logins_per_user_week"].as_f64()),
                "calibration": calibration,
            })
        })
        .collect();
    let powers: Map<String, Value> = model.segments.iter().map(|(s, m)| (s.clone(), json!(m.power_feature))).collect();
    Ok(json!({
        "as_of": as_of.to_string(),
        "scored_with_data_through": scored_at.to_string(),
        "horizon_days": horizon_days,
        "model": {"decided_renewals": model.decided_renewals, "data_from": model.data_from, "data_to": model.data_to, "power_features": powers},
        "segments": segments,
    }))
}

/// The indicators of a model as rows (`segment`, `feature`, `rank`, `auc`, ...), optionally
/// of one segment. Fallback segments are listed under their own name with the pooled ranking.
pub fn indicator_rows(model: &Model, segment: Option<&str>) -> Vec<Value> {
    model
        .segments
        .iter()
        .filter(|(name, _)| segment.is_none_or(|s| s == name.as_str()))
        .flat_map(|(name, m)| {
            m.indicators.iter().map(move |i| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["segment"] = json!(name);
                v["model_fallback"] = json!(m.fallback);
                v
            })
        })
        .collect()
}

/// Starts the background health thread of the embedded store: it waits for the rollups to
/// catch up, recalibrates when there is no model or the newest is older than
/// `recalibrate_every_days`, and brings the daily history up to today; then again every
/// `PERIOD`.
pub fn spawn(store: &super::Store, metrics: MetricsConfig, health: HealthConfig, currency: CurrencyConfig) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let conn = store.connect()?;
    let mut state = PassState::default();
    spawn_passes(metrics, health, currency, move |settings| {
        if !super::rollup::settled(&conn)? {
            return Ok(false);
        }
        run_once(&conn, settings, &mut state)
    })
}

/// The same thread on a node on ClickHouse (its rollups are ClickHouse's own views: nothing
/// to wait for), running its queries on `runtime`.
pub fn spawn_on_clickhouse(
    clickhouse: super::clickhouse::ClickHouse,
    runtime: tokio::runtime::Handle,
    metrics: MetricsConfig,
    health: HealthConfig,
    currency: CurrencyConfig,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let mut state = PassState::default();
    spawn_passes(metrics, health, currency, move |settings| {
        let _entered = runtime.enter();
        run_once(&clickhouse, settings, &mut state)
    })
}

/// Runs `pass` every `PERIOD` (every 2 s while it answers `false`: not ready).
fn spawn_passes(
    metrics: MetricsConfig,
    health: HealthConfig,
    currency: CurrencyConfig,
    mut pass: impl FnMut(Settings) -> Result<bool, StoreError> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || loop {
            let settings = Settings { metrics: &metrics, health: &health, currency: &currency };
            let wait = match pass(settings) {
                Ok(true) => PERIOD,
                Ok(false) => std::time::Duration::from_secs(2),
                Err(error) => {
                    tracing::error!(%error, "health update failed; retrying in 60 s");
                    std::time::Duration::from_secs(60)
                }
            };
            std::thread::sleep(wait);
        })
        .map_err(|e| StoreError::Thread(e.to_string()))
}

/// The reason given to a model trained because the one in force learned from nothing.
const FIRST_DATA: &str = "first outcomes with data";
/// How often an empty model is tried again while it stays empty.
const EMPTY_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the health thread remembers between passes.
#[derive(Default)]
struct PassState {
    /// When a model that learned from nothing was last tried again (and stayed empty).
    empty_tried: Option<std::time::Instant>,
}

/// One pass of the health thread; not ready (false) while a bulk load runs, whose half
/// loaded renewals would make a model of nothing.
fn run_once(source: &dyn HealthSource, settings: Settings, state: &mut PassState) -> Result<bool, StoreError> {
    if super::actions::paused() {
        return Ok(false);
    }
    let today = chrono::Utc::now().date_naive();
    let newest = model_for(source, None)?;
    // Due: no model yet, the newest is older than the schedule, or renewals decided since
    // it have grown by a fifth (an import of history, the first data after an empty start).
    let decided_now = decided_before(&source.subscriptions(&source.accounts()?, settings.currency)?, today);
    // A model that learned from no renewal (records imported before any event arrived) is
    // tried again at most once an hour while there are outcomes, and replaced only by one
    // that learned from some: the events of a backfill make its tiers.
    let stale_empty = |m: &Model| {
        let tried = state.empty_tried.is_some_and(|at| at.elapsed() < EMPTY_RETRY);
        m.decided_renewals == 0 && decided_now > 0 && !tried
    };
    let due = match &newest {
        None => Some("first model"),
        Some(m) if decided_now as f64 > m.subscriptions_decided as f64 * 1.2 + 10.0 => Some("new outcomes"),
        Some(m) if stale_empty(m) => Some(FIRST_DATA),
        Some(m) => m.as_of.parse::<NaiveDate>().ok().filter(|d| (today - *d).num_days() < i64::from(settings.health.recalibrate_every_days)).map_or(Some("schedule"), |_| None),
    };
    if let Some(reason) = due {
        let mut model = analyse(source, today, reason, settings)?;
        if reason == FIRST_DATA && model.decided_renewals == 0 {
            // Still nothing to learn from: the model in force stays.
            state.empty_tried = Some(std::time::Instant::now());
        } else {
            model.id = source.store_model(&model)?;
            tracing::info!(model = model.id, decided = model.decided_renewals, reason, "health model recalibrated");
        }
    }
    let started = std::time::Instant::now();
    let days = update_history(source, today, settings, &mut |_, _| {})?;
    if days > 1 {
        tracing::info!(days, seconds = started.elapsed().as_secs_f64(), "health history updated");
    }
    if due.is_some() || days > 1 {
        // Tiers moved: rules on tiers may fire now rather than at their next schedule.
        super::actions::poke();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CurrencyConfig, HealthConfig};
    use crate::store::records::RecordStore;
    use rusqlite::params;

    fn import(conn: &mut Connection, kind: &str, object: Value) {
        let kind = crate::records::kind(kind).unwrap();
        let record = crate::records::from_json(kind, object.as_object().unwrap()).unwrap();
        let mut target = conn.import_target(kind).unwrap();
        target.upsert(kind, &record).unwrap();
        target.commit().unwrap();
    }

    fn models(conn: &Connection) -> Vec<(i64, String, usize)> {
        let mut all: Vec<(i64, String, usize)> = conn.model_bodies().unwrap().into_iter().map(|(id, body)| parse_model(id, body).unwrap()).map(|m| (m.id, m.reason, m.decided_renewals)).collect();
        all.sort();
        all
    }

    #[test]
    fn a_model_that_learned_from_nothing_is_replaced_once_events_make_its_renewals_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        let (metrics, health, currency) = (MetricsConfig::default(), HealthConfig::default(), CurrencyConfig::default());
        let settings = Settings { metrics: &metrics, health: &health, currency: &currency };
        let today = chrono::Utc::now().date_naive();
        let date = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
        // Records first, as an install that imports its contracts before any event arrives.
        import(&mut conn, "accounts", json!({"account_id": "a1"}));
        import(&mut conn, "subscriptions", json!({"subscription_id": "s1", "account_id": "a1", "arr": 1000, "currency": "USD", "seats": 5,
                                                  "start_date": date(-120), "end_date": date(-61), "outcome": "renewed"}));
        let mut state = PassState::default();
        run_once(&conn, settings, &mut state).unwrap();
        assert_eq!(models(&conn), vec![(1, "first model".to_string(), 0)]);
        // Tried again at once: still nothing to learn from, so nothing stored; then not
        // again within the hour.
        run_once(&conn, settings, &mut state).unwrap();
        assert!(state.empty_tried.is_some());
        run_once(&conn, settings, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 1);

        // The backfill arrives: a member of a1 active before and during the renewed term.
        let ms = |offset: i64| (today + chrono::Duration::days(offset)).and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp_millis();
        for (id, kind, offset) in [(1_i64, "group", -130), (2, "track", -125), (3, "track", -100)] {
            conn.execute(
                "INSERT INTO events (id, received_ms, source, message_id, type, user_id, group_id, event, timestamp_ms, raw)
                 VALUES (?1, ?2, 'test', ?1, ?3, 'u1', CASE WHEN ?3 = 'group' THEN 'a1' END, CASE WHEN ?3 = 'track' THEN 'Report Created' END, ?2, '{}')",
                params![id, ms(offset), kind],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES ('u1', NULL, 'a1', ?1, 1)", [ms(-130)]).unwrap();
        crate::store::rollup::catch_up(&mut conn, &mut crate::store::rollup::Rollup::new(&metrics), &mut |_, _| {}).unwrap();
        run_once(&conn, settings, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 1, "tried within the hour: not again");
        state.empty_tried = state.empty_tried.map(|at| at - EMPTY_RETRY);
        run_once(&conn, settings, &mut state).unwrap();
        assert_eq!(models(&conn), vec![(1, "first model".to_string(), 0), (2, FIRST_DATA.to_string(), 1)]);
        // A model that learned something is not retried.
        run_once(&conn, settings, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 2);
    }
}
