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
            InForce::read(source, &actions)?,
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
            (actions_sections(user, &actions.3, &actions.0, &actions.1, &actions.2))
            (channels_section(user, &actions.3))
            (surveys_section(user, &actions.3))
        },
    ))
}

/// The sections of what the actions keep: rules, channels, the survey policy, dead letters.
/// Channels: the config file's, and those added here (with a form to add one and delete).
fn channels_section(user: &SignedIn, in_force: &InForce) -> maud::Markup {
    use crate::actions::Channel;
    html! {
        section aria-labelledby="channels" {
            h2 id="channels" { "Channels" }
            @if in_force.config.channels.is_empty() { p.empty { "No channel yet: alerts go to the inbox only." } } @else {
                table.data id="channels-table" {
                    thead { tr { th scope="col" { "Channel" } th scope="col" { "Kind" } th scope="col" { "Goes to" } th scope="col" { "From" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for (name, channel) in &in_force.config.channels {
                        @let here = in_force.channels_here.contains(name);
                        tr data-channel=(name) {
                            th scope="row" { (name) }
                            td { (match channel { Channel::Slack { .. } => "Slack", Channel::Webhook { secret: Some(_), .. } => "webhook (signed)", Channel::Webhook { .. } => "webhook", Channel::Email { .. } => "email" }) }
                            td { (match channel { Channel::Slack { url } | Channel::Webhook { url, .. } => crate::actions::deliver::origin(url), Channel::Email { to } if to == "owner" => "the account's CSM".into(), Channel::Email { to } => to.clone() }) }
                            td { @if here { "added here" } @else { "config" } }
                            td { @if here {
                                form.inline method="post" action="/settings/channels/delete" data-confirm=(format!("Delete the channel {name}?")) {
                                    (csrf_field(user)) input type="hidden" name="name" value=(name);
                                    button type="submit" { "Delete" }
                                }
                            } }
                        }
                    } }
                }
            }
            h3 { "Add a channel" }
            form.stack id="add-channel" method="post" action="/settings/channels" {
                (csrf_field(user))
                div.row {
                    label { "Name (letters, digits, - _)" input name="name" required maxlength="64" pattern="[A-Za-z0-9_\\-]+"; }
                    label { "Kind " select name="type" { option value="slack" { "Slack" } option value="webhook" { "webhook" } option value="email" { "email" } } }
                }
                label { "URL (Slack and webhook)" input name="url" type="url" maxlength="2000" placeholder="https://hooks.slack.com/services/..."; }
                label { "Signing secret (webhook; empty: unsigned)" input name="secret" maxlength="200" autocomplete="off"; }
                label { "To (email: an address, or owner for the account's CSM; needs [actions.smtp])" input name="to" maxlength="320"; }
                button type="submit" { "Add channel" }
            }
        }
    }
}

/// The survey policy in force, as a form (saved here it replaces the config file's).
fn surveys_section(user: &SignedIn, in_force: &InForce) -> maud::Markup {
    let policy = &in_force.config.surveys;
    html! {
        section aria-labelledby="surveys" {
            h2 id="surveys" { "Surveys" }
            p.muted data-field="policy-source" { @if in_force.policy_here { "Set here (the config file's [actions.surveys] does not apply)." } @else { "From the config file's [actions.surveys] (or its defaults)." } }
            form.stack id="survey-policy" method="post" action="/settings/surveys" {
                (csrf_field(user))
                label.check { input type="checkbox" name="enabled" checked[policy.enabled]; " Send surveys (off: nobody is surveyed)" }
                div.row {
                    label.check { input type="checkbox" name="after_ticket" checked[policy.after_ticket]; " After a ticket closes" }
                    label { "asking " select name="after_ticket_kind" { @for (k, l) in [("csat", "CSAT (1-5)"), ("ces", "CES (1-7)")] { option value=(k) selected[policy.after_ticket_kind == k] { (l) } } } }
                    label { "at most once per " input type="number" name="after_ticket_days" min="0" max="366" value=(policy.after_ticket_days) required; " days per person" }
                }
                label.check { input type="checkbox" name="quarterly_nps" checked[policy.quarterly_nps]; " Quarterly NPS to accounts with no ticket in the quarter" }
                label.check { input type="checkbox" name="go_live" checked[policy.go_live]; " The go-live question when a contract goes live" }
                div.row {
                    label { "Never two surveys to one person within " input type="number" name="global_gap_days" min="0" max="366" value=(policy.global_gap_days) required; " days" }
                    label { "links work " input type="number" name="token_valid_days" min="1" max="365" value=(policy.token_valid_days) required; " days" }
                }
                button type="submit" { "Save survey policy" }
            }
            @if in_force.policy_here {
                form.inline method="post" action="/settings/surveys/reset" data-confirm="Go back to the config file's survey policy?" {
                    (csrf_field(user)) button type="submit" { "Use the config file's policy" }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChannelForm {
    csrf: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    to: String,
}

/// `POST /settings/channels`: adds a channel (a config channel's name is taken).
pub async fn add_channel(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ChannelForm>,
) -> Result<Response, PageError> {
    use crate::actions::Channel;
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let name = form.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PageError::bad_request(
            "name: 1 to 64 letters, digits, - or _",
        ));
    }
    if state.actions.channels.contains_key(&name) {
        return Err(PageError::new(
            axum::http::StatusCode::CONFLICT,
            format!("name: channel {name} is defined in the config"),
        ));
    }
    let channel = match form.kind.as_str() {
        "slack" => Channel::Slack {
            url: form.url.trim().to_string(),
        },
        "webhook" => Channel::Webhook {
            url: form.url.trim().to_string(),
            secret: Some(form.secret.trim().to_string()).filter(|s| !s.is_empty()),
        },
        "email" => Channel::Email {
            to: form.to.trim().to_string(),
        },
        other => {
            return Err(PageError::bad_request(format!(
                "type: {other:?} is not slack, webhook or email"
            )))
        }
    };
    let mut check = state.actions.as_ref().clone();
    check.channels = std::collections::BTreeMap::from([(name.clone(), channel.clone())]);
    check.check_channels().map_err(|(field, reason)| {
        PageError::bad_request(format!(
            "{}: {reason}",
            field
                .rsplit('.')
                .next()
                .filter(|f| *f != name)
                .unwrap_or("name")
        ))
    })?;
    let added = name.clone();
    with_source(&state, move |source, _| {
        Ok(change_channels(source, |stored| {
            stored.insert(added, channel);
            true
        })?)
    })
    .await?;
    tracing::info!(channel = %name, by = %user.user.username, "channel added on the dashboard");
    Ok(Redirect::to("/settings?done=channel+added#channels").into_response())
}

/// Changes the channels added on the dashboard: `change` says whether it changed them (then
/// they are stored).
fn change_channels(
    source: &dyn crate::store::Storage,
    change: impl FnOnce(&mut std::collections::BTreeMap<String, crate::actions::Channel>) -> bool,
) -> Result<bool, crate::store::StoreError> {
    let key = crate::actions::CHANNELS_SETTING;
    let mut stored =
        crate::actions::stored_channels(source.stored_setting(key)?.as_deref()).unwrap_or_default();
    if !change(&mut stored) {
        return Ok(false);
    }
    let text = serde_json::to_string(&stored).expect("invariant: channels serialise");
    source.set_stored_setting(key, Some(&text))?;
    Ok(true)
}

/// `POST /settings/channels/delete`: removes a channel added here.
pub async fn delete_channel(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let name = form.name.clone();
    let removed = with_source(&state, move |source, _| {
        // A rule that notifies the channel would stop firing: it is changed first.
        let users: Vec<String> = source
            .stored_rules()?
            .into_iter()
            .filter(|r| r.notify.contains(&name))
            .map(|r| r.name)
            .collect();
        if !users.is_empty() {
            return Ok(Err(users));
        }
        Ok(Ok(change_channels(source, |stored| {
            stored.remove(&name).is_some()
        })?))
    })
    .await?;
    let removed = removed.map_err(|rules| {
        PageError::new(
            axum::http::StatusCode::CONFLICT,
            format!(
                "name: the rule(s) {} notify {}; change or delete them first",
                rules.join(", "),
                form.name
            ),
        )
    })?;
    if !removed {
        return Err(PageError::not_found(format!(
            "no channel {} added here",
            form.name
        )));
    }
    tracing::info!(channel = %form.name, by = %user.user.username, "channel deleted on the dashboard");
    Ok(Redirect::to("/settings?done=channel+deleted#channels").into_response())
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    csrf: String,
    enabled: Option<String>,
    after_ticket: Option<String>,
    after_ticket_kind: String,
    after_ticket_days: u32,
    quarterly_nps: Option<String>,
    go_live: Option<String>,
    global_gap_days: u32,
    token_valid_days: u32,
}

/// `POST /settings/surveys`: the survey policy, checked, replacing the config file's.
pub async fn save_policy(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PolicyForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let policy = crate::actions::surveys::Policy {
        enabled: form.enabled.is_some(),
        after_ticket: form.after_ticket.is_some(),
        after_ticket_days: form.after_ticket_days,
        after_ticket_kind: form.after_ticket_kind.clone(),
        quarterly_nps: form.quarterly_nps.is_some(),
        go_live: form.go_live.is_some(),
        global_gap_days: form.global_gap_days,
        token_valid_days: form.token_valid_days,
    };
    policy
        .check()
        .map_err(|(field, reason)| PageError::bad_request(format!("{field}: {reason}")))?;
    let text = serde_json::to_string(&policy).expect("invariant: a policy serialises");
    with_source(&state, move |source, _| {
        Ok(source.set_stored_setting(crate::actions::SURVEYS_SETTING, Some(&text))?)
    })
    .await?;
    state.signals.poke();
    tracing::info!(by = %user.user.username, enabled = policy.enabled, "survey policy set on the dashboard");
    Ok(Redirect::to("/settings?done=survey+policy+saved#surveys").into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /settings/surveys/reset`: back to the config file's survey policy.
pub async fn reset_policy(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    with_source(&state, move |source, _| {
        Ok(source.set_stored_setting(crate::actions::SURVEYS_SETTING, None)?)
    })
    .await?;
    tracing::info!(by = %user.user.username, "survey policy back to the config file's");
    Ok(Redirect::to("/settings?done=survey+policy+from+the+config+file#surveys").into_response())
}

/// The actions config in force (the file's with what was set here) and what was set here.
struct InForce {
    config: crate::actions::ActionsConfig,
    /// Channels added on this page (not in the config file).
    channels_here: Vec<String>,
    /// Whether the survey policy was set on this page.
    policy_here: bool,
}

impl InForce {
    fn read(
        source: &dyn crate::store::Storage,
        config: &crate::actions::ActionsConfig,
    ) -> Result<InForce, crate::store::StoreError> {
        let channels = source.stored_setting(crate::actions::CHANNELS_SETTING)?;
        Ok(InForce {
            config: crate::actions::run::config_in_force(source, config)?,
            channels_here: crate::actions::stored_channels(channels.as_deref())
                .unwrap_or_default()
                .into_keys()
                .filter(|n| !config.channels.contains_key(n))
                .collect(),
            policy_here: source
                .stored_setting(crate::actions::SURVEYS_SETTING)?
                .is_some(),
        })
    }
}

fn actions_sections(
    user: &SignedIn,
    in_force: &InForce,
    rules: &[crate::actions::Ready],
    stored: &[crate::actions::Rule],
    dead: &[serde_json::Value],
) -> maud::Markup {
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
                label { "Notify channels (comma-separated): " (in_force.config.channels.keys().cloned().collect::<Vec<_>>().join(", ")) input name="notify"; }
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
        // The page with a secret is not kept by the browser (the back button shows none).
        Some(_) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
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
    let config = state.actions.clone();
    let in_force = with_source(&state, move |source, _| {
        Ok(crate::actions::run::config_in_force(source, &config)?)
    })
    .await?;
    crate::actions::prepare(&rule, &in_force).map_err(PageError::bad_request)?;
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
