//! Settings (admins only): dashboard users, API tokens, alert rules (the config's, and
//! ones added here), channels, the survey policy and the dead letters.

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use maud::html;
use serde::Deserialize;

use super::{csrf_field, instant, layout, PageError, PageResult, SignedIn};
use crate::store::Role;
use crate::store::{User, UserRole};
use crate::web::metrics::with_source;
use crate::web::AppState;

fn admin_only(user: &SignedIn) -> Result<(), PageError> {
    if user.user.role != UserRole::Admin {
        return Err(PageError::forbidden("only admins can change settings"));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

async fn render(
    user: &SignedIn,
    state: &AppState,
    notice: Option<String>,
    new_token: Option<String>,
) -> PageResult {
    let actions = state.actions.clone();
    let (people, tokens, csms, actions) = with_source(state, move |source, _| {
        let actions = (
            crate::actions::run::rules(source, &actions)?,
            source.stored_rules()?,
            crate::actions::run::outbox(source, "dead", 200)?,
        );
        Ok((
            crate::users::list_users(source)?,
            source.tokens()?,
            crate::accounts::csms(source)?,
            actions,
        ))
    })
    .await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    Ok(layout(
        user,
        "Settings",
        "/settings",
        html! {
            h1 { "Settings" }
            @if let Some(n) = &notice { p.notice role="status" { (n) } }
            section aria-labelledby="users" {
                h2 id="users" { "Users" }
                table.data id="users-table" {
                    thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "CSM record" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for u in &people { tr {
                        th scope="row" { (u.username) } td { (u.role.as_str()) } td { (u.csm_id.as_deref().unwrap_or("–")) }
                        td { @if u.username != user.user.username {
                            form.inline method="post" action="/settings/users/delete" data-confirm=(format!("Delete the user {}? Their sessions end.", u.username)) {
                                (csrf_field(user)) input type="hidden" name="username" value=(u.username);
                                button type="submit" { "Delete" }
                            }
                        } }
                    } } }
                }
                h3 { "Add or reset a user" }
                form.stack method="post" action="/settings/users" {
                    (csrf_field(user))
                    label { "User name" input name="username" required maxlength=(crate::users::USERNAME_CHARS_MAX); }
                    label { "Password (at least " (crate::users::PASSWORD_CHARS_MIN) " characters)" input type="password" name="password" required minlength=(crate::users::PASSWORD_CHARS_MIN) autocomplete="new-password"; }
                    label { "Role" select name="role" { option value="csm" { "CSM" } option value="viewer" { "viewer" } option value="admin" { "admin" } } }
                    label { "Is CSM (for \"my accounts\")" select name="csm_id" { option value="" { "none" } @for (id, name) in &csms { option value=(id) { (name) } } } }
                    label.check { input type="checkbox" name="replace" value="1"; " reset if the user exists" }
                    button type="submit" { "Save user" }
                }
            }
            section aria-labelledby="tokens" {
                h2 id="tokens" { "API tokens" }
                @if let Some(secret) = &new_token {
                    div.notice role="status" id="new-token-notice" {
                        p { "New token (shown once: copy it now): " code id="new-token" { (secret) } " " button.copy type="button" data-copy=(secret) { "Copy token" } }
                        p { "Use it as a bearer token, e.g.: " }
                        pre { code { "curl -H 'Authorization: Bearer " (secret) "' " (state.base_url) "/api/v1/accounts" } }
                    }
                }
                table.data id="tokens-table" {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for token in &tokens { tr {
                        td.num { (token.id) } th scope="row" { (token.name) } td { (token.role) } td { (instant(&crate::ingest::format_timestamp(token.created_ms))) }
                        td { @match token.expires_ms {
                            Some(ms) => { (instant(&crate::ingest::format_timestamp(ms))) @if ms <= now_ms { " (expired)" } }
                            None => "never",
                        } }
                        td { form.inline method="post" action="/settings/tokens/delete" data-confirm=(format!("Revoke the token {}? Whatever uses it stops working.", token.name)) {
                            (csrf_field(user)) input type="hidden" name="id" value=(token.id);
                            button type="submit" { "Revoke" }
                        } }
                    } } }
                }
                form.inline method="post" action="/settings/tokens" {
                    (csrf_field(user))
                    label { "Name " input name="name" required maxlength="64"; }
                    label { "Role " select name="role" { option value="read" { "read" } option value="admin" { "admin" } } }
                    label { "Valid for " select name="valid_for" {
                        option value="" { "until revoked" } option value="30d" { "30 days" } option value="90d" selected { "90 days" } option value="365d" { "365 days" }
                    } }
                    button type="submit" { "Create token" }
                }
            }
            (actions_sections(user, state, &actions.0, &actions.1, &actions.2))
        },
    ))
}

/// The sections of what the actions keep: rules, channels, the survey policy, dead letters.
fn actions_sections(
    user: &SignedIn,
    state: &AppState,
    rules: &[crate::actions::Ready],
    stored: &[crate::actions::Rule],
    dead: &[serde_json::Value],
) -> maud::Markup {
    let policy = &state.actions.surveys;
    html! {
        section aria-labelledby="rules" {
            h2 id="rules" { "Alert rules" }
            table.data id="rules-table" {
                thead { tr { th scope="col" { "Rule" } th scope="col" { "When" } th scope="col" { "Segments" } th scope="col" { "Cooldown" } th scope="col" { "Notify" } th scope="col" { "Tasks" } th scope="col" { "From" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for r in rules {
                    @let api = stored.iter().any(|s| s.name == r.rule.name);
                    tr {
                        th scope="row" { (r.rule.name) @if !r.rule.enabled { " (off)" } } td { code { (r.rule.when) } }
                        td { @if r.rule.segments.is_empty() { "all" } @else { (r.rule.segments.join(", ")) } }
                        td.num { (r.rule.cooldown_days) " d" } td { (r.notify.join(", ")) } td.num { (r.tasks.len()) }
                        td { @if api { "added here" } @else { "config" } }
                        td { @if api {
                            form.inline method="post" action="/settings/rules/delete" data-confirm=(format!("Delete the rule {}?", r.rule.name)) { (csrf_field(user)) input type="hidden" name="name" value=(r.rule.name); button type="submit" { "Delete" } }
                        } }
                    }
                } }
            }
            h3 { "Add a rule" }
            form.stack method="post" action="/settings/rules" {
                (csrf_field(user))
                label { "Name (letters, digits, - _)" input name="name" required maxlength="64" pattern="[A-Za-z0-9_\\-]+"; }
                fieldset.conditions {
                    legend { "When all of these hold" }
                    @for n in 1..=3 {
                        div.row {
                            label { "Measure " select name=(format!("measure_{n}")) {
                                option value="" { @if n == 1 { "choose a measure" } @else { "(none)" } }
                                @for (name, _) in crate::actions::EXTRA_MEASURES { option value=(name) { (crate::format::label(name)) } }
                                @for m in crate::metrics::MEASURES.iter().filter(|m| m.kind.is_numeric() || m.name == "usage_frequency") { option value=(m.name) { (m.label) } }
                            } }
                            label { "is " select name=(format!("op_{n}")) { @for (op, words) in [("<", "below"), ("<=", "at most"), ("==", "equal to"), ("!=", "not"), (">=", "at least"), (">", "above")] { option value=(op) { (words) } } } }
                            label { "Value " input name=(format!("value_{n}")) maxlength="200" placeholder="e.g. 90, red, true"; }
                        }
                    }
                    details {
                        summary { "Or write the condition" }
                        label { "Condition (clauses joined by and; replaces the rows above)" input name="when" maxlength=(crate::actions::CONDITION_CHARS_MAX) placeholder="tier == 'red' and renewal_in_days <= 90"; }
                    }
                }
                label { "Segments (comma-separated; empty: all)" input name="segments"; }
                label { "Cooldown days" input type="number" name="cooldown_days" value="7" min="1" max="3660" required; }
                label { "Notify channels (comma-separated): " (state.actions.channels.keys().cloned().collect::<Vec<_>>().join(", ")) input name="notify"; }
                label { "Task for the CSM ({account} is replaced; empty: none)" input name="task" maxlength="200"; }
                button type="submit" { "Add rule" }
            }
            details {
                summary { "Measures a condition can use" }
                p.muted { "Every metric of the export by its column name, and these:" }
                ul { @for (name, description) in crate::actions::EXTRA_MEASURES {
                    li { code { (name) } " — " (crate::format::label(name)) ": " (description) }
                } }
                ul { @for m in crate::metrics::MEASURES.iter().filter(|m| m.kind.is_numeric() || m.name == "usage_frequency") {
                    li { code { (m.name) } " — " (m.label) }
                } }
            }
        }
        section aria-labelledby="channels" {
            h2 id="channels" { "Channels" }
            @if state.actions.channels.is_empty() { p.empty { "No channel configured: alerts go to the inbox only. Add [actions.channels] to the config." } }
            ul { @for (name, channel) in &state.actions.channels { li { (name) ": " (match channel { crate::actions::Channel::Slack { .. } => "Slack", crate::actions::Channel::Webhook { .. } => "webhook (signed)", crate::actions::Channel::Email { .. } => "email" }) } } }
        }
        section aria-labelledby="surveys" {
            h2 id="surveys" { "Surveys" }
            @if !policy.enabled { p { "Surveys are off. Turn them on with " code { "[actions.surveys] enabled = true" } "." } }
            ul {
                li { "After a ticket closes (CSAT): " (if policy.after_ticket { format!("at most once per {} days per person", policy.after_ticket_days) } else { "off".into() }) }
                li { "Quarterly NPS for accounts with no ticket in the quarter: " (if policy.quarterly_nps { "on" } else { "off" }) }
                li { "Go-live question: " (if policy.go_live { "on" } else { "off" }) }
                li { "Never two surveys to one person within " (policy.global_gap_days) " days; links work " (policy.token_valid_days) " days." }
            }
        }
        section aria-labelledby="dead" {
            h2 id="dead" { "Dead letters" }
            @if dead.is_empty() { p.empty { "None: every notification was delivered or is still being retried." } } @else {
                table.data id="dead-table" {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Channel" } th scope="col" { "Target" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for m in dead { tr {
                        td.num { (m["id"]) } th scope="row" { (m["channel"].as_str().unwrap_or("")) } td { (m["target"].as_str().unwrap_or("")) }
                        td.num { (m["attempts"]) } td { (m["last_error"].as_str().unwrap_or("")) }
                        td { form.inline method="post" action="/settings/outbox/retry" { (csrf_field(user)) input type="hidden" name="id" value=(m["id"]); button type="submit" { "Retry" } } }
                    } } }
                }
            }
        }
    }
}

/// The cookie that carries a new token's secret from its POST to the page that shows it
/// once (POST-redirect-GET): HttpOnly, SameSite=Strict, only under /settings, cleared by
/// the page that shows it, and shown only within [`NEW_TOKEN_SHOWN_SECONDS`] of its making.
const NEW_TOKEN_COOKIE: &str = "bw_new_token";
const NEW_TOKEN_SHOWN_SECONDS: i64 = 300;

fn new_token_cookie(secret: &str, secure: bool) -> Cookie<'static> {
    let made = chrono::Utc::now().timestamp();
    Cookie::build((NEW_TOKEN_COOKIE, format!("{secret}.{made}")))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/settings")
        .secure(secure)
        .build()
}

/// The secret a new-token cookie carries, if it was made in the last few minutes.
fn new_token_of(value: &str) -> Option<String> {
    let (secret, made) = value.rsplit_once('.')?;
    let age = chrono::Utc::now().timestamp() - made.parse::<i64>().ok()?;
    ((0..NEW_TOKEN_SHOWN_SECONDS).contains(&age)
        && secret.starts_with("bw_")
        && secret.len() <= 128)
        .then(|| secret.to_string())
}

pub async fn page(
    user: SignedIn,
    State(state): State<AppState>,
    jar: CookieJar,
    Query(notice): Query<Notice>,
) -> Result<Response, PageError> {
    admin_only(&user)?;
    let cookie = jar.get(NEW_TOKEN_COOKIE).map(|c| c.value().to_string());
    let new_token = cookie.as_deref().and_then(new_token_of);
    let page = render(&user, &state, notice.done, new_token).await?;
    Ok(match cookie {
        Some(_) => (
            jar.remove(Cookie::build(NEW_TOKEN_COOKIE).path("/settings")),
            page,
        )
            .into_response(),
        None => page.into_response(),
    })
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    csrf: String,
    username: String,
    password: String,
    role: String,
    csm_id: Option<String>,
    replace: Option<String>,
}

pub async fn create_user(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<UserForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let role = UserRole::parse(&form.role).ok_or_else(|| {
        PageError::bad_request(format!("role: {:?} is not admin, csm or viewer", form.role))
    })?;
    let new = User {
        username: form.username.trim().to_string(),
        role,
        csm_id: form.csm_id.filter(|c| !c.is_empty()),
    };
    let (replace, name) = (form.replace.is_some(), new.username.clone());
    let result = with_source(&state, move |source, _| {
        Ok(crate::users::create_user(
            source,
            &new,
            &form.password,
            replace,
        ))
    })
    .await?;
    match result {
        Ok(()) => {
            tracing::info!(username = %name, by = %user.user.username, "dashboard user saved");
            Ok(Redirect::to("/settings?done=user+saved").into_response())
        }
        Err(crate::users::UserError::Store(e)) => Err(e.into()),
        Err(e) => Err(PageError::bad_request(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteUserForm {
    csrf: String,
    username: String,
}

pub async fn delete_user(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<DeleteUserForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    if form.username == user.user.username {
        return Err(PageError::bad_request(
            "username: you cannot delete yourself",
        ));
    }
    let name = form.username.clone();
    if !with_source(&state, move |source, _| {
        Ok(crate::users::delete_user(source, &name)?)
    })
    .await?
    {
        return Err(PageError::not_found(format!("no user {}", form.username)));
    }
    tracing::info!(username = %form.username, by = %user.user.username, "dashboard user deleted");
    Ok(Redirect::to("/settings").into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    csrf: String,
    name: String,
    role: String,
    /// Empty: until revoked; else a duration like 90d.
    #[serde(default)]
    valid_for: String,
}

pub async fn create_token(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let role = Role::parse(&form.role).ok_or_else(|| {
        PageError::bad_request(format!("role: {:?} is not admin or read", form.role))
    })?;
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(PageError::bad_request("name: must be 1 to 64 characters"));
    }
    let valid_for = match form.valid_for.trim() {
        "" => None,
        text => Some(
            crate::share::parse_validity(text)
                .map_err(|r| PageError::bad_request(format!("valid_for: {r}")))?,
        ),
    };
    let secret = with_source(&state, move |source, _| {
        Ok(source.add_token(&name, role, valid_for)?)
    })
    .await?;
    tracing::info!(name = %form.name, by = %user.user.username, "API token created");
    let cookie = new_token_cookie(&secret, super::auth::behind_tls(&headers));
    Ok((
        CookieJar::new().add(cookie),
        Redirect::to("/settings#new-token"),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct IdForm {
    csrf: String,
    id: i64,
}

pub async fn delete_token(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let id = form.id;
    if !with_source(&state, move |source, _| Ok(source.revoke_token(id)?)).await? {
        return Err(PageError::not_found(format!("no token {id}")));
    }
    tracing::info!(id, by = %user.user.username, "API token revoked");
    Ok(Redirect::to("/settings?done=token+revoked").into_response())
}

#[derive(Debug, Deserialize)]
pub struct RuleForm {
    csrf: String,
    name: String,
    /// Written by hand; when empty, built from the rows below.
    #[serde(default)]
    when: String,
    #[serde(default)]
    measure_1: String,
    #[serde(default)]
    op_1: String,
    #[serde(default)]
    value_1: String,
    #[serde(default)]
    measure_2: String,
    #[serde(default)]
    op_2: String,
    #[serde(default)]
    value_2: String,
    #[serde(default)]
    measure_3: String,
    #[serde(default)]
    op_3: String,
    #[serde(default)]
    value_3: String,
    segments: Option<String>,
    cooldown_days: u32,
    notify: Option<String>,
    task: Option<String>,
}

fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub async fn create_rule(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RuleForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let when = if form.when.trim().is_empty() {
        crate::actions::condition_from(&[
            (&form.measure_1, &form.op_1, &form.value_1),
            (&form.measure_2, &form.op_2, &form.value_2),
            (&form.measure_3, &form.op_3, &form.value_3),
        ])
        .map_err(|(field, reason)| PageError::bad_request(format!("{field}: {reason}")))?
    } else {
        form.when.trim().to_string()
    };
    let rule = crate::actions::Rule {
        name: form.name.trim().to_string(),
        when,
        segments: list(form.segments.as_deref()),
        cooldown_days: form.cooldown_days,
        notify: list(form.notify.as_deref()),
        tasks: form
            .task
            .filter(|t| !t.trim().is_empty())
            .map(|title| {
                vec![crate::actions::TaskTemplate {
                    title: title.trim().to_string(),
                    due_days: 7,
                }]
            })
            .unwrap_or_default(),
        playbook: None,
        cause: None,
        enabled: true,
    };
    crate::actions::prepare(&rule, &state.actions).map_err(PageError::bad_request)?;
    if state
        .actions
        .ready_rules()
        .map_err(|(k, r)| PageError::bad_request(format!("{k}: {r}")))?
        .iter()
        .any(|r| r.rule.name == rule.name)
    {
        return Err(PageError::new(
            axum::http::StatusCode::CONFLICT,
            format!("name: rule {} is defined in the config", rule.name),
        ));
    }
    let name = rule.name.clone();
    with_source(&state, move |source, _| Ok(source.save_rule(&rule)?)).await?;
    state.signals.poke();
    tracing::info!(rule = %name, by = %user.user.username, "alert rule saved");
    Ok(Redirect::to("/settings?done=rule+saved").into_response())
}

#[derive(Debug, Deserialize)]
pub struct NameForm {
    csrf: String,
    name: String,
}

pub async fn delete_rule(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let name = form.name.clone();
    if !with_source(&state, move |source, _| Ok(source.delete_rule(&name)?)).await? {
        return Err(PageError::not_found(format!(
            "no rule {} added here",
            form.name
        )));
    }
    Ok(Redirect::to("/settings?done=rule+deleted").into_response())
}

pub async fn retry(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let id = form.id;
    if !with_source(&state, move |source, _| {
        Ok(crate::actions::run::retry(source, id)?)
    })
    .await?
    {
        return Err(PageError::not_found(format!("no dead message {id}")));
    }
    Ok(Redirect::to("/settings?done=message+queued+again").into_response())
}
