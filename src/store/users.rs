//! Dashboard users (argon2id password hashes), their sessions, the server's signing secret
//! and the goals written into quarterly reviews.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};

use super::{hex, token_digest, StoreError};

/// What a dashboard user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Everything, including users, tokens and settings.
    Admin,
    /// Reads everything, defaults to their own accounts, shares reviews, writes goals.
    Csm,
    /// Reads everything, changes nothing.
    Viewer,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Csm => "csm",
            UserRole::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<UserRole> {
        match text {
            "admin" => Some(UserRole::Admin),
            "csm" => Some(UserRole::Csm),
            "viewer" => Some(UserRole::Viewer),
            _ => None,
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub role: UserRole,
    /// The `csms` record this user is, for "my accounts".
    pub csm_id: Option<String>,
}

/// A session: who, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

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
        return Err(UserError::Username(format!("must be 1 to {USERNAME_CHARS_MAX} characters")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
        return Err(UserError::Username(format!("{c:?} is not allowed (letters, digits, . _ - @)")));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), UserError> {
    let chars = password.chars().count();
    if chars < PASSWORD_CHARS_MIN {
        return Err(UserError::Password(format!("must have at least {PASSWORD_CHARS_MIN} characters")));
    }
    if chars > PASSWORD_CHARS_MAX {
        return Err(UserError::Password(format!("must have at most {PASSWORD_CHARS_MAX} characters")));
    }
    Ok(())
}

/// Creates a user (or, with `replace`, resets an existing one's role and password).
pub fn create_user(conn: &Connection, user: &User, password: &str, replace: bool) -> Result<(), UserError> {
    check_username(&user.username)?;
    check_password(password)?;
    if let Some(csm) = &user.csm_id {
        let known: Option<i64> = conn.query_row("SELECT 1 FROM csms WHERE csm_id = ?1", [csm], |r| r.get(0)).optional()?;
        if known.is_none() {
            return Err(UserError::UnknownCsm(csm.clone()));
        }
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| UserError::Password(e.to_string()))?)
        .map_err(|e| UserError::Password(e.to_string()))?
        .to_string();
    let verb = if replace { "INSERT OR REPLACE" } else { "INSERT OR IGNORE" };
    let changed = conn.execute(
        &format!("{verb} INTO dashboard_users (username, role, csm_id, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![user.username, user.role.as_str(), user.csm_id, hash, chrono::Utc::now().timestamp_millis()],
    )?;
    if changed == 0 {
        return Err(UserError::Exists(user.username.clone()));
    }
    // A reset password ends the sessions opened with the old one.
    conn.execute("DELETE FROM web_sessions WHERE username = ?1", [&user.username])?;
    Ok(())
}

/// Every user, by name.
pub fn list_users(conn: &Connection) -> Result<Vec<User>, StoreError> {
    let mut query = conn.prepare("SELECT username, role, csm_id FROM dashboard_users ORDER BY username")?;
    let rows = query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?;
    let mut users = Vec::new();
    for row in rows {
        let (username, role, csm_id) = row?;
        let role = UserRole::parse(&role).ok_or_else(|| StoreError::Invalid(format!("user {username} has unknown role {role:?}")))?;
        users.push(User { username, role, csm_id });
    }
    Ok(users)
}

/// Deletes a user and their sessions; false when there was no such user.
pub fn delete_user(conn: &Connection, username: &str) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE username = ?1", [username])?;
    Ok(conn.execute("DELETE FROM dashboard_users WHERE username = ?1", [username])? > 0)
}

/// A dummy hash verified when the user is unknown, so that a wrong name and a wrong
/// password take the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2bV0LB9tgh1y4pFa3d3P4GN1ClEXfAvNrKjtdQ4ACFE";

/// Checks a name and password; on success opens a session and returns its cookie secret.
pub fn sign_in(conn: &Connection, username: &str, password: &str) -> Result<Option<String>, StoreError> {
    let stored: Option<String> = conn
        .query_row("SELECT password_hash FROM dashboard_users WHERE username = ?1", [username], |r| r.get(0))
        .optional()?;
    let password = if password.chars().count() > PASSWORD_CHARS_MAX { "" } else { password };
    let hash = stored.as_deref().unwrap_or(DUMMY_HASH);
    let parsed = PasswordHash::new(hash).map_err(|e| StoreError::Invalid(format!("password hash of {username}: {e}")))?;
    let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    if stored.is_none() || !matches {
        return Ok(None);
    }
    let now = chrono::Utc::now().timestamp_millis();
    conn.execute("DELETE FROM web_sessions WHERE expires_ms < ?1", [now])?;
    let secret = hex(&rand::random::<[u8; 32]>());
    let csrf = hex(&rand::random::<[u8; 24]>());
    conn.execute(
        "INSERT INTO web_sessions (token_sha256, username, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_digest(&secret), username, csrf, now + SESSION_MS],
    )?;
    Ok(Some(secret))
}

/// The live session a cookie secret belongs to. Looked up by SHA-256, so timing says
/// nothing about stored sessions.
pub fn session(conn: &Connection, secret: &str) -> Result<Option<Session>, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let row = conn
        .query_row(
            "SELECT u.username, u.role, u.csm_id, s.csrf FROM web_sessions s JOIN dashboard_users u ON u.username = s.username
             WHERE s.token_sha256 = ?1 AND s.expires_ms > ?2",
            params![token_digest(secret), now],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, String>(3)?)),
        )
        .optional()?;
    Ok(row.and_then(|(username, role, csm_id, csrf)| UserRole::parse(&role).map(|role| Session { user: User { username, role, csm_id }, csrf })))
}

/// Ends a session.
pub fn sign_out(conn: &Connection, secret: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE token_sha256 = ?1", [token_digest(secret)])?;
    Ok(())
}

/// The server's secret called `name` (32 random bytes made on first use), e.g. the key
/// that signs review share links. It lives in the database, so backups carry it.
pub fn secret(conn: &Connection, name: &str) -> Result<Vec<u8>, StoreError> {
    conn.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)", params![name, rand::random::<[u8; 32]>().to_vec()])?;
    Ok(conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0))?)
}

/// The goals written for an account's quarterly review.
pub fn review_goals(conn: &Connection, account: &str, quarter: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT goals FROM review_goals WHERE account_id = ?1 AND quarter = ?2", [account, quarter], |r| r.get(0))
        .optional()?)
}

pub fn set_review_goals(conn: &Connection, account: &str, quarter: &str, goals: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO review_goals (account_id, quarter, goals, updated_ms) VALUES (?1, ?2, ?3, ?4)",
        params![account, quarter, goals, chrono::Utc::now().timestamp_millis()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_parses_so_unknown_users_cost_a_verification() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert!(Argon2::default().verify_password(b"whatever", &parsed).is_err());
    }

    #[test]
    fn usernames_are_checked_by_character() {
        assert!(check_username("maja.lind@vendor").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").unwrap_err().to_string().contains("' '"));
    }
}
