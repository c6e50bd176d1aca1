//! Dashboard users, sessions, secrets, review goals and API tokens on the embedded store.

use crate::store::{Sessions, Tokens, Users};
use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{ApiToken, Role, Session, StoreError, User, UserRole};

fn role_of(username: &str, role: &str) -> Result<UserRole, StoreError> {
    UserRole::parse(role)
        .ok_or_else(|| StoreError::Invalid(format!("user {username} has unknown role {role:?}")))
}

impl Users for Connection {
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
}

impl Sessions for Connection {
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
}

impl Tokens for Connection {
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
