//! Health over the store: decided renewals as examples, versioned models, per-account
//! health (tier, score, breakdown) and the daily history with tier changes. Written once
//! over the store's traits, so both backends answer alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::config::HealthConfig;
use super::model::{Assessment, Gate, Model, Settings, PROMOTED, REJECTED};
use super::quality::{Decision, Quality};
use crate::health::{self, Example, SegmentModel};
use crate::metrics::activity::{day_date, day_number};
use crate::metrics::config::{CurrencyConfig, MetricsConfig};
use crate::metrics::{self, Row};
use crate::store::{parse_model, AccountInfo, DaySpan, HistoryRow, StoreError, TierChange};
use crate::store::{Activity, History, Models, Records};

/// Every renewal decided before `as_of` whose usage window lies inside the data, with the
/// account's monthly use of each feature over that window and its score measures on the
/// decision day (`subscriptions`: those of `infos`). The window is the one a live score
/// reads: the `usage_days` days ending with the term's last day, cut at the start of the
/// account's first subscription.
pub fn examples(
    source: &(impl Activity + Records + ?Sized),
    as_of: i32,
    infos: &[AccountInfo],
    subscriptions: &HashMap<String, Vec<metrics::Subscription>>,
    settings: Settings,
) -> Result<(Vec<Example>, Option<DaySpan>), StoreError> {
    let Some(start) = source.data_start(settings.metrics)? else {
        return Ok((Vec::new(), None));
    };
    let usage_days = settings.health.usage_days as i32;
    let mut terms = Vec::new();
    for info in infos {
        let all = subscriptions
            .get(&info.account_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(customer_since) = all.iter().map(|s| s.start).min() else {
            continue;
        };
        let mut decided: Vec<&metrics::Subscription> = all
            .iter()
            .filter(|s| {
                matches!(s.outcome.as_deref(), Some("renewed" | "churned")) && s.end.is_some()
            })
            .collect();
        decided.sort_by_key(|s| s.start);
        for sub in decided {
            let last = sub.end.expect("invariant: decided terms have an end");
            let first = (last - usage_days + 1).max(customer_since);
            if first < start || last >= as_of || last < first {
                continue;
            }
            terms.push((info, sub, first, last));
        }
    }
    let spans: Vec<(String, i32, i32)> = terms
        .iter()
        .map(|(info, _, first, last)| (info.account_id.clone(), *first, *last))
        .collect();
    let uses = source.feature_uses(&spans, settings.metrics)?;
    let decision_days: Vec<(&AccountInfo, i32)> = terms
        .iter()
        .map(|(info, _, _, last)| (*info, *last))
        .collect();
    let mut measures = record_measures(source, &decision_days, settings)?.into_iter();
    let mut out = Vec::new();
    let mut span: Option<(i32, i32)> = None;
    for ((info, sub, first, last), uses) in terms.into_iter().zip(uses) {
        let days = f64::from(last - first + 1);
        let mut measures = measures.next().unwrap_or_default();
        for (name, value) in window_measures(&uses, days) {
            measures.insert(name.to_string(), Some(value));
        }
        let monthly: HashMap<String, f64> = uses
            .into_iter()
            .map(|(f, uses)| (f, uses as f64 * 30.0 / days))
            .collect();
        span = Some(span.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
        let renewed = sub.outcome.as_deref() == Some("renewed");
        out.push(Example {
            account_id: info.account_id.clone(),
            segment: info.segment.clone(),
            arr: sub.arr,
            renewed,
            day: last,
            monthly,
            measures,
        });
    }
    Ok((out, span))
}

/// The learned score's usage measures over a window of `days` days with these feature
/// uses: all features' uses a month, and the distinct features used.
pub(crate) fn window_measures(uses: &HashMap<String, i64>, days: f64) -> [(&'static str, f64); 2] {
    let total: i64 = uses.values().sum();
    let used = uses.values().filter(|u| **u > 0).count();
    [
        ("window_monthly_uses", total as f64 * 30.0 / days.max(1.0)),
        ("window_features_used", used as f64),
    ]
}

/// The learned score's measures that come from records (nps, escalations open) of each
/// (account, decision day), in order: the metrics of that day from the account's records,
/// read once for every decision (the usage measures come from the window's feature uses).
fn record_measures(
    source: &(impl Records + ?Sized),
    decisions: &[(&AccountInfo, i32)],
    settings: Settings,
) -> Result<Vec<BTreeMap<String, Option<f64>>>, StoreError> {
    let mut infos: Vec<&AccountInfo> = decisions.iter().map(|(info, _)| *info).collect();
    infos.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    infos.dedup_by(|a, b| a.account_id == b.account_id);
    let mut records = crate::store::load::build_records(
        &mut |table, columns| source.record_rows(table, columns),
        infos.iter().copied(),
        settings.currency,
    )?;
    let data: HashMap<&str, metrics::AccountData> = infos
        .iter()
        .map(|info| (info.account_id.as_str(), records.account_data(info)))
        .collect();
    Ok(decisions
        .iter()
        .map(|(info, day)| {
            let row = data
                .get(info.account_id.as_str())
                .map(|d| metrics::compute(d, *day, settings.metrics))
                .unwrap_or_default();
            ["nps", "escalations_open"]
                .into_iter()
                .map(|m| (m.to_string(), row.number(m)))
                .collect()
        })
        .collect())
}

/// Subscriptions with a decided outcome that ended before `day` (whole terms or not).
fn decided_before(
    subscriptions: &HashMap<String, Vec<metrics::Subscription>>,
    day: NaiveDate,
) -> i64 {
    let day = day_number(day);
    subscriptions
        .values()
        .flatten()
        .filter(|s| {
            matches!(s.outcome.as_deref(), Some("renewed" | "churned"))
                && s.end.is_some_and(|end| end < day)
        })
        .count() as i64
}

/// Builds a model from the renewals decided before `as_of` (not stored, promoted until a
/// gate says otherwise).
pub fn analyse(
    source: &(impl Activity + Records + ?Sized),
    as_of: NaiveDate,
    reason: &str,
    settings: Settings,
) -> Result<Model, StoreError> {
    Ok(Learning::read(source, as_of, settings)?.model(reason, None, settings))
}

/// What a model learns from: the renewals decided before `as_of`, read once (the held-out
/// test builds two models from them).
struct Learning {
    as_of: NaiveDate,
    examples: Vec<Example>,
    span: Option<(i32, i32)>,
    subscriptions_decided: i64,
    segments: Vec<String>,
}

impl Learning {
    fn read(
        source: &(impl Activity + Records + ?Sized),
        as_of: NaiveDate,
        settings: Settings,
    ) -> Result<Learning, StoreError> {
        let infos = source.accounts()?;
        let subscriptions = source.subscriptions(&infos, settings.currency)?;
        let (examples, span) =
            examples(source, day_number(as_of), &infos, &subscriptions, settings)?;
        let mut segments: Vec<String> = infos.iter().map(|i| i.segment.clone()).collect();
        segments.sort();
        segments.dedup();
        Ok(Learning {
            as_of,
            examples,
            span,
            subscriptions_decided: decided_before(&subscriptions, as_of),
            segments,
        })
    }

    /// The model these renewals give, keeping the power feature and cut points of `like`'s
    /// segments if given.
    fn model(&self, reason: &str, like: Option<&Model>, settings: Settings) -> Model {
        let structure: Option<health::Structure> = like.map(|m| {
            m.segments
                .iter()
                .filter(|(_, s)| s.standing != health::Standing::Unknown)
                .map(|(name, s)| {
                    (
                        name.clone(),
                        (s.power_feature.clone(), s.cut_points.clone()),
                    )
                })
                .collect()
        });
        Model {
            status: PROMOTED.to_string(),
            id: 0,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            as_of: self.as_of.to_string(),
            reason: reason.to_string(),
            data_from: self.span.map(|s| day_date(s.0).to_string()),
            data_to: self.span.map(|s| day_date(s.1).to_string()),
            decided_renewals: self.examples.len(),
            subscriptions_decided: self.subscriptions_decided,
            segments: health::build_models_like(
                &self.examples,
                &self.segments,
                settings.health,
                structure.as_ref(),
            ),
            gate: None,
        }
    }
}

/// Runs the analysis, tests it against the model in force on held-out time ([`gate`]) and
/// stores it as a new version, promoted or rejected with the reason; `force` promotes it
/// whatever the test says (the gate is still recorded).
pub fn recalibrate(
    source: &(impl Activity + Records + Models + ?Sized),
    as_of: NaiveDate,
    reason: &str,
    force: bool,
    settings: Settings,
) -> Result<Model, StoreError> {
    let model = analyse(source, as_of, reason, settings)?;
    store_gated(source, model, force, settings)
}

/// Gates `model` against the model in force and stores it, promoted or rejected.
fn store_gated(
    source: &(impl Activity + Records + Models + ?Sized),
    mut model: Model,
    force: bool,
    settings: Settings,
) -> Result<Model, StoreError> {
    let as_of = model
        .as_of
        .parse::<NaiveDate>()
        .map_err(|e| StoreError::Invalid(format!("model as_of: {e}")))?;
    let current = source.model_for(None)?;
    let mut gate = gate(source, current.as_ref(), as_of, settings)?;
    if force && !gate.promoted {
        gate.promoted = true;
        gate.reason = format!("promoted by hand although {}", gate.reason);
    }
    model.status = if gate.promoted { PROMOTED } else { REJECTED }.to_string();
    model.gate = Some(gate);
    model.id = source.store_model(&model)?;
    Ok(model)
}

/// Held-out renewals needed (with both outcomes) to test a candidate; fewer and it is
/// promoted untested.
pub const GATE_DECIDED_MIN: usize = 10;

/// Tests the way `analyse` learns against the model in force, on time neither has learned
/// from: both are trained on the renewals decided before `as_of - holdout_days` (the model
/// in force keeping its power features and cut points, its rates and score learned anew),
/// score every account on the day before, and are judged on the renewals decided from then
/// until `as_of` (Brier score of the score as a renewal probability; ROC AUC against the
/// logins baseline).
pub fn gate(
    source: &(impl Activity + Records + ?Sized),
    current: Option<&Model>,
    as_of: NaiveDate,
    settings: Settings,
) -> Result<Gate, StoreError> {
    let holdout = i64::from(settings.health.holdout_days);
    let from = as_of - chrono::Duration::days(holdout);
    let mut gate = Gate {
        from: from.to_string(),
        to: as_of.to_string(),
        decided: 0,
        current_model_id: current.map(|m| m.id),
        brier_candidate: None,
        brier_current: None,
        auc_score_candidate: None,
        auc_logins: None,
        promoted: true,
        reason: String::new(),
    };
    let Some(current) = current.filter(|m| m.decided_renewals > 0) else {
        gate.reason = "no model that learned from renewals is in force: promoted".into();
        return Ok(gate);
    };
    let learning = Learning::read(source, from, settings)?;
    let trial = learning.model("held-out test", None, settings);
    let baseline = learning.model("held-out test", Some(current), settings);
    let rows = source.snapshot(
        from - chrono::Duration::days(1),
        settings.metrics,
        settings.currency,
    )?;
    let candidate = scored_decisions(source, &rows, &trial, from, holdout, settings)?;
    let in_force = scored_decisions(source, &rows, &baseline, from, holdout, settings)?;
    let outcomes = |items: &[Decision]| (items.len(), items.iter().filter(|d| d.renewed).count());
    let (decided, renewed) = outcomes(&candidate);
    gate.decided = decided;
    if trial.decided_renewals == 0
        || decided < GATE_DECIDED_MIN
        || renewed == 0
        || renewed == decided
    {
        gate.reason = format!("{decided} held-out renewals ({renewed} renewed) cannot test it (at least {GATE_DECIDED_MIN} with both outcomes): promoted untested");
        return Ok(gate);
    }
    let quality = Quality::of(&candidate.iter().collect::<Vec<_>>());
    gate.brier_candidate = quality.brier_score;
    gate.brier_current = Quality::of(&in_force.iter().collect::<Vec<_>>()).brier_score;
    gate.auc_score_candidate = quality.auc_score;
    gate.auc_logins = quality.auc_logins;
    let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
    if let (Some(candidate), Some(current)) = (gate.brier_candidate, gate.brier_current) {
        // Not worse means no higher: a candidate learned the same way as the model in force
        // scores exactly as it does, so only a different structure can lose.
        if candidate > current {
            gate.promoted = false;
            gate.reason = format!("held-out Brier score {candidate:.3} is worse than the model in force's {current:.3}: rejected");
            return Ok(gate);
        }
    }
    if let (Some(score), Some(logins)) = (gate.auc_score_candidate, gate.auc_logins) {
        if score <= logins {
            gate.promoted = false;
            gate.reason = format!("held-out score AUC {score:.3} does not beat the logins baseline's {logins:.3}: rejected");
            return Ok(gate);
        }
    }
    gate.reason = format!(
        "held-out Brier score {} (model in force {}), score AUC {} (logins {}) on {decided} renewals: promoted",
        f(gate.brier_candidate),
        f(gate.brier_current),
        f(gate.auc_score_candidate),
        f(gate.auc_logins)
    );
    Ok(gate)
}

/// The model in force on `day`: the newest promoted one trained as of that day or before;
/// for days before the first model, the newest promoted of the earliest `as_of` (history
/// computed on a first start uses the model trained that day). `None` when there is none.
pub fn model_for(
    source: &(impl Models + ?Sized),
    day: Option<NaiveDate>,
) -> Result<Option<Model>, StoreError> {
    source.model_for(day)
}

pub fn model(source: &(impl Models + ?Sized), id: i64) -> Result<Option<Model>, StoreError> {
    source.model(id)
}

/// Every model, newest first, promoted and rejected, without its indicator lists.
pub fn models(source: &(impl Models + ?Sized)) -> Result<Vec<Value>, StoreError> {
    source
        .model_bodies()?
        .into_iter()
        .map(|(id, body)| {
            let model = parse_model(id, body)?;
            let segments: Map<String, Value> = model
                .segments
                .iter()
                .map(|(name, s)| {
                    (name.clone(), json!({"power_feature": s.power_feature, "standing": s.standing, "fallback": s.fallback, "cut_points": s.cut_points,
                                          "decided": s.decided, "note": s.note}))
                })
                .collect();
            Ok(json!({"id": model.id, "status": model.status, "created_at": model.created_at, "as_of": model.as_of, "reason": model.reason,
                      "data_from": model.data_from, "data_to": model.data_to, "decided_renewals": model.decided_renewals, "segments": segments,
                      "gate": model.gate}))
        })
        .collect()
}

/// Adds health to one account's metrics row: power feature use, tier, expected renewal
/// rate, score, band, breakdown and the model that gave them.
pub fn assess(
    source: &(impl Activity + ?Sized),
    row: &Row,
    model: &Model,
    as_of: i32,
    settings: Settings,
) -> Result<Assessment, StoreError> {
    Ok(
        assess_all(source, std::slice::from_ref(row), model, as_of, settings)?
            .pop()
            .expect("invariant: one row in, one out"),
    )
}

/// [`assess`] with the held tier put over the day's (see [`apply_held`]): one account as
/// the history, the portfolio and its page show it.
pub fn assess_held(
    source: &(impl Activity + History + ?Sized),
    row: &Row,
    model: &Model,
    as_of: i32,
    settings: Settings,
) -> Result<Assessment, StoreError> {
    let mut assessed = [assess(source, row, model, as_of, settings)?];
    apply_held(source, as_of, &mut assessed, settings)?;
    let [health] = assessed;
    Ok(health)
}

/// [`assess`] for many rows, reading what they need in one go. The power feature's monthly
/// uses are its uses in the last `usage_days` days (or since the account's first
/// subscription started, if shorter) x 30 / days.
pub fn assess_all(
    source: &(impl Activity + ?Sized),
    rows: &[Row],
    model: &Model,
    as_of: i32,
    settings: Settings,
) -> Result<Vec<Assessment>, StoreError> {
    Ok(assess_days(source, &[(rows, model, as_of)], settings)?
        .pop()
        .expect("invariant: one day in, one out"))
}

/// The segment model of a row whose tier comes from usage (a power feature, a known standing).
fn usage_model<'m>(model: &'m Model, row: &Row) -> Option<(&'m SegmentModel, &'m String)> {
    segment_model(model, row)
        .filter(|m| m.standing != health::Standing::Unknown)
        .and_then(|m| m.power_feature.as_ref().map(|p| (m, p)))
}

/// [`assess_all`] for several days (rows, model in force, day) at once: the subscriptions
/// and the feature uses are read once for all of them.
pub fn assess_days(
    source: &(impl Activity + ?Sized),
    days: &[(&[Row], &Model, i32)],
    settings: Settings,
) -> Result<Vec<Vec<Assessment>>, StoreError> {
    let wanted: HashSet<&str> = days
        .iter()
        .flat_map(|(rows, model, _)| {
            rows.iter()
                .filter(|r| segment_model(model, r).is_some())
                .map(|r| r.account_id.as_str())
        })
        .collect();
    let mut since: HashMap<String, i32> = HashMap::new();
    if !wanted.is_empty() {
        let infos: Vec<AccountInfo> = source
            .accounts()?
            .into_iter()
            .filter(|i| wanted.contains(i.account_id.as_str()))
            .collect();
        for (account, subscriptions) in source.subscriptions(&infos, settings.currency)? {
            if let Some(first) = subscriptions.iter().map(|s| s.start).min() {
                since.insert(account, first);
            }
        }
    }
    let usage_days = settings.health.usage_days as i32;
    let first_of = |account: &str, as_of: i32| {
        since.get(account).map_or(as_of - usage_days + 1, |&since| {
            (as_of - usage_days + 1).max(since)
        })
    };
    let spans: Vec<(String, i32, i32)> = days
        .iter()
        .flat_map(|(rows, model, as_of)| {
            rows.iter()
                .filter(|r| segment_model(model, r).is_some())
                .map(|r| {
                    let account = r.account_id.as_str();
                    (account.to_string(), first_of(account, *as_of), *as_of)
                })
        })
        .collect();
    let mut uses: HashMap<(String, i32), HashMap<String, i64>> = spans
        .iter()
        .map(|s| (s.0.clone(), s.2))
        .zip(source.feature_uses(&spans, settings.metrics)?)
        .collect();
    Ok(days
        .iter()
        .map(|(rows, model, as_of)| {
            assess_rows(rows, model, *as_of, &mut uses, &first_of, settings)
        })
        .collect())
}

/// The model of a row's segment, else the all-accounts one.
fn segment_model<'m>(model: &'m Model, row: &Row) -> Option<&'m SegmentModel> {
    let segment = row.segment.as_str();
    model
        .segments
        .get(segment)
        .or_else(|| model.segments.get("all"))
}

/// One day's assessment, with the power feature uses of each (account, day) read before.
fn assess_rows(
    rows: &[Row],
    model: &Model,
    as_of: i32,
    uses: &mut HashMap<(String, i32), HashMap<String, i64>>,
    first_of: &dyn Fn(&str, i32) -> i32,
    settings: Settings,
) -> Vec<Assessment> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let account = row.account_id.as_str();
        let segment = row.segment.as_str();
        let seg = segment_model(model, row);
        // The window's feature uses (read for every row with a segment model), taken out.
        let window = uses.remove(&(account.to_string(), as_of));
        let days = (as_of - first_of(account, as_of) + 1).max(1);
        let (tier, rate, monthly, power) = match (seg, usage_model(model, row)) {
            (_, Some((m, power))) => {
                let count = window
                    .as_ref()
                    .and_then(|u| u.get(power.as_str()).copied())
                    .unwrap_or(0);
                let monthly = count as f64 * 30.0 / f64::from(days);
                let (tier, rate) = health::tier_of(m, monthly);
                (Some(tier), rate, Some(monthly), Some(power.clone()))
            }
            (Some(_), None) => (Some(health::UNKNOWN.to_string()), None, None, None),
            (None, None) => (None, None, None, None),
        };
        let mut measures = row.to_map();
        measures.insert("tier".into(), tier.clone().into());
        measures.insert("expected_renewal_rate".into(), rate.into());
        let mut health = Assessment {
            account_id: account.to_string(),
            segment: segment.to_string(),
            model_id: model.id,
            engagement_score: row.engagement_score,
            model_fallback: seg.map(|m| m.fallback),
            model_standing: seg.map(|m| m.standing),
            model_note: seg.and_then(|m| m.note.clone()),
            power_feature: power,
            power_feature_monthly_uses: monthly,
            tier: tier.clone(),
            usage_tier: tier,
            expected_renewal_rate: rate,
            ..Assessment::default()
        };
        if let Some(window) = &window {
            let [(uses_name, uses), (used_name, used)] = window_measures(window, f64::from(days));
            measures.insert(uses_name.into(), uses.into());
            measures.insert(used_name.into(), used.into());
            health.window_monthly_uses = Some(uses);
            health.window_features_used = Some(used);
        }
        let scored = health::score(&measures, seg, settings.health);
        health.health_score = scored.score;
        health.health_band = scored.band;
        health.score_weights = scored.weights_source;
        health.components = scored.components;
        out.push(health);
    }
    out
}

/// Puts the held tier (the one the history shows) over each assessment's tier of `day`:
/// the history row of that day if written, else the day before's held on by
/// `health::hold`. The day's own tier stays in `usage_tier`.
pub fn apply_held(
    source: &(impl History + ?Sized),
    day: i32,
    assessed: &mut [Assessment],
    settings: Settings,
) -> Result<(), StoreError> {
    let today = source.day_history(day)?;
    let before = if today.is_empty() {
        source.day_history(day - 1)?
    } else {
        HashMap::new()
    };
    for h in assessed {
        let account = h.account_id.clone();
        let Some(raw) = h.tier.clone() else {
            continue;
        };
        let model_id = h.model_id;
        let held = match (today.get(&account), before.get(&account)) {
            (Some(row), _) if row.model_id == model_id => row.tier.clone(),
            (None, Some(row)) => previous_held(row).map(|p| {
                health::hold(
                    Some(&p),
                    &raw,
                    day,
                    settings.health.tier_hold_days,
                    row.model_id != model_id,
                )
                .0
                .tier
            }),
            _ => None,
        };
        if let Some(tier) = held {
            h.tier = Some(tier);
        }
    }
    Ok(())
}

fn previous_held(row: &HistoryRow) -> Option<health::Held> {
    let tier = row.tier.clone()?;
    Some(health::Held {
        raw_tier: row.raw_tier.clone().unwrap_or_else(|| tier.clone()),
        tier,
        raw_since: row.raw_since.unwrap_or(i32::MIN / 2),
    })
}

/// Every account's assessment.
pub type Assessments = Vec<Assessment>;

/// Every account's health at `as_of` under the model in force that day, tiers held.
pub fn snapshot(
    source: &(impl Activity + Models + History + ?Sized),
    as_of: NaiveDate,
    settings: Settings,
) -> Result<Option<(Model, Assessments)>, StoreError> {
    let Some(model) = source.model_for(Some(as_of))? else {
        return Ok(None);
    };
    let rows = source.snapshot(as_of, settings.metrics, settings.currency)?;
    let mut assessed = assess_all(source, &rows, &model, day_number(as_of), settings)?;
    apply_held(source, day_number(as_of), &mut assessed, settings)?;
    Ok(Some((model, assessed)))
}

/// Computes and stores the daily history of the last `history_days` days through
/// `through` (only the days that need it), with the held tiers and their changes.
/// Returns the days written.
pub fn update_history(
    source: &(impl Activity + Models + History + ?Sized),
    through: NaiveDate,
    settings: Settings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, StoreError> {
    let end = day_number(through);
    let first = end - settings.health.history_days as i32 + 1;
    // A day is (re)computed when it has no rows, when its rows came from another model
    // than the one now in force that day (a first real model replacing an empty one), or
    // when it is the last stored day (it may have been written before the day was over);
    // and every day after a recomputed one, whose held tiers follow from it.
    let last = source.history_last_day()?;
    // (day, the model in force that day).
    let mut todo: Vec<(i32, Model)> = Vec::new();
    for day in first..=end {
        let Some(model) = source.model_for(Some(day_date(day)))? else {
            return Ok(0);
        };
        let (rows, other) = source.history_on(day, model.id)?;
        if !todo.is_empty() || rows == 0 || other > 0 || Some(day) >= last {
            todo.push((day, model));
        }
    }
    let total = todo.len();
    let mut written = 0;
    // Days in runs: one load of the metrics and one read of the feature uses per run.
    for run in todo.chunks(source.days_per_load().max(1)) {
        let dates: Vec<NaiveDate> = run.iter().map(|(day, _)| day_date(*day)).collect();
        let snapshots = source.snapshots(&dates, settings.metrics, settings.currency)?;
        let days: Vec<(&[Row], &Model, i32)> = snapshots
            .iter()
            .zip(run)
            .map(|(rows, (day, model))| (rows.as_slice(), model, *day))
            .collect();
        let assessed_days = assess_days(source, &days, settings)?;
        for ((day, model), assessed) in run.iter().zip(assessed_days) {
            write_history_day(source, *day, model, &assessed, settings)?;
            written += 1;
            progress(written, total);
        }
    }
    Ok(total)
}

/// Stores one day's assessed health: each account's held tier from the day before's
/// (`health::hold`), and the changes of held tiers with their cause.
fn write_history_day(
    source: &(impl History + ?Sized),
    day: i32,
    model: &Model,
    assessed: &[Assessment],
    settings: Settings,
) -> Result<(), StoreError> {
    let before = source.day_history(day - 1)?;
    let recorded = source.changes_between(day - 1, day)?;
    let mut rows = Vec::with_capacity(assessed.len());
    let mut changes = Vec::new();
    for health in assessed {
        let mut row = HistoryRow {
            account_id: health.account_id.clone(),
            model_id: model.id,
            engagement: health.engagement_score,
            score: health.health_score,
            band: health.health_band.clone(),
            tier: health.tier.clone(),
            raw_tier: health.tier.clone(),
            raw_since: Some(day),
            expected_rate: health.expected_renewal_rate,
            monthly_uses: health.power_feature_monthly_uses,
        };
        if let Some(raw) = row.raw_tier.clone() {
            let previous = before.get(&row.account_id);
            let previous_held = previous.and_then(previous_held);
            let model_changed = previous.is_some_and(|p| p.model_id != model.id);
            let (held, cause) = health::hold(
                previous_held.as_ref(),
                &raw,
                day,
                settings.health.tier_hold_days,
                model_changed,
            );
            if let (Some(cause), Some(from)) =
                (cause, previous_held.as_ref().map(|p| p.tier.clone()))
            {
                if !recorded.contains(&(row.account_id.clone(), held.tier.clone())) {
                    changes.push(TierChange {
                        account_id: row.account_id.clone(),
                        day,
                        from_tier: from,
                        to_tier: held.tier.clone(),
                        model_id: model.id,
                        cause: cause.as_str().to_string(),
                    });
                }
            }
            row.tier = Some(held.tier);
            row.raw_since = Some(held.raw_since);
        }
        rows.push(row);
    }
    source.write_history(day, model.id, &rows, &changes)?;
    Ok(())
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

/// The reason given to a model trained because the one in force learned from nothing.
const FIRST_DATA: &str = "first outcomes with data";
/// How often an empty model is tried again while it stays empty.
const EMPTY_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The settings a background thread keeps for its life ([`Settings`] borrows them).
#[derive(Debug, Clone)]
pub struct OwnedSettings {
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub currency: CurrencyConfig,
}

impl OwnedSettings {
    pub fn borrowed(&self) -> Settings<'_> {
        Settings {
            metrics: &self.metrics,
            health: &self.health,
            currency: &self.currency,
        }
    }
}

/// What the health thread remembers between passes.
#[derive(Default)]
pub struct PassState {
    /// When a model that learned from nothing was last tried again (and stayed empty).
    empty_tried: Option<std::time::Instant>,
}

/// One pass of the health thread: recalibrate when due, bring the history up to today.
/// Whether tiers may have moved (a new model, or days of history added).
pub fn run_once(
    source: &(impl Activity + Records + Models + History + ?Sized),
    settings: Settings,
    today: NaiveDate,
    state: &mut PassState,
) -> Result<bool, StoreError> {
    // The newest model tried, promoted or not: a rejected one waits for the next due date
    // like a promoted one.
    let newest = match source.model_bodies()?.into_iter().next() {
        Some((id, body)) => Some(parse_model(id, body)?),
        None => None,
    };
    // Due: no model yet, the newest is older than the schedule, or renewals decided since
    // it have grown by a fifth (an import of history, the first data after an empty start).
    let decided_now = decided_before(
        &source.subscriptions(&source.accounts()?, settings.currency)?,
        today,
    );
    // A model that learned from no renewal (records imported before any event arrived) is
    // tried again at most once an hour while there are outcomes, and replaced only by one
    // that learned from some: the events of a backfill make its tiers.
    let stale_empty = |m: &Model| {
        let tried = state
            .empty_tried
            .is_some_and(|at| at.elapsed() < EMPTY_RETRY);
        m.decided_renewals == 0 && decided_now > 0 && !tried
    };
    let due = match &newest {
        None => Some("first model"),
        Some(m) if decided_now as f64 > m.subscriptions_decided as f64 * 1.2 + 10.0 => {
            Some("new outcomes")
        }
        Some(m) if stale_empty(m) => Some(FIRST_DATA),
        Some(m) => m
            .as_of
            .parse::<NaiveDate>()
            .ok()
            .filter(|d| (today - *d).num_days() < i64::from(settings.health.recalibrate_every_days))
            .map_or(Some("schedule"), |_| None),
    };
    if let Some(reason) = due {
        let model = analyse(source, today, reason, settings)?;
        if reason == FIRST_DATA && model.decided_renewals == 0 {
            // Still nothing to learn from: the model in force stays.
            state.empty_tried = Some(std::time::Instant::now());
        } else {
            let model = store_gated(source, model, false, settings)?;
            let gate = model
                .gate
                .as_ref()
                .map(|g| g.reason.as_str())
                .unwrap_or_default();
            tracing::info!(model = model.id, decided = model.decided_renewals, reason, status = %model.status, gate, "health model recalibrated");
        }
    }
    let started = std::time::Instant::now();
    let days = update_history(source, today, settings, &mut |_, _| {})?;
    if days > 1 {
        tracing::info!(
            days,
            seconds = started.elapsed().as_secs_f64(),
            "health history updated"
        );
    }
    Ok(due.is_some() || days > 1)
}

/// Every account scored under `model` from `rows` (metrics of the day before `as_of`),
/// joined with the renewals decided in [`as_of`, `as_of` + `horizon_days`) of the accounts
/// that were customers before `as_of` (one that was not has nothing to be scored on).
pub(crate) fn scored_decisions(
    source: &(impl Activity + ?Sized),
    rows: &[Row],
    model: &Model,
    as_of: NaiveDate,
    horizon_days: i64,
    settings: Settings,
) -> Result<Vec<Decision>, StoreError> {
    let day = day_number(as_of) - 1;
    let healths = assess_all(source, rows, model, day, settings)?;
    let assessed: HashMap<String, (Assessment, Option<f64>)> = healths
        .into_iter()
        .zip(rows)
        .map(|(health, row)| {
            (
                row.account_id.clone(),
                (health, row.number("logins_per_user_week")),
            )
        })
        .collect();
    let (from, to) = (
        day_number(as_of),
        day_number(as_of + chrono::Duration::days(horizon_days)),
    );
    let infos = source.accounts()?;
    let mut subscriptions = source.subscriptions(&infos, settings.currency)?;
    let mut out = Vec::new();
    for info in &infos {
        let subs = subscriptions.remove(&info.account_id).unwrap_or_default();
        if subs
            .iter()
            .map(|s| s.start)
            .min()
            .is_none_or(|since| since >= from)
        {
            continue;
        }
        for sub in subs {
            if matches!(sub.outcome.as_deref(), Some("renewed" | "churned"))
                && sub.end.is_some_and(|end| end >= from && end < to)
            {
                if let Some((health, logins)) = assessed.get(&info.account_id) {
                    let segment = health.segment.clone();
                    let renewed = sub.outcome.as_deref() == Some("renewed");
                    out.push(Decision {
                        segment,
                        renewed,
                        arr: sub.arr,
                        health: health.clone(),
                        logins: *logins,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CurrencyConfig, HealthConfig};
    use crate::store::Records;
    use crate::store::{Activity, History, Models};
    use rusqlite::{params, Connection};

    fn import(conn: &mut Connection, kind: &str, object: Value) {
        let kind = crate::records::kind(kind).unwrap();
        let record = crate::records::from_json(kind, object.as_object().unwrap()).unwrap();
        let mut target = conn.import_target(kind).unwrap();
        target.upsert(kind, &record).unwrap();
        target.commit().unwrap();
    }

    fn models(conn: &Connection) -> Vec<(i64, String, usize)> {
        let mut all: Vec<(i64, String, usize)> = conn
            .model_bodies()
            .unwrap()
            .into_iter()
            .map(|(id, body)| parse_model(id, body).unwrap())
            .map(|m| (m.id, m.reason, m.decided_renewals))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_renewal_is_learned_and_scored_over_the_same_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        let metrics = MetricsConfig::default();
        let (health, currency) = (
            HealthConfig {
                min_decided: 1,
                ..HealthConfig::default()
            },
            CurrencyConfig::default(),
        );
        let settings = Settings {
            metrics: &metrics,
            health: &health,
            currency: &currency,
        };
        let today = chrono::Utc::now().date_naive();
        let date = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
        import(
            &mut conn,
            "accounts",
            json!({"account_id": "a1", "segment": "x"}),
        );
        import(
            &mut conn,
            "subscriptions",
            json!({"subscription_id": "s1", "account_id": "a1", "arr": 1000, "currency": "USD", "seats": 5,
                                                  "start_date": date(-400), "end_date": date(-31), "outcome": "renewed"}),
        );
        import(
            &mut conn,
            "subscriptions",
            json!({"subscription_id": "s2", "account_id": "a1", "arr": 1000, "currency": "USD", "seats": 5,
                                                  "start_date": date(-30), "end_date": date(335)}),
        );
        // Heavy use of Power early in the term (days -390 to -200), then 10 uses in the 90
        // days before the decision (days -100 to -91), then none.
        let ms = |offset: i64| {
            (today + chrono::Duration::days(offset))
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        let days: Vec<i64> = (-390..=-200).chain(-100..=-91).collect();
        conn.execute(
            "INSERT INTO events (id, received_ms, source, message_id, type, user_id, group_id, event, timestamp_ms, raw)
             VALUES (1, ?1, 'test', 'g', 'group', 'u1', 'a1', NULL, ?1, '{}')",
            [ms(-395)],
        )
        .unwrap();
        for (n, day) in days.iter().enumerate() {
            let id = n as i64 + 2;
            conn.execute(
                "INSERT INTO events (id, received_ms, source, message_id, type, user_id, group_id, event, timestamp_ms, raw)
                 VALUES (?1, ?2, 'test', ?1, 'track', 'u1', NULL, 'Power', ?2, '{}')",
                params![id, ms(*day)],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES ('u1', NULL, 'a1', ?1, 1)", [ms(-395)]).unwrap();
        crate::store::sqlite::rollup::catch_up(
            &mut conn,
            &mut crate::store::sqlite::rollup::Rollup::new(&metrics),
            &mut |_, _| {},
        )
        .unwrap();

        // Learned: the 90 days ending with the term's last day (-120 to -31) hold 10 uses:
        // 10 x 30 / 90 a month, not the whole term's 201 x 30 / 370.
        let infos = conn.accounts().unwrap();
        let subscriptions = conn.subscriptions(&infos, &currency).unwrap();
        let (examples, _) =
            examples(&conn, day_number(today), &infos, &subscriptions, settings).unwrap();
        assert_eq!(examples.len(), 1);
        assert_eq!(
            examples[0].monthly.get("Power").copied(),
            Some(10.0 * 30.0 / 90.0)
        );
        assert_eq!(examples[0].day, day_number(today) - 31);
        // Scored on the decision day: the same 90 days, the same monthly uses.
        let model = analyse(&conn, today, "test", settings).unwrap();
        assert_eq!(model.segments["x"].power_feature.as_deref(), Some("Power"));
        let decision = today - chrono::Duration::days(31);
        let rows = conn.snapshot(decision, &metrics, &currency).unwrap();
        let assessed = assess_all(&conn, &rows, &model, day_number(decision), settings).unwrap();
        assert_eq!(
            assessed[0].power_feature_monthly_uses,
            Some(10.0 * 30.0 / 90.0)
        );
    }

    #[test]
    fn a_new_model_moves_tiers_at_once_as_model_changes_while_usage_waits_to_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Store::open(dir.path()).unwrap();
        let conn = store.connect().unwrap();
        let (metrics, health, currency) = (
            MetricsConfig::default(),
            HealthConfig::default(),
            CurrencyConfig::default(),
        );
        let settings = Settings {
            metrics: &metrics,
            health: &health,
            currency: &currency,
        };
        let model = |id: i64| Model {
            id,
            ..analyse(&conn, chrono::Utc::now().date_naive(), "test", settings).unwrap()
        };
        let assessed = |tiers: &[(&str, &str)]| -> Vec<Assessment> {
            tiers
                .iter()
                .map(|(a, t)| Assessment {
                    account_id: a.to_string(),
                    tier: Some(t.to_string()),
                    ..Assessment::default()
                })
                .collect()
        };
        // Day 100 under model 1: a and b green. Day 101, same model: a's usage turns red
        // (not held 14 days: still green, no change). Day 102, model 2: b is red under it at
        // once, a change caused by the model; a too (its tier moved with the new model).
        write_history_day(
            &conn,
            100,
            &model(1),
            &assessed(&[("a", "green"), ("b", "green")]),
            settings,
        )
        .unwrap();
        write_history_day(
            &conn,
            101,
            &model(1),
            &assessed(&[("a", "red"), ("b", "green")]),
            settings,
        )
        .unwrap();
        assert_eq!(
            conn.day_history(101).unwrap()["a"].tier.as_deref(),
            Some("green")
        );
        assert_eq!(
            conn.day_history(101).unwrap()["a"].raw_tier.as_deref(),
            Some("red")
        );
        write_history_day(
            &conn,
            102,
            &model(2),
            &assessed(&[("a", "red"), ("b", "red")]),
            settings,
        )
        .unwrap();
        let changes = conn.tier_changes(day_date(90), None).unwrap();
        let summary: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|c| (c.account_id.as_str(), c.to.as_str(), c.cause.as_str()))
            .collect();
        assert_eq!(summary, vec![("a", "red", "model"), ("b", "red", "model")]);
        // So no tier_dropped alert follows them.
        assert!(crate::actions::run::usage_drops(&changes).is_empty());
    }

    #[test]
    // Over 100 lines: A scenario test: each step depends on the one before.
    #[allow(clippy::too_many_lines)]
    fn a_model_that_learned_from_nothing_is_replaced_once_events_make_its_renewals_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        let (metrics, health, currency) = (
            MetricsConfig::default(),
            HealthConfig::default(),
            CurrencyConfig::default(),
        );
        let settings = Settings {
            metrics: &metrics,
            health: &health,
            currency: &currency,
        };
        let today = chrono::Utc::now().date_naive();
        let date = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
        // Records first, as an install that imports its contracts before any event arrives.
        import(&mut conn, "accounts", json!({"account_id": "a1"}));
        import(
            &mut conn,
            "subscriptions",
            json!({"subscription_id": "s1", "account_id": "a1", "arr": 1000, "currency": "USD", "seats": 5,
                                                  "start_date": date(-120), "end_date": date(-61), "outcome": "renewed"}),
        );
        let mut state = PassState::default();
        run_once(&conn, settings, today, &mut state).unwrap();
        assert_eq!(models(&conn), vec![(1, "first model".to_string(), 0)]);
        // Tried again at once: still nothing to learn from, so nothing stored; then not
        // again within the hour.
        run_once(&conn, settings, today, &mut state).unwrap();
        assert!(state.empty_tried.is_some());
        run_once(&conn, settings, today, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 1);

        // The backfill arrives: a member of a1 active before and during the renewed term.
        let ms = |offset: i64| {
            (today + chrono::Duration::days(offset))
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        for (id, kind, offset) in [
            (1_i64, "group", -130),
            (2, "track", -125),
            (3, "track", -100),
        ] {
            conn.execute(
                "INSERT INTO events (id, received_ms, source, message_id, type, user_id, group_id, event, timestamp_ms, raw)
                 VALUES (?1, ?2, 'test', ?1, ?3, 'u1', CASE WHEN ?3 = 'group' THEN 'a1' END, CASE WHEN ?3 = 'track' THEN 'Report Created' END, ?2, '{}')",
                params![id, ms(offset), kind],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES ('u1', NULL, 'a1', ?1, 1)", [ms(-130)]).unwrap();
        crate::store::sqlite::rollup::catch_up(
            &mut conn,
            &mut crate::store::sqlite::rollup::Rollup::new(&metrics),
            &mut |_, _| {},
        )
        .unwrap();
        run_once(&conn, settings, today, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 1, "tried within the hour: not again");
        state.empty_tried = state.empty_tried.map(|at| at - EMPTY_RETRY);
        run_once(&conn, settings, today, &mut state).unwrap();
        assert_eq!(
            models(&conn),
            vec![
                (1, "first model".to_string(), 0),
                (2, FIRST_DATA.to_string(), 1)
            ]
        );
        // A model that learned something is not retried.
        run_once(&conn, settings, today, &mut state).unwrap();
        assert_eq!(models(&conn).len(), 2);

        // The quarterly schedule, on an injected clock: 90 days on nothing is due; 91 days
        // (recalibrate_every_days) after the newest model, a new one is trained and gated.
        run_once(
            &conn,
            settings,
            today + chrono::Duration::days(90),
            &mut state,
        )
        .unwrap();
        assert_eq!(models(&conn).len(), 2, "not due before 91 days");
        run_once(
            &conn,
            settings,
            today + chrono::Duration::days(91),
            &mut state,
        )
        .unwrap();
        let all = models(&conn);
        assert_eq!((all.len(), all[2].1.as_str()), (3, "schedule"), "{all:?}");
        let newest = parse_model(3, conn.model_bodies().unwrap()[0].1.clone()).unwrap();
        let gate = newest.gate.expect("the held-out test is recorded");
        // One decided renewal cannot test anything: promoted untested, and it says so.
        assert!(
            gate.promoted && gate.reason.contains("promoted untested"),
            "{gate:?}"
        );
        assert_eq!(
            newest.as_of,
            (today + chrono::Duration::days(91)).to_string()
        );
        run_once(
            &conn,
            settings,
            today + chrono::Duration::days(92),
            &mut state,
        )
        .unwrap();
        assert_eq!(
            models(&conn).len(),
            3,
            "the schedule counts from the newest model"
        );
    }
}
