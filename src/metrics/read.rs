//! The metrics that need many accounts' numbers, read over the store: one account ranked in
//! its segment, time series, rows on chosen days, segment statistics and outcomes.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::activity::day_number;
use super::config::{CurrencyConfig, MetricsConfig};
use std::collections::BTreeMap;

use super::activity;
use super::{self as metrics, AccountData, Row, Subscription};
use crate::store::Activity;
use crate::store::{AccountInfo, StoreError};

/// One account's metrics at `as_of` (with `subtree`, the account and all below it counted
/// as one), its engagement score ranked against `peers` (a snapshot of the same day).
pub fn account(
    source: &(impl Activity + ?Sized),
    account_id: &str,
    as_of: NaiveDate,
    subtree: bool,
    peers: &[Row],
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Row>, StoreError> {
    let day = day_number(as_of);
    let infos = source.accounts()?;
    if !infos.iter().any(|i| i.account_id == account_id) {
        return Ok(None);
    }
    let ids = if subtree {
        crate::store::subtree(&infos, account_id)
    } else {
        vec![account_id.to_string()]
    };
    let mut merged: Option<AccountData> = None;
    for id in &ids {
        let member = infos
            .iter()
            .find(|i| &i.account_id == id)
            .expect("invariant: subtree ids are accounts");
        // The root comes first: the merged data keeps its id and segment.
        let data = source
            .load(&[member], day, day, config, currency)?
            .pop()
            .expect("one account loaded");
        match &mut merged {
            None => merged = Some(data),
            Some(m) => m.merge(data),
        }
    }
    let data = merged.expect("invariant: the subtree holds its root");
    let row = metrics::compute(&data, day, config);
    // Rank among the segment's snapshot, with this account's fresh values in place.
    let mut rows: Vec<Row> = peers
        .iter()
        .filter(|p| p.segment == row.segment && p.account_id != row.account_id)
        .cloned()
        .collect();
    rows.push(row);
    metrics::engagement_scores(&mut rows, config);
    Ok(rows.pop())
}

/// One metric of one account for every day of `from ..= to`.
pub fn timeseries(
    source: &(impl Activity + ?Sized),
    account_id: &str,
    metric: &str,
    from: NaiveDate,
    to: NaiveDate,
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Vec<(NaiveDate, Value)>>, StoreError> {
    let (first, last) = (day_number(from), day_number(to));
    let infos = source.accounts()?;
    let Some(info) = infos.iter().find(|i| i.account_id == account_id) else {
        return Ok(None);
    };
    // The engagement score ranks the account in its segment, so it needs the peers too.
    let members: Vec<&AccountInfo> = if metric == "engagement_score" {
        infos.iter().filter(|i| i.segment == info.segment).collect()
    } else {
        vec![info]
    };
    let data = source.load(&members, first, last, config, currency)?;
    let mut series = Vec::new();
    for day in first..=last {
        let value = if metric == "engagement_score" {
            let mut rows: Vec<Row> = data
                .iter()
                .map(|d| metrics::compute(d, day, config))
                .collect();
            metrics::engagement_scores(&mut rows, config);
            rows.into_iter()
                .find(|r| r.account_id == account_id)
                .and_then(|r| r.get(metric))
                .unwrap_or(Value::Null)
        } else {
            let own = data
                .iter()
                .find(|d| d.account_id == account_id)
                .expect("invariant: loaded");
            metrics::compute(own, day, config)
                .get(metric)
                .unwrap_or(Value::Null)
        };
        series.push((activity::day_date(day), value));
    }
    Ok(Some(series))
}

/// One account's metrics row on each of `days` (ascending), from one load. The engagement
/// score, which needs the segment, is left as computed alone.
pub fn rows_on(
    source: &(impl Activity + ?Sized),
    account_id: &str,
    days: &[NaiveDate],
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Vec<Row>>, StoreError> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(Some(Vec::new()));
    };
    let infos = source.accounts()?;
    let Some(info) = infos.iter().find(|i| i.account_id == account_id) else {
        return Ok(None);
    };
    let data = source
        .load(
            &[info],
            day_number(*first),
            day_number(*last),
            config,
            currency,
        )?
        .pop()
        .expect("one account loaded");
    Ok(Some(
        days.iter()
            .map(|d| metrics::compute(&data, day_number(*d), config))
            .collect(),
    ))
}

/// Segment (or plan) statistics of a snapshot: account count, and per numeric metric the
/// count of accounts with a value, median, p25, p75, and the sum where sums mean something.
pub fn segments(rows: &[Row], infos: &[AccountInfo], by_plan: bool) -> Vec<Value> {
    let plan_of: HashMap<&str, &str> = infos
        .iter()
        .map(|i| {
            (
                i.account_id.as_str(),
                i.plan.as_deref().unwrap_or("unknown"),
            )
        })
        .collect();
    let mut groups: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let id = row.account_id.as_str();
        let key = if by_plan {
            plan_of.get(id).copied().unwrap_or("unknown").to_string()
        } else {
            row.segment.clone()
        };
        groups.entry(key).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let mut stats = serde_json::Map::new();
            for column in metrics::COLUMNS.iter().filter(|c| metrics::is_numeric(c)) {
                let mut values: Vec<f64> = members.iter().filter_map(|r| r.number(column)).collect();
                values.sort_by(f64::total_cmp);
                let mut entry = json!({
                    "count": values.len(),
                    "median": metrics::quantile(&values, 0.5),
                    "p25": metrics::quantile(&values, 0.25),
                    "p75": metrics::quantile(&values, 0.75),
                });
                if metrics::is_additive(column) {
                    entry["sum"] = json!(values.iter().sum::<f64>());
                }
                stats.insert(column.to_string(), entry);
            }
            let frequency = members.iter().fold(BTreeMap::<String, i64>::new(), |mut m, r| {
                *m.entry(r.usage_frequency.clone()).or_default() += 1;
                m
            });
            json!({ if by_plan { "plan" } else { "segment" }: group, "accounts": members.len(), "usage_frequency": frequency, "metrics": stats })
        })
        .collect()
}

/// Outcomes over [from, to) split by `interval`, per segment or over all accounts.
pub fn outcomes(
    source: &(impl Activity + ?Sized),
    from: NaiveDate,
    to: NaiveDate,
    interval: metrics::outcomes::Interval,
    by_segment: bool,
    currency: &CurrencyConfig,
) -> Result<Vec<Value>, StoreError> {
    let infos = source.accounts()?;
    let mut subscriptions = source.subscriptions(&infos, currency)?;
    let accounts: Vec<(String, Vec<Subscription>)> = infos
        .iter()
        .map(|i| {
            (
                i.segment.clone(),
                subscriptions.remove(&i.account_id).unwrap_or_default(),
            )
        })
        .collect();
    let periods = metrics::outcomes::periods(from, to, interval);
    Ok(metrics::outcomes::outcomes(&accounts, &periods, by_segment))
}
