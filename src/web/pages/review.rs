//! The quarterly review: a customer-facing report of one account's quarter (usage and
//! adoption, licences, features not used yet, support, surveys, business results, goals),
//! with nothing internal (no tier, score, model or notes). Signed-in users see it with the
//! goal editor and share form; customers open it by a signed, expiring link.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::charts::{self, Series};
use super::{
    bare, csrf_field, layout, number, percent, value_text, PageError, PageResult, SignedIn,
};
use crate::accounts;
use crate::metrics::read;
use crate::share::{self, LinkError, Quarter};
use crate::store::StoreError;
use crate::store::{Activity, Notes, Records};
use crate::users;
use crate::web::metrics::{today, with_source};
use crate::web::AppState;

/// Longest goals text.
pub const GOALS_CHARS_MAX: usize = 4_000;

/// What the report shows.
struct Review {
    account_name: String,
    quarter: Quarter,
    through: NaiveDate,
    weekly: Vec<(NaiveDate, crate::metrics::Row)>,
    end: crate::metrics::Row,
    used: Vec<(String, i64)>,
    unused: Vec<String>,
    kpis: Vec<Value>,
    surveys: Vec<Value>,
    goals: Option<String>,
}

/// A quarter that has begun (its days up to today are reported).
fn started(quarter: Quarter) -> Result<Quarter, PageError> {
    if quarter.first_day() > today() {
        return Err(PageError::bad_request(format!(
            "quarter: {quarter} has not started yet"
        )));
    }
    Ok(quarter)
}

fn load(
    source: &(impl Activity + Records + Notes + ?Sized),
    s: crate::health::model::Settings,
    account: &str,
    quarter: Quarter,
) -> Result<Option<Review>, StoreError> {
    let Some(name) = crate::store::account_name(source, account)? else {
        return Ok(None);
    };
    let (start, through) = (quarter.first_day(), quarter.last_day().min(today()));
    let mut days: Vec<NaiveDate> =
        std::iter::successors(Some(through), |d| Some(*d - Duration::weeks(1)))
            .take_while(|d| *d >= start)
            .collect();
    days.reverse();
    let rows = read::rows_on(source, account, &days, s.metrics, s.currency)?.unwrap_or_default();
    let end = rows.last().cloned().unwrap_or_default();
    let used = accounts::feature_uses(source, account, start, through, s.metrics)?;
    let unused = source
        .known_features(s.metrics)?
        .into_iter()
        .filter(|f| !used.iter().any(|(u, _)| u == f))
        .collect();
    let in_quarter = |v: &Value, column: &str| {
        v[column]
            .as_str()
            .and_then(|t| t.get(..10))
            .is_some_and(|d| d >= start.to_string().as_str() && d <= through.to_string().as_str())
    };
    let kpis = source
        .of_account(
            crate::records::kind("kpis").expect("a kind"),
            account,
            "date",
            1_000,
        )?
        .into_iter()
        .filter(|k| in_quarter(k, "date"))
        .collect();
    let surveys = source
        .of_account(
            crate::records::kind("survey_responses").expect("a kind"),
            account,
            "answered_at",
            1_000,
        )?
        .into_iter()
        .filter(|r| in_quarter(r, "answered_at"))
        .collect();
    let goals = users::review_goals(source, account, &quarter.to_string())?;
    Ok(Some(Review {
        account_name: name.unwrap_or_else(|| account.to_string()),
        quarter,
        through,
        weekly: days.into_iter().zip(rows).collect(),
        end,
        used,
        unused,
        kpis,
        surveys,
        goals,
    }))
}

/// The report itself: the same for the CSM's preview and the customer's link.
fn report(r: &Review) -> Markup {
    let labels: Vec<String> = r
        .weekly
        .iter()
        .map(|(d, _)| d.format("%-d %b").to_string())
        .collect();
    let col = |name: &str| -> Vec<Option<f64>> {
        r.weekly.iter().map(|(_, row)| row.number(name)).collect()
    };
    let end = |name: &str| r.end.get(name);
    let mut kinds: Vec<(&str, Vec<f64>)> = Vec::new();
    for s in &r.surveys {
        let kind = s["kind"].as_str().unwrap_or("");
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, scores)) => scores.extend(s["score"].as_f64()),
            None => kinds.push((kind, s["score"].as_f64().into_iter().collect())),
        }
    }
    html! {
        article.review id="review" {
            header {
                h1 { (r.account_name) ": quarterly review " (crate::format::quarter(r.quarter.first_day())) }
                p.muted { (crate::format::day(r.quarter.first_day())) " to " (crate::format::day(r.through)) }
            }
            section {
                h2 { "Usage and adoption" }
                dl.grid {
                    dt { "Active users (30 days)" } dd data-field="active_users_30d" { (value_text(end("active_users_30d").as_ref())) }
                    dt { "Paid seats" } dd data-field="seats" { (value_text(end("seats").as_ref())) }
                    dt { "Licence utilisation" } dd data-field="license_utilization" { (percent(r.end.license_utilization)) }
                    dt { "Active days (last 14)" } dd { (value_text(end("active_days_14d").as_ref())) }
                    dt { "Features used (30 days)" } dd { (value_text(end("features_used_30d").as_ref())) }
                    dt { "Logins per user and week" } dd { (value_text(end("logins_per_user_week").as_ref())) }
                }
                div.charts {
                    (charts::line("Active users and seats, weekly", &labels, &[
                        Series { label: "active users (30 days)".into(), class: "s1", values: col("active_users_30d") },
                        Series { label: "seats".into(), class: "s3", values: col("seats") },
                    ], false))
                    (charts::line("Features used (30 days), weekly", &labels, &[Series { label: "features".into(), class: "s2", values: col("features_used_30d") }], false))
                }
            }
            section {
                h2 { "Features" }
                div.two {
                    div { h3 { "Used this quarter" }
                        @if r.used.is_empty() { p.empty { "No feature use recorded this quarter." } }
                        ul { @for (f, n) in &r.used { li { (f) " (" (n) ")" } } } }
                    div { h3 { "Not used yet: worth a look" }
                        @if r.unused.is_empty() { p.empty { "You use every feature." } }
                        ul data-field="unused_features" { @for f in &r.unused { li { (f) } } } }
                }
            }
            section {
                h2 { "Support (90 days to " (crate::format::day(r.through)) ")" }
                dl.grid {
                    dt { "Tickets opened" } dd { (value_text(end("tickets_opened_90d").as_ref())) }
                    dt { "Tickets closed" } dd { (value_text(end("tickets_closed_90d").as_ref())) }
                    dt { "Open now" } dd { (value_text(end("tickets_open").as_ref())) }
                    dt { "Median first response (hours)" } dd { (value_text(end("median_first_response_hours_90d").as_ref())) }
                    dt { "Median resolution (hours)" } dd { (value_text(end("median_resolution_hours_90d").as_ref())) }
                }
            }
            section {
                h2 { "What your team told us" }
                @if kinds.is_empty() { p.empty { "No survey answers this quarter." } } @else {
                    table.data { thead { tr { th scope="col" { "Survey" } th scope="col" { "Answers" } th scope="col" { "Average" } } }
                        tbody { @for (kind, scores) in &kinds { tr {
                            th scope="row" { (kind.to_uppercase().replace('_', " ")) } td.num { (scores.len()) }
                            td.num { (number((!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64), 1)) }
                        } } } }
                    p { "NPS (last window): " (value_text(end("nps").as_ref())) " · CSAT: " (value_text(end("csat").as_ref())) " · CES: " (value_text(end("ces").as_ref())) }
                }
            }
            section {
                h2 { "Business results" }
                @if r.kpis.is_empty() { p.empty { "No results recorded this quarter." } } @else {
                    table.data { thead { tr { th scope="col" { "Measure" } th scope="col" { "Date" } th scope="col" { "Value" } } }
                        tbody { @for k in &r.kpis { tr { th scope="row" { (crate::format::label(k["name"].as_str().unwrap_or(""))) } td { (value_text(Some(&k["date"]))) } td.num { (value_text(Some(&k["value"]))) } } } } }
                }
            }
            section {
                h2 { "Goals for next quarter" }
                @match &r.goals { Some(g) => p.goals { (g) }, None => p.empty { "No goals written yet." } }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    quarter: Option<String>,
}

fn quarter_param(text: Option<&str>) -> Result<Quarter, PageError> {
    match text {
        Some(t) if !t.is_empty() => {
            started(Quarter::parse(t).map_err(|r| PageError::bad_request(format!("quarter: {r}")))?)
        }
        // Reviews look back: the last complete quarter.
        _ => Ok(Quarter::of(today()).previous()),
    }
}

async fn internal_page(
    user: &SignedIn,
    state: &AppState,
    id: String,
    quarter: Quarter,
    link: Option<String>,
) -> PageResult {
    let account = id.clone();
    let review = with_source(state, move |source, s| {
        Ok(load(source, s, &account, quarter)?)
    })
    .await?
    .ok_or_else(|| PageError::not_found(format!("no account {id}")))?;
    let writable = super::can_write(&user.user);
    Ok(layout(
        user,
        &format!("Review {quarter}"),
        "/portfolio",
        html! {
            nav.noprint aria-label="Review" {
                a href=(crate::share::account_path(&id)) { "← " (review.account_name) }
                " · Quarter: "
                @for q in [quarter.previous(), Quarter::of(today())] {
                    a href=(format!("{}/review?quarter={q}", crate::share::account_path(&id))) { (q) } " "
                }
            }
            @if writable {
                section.noprint.tools {
                    form.stack method="post" action=(format!("{}/review/goals", crate::share::account_path(&id))) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Goals for next quarter (shown to the customer)" textarea name="goals" rows="3" maxlength=(GOALS_CHARS_MAX) { (review.goals.as_deref().unwrap_or("")) } }
                        button type="submit" { "Save goals" }
                    }
                    form.inline method="post" action=(format!("{}/review/share", crate::share::account_path(&id))) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Share for " input type="number" name="days" value="30" min="1" max=(share::VALID_DAYS_MAX) required; " days" }
                        button type="submit" { "Create share link" }
                    }
                    @if let Some(link) = &link {
                        p.notice role="status" { "Share link (anyone with it can read this review until it expires): " br; a id="share-link" href=(link) { (link) } }
                    }
                    p.muted { "Print or save as PDF with your browser's print command." }
                }
            }
            (report(&review))
        },
    ))
}

pub async fn internal(
    user: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ReviewQuery>,
) -> PageResult {
    let quarter = quarter_param(query.quarter.as_deref())?;
    internal_page(&user, &state, id, quarter, None).await
}

#[derive(Debug, Deserialize)]
pub struct ShareForm {
    csrf: String,
    quarter: String,
    days: i64,
}

pub async fn share(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ShareForm>,
) -> PageResult {
    user.check_post(&headers, &form.csrf)?;
    if !super::can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot share reviews"));
    }
    let quarter = quarter_param(Some(&form.quarter))?;
    if !(1..=share::VALID_DAYS_MAX).contains(&form.days) {
        return Err(PageError::bad_request(format!(
            "days: must be 1 to {}",
            share::VALID_DAYS_MAX
        )));
    }
    let expires = chrono::Utc::now().timestamp() + form.days * 86_400;
    let account = id.clone();
    let token = with_source(&state, move |source, _| {
        Ok(share::sign(
            &users::secret(source, share::SECRET_NAME)?,
            &account,
            quarter,
            expires,
        ))
    })
    .await?;
    tracing::info!(account = %id, %quarter, by = %user.user.username, days = form.days, "review share link created");
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if super::auth::behind_tls(&headers) {
        "https"
    } else {
        "http"
    };
    internal_page(
        &user,
        &state,
        id,
        quarter,
        Some(format!("{scheme}://{host}/r/{token}")),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct GoalsForm {
    csrf: String,
    quarter: String,
    goals: String,
}

pub async fn goals(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<GoalsForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !super::can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot write goals"));
    }
    let quarter = quarter_param(Some(&form.quarter))?;
    if form.goals.chars().count() > GOALS_CHARS_MAX {
        return Err(PageError::bad_request(format!(
            "goals: at most {GOALS_CHARS_MAX} characters"
        )));
    }
    let (account, goals) = (id.clone(), form.goals.trim().to_string());
    let known = with_source(&state, move |source, _| {
        let known = crate::store::account_name(source, &account)?.is_some();
        if known {
            users::set_review_goals(source, &account, &quarter.to_string(), &goals)?;
        }
        Ok(known)
    })
    .await?;
    if !known {
        return Err(PageError::not_found(format!("no account {id}")));
    }
    Ok(axum::response::Redirect::to(&format!(
        "{}/review?quarter={quarter}",
        crate::share::account_path(&id)
    ))
    .into_response())
}

/// `GET /r/{token}`: the review behind a share link, no sign-in.
pub async fn shared(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let refused = |e: LinkError| {
        let status = if e == LinkError::Expired {
            StatusCode::GONE
        } else {
            StatusCode::FORBIDDEN
        };
        (status, bare("Review link", html! { main.narrow { h1 { "Quarterly review" } p.error role="alert" { (e.to_string()) } } })).into_response()
    };
    let secret = with_source(&state, |source, _| {
        Ok(users::secret(source, share::SECRET_NAME)?)
    })
    .await?;
    let (account, quarter) = match share::verify(&secret, &token, chrono::Utc::now().timestamp()) {
        Ok(found) => found,
        Err(e) => return Ok(refused(e)),
    };
    let review = with_source(&state, move |source, s| {
        Ok(load(source, s, &account, quarter)?)
    })
    .await?;
    match review {
        Some(review) => Ok(bare(
            &format!("Quarterly review {quarter}"),
            html! { main id="main" { (report(&review)) } },
        )
        .into_response()),
        // The account was deleted after the link was made.
        None => Ok(refused(LinkError::Invalid)),
    }
}
