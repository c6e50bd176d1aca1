//! CSM notes on ClickHouse.

use super::now_version;
use crate::store::Notes;
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

    fn review_goals(&self, account: &str, quarter: &str) -> Result<Option<String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            goals: String,
        }
        let query = self
            .client
            .query("SELECT argMax(goals, version) AS goals FROM review_goals WHERE account_id = ? AND quarter = ? GROUP BY account_id, quarter")
            .bind(account)
            .bind(quarter);
        Ok(block_on(fetch_all::<Stored>(query, "review goals"))??
            .pop()
            .map(|s| s.goals))
    }

    fn set_review_goals(
        &self,
        account: &str,
        quarter: &str,
        goals: &str,
    ) -> Result<(), StoreError> {
        let query = self.client.query("INSERT INTO review_goals (account_id, quarter, goals, version) VALUES (?, ?, ?, ?)").bind(account).bind(quarter).bind(goals).bind(now_version());
        block_on(run(query, "store review goals"))?
    }
}
