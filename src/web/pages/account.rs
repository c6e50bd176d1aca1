//! Account 360: header, health and its breakdown, charts over time, features used and not,
//! onboarding, tickets, surveys, suggestions, KPIs, revenue history, alerts and raw events.

use axum::extract::{Path, Query, State};
use chrono::{Duration, NaiveDate};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::charts::{self, Series};
use super::{
    as_of, date, layout, money, number, percent, tier_badge, timestamp, value_text, PageError,
    PageResult, SignedIn,
};
use crate::accounts::{self, Facts};
use crate::health::history;
use crate::health::model;
use crate::metrics::read;
use crate::records::kind;
use crate::web::metrics::{cached_snapshot, with_source};
use crate::web::AppState;

/// Weeks of history the charts cover.
const CHART_WEEKS: i64 = 26;
/// Rows listed per record kind.
const RECORDS_LISTED: usize = 20;
/// Raw events listed.
const EVENTS_LISTED: usize = 25;

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    as_of: Option<String>,
}

/// Everything the page shows, read in one go.
struct View {
    facts: Facts,
    parent: Option<Facts>,
    children: Vec<Facts>,
    row: crate::metrics::Row,
    health: Option<(model::Model, model::Assessment)>,
    weekly: Vec<(NaiveDate, crate::metrics::Row)>,
    history: Vec<crate::store::HistoryPoint>,
    /// `[health] tier_hold_days`, to say when a usage tier will show.
    hold_days: u32,
    features: Vec<(String, i64)>,
    unused: Vec<String>,
    records: Vec<(&'static str, Vec<Value>)>,
    changes: Vec<crate::store::Change>,
    alerts: Vec<Value>,
    tasks: Vec<Value>,
    notes: Vec<Value>,
    events: Vec<crate::store::RecentEvent>,
}

// Over 100 lines: Reads every part of the account page; issue 30 rebuilds this page.
#[allow(clippy::too_many_lines)]
pub async fn page(
    user: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<AccountQuery>,
) -> PageResult {
    let as_of = as_of(query.as_of.as_deref())?;
    let peers = cached_snapshot(&state, as_of).await?;
    let account = id.clone();
    let view = with_source(&state, move |source, s| {
        let Some(row) = read::account(
            source, &account, as_of, false, &peers, s.metrics, s.currency,
        )?
        else {
            return Ok(None);
        };
        // The account's own health is assessed below; the family's is not shown.
        let all = accounts::facts(source, as_of, &[], s)?;
        let facts = all
            .iter()
            .find(|f| f.account_id == account)
            .cloned()
            .unwrap_or_default();
        let parent = facts
            .parent_id
            .as_ref()
            .and_then(|p| all.iter().find(|f| &f.account_id == p))
            .cloned();
        let children = all
            .iter()
            .filter(|f| f.parent_id.as_deref() == Some(account.as_str()))
            .cloned()
            .collect();
        let health = match history::model_for(source, Some(as_of))? {
            Some(model) => {
                // The held tier, as the history and the portfolio show it.
                let assessed = history::assess_held(
                    source,
                    &row,
                    &model,
                    crate::metrics::activity::day_number(as_of),
                    s,
                )?;
                Some((model, assessed))
            }
            None => None,
        };
        let days: Vec<NaiveDate> = (0..CHART_WEEKS)
            .rev()
            .map(|w| as_of - Duration::weeks(w))
            .collect();
        let rows =
            read::rows_on(source, &account, &days, s.metrics, s.currency)?.unwrap_or_default();
        let weekly = days.into_iter().zip(rows).collect();
        let history = source.history(&account, as_of - Duration::weeks(CHART_WEEKS), as_of)?;
        let features = accounts::feature_uses(
            source,
            &account,
            as_of - Duration::days(29),
            as_of,
            s.metrics,
        )?;
        let unused = source
            .known_features(s.metrics)?
            .into_iter()
            .filter(|f| !features.iter().any(|(used, _)| used == f))
            .collect();
        let mut listed = Vec::new();
        for (name, order) in [
            ("subscriptions", "start_date"),
            ("tickets", "opened_at"),
            ("survey_responses", "answered_at"),
            ("suggestions", "created_at"),
            ("kpis", "date"),
        ] {
            let kind = kind(name).expect("invariant: a record kind");
            listed.push((
                name,
                source.of_account(kind, &account, order, RECORDS_LISTED)?,
            ));
        }
        let changes = source.tier_changes(as_of - Duration::days(365), Some(&account))?;
        let year_ago = (as_of - Duration::days(365))
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis();
        let alerts = crate::actions::run::alerts(source, year_ago, Some(&account), 50)?;
        let tasks = crate::actions::run::tasks(
            source,
            crate::store::TaskFilter {
                account: Some(&account),
                ..Default::default()
            },
            50,
        )?;
        let notes = crate::listening::report::notes(source, &account)?;
        let events = source.recent_events(&account, EVENTS_LISTED)?;
        let hold_days = s.health.tier_hold_days;
        Ok(Some(View {
            facts,
            parent,
            children,
            row,
            health,
            weekly,
            history,
            hold_days,
            features,
            unused,
            records: listed,
            changes,
            alerts,
            tasks,
            notes,
            events,
        }))
    })
    .await?
    .ok_or_else(|| PageError::not_found(format!("no account {id}")))?;
    let currency = state.currency.report.clone();
    let reasons = state.listening.reasons.clone();
    Ok(layout(
        &user,
        &view.facts.name,
        "/portfolio",
        html! {
            (render(&view, &currency, as_of))
            (listening_section(&user, &view, &reasons))
        },
    ))
}

/// The name people read for a metric (`metrics::MEASURES`).
fn label(name: &str) -> &str {
    crate::metrics::measure(name).map_or(name, |m| m.label)
}

fn field(row: &crate::metrics::Row, name: &str) -> Markup {
    let value = row.get(name);
    html! { dd data-field=(name) data-value=[row.number(name)] { (value_text(value.as_ref())) } }
}

// Over 100 lines: The account page's markup in page order; issue 30 rebuilds this page.
#[allow(clippy::too_many_lines)]
fn render(v: &View, currency: &str, as_of: NaiveDate) -> Markup {
    let f = &v.facts;
    let labels: Vec<String> = v.weekly.iter().map(|(d, _)| d.to_string()).collect();
    let col =
        |name: &str| -> Vec<Option<f64>> { v.weekly.iter().map(|(_, r)| r.number(name)).collect() };
    let health = v.health.as_ref();
    html! {
        header.account-head {
            h1 { (f.name) }
            p.muted { (f.account_id) " · segment " (f.segment) " · plan " (f.plan.as_deref().unwrap_or("–")) " · CSM " (f.csm_name.as_deref().unwrap_or("none")) }
            dl.facts {
                dt { "ARR" } dd data-field="arr" data-value=(f.arr) { (money(f.arr, currency)) }
                dt { "Seats" } dd data-field="seats" data-value=(f.seats) { (f.seats) }
                dt { "Renewal" } dd data-field="renewal" { (date(f.renewal)) }
                dt { "Tier" } dd data-field="tier" { (tier_badge(health.and_then(|(_, h)| h.tier.as_deref()))) }
                dt { "Health score" } dd data-field="health_score" data-value=[health.and_then(|(_, h)| h.health_score)] { (number(health.and_then(|(_, h)| h.health_score), 0)) }
            }
            p {
                @if let Some(p) = &v.parent { "Part of " a href=(crate::share::account_path(&p.account_id)) { (p.name) } ". " }
                @if !v.children.is_empty() {
                    "Children: "
                    @for (i, c) in v.children.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(crate::share::account_path(&c.account_id)) { (c.name) }
                    }
                    "."
                }
                " " a href=(format!("{}/review", crate::share::account_path(&f.account_id))) { "Quarterly review" }
            }
        }
        section aria-labelledby="health" {
            h2 id="health" { "Health" }
            @match health {
                None => p.empty { "No health model yet: it is learned once enough renewals and churns are decided (see Indicators)." },
                Some((model, h)) => {
                    p {
                        "Model " (model.id) " (trained " (model.as_of) ", " (model.reason) ")"
                        @if let Some(note) = h.model_note.as_deref() { " — " (note) }
                        ". Power feature: " strong { (h.power_feature.as_deref().unwrap_or("none")) }
                        ", used " (number(h.power_feature_monthly_uses, 1)) " times a month; accounts like this renewed "
                        strong data-field="expected_renewal_rate" { (percent(h.expected_renewal_rate)) } " of the time."
                        @if h.usage_tier != h.tier && h.usage_tier.is_some() {
                            " Its use of late points to " (tier_badge(h.usage_tier.as_deref())) "; the tier changes once that has held " (v.hold_days) " days."
                        }
                    }
                    table.data {
                        caption {
                            "Score breakdown (band " (h.health_band.as_deref().unwrap_or("–")) "; "
                            @match h.score_weights.as_deref() {
                                Some("config") => "weights set by hand in the config: contribution = points x weight / total weight",
                                Some("pooled") => "weights learned from every segment's renewals: weight = log-odds per standard deviation, contribution = score points against an average value",
                                _ => "weights learned from this segment's renewals: weight = log-odds per standard deviation, contribution = score points against an average value",
                            }
                            ")"
                        }
                        thead { tr { th scope="col" { "Measure" } th scope="col" { "Value" } th scope="col" { "Points (0-100)" } th scope="col" { "Weight" } th scope="col" { "Contribution" } } }
                        tbody {
                            @for c in &h.components {
                                tr {
                                    th scope="row" { (label(&c.measure)) }
                                    td { (value_text(Some(&c.value))) }
                                    td.num { (number(c.points, 0)) }
                                    td.num { (number(Some(c.weight), 2)) }
                                    td.num { (number(c.contribution, 1)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="trends" {
            h2 id="trends" { "Over time (weekly, " (CHART_WEEKS) " weeks)" }
            div.charts {
                (charts::line("Active days (last 14)", &labels, &[Series { label: "active days".into(), class: "s1", values: col("active_days_14d") }], false))
                (charts::line("Active minutes (last 14 days)", &labels, &[Series { label: "active minutes".into(), class: "s2", values: col("active_minutes_14d") }], false))
                (charts::line("Active users (30 days) and seats", &labels, &[
                    Series { label: "active users".into(), class: "s1", values: col("active_users_30d") },
                    Series { label: "seats".into(), class: "s3", values: col("seats") },
                ], false))
                (charts::line("Features used (30 days)", &labels, &[Series { label: "features".into(), class: "s2", values: col("features_used_30d") }], false))
                @let history_labels: Vec<String> = v.history.iter().map(|h| h.date.to_string()).collect();
                (charts::line("Health score and expected renewal rate", &history_labels, &[
                    Series { label: "health score / 100".into(), class: "s1", values: v.history.iter().map(|h| h.health_score.map(|s| s / 100.0)).collect() },
                    Series { label: "expected renewal rate".into(), class: "s4", values: v.history.iter().map(|h| h.expected_renewal_rate).collect() },
                ], true))
            }
            @if !v.history.is_empty() {
                p { "Tier by week: "
                    @for h in v.history.iter().rev().step_by(7).collect::<Vec<_>>().into_iter().rev() {
                        span title=(h.date) { (tier_badge(h.tier.as_deref())) } " "
                    }
                }
            }
        }
        section aria-labelledby="usage" {
            h2 id="usage" { "Usage on " (as_of) }
            dl.grid {
                @for name in ["usage_frequency", "active_days_14d", "active_minutes_14d", "active_users_14d", "active_users_30d", "dau", "wau", "mau", "logins_per_user_week", "license_utilization", "engagement_score", "features_used_30d", "feature_breadth", "new_features_30d", "transactions_30d", "user_adoption_growth", "rate_of_adoption", "education_events_30d"] {
                    dt { (label(name)) } (field(&v.row, name))
                }
            }
        }
        section aria-labelledby="features" {
            h2 id="features" { "Features (last 30 days)" }
            div.two {
                div {
                    h3 { "Used" }
                    @if v.features.is_empty() { p.empty { "No feature used in the last 30 days." } }
                    ul { @for (feature, uses) in &v.features { li { (feature) " — " (uses) " uses" } } }
                }
                div {
                    h3 { "Not used yet: educate them on" }
                    @if v.unused.is_empty() { p.empty { "They use every feature we have seen used." } }
                    ul data-field="unused_features" { @for feature in &v.unused { li { (feature) } } }
                }
            }
        }
        section aria-labelledby="onboarding" {
            h2 id="onboarding" { "Onboarding" }
            dl.grid {
                @for name in ["time_to_provision_days", "time_to_value_days", "initial_adoption", "go_live_recommend_rate"] {
                    dt { (label(name)) } (field(&v.row, name))
                }
            }
        }
        section aria-labelledby="support" {
            h2 id="support" { "Support and voice of the customer" }
            dl.grid {
                @for name in ["tickets_opened_90d", "tickets_open", "escalations_open", "median_resolution_hours_90d", "median_first_response_hours_90d", "nps", "csat", "ces", "suggestions_90d"] {
                    dt { (label(name)) } (field(&v.row, name))
                }
            }
            @for (kind, rows) in &v.records { (record_table(kind, rows)) }
        }
        section aria-labelledby="alerts" {
            h2 id="alerts" { "Alerts and tasks" }
            h3 { "Tasks" }
            @if v.tasks.is_empty() { p.empty { "No tasks for this account." } }
            ul { @for t in &v.tasks { li { (t["title"].as_str().unwrap_or("")) " — " (t["status"].as_str().unwrap_or("")) ", due " (t["due"].as_str().unwrap_or("–")) } } }
            h3 { "Alerts (last year)" }
            @if v.alerts.is_empty() { p.empty { "No alert fired." } }
            ul { @for a in &v.alerts { li { (timestamp(a["fired_at"].as_str().unwrap_or(""))) ": " (a["rule"].as_str().unwrap_or("")) " (" (a["reason"].as_str().unwrap_or("")) ")" } } }
            h3 { "Tier changes (last year)" }
            @if v.changes.is_empty() { p.empty { "No tier change in the last year." } }
            ul { @for c in &v.changes { li { (c.date) ": tier " (tier_badge(Some(&c.from))) " → " (tier_badge(Some(&c.to))) } } }
        }
        section aria-labelledby="events" {
            h2 id="events" { "Recent events" }
            @if v.events.is_empty() { p.empty { "No events from this account's people." } }
            table.data {
                thead { tr { th scope="col" { "When" } th scope="col" { "Type" } th scope="col" { "Event" } th scope="col" { "User" } } }
                tbody { @for e in &v.events { tr {
                    td { (timestamp(&crate::ingest::format_timestamp(e.timestamp_ms))) } td { (e.kind) } td { (e.event.as_deref().unwrap_or("")) } td { (e.user_id.as_deref().unwrap_or("")) }
                } } }
            }
        }
    }
}

/// Notes (with a form) and the churn reason of each ended term (editable).
fn listening_section(user: &SignedIn, v: &View, reasons: &[String]) -> Markup {
    let id = &v.facts.account_id;
    let writable = super::can_write(&user.user);
    let ended: Vec<&Value> = v
        .records
        .iter()
        .find(|(k, _)| *k == "subscriptions")
        .map(|(_, rows)| {
            rows.iter()
                .filter(|s| s["outcome"] == "churned" || s["outcome"] == "renewed")
                .collect()
        })
        .unwrap_or_default();
    html! {
        section aria-labelledby="notes" {
            h2 id="notes" { "Notes" }
            @if writable {
                form.stack method="post" action=(format!("{}/notes", crate::share::account_path(id))) {
                    (super::csrf_field(user))
                    label { "Add a note (internal: never in the customer's review)" textarea name="text" rows="2" required maxlength=(crate::listening::report::NOTE_CHARS_MAX) {} }
                    button type="submit" { "Add note" }
                }
            }
            @if v.notes.is_empty() { p.empty { "No notes yet." } }
            ul id="notes-list" { @for n in &v.notes { li { (timestamp(n["created_at"].as_str().unwrap_or(""))) " " strong { (n["author"].as_str().unwrap_or("")) } ": " (n["text"].as_str().unwrap_or("")) } } }
        }
        section aria-labelledby="listening" {
            h2 id="listening" { "Churn and downgrade reasons" }
            @if ended.is_empty() { p.empty { "No ended term." } }
            @for s in &ended {
                @let sid = s["subscription_id"].as_str().unwrap_or("");
                form.inline method="post" action=(format!("{}/reason", crate::share::account_path(id))) {
                    (super::csrf_field(user))
                    input type="hidden" name="subscription" value=(sid);
                    span { (sid) " (" (s["outcome"].as_str().unwrap_or("")) ", ended " (s["end_date"].as_str().unwrap_or("")) ")" }
                    label { "Reason " select name="reason" disabled[!writable] {
                        option value="" { "none" }
                        @for r in reasons { option value=(r) selected[s["reason"].as_str() == Some(r.as_str())] { (r.replace('_', " ")) } }
                    } }
                    label { "Feedback " input name="feedback" value=(s["feedback"].as_str().unwrap_or("")) disabled[!writable]; }
                    @if writable { button type="submit" { "Save" } }
                }
            }
        }
    }
}

/// A kind's newest records as a table of its columns (the account column left out).
fn record_table(kind_name: &str, rows: &[Value]) -> Markup {
    let kind = kind(kind_name).expect("invariant: a record kind");
    let columns: Vec<&str> = kind
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| *c != "account_id")
        .collect();
    let title = kind_name.replace('_', " ");
    html! {
        h3 { (title[..1].to_uppercase()) (title[1..]) }
        @if rows.is_empty() { p.empty { "None." } } @else {
            div.scroll { table.data {
                thead { tr { @for c in &columns { th scope="col" { (c.replace('_', " ")) } } } }
                tbody { @for r in rows { tr { @for c in &columns { td { (value_text(r.get(*c))) } } } } }
            } }
        }
    }
}
