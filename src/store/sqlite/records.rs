//! Records in SQLite: generic create/read/update/delete/list driven by the spec in
//! `records.rs`, all-or-nothing imports, and GDPR deletion of a person.

use super::metrics::record_rows;
use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql, Transaction};
use serde_json::{Map, Value};

use crate::limits;
use crate::records::{self, Cell, ColumnType, Kind, Record};
use crate::store::{Deleted, ImportTarget, ListFilter, Page, Records, StoreError, UserDeletion};

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(SqlValue::Null),
            Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Cell::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            Cell::Real(f) => ToSqlOutput::Owned(SqlValue::Real(*f)),
        })
    }
}

fn cell_from_sql(value: ValueRef, ty: ColumnType) -> Cell {
    match (value, ty) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Integer(i), ColumnType::Money | ColumnType::Number) => Cell::Real(i as f64),
        (ValueRef::Integer(i), _) => Cell::Int(i),
        (ValueRef::Real(f), _) => Cell::Real(f),
        (ValueRef::Text(t) | ValueRef::Blob(t), _) => {
            Cell::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

fn column_list(kind: &Kind) -> String {
    kind.columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_condition(kind: &Kind, first_param: usize) -> String {
    kind.key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = ?{}", first_param + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn read_record(kind: &Kind, row: &rusqlite::Row) -> rusqlite::Result<Record> {
    let mut cells = Vec::with_capacity(kind.columns.len());
    for (i, column) in kind.columns.iter().enumerate() {
        cells.push(cell_from_sql(row.get_ref(i)?, column.ty));
    }
    let traits_text: String = row.get(kind.columns.len())?;
    let traits = match serde_json::from_str(&traits_text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Record { cells, traits })
}

pub fn get(conn: &Connection, kind: &Kind, key: &[String]) -> Result<Option<Record>, StoreError> {
    let sql = format!(
        "SELECT {}, traits FROM {} WHERE {}",
        column_list(kind),
        kind.name,
        key_condition(kind, 1)
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(key), |r| read_record(kind, r))
        .optional()?)
}

/// An account's records of `kind`, newest first by `order_by` (a column of the kind), at
/// most `limit`, as JSON objects.
pub fn of_account(
    conn: &Connection,
    kind: &Kind,
    account: &str,
    order_by: &str,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    assert!(
        kind.columns.iter().any(|c| c.name == order_by),
        "invariant: {order_by} is a column of {}",
        kind.name
    );
    let sql = format!(
        "SELECT {}, traits FROM {} WHERE account_id = ?1 ORDER BY {order_by} DESC, {} LIMIT ?2",
        column_list(kind),
        kind.name,
        kind.key.join(", ")
    );
    let mut query = conn.prepare_cached(&sql)?;
    let rows = query.query_map(params![account, limit as i64], |r| read_record(kind, r))?;
    rows.map(|r| Ok(r?.to_json(kind))).collect()
}

/// Inserts or replaces the record's columns; traits are merged into the stored ones.
/// Returns true when the record was new.
fn upsert(tx: &Connection, kind: &Kind, record: &Record) -> Result<bool, StoreError> {
    let existed = get(tx, kind, &record.key(kind))?.is_some();
    let names = column_list(kind);
    let placeholders: Vec<String> = (1..=kind.columns.len() + 1)
        .map(|i| format!("?{i}"))
        .collect();
    let updates: Vec<String> = kind
        .columns
        .iter()
        .filter(|c| !kind.key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", c.name))
        .chain([format!(
            "traits = json_patch({}.traits, excluded.traits)",
            kind.name
        )])
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({names}, traits) VALUES ({values}) ON CONFLICT({key}) DO UPDATE SET {updates}",
        table = kind.name,
        values = placeholders.join(", "),
        key = kind.key.join(", "),
        updates = updates.join(", ")
    );
    let traits = Value::Object(record.traits.clone()).to_string();
    let mut params: Vec<&dyn ToSql> = record.cells.iter().map(|c| c as &dyn ToSql).collect();
    params.push(&traits);
    tx.prepare_cached(&sql)?.execute(params.as_slice())?;
    Ok(!existed)
}

pub fn list(
    conn: &Connection,
    kind: &Kind,
    filters: &[ListFilter],
    after: Option<&[String]>,
    limit: usize,
) -> Result<Page, StoreError> {
    let limit = limit.clamp(1, limits::API_PAGE_ROWS_MAX);
    let mut conditions = Vec::new();
    let mut params: Vec<&dyn ToSql> = Vec::new();
    for filter in filters {
        let (column, op, cell) = match filter {
            ListFilter::Equals(c, v) => (c, "=", v),
            ListFilter::AtLeast(c, v) => (c, ">=", v),
            ListFilter::AtMost(c, v) => (c, "<=", v),
        };
        params.push(cell);
        conditions.push(format!("{column} {op} ?{}", params.len()));
    }
    if let Some(after) = after {
        let first = params.len() + 1;
        for value in after {
            params.push(value);
        }
        let placeholders: Vec<String> = (first..first + after.len())
            .map(|i| format!("?{i}"))
            .collect();
        conditions.push(format!(
            "({}) > ({})",
            kind.key.join(", "),
            placeholders.join(", ")
        ));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {}, traits FROM {} {where_clause} ORDER BY {} LIMIT {}",
        column_list(kind),
        kind.name,
        kind.key.join(", "),
        limit + 1
    );
    let records: Vec<Record> = conn
        .prepare(&sql)?
        .query_map(params.as_slice(), |r| read_record(kind, r))?
        .collect::<Result<_, _>>()?;
    Ok(Page::of(kind, records, limit))
}

pub fn delete(conn: &mut Connection, kind: &Kind, key: &[String]) -> Result<Deleted, StoreError> {
    let tx = super::write_transaction(conn, super::Lock::Main)?;
    if get(&tx, kind, key)?.is_none() {
        return Ok(Deleted::NotFound);
    }
    if kind.name == records::ACCOUNTS.name {
        let id = &key[0];
        let mut referring = Vec::new();
        let children: i64 = tx.query_row(
            "SELECT count(*) FROM accounts WHERE parent_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if children > 0 {
            referring.push(format!("{children} child account(s)"));
        }
        for other in records::KINDS.iter().filter(|k| k.references_account) {
            let n: i64 = tx.query_row(
                &format!("SELECT count(*) FROM {} WHERE account_id = ?1", other.name),
                [id],
                |r| r.get(0),
            )?;
            if n > 0 {
                referring.push(format!("{n} {}", other.name));
            }
        }
        if !referring.is_empty() {
            return Ok(Deleted::Referenced(format!(
                "account {id} still has {}",
                referring.join(", ")
            )));
        }
    }
    tx.execute(
        &format!("DELETE FROM {} WHERE {}", kind.name, key_condition(kind, 1)),
        params_from_iter(key),
    )?;
    tx.commit()?;
    Ok(Deleted::Yes)
}

impl Records for Connection {
    fn get(&self, kind: &'static Kind, key: &[String]) -> Result<Option<Record>, StoreError> {
        get(self, kind, key)
    }

    fn list(
        &self,
        kind: &'static Kind,
        filters: &[ListFilter],
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        list(self, kind, filters, after, limit)
    }

    fn delete(&mut self, kind: &'static Kind, key: &[String]) -> Result<Deleted, StoreError> {
        delete(self, kind, key)
    }

    fn import_target(
        &mut self,
        _kind: &'static Kind,
    ) -> Result<Box<dyn ImportTarget + '_>, StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        Ok(Box::new(Embedded {
            tx,
            inserted: 0,
            updated: 0,
        }))
    }

    fn of_account(
        &self,
        kind: &'static Kind,
        account: &str,
        order_by: &str,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        crate::store::sqlite::records::of_account(self, kind, account, order_by, limit)
    }

    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> {
        record_rows(self, table, columns, None)
    }
}

/// The embedded store's target: one transaction holding bellwether.db's write lock.
struct Embedded<'c> {
    tx: Transaction<'c>,
    inserted: usize,
    updated: usize,
}

impl ImportTarget for Embedded<'_> {
    fn account_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        account_exists(&self.tx, id)
    }

    fn upsert(&mut self, kind: &'static Kind, record: &Record) -> Result<(), StoreError> {
        if upsert(&self.tx, kind, record)? {
            self.inserted += 1;
        } else {
            self.updated += 1;
        }
        Ok(())
    }

    fn parents(&mut self) -> Result<HashMap<String, Option<String>>, StoreError> {
        Ok(self
            .tx
            .prepare("SELECT account_id, parent_id FROM accounts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    fn commit(self: Box<Self>) -> Result<(usize, usize), StoreError> {
        self.tx.commit()?;
        Ok((self.inserted, self.updated))
    }
}

fn account_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")?
        .exists([id])?)
}

/// Deletes the events whose userId is `id` (and, with `anonymous`, those without a userId
/// whose anonymousId is `id`): found through `person_events`, plus the few newer events the
/// rollup worker has not indexed yet; then their `person_events` rows (under both ids).
fn delete_events_of(tx: &Transaction, id: &str, anonymous: bool) -> Result<usize, StoreError> {
    const WHOSE: &str = "(user_id = ?1 OR (?2 AND user_id IS NULL AND anonymous_id = ?1)) RETURNING id, user_id, anonymous_id";
    let indexed = format!(
        "DELETE FROM events WHERE id IN (SELECT id FROM person_events WHERE key = ?1) AND {WHOSE}"
    );
    let newer = format!("DELETE FROM events WHERE id > (SELECT indexed_to FROM rollup_state WHERE id = 1) AND {WHOSE}");
    Ok(
        crate::store::sqlite::rollup::delete_events(tx, &indexed, params![id, anonymous])?.0
            + crate::store::sqlite::rollup::delete_events(tx, &newer, params![id, anonymous])?.0,
    )
}

/// The survey invitations sent to `id` go, with their emails in the outbox (sent or not:
/// they hold the address); the notes about `id` lose the person.
fn unlink_actions(
    tx: &Transaction,
    id: &str,
    deletion: &mut UserDeletion,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM outbox WHERE idempotency_key IN (SELECT 'survey-' || id FROM survey_sends WHERE user_id = ?1)", [id])?;
    deletion.survey_sends += tx.execute("DELETE FROM survey_sends WHERE user_id = ?1", [id])?;
    deletion.notes_unlinked +=
        tx.execute("UPDATE notes SET person = NULL WHERE person = ?1", [id])?;
    Ok(())
}

/// GDPR erasure: the person's events (by userId and by every id linked to it: anonymous
/// ids, and older userIds aliased to it), traits and
/// their history, memberships, identity links, survey answers and survey invitations;
/// tickets, suggestions and notes are kept for the account with the person removed. One
/// transaction over both files.
pub fn delete_user(conn: &mut Connection, user_id: &str) -> Result<UserDeletion, StoreError> {
    let tx = super::write_transaction(conn, super::Lock::Both)?;
    let linked: Vec<String> = tx
        .prepare("SELECT previous_id FROM identity_links WHERE user_id = ?1")?
        .query_map([user_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut deletion = UserDeletion {
        user_id: user_id.to_string(),
        ..UserDeletion::default()
    };
    deletion.events = delete_events_of(&tx, user_id, false)?;
    // A linked id is an anonymousId, or an older userId the person had before an alias.
    for previous in &linked {
        deletion.events += delete_events_of(&tx, previous, true)?;
        deletion.memberships += tx.execute(
            "DELETE FROM memberships WHERE (user_id IS NULL AND anonymous_id = ?1) OR user_id = ?1",
            [previous],
        )?;
        tx.execute("DELETE FROM users WHERE user_id = ?1", [previous])?;
        deletion.trait_versions +=
            tx.execute("DELETE FROM user_traits WHERE user_id = ?1", [previous])?;
        deletion.survey_responses += tx.execute(
            "DELETE FROM survey_responses WHERE user_id = ?1",
            [previous],
        )?;
        deletion.tickets_unlinked += tx.execute(
            "UPDATE tickets SET user_id = NULL WHERE user_id = ?1",
            [previous],
        )?;
        deletion.suggestions_unlinked += tx.execute(
            "UPDATE suggestions SET user_id = NULL WHERE user_id = ?1",
            [previous],
        )?;
        unlink_actions(&tx, previous, &mut deletion)?;
    }
    // Their rollup rows go too; the accounts' first-use days are recomputed without them.
    // The ids are also noted in bellwether.db: a commit writes the two files one after the
    // other, and should it stop between them, the rollup worker purges the rows still there.
    let mut ids = linked.clone();
    ids.push(user_id.to_string());
    crate::store::sqlite::rollup::purge_people(&tx, &ids)?;
    for id in &ids {
        tx.execute("INSERT OR IGNORE INTO erased_ids (key) VALUES (?1)", [id])?;
    }
    tx.execute("DELETE FROM users WHERE user_id = ?1", [user_id])?;
    deletion.trait_versions +=
        tx.execute("DELETE FROM user_traits WHERE user_id = ?1", [user_id])?;
    deletion.memberships += tx.execute("DELETE FROM memberships WHERE user_id = ?1", [user_id])?;
    tx.execute("DELETE FROM contact_roles WHERE user_id = ?1", [user_id])?;
    deletion.identity_links = tx.execute(
        "DELETE FROM identity_links WHERE user_id = ?1 OR previous_id = ?1",
        [user_id],
    )?;
    deletion.survey_responses +=
        tx.execute("DELETE FROM survey_responses WHERE user_id = ?1", [user_id])?;
    deletion.tickets_unlinked += tx.execute(
        "UPDATE tickets SET user_id = NULL WHERE user_id = ?1",
        [user_id],
    )?;
    deletion.suggestions_unlinked += tx.execute(
        "UPDATE suggestions SET user_id = NULL WHERE user_id = ?1",
        [user_id],
    )?;
    unlink_actions(&tx, user_id, &mut deletion)?;
    tx.commit()?;
    // Both files committed: nothing left to purge (a failure here only costs a no-op purge).
    crate::store::sqlite::rollup::purged(conn, &ids)?;
    Ok(deletion)
}
