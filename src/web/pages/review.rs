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
use super::{bare, csrf_field, layout, number, value_text, PageError, PageResult, SignedIn};
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
    /// The same measures at the end of the quarter before.
    before: crate::metrics::Row,
    /// The account's CSM: name and email.
    csm: Option<(String, Option<String>)>,
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
    let before = read::rows_on(
        source,
        account,
        &[start - Duration::days(1)],
        s.metrics,
        s.currency,
    )?
    .and_then(|mut r| r.pop())
    .unwrap_or_default();
    let csm = csm_of(source, account)?;
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
        before,
        csm,
        used,
        unused,
        kpis,
        surveys,
        goals,
    }))
}

/// The account's CSM (name, email) from the records.
fn csm_of(
    source: &(impl Records + ?Sized),
    account: &str,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    let Some(csm) = source
        .record_rows("accounts", &["account_id", "csm"])?
        .into_iter()
        .find(|r| r[0].as_text() == Some(account))
        .and_then(|r| r[1].as_text().map(str::to_string))
    else {
        return Ok(None);
    };
    Ok(source
        .record_rows("csms", &["csm_id", "name", "email"])?
        .into_iter()
        .find(|r| r[0].as_text() == Some(csm.as_str()))
        .map(|r| {
            (
                r[1].as_text().unwrap_or(&csm).to_string(),
                r[2].as_text().map(str::to_string),
            )
        }))
}

/// Measures the review compares with the quarter before, by section.
const USAGE: &[&str] = &[
    "active_users_30d",
    "seats",
    "license_utilization",
    "active_days_14d",
    "features_used_30d",
    "logins_per_user_week",
];
const SUPPORT: &[&str] = &[
    "tickets_opened_90d",
    "tickets_closed_90d",
    "tickets_open",
    "median_first_response_hours_90d",
    "median_resolution_hours_90d",
];
/// Features listed by name, most used first.
const FEATURES_LISTED: usize = 10;

/// A table of measures: this quarter's value next to its label, and last quarter's.
fn compared(id: &str, r: &Review, names: &[&str]) -> Markup {
    use crate::format;
    html! {
        table.data.compare id=(id) {
            thead { tr { th scope="col" { "Measure" } th scope="col" { "This quarter" } th scope="col" { "Last quarter" } } }
            tbody { @for name in names { tr {
                th scope="row" { (format::label(name)) }
                td.num data-field=(name) data-value=[r.end.number(name)] { (format::metric(&r.end, name)) }
                td.num.muted { (format::metric(&r.before, name)) }
            } } }
        }
    }
}

/// What a survey's score means.
fn scale(kind: &str) -> &'static str {
    match kind {
        "nps" => "0-10: how likely to recommend us",
        "csat" => "1-5: how satisfied",
        "ces" => "1-7: how easy it was (higher is easier)",
        _ => "as asked",
    }
}

/// The report itself: the same for the CSM's preview and the customer's link.
fn report(r: &Review, vendor: &crate::config::ReviewConfig) -> Markup {
    let labels: Vec<String> = r
        .weekly
        .iter()
        .map(|(d, _)| d.format("%-d %b").to_string())
        .collect();
    let col = |name: &str| -> Vec<Option<f64>> {
        r.weekly.iter().map(|(_, row)| row.number(name)).collect()
    };
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
            header.review-head {
                @if vendor.vendor_name.is_some() || vendor.logo_data_url.is_some() {
                    p.vendor {
                        @if let Some(logo) = &vendor.logo_data_url { img.logo src=(logo) alt=(vendor.vendor_name.as_deref().unwrap_or("logo")) height="40"; }
                        @if let Some(name) = &vendor.vendor_name { strong data-field="vendor" { (name) } }
                    }
                }
                h1 { (r.account_name) ": quarterly review " (crate::format::quarter(r.quarter.first_day())) }
                p.muted { (crate::format::day(r.quarter.first_day())) " to " (crate::format::day(r.through)) }
                @if let Some((name, email)) = &r.csm {
                    p.contact data-field="csm" { "Your customer success manager: " strong { (name) }
                        @if let Some(email) = email { " · " a href=(format!("mailto:{email}")) { (email) } } }
                }
            }
            section data-section="usage" {
                h2 { "Usage and adoption" }
                (compared("review-usage", r, USAGE))
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
                    div { h3 { "Used most this quarter" }
                        @if r.used.is_empty() { p.empty { "No feature use recorded this quarter." } }
                        ul { @for (f, n) in r.used.iter().take(FEATURES_LISTED) { li { (f) " — " (crate::format::count(*n, "use", "uses")) } } }
                        @if r.used.len() > FEATURES_LISTED { p.muted { "and " (r.used.len() - FEATURES_LISTED) " more." } } }
                    div { h3 { "Not used yet: worth a look" }
                        @if r.unused.is_empty() { p.empty { "You use every feature." } }
                        ul data-field="unused_features" { @for f in &r.unused { li { (f) } } } }
                }
            }
            section data-section="support" {
                h2 { "Support (90 days to " (crate::format::day(r.through)) ")" }
                (compared("review-support", r, SUPPORT))
            }
            section {
                h2 { "What your team told us" }
                @if kinds.is_empty() { p.empty { "No survey answers this quarter." } } @else {
                    table.data { thead { tr { th scope="col" { "Survey" } th scope="col" { "Scale" } th scope="col" { "Answers" } th scope="col" { "Average answer" } } }
                        tbody { @for (kind, scores) in &kinds { tr {
                            th scope="row" { (crate::format::survey_kind(kind)) } td { (scale(kind)) } td.num { (scores.len()) }
                            td.num { (number((!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64), 1)) }
                        } } } }
                    p.muted { "NPS (each person's latest answer in 180 days): the share of promoters (9-10) less the share of detractors (0-6), -100 to 100: "
                        strong data-field="nps" { (crate::format::metric(&r.end, "nps")) } ". CSAT (90 days): the share of answers of 4 or 5: "
                        strong data-field="csat" { (crate::format::metric(&r.end, "csat")) } ". CES (90 days): the average answer, 1-7, higher is easier: "
                        strong data-field="ces" { (crate::format::metric(&r.end, "ces")) } "." }
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
    /// `goals` after goals were saved: the page confirms it.
    saved: Option<String>,
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
    saved: bool,
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
                    a href=(format!("{}/review?quarter={q}", crate::share::account_path(&id))) { (crate::format::quarter(q.first_day())) } " "
                }
            }
            @if writable {
                section.noprint.tools {
                    form.stack method="post" action=(format!("{}/review/goals", crate::share::account_path(&id))) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Goals for next quarter (shown to the customer)" textarea name="goals" rows="3" maxlength=(GOALS_CHARS_MAX) { (review.goals.as_deref().unwrap_or("")) } }
                        button type="submit" { "Save goals" }
                        @if saved { p.notice role="status" data-field="saved" { "Goals saved: the customer sees them on this review." } }
                    }
                    form.inline method="post" action=(format!("{}/review/share", crate::share::account_path(&id))) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Share for " input type="number" name="days" value="30" min="1" max=(share::VALID_DAYS_MAX) required; " days" }
                        button type="submit" { "Create share link" }
                    }
                    @if let Some(link) = &link {
                        p.notice role="status" { "Share link (anyone with it can read this review until it expires): " br; a id="share-link" href=(link) { (link) } " "
                            button.copy type="button" data-copy=(link) { "Copy link" } }
                    }
                    p.muted { "Print or save as PDF with your browser's print command." }
                }
            }
            (report(&review, &state.review))
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
    let saved = query.saved.as_deref() == Some("goals");
    internal_page(&user, &state, id, quarter, None, saved).await
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
        false,
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
        "{}/review?quarter={quarter}&saved=goals",
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
            html! { main id="main" { (report(&review, &state.review)) } },
        )
        .into_response()),
        // The account was deleted after the link was made.
        None => Ok(refused(LinkError::Invalid)),
    }
}
