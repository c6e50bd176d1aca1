//! The backtest: the health each account had before its renewal was decided, against the
//! outcome, as discrimination and calibration per segment and tier.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::history::{analyse, scored_decisions};
use super::model::Settings;
use super::quality::{self, Decision, Quality};
use crate::store::StoreError;
use crate::store::{Activity, Records};

/// Backtest: a model trained on renewals decided before `as_of`, every account scored with
/// data before `as_of` only (metrics as of the day before), against the renewals decided
/// in the `horizon_days` from `as_of`. Per segment and overall: ROC AUC of the expected
/// renewal rate, of the health score, of the tier and, as a baseline, of logins per user and
/// week; top-decile lift; Brier scores and their skill against the base rate; calibration
/// per tier with intervals.
pub fn backtest(
    source: &(impl Activity + Records + ?Sized),
    as_of: NaiveDate,
    horizon_days: i64,
    settings: Settings,
) -> Result<Value, StoreError> {
    let mut model = analyse(source, as_of, "backtest", settings)?;
    model.id = 0;
    let scored_at = as_of - chrono::Duration::days(1);
    let rows = source.snapshot(scored_at, settings.metrics, settings.currency)?;
    let decisions = scored_decisions(source, &rows, &model, as_of, horizon_days, settings)?;
    let mut groups: BTreeMap<String, Vec<&Decision>> = BTreeMap::new();
    for d in &decisions {
        groups.entry(d.segment.clone()).or_default().push(d);
        groups.entry("all".into()).or_default().push(d);
    }
    let segments: Vec<Value> = groups
        .into_iter()
        .map(|(segment, items)| {
            let q = Quality::of(&items);
            let (calibration, calibration_error, largest_tier_share) = quality::calibration(&items);
            let renewed = items.iter().filter(|d| d.renewed).count();
            let skill = |brier: Option<f64>| {
                brier
                    .zip(q.brier_base)
                    .and_then(|(b, base)| (base > 0.0).then(|| 1.0 - b / base))
            };
            let standing = model
                .segments
                .get(&segment)
                .map(|m| json!(m.standing))
                .unwrap_or(Value::Null);
            // Revenue at risk as the portfolio counts it (ARR x (1 - expected renewal rate))
            // against the ARR those decisions actually lost.
            let arr_decided: f64 = items.iter().map(|d| d.arr).sum();
            let arr_lost: f64 = items.iter().filter(|d| !d.renewed).map(|d| d.arr).sum();
            let arr_at_risk: f64 = items
                .iter()
                .map(|d| d.arr * (1.0 - d.health.expected_renewal_rate.unwrap_or(1.0)))
                .sum();
            json!({
                "segment": segment,
                "standing": standing,
                "decided": items.len(),
                "renewed": renewed,
                "churned": items.len() - renewed,
                "auc_expected_renewal_rate": q.auc_expected_rate,
                "auc_health_score": q.auc_score,
                "auc_tier": q.auc_tier,
                "auc_logins_per_user_week": q.auc_logins,
                "top_decile_lift": q.top_decile_lift,
                "brier_health_score": q.brier_score,
                "brier_skill_health_score": skill(q.brier_score),
                "brier_expected_renewal_rate": q.brier_expected_rate,
                "brier_skill_expected_renewal_rate": skill(q.brier_expected_rate),
                "brier_base_rate": q.brier_base,
                "calibration_error": calibration_error,
                "arr_decided": arr_decided,
                "arr_at_risk_predicted": arr_at_risk,
                "arr_lost_observed": arr_lost,
                "largest_tier_share": largest_tier_share,
                "calibration": calibration,
            })
        })
        .collect();
    let powers: Map<String, Value> = model
        .segments
        .iter()
        .map(|(s, m)| (s.clone(), json!(m.power_feature)))
        .collect();
    Ok(json!({
        "as_of": as_of.to_string(),
        "scored_with_data_through": scored_at.to_string(),
        "horizon_days": horizon_days,
        "model": {"decided_renewals": model.decided_renewals, "data_from": model.data_from, "data_to": model.data_to, "power_features": powers},
        "segments": segments,
    }))
}
