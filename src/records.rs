//! Customer records: everything about a customer that is not a product event.
//!
//! One static spec ([`KINDS`]) names every record kind, its columns and their types. That
//! one spec drives CSV/NDJSON import validation, the SQL of the store, the REST API's
//! bodies and filters and its OpenAPI schemas, so the contract is written once.
//! Validation here is pure: references to other records (unknown account, hierarchy
//! cycles) are checked by the store, which knows what exists.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::ingest::parse_timestamp;
use crate::limits;

/// The type of one column, which fixes how a text value is parsed and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// An identifier: 1 to 256 bytes, no control characters. Stored as TEXT.
    Id,
    /// Free text up to [`limits::RECORD_TEXT_BYTES_MAX`]. Stored as TEXT.
    Text,
    /// `YYYY-MM-DD`. Stored as TEXT.
    Date,
    /// ISO-8601 date-time (or a date, meaning midnight UTC). Stored as TEXT, RFC 3339 UTC.
    DateTime,
    /// A whole number >= 0. Stored as INTEGER.
    Count,
    /// A decimal >= 0. Stored as REAL.
    Money,
    /// Any decimal. Stored as REAL.
    Number,
    /// true/false (also yes/no, 1/0; empty is false). Stored as INTEGER 0/1.
    Bool,
    /// An ISO 4217 code: three capital letters. Stored as TEXT.
    Currency,
    /// An IANA time zone name (`Europe/Stockholm`). Stored as TEXT.
    Timezone,
    /// One of a fixed list of words. Stored as TEXT.
    Enum(&'static [&'static str]),
    /// A survey score; its range depends on the response's `kind`. Stored as INTEGER.
    Score,
}

/// How a column can be filtered in `GET /api/v1/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    None,
    /// `?column=value`
    Equals,
    /// `?column_from=...&column_to=...` (inclusive).
    Range,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub required: bool,
    pub filter: Filter,
    pub doc: &'static str,
    /// Added after the first release: files may leave its header out (the value is empty).
    pub optional_header: bool,
}

/// A record kind: its name (used in URLs, import commands and as the table name) and columns.
#[derive(Debug)]
pub struct Kind {
    pub name: &'static str,
    /// Singular, for messages and OpenAPI schema names.
    pub singular: &'static str,
    /// The columns that identify a record (the primary key), in order.
    pub key: &'static [&'static str],
    pub columns: &'static [Column],
    /// Whether the kind refers to an account by `account_id` that must exist.
    pub references_account: bool,
}

const fn col(
    name: &'static str,
    ty: ColumnType,
    required: bool,
    filter: Filter,
    doc: &'static str,
) -> Column {
    Column {
        name,
        ty,
        required,
        filter,
        doc,
        optional_header: false,
    }
}

/// A column added later: import files written before it keep working without its header.
const fn later(name: &'static str, ty: ColumnType, filter: Filter, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        required: false,
        filter,
        doc,
        optional_header: true,
    }
}

use ColumnType::*;
use Filter::{Equals, None as NoFilter, Range};

pub const SUBSCRIPTION_STATUSES: &[&str] = &["trialing", "active", "canceled", "ended"];
pub const OUTCOMES: &[&str] = &["renewed", "churned", "open"];
pub const SURVEY_KINDS: &[&str] = &["nps", "csat", "ces", "go_live_recommend"];
pub const SURVEY_TRIGGERS: &[&str] = &["ticket", "quarterly", "go-live", "manual"];

pub const ACCOUNTS: Kind = Kind {
    name: "accounts",
    singular: "account",
    key: &["account_id"],
    references_account: false,
    columns: &[
        col(
            "account_id",
            Id,
            true,
            NoFilter,
            "the account's id (the Segment groupId)",
        ),
        col("name", Text, false, NoFilter, "display name"),
        col(
            "parent_id",
            Id,
            false,
            Equals,
            "parent account; accounts form a forest",
        ),
        col("segment", Text, false, Equals, "customer segment"),
        col(
            "plan",
            Text,
            false,
            Equals,
            "plan (trial, starter, pro, enterprise ...)",
        ),
        col("csm", Id, false, Equals, "id of the owning CSM (see csms)"),
        col(
            "timezone",
            Timezone,
            false,
            NoFilter,
            "IANA time zone for the account's days and weeks",
        ),
        col(
            "created_at",
            DateTime,
            false,
            Range,
            "when the account became a customer",
        ),
    ],
};

pub const SUBSCRIPTIONS: Kind = Kind {
    name: "subscriptions",
    singular: "subscription",
    key: &["subscription_id"],
    references_account: true,
    columns: &[
        col("subscription_id", Id, true, NoFilter, "the contract's id"),
        col("account_id", Id, true, Equals, "the account holding the contract"),
        col("product", Text, false, Equals, "product"),
        col("plan", Text, false, Equals, "plan"),
        col("seats", Count, false, NoFilter, "paid seats"),
        col("arr", Money, false, NoFilter, "annual recurring revenue, in `currency`"),
        col("currency", Currency, false, Equals, "ISO 4217 code of `arr`"),
        col("start_date", Date, true, Range, "first day of the term (inclusive)"),
        col("end_date", Date, false, Range, "last day of the term (inclusive)"),
        col("status", Enum(SUBSCRIPTION_STATUSES), false, Equals, "trialing, active, canceled or ended"),
        col("outcome", Enum(OUTCOMES), false, Equals, "renewal decision at the end: renewed, churned or open"),
        col("provisioned_at", DateTime, false, NoFilter, "when the customer could start using the product"),
        col("go_live_at", DateTime, false, NoFilter, "when the customer went live"),
        later("reason", Text, Equals, "why it churned or contracted: a code of [listening] reasons (price, missing_feature, support, budget, competitor, no_adoption, company_closed, other)"),
        later("feedback", Text, NoFilter, "what the customer said about leaving or shrinking"),
    ],
};

pub const TICKETS: Kind = Kind {
    name: "tickets",
    singular: "ticket",
    key: &["ticket_id"],
    references_account: true,
    columns: &[
        col("ticket_id", Id, true, NoFilter, "the ticket's id"),
        col("account_id", Id, true, Equals, "the account"),
        col("user_id", Id, false, Equals, "the person who opened it"),
        col(
            "type",
            Text,
            false,
            Equals,
            "ticket type (question, bug, ...)",
        ),
        col("priority", Text, false, Equals, "priority"),
        col("opened_at", DateTime, true, Range, "when it was opened"),
        col(
            "first_response_at",
            DateTime,
            false,
            NoFilter,
            "first answer to the customer",
        ),
        col(
            "resolved_at",
            DateTime,
            false,
            Range,
            "when it was resolved (empty: open)",
        ),
        col("escalated", Bool, false, Equals, "escalated"),
        later(
            "subject",
            Text,
            NoFilter,
            "the ticket's subject line (a comment stream of listening)",
        ),
    ],
};

pub const SURVEY_RESPONSES: Kind = Kind {
    name: "survey_responses",
    singular: "survey_response",
    key: &["response_id"],
    references_account: true,
    columns: &[
        col("response_id", Id, true, NoFilter, "the answer's id"),
        col("account_id", Id, true, Equals, "the account"),
        col("user_id", Id, false, Equals, "the person who answered"),
        col(
            "kind",
            Enum(SURVEY_KINDS),
            true,
            Equals,
            "nps (0-10), csat (1-5), ces (1-7) or go_live_recommend (yes/no, stored 1/0)",
        ),
        col(
            "score",
            Score,
            true,
            NoFilter,
            "the score, in the kind's range",
        ),
        col("comment", Text, false, NoFilter, "free-text comment"),
        col("answered_at", DateTime, true, Range, "when it was answered"),
        col(
            "trigger",
            Enum(SURVEY_TRIGGERS),
            false,
            Equals,
            "ticket, quarterly, go-live or manual",
        ),
    ],
};

pub const SUGGESTIONS: Kind = Kind {
    name: "suggestions",
    singular: "suggestion",
    key: &["suggestion_id"],
    references_account: true,
    columns: &[
        col("suggestion_id", Id, true, NoFilter, "the suggestion's id"),
        col("account_id", Id, true, Equals, "the account"),
        col("user_id", Id, false, Equals, "the person who suggested it"),
        col("title", Text, true, NoFilter, "what was asked for"),
        col("category", Text, false, Equals, "category"),
        col(
            "status",
            Text,
            false,
            Equals,
            "status (open, planned, shipped, declined ...)",
        ),
        col("created_at", DateTime, true, Range, "when it was made"),
    ],
};

pub const KPIS: Kind = Kind {
    name: "kpis",
    singular: "kpi",
    key: &["account_id", "name", "date"],
    references_account: true,
    columns: &[
        col("account_id", Id, true, Equals, "the account"),
        col("name", Id, true, Equals, "KPI name, e.g. hours_saved"),
        col("date", Date, true, Range, "the date the value is for"),
        col("value", Number, true, NoFilter, "the value"),
    ],
};

pub const CSMS: Kind = Kind {
    name: "csms",
    singular: "csm",
    key: &["csm_id"],
    references_account: false,
    columns: &[
        col(
            "csm_id",
            Id,
            true,
            NoFilter,
            "the CSM's id (accounts refer to it in `csm`)",
        ),
        col("name", Text, false, NoFilter, "full name"),
        col("email", Text, false, NoFilter, "email address"),
    ],
};

/// Every record kind, in the order imports should run (accounts first).
pub const KINDS: &[&Kind] = &[
    &CSMS,
    &ACCOUNTS,
    &SUBSCRIPTIONS,
    &TICKETS,
    &SURVEY_RESPONSES,
    &SUGGESTIONS,
    &KPIS,
];

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// A validated value, typed for storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Real(f64),
}

impl Cell {
    pub fn to_json(&self, ty: ColumnType) -> Value {
        match (self, ty) {
            (Cell::Null, _) => Value::Null,
            (Cell::Text(s), _) => Value::String(s.clone()),
            (Cell::Int(i), Bool) => Value::Bool(*i != 0),
            (Cell::Int(i), _) => Value::from(*i),
            (Cell::Real(f), _) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            Cell::Real(f) => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Real(f) => Some(*f),
            _ => None,
        }
    }
}

/// One validated record: a cell per column of its kind, in column order, plus traits.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub cells: Vec<Cell>,
    /// Extra fields (CSV columns not in the spec, or NDJSON `traits`), as a JSON object.
    pub traits: Map<String, Value>,
}

impl Record {
    pub fn get(&self, kind: &Kind, column: &str) -> &Cell {
        let index = kind
            .columns
            .iter()
            .position(|c| c.name == column)
            .expect("invariant: column of this kind");
        &self.cells[index]
    }

    pub fn key(&self, kind: &Kind) -> Vec<String> {
        kind.key
            .iter()
            .map(|k| self.get(kind, k).as_text().unwrap_or_default().to_string())
            .collect()
    }

    pub fn to_json(&self, kind: &Kind) -> Value {
        let mut object = Map::new();
        for (column, cell) in kind.columns.iter().zip(&self.cells) {
            object.insert(column.name.to_string(), cell.to_json(column.ty));
        }
        object.insert("traits".into(), Value::Object(self.traits.clone()));
        Value::Object(object)
    }
}

/// A problem with one field of one record: the column and the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub column: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(column: &str, reason: impl Into<String>) -> FieldError {
        FieldError {
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}

/// Validates one record given as text fields (CSV cells, or JSON values rendered as text;
/// `None` or empty means null). Returns every problem of the record, not just the first.
pub fn validate(
    kind: &Kind,
    fields: &dyn Fn(&str) -> Option<String>,
    traits: Map<String, Value>,
) -> Result<Record, Vec<FieldError>> {
    let mut cells = Vec::with_capacity(kind.columns.len());
    let mut errors = Vec::new();
    for column in kind.columns {
        let text = fields(column.name)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        match (text, column.required) {
            (None, true) => {
                errors.push(FieldError::new(column.name, "required"));
                cells.push(Cell::Null);
            }
            (None, false) if column.ty == Bool => cells.push(Cell::Int(0)),
            (None, false) => cells.push(Cell::Null),
            (Some(text), _) => match parse_cell(column.ty, &text) {
                Ok(cell) => cells.push(cell),
                Err(reason) => {
                    errors.push(FieldError::new(column.name, reason));
                    cells.push(Cell::Null);
                }
            },
        }
    }
    let mut record = Record { cells, traits };
    cross_checks(kind, &record, &mut errors);
    if errors.is_empty() && kind.name == SURVEY_RESPONSES.name {
        if let Err(e) = finish_survey_score(&mut record) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(record)
    } else {
        Err(errors)
    }
}

fn parse_cell(ty: ColumnType, text: &str) -> Result<Cell, String> {
    match ty {
        Id => {
            if text.len() > limits::ID_BYTES_MAX {
                return Err(format!("longer than {} bytes", limits::ID_BYTES_MAX));
            }
            if text.chars().any(char::is_control) {
                return Err("contains control characters".into());
            }
            Ok(Cell::Text(text.to_string()))
        }
        Text => {
            if text.len() > limits::RECORD_TEXT_BYTES_MAX {
                return Err(format!(
                    "longer than {} bytes",
                    limits::RECORD_TEXT_BYTES_MAX
                ));
            }
            Ok(Cell::Text(text.to_string()))
        }
        Date => parse_date(text).map(|d| Cell::Text(d.to_string())),
        DateTime => parse_datetime(text).map(Cell::Text),
        Count => match text.parse::<i64>() {
            Ok(n) if n < 0 => Err(format!("must not be negative, got {n}")),
            Ok(n) => Ok(Cell::Int(n)),
            Err(_) => Err(format!("not a whole number: {text:?}")),
        },
        Money | Number => match text.parse::<f64>() {
            Ok(x) if !x.is_finite() => Err(format!("not a finite number: {text:?}")),
            Ok(x) if ty == Money && x < 0.0 => Err(format!("must not be negative, got {text}")),
            Ok(x) => Ok(Cell::Real(x)),
            Err(_) => Err(format!("not a number: {text:?}")),
        },
        Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Cell::Int(1)),
            "false" | "no" | "0" => Ok(Cell::Int(0)),
            _ => Err(format!("not true/false: {text:?}")),
        },
        Currency => {
            if text.len() == 3 && text.chars().all(|c| c.is_ascii_uppercase()) {
                Ok(Cell::Text(text.to_string()))
            } else {
                Err(format!(
                    "not an ISO 4217 currency code (three capital letters): {text:?}"
                ))
            }
        }
        Timezone => text
            .parse::<chrono_tz::Tz>()
            .map(|_| Cell::Text(text.to_string()))
            .map_err(|_| format!("not an IANA time zone name (like Europe/Stockholm): {text:?}")),
        Enum(values) => {
            if values.contains(&text) {
                Ok(Cell::Text(text.to_string()))
            } else {
                Err(format!("{text:?} is not one of {}", values.join(", ")))
            }
        }
        // Kept as text until the cross-check knows the survey kind.
        Score => Ok(Cell::Text(text.to_string())),
    }
}

/// A list filter's value, parsed like the column's values (a score as a whole number).
pub fn parse_filter_value(ty: ColumnType, text: &str) -> Result<Cell, String> {
    match ty {
        Score => text
            .parse::<i64>()
            .map(Cell::Int)
            .map_err(|_| format!("not a whole number: {text:?}")),
        _ => parse_cell(ty, text),
    }
}

pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("not a date (YYYY-MM-DD): {text:?}"))
}

/// An ISO-8601 date-time (or a bare date) as RFC 3339 UTC text with milliseconds.
pub fn parse_datetime(text: &str) -> Result<String, String> {
    let ms = match parse_date(text) {
        Ok(date) => date
            .and_hms_opt(0, 0, 0)
            .expect("invariant: midnight exists")
            .and_utc()
            .timestamp_millis(),
        Err(_) => {
            parse_timestamp(text).ok_or_else(|| format!("not an ISO-8601 date-time: {text:?}"))?
        }
    };
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or_else(|| format!("out of range: {text:?}"))
}

/// Checks that involve two fields of the same record.
fn cross_checks(kind: &Kind, record: &Record, errors: &mut Vec<FieldError>) {
    let text = |name: &str| record.get(kind, name).as_text().map(str::to_string);
    match kind.name {
        "subscriptions" => {
            if let (Some(start), Some(end)) = (text("start_date"), text("end_date")) {
                if end < start {
                    errors.push(FieldError::new(
                        "end_date",
                        format!("{end} is before start_date {start}"),
                    ));
                }
            }
        }
        "tickets" => {
            if let Some(opened) = text("opened_at") {
                for later in ["first_response_at", "resolved_at"] {
                    if let Some(at) = text(later) {
                        if at < opened {
                            errors.push(FieldError::new(
                                later,
                                format!("{at} is before opened_at {opened}"),
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The survey score check, which depends on `kind`; turns the score text into an integer.
fn finish_survey_score(record: &mut Record) -> Result<(), FieldError> {
    let kind_index = SURVEY_RESPONSES
        .columns
        .iter()
        .position(|c| c.name == "kind")
        .expect("invariant");
    let score_index = SURVEY_RESPONSES
        .columns
        .iter()
        .position(|c| c.name == "score")
        .expect("invariant");
    let (Some(kind), Cell::Text(score)) = (
        record.cells[kind_index].as_text().map(str::to_string),
        record.cells[score_index].clone(),
    ) else {
        return Ok(());
    };
    let value = if kind == "go_live_recommend" {
        match score.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => 1,
            "no" | "false" | "0" => 0,
            _ => {
                return Err(FieldError::new(
                    "score",
                    format!("go_live_recommend takes yes or no, got {score:?}"),
                ))
            }
        }
    } else {
        let (low, high) = match kind.as_str() {
            "nps" => (0, 10),
            "csat" => (1, 5),
            _ => (1, 7),
        };
        match score.parse::<i64>() {
            Ok(n) if (low..=high).contains(&n) => n,
            Ok(n) => {
                return Err(FieldError::new(
                    "score",
                    format!("{kind} score must be {low} to {high}, got {n}"),
                ))
            }
            Err(_) => {
                return Err(FieldError::new(
                    "score",
                    format!("not a whole number: {score:?}"),
                ))
            }
        }
    };
    record.cells[score_index] = Cell::Int(value);
    Ok(())
}

/// Renders a JSON value (NDJSON import, API body) as the text the validators read.
pub fn json_field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Validates a JSON object (API body, NDJSON line) as a record of `kind`. Unknown fields
/// are errors here (a JSON client names fields on purpose); `traits` must be an object.
pub fn from_json(kind: &Kind, object: &Map<String, Value>) -> Result<Record, Vec<FieldError>> {
    let mut errors = Vec::new();
    for (name, value) in object {
        if name == "traits" {
            if !value.is_object() && !value.is_null() {
                errors.push(FieldError::new("traits", "expected an object"));
            }
        } else if !kind.columns.iter().any(|c| c.name == name) {
            errors.push(FieldError::new(
                name,
                format!("unknown field for {}", kind.name),
            ));
        } else if value.is_object() || value.is_array() {
            errors.push(FieldError::new(
                name,
                "expected a string, number or boolean",
            ));
        }
    }
    let traits = match object.get("traits") {
        Some(Value::Object(traits)) => traits.clone(),
        _ => Map::new(),
    };
    let fields = |name: &str| object.get(name).and_then(json_field_text);
    match validate(kind, &fields, traits) {
        Ok(record) if errors.is_empty() => Ok(record),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: &Kind, json: Value) -> Result<Value, Vec<(String, String)>> {
        from_json(kind, json.as_object().unwrap())
            .map(|r| r.to_json(kind))
            .map_err(|errors| errors.into_iter().map(|e| (e.column, e.reason)).collect())
    }

    #[test]
    fn values_are_parsed_by_column_type() {
        let ok = check(&SUBSCRIPTIONS, serde_json::json!({"subscription_id": "s1", "account_id": "a1", "seats": "10", "arr": 1200.5, "currency": "EUR", "start_date": "2025-03-01", "end_date": "2026-02-28", "status": "active", "provisioned_at": "2025-03-02"})).unwrap();
        assert_eq!(ok["seats"], 10);
        assert_eq!(ok["arr"], 1200.5);
        assert_eq!(ok["provisioned_at"], "2025-03-02T00:00:00.000Z");
        assert_eq!(ok["outcome"], Value::Null);
        let errors = check(&SUBSCRIPTIONS, serde_json::json!({"subscription_id": "s1", "account_id": "a1", "seats": -1, "currency": "eur", "start_date": "2025-03-01", "end_date": "2025-02-01", "status": "paused"})).unwrap_err();
        let columns: Vec<&str> = errors.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(columns, vec!["seats", "currency", "status", "end_date"]);
    }

    #[test]
    fn survey_scores_follow_their_kind() {
        let base = |kind: &str, score: Value| serde_json::json!({"response_id": "r", "account_id": "a", "kind": kind, "score": score, "answered_at": "2026-01-01T10:00:00Z"});
        assert_eq!(
            check(&SURVEY_RESPONSES, base("nps", 10.into())).unwrap()["score"],
            10
        );
        assert_eq!(
            check(&SURVEY_RESPONSES, base("go_live_recommend", "yes".into())).unwrap()["score"],
            1
        );
        assert!(
            check(&SURVEY_RESPONSES, base("nps", 11.into())).unwrap_err()[0]
                .1
                .contains("0 to 10")
        );
        assert!(
            check(&SURVEY_RESPONSES, base("csat", 0.into())).unwrap_err()[0]
                .1
                .contains("1 to 5")
        );
        assert!(
            check(&SURVEY_RESPONSES, base("ces", 8.into())).unwrap_err()[0]
                .1
                .contains("1 to 7")
        );
    }
}
