//! Listening: why customers leave (churn and downgrade reasons by quarter and segment, in
//! money and counts) and what they say (themes over all comments, among detractors and
//! among accounts red now, with quotes); CSM notes and reason edits from the account page.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::{can_write, layout, money, number, percent, PageError, PageResult, SignedIn};
use crate::listening::report;
use crate::web::metrics::{today, with_source};
use crate::web::records::with_records;
use crate::web::AppState;

/// Themes listed per table.
const THEMES_LISTED: usize = 12;

fn theme_table(id: &str, rows: &[Value], currency: &str) -> Markup {
    html! {
        @if rows.is_empty() { p.empty { "No comments here yet." } } @else {
            div.scroll { table.data id=(id) {
                thead { tr { th scope="col" { "Theme" } th scope="col" { "Comments" } th scope="col" { "Accounts" } th scope="col" { "Their ARR" }
                    th scope="col" { abbr title="share of the churned / retained accounts with comments that raised it" { "Raised by churned / retained" } } th scope="col" { "Sentiment" } th scope="col" { "Last 4 quarters" } th scope="col" { "Keywords and a quote" } } }
                tbody { @for r in rows.iter().take(THEMES_LISTED) { tr {
                    th scope="row" data-field="theme" { (r["theme"].as_str().unwrap_or("")) }
                    td.num data-field="comments" { (r["comments"]) }
                    td.num { (r["accounts"]) }
                    td.num { (money(r["arr"].as_f64().unwrap_or(0.0), currency)) }
                    td.num { (percent(r["churned_accounts_raising"].as_f64())) " / " (percent(r["retained_accounts_raising"].as_f64())) }
                    td.num { (number(r["sentiment"].as_f64(), 2)) }
                    td { (last_quarters(&r["per_quarter"])) }
                    td {
                        small.muted { (r["keywords"].as_array().map(|k| k.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                        @if let Some(q) = r["quotes"].get(0) { br; q { (q["text"].as_str().unwrap_or("")) } }
                    }
                } } }
            } }
        }
    }
}

/// "2026-Q1" as people write it: "Q1 2026".
fn quarter_name(code: &str) -> String {
    match code.split_once("-Q") {
        Some((year, q)) => format!("Q{q} {year}"),
        None => code.to_string(),
    }
}

/// Each reason's accounts and ARR lost over the whole time, most ARR first, as bars with
/// their totals, and the grand total.
fn reason_totals(reasons: &[Value], currency: &str) -> Markup {
    let mut by: std::collections::BTreeMap<String, (u64, f64)> = std::collections::BTreeMap::new();
    for r in reasons {
        let e = by
            .entry(r["reason"].as_str().unwrap_or("none").to_string())
            .or_default();
        e.0 += r["accounts"].as_u64().unwrap_or(0);
        e.1 += r["arr_lost"].as_f64().unwrap_or(0.0);
    }
    let mut rows: Vec<(String, (u64, f64))> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    let bars: Vec<super::charts::Total> = rows
        .iter()
        .map(|(reason, (accounts, arr))| super::charts::Total {
            label: crate::format::humanize(reason),
            value: *arr,
            text: format!(
                "{} · {}",
                crate::format::count(*accounts as i64, "account", "accounts"),
                crate::format::money_text(*arr, currency)
            ),
        })
        .collect();
    let accounts: u64 = rows.iter().map(|(_, (a, _))| a).sum();
    let arr: f64 = rows.iter().map(|(_, (_, v))| v).sum();
    html! {
        (super::charts::totals("ARR lost by reason", &bars))
        p.summary data-field="reasons-total" { "In all: " strong { (crate::format::count(accounts as i64, "account", "accounts")) } " and " strong { (money(arr, currency)) } " of ARR lost or shrunk." }
    }
}

/// The newest four quarters of a per-quarter count, oldest first: "2026-Q1: 3 · 2026-Q2: 5".
fn last_quarters(per_quarter: &Value) -> String {
    let all: Vec<(&String, &Value)> = per_quarter
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    all[all.len().saturating_sub(4)..]
        .iter()
        .map(|(q, n)| format!("{}: {n}", quarter_name(q)))
        .collect::<Vec<_>>()
        .join(" · ")
}

pub async fn page(user: SignedIn, State(state): State<AppState>) -> PageResult {
    let to = today() + chrono::Duration::days(1);
    let from = to - chrono::Months::new(12);
    let reasons = with_source(&state, move |source, s| {
        Ok(report::churn_reasons(source, from, to, s.currency)?)
    })
    .await?;
    let reports = crate::web::listening::theme_rows(&state, &["all", "detractors", "red"]).await?;
    let (all, detractors, red) = (&reports[0], &reports[1], &reports[2]);
    let currency = state.currency.report.clone();
    Ok(layout(
        &user,
        "Listening",
        "/listening",
        html! {
            h1 { "Listening" }
            section aria-labelledby="reasons" {
                h2 id="reasons" { "Why customers left or shrank (terms ending " (crate::format::day(from)) " to " (crate::format::day(to - chrono::Duration::days(1))) ")" }
                @if reasons.is_empty() { p.empty { "No churn or downgrade in that time." } } @else {
                    (reason_totals(&reasons, &currency))
                    details {
                        summary { "By quarter and segment" }
                    div.scroll { table.data id="reasons-table" {
                        thead { tr { th scope="col" { "Quarter" } th scope="col" { "Segment" } th scope="col" { "Reason" } th scope="col" { "Kind" } th scope="col" { "Accounts" } th scope="col" { "ARR lost" } } }
                        tbody { @for r in &reasons { tr {
                            td { (quarter_name(r["quarter"].as_str().unwrap_or(""))) } td { (crate::format::humanize(r["segment"].as_str().unwrap_or(""))) }
                            th scope="row" { (crate::format::humanize(r["reason"].as_str().unwrap_or(""))) } td { (r["kind"].as_str().unwrap_or("")) }
                            td.num { (r["accounts"]) } td.num { (money(r["arr_lost"].as_f64().unwrap_or(0.0), &currency)) }
                        } } }
                    } }
                    }
                    p { a href="/api/v1/reports/churn_reasons?format=csv" download { "Download as CSV" } }
                }
            }
            section aria-labelledby="themes" {
                h2 id="themes" { "What customers say: themes of every comment" }
                (theme_table("themes-all", all, &currency))
            }
            section aria-labelledby="detractors" {
                h2 id="detractors" { "Among detractors (NPS 0-6)" }
                (theme_table("themes-detractors", detractors, &currency))
            }
            section aria-labelledby="red" {
                h2 id="red" { "Among accounts red now" }
                (theme_table("themes-red", red, &currency))
            }
            p.muted { "Themes: a configured keyword rule ([listening.themes]) if one matches, else the comment's most distinctive word (TF-IDF) that other comments share. Sentiment: positive minus negative lexicon words over both, -1 to 1." }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct NoteForm {
    csrf: String,
    text: String,
    /// `note` when absent.
    kind: Option<String>,
    /// The day it happened (YYYY-MM-DD; today when absent or empty).
    on: Option<String>,
}

/// `POST /accounts/{id}/notes`: a note or a logged call, meeting or email from the account
/// page.
pub async fn add_note(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot write notes"));
    }
    let text = form.text.trim().to_string();
    let kind = form.kind.unwrap_or_else(|| "note".into());
    let now = chrono::Utc::now();
    // A day in the past is logged at its noon UTC; today, now.
    let at_ms = match form.on.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => now.timestamp_millis(),
        Some(day) => {
            let day: chrono::NaiveDate = day
                .parse()
                .map_err(|_| PageError::bad_request("on: a day as YYYY-MM-DD"))?;
            if day == now.date_naive() {
                now.timestamp_millis()
            } else {
                day.and_hms_opt(12, 0, 0)
                    .expect("noon exists")
                    .and_utc()
                    .timestamp_millis()
            }
        }
    };
    report::check_activity(&kind, &text, at_ms, now.timestamp_millis())
        .map_err(|(field, reason)| PageError::bad_request(format!("{field}: {reason}")))?;
    let (account, author) = (id.clone(), user.user.username.clone());
    if with_source(&state, move |source, _| {
        Ok(source.add_note(&crate::store::NewNote {
            account: &account,
            author: &author,
            person: None,
            kind: &kind,
            text: &text,
            at_ms,
        })?)
    })
    .await?
    .is_none()
    {
        return Err(PageError::not_found(format!("no account {id}")));
    }
    Ok(Redirect::to(&format!("{}#activity", crate::share::account_path(&id))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    csrf: String,
    subscription: String,
    reason: String,
    feedback: String,
}

/// `POST /accounts/{id}/reason`: a subscription's churn reason and feedback.
pub async fn set_reason(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot change reasons"));
    }
    let reason = Some(form.reason.trim().to_string()).filter(|r| !r.is_empty());
    if let Some(code) = &reason {
        state
            .listening
            .check_reason(code)
            .map_err(|r| PageError::bad_request(format!("reason: {r}")))?;
    }
    let feedback = Some(form.feedback.trim().to_string()).filter(|f| !f.is_empty());
    if feedback
        .as_ref()
        .is_some_and(|f| f.len() > crate::limits::RECORD_TEXT_BYTES_MAX)
    {
        return Err(PageError::bad_request("feedback: too long"));
    }
    let (account, subscription) = (id.clone(), form.subscription.clone());
    let found = with_records(&state, move |store| {
        Ok(report::set_reason(
            store,
            &account,
            &subscription,
            reason.as_deref(),
            feedback.as_deref(),
        )?)
    })
    .await?;
    if !found {
        return Err(PageError::not_found(format!(
            "no subscription {} of account {id}",
            form.subscription
        )));
    }
    Ok(Redirect::to(&format!("{}#listening", crate::share::account_path(&id))).into_response())
}
