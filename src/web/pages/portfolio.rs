//! The portfolio: every account with tier, score and trend, ARR, renewal, usage, licence
//! utilisation, open escalations and last contact; filters, sorting, and the most revenue
//! at risk first.

use std::collections::HashMap;

use axum::extract::{Query, State};
use chrono::Duration;
use maud::html;
use serde::Deserialize;

use super::{
    as_of, day_or_dash, instant_day, layout, money, number, percent, tier_badge, PageResult,
    SignedIn,
};
use crate::accounts::{self, Facts};
use crate::web::metrics::{cached_snapshot, with_source};
use crate::web::AppState;

/// Most rows one page lists.
pub const ROWS_MAX: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    segment: Option<String>,
    plan: Option<String>,
    /// A CSM id, `mine` or `all` (default: `mine` for a CSM user, else `all`).
    csm: Option<String>,
    tier: Option<String>,
    /// `top` for accounts without a parent, or an account id for it and its children.
    parent: Option<String>,
    q: Option<String>,
    /// `current` (default: a contract in force, or a child with one), `former` or `all`.
    status: Option<String>,
    sort: Option<String>,
    as_of: Option<String>,
}

const SORTS: &[(&str, &str)] = &[
    ("risk", "Revenue at risk"),
    ("arr", "ARR"),
    ("score", "Health score (lowest first)"),
    ("renewal", "Renewal date"),
    ("utilization", "Licence utilisation (lowest first)"),
    ("name", "Name"),
];

fn trend(facts: &Facts) -> (&'static str, &'static str) {
    let now = facts.health.as_ref().and_then(|h| h.score);
    let before = facts.week_before.as_ref().and_then(|h| h.score);
    match (now, before) {
        (Some(now), Some(before)) if now - before >= 2.0 => ("▲", "up"),
        (Some(now), Some(before)) if before - now >= 2.0 => ("▼", "down"),
        (Some(_), Some(_)) => ("▶", "flat"),
        _ => ("", "none"),
    }
}

// Over 100 lines: Filters, sorting and the table in page order; issue 30 rebuilds triage.
#[allow(clippy::too_many_lines)]
pub async fn page(
    user: SignedIn,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> PageResult {
    let as_of = as_of(filters.as_of.as_deref())?;
    let rows = cached_snapshot(&state, as_of).await?;
    let since = as_of - Duration::days(7);
    let snapshot = rows.clone();
    let (all, changes, csms, infos) = with_source(&state, move |source, s| {
        Ok((
            accounts::facts(source, as_of, &snapshot, s)?,
            source.tier_changes(since, None)?,
            accounts::csms(source)?,
            source.accounts()?,
        ))
    })
    .await?;
    let metrics: HashMap<&str, &crate::metrics::Row> =
        rows.iter().map(|r| (r.account_id.as_str(), r)).collect();
    let changed: HashMap<&str, &crate::store::Change> =
        changes.iter().map(|c| (c.account_id.as_str(), c)).collect();

    let owner = filters.csm.clone().unwrap_or_else(|| {
        if user.user.csm_id.is_some() {
            "mine".into()
        } else {
            "all".into()
        }
    });
    let owner_id = match owner.as_str() {
        "all" => None,
        "mine" => Some(user.user.csm_id.clone().unwrap_or_default()),
        id => Some(id.to_string()),
    };
    let parent_ids: Vec<String> = match filters.parent.as_deref() {
        None | Some("") | Some("top") => Vec::new(),
        Some(id) => crate::store::subtree(&infos, id),
    };
    let q = filters.q.as_deref().unwrap_or("").trim().to_lowercase();
    let status = filters.status.clone().unwrap_or_else(|| "current".into());
    let in_force = |f: &Facts| f.renewal.is_some() || f.arr > 0.0;
    let current: std::collections::HashSet<&str> = all
        .iter()
        .filter(|f| {
            in_force(f)
                || all
                    .iter()
                    .any(|c| c.parent_id.as_deref() == Some(f.account_id.as_str()) && in_force(c))
        })
        .map(|f| f.account_id.as_str())
        .collect();
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    let mut shown: Vec<&Facts> = all
        .iter()
        .filter(|f| {
            empty(&filters.segment) || filters.segment.as_deref() == Some(f.segment.as_str())
        })
        .filter(|f| empty(&filters.plan) || filters.plan.as_deref() == f.plan.as_deref())
        .filter(|f| owner_id.is_none() || owner_id.as_deref() == f.csm_id.as_deref())
        .filter(|f| {
            empty(&filters.tier)
                || filters.tier.as_deref() == f.health.as_ref().and_then(|h| h.tier.as_deref())
        })
        .filter(|f| match filters.parent.as_deref() {
            None | Some("") => true,
            Some("top") => f.parent_id.is_none(),
            Some(_) => parent_ids.contains(&f.account_id),
        })
        .filter(|f| match status.as_str() {
            "all" => true,
            "former" => !current.contains(f.account_id.as_str()),
            _ => current.contains(f.account_id.as_str()),
        })
        .filter(|f| {
            q.is_empty()
                || f.name.to_lowercase().contains(&q)
                || f.account_id.to_lowercase().contains(&q)
        })
        .collect();
    let utilization = |f: &Facts| {
        metrics
            .get(f.account_id.as_str())
            .and_then(|m| m.license_utilization)
    };
    let sort = filters.sort.clone().unwrap_or_else(|| "risk".into());
    match sort.as_str() {
        "arr" => shown.sort_by(|a, b| b.arr.total_cmp(&a.arr)),
        "score" => shown.sort_by(|a, b| score(a).total_cmp(&score(b))),
        "renewal" => shown.sort_by_key(|f| f.renewal.unwrap_or(chrono::NaiveDate::MAX)),
        "utilization" => shown.sort_by(|a, b| {
            utilization(a)
                .unwrap_or(f64::MAX)
                .total_cmp(&utilization(b).unwrap_or(f64::MAX))
        }),
        "name" => shown.sort_by(|a, b| a.name.cmp(&b.name)),
        _ => shown.sort_by(|a, b| {
            b.revenue_at_risk()
                .total_cmp(&a.revenue_at_risk())
                .then(b.arr.total_cmp(&a.arr))
        }),
    }
    let total = shown.len();
    shown.truncate(ROWS_MAX);
    let currency = state.currency.report.clone();
    let at_risk: f64 = shown.iter().map(|f| f.revenue_at_risk()).sum();
    let arr: f64 = shown.iter().map(|f| f.arr).sum();
    let mut segments: Vec<&str> = all.iter().map(|f| f.segment.as_str()).collect();
    segments.sort();
    segments.dedup();
    let mut plans: Vec<&str> = all.iter().filter_map(|f| f.plan.as_deref()).collect();
    plans.sort();
    plans.dedup();
    let parents: Vec<&Facts> = all
        .iter()
        .filter(|f| {
            all.iter()
                .any(|c| c.parent_id.as_deref() == Some(f.account_id.as_str()))
        })
        .collect();
    let selected = |v: &Option<String>, option: &str| v.as_deref() == Some(option);

    Ok(layout(
        &user,
        "Portfolio",
        "/portfolio",
        html! {
            h1 { "Portfolio" }
            form.filters method="get" action="/portfolio" aria-label="Filter accounts" {
                label { "Search" input type="search" name="q" value=(filters.q.as_deref().unwrap_or("")); }
                label { "Segment" select name="segment" {
                    option value="" { "all" }
                    @for s in &segments { option value=(s) selected[selected(&filters.segment, s)] { (s) } }
                } }
                label { "Plan" select name="plan" {
                    option value="" { "all" }
                    @for p in &plans { option value=(p) selected[selected(&filters.plan, p)] { (p) } }
                } }
                label { "CSM" select name="csm" {
                    option value="all" selected[owner == "all"] { "everyone" }
                    @if user.user.csm_id.is_some() { option value="mine" selected[owner == "mine"] { "my accounts" } }
                    @for (id, name) in &csms { option value=(id) selected[owner == *id] { (name) } }
                } }
                label { "Tier" select name="tier" {
                    option value="" { "all" }
                    @for t in ["red", "orange", "yellow", "green"] { option value=(t) selected[selected(&filters.tier, t)] { (t) } }
                } }
                label { "Hierarchy" select name="parent" {
                    option value="" { "all accounts" }
                    option value="top" selected[selected(&filters.parent, "top")] { "top-level only" }
                    @for p in &parents { option value=(p.account_id) selected[selected(&filters.parent, &p.account_id)] { (p.name) " and children" } }
                } }
                label { "Customers" select name="status" {
                    @for (key, label) in [("current", "current"), ("former", "former"), ("all", "all")] { option value=(key) selected[status == key] { (label) } }
                } }
                label { "Sort" select name="sort" {
                    @for (key, label) in SORTS { option value=(key) selected[sort == *key] { (label) } }
                } }
                button type="submit" { "Apply" }
            }
            p.summary {
                span data-field="count" { (total) } " accounts · ARR " (money(arr, &currency)) " · revenue at risk " strong { (money(at_risk, &currency)) }
                @if total > ROWS_MAX { " · showing the first " (ROWS_MAX) "; filter to narrow" }
            }
            @if shown.is_empty() {
                p.empty { "No account matches these filters." }
            } @else {
                div.scroll {
                    table.data id="portfolio" {
                        thead { tr {
                            th scope="col" { "Account" } th scope="col" { "Segment" } th scope="col" { "Tier" } th scope="col" { "Score" }
                            th scope="col" { "ARR" } th scope="col" { "At risk" } th scope="col" { "Renewal" } th scope="col" { "Usage" }
                            th scope="col" { "Licences used" } th scope="col" { "Escalations" } th scope="col" { "Last contact" } th scope="col" { "CSM" }
                        } }
                        tbody {
                            @for f in &shown {
                                @let m = metrics.get(f.account_id.as_str());
                                @let change = changed.get(f.account_id.as_str());
                                @let (arrow, direction) = trend(f);
                                tr data-account=(f.account_id) class=[change.map(|_| "changed")] {
                                    th scope="row" {
                                        a href=(crate::share::account_path(&f.account_id)) { (f.name) }
                                        @if let Some(c) = change {
                                            @let title = if c.cause == "model" { "tier changed in the last 7 days with a new health model" } else { "tier changed in the last 7 days" };
                                            span.badge title=(title) data-cause=(c.cause) { (c.from) " → " (c.to) @if c.cause == "model" { " (model)" } }
                                        }
                                    }
                                    td data-field="segment" { (f.segment) }
                                    td data-field="tier" { (tier_badge(f.health.as_ref().and_then(|h| h.tier.as_deref()))) }
                                    td data-field="health_score" data-value=[f.health.as_ref().and_then(|h| h.score)] {
                                        (number(f.health.as_ref().and_then(|h| h.score), 0))
                                        " " span class=(format!("trend trend-{direction}")) aria-label=(format!("trend {direction}")) { (arrow) }
                                    }
                                    td.num data-field="arr" data-value=(f.arr) { (money(f.arr, &currency)) }
                                    td.num { (money(f.revenue_at_risk(), &currency)) }
                                    td data-field="renewal" { (day_or_dash(f.renewal)) }
                                    td data-field="usage_frequency" { (m.map_or("–", |m| m.usage_frequency.as_str())) }
                                    td.num data-field="license_utilization" data-value=[m.and_then(|m| m.license_utilization)] { (percent(m.and_then(|m| m.license_utilization))) }
                                    td.num data-field="escalations_open" { (number(m.map(|m| m.escalations_open as f64), 0)) }
                                    td { @match &f.last_contact { Some(t) => (instant_day(t)), None => "–" } }
                                    td { (f.csm_name.as_deref().unwrap_or("–")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn score(f: &Facts) -> f64 {
    f.health.as_ref().and_then(|h| h.score).unwrap_or(f64::MAX)
}
