//! Settings (admins only): dashboard users and API tokens.

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{csrf_field, layout, timestamp, PageError, PageResult, SignedIn};
use crate::store::users::{self, User, UserRole};
use crate::store::{self, Role};
use crate::web::records::with_conn;
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

async fn render(user: &SignedIn, state: &AppState, notice: Option<String>, new_token: Option<String>) -> PageResult {
    let (people, tokens, csms) = with_conn(&state.store, |conn| Ok((users::list_users(conn)?, store::list_tokens(conn)?, store::dashboard::csms(conn)?))).await?;
    Ok(layout(user, "Settings", "/settings", html! {
        h1 { "Settings" }
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        section aria-labelledby="users" {
            h2 id="users" { "Users" }
            table.data id="users-table" {
                thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "CSM record" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for u in &people { tr {
                    th scope="row" { (u.username) } td { (u.role.as_str()) } td { (u.csm_id.as_deref().unwrap_or("–")) }
                    td { @if u.username != user.user.username {
                        form.inline method="post" action="/settings/users/delete" {
                            (csrf_field(user)) input type="hidden" name="username" value=(u.username);
                            button type="submit" { "Delete" }
                        }
                    } }
                } } }
            }
            h3 { "Add or reset a user" }
            form.stack method="post" action="/settings/users" {
                (csrf_field(user))
                label { "User name" input name="username" required maxlength=(users::USERNAME_CHARS_MAX); }
                label { "Password (at least " (users::PASSWORD_CHARS_MIN) " characters)" input type="password" name="password" required minlength=(users::PASSWORD_CHARS_MIN) autocomplete="new-password"; }
                label { "Role" select name="role" { option value="csm" { "CSM" } option value="viewer" { "viewer" } option value="admin" { "admin" } } }
                label { "Is CSM (for \"my accounts\")" select name="csm_id" { option value="" { "none" } @for (id, name) in &csms { option value=(id) { (name) } } } }
                label.check { input type="checkbox" name="replace" value="1"; " reset if the user exists" }
                button type="submit" { "Save user" }
            }
        }
        section aria-labelledby="tokens" {
            h2 id="tokens" { "API tokens" }
            @if let Some(secret) = &new_token {
                p.notice role="status" { "New token (shown once): " code id="new-token" { (secret) } }
            }
            table.data {
                thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for (id, name, role, created) in &tokens { tr {
                    td.num { (id) } th scope="row" { (name) } td { (role) } td { (timestamp(&crate::ingest::format_timestamp(*created))) }
                    td { form.inline method="post" action="/settings/tokens/delete" {
                        (csrf_field(user)) input type="hidden" name="id" value=(id);
                        button type="submit" { "Revoke" }
                    } }
                } } }
            }
            form.inline method="post" action="/settings/tokens" {
                (csrf_field(user))
                label { "Name " input name="name" required maxlength="64"; }
                label { "Role " select name="role" { option value="read" { "read" } option value="admin" { "admin" } } }
                button type="submit" { "Create token" }
            }
        }
        p.muted { "Alert rules and survey policies arrive with the actions feature." }
    }))
}

pub async fn page(user: SignedIn, State(state): State<AppState>, Query(notice): Query<Notice>) -> PageResult {
    admin_only(&user)?;
    render(&user, &state, notice.done, None).await
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

pub async fn create_user(user: SignedIn, State(state): State<AppState>, headers: HeaderMap, Form(form): Form<UserForm>) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let role = UserRole::parse(&form.role).ok_or_else(|| PageError::bad_request(format!("role: {:?} is not admin, csm or viewer", form.role)))?;
    let new = User { username: form.username.trim().to_string(), role, csm_id: form.csm_id.filter(|c| !c.is_empty()) };
    let (replace, name) = (form.replace.is_some(), new.username.clone());
    let result = with_conn(&state.store, move |conn| Ok(users::create_user(conn, &new, &form.password, replace))).await?;
    match result {
        Ok(()) => {
            tracing::info!(username = %name, by = %user.user.username, "dashboard user saved");
            Ok(Redirect::to("/settings?done=user+saved").into_response())
        }
        Err(users::UserError::Store(e)) => Err(e.into()),
        Err(e) => Err(PageError::bad_request(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteUserForm {
    csrf: String,
    username: String,
}

pub async fn delete_user(user: SignedIn, State(state): State<AppState>, headers: HeaderMap, Form(form): Form<DeleteUserForm>) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    if form.username == user.user.username {
        return Err(PageError::bad_request("username: you cannot delete yourself"));
    }
    let name = form.username.clone();
    if !with_conn(&state.store, move |conn| Ok(users::delete_user(conn, &name)?)).await? {
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
}

pub async fn create_token(user: SignedIn, State(state): State<AppState>, headers: HeaderMap, Form(form): Form<TokenForm>) -> PageResult {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let role = Role::parse(&form.role).ok_or_else(|| PageError::bad_request(format!("role: {:?} is not admin or read", form.role)))?;
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(PageError::bad_request("name: must be 1 to 64 characters"));
    }
    let secret = with_conn(&state.store, move |conn| Ok(store::create_token(conn, &name, role)?)).await?;
    tracing::info!(name = %form.name, by = %user.user.username, "API token created");
    render(&user, &state, None, Some(secret)).await
}

#[derive(Debug, Deserialize)]
pub struct DeleteTokenForm {
    csrf: String,
    id: i64,
}

pub async fn delete_token(user: SignedIn, State(state): State<AppState>, headers: HeaderMap, Form(form): Form<DeleteTokenForm>) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    admin_only(&user)?;
    let id = form.id;
    if !with_conn(&state.store, move |conn| Ok(store::delete_token(conn, id)?)).await? {
        return Err(PageError::not_found(format!("no token {id}")));
    }
    tracing::info!(id, by = %user.user.username, "API token revoked");
    Ok(Redirect::to("/settings?done=token+revoked").into_response())
}
