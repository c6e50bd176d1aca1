//! The inbox: the CSM's tasks (done, snooze, reopen), the alerts and the tier changes of
//! the last 30 days; a CSM sees their own accounts unless they ask for everyone's.

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{
    can_write, csrf_field, instant, layout, money, tier_badge, PageError, PageResult, SignedIn,
};
use crate::actions::run;
use crate::store::TaskFilter;
use crate::web::metrics::{today, with_source};
use crate::web::AppState;

/// Days of alerts and tier changes the inbox lists.
pub const INBOX_DAYS: i64 = 30;
/// Days a "snooze" button puts a task away for.
pub const SNOOZE_DAYS: i64 = 7;

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    csm: Option<String>,
}

// Over 100 lines: The inbox's three lists in page order; issue 30 rebuilds the inbox.
#[allow(clippy::too_many_lines)]
pub async fn page(
    user: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<InboxQuery>,
) -> PageResult {
    let today = today();
    let since = today - Duration::days(INBOX_DAYS);
    let since_ms = since
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis();
    let mine = query.csm.as_deref() != Some("all") && user.user.csm_id.is_some();
    let csm = if mine { user.user.csm_id.clone() } else { None };
    let (changes, facts, actions, tiers) = with_source(&state, move |source, s| {
        let actions = (
            run::tasks(
                source,
                TaskFilter {
                    csm: csm.as_deref(),
                    ..TaskFilter::default()
                },
                500,
            )?,
            run::alerts(source, since_ms, None, 500)?,
        );
        // Today's stored tiers (the daily history), for the tasks' priority.
        let tiers: std::collections::HashMap<String, String> = source
            .day_history(crate::metrics::activity::day_number(today))?
            .into_iter()
            .filter_map(|(account, h)| Some((account, h.tier?)))
            .collect();
        Ok((
            source.tier_changes(since, None)?,
            crate::accounts::facts(source, today, &[], s)?,
            actions,
            tiers,
        ))
    })
    .await?;
    let by_id: std::collections::HashMap<&str, &crate::accounts::Facts> =
        facts.iter().map(|f| (f.account_id.as_str(), f)).collect();
    let fact = |account: &str| by_id.get(account).copied();
    let own = |account: &str| !mine || fact(account).is_some_and(|f| f.csm_id == user.user.csm_id);
    let name = |account: &str| fact(account).map_or(account.to_string(), |f| f.name.clone());
    let currency = state.currency.report.clone();
    // Only changes the account's use caused: a new model's re-tiering is no news about a
    // customer (the Indicators page says what the model changed).
    let mine_all: Vec<&crate::store::Change> = changes
        .iter()
        .rev()
        .filter(|c| own(&c.account_id))
        .collect();
    let by_model = mine_all.iter().filter(|c| c.cause == "model").count();
    let changes: Vec<&crate::store::Change> = mine_all
        .into_iter()
        .filter(|c| c.cause != "model")
        .collect();
    let (mut tasks, alerts) = actions;
    let priority_of = |t: &Value| {
        let account = t["account_id"].as_str().unwrap_or("");
        let overdue = t["status"] == "open"
            && t["due"]
                .as_str()
                .is_some_and(|d| d < today.to_string().as_str());
        let renewal = fact(account)
            .and_then(|f| f.renewal)
            .map(|r| (r - today).num_days());
        priority(tiers.get(account).map(String::as_str), renewal, overdue)
    };
    // Open first, then by priority, then by due day (the store's order within).
    tasks.sort_by_cached_key(|t| (t["status"] == "done", priority_of(t)));
    let alerts: Vec<&Value> = alerts
        .iter()
        .filter(|a| own(a["account_id"].as_str().unwrap_or("")))
        .collect();
    let writable = can_write(&user.user);
    Ok(layout(
        &user,
        "Inbox",
        "/inbox",
        html! {
            h1 { "Inbox" }
            p { @if mine { "Your accounts (" a href="/inbox?csm=all" { "show everyone's" } ")." } @else { "Everyone's accounts." } }
            section aria-labelledby="tasks" {
                h2 id="tasks" { "Tasks" }
                @if tasks.is_empty() { p.empty { "No tasks. Rules and playbooks put them here." } } @else {
                    div.scroll { table.data.cards id="tasks-table" {
                        thead { tr { th scope="col" { "Priority" } th scope="col" { "Due" } th scope="col" { "Task" } th scope="col" { "Account" } th scope="col" { "ARR" } th scope="col" { "Status" } th scope="col" { span.sr { "Actions" } } } }
                        tbody { @for t in &tasks {
                            @let id = t["id"].as_i64().unwrap_or_default();
                            @let status = t["status"].as_str().unwrap_or("");
                            @let overdue = status == "open" && t["due"].as_str().is_some_and(|d| d < today.to_string().as_str());
                            @let account = t["account_id"].as_str().unwrap_or("");
                            @let p = priority_of(t);
                            tr data-task=(id) class=[overdue.then_some("changed")] {
                                td data-field="priority" data-label="Priority" data-value=(p.name()) { span class=(format!("priority priority-{}", p.name())) { (p.label()) } }
                                td data-label="Due" { @match t["due"].as_str() { Some(d) => (crate::format::day_text(d)), None => "–" } @if overdue { " (overdue)" } }
                                th scope="row" {
                                    (t["title"].as_str().unwrap_or(""))
                                    @if let Some(also) = t["also"].as_array().filter(|a| !a.is_empty()) {
                                        ul.also aria-label="Also fired" { @for reason in also { li { "Also: " (reason.as_str().unwrap_or("")) } } }
                                    }
                                }
                                td data-label="Account" { a href=(crate::share::account_path(account)) { (t["account_name"].as_str().unwrap_or("")) } }
                                td.num data-field="arr" data-label="ARR" data-value=(fact(account).map_or(0.0, |f| f.arr)) { (money(fact(account).map_or(0.0, |f| f.arr), &currency)) }
                                td data-field="status" data-label="Status" { (status) @if let Some(until) = t["snoozed_until"].as_str() { " until " (crate::format::day_text(until)) } }
                                td { @if writable {
                                    form.inline method="post" action=(format!("/inbox/tasks/{id}")) {
                                        (csrf_field(&user))
                                        @if status != "done" { button type="submit" name="action" value="done" { "Done" } }
                                        @if status == "open" { button type="submit" name="action" value="snooze" { "Snooze " (SNOOZE_DAYS) " days" } }
                                        @if status != "open" { button type="submit" name="action" value="open" { "Reopen" } }
                                    }
                                } }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="alerts" {
                h2 id="alerts" { "Alerts (last " (INBOX_DAYS) " days)" }
                @if alerts.is_empty() { p.empty { "No alert fired." } } @else {
                    table.data id="alerts-table" {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Account" } th scope="col" { "Rule" } th scope="col" { "Why" } } }
                        tbody { @for a in &alerts { tr {
                            td { (instant(a["fired_at"].as_str().unwrap_or(""))) }
                            th scope="row" { a href=(crate::share::account_path(a["account_id"].as_str().unwrap_or(""))) { (name(a["account_id"].as_str().unwrap_or(""))) } }
                            td { (crate::format::humanize(a["rule"].as_str().unwrap_or(""))) }
                            td { (a["reason"].as_str().unwrap_or("")) }
                        } } }
                    }
                }
            }
            section aria-labelledby="changes" {
                h2 id="changes" { "Tier changes (last " (INBOX_DAYS) " days)" }
                @if by_model > 0 {
                    p.note data-field="model-changes" { (by_model) " more accounts changed tier because a new health model took force, not because their use moved: see " a href="/indicators" { "Indicators" } "." }
                }
                @if changes.is_empty() { p.empty { "Nothing changed tier lately." } } @else {
                    table.data id="inbox" {
                        thead { tr { th scope="col" { "Date" } th scope="col" { "Account" } th scope="col" { "Change" } th scope="col" { "ARR" } th scope="col" { "Renewal" } } }
                        tbody { @for c in &changes {
                            @let account = c.account_id.as_str();
                            @let f = fact(account);
                            tr {
                                td { (crate::format::day(c.date)) }
                                th scope="row" { a href=(crate::share::account_path(account)) { (name(account)) } }
                                td { (tier_badge(Some(&c.from))) " → " (tier_badge(Some(&c.to))) }
                                td.num { (money(f.map_or(0.0, |f| f.arr), &currency)) }
                                td { (super::day_or_dash(f.and_then(|f| f.renewal))) }
                            }
                        } }
                    }
                }
            }
        },
    ))
}

/// How soon a task needs doing, from its account's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    High,
    Medium,
    Low,
}

impl Priority {
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Priority::High => "High",
            Priority::Medium => "Medium",
            Priority::Low => "Low",
        }
    }
}

/// High: overdue, a red account, or an orange one renewing within 90 days. Medium: orange,
/// or renewing within 90 days. Low: the rest.
pub fn priority(tier: Option<&str>, renewal_in_days: Option<i64>, overdue: bool) -> Priority {
    let soon =
        renewal_in_days.is_some_and(|d| (0..=crate::accounts::RENEWAL_SOON_DAYS).contains(&d));
    match tier {
        _ if overdue => Priority::High,
        Some("red") => Priority::High,
        Some("orange") if soon => Priority::High,
        Some("orange") => Priority::Medium,
        _ if soon => Priority::Medium,
        _ => Priority::Low,
    }
}

#[derive(Debug, Deserialize)]
pub struct TaskForm {
    csrf: String,
    action: String,
}

/// `POST /inbox/tasks/{id}`: done, snooze (7 days) or reopen.
pub async fn update(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<TaskForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot change tasks"));
    }
    let (status, snooze) = match form.action.as_str() {
        "done" => ("done", None),
        "open" => ("open", None),
        "snooze" => ("snoozed", Some(today() + Duration::days(SNOOZE_DAYS))),
        other => {
            return Err(PageError::bad_request(format!(
                "action: {other:?} is not done, snooze or open"
            )))
        }
    };
    if !with_source(&state, move |source, _| {
        Ok(run::update_task(source, id, status, snooze, None)?)
    })
    .await?
    {
        return Err(PageError::not_found(format!("no task {id}")));
    }
    tracing::info!(task = id, status, by = %user.user.username, "task updated");
    Ok(Redirect::to("/inbox").into_response())
}

#[derive(Debug, Deserialize)]
pub struct NewTaskForm {
    csrf: String,
    title: String,
    /// YYYY-MM-DD; a week from today when empty.
    due: Option<String>,
}

/// `POST /accounts/{id}/tasks`: a task made by hand from the account page, for the
/// account's CSM; back to the account's tasks.
pub async fn create(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<NewTaskForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot make tasks"));
    }
    let today = today();
    let due = match form.due.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(text) => crate::records::parse_date(text)
            .map_err(|reason| PageError::bad_request(format!("due: {reason}")))?,
        None => today + Duration::days(crate::web::actions::DEFAULT_DUE_DAYS),
    };
    crate::actions::check_task(&form.title, due, today)
        .map_err(|(field, reason)| PageError::bad_request(format!("{field}: {reason}")))?;
    let id = account.clone();
    let made = with_source(&state, move |source, _| {
        Ok(run::add_task(source, &id, &form.title, due, today)?)
    })
    .await?;
    let Some(task) = made else {
        return Err(PageError::not_found(format!("no account {account}")));
    };
    tracing::info!(task, account = %account, by = %user.user.username, "task made by hand");
    Ok(Redirect::to(&format!("{}#tasks", crate::share::account_path(&account))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PlaybookForm {
    csrf: String,
    playbook: String,
}

/// `POST /accounts/{id}/playbooks`: starts a playbook on the account (its steps become
/// tasks); back to the account's tasks.
pub async fn start_playbook(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<PlaybookForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot start playbooks"));
    }
    let Some(playbook) = state.actions.playbooks_in_force().remove(&form.playbook) else {
        return Err(PageError::bad_request(format!(
            "playbook: no playbook {:?}",
            form.playbook
        )));
    };
    let id = account.clone();
    let started = with_source(&state, move |source, _| {
        Ok(run::start_playbook(source, &id, &playbook, today())?)
    })
    .await?;
    let Some(tasks) = started else {
        return Err(PageError::not_found(format!("no account {account}")));
    };
    tracing::info!(account = %account, playbook = %form.playbook, tasks = tasks.len(), by = %user.user.username, "playbook started");
    Ok(Redirect::to(&format!("{}#tasks", crate::share::account_path(&account))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_follows_tier_renewal_and_due_day() {
        assert_eq!(priority(Some("green"), Some(200), true), Priority::High);
        assert_eq!(priority(Some("red"), None, false), Priority::High);
        assert_eq!(priority(Some("orange"), Some(44), false), Priority::High);
        assert_eq!(priority(Some("orange"), Some(120), false), Priority::Medium);
        assert_eq!(priority(Some("green"), Some(90), false), Priority::Medium);
        assert_eq!(priority(Some("green"), Some(-3), false), Priority::Low);
        assert_eq!(priority(None, None, false), Priority::Low);
    }
}
