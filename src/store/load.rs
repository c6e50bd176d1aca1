//! Record rows to the metrics' inputs, whichever backend read them: each account's
//! subscriptions, tickets, surveys, suggestions and KPIs, their times in local days and
//! their money in the report currency.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::metrics::activity::{self, day_number};
use crate::metrics::config::CurrencyConfig;
use crate::metrics::{self, AccountData, Kpi, Subscription, Suggestion, Survey, Ticket};
use crate::records::Cell;
use crate::store::{AccountInfo, StoreError};

/// Reads a record table's rows: `rows(table, columns)`.
pub(crate) type RowSource<'a> = dyn FnMut(&str, &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> + 'a;

fn ms_of(text: &str) -> Result<i64, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| StoreError::Invalid(format!("stored date-time is not RFC 3339: {text:?}")))
}

fn day_of_date(text: &str) -> Result<i32, StoreError> {
    text.parse::<NaiveDate>()
        .map(day_number)
        .map_err(|_| StoreError::Invalid(format!("stored date is not YYYY-MM-DD: {text:?}")))
}

/// Records of accounts, grouped by account id: one query per table for all accounts.
#[derive(Default)]
pub struct AccountRecords {
    pub(crate) subscriptions: HashMap<String, Vec<Subscription>>,
    tickets: HashMap<String, Vec<Ticket>>,
    surveys: HashMap<String, Vec<Survey>>,
    suggestions: HashMap<String, Vec<Suggestion>>,
    kpis: HashMap<String, Vec<Kpi>>,
}

/// The record columns the metrics read, per kind (the order [`build_records`] takes them in).
pub(crate) const RECORD_COLUMNS: &[(&str, &[&str])] = &[
    (
        "subscriptions",
        &[
            "account_id",
            "subscription_id",
            "product",
            "plan",
            "seats",
            "arr",
            "currency",
            "start_date",
            "end_date",
            "outcome",
            "provisioned_at",
            "go_live_at",
        ],
    ),
    (
        "tickets",
        &[
            "account_id",
            "type",
            "opened_at",
            "first_response_at",
            "resolved_at",
            "escalated",
            "ticket_id",
            "user_id",
        ],
    ),
    (
        "survey_responses",
        &[
            "account_id",
            "response_id",
            "user_id",
            "kind",
            "score",
            "answered_at",
        ],
    ),
    ("suggestions", &["account_id", "category", "created_at"]),
    ("kpis", &["account_id", "name", "date", "value"]),
];

/// Builds the metrics' records from rows of [`RECORD_COLUMNS`] (`rows(table, columns)`),
/// whichever store they come from.
// Over 100 lines: One block per record kind the metrics read, each from its columns.
#[allow(clippy::too_many_lines)]
pub(crate) fn build_records<'a>(
    rows: &mut RowSource,
    infos: impl IntoIterator<Item = &'a AccountInfo>,
    currency: &CurrencyConfig,
) -> Result<AccountRecords, StoreError> {
    let tz: HashMap<&str, chrono_tz::Tz> = infos
        .into_iter()
        .map(|i| (i.account_id.as_str(), i.tz))
        .collect();
    let tz_of = |account: &str| tz.get(account).copied().unwrap_or(chrono_tz::UTC);
    let local = |account: &str, ms: i64| activity::local_day(ms, tz_of(account));
    let text = |cell: &Cell| cell.as_text().map(str::to_string);
    let required = |cell: &Cell, what: &str| {
        cell.as_text()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Invalid(format!("stored {what} is empty")))
    };
    let mut records = AccountRecords::default();
    let columns = |table: &str| {
        RECORD_COLUMNS
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, c)| *c)
            .expect("invariant: a listed table")
    };

    for r in rows("subscriptions", columns("subscriptions"))? {
        let account = required(&r[0], "account_id")?;
        let id = required(&r[1], "subscription_id")?;
        let arr = metrics::report_arr(r[5].as_f64(), r[6].as_text(), currency)
            .map_err(|reason| StoreError::Invalid(format!("subscription {id}: {reason}")))?;
        let sub = Subscription {
            id: id.clone(),
            product: text(&r[2]),
            plan: text(&r[3]),
            seats: r[4].as_i64().unwrap_or(0),
            arr,
            start: day_of_date(&required(&r[7], "start_date")?)?,
            end: r[8].as_text().map(day_of_date).transpose()?,
            outcome: text(&r[9]),
            provisioned: r[10]
                .as_text()
                .map(ms_of)
                .transpose()?
                .map(|ms| local(&account, ms)),
            go_live: r[11]
                .as_text()
                .map(ms_of)
                .transpose()?
                .map(|ms| local(&account, ms)),
        };
        records.subscriptions.entry(account).or_default().push(sub);
    }

    for r in rows("tickets", columns("tickets"))? {
        let account = required(&r[0], "account_id")?;
        let opened_ms = ms_of(&required(&r[2], "opened_at")?)?;
        let first_response_ms = r[3].as_text().map(ms_of).transpose()?;
        let resolved_ms = r[4].as_text().map(ms_of).transpose()?;
        let ticket = Ticket {
            id: required(&r[6], "ticket_id")?,
            user: text(&r[7]),
            kind: text(&r[1]),
            opened_ms,
            opened: local(&account, opened_ms),
            first_response_ms,
            first_response: first_response_ms.map(|ms| local(&account, ms)),
            resolved_ms,
            resolved: resolved_ms.map(|ms| local(&account, ms)),
            escalated: r[5].as_i64().unwrap_or(0) != 0,
        };
        records.tickets.entry(account).or_default().push(ticket);
    }

    for r in rows("survey_responses", columns("survey_responses"))? {
        let account = required(&r[0], "account_id")?;
        let answered_ms = ms_of(&required(&r[5], "answered_at")?)?;
        let survey = Survey {
            response_id: required(&r[1], "response_id")?,
            user: text(&r[2]),
            kind: required(&r[3], "kind")?,
            score: r[4]
                .as_i64()
                .ok_or_else(|| StoreError::Invalid("stored survey score is empty".into()))?,
            answered_ms,
            answered: local(&account, answered_ms),
        };
        records.surveys.entry(account).or_default().push(survey);
    }

    for r in rows("suggestions", columns("suggestions"))? {
        let account = required(&r[0], "account_id")?;
        let created = local(&account, ms_of(&required(&r[2], "created_at")?)?);
        records
            .suggestions
            .entry(account)
            .or_default()
            .push(Suggestion {
                category: text(&r[1]),
                created,
            });
    }

    for r in rows("kpis", columns("kpis"))? {
        let account = required(&r[0], "account_id")?;
        let kpi = Kpi {
            name: required(&r[1], "name")?,
            date: day_of_date(&required(&r[2], "date")?)?,
            value: r[3].as_f64().unwrap_or(0.0),
        };
        records.kpis.entry(account).or_default().push(kpi);
    }
    Ok(records)
}

impl AccountRecords {
    /// An account's data with its records (taken out of these), its rollups still empty.
    pub(crate) fn account_data(&mut self, info: &AccountInfo) -> AccountData {
        let id = info.account_id.as_str();
        AccountData {
            account_id: info.account_id.clone(),
            segment: info.segment.clone(),
            plan: info.plan.clone(),
            subscriptions: self.subscriptions.remove(id).unwrap_or_default(),
            tickets: self.tickets.remove(id).unwrap_or_default(),
            surveys: self.surveys.remove(id).unwrap_or_default(),
            suggestions: self.suggestions.remove(id).unwrap_or_default(),
            kpis: self.kpis.remove(id).unwrap_or_default(),
            ..AccountData::default()
        }
    }
}
