//! Imports of customer records from CSV (the documented headers; extra columns become
//! traits) or NDJSON (the same field names; `traits` and unknown fields become traits).
//! All or nothing per file: an [`Import`] holds one transaction of the store and commits only
//! when no row had an error; the report names row, column and reason for each.

pub mod activities;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};

use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::limits;
use crate::records::{self, FieldError, Kind, Record};
use crate::store::{ImportTarget, Records, StoreError};

/// Rows between two progress callbacks.
pub const PROGRESS_EVERY_ROWS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// From a file name's extension: `.csv`, or `.ndjson`/`.jsonl`/`.json`.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// Reads the whole file into the import and returns its report. `progress` is called with
/// the row count every [`PROGRESS_EVERY_ROWS`] rows.
pub fn import(
    conn: &mut rusqlite::Connection,
    kind: &'static Kind,
    format: Format,
    input: impl Read,
    checks: Checks<'_>,
    progress: &mut dyn FnMut(usize),
) -> Result<ImportReport, StoreError> {
    read_into(Import::begin(conn, kind, checks)?, format, input, progress)
}

/// Reads the whole file into an import already begun (on any store) and returns its report.
pub fn read_into(
    mut import: Import<'_>,
    format: Format,
    input: impl Read,
    progress: &mut dyn FnMut(usize),
) -> Result<ImportReport, StoreError> {
    let kind = import.kind();
    match format {
        Format::Csv => read_csv(kind, input, &mut import, progress)?,
        Format::Ndjson => read_ndjson(kind, input, &mut import, progress)?,
    }
    import.finish()
}

/// A CSV reader over `input` (rows may differ in length: the caller says which row is
/// wrong) and its header, trimmed, or why the header cannot be read.
pub(crate) fn csv_with_header<R: Read>(input: R) -> (csv::Reader<R>, Result<Vec<String>, String>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map(|h| h.iter().map(|s| s.trim().to_string()).collect())
        .map_err(|e| format!("cannot read the header: {e}"));
    (reader, headers)
}

fn read_csv(
    kind: &'static Kind,
    input: impl Read,
    import: &mut Import,
    progress: &mut dyn FnMut(usize),
) -> Result<(), StoreError> {
    let (mut reader, headers) = csv_with_header(input);
    let headers = match headers {
        Ok(h) => h,
        Err(reason) => {
            import.error(1, "", reason);
            return Ok(());
        }
    };
    if !check_headers(kind, &headers, import) {
        return Ok(());
    }
    let index_of = |name: &str| headers.iter().position(|h| h == name);
    let columns: Vec<Option<usize>> = kind.columns.iter().map(|c| index_of(c.name)).collect();
    let extras: Vec<(usize, &String)> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| kind.columns.iter().all(|c| c.name != h.as_str()))
        .collect();
    let mut record = csv::StringRecord::new();
    let mut row = 1;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                import.error(row + 1, "", format!("unreadable CSV: {e}"));
                break;
            }
        }
        row += 1;
        if record.len() != headers.len() {
            import.error(
                row,
                "",
                format!(
                    "expected {} fields like the header, found {}",
                    headers.len(),
                    record.len()
                ),
            );
            continue;
        }
        let fields = |name: &str| {
            let position = kind.columns.iter().position(|c| c.name == name)?;
            columns[position]
                .and_then(|i| record.get(i))
                .map(str::to_string)
        };
        let traits: Map<String, Value> = extras
            .iter()
            .filter_map(|(i, name)| {
                record
                    .get(*i)
                    .filter(|v| !v.is_empty())
                    .map(|v| ((*name).clone(), Value::String(v.to_string())))
            })
            .collect();
        import.row(row, records::validate(kind, &fields, traits))?;
        if import.rows().is_multiple_of(PROGRESS_EVERY_ROWS) {
            progress(import.rows());
        }
    }
    Ok(())
}

/// Every documented header must be present once; extra names become traits.
fn check_headers(kind: &Kind, headers: &[String], import: &mut Import) -> bool {
    let mut ok = true;
    for (i, header) in headers.iter().enumerate() {
        if header.is_empty() {
            import.error(1, "", format!("header {} is empty", i + 1));
            ok = false;
        } else if headers[..i].contains(header) {
            import.error(1, header, "duplicate header");
            ok = false;
        }
    }
    for column in kind.columns.iter().filter(|c| !c.optional_header) {
        if !headers.iter().any(|h| h == column.name) {
            let expected: Vec<&str> = kind.columns.iter().map(|c| c.name).collect();
            import.error(
                1,
                column.name,
                format!(
                    "missing header; {} files need: {}",
                    kind.name,
                    expected.join(",")
                ),
            );
            ok = false;
        }
    }
    ok
}

fn read_ndjson(
    kind: &'static Kind,
    input: impl Read,
    import: &mut Import,
    progress: &mut dyn FnMut(usize),
) -> Result<(), StoreError> {
    for (index, line) in BufReader::new(input).lines().enumerate() {
        let row = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                import.error(row, "", format!("unreadable line: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => {
                import.error(row, "", "expected a JSON object");
                continue;
            }
            Err(e) => {
                import.error(row, "", format!("invalid JSON: {e}"));
                continue;
            }
        };
        let mut traits = match object.get("traits") {
            Some(Value::Object(traits)) => traits.clone(),
            _ => Map::new(),
        };
        for (name, value) in &object {
            if name != "traits" && kind.columns.iter().all(|c| c.name != name.as_str()) {
                traits.insert(name.clone(), value.clone());
            }
        }
        let fields = |name: &str| object.get(name).and_then(records::json_field_text);
        import.row(row, records::validate(kind, &fields, traits))?;
        if import.rows().is_multiple_of(PROGRESS_EVERY_ROWS) {
            progress(import.rows());
        }
    }
    Ok(())
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
