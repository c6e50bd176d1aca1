//! The portfolio: every account with tier, score and trend, ARR, renewal, usage, licence
//! utilisation, open escalations and last contact; filters applied on a button, tier counts
//! as chips, headers that sort, a CSV of the view, and the most revenue at risk first.
//! A holding (a parent without a contract of its own) is not a customer: it is left out of
//! current customers and shows no tier, its children are listed on their own.

use std::collections::{HashMap, HashSet};

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use super::{
    as_of, instant_day, layout, money, number, percent, tier_badge, PageError, PageResult, SignedIn,
};
use crate::accounts::{self, Facts};
use crate::format;
use crate::store::SavedView;
use crate::web::metrics::{cached_snapshot, with_source};
use crate::web::AppState;

/// Most rows one page lists.
pub const ROWS_MAX: usize = 1_000;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    /// A CSM id, `mine` or `all` (default: `mine` for a CSM user, else `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    csm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    /// `top` for accounts without a parent, or an account id for it and its children.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    /// `current` (default: a contract in force), `former` or `all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sort: Option<String>,
    /// `asc` or `desc` (default: the sort's own, e.g. most at risk first).
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<String>,
}

impl Filters {
    /// This view's query string with some fields changed.
    fn with(&self, change: impl FnOnce(&mut Filters)) -> String {
        let mut f = self.clone();
        change(&mut f);
        serde_urlencoded::to_string(&f).unwrap_or_default()
    }
}

/// Sort keys: (key, column header, descending by default).
const SORTS: &[(&str, &str, bool)] = &[
    ("risk", "At risk", true),
    ("name", "Account", false),
    ("tier", "Tier", false),
    ("score", "Score", false),
    ("arr", "ARR", true),
    ("renewal", "Renewal", false),
    ("usage", "Active days (14)", false),
    ("utilization", "Licences used", false),
    ("escalations", "Escalations", true),
    ("contact", "Last contact", false),
];

const TIERS: &[&str] = &["red", "orange", "yellow", "green"];

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

/// Everything read for one view.
struct Loaded {
    all: Vec<Facts>,
    rows: std::sync::Arc<Vec<crate::metrics::Row>>,
    changes: Vec<crate::store::Change>,
    csms: Vec<(String, String)>,
    infos: Vec<crate::store::AccountInfo>,
}

async fn load(state: &AppState, as_of: NaiveDate) -> Result<Loaded, PageError> {
    let rows = cached_snapshot(state, as_of).await?;
    let since = as_of - Duration::days(7);
    let snapshot = rows.clone();
    let (all, changes, csms, infos) = with_source(state, move |source, s| {
        Ok((
            accounts::facts(source, as_of, &snapshot, s)?,
            source.tier_changes(since, None)?,
            accounts::csms(source)?,
            source.accounts()?,
        ))
    })
    .await?;
    Ok(Loaded {
        all,
        rows,
        changes,
        csms,
        infos,
    })
}

/// The accounts a view lists, sorted, and the tier counts of its other filters.
struct View<'a> {
    shown: Vec<&'a Facts>,
    /// Accounts per tier (and `""`: none) with every filter but the tier's.
    tiers: HashMap<&'a str, usize>,
    metrics: HashMap<&'a str, &'a crate::metrics::Row>,
    holdings: HashSet<&'a str>,
    owner: String,
    status: String,
    sort: String,
    descending: bool,
}

/// A parent without a contract of its own: it holds customers, it is not one.
fn holdings(all: &[Facts]) -> HashSet<&str> {
    let parents: HashSet<&str> = all.iter().filter_map(|f| f.parent_id.as_deref()).collect();
    all.iter()
        .filter(|f| parents.contains(f.account_id.as_str()) && !f.in_force())
        .map(|f| f.account_id.as_str())
        .collect()
}

/// The tier a row shows: none for a holding.
fn tier<'a>(f: &'a Facts, holdings: &HashSet<&str>) -> Option<&'a str> {
    if holdings.contains(f.account_id.as_str()) {
        return None;
    }
    f.health.as_ref().and_then(|h| h.tier.as_deref())
}

// Over 100 lines: one filter per line, in the form's order, then the sort.
#[allow(clippy::too_many_lines)]
fn select<'a>(loaded: &'a Loaded, filters: &Filters, user: &SignedIn) -> View<'a> {
    let all = &loaded.all;
    let metrics: HashMap<&str, &crate::metrics::Row> = loaded
        .rows
        .iter()
        .map(|r| (r.account_id.as_str(), r))
        .collect();
    let holdings = holdings(all);
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
        Some(id) => crate::store::subtree(&loaded.infos, id),
    };
    let q = filters.q.as_deref().unwrap_or("").trim().to_lowercase();
    let status = filters.status.clone().unwrap_or_else(|| "current".into());
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    let others: Vec<&Facts> = all
        .iter()
        .filter(|f| {
            empty(&filters.segment) || filters.segment.as_deref() == Some(f.segment.as_str())
        })
        .filter(|f| empty(&filters.plan) || filters.plan.as_deref() == f.plan.as_deref())
        .filter(|f| owner_id.is_none() || owner_id.as_deref() == f.csm_id.as_deref())
        .filter(|f| match filters.parent.as_deref() {
            None | Some("") => true,
            Some("top") => f.parent_id.is_none(),
            Some(_) => parent_ids.contains(&f.account_id),
        })
        .filter(|f| match status.as_str() {
            "all" => true,
            "former" => !f.in_force() && !holdings.contains(f.account_id.as_str()),
            _ => f.in_force(),
        })
        .filter(|f| {
            q.is_empty()
                || f.name.to_lowercase().contains(&q)
                || f.account_id.to_lowercase().contains(&q)
        })
        .collect();
    let mut tiers: HashMap<&str, usize> = HashMap::new();
    for f in &others {
        *tiers.entry(tier(f, &holdings).unwrap_or("")).or_default() += 1;
    }
    let shown: Vec<&Facts> = others
        .into_iter()
        .filter(|f| empty(&filters.tier) || filters.tier.as_deref() == tier(f, &holdings))
        .collect();
    let sort = filters
        .sort
        .clone()
        .filter(|s| SORTS.iter().any(|(k, _, _)| k == s))
        .unwrap_or_else(|| "risk".into());
    let natural = SORTS
        .iter()
        .find(|(k, _, _)| *k == sort)
        .is_some_and(|(_, _, d)| *d);
    let descending = match filters.dir.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        _ => natural,
    };
    let number = |f: &Facts, get: fn(&crate::metrics::Row) -> Option<f64>| {
        metrics.get(f.account_id.as_str()).and_then(|m| get(m))
    };
    // Ascending keys; a missing value sorts last either way.
    let key = |f: &Facts| -> Option<f64> {
        match sort.as_str() {
            "arr" => Some(f.arr),
            "score" => f.health.as_ref().and_then(|h| h.score),
            "tier" => tier(f, &holdings)
                .and_then(|t| TIERS.iter().position(|x| *x == t))
                .map(|i| i as f64),
            "renewal" => f.renewal.map(|d| d.num_days_from_ce() as f64),
            "usage" => number(f, |m| Some(m.active_days_14d as f64)),
            "utilization" => number(f, |m| m.license_utilization),
            "escalations" => number(f, |m| Some(m.escalations_open as f64)),
            "contact" => f.last_contact_day().map(|d| d.num_days_from_ce() as f64),
            _ => Some(f.revenue_at_risk()),
        }
    };
    // Each row's key once, not per comparison.
    let mut keyed: Vec<(Option<f64>, &Facts)> = shown.into_iter().map(|f| (key(f), f)).collect();
    keyed.sort_by(|(ka, a), (kb, b)| {
        let order = if sort == "name" {
            a.name.cmp(&b.name)
        } else {
            match (ka, kb) {
                (Some(x), Some(y)) => x.total_cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        };
        let missing_last = sort != "name" && (ka.is_none() || kb.is_none());
        let order = if descending && !missing_last {
            order.reverse()
        } else {
            order
        };
        order
            .then_with(|| b.arr.total_cmp(&a.arr))
            .then_with(|| a.account_id.cmp(&b.account_id))
    });
    let shown: Vec<&Facts> = keyed.into_iter().map(|(_, f)| f).collect();
    View {
        shown,
        tiers,
        metrics,
        holdings,
        owner,
        status,
        sort,
        descending,
    }
}

use chrono::Datelike;

pub async fn page(
    user: SignedIn,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> PageResult {
    let as_of = as_of(filters.as_of.as_deref())?;
    let loaded = load(&state, as_of).await?;
    let view = select(&loaded, &filters, &user);
    let currency = state.currency.report.clone();
    let username = user.user.username.clone();
    let saved = with_source(&state, move |source, _| {
        Ok(source.saved_views(&username, VIEWS_PAGE)?)
    })
    .await?;
    Ok(layout(
        &user,
        "Portfolio",
        "/portfolio",
        html! {
            h1 { "Portfolio" }
            (filter_form(&loaded, &filters, &view, &user))
            (saved_views(&saved, &filters, &user))
            (summary(&view, &filters, &currency))
            (table(&loaded, &view, &filters, &currency, as_of))
        },
    ))
}

/// `GET /portfolio.csv?<the view's filters>`: the rows of the view, as listed.
pub async fn csv(
    user: SignedIn,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> Result<Response, PageError> {
    let as_of = as_of(filters.as_of.as_deref())?;
    let loaded = load(&state, as_of).await?;
    let view = select(&loaded, &filters, &user);
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "account_id",
        "name",
        "segment",
        "tier",
        "health_score",
        "arr",
        "revenue_at_risk",
        "renewal",
        "active_days_14d",
        "license_utilization",
        "escalations_open",
        "last_contact",
        "csm",
    ];
    let failed = |e: csv::Error| {
        PageError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    writer.write_record(header).map_err(failed)?;
    let text = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for f in &view.shown {
        let m = view.metrics.get(f.account_id.as_str());
        writer
            .write_record([
                f.account_id.clone(),
                f.name.clone(),
                f.segment.clone(),
                tier(f, &view.holdings).unwrap_or("").to_string(),
                text(f.health.as_ref().and_then(|h| h.score)),
                f.arr.to_string(),
                f.revenue_at_risk().to_string(),
                f.renewal.map(|d| d.to_string()).unwrap_or_default(),
                text(m.map(|m| m.active_days_14d as f64)),
                text(m.and_then(|m| m.license_utilization)),
                text(m.map(|m| m.escalations_open as f64)),
                f.last_contact.clone().unwrap_or_default(),
                f.csm_name.clone().unwrap_or_default(),
            ])
            .map_err(failed)?;
    }
    let body = writer.into_inner().map_err(|e| {
        PageError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"portfolio.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

fn filter_form(loaded: &Loaded, filters: &Filters, view: &View, user: &SignedIn) -> Markup {
    let all = &loaded.all;
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
    let owner = view.owner.as_str();
    html! {
        form.filters method="get" action="/portfolio" aria-label="Filter accounts" {
            @if let Some(tier) = filters.tier.as_deref() { input type="hidden" name="tier" value=(tier); }
            @if let Some(sort) = filters.sort.as_deref() { input type="hidden" name="sort" value=(sort); }
            @if let Some(dir) = filters.dir.as_deref() { input type="hidden" name="dir" value=(dir); }
            label { "Search" input type="search" name="q" value=(filters.q.as_deref().unwrap_or("")); }
            label { "Segment" select name="segment" {
                option value="" { "all" }
                @for s in &segments { option value=(s) selected[selected(&filters.segment, s)] { (format::humanize(s)) } }
            } }
            label { "Plan" select name="plan" {
                option value="" { "all" }
                @for p in &plans { option value=(p) selected[selected(&filters.plan, p)] { (format::humanize(p)) } }
            } }
            label { "CSM" select name="csm" {
                option value="all" selected[owner == "all"] { "everyone" }
                @if user.user.csm_id.is_some() { option value="mine" selected[owner == "mine"] { "my accounts" } }
                @for (id, name) in &loaded.csms { option value=(id) selected[owner == id] { (name) } }
            } }
            label { "Hierarchy" select name="parent" {
                option value="" { "all accounts" }
                option value="top" selected[selected(&filters.parent, "top")] { "top-level only" }
                @for p in &parents { option value=(p.account_id) selected[selected(&filters.parent, &p.account_id)] { (p.name) " and children" } }
            } }
            label { "Customers" select name="status" {
                @for (key, label) in [("current", "current"), ("former", "former"), ("all", "all")] { option value=(key) selected[view.status == key] { (label) } }
            } }
            button type="submit" { "Apply filters" }
        }
    }
}

/// The page saved views belong to.
const VIEWS_PAGE: &str = "portfolio";
/// Most views one user saves.
pub const VIEWS_MAX: usize = 50;
/// Longest view name.
pub const VIEW_NAME_CHARS_MAX: usize = 60;

/// The user's saved views as links (each deletable), and a form to save this one.
fn saved_views(saved: &[SavedView], filters: &Filters, user: &SignedIn) -> Markup {
    let current = filters.with(|_| {});
    html! {
        section.views aria-label="Saved views" {
            @if !saved.is_empty() {
                span.muted { "Saved views: " }
                ul.views { @for v in saved {
                    li data-view=(v.name) {
                        a href=(format!("/portfolio?{}", v.query)) aria-current=[(v.query == current).then_some("true")] { (v.name) }
                        form.inline method="post" action="/portfolio/views/delete" data-confirm=(format!("Delete the saved view {:?}?", v.name)) {
                            (super::csrf_field(user))
                            input type="hidden" name="name" value=(v.name);
                            button.link type="submit" aria-label=(format!("Delete {}", v.name)) { "×" }
                        }
                    }
                } }
            }
            form.inline id="save-view" method="post" action="/portfolio/views" {
                (super::csrf_field(user))
                input type="hidden" name="query" value=(current);
                label { "Save this view as " input name="name" required maxlength=(VIEW_NAME_CHARS_MAX) placeholder="e.g. Red renewals"; }
                " " button type="submit" { "Save view" }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ViewForm {
    csrf: String,
    name: String,
    #[serde(default)]
    query: String,
}

/// `POST /portfolio/views`: saves the view (its filters, sort and direction) under a name,
/// replacing the user's view of that name; back to the view.
pub async fn save_view(
    user: SignedIn,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<ViewForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > VIEW_NAME_CHARS_MAX {
        return Err(PageError::bad_request(format!(
            "name: 1 to {VIEW_NAME_CHARS_MAX} characters"
        )));
    }
    // Only what the page understands is kept, written as the page writes it.
    let filters: Filters = serde_urlencoded::from_str(form.query.trim_start_matches('?'))
        .map_err(|e| PageError::bad_request(format!("query: not a portfolio view: {e}")))?;
    let view = SavedView {
        page: VIEWS_PAGE.into(),
        name,
        query: filters.with(|_| {}),
    };
    let (username, query) = (user.user.username.clone(), view.query.clone());
    let saved = with_source(&state, move |source, _| {
        let views = source.saved_views(&username, VIEWS_PAGE)?;
        if views.len() >= VIEWS_MAX && !views.iter().any(|v| v.name == view.name) {
            return Ok(false);
        }
        source.save_view(&username, &view, chrono::Utc::now().timestamp_millis())?;
        Ok(true)
    })
    .await?;
    if !saved {
        return Err(PageError::bad_request(format!(
            "name: at most {VIEWS_MAX} saved views; delete one first"
        )));
    }
    Ok(axum::response::Redirect::to(&format!("/portfolio?{query}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeleteViewForm {
    csrf: String,
    name: String,
}

/// `POST /portfolio/views/delete`.
pub async fn delete_view(
    user: SignedIn,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<DeleteViewForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    let username = user.user.username.clone();
    let name = form.name.clone();
    let deleted = with_source(&state, move |source, _| {
        Ok(source.delete_view(
            &username,
            VIEWS_PAGE,
            &name,
            chrono::Utc::now().timestamp_millis(),
        )?)
    })
    .await?;
    if !deleted {
        return Err(PageError::not_found(format!(
            "no saved view {:?}",
            form.name
        )));
    }
    Ok(axum::response::Redirect::to("/portfolio").into_response())
}

fn summary(view: &View, filters: &Filters, currency: &str) -> Markup {
    let at_risk: f64 = view.shown.iter().map(|f| f.revenue_at_risk()).sum();
    let arr: f64 = view.shown.iter().map(|f| f.arr).sum();
    let total = view.shown.len();
    let all: usize = view.tiers.values().sum();
    let chip = |tier: Option<&str>, label: String, count: usize| {
        let current = filters.tier.as_deref().filter(|t| !t.is_empty()) == tier;
        let href = format!(
            "/portfolio?{}",
            filters.with(|f| f.tier = tier.map(str::to_string))
        );
        html! {
            a.chip href=(href) aria-current=[current.then_some("true")] data-tier=(tier.unwrap_or("all")) data-count=(count) {
                @if let Some(t) = tier { span class=(format!("dot tier-{t}")) {} }
                (label) " " strong { (count) }
            }
        }
    };
    html! {
        nav.chips aria-label="Tiers" {
            (chip(None, "All".into(), all))
            @for t in TIERS { (chip(Some(t), format::humanize(t), view.tiers.get(t).copied().unwrap_or(0))) }
            @if let Some(n) = view.tiers.get("").filter(|n| **n > 0) { span.chip.muted { "No tier " strong { (n) } } }
        }
        p.summary {
            span data-field="count" { (total) } " accounts · ARR " (money(arr, currency)) " · revenue at risk " strong { (money(at_risk, currency)) }
            " · " a href=(format!("/portfolio.csv?{}", filters.with(|_| {}))) download { "Download this view (CSV)" }
        }
    }
}

// Over 100 lines: the table's header and one row per account, cell by cell.
#[allow(clippy::too_many_lines)]
fn table(
    loaded: &Loaded,
    view: &View,
    filters: &Filters,
    currency: &str,
    as_of: NaiveDate,
) -> Markup {
    let changed: HashMap<&str, &crate::store::Change> = loaded
        .changes
        .iter()
        .map(|c| (c.account_id.as_str(), c))
        .collect();
    let header = |key: &str| {
        let (_, label, natural) = SORTS
            .iter()
            .find(|(k, _, _)| *k == key)
            .expect("invariant: a sort key");
        let active = view.sort == key;
        let descending = if active { !view.descending } else { *natural };
        let href = format!(
            "/portfolio?{}",
            filters.with(|f| {
                f.sort = Some(key.to_string());
                f.dir = Some(if descending { "desc" } else { "asc" }.into());
            })
        );
        let aria = active.then_some(if view.descending {
            "descending"
        } else {
            "ascending"
        });
        html! {
            th scope="col" aria-sort=[aria] data-sort=(key) {
                a href=(href) { (label) @if active { " " span aria-hidden="true" { (if view.descending { "▼" } else { "▲" }) } } }
            }
        }
    };
    html! {
        @if view.shown.is_empty() {
            p.empty { "No account matches these filters." }
        } @else {
            div.scroll {
                table.data.cards id="portfolio" {
                    thead { tr {
                        (header("name")) th scope="col" { "Segment" } (header("tier")) (header("score"))
                        (header("arr")) (header("risk")) (header("renewal")) (header("usage"))
                        (header("utilization")) (header("escalations")) (header("contact")) th scope="col" { "CSM" }
                    } }
                    tbody {
                        @for f in view.shown.iter().take(ROWS_MAX) {
                            @let m = view.metrics.get(f.account_id.as_str());
                            @let change = changed.get(f.account_id.as_str());
                            @let (arrow, direction) = trend(f);
                            @let holding = view.holdings.contains(f.account_id.as_str());
                            tr data-account=(f.account_id) class=[change.map(|_| "changed")] {
                                th scope="row" data-label="Account" {
                                    a href=(crate::share::account_path(&f.account_id)) { (f.name) }
                                    @if holding { " " span.badge title="a parent without a contract of its own" { "holding" } }
                                    @if let Some(c) = change {
                                        @let title = if c.cause == "model" { "tier changed in the last 7 days with a new health model" } else { "tier changed in the last 7 days" };
                                        span.badge title=(title) data-cause=(c.cause) { (c.from) " → " (c.to) @if c.cause == "model" { " (model)" } }
                                    }
                                }
                                td data-field="segment" data-label="Segment" data-value=(f.segment) { (format::humanize(&f.segment)) }
                                td data-field="tier" data-label="Tier" { (tier_badge(tier(f, &view.holdings))) }
                                td data-field="health_score" data-label="Score" data-value=[f.health.as_ref().and_then(|h| h.score).filter(|_| !holding)] {
                                    @if holding { "–" } @else {
                                        (number(f.health.as_ref().and_then(|h| h.score), 0))
                                        " " span class=(format!("trend trend-{direction}")) aria-label=(format!("trend {direction}")) { (arrow) }
                                    }
                                }
                                td.num data-field="arr" data-label="ARR" data-value=(f.arr) { (money(f.arr, currency)) }
                                td.num data-field="revenue_at_risk" data-label="At risk" data-value=(f.revenue_at_risk()) { (money(f.revenue_at_risk(), currency)) }
                                td data-field="renewal" data-label="Renewal" data-value=[f.renewal.map(|d| d.to_string())] {
                                    @match f.renewal { Some(d) => (super::renewal_day(d, as_of)), None => "–" }
                                }
                                td.num data-field="active_days_14d" data-label="Active days (14)" data-value=[m.map(|m| m.active_days_14d)] {
                                    @match m { Some(m) => { (m.active_days_14d) " of 14" }, None => "–" }
                                }
                                td.num data-field="license_utilization" data-label="Licences used" data-value=[m.and_then(|m| m.license_utilization)] { (percent(m.and_then(|m| m.license_utilization))) }
                                td.num data-field="escalations_open" data-label="Escalations" data-value=[m.map(|m| m.escalations_open)] { (number(m.map(|m| m.escalations_open as f64), 0)) }
                                td data-field="last_contact" data-label="Last contact" { @match &f.last_contact { Some(t) => (instant_day(t)), None => "–" } }
                                td data-label="CSM" { (f.csm_name.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
            }
            @if view.shown.len() > ROWS_MAX { p.muted { "Showing the first " (ROWS_MAX) "; filter to narrow, or download the CSV for every row." } }
        }
    }
}
