//! Account 360, what matters first: the header, why the account is in its tier and what
//! to do next (`why`), its tasks, the activity timeline (`timeline`), then the score's
//! breakdown, charts over time, usage, features, onboarding and support, and the raw
//! records and events folded away.

pub mod people;
mod timeline;
mod why;

use axum::extract::{Path, Query, State};
use chrono::{Duration, NaiveDate};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::charts::{self, Series};
use super::{
    as_of, layout, money, number, tier_badge, value_text, PageError, PageResult, SignedIn,
};
use crate::accounts::{self, Facts};
use crate::format;
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
    alerts: Vec<crate::store::AlertRow>,
    tasks: Vec<crate::store::TaskRow>,
    notes: Vec<crate::store::Note>,
    events: Vec<crate::store::RecentEvent>,
    /// Person id -> email, from identify traits.
    emails: std::collections::HashMap<String, String>,
    /// The account's people with their names and roles.
    people: Vec<crate::store::Contact>,
    csrf: String,
    /// The playbooks a CSM may start here, by name.
    playbooks: std::collections::BTreeMap<String, crate::actions::Playbook>,
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
    let csrf = user.csrf.clone();
    let playbooks = state.actions.playbooks_in_force();
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
        let alerts = source.alerts(year_ago, Some(&account), 50)?;
        let mut tasks = source.tasks(
            crate::store::TaskFilter {
                account: Some(&account),
                ..Default::default()
            },
            50,
        )?;
        tasks.retain(|t| t.status != "done");
        let mut notes = source.stored_notes(Some(&account))?;
        notes.sort_by_key(|n| std::cmp::Reverse((n.created_ms, n.id)));
        let events = source.recent_events(&account, EVENTS_LISTED)?;
        // People by their email (from identify traits) where they gave one.
        let mut people: Vec<&str> = events.iter().filter_map(|e| e.user_id.as_deref()).collect();
        people.extend(records_people(&listed));
        people.sort_unstable();
        people.dedup();
        let emails = source.user_emails(&people)?;
        let people = source.account_people(&account)?;
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
            emails,
            people,
            csrf: csrf.clone(),
            playbooks,
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
            (render(&view, &currency, as_of, super::can_write(&user.user)))
            (listening_section(&user, &view, &reasons))
        },
    ))
}

fn field(row: &crate::metrics::Row, name: &str) -> Markup {
    html! { dd data-field=(name) data-value=[row.number(name)] { (format::metric(row, name)) } }
}

// Over 100 lines: The account page's markup in page order: what matters first.
#[allow(clippy::too_many_lines)]
fn render(v: &View, currency: &str, as_of: NaiveDate, writable: bool) -> Markup {
    let f = &v.facts;
    let labels: Vec<String> = v
        .weekly
        .iter()
        .map(|(d, _)| d.format("%-d %b").to_string())
        .collect();
    let col =
        |name: &str| -> Vec<Option<f64>> { v.weekly.iter().map(|(_, r)| r.number(name)).collect() };
    let health = v.health.as_ref();
    let path = crate::share::account_path(&f.account_id);
    html! {
        header.account-head {
            h1 { (f.name) }
            p.muted { "Segment " (format::humanize(&f.segment)) " · plan " (f.plan.as_deref().map_or("–".into(), format::humanize)) " · CSM " (f.csm_name.as_deref().unwrap_or("none")) }
            dl.facts {
                dt { "ARR" } dd data-field="arr" data-value=(f.arr) { (money(f.arr, currency)) }
                dt { "Paid seats" } dd data-field="seats" data-value=(f.seats) { (f.seats) }
                dt { "Renewal" } dd data-field="renewal" { @match f.renewal { Some(d) => (super::renewal_day(d, as_of)), None => "no contract in force" } }
                dt { "Tier" } dd data-field="tier" { (tier_badge(health.and_then(|(_, h)| h.tier.as_deref()))) }
                dt { "Health score" } dd data-field="health_score" data-value=[health.and_then(|(_, h)| h.health_score)] { (number(health.and_then(|(_, h)| h.health_score), 0)) }
                dt { "Last contact" } dd data-field="last_contact" { @match &f.last_contact { Some(t) => (format::instant_day(t)), None => "none logged" } }
            }
            @if v.parent.is_some() || !v.children.is_empty() {
                p {
                    @if let Some(p) = &v.parent { "Part of " a href=(crate::share::account_path(&p.account_id)) { (p.name) } ". " }
                    @if !v.children.is_empty() {
                        "Holds "
                        @for (i, c) in v.children.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href=(crate::share::account_path(&c.account_id)) { (c.name) }
                        }
                        "."
                    }
                }
            }
        }
        (why::card(v, as_of, &path, writable, currency))
        section aria-labelledby="tasks" {
            h2 id="tasks" { "Tasks" }
            @if v.tasks.is_empty() { p.empty { "No open tasks for this account." } }
            ul.tasks { @for t in &v.tasks {
                li data-task=(t.id) {
                    (t.title) " — " (t.status)
                    @if let Some(due) = t.due.as_deref() { ", due " (format::day_text(due)) }
                    @if !t.also.is_empty() {
                        ul.also aria-label="Also fired" { @for reason in &t.also { li { "Also: " (reason) } } }
                    }
                }
            } }
            @if writable {
                form.stack id="new-task" method="post" action=(format!("{path}/tasks")) {
                    (super::csrf_field_value(&v.csrf))
                    label { "New task" input name="title" required maxlength=(crate::actions::TASK_TITLE_CHARS_MAX) placeholder="e.g. Walk the admins through the power feature"; }
                    label { "Due" input type="date" name="due" value=((as_of + Duration::days(crate::web::actions::DEFAULT_DUE_DAYS)).to_string()) min=(as_of.to_string()); }
                    button type="submit" { "Create task" }
                }
                @if !v.playbooks.is_empty() {
                    form.stack id="start-playbook" method="post" action=(format!("{path}/playbooks")) {
                        (super::csrf_field_value(&v.csrf))
                        label { "Or start a playbook (its steps become tasks)" select name="playbook" {
                            @for (name, p) in &v.playbooks {
                                option value=(name) { (format::humanize(name)) " — " (format::count(p.tasks.len() as i64, "step", "steps")) " over " (format::days(i64::from(p.tasks.iter().map(|t| t.due_days).max().unwrap_or(0)))) }
                            }
                        } }
                        button type="submit" { "Start playbook" }
                    }
                }
            }
        }
        section aria-labelledby="activity" {
            h2 id="activity" { "Activity" }
            @if writable {
                form.stack id="log-activity" method="post" action=(format!("{path}/notes")) {
                    (super::csrf_field_value(&v.csrf))
                    div.row {
                        label { "Kind " select name="kind" {
                            @for k in crate::listening::report::ACTIVITY_KINDS { option value=(k) { (format::humanize(k)) } }
                        } }
                        label { "On " input type="date" name="on" value=(chrono::Utc::now().date_naive().to_string()) max=(chrono::Utc::now().date_naive().to_string()); }
                    }
                    label { "What happened (internal: never in the customer's review)" textarea name="text" rows="2" required maxlength=(crate::listening::report::NOTE_CHARS_MAX) {} }
                    button type="submit" { "Log activity" }
                }
            }
            (timeline::list(v))
        }
        (people::section(v, &path, writable))
        section aria-labelledby="health" {
            h2 id="health" { "Health score" }
            @match health {
                None => p.empty { "No health model yet: it is learned once enough renewals and churns are decided (see Indicators)." },
                Some((model, h)) => {
                    p.muted {
                        "Model " (model.id) ", trained " (format::day_text(&model.as_of)) "."
                        @if let Some(note) = h.model_note.as_deref() { " " (note) }
                    }
                    div.scroll { table.data {
                        caption {
                            "What makes up the score ("
                            @match h.score_weights.as_deref() {
                                Some("config") => "weights set by hand in the config: contribution = points x weight / total weight",
                                Some("pooled") => "weights learned from every segment's renewals; contribution = score points against an average account",
                                _ => "weights learned from this segment's renewals; contribution = score points against an average account",
                            }
                            ")"
                        }
                        thead { tr { th scope="col" { "Measure" } th scope="col" { "Value" } th scope="col" { "Points (0-100)" } th scope="col" { "Weight" } th scope="col" { "Contribution" } } }
                        tbody {
                            @for c in &h.components {
                                tr {
                                    th scope="row" { (format::label(&c.measure)) }
                                    td { (format::measure_value(&c.measure, &c.value)) }
                                    td.num { (number(c.points, 0)) }
                                    td.num { (number(Some(c.weight), 2)) }
                                    td.num { (number(c.contribution, 1)) }
                                }
                            }
                        }
                    } }
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
                @let history_labels: Vec<String> = v.history.iter().map(|h| h.date.format("%-d %b").to_string()).collect();
                (charts::line("Health score and expected renewal rate", &history_labels, &[
                    Series { label: "health score / 100".into(), class: "s1", values: v.history.iter().map(|h| h.health_score.map(|s| s / 100.0)).collect() },
                    Series { label: "expected renewal rate".into(), class: "s4", values: v.history.iter().map(|h| h.expected_renewal_rate).collect() },
                ], true))
            }
            @if !v.history.is_empty() {
                p { "Tier by week: "
                    @for h in v.history.iter().rev().step_by(7).collect::<Vec<_>>().into_iter().rev() {
                        span title=(h.date.format("%-d %b %Y")) { (tier_badge(h.tier.as_deref())) } " "
                    }
                }
            }
        }
        section aria-labelledby="usage" {
            h2 id="usage" { "Usage on " (format::day(as_of)) }
            dl.grid {
                @for name in ["usage_frequency", "active_days_14d", "active_minutes_14d", "active_users_14d", "active_users_30d", "dau", "wau", "mau", "logins_per_user_week", "license_utilization", "engagement_score", "features_used_30d", "feature_breadth", "new_features_30d", "transactions_30d", "user_adoption_growth", "rate_of_adoption", "education_events_30d"] {
                    dt { (format::label(name)) } (field(&v.row, name))
                }
            }
        }
        section aria-labelledby="features" {
            h2 id="features" { "Features (last 30 days)" }
            div.two {
                div {
                    h3 { "Used" }
                    @if v.features.is_empty() { p.empty { "No feature used in the last 30 days." } }
                    ul { @for (feature, uses) in &v.features { li { (feature) " — " (format::count(*uses, "use", "uses")) } } }
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
                    dt { (format::label(name)) } (field(&v.row, name))
                }
            }
        }
        section aria-labelledby="support" {
            h2 id="support" { "Support and voice of the customer" }
            dl.grid {
                @for name in ["tickets_opened_90d", "tickets_open", "escalations_open", "median_resolution_hours_90d", "median_first_response_hours_90d", "nps", "csat", "ces", "suggestions_90d"] {
                    dt { (format::label(name)) } (field(&v.row, name))
                }
            }
        }
        section aria-labelledby="records" {
            h2 id="records" { "Records" }
            @for (kind, rows) in &v.records { (record_table(v, kind, rows)) }
            details {
                summary { "Recent events (" (v.events.len()) ")" }
                @if v.events.is_empty() { p.empty { "No events from this account's people." } }
                div.scroll { table.data {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Type" } th scope="col" { "Event" } th scope="col" { "Person" } } }
                    tbody { @for e in &v.events { tr {
                        td { (format::instant_ms(e.timestamp_ms)) } td { (e.kind) } td { (e.event.as_deref().unwrap_or("")) } td { (person(v, e.user_id.as_deref())) }
                    } } }
                } }
            }
        }
    }
}

/// The people the listed records name (tickets' and survey answers' `user_id`).
fn records_people<'a>(records: &'a [(&'static str, Vec<Value>)]) -> Vec<&'a str> {
    records
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .filter_map(|r| r.get("user_id").and_then(Value::as_str))
        .collect()
}

/// A person as people know them: their email where they gave one, else their id.
fn person(v: &View, id: Option<&str>) -> Markup {
    match id {
        None => html! { "–" },
        Some(id) => {
            let contact = v.people.iter().find(|c| c.user_id == id);
            let email = contact
                .and_then(|c| c.email.as_ref())
                .or_else(|| v.emails.get(id));
            match (contact.and_then(|c| c.name.as_ref()), email) {
                (Some(name), _) => {
                    html! { span.person title=(email.map_or(id, |e| e.as_str())) data-person=(id) { (name) } }
                }
                (None, Some(email)) => {
                    html! { span.person title=(id) data-person=(id) { (email) } }
                }
                (None, None) => html! { span.person data-person=(id) { (id) } },
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
        section aria-labelledby="listening" {
            h2 id="listening" { "Churn and downgrade reasons" }
            @if ended.is_empty() { p.empty { "No contract term has ended yet." } }
            @for s in &ended {
                @let sid = s["subscription_id"].as_str().unwrap_or("");
                form.inline method="post" action=(format!("{}/reason", crate::share::account_path(id))) {
                    (super::csrf_field(user))
                    input type="hidden" name="subscription" value=(sid);
                    span { (sid) " (" (s["outcome"].as_str().unwrap_or("")) ", ended " (value_text(s.get("end_date"))) ")" }
                    label { "Reason " select name="reason" disabled[!writable] {
                        option value="" { "none" }
                        @for r in reasons { option value=(r) selected[s["reason"].as_str() == Some(r.as_str())] { (format::humanize(r)) } }
                    } }
                    label { "Feedback " input name="feedback" value=(s["feedback"].as_str().unwrap_or("")) disabled[!writable]; }
                    @if writable { button type="submit" { "Save" } }
                }
            }
        }
    }
}

/// Columns that hold a code from a short list (a KPI's name, a survey's kind, a ticket's
/// type): shown as words.
const CODE_COLUMNS: &[(&str, &str)] = &[
    ("kpis", "name"),
    ("survey_responses", "kind"),
    ("tickets", "type"),
    ("tickets", "priority"),
    ("suggestions", "category"),
    ("subscriptions", "outcome"),
    ("subscriptions", "reason"),
];

fn cell(v: &View, kind: &str, column: &str, value: Option<&Value>) -> Markup {
    if column == "user_id" {
        return person(v, value.and_then(Value::as_str));
    }
    match value.and_then(Value::as_str) {
        Some(code) if CODE_COLUMNS.contains(&(kind, column)) => match (kind, column) {
            ("survey_responses", "kind") => html! { (format::survey_kind(code)) },
            _ => html! { (format::humanize(code)) },
        },
        _ => value_text(value),
    }
}

/// A kind's newest records as a table of its columns (the account column left out).
fn record_table(v: &View, kind_name: &str, rows: &[Value]) -> Markup {
    let kind = kind(kind_name).expect("invariant: a record kind");
    let columns: Vec<&str> = kind
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| *c != "account_id")
        .collect();
    html! {
        details {
            summary { (format::humanize(kind_name)) " (" (rows.len()) @if rows.len() == RECORDS_LISTED { " newest" } ")" }
            @if rows.is_empty() { p.empty { "None." } } @else {
                div.scroll { table.data {
                    thead { tr { @for c in &columns { th scope="col" { (format::humanize(c)) } } } }
                    tbody { @for r in rows { tr { @for c in &columns { td { (cell(v, kind_name, c, r.get(*c))) } } } } }
                } }
            }
        }
    }
}
