//! CSM notes on the embedded store.

use rusqlite::{params, Connection};

use crate::store::{ListeningSource, Note, StoreError};

impl ListeningSource for Connection {
    fn add_note(
        &self,
        account: &str,
        author: &str,
        person: Option<&str>,
        text: &str,
    ) -> Result<Option<i64>, StoreError> {
        let known: i64 = self.query_row(
            "SELECT COUNT(*) FROM accounts WHERE account_id = ?1",
            [account],
            |r| r.get(0),
        )?;
        if known == 0 {
            return Ok(None);
        }
        self.execute(
            "INSERT INTO notes (account_id, author, person, text, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![account, author, person, text, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(Some(self.last_insert_rowid()))
    }

    fn stored_notes(&self, account: Option<&str>) -> Result<Vec<Note>, StoreError> {
        let mut query = self.prepare("SELECT id, account_id, author, person, text, created_ms FROM notes WHERE ?1 IS NULL OR account_id = ?1")?;
        let rows = query.query_map([account], |r| {
            Ok(Note {
                id: r.get(0)?,
                account_id: r.get(1)?,
                author: r.get(2)?,
                person: r.get(3)?,
                text: r.get(4)?,
                created_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
