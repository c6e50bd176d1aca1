//! CSM notes on ClickHouse.

use super::now_version;
use crate::store::{Notes, ReviewPlan, ShareLink};
use serde::Deserialize;

use super::{block_on, fetch_all, run, ClickHouse};
use crate::store::StoreError;

/// CSM notes on ClickHouse, from a blocking thread.
impl Notes for ClickHouse {
    fn add_note(&self, note: &crate::store::NewNote<'_>) -> Result<Option<i64>, StoreError> {
        if crate::store::account_name(self, note.account)?.is_none() {
            return Ok(None);
        }
        let id = chrono::Utc::now().timestamp_millis() * 1000 + rand::random_range(0..1000);
        let query = self
            .client
            .query("INSERT INTO notes (id, account_id, author, person, kind, text, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(note.account)
            .bind(note.author)
            .bind(note.person)
            .bind(note.kind)
            .bind(note.text)
            .bind(note.at_ms);
        block_on(run(query, "store a note"))??;
        Ok(Some(id))
    }

    fn add_notes(&self, notes: &[crate::store::NewNote<'_>]) -> Result<usize, StoreError> {
        if notes.is_empty() {
            return Ok(0);
        }
        // One insert block: stored all or none.
        let base = chrono::Utc::now().timestamp_millis() * 1000 + rand::random_range(0..1000);
        let mut body = Vec::new();
        for (n, note) in notes.iter().enumerate() {
            let line = serde_json::json!({"id": base + n as i64, "account_id": note.account, "author": note.author,
                "person": note.person, "kind": note.kind, "text": note.text, "created_ms": note.at_ms});
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
        block_on(self.insert_lines(
            "notes",
            "id, account_id, author, person, kind, text, created_ms",
            body,
        ))??;
        Ok(notes.len())
    }

    fn stored_notes(&self, account: Option<&str>) -> Result<Vec<crate::store::Note>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            id: i64,
            account_id: String,
            author: String,
            person: Option<String>,
            kind: String,
            text: String,
            created_ms: i64,
        }
        let one = if account.is_some() {
            "WHERE account_id = ?"
        } else {
            ""
        };
        let mut query = self.client.query(&format!(
            "SELECT id, account_id, author, person, kind, text, created_ms FROM notes {one}"
        ));
        if let Some(account) = account {
            query = query.bind(account);
        }
        Ok(block_on(fetch_all::<Stored>(query, "notes"))??
            .into_iter()
            .map(|s| crate::store::Note {
                id: s.id,
                account_id: s.account_id,
                author: s.author,
                person: s.person,
                kind: s.kind,
                text: s.text,
                created_ms: s.created_ms,
            })
            .collect())
    }

    fn last_notes(
        &self,
        through_ms: i64,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            account_id: String,
            last_ms: i64,
        }
        let query = self
            .client
            .query("SELECT account_id, max(created_ms) AS last_ms FROM notes WHERE created_ms <= ? GROUP BY account_id")
            .bind(through_ms);
        Ok(block_on(fetch_all::<Last>(query, "last notes"))??
            .into_iter()
            .map(|l| (l.account_id, l.last_ms))
            .collect())
    }

    fn review_plan(&self, account: &str, quarter: &str) -> Result<Option<ReviewPlan>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            goals: String,
            hidden: String,
            targets: String,
        }
        let query = self
            .client
            .query("SELECT argMax(goals, version) AS goals, argMax(hidden, version) AS hidden, argMax(targets, version) AS targets FROM review_goals WHERE account_id = ? AND quarter = ? GROUP BY account_id, quarter")
            .bind(account)
            .bind(quarter);
        Ok(block_on(fetch_all::<Stored>(query, "review goals"))??
            .pop()
            .map(|s| ReviewPlan::from_stored(s.goals, &s.hidden, &s.targets)))
    }

    fn set_review_plan(
        &self,
        account: &str,
        quarter: &str,
        plan: &ReviewPlan,
    ) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO review_goals (account_id, quarter, goals, hidden, targets, version) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(account)
            .bind(quarter)
            .bind(plan.goals.as_deref().unwrap_or(""))
            .bind(plan.hidden_text())
            .bind(plan.targets_text())
            .bind(now_version());
        block_on(run(query, "store review goals"))?
    }

    fn add_share_link(&self, link: &ShareLink) -> Result<i64, StoreError> {
        let id = chrono::Utc::now().timestamp_millis() * 1000 + rand::random_range(0..1000);
        block_on(self.put_link(&ShareLink { id, ..link.clone() }))??;
        Ok(id)
    }

    fn share_links(&self, account: &str) -> Result<Vec<ShareLink>, StoreError> {
        let query = self
            .client
            .query(&links("WHERE account_id = ?"))
            .bind(account);
        Ok(block_on(fetch_all::<StoredLink>(query, "share links"))??
            .into_iter()
            .map(StoredLink::into_link)
            .collect())
    }

    fn share_link(&self, id: i64) -> Result<Option<ShareLink>, StoreError> {
        let query = self.client.query(&links("WHERE id = ?")).bind(id);
        Ok(block_on(fetch_all::<StoredLink>(query, "share link"))??
            .pop()
            .map(StoredLink::into_link))
    }

    fn revoke_share_link(&self, account: &str, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let Some(link) = self.share_link(id)? else {
            return Ok(false);
        };
        if link.account_id != account || link.revoked_ms.is_some() {
            return Ok(false);
        }
        block_on(self.put_link(&ShareLink {
            revoked_ms: Some(now_ms),
            ..link
        }))??;
        Ok(true)
    }
}

/// The newest version of the share links `filter` (a `WHERE` on the stored rows) selects.
fn links(filter: &str) -> String {
    format!("SELECT id, any(account_id), any(quarter), any(created_by), any(created_ms), any(expires_ms), argMax(revoked_ms, version) FROM share_links {filter} GROUP BY id ORDER BY id DESC")
}

#[derive(clickhouse::Row, Deserialize)]
struct StoredLink {
    id: i64,
    account_id: String,
    quarter: String,
    created_by: String,
    created_ms: i64,
    expires_ms: i64,
    revoked_ms: i64,
}

impl StoredLink {
    fn into_link(self) -> ShareLink {
        ShareLink {
            id: self.id,
            account_id: self.account_id,
            quarter: self.quarter,
            created_by: self.created_by,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: (self.revoked_ms != 0).then_some(self.revoked_ms),
        }
    }
}

impl ClickHouse {
    async fn put_link(&self, link: &ShareLink) -> Result<(), StoreError> {
        let query = self
            .client
            .query("INSERT INTO share_links (id, account_id, quarter, created_by, created_ms, expires_ms, revoked_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(link.id)
            .bind(&link.account_id)
            .bind(&link.quarter)
            .bind(&link.created_by)
            .bind(link.created_ms)
            .bind(link.expires_ms)
            .bind(link.revoked_ms.unwrap_or(0))
            .bind(now_version());
        run(query, "store a share link").await
    }
}
