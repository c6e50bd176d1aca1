//! Records in SQLite: generic create/read/update/delete/list driven by the spec in
//! `records.rs`, all-or-nothing imports, and GDPR deletion of a person.

use std::collections::{HashMap, HashSet};

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql, Transaction};
use serde_json::{Map, Value};

use super::StoreError;
use crate::limits;
use crate::records::{self, Cell, ColumnType, FieldError, Kind, Record};

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

/// One filter of a list request, already checked against the kind's spec.
#[derive(Debug, Clone)]
pub enum ListFilter {
    Equals(&'static str, Cell),
    AtLeast(&'static str, Cell),
    AtMost(&'static str, Cell),
}

/// A page of records and the cursor of the next page, if there is one.
pub struct Page {
    pub records: Vec<Record>,
    pub next_cursor: Option<Vec<String>>,
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

impl Page {
    /// A page of `limit` records from up to `limit + 1` read in key order: a record past
    /// the limit means there is a next page, after the last one kept.
    pub(crate) fn of(kind: &Kind, mut records: Vec<Record>, limit: usize) -> Page {
        let next_cursor = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.key(kind))
        } else {
            None
        };
        Page {
            records,
            next_cursor,
        }
    }
}

/// What a delete did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    NotFound,
    /// Other records still refer to it (named); nothing was deleted.
    Referenced(String),
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

/// A problem with one row of an import (row numbers count a CSV header as row 1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    pub row: usize,
    pub column: String,
    pub reason: String,
}

/// The outcome of an import: either everything was stored, or nothing and the errors.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub kind: &'static str,
    pub rows: usize,
    pub inserted: usize,
    pub updated: usize,
    /// True when the file was stored; false when nothing was.
    pub stored: bool,
    /// All errors found; only the first [`limits::IMPORT_ERRORS_MAX`] are listed.
    pub error_count: usize,
    pub errors: Vec<RowError>,
}

/// Checks reaching beyond one record: its account exists, the currency has a rate, the
/// churn reason is a configured code.
pub struct Checks<'a> {
    /// `Err(reason)` when ARR in this currency cannot be reported.
    pub currency: &'a dyn Fn(&str) -> Result<(), String>,
    /// `Err(reason)` when a subscription's `reason` is not a configured code.
    pub reason: &'a dyn Fn(&str) -> Result<(), String>,
}

/// Where an import's records go: the embedded store's transaction ([`Import::begin`]) or
/// ClickHouse (`store::clickhouse`). Nothing staged is visible until `commit`; a target
/// dropped without it stores nothing.
pub trait ImportTarget {
    fn account_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Stores (or stages) one valid record: a new key inserts, a known one updates (its
    /// traits merged as JSON merge patch).
    fn upsert(&mut self, kind: &'static Kind, record: &Record) -> Result<(), StoreError>;
    /// Every account's parent as the import would leave them.
    fn parents(&mut self) -> Result<HashMap<String, Option<String>>, StoreError>;
    /// Makes everything visible at once; how many keys were new and how many updated.
    fn commit(self: Box<Self>) -> Result<(usize, usize), StoreError>;
}

/// Where records are kept: the embedded store (a `Connection`) or ClickHouse
/// (`store::clickhouse::ClickHouse`). The API's record routes are written once over it.
pub trait RecordStore {
    /// The record with this key.
    fn get(&self, kind: &'static Kind, key: &[String]) -> Result<Option<Record>, StoreError>;
    /// A page of records by key order, after the key `after`.
    fn list(
        &self,
        kind: &'static Kind,
        filters: &[ListFilter],
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, StoreError>;
    /// Deletes a record nothing refers to.
    fn delete(&mut self, kind: &'static Kind, key: &[String]) -> Result<Deleted, StoreError>;
    /// Where one import of `kind` goes (stored whole or not at all).
    fn import_target(
        &mut self,
        kind: &'static Kind,
    ) -> Result<Box<dyn ImportTarget + '_>, StoreError>;
}

impl RecordStore for Connection {
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

/// An import in progress: validated row by row into its target, which stores everything or
/// nothing.
pub struct Import<'c> {
    target: Box<dyn ImportTarget + 'c>,
    kind: &'static Kind,
    checks: Checks<'c>,
    keys: HashMap<Vec<String>, usize>,
    account_rows: HashMap<String, usize>,
    report: ImportReport,
}

impl<'c> Import<'c> {
    /// An import into the embedded store: one transaction, committed whole or rolled back.
    pub fn begin(
        conn: &'c mut Connection,
        kind: &'static Kind,
        checks: Checks<'c>,
    ) -> Result<Import<'c>, StoreError> {
        Ok(Import::into_target(conn.import_target(kind)?, kind, checks))
    }

    /// An import into any target.
    pub fn into_target(
        target: Box<dyn ImportTarget + 'c>,
        kind: &'static Kind,
        checks: Checks<'c>,
    ) -> Import<'c> {
        let report = ImportReport {
            kind: kind.name,
            rows: 0,
            inserted: 0,
            updated: 0,
            stored: false,
            error_count: 0,
            errors: Vec::new(),
        };
        Import {
            target,
            kind,
            checks,
            keys: HashMap::new(),
            account_rows: HashMap::new(),
            report,
        }
    }

    pub fn error(&mut self, row: usize, column: &str, reason: impl Into<String>) {
        self.report.error_count += 1;
        if self.report.errors.len() < limits::IMPORT_ERRORS_MAX {
            self.report.errors.push(RowError {
                row,
                column: column.to_string(),
                reason: reason.into(),
            });
        }
    }

    pub fn kind(&self) -> &'static Kind {
        self.kind
    }

    pub fn has_errors(&self) -> bool {
        self.report.error_count > 0
    }

    pub fn rows(&self) -> usize {
        self.report.rows
    }

    /// Validates one row's references and stores it (inside the transaction). Field errors
    /// from parsing come in as `Err` and are only recorded.
    pub fn row(
        &mut self,
        row: usize,
        parsed: Result<Record, Vec<FieldError>>,
    ) -> Result<(), StoreError> {
        self.report.rows += 1;
        if self.report.rows > limits::IMPORT_ROWS_MAX {
            self.error(
                row,
                "",
                format!("more than {} rows; split the file", limits::IMPORT_ROWS_MAX),
            );
            return Ok(());
        }
        let record = match parsed {
            Ok(record) => record,
            Err(errors) => {
                for e in errors {
                    self.error(row, &e.column, e.reason);
                }
                return Ok(());
            }
        };
        let key = record.key(self.kind);
        if let Some(first) = self.keys.get(&key) {
            let shown = key.join("/");
            self.error(
                row,
                self.kind.key[0],
                format!("duplicate id {shown:?} (first at row {first})"),
            );
            return Ok(());
        }
        self.keys.insert(key.clone(), row);
        if self.kind.references_account {
            let account = record
                .get(self.kind, "account_id")
                .as_text()
                .unwrap_or_default()
                .to_string();
            if !self.target.account_exists(&account)? {
                self.error(row, "account_id", format!("unknown account {account:?}"));
                return Ok(());
            }
        }
        if self.kind.name == records::SUBSCRIPTIONS.name {
            if let Some(currency) = record.get(self.kind, "currency").as_text() {
                if let Err(reason) = (self.checks.currency)(currency) {
                    self.error(row, "currency", reason);
                    return Ok(());
                }
            }
            if let Some(code) = record.get(self.kind, "reason").as_text() {
                if let Err(reason) = (self.checks.reason)(code) {
                    self.error(row, "reason", reason);
                    return Ok(());
                }
            }
        }
        if self.kind.name == records::ACCOUNTS.name {
            self.account_rows.insert(key[0].clone(), row);
        }
        if self.has_errors() {
            return Ok(()); // nothing will be stored; keep validating only
        }
        self.target.upsert(self.kind, &record)
    }

    /// Runs the whole-file checks (account hierarchy) and commits, or rolls back if any row
    /// had an error.
    pub fn finish(mut self) -> Result<ImportReport, StoreError> {
        if self.kind.name == records::ACCOUNTS.name && !self.has_errors() {
            let parents = self.target.parents()?;
            for (row, column, reason) in hierarchy_errors(&parents, &self.account_rows) {
                self.error(row, column, reason);
            }
        }
        if self.has_errors() {
            self.report.errors.sort_by_key(|e| e.row);
            return Ok(self.report); // dropping the target stores nothing
        }
        (self.report.inserted, self.report.updated) = self.target.commit()?;
        self.report.stored = true;
        Ok(self.report)
    }
}

fn account_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")?
        .exists([id])?)
}

/// Unknown parents and cycles among the accounts just imported (`parents`: every account's
/// parent with the import applied).
fn hierarchy_errors(
    parents: &HashMap<String, Option<String>>,
    imported: &HashMap<String, usize>,
) -> Vec<(usize, &'static str, String)> {
    let mut errors = Vec::new();
    let mut reported_cycles: HashSet<String> = HashSet::new();
    let mut ids: Vec<(&String, &usize)> = imported.iter().collect();
    ids.sort_by_key(|(_, row)| **row);
    for (id, &row) in ids {
        let Some(Some(parent)) = parents.get(id) else {
            continue;
        };
        if !parents.contains_key(parent) {
            errors.push((
                row,
                "parent_id",
                format!("unknown parent account {parent:?}"),
            ));
            continue;
        }
        let mut path = vec![id.clone()];
        let mut at = parent.clone();
        while let Some(next) = parents.get(&at) {
            path.push(at.clone());
            if at == *id {
                if reported_cycles.insert(id.clone()) {
                    errors.push((
                        row,
                        "parent_id",
                        format!("hierarchy cycle: {}", path.join(" -> ")),
                    ));
                }
                break;
            }
            if path.len() > parents.len() {
                break; // a cycle above this account, reported at its own row
            }
            match next {
                Some(p) => at = p.clone(),
                None => break,
            }
        }
    }
    errors
}

/// What deleting a person removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UserDeletion {
    pub user_id: String,
    pub events: usize,
    pub trait_versions: usize,
    pub memberships: usize,
    pub identity_links: usize,
    pub survey_responses: usize,
    /// Tickets and suggestions keep their account but lose the person.
    pub tickets_unlinked: usize,
    pub suggestions_unlinked: usize,
    /// Survey invitations sent to the person (their rows go, with their emails in the
    /// outbox: the survey policy no longer needs them).
    pub survey_sends: usize,
    /// CSM notes keep their account and text but lose the person they were about.
    pub notes_unlinked: usize,
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
        super::rollup::delete_events(tx, &indexed, params![id, anonymous])?.0
            + super::rollup::delete_events(tx, &newer, params![id, anonymous])?.0,
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
    super::rollup::purge_people(&tx, &ids)?;
    for id in &ids {
        tx.execute("INSERT OR IGNORE INTO erased_ids (key) VALUES (?1)", [id])?;
    }
    tx.execute("DELETE FROM users WHERE user_id = ?1", [user_id])?;
    deletion.trait_versions +=
        tx.execute("DELETE FROM user_traits WHERE user_id = ?1", [user_id])?;
    deletion.memberships += tx.execute("DELETE FROM memberships WHERE user_id = ?1", [user_id])?;
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
    super::rollup::purged(conn, &ids)?;
    Ok(deletion)
}
