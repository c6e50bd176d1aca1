//! Imports of customer records from CSV (the documented headers; extra columns become
//! traits) or NDJSON (the same field names; `traits` and unknown fields become traits).
//! All or nothing per file: the store's [`Import`] holds one transaction and commits only
//! when no row had an error; the report names row, column and reason for each.

use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use crate::records::{self, Kind};
use crate::store::records::{Checks, Import, ImportReport};
use crate::store::StoreError;

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

fn read_csv(
    kind: &'static Kind,
    input: impl Read,
    import: &mut Import,
    progress: &mut dyn FnMut(usize),
) -> Result<(), StoreError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
        Err(e) => {
            import.error(1, "", format!("cannot read the header: {e}"));
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
