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
use crate::store::{Activity, Notes, Records, ReviewPlan, ShareLink};
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
    plan: ReviewPlan,
}

/// The report's sections a CSM can hide from the customer: name and heading.
const SECTIONS: &[(&str, &str)] = &[
    ("usage", "Usage and adoption"),
    ("features", "Features"),
    ("support", "Support"),
    ("surveys", "What your team told us"),
    ("results", "Business results"),
    ("goals", "Goals for next quarter"),
];

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
    let plan = users::review_plan(source, account, &quarter.to_string())?;
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
        plan,
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
    let shown = |section: &str| !r.plan.hidden.iter().any(|h| h == section);
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
            @if shown("usage") { section data-section="usage" {
                h2 { "Usage and adoption" }
                (compared("review-usage", r, USAGE))
                div.charts {
                    (charts::line("Active users and seats, weekly", &labels, &[
                        Series { label: "active users (30 days)".into(), class: "s1", values: col("active_users_30d") },
                        Series { label: "seats".into(), class: "s3", values: col("seats") },
                    ], false))
                    (charts::line("Features used (30 days), weekly", &labels, &[Series { label: "features".into(), class: "s2", values: col("features_used_30d") }], false))
                }
            } }
            @if shown("features") { section data-section="features" {
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
            } }
            @if shown("support") { section data-section="support" {
                h2 { "Support (90 days to " (crate::format::day(r.through)) ")" }
                (compared("review-support", r, SUPPORT))
            } }
            @if shown("surveys") { section data-section="surveys" {
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
            } }
            @if shown("results") { section data-section="results" {
                h2 { "Business results" }
                @if r.kpis.is_empty() { p.empty { "No results recorded this quarter." } } @else {
                    table.data id="review-results" { thead { tr { th scope="col" { "Measure" } th scope="col" { "Date" } th scope="col" { "Value" } th scope="col" { "Target" } } }
                        tbody { @for k in &r.kpis {
                            @let name = k["name"].as_str().unwrap_or("");
                            @let target = r.plan.targets.get(name);
                            tr {
                                th scope="row" { (crate::format::label(name)) }
                                td { (value_text(Some(&k["date"]))) }
                                td.num data-field="kpi" { (value_text(Some(&k["value"]))) }
                                td.num data-field="target" { @match target {
                                    Some(t) => { (number(Some(*t), 2)) @if let Some(v) = k["value"].as_f64() { " (" (if v >= *t { "met" } else { "not yet" }) ")" } }
                                    None => "–",
                                } }
                            }
                        } } }
                }
            } }
            @if shown("goals") { section data-section="goals" {
                h2 { "Goals for next quarter" }
                @match &r.plan.goals { Some(g) => p.goals { (g) }, None => p.empty { "No goals written yet." } }
            } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    quarter: Option<String>,
    /// `goals` after the review's goals were saved: the page confirms it.
    saved: Option<String>,
    /// The share link just made: the page shows it to copy.
    link: Option<i64>,
    /// Set after a link was revoked.
    revoked: Option<String>,
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

/// What the internal page shows beside the report after a form was posted.
#[derive(Debug, Default)]
struct Notice {
    /// The share link just made, to copy.
    link: Option<i64>,
    saved: bool,
    revoked: bool,
}

/// The stored links of an account, each with its URL (re-signed: the token is a function of
/// the stored link).
fn link_urls(
    links: Vec<ShareLink>,
    secret: &[u8],
    base: &str,
) -> Result<Vec<(ShareLink, String)>, PageError> {
    links
        .into_iter()
        .map(|l| {
            let quarter = Quarter::parse(&l.quarter).map_err(|r| {
                PageError::from(StoreError::Invalid(format!("share link {}: {r}", l.id)))
            })?;
            let token = share::sign(secret, &l.account_id, quarter, l.id, l.expires_ms / 1000);
            Ok((l, format!("{base}/r/{token}")))
        })
        .collect()
}

/// Where the server is reached, as the request named it: links are made with it.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if super::auth::behind_tls(headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// The account's share links: the review they open, when made and by whom, expiry,
/// status, and copy and revoke for the active ones.
fn links_table(
    user: &SignedIn,
    path: &str,
    quarter: Quarter,
    links: &[(ShareLink, String)],
) -> Markup {
    let now_ms = chrono::Utc::now().timestamp_millis();
    html! {
        section.noprint aria-labelledby="share-links" {
            h2 id="share-links" { "Share links" }
            @if links.is_empty() { p.empty { "No link made yet." } } @else {
                div.scroll { table.data.cards id="share-links-table" {
                    thead { tr { th scope="col" { "Review" } th scope="col" { "Made" } th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for (link, url) in links {
                        @let status = if link.revoked_ms.is_some() { "revoked" } else if link.expires_ms <= now_ms { "expired" } else { "active" };
                        tr data-link=(link.id) {
                            th scope="row" { (Quarter::parse(&link.quarter).map_or(link.quarter.clone(), |q| crate::format::quarter(q.first_day()))) }
                            td data-label="Made" { (crate::format::instant_ms(link.created_ms)) " by " (link.created_by) }
                            td data-label="Expires" { (crate::format::instant_day(&crate::ingest::format_timestamp(link.expires_ms))) }
                            td data-field="status" data-label="Status" { (status) }
                            td { @if status == "active" {
                                button.copy type="button" data-copy=(url) { "Copy link" }
                                form.inline method="post" action=(format!("{path}/review/links/{}/revoke", link.id)) data-confirm="Revoke this link? Whoever has it can no longer open the review." {
                                    (csrf_field(user))
                                    input type="hidden" name="quarter" value=(quarter.to_string());
                                    button.danger type="submit" { "Revoke" }
                                }
                            } }
                        }
                    } }
                } }
            }
        }
    }
}

async fn internal_page(
    user: &SignedIn,
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    quarter: Quarter,
    notice: Notice,
) -> PageResult {
    let account = id.clone();
    let loaded = with_source(state, move |source, s| {
        let Some(review) = load(source, s, &account, quarter)? else {
            return Ok(None);
        };
        let links = source.share_links(&account)?;
        let secret = users::secret(source, share::SECRET_NAME)?;
        Ok(Some((review, links, secret)))
    })
    .await?;
    let (review, links, secret) =
        loaded.ok_or_else(|| PageError::not_found(format!("no account {id}")))?;
    let links = link_urls(links, &secret, &base_url(headers))?;
    let writable = super::can_write(&user.user);
    let path = crate::share::account_path(&id);
    let mut kpi_names: Vec<&str> = review
        .kpis
        .iter()
        .filter_map(|k| k["name"].as_str())
        .chain(review.plan.targets.keys().map(String::as_str))
        .collect();
    kpi_names.sort_unstable();
    kpi_names.dedup();
    Ok(layout(
        user,
        &format!("Review {quarter}"),
        "/portfolio",
        html! {
            nav.noprint aria-label="Review" {
                a href=(path) { "← " (review.account_name) }
                " · Quarter: "
                @for q in [quarter.previous(), Quarter::of(today())] {
                    a href=(format!("{path}/review?quarter={q}")) { (crate::format::quarter(q.first_day())) } " "
                }
            }
            @if writable {
                section.noprint.tools {
                    form.stack id="review-plan" method="post" action=(format!("{path}/review/goals")) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Goals for next quarter (shown to the customer)" textarea name="goals" rows="3" maxlength=(GOALS_CHARS_MAX) { (review.plan.goals.as_deref().unwrap_or("")) } }
                        fieldset.sections {
                            legend { "Sections the customer sees" }
                            input type="hidden" name="sections" value="listed";
                            @for (name, heading) in SECTIONS {
                                label.check { input type="checkbox" name=(format!("show:{name}")) checked[!review.plan.hidden.iter().any(|h| h == name)]; " " (heading) }
                            }
                        }
                        @if !kpi_names.is_empty() {
                            fieldset.targets {
                                legend { "Targets for business results (empty: none)" }
                                @for name in &kpi_names {
                                    label { (crate::format::label(name)) " " input type="number" step="any" name=(format!("target:{name}")) value=[review.plan.targets.get(*name)]; }
                                }
                            }
                        }
                        button type="submit" { "Save review" }
                        @if notice.saved { p.notice role="status" data-field="saved" { "Saved: the customer sees these goals, sections and targets on this review." } }
                    }
                    form.inline method="post" action=(format!("{path}/review/share")) {
                        (csrf_field(user))
                        input type="hidden" name="quarter" value=(quarter.to_string());
                        label { "Share for " input type="number" name="days" value="30" min="1" max=(share::VALID_DAYS_MAX) required; " days" }
                        button type="submit" { "Create share link" }
                    }
                    @if let Some((link, url)) = notice.link.and_then(|n| links.iter().find(|(l, _)| l.id == n)) {
                        p.notice role="status" { "Share link (anyone with it can read the " (crate::format::quarter(quarter.first_day())) " review until " (crate::format::instant_day(&crate::ingest::format_timestamp(link.expires_ms))) "): " br; a id="share-link" href=(url) { (url) } " "
                            button.copy type="button" data-copy=(url) { "Copy link" } }
                    }
                    @if notice.revoked { p.notice role="status" { "Link revoked: it no longer opens the review." } }
                    p.muted { "Print or save as PDF with your browser's print command." }
                }
                (links_table(user, &path, quarter, &links))
            }
            (report(&review, &state.review))
        },
    ))
}

pub async fn internal(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ReviewQuery>,
) -> PageResult {
    let quarter = quarter_param(query.quarter.as_deref())?;
    let notice = Notice {
        link: query.link,
        saved: query.saved.as_deref() == Some("goals"),
        revoked: query.revoked.is_some(),
    };
    internal_page(&user, &state, &headers, id, quarter, notice).await
}

/// Back to the review page, with what to confirm (POST-redirect-GET).
fn back_to(id: &str, quarter: Quarter, what: &str) -> Response {
    axum::response::Redirect::to(&format!(
        "{}/review?quarter={quarter}&{what}",
        crate::share::account_path(id)
    ))
    .into_response()
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
) -> Result<Response, PageError> {
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
    let now_ms = chrono::Utc::now().timestamp_millis();
    let link = ShareLink {
        id: 0,
        account_id: id.clone(),
        quarter: quarter.to_string(),
        created_by: user.user.username.clone(),
        created_ms: now_ms,
        // Whole seconds: the token carries the expiry in seconds.
        expires_ms: (now_ms / 1000 + form.days * 86_400) * 1000,
        revoked_ms: None,
    };
    let made = with_source(&state, move |source, _| {
        if crate::store::account_name(source, &link.account_id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(source.add_share_link(&link)?))
    })
    .await?
    .ok_or_else(|| PageError::not_found(format!("no account {id}")))?;
    tracing::info!(account = %id, %quarter, link = made, by = %user.user.username, days = form.days, "review share link created");
    Ok(back_to(&id, quarter, &format!("link={made}#share-link")))
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
    quarter: String,
}

/// `POST /accounts/{id}/review/links/{link}/revoke`.
pub async fn revoke(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, link)): Path<(String, i64)>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !super::can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot revoke share links"));
    }
    let quarter = quarter_param(Some(&form.quarter))?;
    let account = id.clone();
    let revoked = with_source(&state, move |source, _| {
        Ok(source.revoke_share_link(&account, link, chrono::Utc::now().timestamp_millis())?)
    })
    .await?;
    if !revoked {
        return Err(PageError::not_found(format!(
            "no active share link {link} on account {id}"
        )));
    }
    tracing::info!(account = %id, link, by = %user.user.username, "review share link revoked");
    Ok(back_to(&id, quarter, "revoked=1#share-links"))
}

/// Most KPI targets one review keeps.
const TARGETS_MAX: usize = 50;

/// `POST /accounts/{id}/review/goals`: goals, the sections shown and KPI targets (fields
/// `goals`, `show:SECTION`, `target:KPI`).
pub async fn goals(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    user.check_post(&headers, field("csrf").unwrap_or(""))?;
    if !super::can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot write goals"));
    }
    let quarter = quarter_param(field("quarter"))?;
    let plan = plan_of(&fields)?;
    let account = id.clone();
    let known = with_source(&state, move |source, _| {
        let known = crate::store::account_name(source, &account)?.is_some();
        if known {
            users::set_review_plan(source, &account, &quarter.to_string(), &plan)?;
        }
        Ok(known)
    })
    .await?;
    if !known {
        return Err(PageError::not_found(format!("no account {id}")));
    }
    Ok(back_to(&id, quarter, "saved=goals#review-plan"))
}

/// The review plan a form posted; a bad field is named.
fn plan_of(fields: &[(String, String)]) -> Result<ReviewPlan, PageError> {
    let goals = fields
        .iter()
        .find(|(k, _)| k == "goals")
        .map_or("", |(_, v)| v.trim());
    if goals.chars().count() > GOALS_CHARS_MAX {
        return Err(PageError::bad_request(format!(
            "goals: at most {GOALS_CHARS_MAX} characters"
        )));
    }
    // Unchecked boxes are not posted: the form says it had them (`sections`), and a post
    // without them (a script's) shows every section.
    let with_sections = fields.iter().any(|(k, _)| k == "sections");
    let hidden = SECTIONS
        .iter()
        .filter(|(name, _)| {
            with_sections
                && !fields
                    .iter()
                    .any(|(k, _)| k.strip_prefix("show:") == Some(name))
        })
        .map(|(name, _)| name.to_string())
        .collect();
    let mut targets = std::collections::BTreeMap::new();
    for (key, value) in fields {
        let Some(name) = key.strip_prefix("target:") else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        if name.is_empty() || name.len() > crate::limits::ID_BYTES_MAX {
            return Err(PageError::bad_request(format!(
                "target: a KPI name is 1 to {} bytes",
                crate::limits::ID_BYTES_MAX
            )));
        }
        let target: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| {
                PageError::bad_request(format!("target:{name}: {value:?} is not a number"))
            })?;
        targets.insert(name.to_string(), target);
    }
    if targets.len() > TARGETS_MAX {
        return Err(PageError::bad_request(format!(
            "target: at most {TARGETS_MAX} KPI targets"
        )));
    }
    Ok(ReviewPlan {
        goals: (!goals.is_empty()).then(|| goals.to_string()),
        hidden,
        targets,
    })
}

/// `GET /r/{token}`: the review behind a share link, no sign-in.
pub async fn shared(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let refused = |e: LinkError| {
        let status = if matches!(e, LinkError::Expired | LinkError::Revoked) {
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
    let opened = match share::verify(&secret, &token, chrono::Utc::now().timestamp()) {
        Ok(found) => found,
        Err(e) => return Ok(refused(e)),
    };
    let quarter = opened.quarter;
    let review = with_source(&state, move |source, s| {
        if let Some(id) = opened.link {
            match source.share_link(id)? {
                Some(link) if link.revoked_ms.is_some() => return Ok(Err(LinkError::Revoked)),
                Some(link) if link.account_id == opened.account => {}
                _ => return Ok(Err(LinkError::Invalid)),
            }
        }
        Ok(Ok(load(source, s, &opened.account, quarter)?))
    })
    .await?;
    let review = match review {
        Ok(review) => review,
        Err(e) => return Ok(refused(e)),
    };
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
