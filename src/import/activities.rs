//! Logged activities imported from a CSV file (calls, meetings and emails kept in another
//! tool): columns `account_id`, `kind`, `at`, `text`, and optionally `author` and `person`.
//! All or nothing: every row is checked (its account must exist) before any is stored, and
//! the report names row, column and reason. A row equal to an activity already logged
//! (account, kind, time and text) is skipped, so importing a file twice logs it once.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::{ImportReport, RowError};
use crate::limits;
use crate::store::{NewNote, Notes, StoreError};

use crate::listening::report::check_activity;

/// The columns of an activities file; the first four are required.
pub const COLUMNS: &[&str] = &["account_id", "kind", "at", "text", "author", "person"];
const REQUIRED: usize = 4;
/// Most rows one file holds (activities are read into memory before they are stored).
pub const ROWS_MAX: usize = 100_000;
/// Who logged an imported activity when the file does not say.
pub const DEFAULT_AUTHOR: &str = "import";

/// One checked row.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Its row in the file (the header is row 1).
    pub row: usize,
    pub account: String,
    pub kind: String,
    pub at_ms: i64,
    pub text: String,
    pub author: String,
    pub person: Option<String>,
}

/// A time as a file gives it: a day (`YYYY-MM-DD`, logged at its noon UTC) or an RFC 3339
/// time.
fn parse_at(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(day) = text.parse::<chrono::NaiveDate>() {
        return Some(day.and_hms_opt(12, 0, 0)?.and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn push(errors: &mut Vec<RowError>, row: usize, column: &str, reason: String) {
    errors.push(RowError {
        row,
        column: column.into(),
        reason,
    });
}

/// Reads and checks every row (not yet against the store); the rows read and the errors.
pub fn parse_csv(input: impl Read, now_ms: i64) -> (Vec<Activity>, usize, Vec<RowError>) {
    let mut errors = Vec::new();
    let (mut reader, headers) = super::csv_with_header(input);
    let headers = match headers {
        Ok(h) => h,
        Err(reason) => {
            push(&mut errors, 1, "", reason);
            return (Vec::new(), 0, errors);
        }
    };
    let Some(index) = columns_of(&headers, &mut errors) else {
        return (Vec::new(), 0, errors);
    };
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut row = 1;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                push(&mut errors, row + 1, "", format!("unreadable CSV: {e}"));
                break;
            }
        }
        row += 1;
        if row - 1 > ROWS_MAX {
            let reason = format!("at most {ROWS_MAX} rows per file");
            push(&mut errors, row, "", reason);
            break;
        }
        if record.len() != headers.len() {
            let reason = format!(
                "expected {} fields like the header, found {}",
                headers.len(),
                record.len()
            );
            push(&mut errors, row, "", reason);
            continue;
        }
        let field = |n: usize| {
            index[n]
                .and_then(|i| record.get(i))
                .map(str::trim)
                .unwrap_or("")
        };
        match activity(row, field, now_ms) {
            Ok(activity) => out.push(activity),
            Err((column, reason)) => push(&mut errors, row, column, reason),
        }
    }
    (out, row - 1, errors)
}

/// Where each of [`COLUMNS`] is in the header; `None` (and the errors) when the header
/// names an unknown column or leaves out a required one.
fn columns_of(headers: &[String], errors: &mut Vec<RowError>) -> Option<Vec<Option<usize>>> {
    for h in headers {
        if !COLUMNS.contains(&h.as_str()) {
            let reason = format!("unknown column; the columns are {}", COLUMNS.join(", "));
            push(errors, 1, h, reason);
        }
    }
    let index: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|c| headers.iter().position(|h| h == c))
        .collect();
    for (column, at) in COLUMNS.iter().zip(&index).take(REQUIRED) {
        if at.is_none() {
            push(errors, 1, column, "missing: the header must name it".into());
        }
    }
    errors.is_empty().then_some(index)
}

/// One row's activity from its fields (by their place in [`COLUMNS`]), or the column at
/// fault and why.
fn activity<'a>(
    row: usize,
    field: impl Fn(usize) -> &'a str,
    now_ms: i64,
) -> Result<Activity, (&'static str, String)> {
    let account = field(0);
    if account.is_empty() || account.len() > limits::ID_BYTES_MAX {
        return Err(("account_id", format!("1 to {} bytes", limits::ID_BYTES_MAX)));
    }
    let at_ms = parse_at(field(2)).ok_or_else(|| {
        let reason = format!(
            "{:?} is not a day (YYYY-MM-DD) or an RFC 3339 time",
            field(2)
        );
        ("at", reason)
    })?;
    let kind = field(1).to_ascii_lowercase();
    check_activity(&kind, field(3), at_ms, now_ms).map_err(|(column, reason)| {
        let column = match column.as_str() {
            "kind" => "kind",
            "text" => "text",
            _ => "at",
        };
        (column, reason)
    })?;
    let (author, person) = (field(4), field(5));
    for (column, value) in [("author", author), ("person", person)] {
        if value.len() > limits::ID_BYTES_MAX {
            return Err((column, format!("at most {} bytes", limits::ID_BYTES_MAX)));
        }
    }
    Ok(Activity {
        row,
        account: account.to_string(),
        kind,
        at_ms,
        text: field(3).to_string(),
        author: if author.is_empty() {
            DEFAULT_AUTHOR
        } else {
            author
        }
        .to_string(),
        person: (!person.is_empty()).then(|| person.to_string()),
    })
}

/// Imports an activities file: every row checked (its account known), then all stored at
/// once, or none. `inserted` counts the activities logged; repeats of ones already logged
/// are skipped.
pub fn import(
    store: &(impl Notes + crate::store::Records + ?Sized),
    input: impl Read,
    now_ms: i64,
) -> Result<ImportReport, StoreError> {
    let (rows, count, mut errors) = parse_csv(input, now_ms);
    let mut known: HashMap<&str, bool> = HashMap::new();
    for row in &rows {
        let exists = match known.get(row.account.as_str()) {
            Some(exists) => *exists,
            None => {
                let exists = crate::store::account_name(store, &row.account)?.is_some();
                known.insert(&row.account, exists);
                exists
            }
        };
        if !exists {
            errors.push(RowError {
                row: row.row,
                column: "account_id".into(),
                reason: format!("no account {:?}", row.account),
            });
        }
    }
    let report = |inserted: usize, errors: Vec<RowError>| ImportReport {
        kind: "activities",
        rows: count,
        inserted,
        updated: 0,
        stored: errors.is_empty(),
        error_count: errors.len(),
        errors: errors.into_iter().take(limits::IMPORT_ERRORS_MAX).collect(),
    };
    if !errors.is_empty() {
        return Ok(report(0, errors));
    }
    // Skip what is logged already (and repeats within the file).
    let mut seen: HashSet<(String, String, i64, String)> = HashSet::new();
    for account in known.keys() {
        for n in store.stored_notes(Some(account))? {
            seen.insert((n.account_id, n.kind, n.created_ms, n.text));
        }
    }
    let fresh: Vec<&Activity> = rows
        .iter()
        .filter(|r| seen.insert((r.account.clone(), r.kind.clone(), r.at_ms, r.text.clone())))
        .collect();
    let notes: Vec<NewNote<'_>> = fresh
        .iter()
        .map(|r| NewNote {
            account: &r.account,
            author: &r.author,
            person: r.person.as_deref(),
            kind: &r.kind,
            text: &r.text,
            at_ms: r.at_ms,
        })
        .collect();
    let inserted = store.add_notes(&notes)?;
    Ok(report(inserted, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_936_000_000; // 2025-12-05T12:00:00Z

    #[test]
    fn rows_are_read_with_their_defaults_and_each_bad_one_is_named() {
        let file = "account_id,kind,at,text,person\n\
                    acme,Call,2025-12-01,Renewal call,u-1\n\
                    acme,meeting,2025-12-02T09:30:00Z,QBR,\n\
                    acme,lunch,2025-12-03,Lunch,\n\
                    ,call,2025-12-03,No account,\n\
                    acme,call,yesterday,When?,\n\
                    acme,email,2031-01-01,From the future,\n\
                    acme,note,2025-12-03,,\n\
                    acme,note\n";
        let (rows, count, errors) = parse_csv(file.as_bytes(), NOW);
        assert_eq!(count, 8);
        assert_eq!(
            rows,
            vec![
                Activity {
                    row: 2,
                    account: "acme".into(),
                    kind: "call".into(),
                    at_ms: 1_764_590_400_000, // 2025-12-01 at noon UTC
                    text: "Renewal call".into(),
                    author: DEFAULT_AUTHOR.into(),
                    person: Some("u-1".into()),
                },
                Activity {
                    row: 3,
                    account: "acme".into(),
                    kind: "meeting".into(),
                    at_ms: 1_764_667_800_000,
                    text: "QBR".into(),
                    author: DEFAULT_AUTHOR.into(),
                    person: None,
                },
            ]
        );
        let named: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
        assert_eq!(
            named,
            vec![
                (4, "kind"),
                (5, "account_id"),
                (6, "at"),
                (7, "at"),
                (8, "text"),
                (9, "")
            ]
        );
    }

    #[test]
    fn a_header_without_a_required_column_or_with_an_unknown_one_is_refused() {
        let (rows, _, errors) = parse_csv("account_id,kind,when,text\n".as_bytes(), NOW);
        assert!(rows.is_empty());
        let named: Vec<&str> = errors.iter().map(|e| e.column.as_str()).collect();
        assert_eq!(named, vec!["when", "at"]);
        assert!(errors.iter().all(|e| e.row == 1));
    }
}
