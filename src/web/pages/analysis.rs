//! The pages across accounts: segments side by side, indicators and the model, outcomes,
//! and onboarding against segment medians.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use chrono::{Datelike, Duration, Months};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::charts::{self, RateBar, Series};
use super::{
    as_of, layout, money, number, percent, tier_badge, value_text, PageError, PageResult, SignedIn,
};
use crate::health::backtest;
use crate::health::history;
use crate::metrics::outcomes::Interval;
use crate::metrics::read;
use crate::web::metrics::{cached_snapshot, with_source};
use crate::web::AppState;

/// Accounts whose first contract started this many days ago or less are in onboarding.
pub const ONBOARDING_DAYS: i64 = 180;

const SEGMENT_MEASURES: &[&str] = &[
    "active_days_14d",
    "active_minutes_14d",
    "active_users_30d",
    "logins_per_user_week",
    "license_utilization",
    "engagement_score",
    "features_used_30d",
    "feature_breadth",
    "education_events_30d",
    "tickets_opened_90d",
    "nps",
    "csat",
    "ces",
];

#[derive(Debug, Deserialize)]
pub struct SegmentsQuery {
    by: Option<String>,
    as_of: Option<String>,
    /// `current` (default: a contract in force) or `all`.
    status: Option<String>,
}

pub async fn segments(
    user: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<SegmentsQuery>,
) -> PageResult {
    let as_of = as_of(query.as_of.as_deref())?;
    let by_plan = query.by.as_deref() == Some("plan");
    let rows = cached_snapshot(&state, as_of).await?;
    let snapshot = rows.clone();
    let (infos, facts) = with_source(&state, move |source, s| {
        Ok((
            source.accounts()?,
            crate::accounts::facts(source, as_of, &snapshot, s)?,
        ))
    })
    .await?;
    // Current customers by default: former ones and holdings would pull the medians to 0.
    let all_accounts = query.status.as_deref() == Some("all");
    let current: std::collections::HashSet<&str> = facts
        .iter()
        .filter(|f| all_accounts || f.in_force())
        .map(|f| f.account_id.as_str())
        .collect();
    let rows: Vec<crate::metrics::Row> = rows
        .iter()
        .filter(|r| current.contains(r.account_id.as_str()))
        .cloned()
        .collect();
    let facts: Vec<&crate::accounts::Facts> = facts
        .iter()
        .filter(|f| current.contains(f.account_id.as_str()))
        .collect();
    let groups = read::segments(&rows, &infos, by_plan);
    let key = if by_plan { "plan" } else { "segment" };
    let names: Vec<String> = groups
        .iter()
        .map(|g| g[key].as_str().unwrap_or("").to_string())
        .collect();
    // Health distribution per group, from the stored daily history.
    let mut tiers: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for f in &facts {
        let group = if by_plan {
            f.plan.clone().unwrap_or_else(|| "unknown".into())
        } else {
            f.segment.clone()
        };
        let tier = f
            .health
            .as_ref()
            .and_then(|h| h.tier.clone())
            .unwrap_or_else(|| "none".into());
        *tiers
            .entry(group.clone())
            .or_default()
            .entry(tier)
            .or_default() += 1;
        if let Some(score) = f.health.as_ref().and_then(|h| h.score) {
            scores.entry(group).or_default().push(score);
        }
    }
    Ok(layout(
        &user,
        "Segments",
        "/segments",
        html! {
            h1 { "Segments side by side" }
            p { "By " a href="/segments?by=segment" aria-current=[(!by_plan).then_some("page")] { "segment" } " · " a href="/segments?by=plan" aria-current=[by_plan.then_some("page")] { "plan" } ". Medians on " (crate::format::day(as_of)) " (p25–p75 below) of "
                @if all_accounts { "every account (" a href=(format!("/segments?by={}", if by_plan { "plan" } else { "segment" })) { "current customers only" } ")." }
                @else { "current customers (" a href=(format!("/segments?by={}&status=all", if by_plan { "plan" } else { "segment" })) { "every account" } ")." }
            }
            @if groups.is_empty() { p.empty { "No accounts yet: import accounts or send group calls." } } @else {
                div.scroll { table.data id="segments" {
                    thead { tr { th scope="col" { "Measure" } @for n in &names { th scope="col" { (n) } } } }
                    tbody {
                        tr { th scope="row" { "accounts" } @for g in &groups { td.num { (g["accounts"]) } } }
                        @for measure in SEGMENT_MEASURES {
                            tr {
                                th scope="row" { (crate::metrics::measure(measure).map_or(*measure, |m| m.label)) }
                                @for g in &groups {
                                    @let m = &g["metrics"][*measure];
                                    td.num data-group=(g[key].as_str().unwrap_or("")) data-field=(measure) data-value=[m["median"].as_f64()] {
                                        (number(m["median"].as_f64(), 1))
                                        br; small.muted { (number(m["p25"].as_f64(), 1)) "–" (number(m["p75"].as_f64(), 1)) }
                                    }
                                }
                            }
                        }
                        tr { th scope="row" { "usage frequency" } @for g in &groups { td { @for (f, n) in g["usage_frequency"].as_object().into_iter().flatten() { (f) ": " (n) br; } } } }
                        tr { th scope="row" { "tiers" } @for n in &names { td { @for (t, c) in tiers.get(n).into_iter().flatten() { (tier_badge((t != "none").then_some(t.as_str()))) " " (c) br; } } } }
                        tr { th scope="row" { "median health score" } @for n in &names { td.num { (number(median(scores.get(n)), 0)) } } }
                    }
                } }
            }
        },
    ))
}

fn median(values: Option<&Vec<f64>>) -> Option<f64> {
    let mut values = values?.clone();
    values.sort_by(f64::total_cmp);
    crate::metrics::quantile(&values, 0.5)
}

#[derive(Debug, Deserialize)]
pub struct IndicatorsQuery {
    segment: Option<String>,
    backtest: Option<String>,
}

/// What the model in force changed against the one before it (the two newest promoted in
/// `history`, newest first): per segment, a new power feature or new cut points. Tier
/// changes a new model causes are recorded as `model` and alert nobody.
fn model_notices(history: &[Value]) -> Vec<String> {
    let mut promoted = history
        .iter()
        .filter(|m| m["status"].as_str().unwrap_or("promoted") == "promoted");
    let (Some(now), Some(before)) = (promoted.next(), promoted.next()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (segment, ours) in now["segments"].as_object().into_iter().flatten() {
        let theirs = &before["segments"][segment];
        if theirs.is_null() {
            continue;
        }
        let feature = |v: &Value| v["power_feature"].as_str().unwrap_or("none").to_string();
        if feature(ours) != feature(theirs) {
            out.push(format!(
                "Model {} changed {segment}'s power feature from {} to {}: accounts it moved to another tier are marked as model changes and alert nobody.",
                now["id"], feature(theirs), feature(ours)
            ));
        } else if ours["cut_points"] != theirs["cut_points"] {
            out.push(format!(
                "Model {} moved {segment}'s cut points from {} to {}: accounts it moved to another tier are marked as model changes and alert nobody.",
                now["id"], theirs["cut_points"], ours["cut_points"]
            ));
        }
    }
    out
}

// Over 100 lines: The Indicators page's markup in page order.
#[allow(clippy::too_many_lines)]
pub async fn indicators(
    user: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<IndicatorsQuery>,
) -> PageResult {
    let today = crate::web::metrics::today();
    let backtest_at = match query.backtest.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            crate::records::parse_date(text)
                .map_err(|r| PageError::bad_request(format!("backtest: {r}")))?,
        ),
    };
    let (model, history, backtest) = with_source(&state, move |source, s| {
        let backtest = match backtest_at {
            Some(at) => Some(backtest::backtest(source, at, 365, s)?),
            None => None,
        };
        Ok((
            history::model_for(source, None)?,
            history::models(source)?,
            backtest,
        ))
    })
    .await?;
    let Some(model) = model else {
        return Ok(layout(
            &user,
            "Indicators",
            "/indicators",
            html! {
                h1 { "Indicators" }
                p.empty { "No health model yet. One is learned as soon as renewals and churns are decided (import subscriptions with outcomes), or run " code { "bellwether recalibrate" } "." }
            },
        ));
    };
    let segment = query
        .segment
        .clone()
        .filter(|s| model.segments.contains_key(s))
        .or_else(|| model.segments.keys().next().cloned())
        .unwrap_or_default();
    let sm_model = &model.segments[&segment];
    let bars: Vec<RateBar> = sm_model
        .buckets
        .iter()
        .map(|b| RateBar {
            label: b.label.clone(),
            rate: Some(b.renewal_rate),
            low: Some(b.interval_low),
            high: Some(b.interval_high),
            count: b.decided,
            tier: Some(b.tier.clone()),
        })
        .collect();
    Ok(layout(
        &user,
        "Indicators",
        "/indicators",
        html! {
            h1 { "Indicators" }
            p { "Model " (model.id) ", trained " (crate::format::day_text(&model.as_of)) " (" (model.reason) ") on " (model.decided_renewals) " decided renewals." }
            nav.tabs aria-label="Segments" {
                @for name in model.segments.keys() {
                    a href=(format!("/indicators?segment={name}")) aria-current=[(*name == segment).then_some("page")] { (name) }
                }
            }
            @for notice in model_notices(&history) { p.note data-field="model-notice" { (notice) } }
            h2 { "Segment " (segment) }
            @if let Some(note) = &sm_model.note { p.note { (note) } }
            p { "Power feature: " strong data-field="power_feature" { (sm_model.power_feature.as_deref().unwrap_or("none")) } " (" (sm_model.power_feature_source) ")." }
            (charts::rates(&format!("Expected renewal rate by monthly uses of {} (95% posterior interval)", sm_model.power_feature.as_deref().unwrap_or("the power feature")), &bars))
            table.data {
                caption { "Usage buckets" }
                thead { tr { th scope="col" { "Monthly uses" } th scope="col" { "Decided" } th scope="col" { "Renewed" } th scope="col" { "Observed rate" } th scope="col" { "Prior rate" } th scope="col" { "Expected rate" } th scope="col" { "95% interval" } th scope="col" { "Tier" } } }
                tbody { @for b in &sm_model.buckets { tr {
                    th scope="row" { (b.label) } td.num { (b.decided) } td.num { (b.renewed) } td.num { (percent(b.observed_rate)) }
                    td.num { (percent(Some(b.prior_rate))) } td.num { (percent(Some(b.renewal_rate))) }
                    td.num { (percent(Some(b.interval_low))) "–" (percent(Some(b.interval_high))) } td { (tier_badge(Some(&b.tier))) }
                } } }
            }
            div.scroll { table.data id="ranking" {
                caption { "Feature ranking: how well each feature's monthly use separates renewals from churn" }
                thead { tr { th scope="col" { "Rank" } th scope="col" { "Feature" } th scope="col" { "AUC" } th scope="col" { "ARR-weighted AUC" } th scope="col" { "Renewal rate, users" } th scope="col" { "non-users" } th scope="col" { "Lift" } th scope="col" { "Note" } } }
                tbody { @for i in &sm_model.indicators { tr class=[i.power_feature.then_some("power")] {
                    td.num { (i.rank) } th scope="row" { (i.feature) } td.num { (number(i.auc, 3)) } td.num { (number(i.arr_weighted_auc, 3)) }
                    td.num { (percent(i.renewal_rate_users)) } td.num { (percent(i.renewal_rate_non_users)) } td.num { (number(i.lift, 2)) } td { (i.warning.as_deref().unwrap_or("")) }
                } } }
            } }
            h2 { "Model history" }
            table.data {
                thead { tr { th scope="col" { "Model" } th scope="col" { "Trained as of" } th scope="col" { "Reason" } th scope="col" { "Decided renewals" } th scope="col" { "Status" } th scope="col" { "Held-out test" } th scope="col" { "Power features" } } }
                tbody { @for m in history.iter().rev() { tr {
                    td.num { (m["id"]) } td { (value_text(Some(&m["as_of"]))) } td { (value_text(Some(&m["reason"]))) } td.num { (m["decided_renewals"]) }
                    td data-field="model-status" { (m["status"].as_str().unwrap_or("promoted")) } td { (m["gate"]["reason"].as_str().unwrap_or("–")) }
                    td { @for (s, v) in m["segments"].as_object().into_iter().flatten() { (s) ": " (v["power_feature"].as_str().unwrap_or("none")) br; } }
                } } }
            }
            h2 { "Backtest" }
            @match &backtest {
                None => {
                    form method="get" action="/indicators" {
                        input type="hidden" name="segment" value=(segment);
                        label { "Train on renewals decided before " input type="date" name="backtest" value=((today - Duration::days(365)).to_string()); }
                        " and score the next 365 days. "
                        button type="submit" { "Run backtest" }
                    }
                }
                Some(report) => (backtest_table(report, &segment)),
            }
        },
    ))
}

fn backtest_table(report: &Value, segment: &str) -> Markup {
    let rows: Vec<&Value> = report["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let chosen = rows
        .iter()
        .find(|s| s["segment"] == segment)
        .or_else(|| rows.iter().find(|s| s["segment"] == "all"));
    // Observed renewal rate per tier (with its 95% interval) beside what the tier predicted.
    let bars: Vec<RateBar> = chosen
        .and_then(|s| s["calibration"].as_array())
        .into_iter()
        .flatten()
        .filter(|c| c["decided"].as_u64().unwrap_or(0) > 0)
        .map(|c| RateBar {
            label: format!(
                "{} (predicted {})",
                c["tier"].as_str().unwrap_or(""),
                percent(c["predicted_renewal_rate"].as_f64())
            ),
            rate: c["observed_renewal_rate"].as_f64(),
            low: c["observed_low"].as_f64(),
            high: c["observed_high"].as_f64(),
            count: c["decided"].as_u64().unwrap_or(0),
            tier: c["tier"].as_str().map(str::to_string),
        })
        .collect();
    html! {
        p { "Trained before " (value_text(Some(&report["as_of"]))) ", scored on data through " (value_text(Some(&report["scored_with_data_through"]))) ", renewals decided in the next " (report["horizon_days"]) " days." }
        table.data id="backtest" {
            thead { tr {
                th scope="col" { "Segment" } th scope="col" { "Decided" } th scope="col" { "AUC expected rate" } th scope="col" { "AUC score" }
                th scope="col" { "AUC logins (baseline)" } th scope="col" { "Top-decile lift" } th scope="col" { "Brier skill (score)" }
                th scope="col" { "Calibration error" } th scope="col" { "Largest tier" }
            } }
            tbody { @for s in &rows { tr {
                th scope="row" { (value_text(Some(&s["segment"]))) } td.num { (s["decided"]) }
                td.num { (number(s["auc_expected_renewal_rate"].as_f64(), 3)) } td.num { (number(s["auc_health_score"].as_f64(), 3)) }
                td.num { (number(s["auc_logins_per_user_week"].as_f64(), 3)) } td.num { (number(s["top_decile_lift"].as_f64(), 2)) }
                td.num { (number(s["brier_skill_health_score"].as_f64(), 3)) } td.num { (number(s["calibration_error"].as_f64(), 3)) }
                td.num { (percent(s["largest_tier_share"].as_f64())) }
            } } }
        }
        @if let Some(s) = chosen {
            (charts::rates(&format!("Segment {}: observed renewal rate per tier (95% interval) against the tier's prediction", s["segment"].as_str().unwrap_or("–")), &bars))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct OutcomesQuery {
    interval: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn outcomes(
    user: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<OutcomesQuery>,
) -> PageResult {
    let today = crate::web::metrics::today();
    let quarter_start = today
        .with_day(1)
        .and_then(|d| d.with_month(((d.month() - 1) / 3) * 3 + 1))
        .expect("a quarter start exists");
    let to = crate::web::metrics::date_param("to", query.to.as_deref(), quarter_start)?;
    let from =
        crate::web::metrics::date_param("from", query.from.as_deref(), to - Months::new(12))?;
    if from >= to || (to - from).num_days() > crate::web::metrics::OUTCOME_DAYS_MAX {
        return Err(PageError::bad_request(
            "from: must be before `to`, at most 20 years apart",
        ));
    }
    let interval_name = query.interval.clone().unwrap_or_else(|| "quarter".into());
    let interval = Interval::parse(&interval_name).ok_or_else(|| {
        PageError::bad_request(format!(
            "interval: {interval_name:?} is not whole, month or quarter"
        ))
    })?;
    let (all, by_segment, headline) = with_source(&state, move |source, s| {
        Ok((
            read::outcomes(source, from, to, interval, false, s.currency)?,
            read::outcomes(source, from, to, interval, true, s.currency)?,
            headline(source, today, s)?,
        ))
    })
    .await?;
    let currency = state.currency.report.clone();
    let labels: Vec<String> = all.iter().map(period).collect();
    Ok(layout(
        &user,
        "Outcomes",
        "/outcomes",
        html! {
            h1 { "Outcomes" }
            (tiles(&headline, &currency))
            form.filters method="get" action="/outcomes" {
                label { "From" input type="date" name="from" value=(from.to_string()); }
                label { "To (exclusive)" input type="date" name="to" value=(to.to_string()); }
                label { "Per" select name="interval" { @for i in ["month", "quarter", "whole"] { option value=(i) selected[interval_name == i] { (i) } } } }
                button type="submit" { "Apply" }
            }
            (charts::line("Retention per period", &labels, &[
                Series { label: "NRR (net revenue retention)".into(), class: "s1", values: all.iter().map(|r| r["nrr"].as_f64()).collect() },
                Series { label: "GRR (gross revenue retention)".into(), class: "s2", values: all.iter().map(|r| r["grr"].as_f64()).collect() },
                Series { label: "Logo retention".into(), class: "s3", values: all.iter().map(|r| r["logo_retention"].as_f64()).collect() },
            ], true))
            h2 { "All accounts" }
            (outcome_table(&all, &currency, "outcomes-all"))
            h2 { "By segment" }
            (outcome_table(&by_segment, &currency, "outcomes-segments"))
        },
    ))
}

/// A period's name: "Q4 2025", "2025", or its first and last day.
fn period(row: &Value) -> String {
    let day = |k: &str| {
        row[k]
            .as_str()
            .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
    };
    match (day("from"), day("to")) {
        (Some(from), Some(to)) => crate::format::period(from, to),
        _ => "–".into(),
    }
}

/// The trailing twelve months and the twelve before them, for the headline.
struct Headline {
    arr: f64,
    arr_year_ago: f64,
    now: Option<Value>,
    before: Option<Value>,
}

fn headline(
    source: &(impl crate::store::Activity
          + crate::store::Records
          + crate::store::Models
          + crate::store::History
          + crate::store::Notes
          + ?Sized),
    today: chrono::NaiveDate,
    s: crate::health::model::Settings,
) -> Result<Headline, crate::store::StoreError> {
    let end = today + Duration::days(1);
    let year_ago = end - Months::new(12);
    let arr = |day| -> Result<f64, crate::store::StoreError> {
        Ok(crate::accounts::facts(source, day, &[], s)?
            .iter()
            .map(|f| f.arr)
            .sum())
    };
    let whole = |from, to| -> Result<Option<Value>, crate::store::StoreError> {
        Ok(read::outcomes(source, from, to, Interval::Whole, false, s.currency)?.pop())
    };
    Ok(Headline {
        arr: arr(today)?,
        arr_year_ago: arr(today - Duration::days(365))?,
        now: whole(year_ago, end)?,
        before: whole(year_ago - Months::new(12), year_ago)?,
    })
}

/// ARR, GRR, NRR and logo retention over the trailing twelve months, each with its change
/// from the twelve before.
fn tiles(h: &Headline, currency: &str) -> Markup {
    let rate = |row: &Option<Value>, k: &str| row.as_ref().and_then(|r| r[k].as_f64());
    let change = |now: Option<f64>, before: Option<f64>| match (now, before) {
        (Some(n), Some(b)) => crate::format::points(n - b) + " on the 12 months before",
        _ => "no earlier year to compare".into(),
    };
    let arr_change = if h.arr_year_ago > 0.0 {
        format!(
            "{:+.0}% on a year ago",
            (h.arr / h.arr_year_ago - 1.0) * 100.0
        )
    } else {
        "no ARR a year ago".into()
    };
    html! {
        section.tiles aria-label="Trailing 12 months" {
            div.tile data-field="arr" data-value=(h.arr) { span.label { "ARR now" } strong { (crate::format::money_short(h.arr, currency)) } small { (arr_change) } }
            @for (key, label) in [("grr", "GRR, trailing 12 months"), ("nrr", "NRR, trailing 12 months"), ("logo_retention", "Logo retention, trailing 12 months")] {
                div.tile data-field=(key) data-value=[rate(&h.now, key)] {
                    span.label { (label) }
                    strong { (percent(rate(&h.now, key))) }
                    small { (change(rate(&h.now, key), rate(&h.before, key))) }
                }
            }
        }
    }
}

fn outcome_table(rows: &[Value], currency: &str, id: &str) -> Markup {
    let m = |v: &Value| money(v.as_f64().unwrap_or(0.0), currency);
    html! {
        @if rows.is_empty() { p.empty { "No period in this range." } } @else {
            div.scroll { table.data id=(id) {
                thead {
                    tr {
                        th scope="col" rowspan="2" { "Period" } th scope="col" rowspan="2" { "Segment" } th scope="col" rowspan="2" { "Starting ARR" }
                        th scope="colgroup" colspan="2" { "Renewed" } th scope="col" rowspan="2" { "Expansion" } th scope="col" rowspan="2" { "Contraction" }
                        th scope="colgroup" colspan="2" { "Churned" } th scope="colgroup" colspan="2" { "New" }
                        th scope="col" rowspan="2" { "GRR" } th scope="col" rowspan="2" { "NRR" } th scope="col" rowspan="2" { "Logo retention" }
                    }
                    tr {
                        th scope="col" { "accounts" } th scope="col" { "ARR" } th scope="col" { "accounts" } th scope="col" { "ARR" } th scope="col" { "accounts" } th scope="col" { "ARR" }
                    }
                }
                tbody { @for r in rows { tr {
                    th scope="row" data-from=(r["from"].as_str().unwrap_or("")) { (period(r)) }
                    td { (crate::format::humanize(r["segment"].as_str().unwrap_or("all"))) }
                    td.num { (m(&r["starting_arr"])) }
                    td.num { (r["renewals"]) } td.num { (m(&r["renewals_arr"])) }
                    td.num { (m(&r["expansion_arr"])) }
                    td.num { (m(&r["contraction_arr"])) }
                    td.num { (r["churned_accounts"]) } td.num { (m(&r["churned_arr"])) }
                    td.num { (r["new_accounts"]) } td.num { (m(&r["new_arr"])) }
                    td.num data-field="grr" { (percent(r["grr"].as_f64())) }
                    td.num data-field="nrr" { (percent(r["nrr"].as_f64())) }
                    td.num { (percent(r["logo_retention"].as_f64())) }
                } } }
            } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AsOfQuery {
    as_of: Option<String>,
}

pub async fn onboarding(
    user: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<AsOfQuery>,
) -> PageResult {
    let as_of = as_of(query.as_of.as_deref())?;
    let rows = cached_snapshot(&state, as_of).await?;
    let snapshot = rows.clone();
    let (infos, facts) = with_source(&state, move |source, s| {
        Ok((
            source.accounts()?,
            crate::accounts::facts(source, as_of, &snapshot, s)?,
        ))
    })
    .await?;
    let groups = read::segments(&rows, &infos, false);
    let medians: BTreeMap<&str, &Value> = groups
        .iter()
        .map(|g| (g["segment"].as_str().unwrap_or(""), &g["metrics"]))
        .collect();
    let since = as_of - Duration::days(ONBOARDING_DAYS);
    let mut new: Vec<&crate::accounts::Facts> = facts
        .iter()
        .filter(|f| f.customer_since.is_some_and(|d| d > since && d <= as_of))
        .collect();
    new.sort_by_key(|f| std::cmp::Reverse(f.customer_since));
    let row_of = |id: &str| rows.iter().find(|r| r.account_id == id);
    let measures = ["time_to_provision_days", "time_to_value_days"];
    Ok(layout(
        &user,
        "Onboarding",
        "/onboarding",
        html! {
            h1 { "Onboarding" }
            p { "Accounts whose first contract started in the " (ONBOARDING_DAYS) " days to " (crate::format::day(as_of)) ", against their segment's median." }
            @if new.is_empty() { p.empty { "No account started in that time." } } @else {
                div.scroll { table.data id="onboarding" {
                    thead { tr { th scope="col" { "Account" } th scope="col" { "Segment" } th scope="col" { "Customer since" }
                        th scope="col" { "Days to provision (median)" } th scope="col" { "Days to value (median)" } th scope="col" { "Initial adoption" } } }
                    tbody { @for f in &new {
                        @let row = row_of(&f.account_id);
                        tr data-account=(f.account_id) {
                            th scope="row" { a href=(crate::share::account_path(&f.account_id)) { (f.name) } }
                            td { (f.segment) }
                            td { (super::day_or_dash(f.customer_since)) }
                            @for m in measures {
                                td.num data-field=(m) {
                                    (number(row.and_then(|r| r.number(m)), 0))
                                    " (" (number(medians.get(f.segment.as_str()).and_then(|s| s[m]["median"].as_f64()), 0)) ")"
                                }
                            }
                            td { (value_text(row.and_then(|r| r.get("initial_adoption")).as_ref())) }
                        }
                    } }
                } }
            }
        },
    ))
}
