//! Customer records on ClickHouse: one ReplacingMergeTree per kind, current versions read
//! with `FINAL`, imports staged and written as one block ([`RecordImport`]).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    block_on, error, fetch_all, now_version, ClickHouse, INSERT_END_TIMEOUT, INSERT_SEND_TIMEOUT,
    QUERY_TIMEOUT,
};
use crate::limits;
use crate::records::{self, Cell, ColumnType, Kind, Record};
use crate::store::{Deleted, ImportTarget, ListFilter, Page, Records, StoreError};

/// An import into ClickHouse: rows are validated as for the embedded store and staged;
/// `commit` reads the rows the import replaces (to merge their traits and count updates)
/// and writes everything as one insert block, which ClickHouse stores whole or not at all.
pub struct RecordImport {
    store: ClickHouse,
    kind: &'static Kind,
    staged: Vec<Record>,
    accounts: Option<HashSet<String>>,
}

impl RecordImport {
    pub fn new(store: ClickHouse, kind: &'static Kind) -> RecordImport {
        RecordImport {
            store,
            kind,
            staged: Vec::new(),
            accounts: None,
        }
    }
}

impl ClickHouse {
    /// Current records of `kind` (all, or those whose joined key is in `keys`).
    pub(super) async fn records_of(
        &self,
        kind: &'static Kind,
        keys: Option<&[String]>,
    ) -> Result<Vec<Record>, StoreError> {
        let inner = if keys.is_some() {
            format!("WHERE has(?, {})", joined_key(kind))
        } else {
            String::new()
        };
        let mut query = self.client.query(&current_records(kind, &inner, "", ""));
        if let Some(keys) = keys {
            query = query.bind(keys);
        }
        self.read_records(kind, query).await
    }

    /// A page of current records by key order, after the key `after` (as
    /// `store::sqlite::records::list` on the embedded store).
    async fn list_records(
        &self,
        kind: &'static Kind,
        filters: &[ListFilter],
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, limits::API_PAGE_ROWS_MAX);
        // After (k1, k2, ...): k1 > a1, or k1 = a1 and k2 > a2, ... (no tuple comparison on older servers).
        let inner = match after {
            Some(after) => {
                let any: Vec<String> = (0..after.len().min(kind.key.len()))
                    .map(|i| {
                        let mut all: Vec<String> =
                            kind.key[..i].iter().map(|k| format!("{k} = ?")).collect();
                        all.push(format!("{} > ?", kind.key[i]));
                        format!("({})", all.join(" AND "))
                    })
                    .collect();
                format!("WHERE {}", any.join(" OR "))
            }
            None => String::new(),
        };
        let outer: String = filters
            .iter()
            .map(|f| match f {
                ListFilter::Equals(c, _) => format!(" AND {c} = ?"),
                ListFilter::AtLeast(c, _) => format!(" AND {c} >= ?"),
                ListFilter::AtMost(c, _) => format!(" AND {c} <= ?"),
            })
            .collect();
        let tail = format!("ORDER BY {} LIMIT {}", kind.key.join(", "), limit + 1);
        let mut query = self
            .client
            .query(&current_records(kind, &inner, &outer, &tail));
        if let Some(after) = after {
            for i in 0..after.len().min(kind.key.len()) {
                for value in &after[..=i] {
                    query = query.bind(value.as_str());
                }
            }
        }
        for filter in filters {
            let (ListFilter::Equals(_, cell)
            | ListFilter::AtLeast(_, cell)
            | ListFilter::AtMost(_, cell)) = filter;
            query = match cell {
                Cell::Text(text) => query.bind(text.as_str()),
                Cell::Int(n) => query.bind(*n),
                Cell::Real(x) => query.bind(*x),
                Cell::Null => query.bind(None::<i64>),
            };
        }
        Ok(Page::of(kind, self.read_records(kind, query).await?, limit))
    }

    /// Deletes a record (a newer version marked `deleted`); an account only when no record
    /// refers to it, as on the embedded store.
    async fn delete_record(
        &self,
        kind: &'static Kind,
        key: &[String],
    ) -> Result<Deleted, StoreError> {
        let Some(record) = self
            .records_of(kind, Some(&[key.join("\u{1f}")]))
            .await?
            .pop()
        else {
            return Ok(Deleted::NotFound);
        };
        if kind.name == records::ACCOUNTS.name {
            #[derive(clickhouse::Row, Deserialize)]
            struct Count {
                n: u64,
            }
            let id = &key[0];
            let count = |table: &str, column: &str| {
                let sql = format!("SELECT count() AS n FROM (SELECT {column}, deleted FROM {table} FINAL) WHERE deleted = 0 AND {column} = ?");
                fetch_all::<Count>(
                    self.client.query(&sql).bind(id.as_str()),
                    "references of an account",
                )
            };
            let mut referring = Vec::new();
            let children = count("accounts", "parent_id")
                .await?
                .first()
                .map_or(0, |c| c.n);
            if children > 0 {
                referring.push(format!("{children} child account(s)"));
            }
            for other in records::KINDS.iter().filter(|k| k.references_account) {
                let n = count(other.name, "account_id")
                    .await?
                    .first()
                    .map_or(0, |c| c.n);
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
        let mut body = Vec::new();
        record_line(kind, &record, &record.traits, true, &mut body)?;
        self.insert_records(kind, body).await?;
        Ok(Deleted::Yes)
    }

    /// Parses the JSON rows of a [`current_records`] query.
    pub(super) async fn read_records(
        &self,
        kind: &'static Kind,
        query: clickhouse::query::Query,
    ) -> Result<Vec<Record>, StoreError> {
        let context = format!("read {}", kind.name);
        let bytes = match tokio::time::timeout(QUERY_TIMEOUT, async {
            query.fetch_bytes("JSONEachRow")?.collect().await
        })
        .await
        {
            Ok(result) => result.map_err(|e| error(&context, e))?,
            Err(_) => {
                return Err(StoreError::ClickHouse(format!(
                    "{context}: no answer within {} s",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        };
        let mut out = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Value::Object(row) = serde_json::from_slice(line)
                .map_err(|e| StoreError::Invalid(format!("{context}: {e}")))?
            else {
                return Err(StoreError::Invalid(format!(
                    "{context}: a row is not an object"
                )));
            };
            let cells = kind
                .columns
                .iter()
                .map(|c| cell_from_json(row.get(c.name).unwrap_or(&Value::Null), c.ty))
                .collect();
            let traits = match row
                .get("traits")
                .and_then(Value::as_str)
                .map(serde_json::from_str)
            {
                Some(Ok(Value::Object(traits))) => traits,
                _ => Map::new(),
            };
            out.push(Record { cells, traits });
        }
        Ok(out)
    }

    /// Writes [`record_line`]s as one insert block (stored whole or not at all).
    async fn insert_records(&self, kind: &'static Kind, body: Vec<u8>) -> Result<(), StoreError> {
        let names: Vec<&str> = kind.columns.iter().map(|c| c.name).collect();
        self.insert_lines(
            kind.name,
            &format!("{}, traits, version, deleted", names.join(", ")),
            body,
        )
        .await
    }

    /// Writes JSONEachRow lines of `columns` into `table` as one insert block.
    pub(super) async fn insert_lines(
        &self,
        table: &str,
        columns: &str,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO {table} ({columns}) FORMAT JSONEachRow");
        let client = self.client.clone().with_setting(
            "max_insert_block_size",
            (limits::IMPORT_ROWS_MAX + 1).to_string(),
        );
        let written = async move {
            let mut insert = client
                .insert_formatted_with(sql)
                .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
            insert.send(body.into()).await?;
            insert.end().await
        };
        written
            .await
            .map_err(|e| error(&format!("write {table}"), e))
    }
}

/// The current version of each record of `kind`, deleted ones left out. `FINAL` merges
/// versions in a subquery, and `deleted` is filtered outside it: a filter on a non-key
/// column next to `FINAL` may run before the merge on older servers and let an older
/// version through. `inner` filters key columns only (inside, before the merge), `outer`
/// adds ` AND ...` conditions on any column, `tail` orders and limits.
pub(super) fn current_records(kind: &Kind, inner: &str, outer: &str, tail: &str) -> String {
    let names: Vec<&str> = kind.columns.iter().map(|c| c.name).collect();
    let names = names.join(", ");
    format!("SELECT {names}, traits FROM (SELECT {names}, traits, deleted FROM {} FINAL {inner}) WHERE deleted = 0{outer} {tail}", kind.name)
}

/// One record as a JSONEachRow line of its table, versioned by the time of writing.
fn record_line(
    kind: &Kind,
    record: &Record,
    traits: &Map<String, Value>,
    deleted: bool,
    body: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let version = now_version();
    let mut row: Map<String, Value> = kind
        .columns
        .iter()
        .zip(&record.cells)
        .map(|(c, cell)| (c.name.to_string(), cell_to_json(cell)))
        .collect();
    row.insert(
        "traits".into(),
        Value::String(Value::Object(traits.clone()).to_string()),
    );
    row.insert("version".into(), Value::from(version));
    row.insert("deleted".into(), Value::from(u8::from(deleted)));
    serde_json::to_writer(&mut *body, &Value::Object(row))
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    body.push(b'\n');
    Ok(())
}

/// The API's record routes on ClickHouse, from a blocking thread.
impl Records for ClickHouse {
    fn get(&self, kind: &'static Kind, key: &[String]) -> Result<Option<Record>, StoreError> {
        Ok(block_on(self.records_of(kind, Some(&[key.join("\u{1f}")])))??.pop())
    }

    fn list(
        &self,
        kind: &'static Kind,
        filters: &[ListFilter],
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        block_on(self.list_records(kind, filters, after, limit))?
    }

    fn delete(&mut self, kind: &'static Kind, key: &[String]) -> Result<Deleted, StoreError> {
        block_on(self.delete_record(kind, key))?
    }

    fn import_target(
        &mut self,
        kind: &'static Kind,
    ) -> Result<Box<dyn ImportTarget + '_>, StoreError> {
        Ok(Box::new(RecordImport::new(self.clone(), kind)))
    }

    fn of_account(
        &self,
        kind: &'static Kind,
        account: &str,
        order_by: &str,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        assert!(
            kind.columns.iter().any(|c| c.name == order_by),
            "invariant: {order_by} is a column of {}",
            kind.name
        );
        let tail = format!(
            "ORDER BY {order_by} DESC NULLS LAST, {} LIMIT {limit}",
            kind.key.join(", ")
        );
        let query = self
            .client
            .query(&current_records(kind, "", " AND account_id = ?", &tail))
            .bind(account);
        Ok(block_on(self.read_records(kind, query))??
            .iter()
            .map(|r| r.to_json(kind))
            .collect())
    }

    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> {
        block_on(self.record_cells(table, columns))?
    }
}

/// The key columns joined by the unit separator, as SQL.
fn joined_key(kind: &Kind) -> String {
    if kind.key.len() == 1 {
        kind.key[0].to_string()
    } else {
        format!("concat({})", kind.key.join(", '\\x1f', "))
    }
}

fn joined(kind: &Kind, record: &Record) -> String {
    record.key(kind).join("\u{1f}")
}

fn cell_from_json(value: &Value, ty: ColumnType) -> Cell {
    match (value, ty) {
        (Value::Null, _) => Cell::Null,
        (Value::Number(n), ColumnType::Money | ColumnType::Number) => {
            n.as_f64().map_or(Cell::Null, Cell::Real)
        }
        (Value::Number(n), _) => n.as_i64().map_or(Cell::Null, Cell::Int),
        (Value::String(text), _) => Cell::Text(text.clone()),
        (other, _) => Cell::Text(other.to_string()),
    }
}

fn cell_to_json(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Text(text) => Value::String(text.clone()),
        Cell::Int(i) => Value::from(*i),
        Cell::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
    }
}

/// JSON merge patch (RFC 7396), as SQLite's `json_patch`: a null removes a key.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

impl ImportTarget for RecordImport {
    fn account_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        if self.accounts.is_none() {
            let accounts = block_on(self.store.records_of(&records::ACCOUNTS, None))??;
            self.accounts = Some(
                accounts
                    .iter()
                    .map(|a| joined(&records::ACCOUNTS, a))
                    .collect(),
            );
        }
        Ok(self.accounts.as_ref().is_some_and(|a| a.contains(id)))
    }

    fn upsert(&mut self, _kind: &'static Kind, record: &Record) -> Result<(), StoreError> {
        self.staged.push(record.clone());
        Ok(())
    }

    fn parents(&mut self) -> Result<HashMap<String, Option<String>>, StoreError> {
        let accounts = &records::ACCOUNTS;
        let parent_of = |a: &Record| a.get(accounts, "parent_id").as_text().map(str::to_string);
        let mut parents: HashMap<String, Option<String>> =
            block_on(self.store.records_of(accounts, None))??
                .iter()
                .map(|a| (joined(accounts, a), parent_of(a)))
                .collect();
        if self.kind.name == accounts.name {
            parents.extend(
                self.staged
                    .iter()
                    .map(|a| (joined(accounts, a), parent_of(a))),
            );
        }
        Ok(parents)
    }

    fn commit(self: Box<Self>) -> Result<(usize, usize), StoreError> {
        let kind = self.kind;
        let keys: Vec<String> = self.staged.iter().map(|r| joined(kind, r)).collect();
        let mut existing: HashMap<String, Record> = HashMap::new();
        for chunk in keys.chunks(1_000) {
            for record in block_on(self.store.records_of(kind, Some(chunk)))?? {
                existing.insert(joined(kind, &record), record);
            }
        }
        let mut body = Vec::new();
        let (mut inserted, mut updated) = (0, 0);
        for (record, key) in self.staged.iter().zip(&keys) {
            let mut traits = Map::new();
            match existing.get(key) {
                Some(old) => {
                    updated += 1;
                    traits = old.traits.clone();
                }
                None => inserted += 1,
            }
            merge_patch(&mut traits, &record.traits);
            record_line(kind, record, &traits, false, &mut body)?;
        }
        // One block for the whole file.
        block_on(self.store.insert_records(kind, body))??;
        Ok((inserted, updated))
    }
}
