//! Reads what the metrics are computed from on the embedded store: rollups and records, per
//! account, converted to local days and the report currency.

use crate::store::Activity;
use crate::store::RecentEvent;
use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use crate::metrics::activity::{self, day_number};
use crate::metrics::config::{CurrencyConfig, MetricsConfig};
use crate::metrics::{self, AccountData, FeatureDay, Row, Subscription, UserDay};
use crate::records::Cell;
use crate::store::load::{build_records, AccountRecords, RECORD_COLUMNS};
use crate::store::{AccountInfo, StoreError};

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

/// Records of `only` one account or of all, their times cut into the local days of `infos`.
fn load_records<'a>(
    conn: &Connection,
    only: Option<&str>,
    infos: impl IntoIterator<Item = &'a AccountInfo>,
    currency: &CurrencyConfig,
) -> Result<AccountRecords, StoreError> {
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
) -> Result<AccountRecords, StoreError> {
    let mut rows = |table: &str, columns: &[&str]| -> Result<Vec<Vec<Cell>>, StoreError> {
        if !tables.contains(&table) {
            return Ok(Vec::new());
        }
        record_rows(conn, table, columns, only)
    };
    build_records(&mut rows, infos, currency)
}

/// `columns` of every row of the record table `table` (of account `only`, if given).
pub(super) fn record_rows(
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

/// One account's data, taking its records out of `records`.
fn load_one(
    conn: &Connection,
    info: &AccountInfo,
    records: &mut AccountRecords,
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

impl Activity for Connection {
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

    fn data_start(&self, _config: &MetricsConfig) -> Result<Option<i32>, StoreError> {
        Ok(self.query_row("SELECT min(day) FROM user_days", [], |r| r.get(0))?)
    }

    fn feature_uses(
        &self,
        spans: &[(String, i32, i32)],
        _config: &MetricsConfig,
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let mut usage = self.prepare_cached("SELECT feature, sum(uses) FROM user_day_features WHERE account_id = ?1 AND day BETWEEN ?2 AND ?3 GROUP BY feature")?;
        spans
            .iter()
            .map(|(account, first, last)| {
                Ok(usage
                    .query_map(params![account, first, last], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<Result<_, _>>()?)
            })
            .collect()
    }

    fn settled(&self) -> Result<bool, StoreError> {
        crate::store::sqlite::rollup::settled(self)
    }

    fn known_features(&self, _config: &MetricsConfig) -> Result<Vec<String>, StoreError> {
        let mut query =
            self.prepare("SELECT DISTINCT feature FROM account_features ORDER BY feature")?;
        let rows = query.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The account's people are the users a group call made members; each one's newest
    /// events come through `person_events`, plus those not indexed yet.
    fn recent_events(&self, account: &str, limit: usize) -> Result<Vec<RecentEvent>, StoreError> {
        let mut query = self.prepare(
            "SELECT timestamp_ms, type, event, user_id FROM (
                 SELECT e.id, e.timestamp_ms, e.type, e.event, e.user_id
                 FROM (SELECT DISTINCT user_id FROM memberships WHERE account_id = ?1 AND user_id IS NOT NULL) m
                 JOIN events e ON e.id IN (SELECT id FROM person_events WHERE key = m.user_id ORDER BY id DESC LIMIT ?2)
                 WHERE e.user_id = m.user_id
                 UNION
                 SELECT id, timestamp_ms, type, event, user_id FROM events
                 WHERE id > (SELECT indexed_to FROM rollup_state WHERE id = 1)
                     AND user_id IN (SELECT user_id FROM memberships WHERE account_id = ?1)
                 ORDER BY id DESC LIMIT ?2
             ) ORDER BY timestamp_ms DESC",
        )?;
        let rows = query.query_map(params![account, limit as i64], |r| {
            Ok(RecentEvent {
                timestamp_ms: r.get(0)?,
                kind: r.get(1)?,
                event: r.get(2)?,
                user_id: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
