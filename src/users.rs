//! Dashboard users (argon2id password hashes), their sessions, the server's signing secret
//! and the goals written into quarterly reviews.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::store::sqlite::{hex, token_digest};
use crate::store::{Notes, Sessions, Users};
use crate::store::{ReviewPlan, Session, StoreError, User};

/// How long a session lasts without signing in again.
pub const SESSION_MS: i64 = 12 * 3_600_000;
/// Shortest password `user create` accepts.
pub const PASSWORD_CHARS_MIN: usize = 10;
/// Longest password hashed (argon2 time grows with it; nobody types more).
pub const PASSWORD_CHARS_MAX: usize = 1_024;
/// Longest user name.
pub const USERNAME_CHARS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("username: {0}")]
    Username(String),
    #[error("password: {0}")]
    Password(String),
    #[error("user {0} exists already")]
    Exists(String),
    #[error("csm: no csms record {0:?} (import it first, or leave --csm out)")]
    UnknownCsm(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for UserError {
    fn from(e: rusqlite::Error) -> Self {
        UserError::Store(e.into())
    }
}

/// Checks a user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_username(name: &str) -> Result<(), UserError> {
    if name.is_empty() || name.chars().count() > USERNAME_CHARS_MAX {
        return Err(UserError::Username(format!(
            "must be 1 to {USERNAME_CHARS_MAX} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(UserError::Username(format!(
            "{c:?} is not allowed (letters, digits, . _ - @)"
        )));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), UserError> {
    let chars = password.chars().count();
    if chars < PASSWORD_CHARS_MIN {
        return Err(UserError::Password(format!(
            "must have at least {PASSWORD_CHARS_MIN} characters"
        )));
    }
    if chars > PASSWORD_CHARS_MAX {
        return Err(UserError::Password(format!(
            "must have at most {PASSWORD_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

/// Creates a user (or, with `replace`, resets an existing one's role and password).
pub fn create_user(
    store: &(impl Users + ?Sized),
    user: &User,
    password: &str,
    replace: bool,
) -> Result<(), UserError> {
    check_username(&user.username)?;
    check_password(password)?;
    if let Some(csm) = &user.csm_id {
        if !store.csm_known(csm)? {
            return Err(UserError::UnknownCsm(csm.clone()));
        }
    }
    let hash = Argon2::default()
        .hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .map_err(|e| UserError::Password(e.to_string()))?,
        )
        .map_err(|e| UserError::Password(e.to_string()))?
        .to_string();
    if !store.put_user(user, &hash, replace)? {
        return Err(UserError::Exists(user.username.clone()));
    }
    Ok(())
}

/// Every user, by name.
pub fn list_users(store: &(impl Users + ?Sized)) -> Result<Vec<User>, StoreError> {
    store.users()
}

/// Deletes a user and their sessions; false when there was no such user.
pub fn delete_user(store: &(impl Users + ?Sized), username: &str) -> Result<bool, StoreError> {
    store.remove_user(username)
}

/// A dummy hash verified when the user is unknown, so that a wrong name and a wrong
/// password take the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2bV0LB9tgh1y4pFa3d3P4GN1ClEXfAvNrKjtdQ4ACFE";

/// Checks a name and password; on success opens a session and returns its cookie secret.
pub fn sign_in(
    store: &(impl Users + Sessions + ?Sized),
    username: &str,
    password: &str,
) -> Result<Option<String>, StoreError> {
    let stored = store.user_row(username)?.map(|(_, hash)| hash);
    let password = if password.chars().count() > PASSWORD_CHARS_MAX {
        ""
    } else {
        password
    };
    let hash = stored.as_deref().unwrap_or(DUMMY_HASH);
    let parsed = PasswordHash::new(hash)
        .map_err(|e| StoreError::Invalid(format!("password hash of {username}: {e}")))?;
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    if stored.is_none() || !matches {
        return Ok(None);
    }
    let secret = hex(&rand::random::<[u8; 32]>());
    let csrf = hex(&rand::random::<[u8; 24]>());
    store.open_session(
        &token_digest(&secret),
        username,
        &csrf,
        chrono::Utc::now().timestamp_millis() + SESSION_MS,
    )?;
    Ok(Some(secret))
}

/// The live session a cookie secret belongs to. Looked up by SHA-256, so timing says
/// nothing about stored sessions.
pub fn session(
    store: &(impl Sessions + ?Sized),
    secret: &str,
) -> Result<Option<Session>, StoreError> {
    store.session_of(&token_digest(secret), chrono::Utc::now().timestamp_millis())
}

/// Ends a session.
pub fn sign_out(store: &(impl Sessions + ?Sized), secret: &str) -> Result<(), StoreError> {
    store.end_session(&token_digest(secret))
}

/// The server's secret called `name` (32 random bytes made on first use), e.g. the key
/// that signs review share links. It lives in the store, so backups carry it.
pub fn secret(store: &(impl Sessions + ?Sized), name: &str) -> Result<Vec<u8>, StoreError> {
    store.secret_or(name, rand::random::<[u8; 32]>())
}

/// What was set on an account's quarterly review (goals, hidden sections, KPI targets).
pub fn review_plan(
    store: &(impl Notes + ?Sized),
    account: &str,
    quarter: &str,
) -> Result<ReviewPlan, StoreError> {
    Ok(store.review_plan(account, quarter)?.unwrap_or_default())
}

pub fn set_review_plan(
    store: &(impl Notes + ?Sized),
    account: &str,
    quarter: &str,
    plan: &ReviewPlan,
) -> Result<(), StoreError> {
    store.set_review_plan(account, quarter, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_parses_so_unknown_users_cost_a_verification() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert!(Argon2::default()
            .verify_password(b"whatever", &parsed)
            .is_err());
    }

    #[test]
    fn usernames_are_checked_by_character() {
        assert!(check_username("maja.lind@vendor").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b")
            .unwrap_err()
            .to_string()
            .contains("' '"));
    }
}
