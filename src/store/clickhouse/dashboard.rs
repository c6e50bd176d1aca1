//! The dashboard on ClickHouse: users, sessions, secrets and review goals shared by every
//! node, an account's records and latest events, the features known.
//!
//! Each table is a ReplacingMergeTree read through `argMax(column, version)` grouped by its
//! key (never `FINAL` with a filter on another column: older servers may filter before
//! they merge). A change is a newer row; a deletion is a newer row marked `deleted`.

use crate::store::{Sessions, Tokens, Users};

use serde::Deserialize;

use super::{block_on, fetch_all, now_version, run, ClickHouse};
use crate::records::{self};
use crate::store::Records;
use crate::store::{ApiToken, Role, StoreError};
use crate::store::{Session, User, UserRole};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(clickhouse::Row, Deserialize)]
struct UserRow {
    username: String,
    role: String,
    csm_id: String,
    password_hash: String,
    password_ms: i64,
    deleted: u8,
}

const USER_COLUMNS: &str = "username, argMax(role, version) AS role, argMax(csm_id, version) AS csm_id,
     argMax(password_hash, version) AS password_hash, argMax(password_ms, version) AS password_ms, argMax(deleted, version) AS deleted";

impl UserRow {
    fn user(&self) -> Result<User, StoreError> {
        let role = UserRole::parse(&self.role).ok_or_else(|| {
            StoreError::Invalid(format!(
                "user {} has unknown role {:?}",
                self.username, self.role
            ))
        })?;
        Ok(User {
            username: self.username.clone(),
            role,
            csm_id: (!self.csm_id.is_empty()).then(|| self.csm_id.clone()),
        })
    }
}

impl ClickHouse {
    /// The current row of a user, deleted or not.
    async fn user_current(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let query = self
            .client
            .query(&format!(
                "SELECT {USER_COLUMNS} FROM dashboard_users WHERE username = ? GROUP BY username"
            ))
            .bind(username);
        Ok(fetch_all::<UserRow>(query, "dashboard user").await?.pop())
    }

    async fn write_user(
        &self,
        user: &User,
        hash: &str,
        password_ms: i64,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO dashboard_users (username, role, csm_id, password_hash, password_ms, version, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&user.username)
            .bind(user.role.as_str())
            .bind(user.csm_id.as_deref().unwrap_or(""))
            .bind(hash)
            .bind(password_ms)
            .bind(now_version())
            .bind(u8::from(deleted));
        run(query, "store a dashboard user").await
    }

    async fn session_current(
        &self,
        digest: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            username: String,
            csrf: String,
            opened_ms: i64,
            expires_ms: i64,
            deleted: u8,
        }
        let query = self
            .client
            .query(
                "SELECT argMax(username, version) AS username, argMax(csrf, version) AS csrf, argMax(opened_ms, version) AS opened_ms,
                        argMax(expires_ms, version) AS expires_ms, argMax(deleted, version) AS deleted
                 FROM web_sessions WHERE token_sha256 = ? GROUP BY token_sha256",
            )
            .bind(digest);
        let Some(session) = fetch_all::<Stored>(query, "dashboard session").await?.pop() else {
            return Ok(None);
        };
        if session.deleted != 0 || session.expires_ms <= now_ms {
            return Ok(None);
        }
        let Some(user) = self.user_current(&session.username).await? else {
            return Ok(None);
        };
        if user.deleted != 0 || user.password_ms > session.opened_ms {
            return Ok(None);
        }
        Ok(Some(Session {
            user: user.user()?,
            csrf: session.csrf,
        }))
    }

    async fn write_session(
        &self,
        digest: &str,
        username: &str,
        csrf: &str,
        expires_ms: i64,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO web_sessions (token_sha256, username, csrf, opened_ms, expires_ms, version, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(digest)
            .bind(username)
            .bind(csrf)
            .bind(now_ms())
            .bind(expires_ms)
            .bind(now_version())
            .bind(u8::from(deleted));
        run(query, "store a dashboard session").await
    }

    async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            value: String,
        }
        let query = self
            .client
            .query(
                "SELECT argMax(value, version) AS value FROM secrets WHERE name = ? GROUP BY name",
            )
            .bind(name);
        match fetch_all::<Stored>(query, "secret").await?.pop() {
            Some(stored) => {
                let text = stored.value.as_bytes();
                let digits = text.chunks(2).map(|pair| {
                    std::str::from_utf8(pair)
                        .ok()
                        .and_then(|p| u8::from_str_radix(p, 16).ok())
                });
                Ok(Some(
                    digits
                        .collect::<Option<Vec<u8>>>()
                        .filter(|v| v.len() * 2 == text.len())
                        .ok_or_else(|| StoreError::Invalid(format!("secret {name} is not hex")))?,
                ))
            }
            None => Ok(None),
        }
    }
}

impl Users for ClickHouse {
    fn user_row(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        match block_on(self.user_current(username))?? {
            Some(row) if row.deleted == 0 => Ok(Some((row.user()?, row.password_hash))),
            _ => Ok(None),
        }
    }

    fn csm_known(&self, csm_id: &str) -> Result<bool, StoreError> {
        let csms = records::kind("csms").expect("invariant: a record kind");
        Ok(Records::get(self, csms, &[csm_id.to_string()])?.is_some())
    }

    /// Two nodes creating the same new user at once both succeed; the later write wins.
    fn put_user(&self, user: &User, hash: &str, replace: bool) -> Result<bool, StoreError> {
        block_on(async {
            if !replace
                && self
                    .user_current(&user.username)
                    .await?
                    .is_some_and(|u| u.deleted == 0)
            {
                return Ok(false);
            }
            self.write_user(user, hash, now_ms(), false).await?;
            Ok(true)
        })?
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let query = self.client.query(&format!(
            "SELECT {USER_COLUMNS} FROM dashboard_users GROUP BY username ORDER BY username"
        ));
        block_on(fetch_all::<UserRow>(query, "dashboard users"))??
            .iter()
            .filter(|u| u.deleted == 0)
            .map(UserRow::user)
            .collect()
    }

    /// The user's sessions end with it: a session needs its user.
    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        block_on(async {
            let Some(row) = self
                .user_current(username)
                .await?
                .filter(|u| u.deleted == 0)
            else {
                return Ok(false);
            };
            self.write_user(&row.user()?, "", row.password_ms, true)
                .await?;
            Ok(true)
        })?
    }
}

impl Sessions for ClickHouse {
    fn open_session(
        &self,
        digest: &str,
        username: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        block_on(self.write_session(digest, username, csrf, expires_ms, false))?
    }

    fn session_of(&self, digest: &str, now_ms: i64) -> Result<Option<Session>, StoreError> {
        block_on(self.session_current(digest, now_ms))?
    }

    fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        block_on(self.write_session(digest, "", "", 0, true))?
    }

    /// Two nodes making the secret at once: each writes its own, and the one stored first
    /// (the highest version) is what every node reads from then on.
    fn secret_or(&self, name: &str, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        block_on(async {
            if let Some(value) = self.stored_secret(name).await? {
                return Ok(value);
            }
            let query = self
                .client
                .query("INSERT INTO secrets (name, value, version) VALUES (?, ?, ?)")
                .bind(name)
                .bind(crate::store::sqlite::hex(&fresh))
                .bind(u64::MAX - now_version());
            run(query, "store a secret").await?;
            self.stored_secret(name).await?.ok_or_else(|| {
                StoreError::ClickHouse(format!("secret {name} is not there after it was written"))
            })
        })?
    }
}

impl Tokens for ClickHouse {
    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        Ok(block_on(self.token_rows(None))??
            .into_iter()
            .filter(|t| t.deleted == 0)
            .map(|t| ApiToken {
                id: t.id,
                name: t.name,
                role: t.role,
                created_ms: t.created_ms,
                expires_ms: (t.expires_ms != 0).then_some(t.expires_ms),
            })
            .collect())
    }

    fn add_token(
        &self,
        name: &str,
        role: Role,
        valid_for_seconds: Option<i64>,
    ) -> Result<String, StoreError> {
        block_on(self.create_token(name, role, valid_for_seconds))?
    }

    /// A newer version of the token, marked deleted.
    fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        block_on(async {
            let Some(token) = self
                .token_rows(Some(id))
                .await?
                .pop()
                .filter(|t| t.deleted == 0)
            else {
                return Ok(false);
            };
            let query = self
                .client
                .query("INSERT INTO api_tokens (id, name, role, token_sha256, created_ms, expires_ms, version, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, 1)")
                .bind(token.id)
                .bind(token.name)
                .bind(token.role)
                .bind(token.token_sha256)
                .bind(token.created_ms)
                .bind(token.expires_ms)
                .bind(now_version());
            run(query, "revoke a token").await?;
            Ok(true)
        })?
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct TokenRow {
    id: i64,
    name: String,
    role: String,
    token_sha256: String,
    created_ms: i64,
    expires_ms: i64,
    deleted: u8,
}

impl ClickHouse {
    /// Each token's current row (or one token's), by id.
    async fn token_rows(&self, id: Option<i64>) -> Result<Vec<TokenRow>, StoreError> {
        let filter = if id.is_some() { "WHERE id = ?" } else { "" };
        let mut query = self.client.query(&format!(
            "SELECT id, argMax(name, version) AS name, argMax(role, version) AS role, argMax(token_sha256, version) AS token_sha256,
                    argMax(created_ms, version) AS created_ms, argMax(expires_ms, version) AS expires_ms, argMax(deleted, version) AS deleted
             FROM api_tokens {filter} GROUP BY id ORDER BY id"
        ));
        if let Some(id) = id {
            query = query.bind(id);
        }
        fetch_all(query, "API tokens").await
    }
}

/// An account's people on ClickHouse: those grouped into it (group events) and those given
/// a role, with the newest non-empty name and email traits of their identify events.
impl crate::store::People for ClickHouse {
    fn account_people(&self, account: &str) -> Result<Vec<crate::store::Contact>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Role {
            user_id: String,
            role: String,
        }
        #[derive(clickhouse::Row, Deserialize)]
        struct Traits {
            user_id: String,
            name: String,
            first: String,
            last: String,
            first_snake: String,
            last_snake: String,
            email: String,
        }
        let roles: Vec<Role> = block_on(fetch_all::<Role>(
            self.client
                .query("SELECT user_id, argMax(role, version) AS role FROM contact_roles WHERE account_id = ? GROUP BY user_id")
                .bind(account),
            "contact roles",
        ))??;
        #[derive(clickhouse::Row, Deserialize)]
        struct Member {
            user_id: String,
        }
        let mut people: Vec<String> = block_on(fetch_all::<Member>(
            self.client
                .query("SELECT DISTINCT user_id FROM events WHERE type = 'group' AND group_id = ? AND user_id != ''")
                .bind(account),
            "account members",
        ))??
        .into_iter()
        .map(|m| m.user_id)
        .collect();
        people.extend(
            roles
                .iter()
                .filter(|r| !r.role.is_empty())
                .map(|r| r.user_id.clone()),
        );
        people.sort_unstable();
        people.dedup();
        if people.is_empty() {
            return Ok(Vec::new());
        }
        let field = |key: &str| {
            format!("argMaxIf(visitParamExtractString(traits, '{key}'), timestamp_ms, visitParamExtractString(traits, '{key}') != '')")
        };
        let query = format!(
            "SELECT user_id, {}, {}, {}, {}, {}, {} FROM events WHERE type = 'identify' AND has(?, user_id) GROUP BY user_id",
            field("name"),
            field("firstName"),
            field("lastName"),
            field("first_name"),
            field("last_name"),
            field("email")
        );
        let traits: std::collections::HashMap<String, Traits> = block_on(fetch_all::<Traits>(
            self.client.query(&query).bind(&people),
            "people's traits",
        ))??
        .into_iter()
        .map(|t| (t.user_id.clone(), t))
        .collect();
        let mut out: Vec<crate::store::Contact> = people
            .iter()
            .map(|user| {
                let mut map = serde_json::Map::new();
                if let Some(t) = traits.get(user) {
                    for (key, value) in [
                        ("name", &t.name),
                        ("firstName", &t.first),
                        ("lastName", &t.last),
                        ("first_name", &t.first_snake),
                        ("last_name", &t.last_snake),
                        ("email", &t.email),
                    ] {
                        map.insert(key.into(), value.clone().into());
                    }
                }
                let role = roles
                    .iter()
                    .find(|r| &r.user_id == user && !r.role.is_empty())
                    .map(|r| r.role.clone());
                crate::store::Contact::from_traits(user, &map, role)
            })
            .collect();
        out.sort_by(crate::store::contact_order);
        Ok(out)
    }

    fn set_contact_role(
        &self,
        account: &str,
        user: &str,
        role: Option<&str>,
        _now_ms: i64,
    ) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO contact_roles (account_id, user_id, role, version) VALUES (?, ?, ?, ?)")
            .bind(account)
            .bind(user)
            .bind(role.unwrap_or(""))
            .bind(now_version());
        block_on(run(query, "store a contact role"))?
    }
}

/// Saved views on ClickHouse: a deletion is a newer row marked deleted.
impl crate::store::Views for ClickHouse {
    fn saved_views(
        &self,
        username: &str,
        page: &str,
    ) -> Result<Vec<crate::store::SavedView>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            name: String,
            query: String,
            deleted: u8,
        }
        let query = self
            .client
            .query("SELECT name, argMax(query, version) AS query, argMax(deleted, version) AS deleted FROM saved_views WHERE username = ? AND page = ? GROUP BY name ORDER BY name")
            .bind(username)
            .bind(page);
        Ok(block_on(fetch_all::<Stored>(query, "saved views"))??
            .into_iter()
            .filter(|v| v.deleted == 0)
            .map(|v| crate::store::SavedView {
                page: page.to_string(),
                name: v.name,
                query: v.query,
            })
            .collect())
    }

    fn save_view(
        &self,
        username: &str,
        view: &crate::store::SavedView,
        _now_ms: i64,
    ) -> Result<(), StoreError> {
        block_on(self.put_view(username, &view.page, &view.name, &view.query, false))?
    }

    fn delete_view(
        &self,
        username: &str,
        page: &str,
        name: &str,
        _now_ms: i64,
    ) -> Result<bool, StoreError> {
        if !self
            .saved_views(username, page)?
            .iter()
            .any(|v| v.name == name)
        {
            return Ok(false);
        }
        block_on(self.put_view(username, page, name, "", true))??;
        Ok(true)
    }
}

impl ClickHouse {
    async fn put_view(
        &self,
        username: &str,
        page: &str,
        name: &str,
        query: &str,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let insert = self
            .client
            .query("INSERT INTO saved_views (username, page, name, query, deleted, version) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(username)
            .bind(page)
            .bind(name)
            .bind(query)
            .bind(u8::from(deleted))
            .bind(now_version());
        run(insert, "store a saved view").await
    }
}

/// Dashboard settings on ClickHouse: the newest version of each name wins.
impl crate::store::StoredSettings for ClickHouse {
    fn stored_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            value: String,
            deleted: u8,
        }
        let query = self
            .client
            .query("SELECT argMax(value, version) AS value, argMax(deleted, version) AS deleted FROM settings WHERE name = ? GROUP BY name")
            .bind(name);
        Ok(block_on(fetch_all::<Stored>(query, "settings"))??
            .pop()
            .filter(|s| s.deleted == 0)
            .map(|s| s.value))
    }

    fn set_stored_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO settings (name, value, deleted, version) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(value.unwrap_or(""))
            .bind(u8::from(value.is_none()))
            .bind(now_version());
        block_on(run(query, "store a setting"))?
    }
}
