//! CSM notes on the embedded store.

use crate::store::Notes;
use rusqlite::{params, Connection, OptionalExtension};

use std::collections::HashMap;

use crate::store::{NewNote, Note, StoreError};

impl Notes for Connection {
    fn add_note(&self, note: &NewNote<'_>) -> Result<Option<i64>, StoreError> {
        let known: i64 = self.query_row(
            "SELECT COUNT(*) FROM accounts WHERE account_id = ?1",
            [note.account],
            |r| r.get(0),
        )?;
        if known == 0 {
            return Ok(None);
        }
        self.execute(
            "INSERT INTO notes (account_id, author, person, kind, text, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![note.account, note.author, note.person, note.kind, note.text, note.at_ms],
        )?;
        Ok(Some(self.last_insert_rowid()))
    }

    fn stored_notes(&self, account: Option<&str>) -> Result<Vec<Note>, StoreError> {
        let mut query = self.prepare("SELECT id, account_id, author, person, kind, text, created_ms FROM notes WHERE ?1 IS NULL OR account_id = ?1")?;
        let rows = query.query_map([account], |r| {
            Ok(Note {
                id: r.get(0)?,
                account_id: r.get(1)?,
                author: r.get(2)?,
                person: r.get(3)?,
                kind: r.get(4)?,
                text: r.get(5)?,
                created_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn last_notes(&self, through_ms: i64) -> Result<HashMap<String, i64>, StoreError> {
        let mut query = self.prepare(
            "SELECT account_id, MAX(created_ms) FROM notes WHERE created_ms <= ?1 GROUP BY account_id",
        )?;
        let rows = query.query_map([through_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
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
}
