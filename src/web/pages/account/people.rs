//! The account's people: name and email from their identify traits, and the role a CSM
//! gives each (champion, sponsor, admin, user).

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::View;
use crate::format;
use crate::store::CONTACT_ROLES;
use crate::web::metrics::with_source;
use crate::web::pages::{can_write, PageError, SignedIn};
use crate::web::AppState;

/// Most people listed on the page (champions and sponsors come first).
const PEOPLE_LISTED: usize = 100;

/// The people section: a row per person with their role, settable by writers.
pub(super) fn section(v: &View, path: &str, writable: bool) -> Markup {
    html! {
        section aria-labelledby="people" {
            h2 id="people" { "People" }
            @if v.people.is_empty() { p.empty { "No one from this account has been seen yet." } } @else {
                div.scroll { table.data id="people-table" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" } } }
                    tbody { @for c in v.people.iter().take(PEOPLE_LISTED) {
                        tr data-contact=(c.user_id) {
                            th scope="row" title=(c.user_id) { (c.name.as_deref().unwrap_or("–")) }
                            td { @match &c.email { Some(e) => a href=(format!("mailto:{e}")) { (e) }, None => "–" } }
                            td data-field="role" data-value=(c.role.as_deref().unwrap_or("")) {
                                @if writable {
                                    form.inline method="post" action=(format!("{path}/people")) {
                                        (crate::web::pages::csrf_field_value(&v.csrf))
                                        input type="hidden" name="user" value=(c.user_id);
                                        label { span.sr { "Role of " (c.name.as_deref().or(c.email.as_deref()).unwrap_or(&c.user_id)) }
                                            select name="role" {
                                                option value="" selected[c.role.is_none()] { "–" }
                                                @for r in CONTACT_ROLES { option value=(r) selected[c.role.as_deref() == Some(*r)] { (format::humanize(r)) } }
                                            } }
                                        " " button type="submit" { "Set" }
                                    }
                                } @else {
                                    (c.role.as_deref().map_or("–".into(), format::humanize))
                                }
                            }
                        }
                    } }
                } }
                @if v.people.len() > PEOPLE_LISTED { p.muted { "and " (v.people.len() - PEOPLE_LISTED) " more." } }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    csrf: String,
    user: String,
    role: String,
}

/// `POST /accounts/{id}/people`: a person's role on the account (empty: none).
pub async fn set_role(
    user: SignedIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, PageError> {
    user.check_post(&headers, &form.csrf)?;
    if !can_write(&user.user) {
        return Err(PageError::forbidden("viewers cannot set roles"));
    }
    let role = crate::store::contact_role(&form.role)
        .map_err(|reason| PageError::bad_request(format!("role: {reason}")))?;
    let person = form.user.trim().to_string();
    if person.is_empty() || person.len() > crate::limits::ID_BYTES_MAX {
        return Err(PageError::bad_request(format!(
            "user: 1 to {} bytes",
            crate::limits::ID_BYTES_MAX
        )));
    }
    let account = id.clone();
    let known = with_source(&state, move |source, _| {
        if crate::store::account_name(source, &account)?.is_none() {
            return Ok(false);
        }
        source.set_contact_role(
            &account,
            &person,
            role,
            chrono::Utc::now().timestamp_millis(),
        )?;
        Ok(true)
    })
    .await?;
    if !known {
        return Err(PageError::not_found(format!("no account {id}")));
    }
    Ok(Redirect::to(&format!("{}#people", crate::share::account_path(&id))).into_response())
}
