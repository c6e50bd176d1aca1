//! What the dashboard keeps on the embedded store beside the metrics: an account's people
//! with their roles, the views users saved and settings changed on the dashboard.

use rusqlite::{params, Connection};

use rusqlite::OptionalExtension;

use crate::store::{Contact, People, SavedView, StoreError, StoredSettings, Views};

impl People for Connection {
    fn account_people(&self, account: &str) -> Result<Vec<Contact>, StoreError> {
        let mut query = self.prepare(
            "SELECT p.user_id, u.traits, r.role FROM (
                 SELECT user_id FROM memberships WHERE account_id = ?1 AND user_id IS NOT NULL
                 UNION SELECT user_id FROM contact_roles WHERE account_id = ?1
             ) p
             LEFT JOIN users u ON u.user_id = p.user_id
             LEFT JOIN contact_roles r ON r.account_id = ?1 AND r.user_id = p.user_id",
        )?;
        let rows = query.query_map([account], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut people = Vec::new();
        for row in rows {
            let (user, traits, role) = row?;
            let traits = traits
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            people.push(Contact::from_traits(&user, &traits, role));
        }
        people.sort_by(crate::store::contact_order);
        Ok(people)
    }

    fn set_contact_role(
        &self,
        account: &str,
        user: &str,
        role: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match role {
            Some(role) => self.execute(
                "INSERT OR REPLACE INTO contact_roles (account_id, user_id, role, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                params![account, user, role, now_ms],
            )?,
            None => self.execute(
                "DELETE FROM contact_roles WHERE account_id = ?1 AND user_id = ?2",
                params![account, user],
            )?,
        };
        Ok(())
    }
}

impl Views for Connection {
    fn saved_views(&self, username: &str, page: &str) -> Result<Vec<SavedView>, StoreError> {
        let mut query = self.prepare(
            "SELECT page, name, query FROM saved_views WHERE username = ?1 AND page = ?2 ORDER BY name",
        )?;
        let rows = query.query_map([username, page], |r| {
            Ok(SavedView {
                page: r.get(0)?,
                name: r.get(1)?,
                query: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_view(&self, username: &str, view: &SavedView, now_ms: i64) -> Result<(), StoreError> {
        self.execute(
            "INSERT OR REPLACE INTO saved_views (username, page, name, query, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![username, view.page, view.name, view.query, now_ms],
        )?;
        Ok(())
    }

    fn delete_view(
        &self,
        username: &str,
        page: &str,
        name: &str,
        _now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM saved_views WHERE username = ?1 AND page = ?2 AND name = ?3",
            params![username, page, name],
        )? > 0)
    }
}

impl StoredSettings for Connection {
    fn stored_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_stored_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(value) => self.execute(
                "INSERT OR REPLACE INTO settings (name, value, updated_ms) VALUES (?1, ?2, ?3)",
                params![name, value, chrono::Utc::now().timestamp_millis()],
            )?,
            None => self.execute("DELETE FROM settings WHERE name = ?1", [name])?,
        };
        Ok(())
    }
}
