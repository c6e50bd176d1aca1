//! Reads what the metrics are computed from: rollups and records, per account, converted
//! to local days and the report currency; and the computations that need many accounts
//! (export snapshot, segment statistics, time series, outcomes).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::StoreError;
use crate::config::{CurrencyConfig, MetricsConfig};
use crate::metrics::activity::{self, day_number};
use crate::metrics::{
    self, AccountData, FeatureDay, Kpi, Row, Subscription, Suggestion, Survey, Ticket, UserDay,
};
use crate::records::Cell;

/// An account as the metrics see it.
#[derive(Debug, Clone)]
pub struct AccountInfo {
    pub account_id: String,
    pub parent_id: Option<String>,
    pub segment: String,
    pub plan: Option<String>,
    pub tz: chrono_tz::Tz,
}

/// Every account, by id order. The segment is the account's `segment`, else its `plan`,
/// else `unknown`.
pub fn accounts(conn: &Connection) -> Result<Vec<AccountInfo>, StoreError> {
    let mut query = conn.prepare(
        "SELECT account_id, parent_id, segment, plan, timezone FROM accounts ORDER BY account_id",
    )?;
    let rows = query.query_map([], |r| {
        let segment: Option<String> = r.get(2)?;
        let plan: Option<String> = r.get(3)?;
        let tz: Option<String> = r.get(4)?;
        Ok(AccountInfo {
            account_id: r.get(0)?,
            parent_id: r.get(1)?,
            segment: segment
                .or_else(|| plan.clone())
                .unwrap_or_else(|| "unknown".into()),
            plan,
            tz: tz.and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The account and every account below it.
pub fn subtree(all: &[AccountInfo], root: &str) -> Vec<String> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in all {
        if let Some(parent) = &a.parent_id {
            children
                .entry(parent.as_str())
                .or_default()
                .push(a.account_id.as_str());
        }
    }
    let mut out = vec![root.to_string()];
    let mut index = 0;
    while index < out.len() {
        if let Some(kids) = children.get(out[index].as_str()) {
            out.extend(
                kids.iter()
                    .map(|k| k.to_string())
                    .filter(|k| !out.contains(k))
                    .collect::<Vec<_>>(),
            );
        }
        index += 1;
    }
    out
}

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
pub struct Records {
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

/// Records of `only` one account or of all, their times cut into the local days of `infos`.
fn load_records<'a>(
    conn: &Connection,
    only: Option<&str>,
    infos: impl IntoIterator<Item = &'a AccountInfo>,
    currency: &CurrencyConfig,
) -> Result<Records, StoreError> {
    let every: Vec<&str> = RECORD_COLUMNS.iter().map(|(table, _)| *table).collect();
    load_records_of(conn, only, infos, currency, &every)
}

/// [`load_records`] of the record kinds in `tables` only (the others left empty).
fn load_records_of<'a>(
    conn: &Connection,
    only: Option<&str>,
    infos: impl IntoIterator<Item = &'a AccountInfo>,
    currency: &CurrencyConfig,
    tables: &[&str],
) -> Result<Records, StoreError> {
    let mut rows = |table: &str, columns: &[&str]| -> Result<Vec<Vec<Cell>>, StoreError> {
        if !tables.contains(&table) {
            return Ok(Vec::new());
        }
        record_rows(conn, table, columns, only)
    };
    build_records(&mut rows, infos, currency)
}

/// `columns` of every row of the record table `table` (of account `only`, if given).
fn record_rows(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    only: Option<&str>,
) -> Result<Vec<Vec<Cell>>, StoreError> {
    // Two forms so that a single account's rows are found by the account index.
    let filter = if only.is_some() {
        "WHERE account_id = ?1"
    } else {
        "WHERE ?1 IS NULL"
    };
    let mut query = conn.prepare(&format!(
        "SELECT {} FROM {table} {filter}",
        columns.join(", ")
    ))?;
    let rows = query.query_map(params![only], |r| {
        (0..columns.len())
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(n) => Cell::Int(n),
                    ValueRef::Real(f) => Cell::Real(f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                    }
                })
            })
            .collect::<rusqlite::Result<Vec<Cell>>>()
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Reads a record table's rows: `rows(table, columns)`.
pub(crate) type RowSource<'a> = dyn FnMut(&str, &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> + 'a;

/// Builds the metrics' records from rows of [`RECORD_COLUMNS`] (`rows(table, columns)`),
/// whichever store they come from.
// Over 100 lines: One block per record kind the metrics read, each from its columns.
#[allow(clippy::too_many_lines)]
pub(crate) fn build_records<'a>(
    rows: &mut RowSource,
    infos: impl IntoIterator<Item = &'a AccountInfo>,
    currency: &CurrencyConfig,
) -> Result<Records, StoreError> {
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
    let mut records = Records::default();
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

fn user_days(
    conn: &Connection,
    account: &str,
    from: i32,
    to: i32,
) -> Result<Vec<UserDay>, StoreError> {
    let mut query = conn.prepare_cached(
        "SELECT day, user_id, logins, transactions, education, minutes, login_minutes, key_minutes
         FROM user_days WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3",
    )?;
    let rows = query.query_map(params![account, from, to], |r| {
        Ok(UserDay {
            day: r.get(0)?,
            user: r.get(1)?,
            logins: r.get(2)?,
            transactions: r.get(3)?,
            education: r.get(4)?,
            minutes: activity::decode_minutes(&r.get::<_, Vec<u8>>(5)?),
            login_minutes: activity::decode_minutes(&r.get::<_, Vec<u8>>(6)?),
            key_minutes: activity::decode_minutes(&r.get::<_, Vec<u8>>(7)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Loads the data of `infos` with rollup rows from `from_day - lookback` to `to_day`.
pub fn load(
    conn: &Connection,
    infos: &[&AccountInfo],
    from_day: i32,
    to_day: i32,
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Vec<AccountData>, StoreError> {
    let only = if infos.len() == 1 {
        Some(infos[0].account_id.as_str())
    } else {
        None
    };
    let mut records = load_records(conn, only, infos.iter().copied(), currency)?;
    infos
        .iter()
        .map(|info| load_one(conn, info, &mut records, from_day, to_day, config))
        .collect()
}

impl Records {
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

/// One account's data, taking its records out of `records`.
fn load_one(
    conn: &Connection,
    info: &AccountInfo,
    records: &mut Records,
    from_day: i32,
    to_day: i32,
    config: &MetricsConfig,
) -> Result<AccountData, StoreError> {
    let id = info.account_id.as_str();
    let mut data = records.account_data(info);
    data.days = user_days(conn, id, from_day - config.lookback_days(), to_day)?;
    let mut features = conn.prepare_cached("SELECT day, feature, uses FROM user_day_features WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3")?;
    data.features = features
        .query_map(
            params![id, from_day - config.lookback_days(), to_day],
            |r| {
                Ok(FeatureDay {
                    day: r.get(0)?,
                    feature: r.get(1)?,
                    uses: r.get(2)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    let mut first = conn
        .prepare_cached("SELECT feature, first_day FROM account_features WHERE account_id = ?1")?;
    data.first_use = first
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    data.last_active = conn
        .prepare_cached("SELECT MAX(day) FROM user_days WHERE account_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    if let Some(moment) = data.value_moment(config) {
        data.value_days = user_days(
            conn,
            id,
            moment,
            moment + config.windows.adoption_days as i32 - 1,
        )?;
    }
    Ok(data)
}

/// Where the metrics read accounts, records and rollups: the embedded store (a
/// [`Connection`]) or ClickHouse (`store::clickhouse::ClickHouse`). The computations that
/// need more than one account's numbers (one account ranked in its segment, time series,
/// outcomes) are written once over it, so both stores answer them alike.
pub trait Source {
    /// Every account, by id order (see [`accounts`]).
    fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError>;
    /// The data of `infos`, with rollup rows from `from_day - lookback` to `to_day` and
    /// each account's value window (see [`load`]).
    fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<AccountData>, StoreError>;
    /// Every account's subscriptions in the report currency.
    fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<Subscription>>, StoreError>;
    /// `columns` of every current record of kind `table`, in no set order.
    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError>;

    /// Every account's metrics at `as_of` (the export), engagement scores included.
    fn snapshot(
        &self,
        as_of: NaiveDate,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<Row>, StoreError> {
        self.snapshot_with(as_of, config, currency, &mut |_| {})
    }

    /// [`Self::snapshot`], handing each account's data to `also` as its row is computed
    /// (the actions read more of it than the metrics row).
    fn snapshot_with(
        &self,
        as_of: NaiveDate,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
        also: &mut dyn FnMut(&AccountData),
    ) -> Result<Vec<Row>, StoreError> {
        let day = day_number(as_of);
        let infos = self.accounts()?;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let mut rows: Vec<Row> = self
            .load(&all, day, day, config, currency)?
            .iter()
            .map(|data| {
                also(data);
                metrics::compute(data, day, config)
            })
            .collect();
        metrics::engagement_scores(&mut rows, config);
        Ok(rows)
    }

    /// How many days of the daily health history to compute from one [`Self::snapshots`]:
    /// their rows are all held at once (about 3 KB per account and day).
    fn days_per_load(&self) -> usize {
        1
    }

    /// [`Self::snapshot`] on each of `days` (ascending): one load covers them all, so a run
    /// of days costs about one snapshot where reading is what costs (ClickHouse).
    fn snapshots(
        &self,
        days: &[NaiveDate],
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let (Some(first), Some(last)) = (days.first(), days.last()) else {
            return Ok(Vec::new());
        };
        let infos = self.accounts()?;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let data = self.load(
            &all,
            day_number(*first),
            day_number(*last),
            config,
            currency,
        )?;
        Ok(days
            .iter()
            .map(|d| {
                let mut rows: Vec<Row> = data
                    .iter()
                    .map(|a| metrics::compute(a, day_number(*d), config))
                    .collect();
                metrics::engagement_scores(&mut rows, config);
                rows
            })
            .collect())
    }
}

impl Source for Connection {
    fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        accounts(self)
    }

    fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<AccountData>, StoreError> {
        load(self, infos, from_day, to_day, config, currency)
    }

    fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<Subscription>>, StoreError> {
        // One account's rows are found by the account index; the other kinds are not read.
        let only = if infos.len() == 1 {
            Some(infos[0].account_id.as_str())
        } else {
            None
        };
        Ok(load_records_of(self, only, infos, currency, &["subscriptions"])?.subscriptions)
    }

    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> {
        record_rows(self, table, columns, None)
    }

    fn snapshot_with(
        &self,
        as_of: NaiveDate,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
        also: &mut dyn FnMut(&AccountData),
    ) -> Result<Vec<Row>, StoreError> {
        snapshot_with(self, as_of, config, currency, also)
    }

    /// Day by day: each snapshot holds one account's rollup rows at a time.
    fn snapshots(
        &self,
        days: &[NaiveDate],
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        days.iter()
            .map(|d| snapshot(self, *d, config, currency))
            .collect()
    }
}

/// Every account's metrics at `as_of` (the export), engagement scores included.
pub fn snapshot(
    conn: &Connection,
    as_of: NaiveDate,
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Vec<Row>, StoreError> {
    snapshot_with(conn, as_of, config, currency, &mut |_| {})
}

/// [`snapshot`], handing each account's data to `also` before it is dropped.
fn snapshot_with(
    conn: &Connection,
    as_of: NaiveDate,
    config: &MetricsConfig,
    currency: &CurrencyConfig,
    also: &mut dyn FnMut(&AccountData),
) -> Result<Vec<Row>, StoreError> {
    let day = day_number(as_of);
    let infos = accounts(conn)?;
    // Records for every account in one pass per table; rollups account by account, each
    // dropped once computed, so memory stays that of one account's rows.
    let mut records = load_records(conn, None, &infos, currency)?;
    let mut rows = Vec::with_capacity(infos.len());
    for info in &infos {
        let data = load_one(conn, info, &mut records, day, day, config)?;
        also(&data);
        rows.push(metrics::compute(&data, day, config));
    }
    metrics::engagement_scores(&mut rows, config);
    Ok(rows)
}

/// One account's metrics at `as_of` (with `subtree`, the account and all below it counted
/// as one), its engagement score ranked against `peers` (a snapshot of the same day).
pub fn account(
    source: &dyn Source,
    account_id: &str,
    as_of: NaiveDate,
    subtree: bool,
    peers: &[Row],
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Row>, StoreError> {
    let day = day_number(as_of);
    let infos = source.accounts()?;
    if !infos.iter().any(|i| i.account_id == account_id) {
        return Ok(None);
    }
    let ids = if subtree {
        self::subtree(&infos, account_id)
    } else {
        vec![account_id.to_string()]
    };
    let mut merged: Option<AccountData> = None;
    for id in &ids {
        let member = infos
            .iter()
            .find(|i| &i.account_id == id)
            .expect("invariant: subtree ids are accounts");
        // The root comes first: the merged data keeps its id and segment.
        let data = source
            .load(&[member], day, day, config, currency)?
            .pop()
            .expect("one account loaded");
        match &mut merged {
            None => merged = Some(data),
            Some(m) => m.merge(data),
        }
    }
    let data = merged.expect("invariant: the subtree holds its root");
    let row = metrics::compute(&data, day, config);
    // Rank among the segment's snapshot, with this account's fresh values in place.
    let mut rows: Vec<Row> = peers
        .iter()
        .filter(|p| p["segment"] == row["segment"] && p["account_id"] != row["account_id"])
        .cloned()
        .collect();
    rows.push(row);
    metrics::engagement_scores(&mut rows, config);
    Ok(rows.pop())
}

/// One metric of one account for every day of `from ..= to`.
pub fn timeseries(
    source: &dyn Source,
    account_id: &str,
    metric: &str,
    from: NaiveDate,
    to: NaiveDate,
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Vec<(NaiveDate, Value)>>, StoreError> {
    let (first, last) = (day_number(from), day_number(to));
    let infos = source.accounts()?;
    let Some(info) = infos.iter().find(|i| i.account_id == account_id) else {
        return Ok(None);
    };
    // The engagement score ranks the account in its segment, so it needs the peers too.
    let members: Vec<&AccountInfo> = if metric == "engagement_score" {
        infos.iter().filter(|i| i.segment == info.segment).collect()
    } else {
        vec![info]
    };
    let data = source.load(&members, first, last, config, currency)?;
    let mut series = Vec::new();
    for day in first..=last {
        let value = if metric == "engagement_score" {
            let mut rows: Vec<Row> = data
                .iter()
                .map(|d| metrics::compute(d, day, config))
                .collect();
            metrics::engagement_scores(&mut rows, config);
            rows.into_iter()
                .find(|r| r["account_id"] == account_id)
                .map(|r| r[metric].clone())
                .unwrap_or(Value::Null)
        } else {
            let own = data
                .iter()
                .find(|d| d.account_id == account_id)
                .expect("invariant: loaded");
            metrics::compute(own, day, config)
                .remove(metric)
                .unwrap_or(Value::Null)
        };
        series.push((activity::day_date(day), value));
    }
    Ok(Some(series))
}

/// One account's metrics row on each of `days` (ascending), from one load. The engagement
/// score, which needs the segment, is left as computed alone.
pub fn rows_on(
    source: &dyn Source,
    account_id: &str,
    days: &[NaiveDate],
    config: &MetricsConfig,
    currency: &CurrencyConfig,
) -> Result<Option<Vec<Row>>, StoreError> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(Some(Vec::new()));
    };
    let infos = source.accounts()?;
    let Some(info) = infos.iter().find(|i| i.account_id == account_id) else {
        return Ok(None);
    };
    let data = source
        .load(
            &[info],
            day_number(*first),
            day_number(*last),
            config,
            currency,
        )?
        .pop()
        .expect("one account loaded");
    Ok(Some(
        days.iter()
            .map(|d| metrics::compute(&data, day_number(*d), config))
            .collect(),
    ))
}

/// Segment (or plan) statistics of a snapshot: account count, and per numeric metric the
/// count of accounts with a value, median, p25, p75, and the sum where sums mean something.
pub fn segments(rows: &[Row], infos: &[AccountInfo], by_plan: bool) -> Vec<Value> {
    let plan_of: HashMap<&str, &str> = infos
        .iter()
        .map(|i| {
            (
                i.account_id.as_str(),
                i.plan.as_deref().unwrap_or("unknown"),
            )
        })
        .collect();
    let mut groups: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let id = row["account_id"].as_str().unwrap_or_default();
        let key = if by_plan {
            plan_of.get(id).copied().unwrap_or("unknown").to_string()
        } else {
            row["segment"].as_str().unwrap_or_default().to_string()
        };
        groups.entry(key).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let mut stats = serde_json::Map::new();
            for column in metrics::COLUMNS.iter().filter(|c| metrics::is_numeric(c)) {
                let mut values: Vec<f64> = members.iter().filter_map(|r| r[*column].as_f64()).collect();
                values.sort_by(f64::total_cmp);
                let mut entry = json!({
                    "count": values.len(),
                    "median": metrics::quantile(&values, 0.5),
                    "p25": metrics::quantile(&values, 0.25),
                    "p75": metrics::quantile(&values, 0.75),
                });
                if metrics::is_additive(column) {
                    entry["sum"] = json!(values.iter().sum::<f64>());
                }
                stats.insert(column.to_string(), entry);
            }
            let frequency = members.iter().fold(BTreeMap::<String, i64>::new(), |mut m, r| {
                *m.entry(r["usage_frequency"].as_str().unwrap_or_default().to_string()).or_default() += 1;
                m
            });
            json!({ if by_plan { "plan" } else { "segment" }: group, "accounts": members.len(), "usage_frequency": frequency, "metrics": stats })
        })
        .collect()
}

/// Outcomes over [from, to) split by `interval`, per segment or over all accounts.
pub fn outcomes(
    source: &dyn Source,
    from: NaiveDate,
    to: NaiveDate,
    interval: metrics::outcomes::Interval,
    by_segment: bool,
    currency: &CurrencyConfig,
) -> Result<Vec<Value>, StoreError> {
    let infos = source.accounts()?;
    let mut subscriptions = source.subscriptions(&infos, currency)?;
    let accounts: Vec<(String, Vec<Subscription>)> = infos
        .iter()
        .map(|i| {
            (
                i.segment.clone(),
                subscriptions.remove(&i.account_id).unwrap_or_default(),
            )
        })
        .collect();
    let periods = metrics::outcomes::periods(from, to, interval);
    Ok(metrics::outcomes::outcomes(&accounts, &periods, by_segment))
}
