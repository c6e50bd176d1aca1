//! The dashboard: server-rendered pages (maud) for signed-in users, with a small embedded
//! stylesheet and script and charts drawn as SVG on the server. Pages read through the same
//! store functions as the REST API, so both show the same numbers.

pub mod account;
pub mod analysis;
pub mod auth;
pub mod charts;
pub mod inbox;
pub mod listening;
pub mod portfolio;
pub mod review;
pub mod settings;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::NaiveDate;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::api::ApiError;
use super::AppState;
use crate::store::StoreError;
use crate::store::{User, UserRole};

pub use auth::SignedIn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portfolio") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/portfolio", get(portfolio::page))
        .route("/portfolio.csv", get(portfolio::csv))
        .route("/portfolio/views", post(portfolio::save_view))
        .route("/portfolio/views/delete", post(portfolio::delete_view))
        .route("/accounts/{id}", get(account::page))
        .route("/accounts/{id}/review", get(review::internal))
        .route("/accounts/{id}/review/share", post(review::share))
        .route("/accounts/{id}/review/goals", post(review::goals))
        .route(
            "/accounts/{id}/review/links/{link}/revoke",
            post(review::revoke),
        )
        .route("/r/{token}", get(review::shared))
        .route("/segments", get(analysis::segments))
        .route("/indicators", get(analysis::indicators))
        .route("/outcomes", get(analysis::outcomes))
        .route("/onboarding", get(analysis::onboarding))
        .route("/listening", get(listening::page))
        .route("/accounts/{id}/notes", post(listening::add_note))
        .route("/accounts/{id}/people", post(account::people::set_role))
        .route("/accounts/{id}/reason", post(listening::set_reason))
        .route("/inbox", get(inbox::page))
        .route("/inbox/tasks/{id}", post(inbox::update))
        .route("/accounts/{id}/tasks", post(inbox::create))
        .route("/accounts/{id}/playbooks", post(inbox::start_playbook))
        .route("/settings", get(settings::page))
        .route("/settings/users", post(settings::create_user))
        .route("/settings/users/delete", post(settings::delete_user))
        .route("/settings/tokens", post(settings::create_token))
        .route("/settings/tokens/delete", post(settings::delete_token))
        .route("/settings/rules", post(settings::create_rule))
        .route("/settings/rules/delete", post(settings::delete_rule))
        .route("/settings/outbox/retry", post(settings::retry))
        .route("/settings/channels", post(settings::add_channel))
        .route("/settings/channels/delete", post(settings::delete_channel))
        .route("/settings/surveys", post(settings::save_policy))
        .route("/settings/surveys/reset", post(settings::reset_policy))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("assets/app.css")) }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    "application/javascript; charset=utf-8",
                    include_str!("assets/app.js"),
                )
            }),
        )
        .route_layer(axum::middleware::map_response(page_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Pages may load their own stylesheet and script and nothing else; forms post only here.
/// Referrers go to this site only: browsers then send `Origin` on our own form posts
/// (with `no-referrer` they send `Origin: null`), which the CSRF check reads.
async fn page_headers(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    response
}

/// An error shown as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, what)
    }

    pub fn bad_request(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, what)
    }

    pub fn forbidden(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, what)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::BadParameter { .. } | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "page internal error");
                return PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the server log)",
                );
            }
            _ => StatusCode::BAD_REQUEST,
        };
        PageError::new(status, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        let body = bare(
            title,
            html! {
                main.narrow {
                    h1 { (self.status.as_u16()) " " (title) }
                    p.error role="alert" { (self.message) }
                    p { a href="/portfolio" { "Back to the portfolio" } }
                }
            },
        );
        (self.status, body).into_response()
    }
}

pub type PageResult = Result<Markup, PageError>;

/// The `<head>` of every page: the embedded stylesheet and script, nothing from elsewhere.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · bellwether" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/assets/app.css";
            script src="/assets/app.js" defer {}
        }
    }
}

/// A page without navigation (login, errors, the shared review).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (content) }
        }
    }
}

/// A page of the signed-in dashboard: navigation, the user, sign-out.
pub fn layout(user: &SignedIn, title: &str, active: &str, content: Markup) -> Markup {
    let links: &[(&str, &str)] = &[
        ("/portfolio", "Portfolio"),
        ("/segments", "Segments"),
        ("/indicators", "Indicators"),
        ("/outcomes", "Outcomes"),
        ("/onboarding", "Onboarding"),
        ("/listening", "Listening"),
        ("/inbox", "Inbox"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/portfolio" { "bellwether" }
                    button.menu type="button" aria-controls="main-nav" aria-expanded="false" { "Menu" }
                    nav id="main-nav" aria-label="Main" {
                        @for (href, label) in links {
                            a href=(href) aria-current=[(*href == active).then_some("page")] { (label) }
                        }
                        @if user.user.role == UserRole::Admin {
                            a href="/settings" aria-current=[("/settings" == active).then_some("page")] { "Settings" }
                        }
                    }
                    form.signout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(user.csrf);
                        span.who { (user.user.username) " (" (user.user.role.as_str()) ")" }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" { (content) }
            }
        }
    }
}

/// A hidden CSRF field for a form of the signed-in dashboard.
pub fn csrf_field(user: &SignedIn) -> Markup {
    csrf_field_value(&user.csrf)
}

/// A hidden CSRF field from the session's token.
pub fn csrf_field_value(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// Whether the user may change things (not a viewer).
pub fn can_write(user: &User) -> bool {
    user.role != UserRole::Viewer
}

// ---- formatting lives in web::format; these are the names pages use most ----

pub use crate::format::{
    day_or_dash, instant, instant_day, money, number, percent, thousands, value_text,
};

/// A renewal day, with "in N days" called out under `accounts::RENEWAL_SOON_DAYS`.
pub fn renewal_day(day: NaiveDate, as_of: NaiveDate) -> Markup {
    let left = (day - as_of).num_days();
    html! {
        (crate::format::day(day))
        @if (0..crate::accounts::RENEWAL_SOON_DAYS).contains(&left) { " " span.soon { "in " (crate::format::days(left)) } }
    }
}

/// A tier as a coloured label that does not rely on colour alone.
pub fn tier_badge(tier: Option<&str>) -> Markup {
    match tier {
        Some(t) => html! { span class=(format!("tier tier-{t}")) data-tier=(t) { (t) } },
        None => {
            html! { span.tier.tier-none data-tier="" title="no tier: no health model yet, or none for this segment" { "no tier" } }
        }
    }
}

/// Today (UTC) unless the page is asked for another day with `?as_of=`.
pub fn as_of(text: Option<&str>) -> Result<NaiveDate, PageError> {
    Ok(super::metrics::date_param(
        "as_of",
        text,
        super::metrics::today(),
    )?)
}

/// Rendered text for `PreEscaped` use in SVG (already escaped by the caller).
pub fn raw(text: String) -> PreEscaped<String> {
    PreEscaped(text)
}
