//! Dashboard users (argon2id password hashes), their sessions, the server's signing secret
//! and the goals written into quarterly reviews.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};

use super::{hex, token_digest, ApiToken, Role, StoreError};

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

/// Where dashboard users, their sessions, the server's secrets and review goals are kept:
/// the embedded store's tables, or ClickHouse's. The rules (names, passwords, hashing,
/// expiry) are the free functions below, the same on both.
pub trait UserStore {
    /// The user called `username` and their password hash.
    fn user_row(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;
    /// Whether a `csms` record `csm_id` exists.
    fn csm_known(&self, csm_id: &str) -> Result<bool, StoreError>;
    /// Stores a user with a password hash; false when one exists already and `replace` is
    /// not set. Sessions opened before are ended.
    fn put_user(&self, user: &User, hash: &str, replace: bool) -> Result<bool, StoreError>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Deletes a user and ends their sessions; false when there was no such user.
    fn remove_user(&self, username: &str) -> Result<bool, StoreError>;
    /// Opens a session, known by the SHA-256 of its cookie secret.
    fn open_session(
        &self,
        digest: &str,
        username: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// The session of a digest, if it is open at `now_ms` and its user still signs in with
    /// the password it was opened with.
    fn session_of(&self, digest: &str, now_ms: i64) -> Result<Option<Session>, StoreError>;
    fn end_session(&self, digest: &str) -> Result<(), StoreError>;
    /// The secret called `name`, made of `fresh` on first use (the first one stored wins).
    fn secret_or(&self, name: &str, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError>;
    fn review_goals(&self, account: &str, quarter: &str) -> Result<Option<String>, StoreError>;
    fn set_review_goals(&self, account: &str, quarter: &str, goals: &str)
        -> Result<(), StoreError>;
    /// Every API token, by id.
    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Creates an API token and returns its secret (only its SHA-256 is kept).
    fn add_token(
        &self,
        name: &str,
        role: Role,
        valid_for_seconds: Option<i64>,
    ) -> Result<String, StoreError>;
    /// Revokes a token at once; false when there was none with that id.
    fn revoke_token(&self, id: i64) -> Result<bool, StoreError>;
}

/// Creates a user (or, with `replace`, resets an existing one's role and password).
pub fn create_user(
    store: &dyn UserStore,
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
pub fn list_users(store: &dyn UserStore) -> Result<Vec<User>, StoreError> {
    store.users()
}

/// Deletes a user and their sessions; false when there was no such user.
pub fn delete_user(store: &dyn UserStore, username: &str) -> Result<bool, StoreError> {
    store.remove_user(username)
}

/// A dummy hash verified when the user is unknown, so that a wrong name and a wrong
/// password take the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2bV0LB9tgh1y4pFa3d3P4GN1ClEXfAvNrKjtdQ4ACFE";

/// Checks a name and password; on success opens a session and returns its cookie secret.
pub fn sign_in(
    store: &dyn UserStore,
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
pub fn session(store: &dyn UserStore, secret: &str) -> Result<Option<Session>, StoreError> {
    store.session_of(&token_digest(secret), chrono::Utc::now().timestamp_millis())
}

/// Ends a session.
pub fn sign_out(store: &dyn UserStore, secret: &str) -> Result<(), StoreError> {
    store.end_session(&token_digest(secret))
}

/// The server's secret called `name` (32 random bytes made on first use), e.g. the key
/// that signs review share links. It lives in the store, so backups carry it.
pub fn secret(store: &dyn UserStore, name: &str) -> Result<Vec<u8>, StoreError> {
    store.secret_or(name, rand::random::<[u8; 32]>())
}

/// The goals written for an account's quarterly review.
pub fn review_goals(
    store: &dyn UserStore,
    account: &str,
    quarter: &str,
) -> Result<Option<String>, StoreError> {
    store.review_goals(account, quarter)
}

pub fn set_review_goals(
    store: &dyn UserStore,
    account: &str,
    quarter: &str,
    goals: &str,
) -> Result<(), StoreError> {
    store.set_review_goals(account, quarter, goals)
}

fn role_of(username: &str, role: &str) -> Result<UserRole, StoreError> {
    UserRole::parse(role)
        .ok_or_else(|| StoreError::Invalid(format!("user {username} has unknown role {role:?}")))
}

impl UserStore for Connection {
    fn user_row(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let row = self
            .query_row(
                "SELECT role, csm_id, password_hash FROM dashboard_users WHERE username = ?1",
                [username],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(role, csm_id, hash)| {
            Ok((
                User {
                    username: username.to_string(),
                    role: role_of(username, &role)?,
                    csm_id,
                },
                hash,
            ))
        })
        .transpose()
    }

    fn csm_known(&self, csm_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_row("SELECT 1 FROM csms WHERE csm_id = ?1", [csm_id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .is_some())
    }

    fn put_user(&self, user: &User, hash: &str, replace: bool) -> Result<bool, StoreError> {
        let verb = if replace {
            "INSERT OR REPLACE"
        } else {
            "INSERT OR IGNORE"
        };
        let changed = self.execute(
            &format!("{verb} INTO dashboard_users (username, role, csm_id, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![user.username, user.role.as_str(), user.csm_id, hash, chrono::Utc::now().timestamp_millis()],
        )?;
        if changed > 0 {
            // A reset password ends the sessions opened with the old one.
            self.execute(
                "DELETE FROM web_sessions WHERE username = ?1",
                [&user.username],
            )?;
        }
        Ok(changed > 0)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut query =
            self.prepare("SELECT username, role, csm_id FROM dashboard_users ORDER BY username")?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut users = Vec::new();
        for row in rows {
            let (username, role, csm_id) = row?;
            users.push(User {
                role: role_of(&username, &role)?,
                username,
                csm_id,
            });
        }
        Ok(users)
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        self.execute("DELETE FROM web_sessions WHERE username = ?1", [username])?;
        Ok(self.execute(
            "DELETE FROM dashboard_users WHERE username = ?1",
            [username],
        )? > 0)
    }

    fn open_session(
        &self,
        digest: &str,
        username: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM web_sessions WHERE expires_ms < ?1",
            [chrono::Utc::now().timestamp_millis()],
        )?;
        self.execute("INSERT INTO web_sessions (token_sha256, username, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)", params![digest, username, csrf, expires_ms])?;
        Ok(())
    }

    fn session_of(&self, digest: &str, now_ms: i64) -> Result<Option<Session>, StoreError> {
        let row = self
            .query_row(
                "SELECT u.username, u.role, u.csm_id, s.csrf FROM web_sessions s JOIN dashboard_users u ON u.username = s.username
                 WHERE s.token_sha256 = ?1 AND s.expires_ms > ?2",
                params![digest, now_ms],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, String>(3)?)),
            )
            .optional()?;
        Ok(row.and_then(|(username, role, csm_id, csrf)| {
            UserRole::parse(&role).map(|role| Session {
                user: User {
                    username,
                    role,
                    csm_id,
                },
                csrf,
            })
        }))
    }

    fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM web_sessions WHERE token_sha256 = ?1", [digest])?;
        Ok(())
    }

    fn secret_or(&self, name: &str, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        self.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
            params![name, fresh.to_vec()],
        )?;
        Ok(
            self.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })?,
        )
    }

    fn review_goals(&self, account: &str, quarter: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_row(
                "SELECT goals FROM review_goals WHERE account_id = ?1 AND quarter = ?2",
                [account, quarter],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_review_goals(
        &self,
        account: &str,
        quarter: &str,
        goals: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT OR REPLACE INTO review_goals (account_id, quarter, goals, updated_ms) VALUES (?1, ?2, ?3, ?4)",
            params![account, quarter, goals, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        super::list_tokens(self)
    }

    fn add_token(
        &self,
        name: &str,
        role: Role,
        valid_for_seconds: Option<i64>,
    ) -> Result<String, StoreError> {
        super::create_token(self, name, role, valid_for_seconds)
    }

    fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        super::delete_token(self, id)
    }
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
