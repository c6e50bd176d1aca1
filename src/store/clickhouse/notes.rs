//! CSM notes on ClickHouse.

use serde::Deserialize;

use super::{block_on, fetch_all, run, ClickHouse};
use crate::store::StoreError;

/// CSM notes on ClickHouse, from a blocking thread.
impl crate::store::ListeningSource for ClickHouse {
    fn add_note(
        &self,
        account: &str,
        author: &str,
        person: Option<&str>,
        text: &str,
    ) -> Result<Option<i64>, StoreError> {
        if crate::store::account_name(self, account)?.is_none() {
            return Ok(None);
        }
        let created_ms = chrono::Utc::now().timestamp_millis();
        let id = created_ms * 1000 + rand::random_range(0..1000);
        let query = self
            .client
            .query("INSERT INTO notes (id, account_id, author, person, text, created_ms) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(account)
            .bind(author)
            .bind(person)
            .bind(text)
            .bind(created_ms);
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
            text: String,
            created_ms: i64,
        }
        let one = if account.is_some() {
            "WHERE account_id = ?"
        } else {
            ""
        };
        let mut query = self.client.query(&format!(
            "SELECT id, account_id, author, person, text, created_ms FROM notes {one}"
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
                text: s.text,
                created_ms: s.created_ms,
            })
            .collect())
    }
}
