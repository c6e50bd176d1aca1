//! Sign-in and sessions: argon2id password check, a random session secret in an
//! HttpOnly SameSite=Strict cookie (Secure behind TLS), a per-session CSRF token in every
//! form, and an Origin check on every post.

use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use maud::html;
use serde::Deserialize;

use super::{bare, PageError};
use crate::store::User;
use crate::users;
use crate::web::metrics::with_source;
use crate::web::shield::{retry_after, ClientAddr};
use crate::web::AppState;

pub use crate::web::SESSION_COOKIE;

/// A request from a signed-in user.
pub struct SignedIn {
    pub user: User,
    pub csrf: String,
}

impl SignedIn {
    /// Checks a posted form's CSRF token and that the post came from this site.
    pub fn check_post(&self, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
        use subtle_eq::eq;
        if !same_origin(headers) || !eq(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Err(PageError::forbidden(
                "the form was stale or came from another site; reload the page and try again",
            ));
        }
        Ok(())
    }
}

/// Constant-time comparison of two byte strings.
mod subtle_eq {
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        use sha2::Digest;
        // Comparing digests makes the time independent of where the inputs differ.
        sha2::Sha256::digest(a) == sha2::Sha256::digest(b)
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/portfolio");
            let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        };
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(secret) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Err(to_login());
        };
        let session = with_source(state, move |source, _| Ok(users::session(source, &secret)?))
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        match session {
            Some(s) => Ok(SignedIn {
                user: s.user,
                csrf: s.csrf,
            }),
            None => Err(to_login()),
        }
    }
}

/// Whether a TLS proxy in front says the request came over https (`X-Forwarded-Proto`).
pub fn behind_tls(headers: &HeaderMap) -> bool {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok());
    proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Whether a post came from this site: its Origin (or, lacking one, Referer) is this
/// site's scheme and Host. The scheme is `https` when a TLS proxy in front says so with
/// `X-Forwarded-Proto: https`, else `http`. Browsers send Origin on every cross-site post.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if behind_tls(headers) { "https" } else { "http" };
    let site = format!("{scheme}://{host}");
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|h| h.to_str().ok());
    match source {
        None => true, // not a browser form post (curl, tests); the CSRF token still guards
        Some(source) => {
            let authority_end = source
                .get(site.len()..)
                .is_none_or(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']));
            source
                .get(..site.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(&site))
                && authority_end
        }
    }
}

/// Only local paths may be returned to after sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/portfolio".into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_form(next: &str, error: Option<&str>, username: &str) -> maud::Markup {
    bare(
        "Sign in",
        html! {
            main.narrow id="main" {
                h1 { "bellwether" }
                p { "Sign in to see your customers' health." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form.stack method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label { "User name" input name="username" autocomplete="username" required value=(username) autofocus; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
                p.muted { "Accounts are made with " code { "bellwether user create" } "." }
            }
        },
    )
}

pub async fn login_page(Query(query): Query<LoginQuery>) -> maud::Markup {
    login_form(&safe_next(query.next.as_deref()), None, "")
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// Longest user name looked at (longer ones are refused before any work).
const USERNAME_BYTES_MAX: usize = 256;

pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    if !same_origin(&headers) {
        return Err(PageError::forbidden(
            "sign-in must come from this site's own form",
        ));
    }
    if form.username.len() > USERNAME_BYTES_MAX {
        return Ok((
            StatusCode::BAD_REQUEST,
            login_form(&next, Some("That user name is too long."), ""),
        )
            .into_response());
    }
    let refuse = |status: StatusCode, retry: u64, message: &str| {
        (
            status,
            [(header::RETRY_AFTER, retry.to_string())],
            login_form(&next, Some(message), &form.username),
        )
            .into_response()
    };
    // Per address first (whatever the names), then per name from this address: a client
    // guessing one user's password slows itself, not the user signing in from elsewhere.
    if let Err(not_until) = state.limiters.sign_ins_by_address.check_key(&client.0) {
        tracing::warn!(client = %client.0, "dashboard sign-in rate limited (address)");
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after(&not_until),
            "Too many sign-in attempts from your address; wait a minute and try again.",
        ));
    }
    if let Err(not_until) = state
        .limiters
        .sign_ins
        .check_key(&(form.username.clone(), client.0))
    {
        tracing::warn!(username = ?form.username, client = %client.0, "dashboard sign-in rate limited (user name)");
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after(&not_until),
            "Too many sign-in attempts for this user name; wait a minute and try again.",
        ));
    }
    // Each check costs an argon2id hash (~19 MiB): at most a few at once, a short queue.
    let Ok(_slot) = state.hash_gate.slot().await else {
        tracing::warn!(client = %client.0, "dashboard sign-in refused: every hash slot busy");
        return Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            1,
            "The server is busy checking other sign-ins; try again in a moment.",
        ));
    };
    let (name, password) = (form.username.clone(), form.password);
    let secret = with_source(&state, move |source, _| {
        Ok(users::sign_in(source, &name, &password)?)
    })
    .await?;
    let Some(secret) = secret else {
        tracing::info!(username = ?form.username, client = %client.0, "dashboard sign-in refused");
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("Wrong user name or password."), &form.username),
        )
            .into_response());
    };
    tracing::info!(username = ?form.username, client = %client.0, "dashboard sign-in");
    let secure = behind_tls(&headers);
    let cookie = Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(secure);
    Ok((CookieJar::new().add(cookie), Redirect::to(&next)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if let Some(secret) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) {
        with_source(&state, move |source, _| {
            Ok(users::sign_out(source, &secret)?)
        })
        .await?;
    }
    Ok((
        jar.remove(Cookie::build(SESSION_COOKIE).path("/")),
        Redirect::to("/login"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/accounts/a1")), "/accounts/a1");
        assert_eq!(safe_next(Some("//evil.example/x")), "/portfolio");
        assert_eq!(safe_next(Some("https://evil.example")), "/portfolio");
        assert_eq!(safe_next(None), "/portfolio");
    }

    #[test]
    fn posts_from_another_origin_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8780".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:8780".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "https://127.0.0.1:8780".parse().unwrap());
        assert!(!same_origin(&headers), "another scheme is another origin");
        headers.insert(header::ORIGIN, "http://127.0.0.1:87801".parse().unwrap());
        assert!(!same_origin(&headers), "another port");
        headers.remove(header::ORIGIN);
        headers.insert(
            header::REFERER,
            "http://127.0.0.1:8780/settings?x=1".parse().unwrap(),
        );
        assert!(same_origin(&headers));
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(!same_origin(&headers), "behind TLS the site is https");
        headers.insert(
            header::REFERER,
            "https://127.0.0.1:8780/settings".parse().unwrap(),
        );
        assert!(same_origin(&headers));
    }
}
