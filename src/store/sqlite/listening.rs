//! CSM notes on the embedded store.

use crate::store::Notes;
use rusqlite::{params, Connection, OptionalExtension};

use std::collections::HashMap;

use crate::store::{NewNote, Note, ReviewPlan, ShareLink, StoreError};

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

    fn add_notes(&self, notes: &[NewNote<'_>]) -> Result<usize, StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO notes (account_id, author, person, kind, text, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for note in notes {
                insert.execute(params![
                    note.account,
                    note.author,
                    note.person,
                    note.kind,
                    note.text,
                    note.at_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(notes.len())
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

    fn review_plan(&self, account: &str, quarter: &str) -> Result<Option<ReviewPlan>, StoreError> {
        Ok(self
            .query_row(
                "SELECT goals, hidden, targets FROM review_goals WHERE account_id = ?1 AND quarter = ?2",
                [account, quarter],
                |r| {
                    Ok(ReviewPlan::from_stored(
                        r.get(0)?,
                        &r.get::<_, String>(1)?,
                        &r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?)
    }

    fn set_review_plan(
        &self,
        account: &str,
        quarter: &str,
        plan: &ReviewPlan,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT OR REPLACE INTO review_goals (account_id, quarter, goals, updated_ms, hidden, targets) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![account, quarter, plan.goals.as_deref().unwrap_or(""), chrono::Utc::now().timestamp_millis(), plan.hidden_text(), plan.targets_text()],
        )?;
        Ok(())
    }

    fn add_share_link(&self, link: &ShareLink) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO share_links (account_id, quarter, created_by, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![link.account_id, link.quarter, link.created_by, link.created_ms, link.expires_ms],
        )?;
        Ok(self.last_insert_rowid())
    }

    fn share_links(&self, account: &str) -> Result<Vec<ShareLink>, StoreError> {
        let mut query = self.prepare(&format!(
            "SELECT {LINK_COLUMNS} FROM share_links WHERE account_id = ?1 ORDER BY id DESC"
        ))?;
        let rows = query.query_map([account], link_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn share_link(&self, id: i64) -> Result<Option<ShareLink>, StoreError> {
        Ok(self
            .query_row(
                &format!("SELECT {LINK_COLUMNS} FROM share_links WHERE id = ?1"),
                [id],
                link_row,
            )
            .optional()?)
    }

    fn revoke_share_link(&self, account: &str, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.execute(
            "UPDATE share_links SET revoked_ms = ?3 WHERE id = ?1 AND account_id = ?2 AND revoked_ms IS NULL",
            params![id, account, now_ms],
        )? > 0)
    }
}

const LINK_COLUMNS: &str =
    "id, account_id, quarter, created_by, created_ms, expires_ms, revoked_ms";

fn link_row(r: &rusqlite::Row) -> rusqlite::Result<ShareLink> {
    Ok(ShareLink {
        id: r.get(0)?,
        account_id: r.get(1)?,
        quarter: r.get(2)?,
        created_by: r.get(3)?,
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked_ms: r.get(6)?,
    })
}
