//! Health's tables on the embedded store: the stored models and the daily history.

use crate::store::{Change, HistoryPoint};
use crate::store::{History, Models};
use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};

use crate::health::model::Model;
use crate::metrics::activity::day_number;
use crate::store::{model_body, parse_model, HistoryRow, StoreError, TierChange};

/// The SQL condition of a promoted model (models stored before the gate have no status).
const IN_FORCE: &str = "coalesce(json_extract(body, '$.status'), 'promoted') != 'rejected'";

impl Models for Connection {
    fn model_for(&self, day: Option<NaiveDate>) -> Result<Option<Model>, StoreError> {
        let newest = |sql: &str, arg: String| -> Result<Option<(i64, String)>, StoreError> {
            Ok(self
                .query_row(sql, [arg], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        };
        let row = match day {
            Some(day) => match newest(&format!("SELECT id, body FROM health_models WHERE as_of <= ?1 AND {IN_FORCE} ORDER BY as_of DESC, id DESC LIMIT 1"), day.to_string())? {
                Some(row) => Some(row),
                None => newest(&format!("SELECT id, body FROM health_models WHERE ?1 = ?1 AND {IN_FORCE} ORDER BY as_of ASC, id DESC LIMIT 1"), String::new())?,
            },
            None => newest(&format!("SELECT id, body FROM health_models WHERE ?1 = ?1 AND {IN_FORCE} ORDER BY id DESC LIMIT 1"), String::new())?,
        };
        row.map(|(id, body)| parse_model(id, body)).transpose()
    }

    fn model(&self, id: i64) -> Result<Option<Model>, StoreError> {
        let row: Option<String> = self
            .query_row("SELECT body FROM health_models WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        row.map(|body| parse_model(id, body)).transpose()
    }

    fn model_bodies(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut query = self.prepare("SELECT id, body FROM health_models ORDER BY id DESC")?;
        let rows = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn store_model(&self, model: &Model) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO health_models (created_ms, as_of, reason, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                chrono::Utc::now().timestamp_millis(),
                model.as_of,
                model.reason,
                model_body(model)?
            ],
        )?;
        Ok(self.last_insert_rowid())
    }
}

impl History for Connection {
    fn history_last_day(&self) -> Result<Option<i32>, StoreError> {
        Ok(self.query_row("SELECT max(day) FROM health_history", [], |r| r.get(0))?)
    }

    fn history_on(&self, day: i32, model_id: i64) -> Result<(i64, i64), StoreError> {
        Ok(self.query_row(
            "SELECT count(*), count(*) FILTER (WHERE model_id != ?2) FROM health_history WHERE day = ?1",
            params![day, model_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn day_history(&self, day: i32) -> Result<HashMap<String, HistoryRow>, StoreError> {
        Ok(history_where(self, "day = ?1", [day])?
            .into_iter()
            .map(|(_, _, row)| (row.account_id.clone(), row))
            .collect())
    }

    fn changes_between(
        &self,
        after: i32,
        through: i32,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let mut query = self.prepare_cached(
            "SELECT account_id, to_tier FROM tier_changes WHERE day > ?1 AND day <= ?2",
        )?;
        let rows = query.query_map([after, through], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_history(
        &self,
        day: i32,
        model_id: i64,
        rows: &[HistoryRow],
        changes: &[TierChange],
    ) -> Result<(), StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO health_history (account_id, day, score, band, tier, expected_rate, monthly_uses, model_id, engagement, raw_tier, raw_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for row in rows {
            insert.execute(params![
                row.account_id,
                day,
                row.score,
                row.band,
                row.tier,
                row.expected_rate,
                row.monthly_uses,
                model_id,
                row.engagement,
                row.raw_tier,
                row.raw_since
            ])?;
        }
        drop(insert);
        let now = chrono::Utc::now().timestamp_millis();
        for change in changes {
            tx.prepare_cached("INSERT INTO tier_changes (account_id, day, from_tier, to_tier, model_id, created_ms, cause) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                .execute(params![change.account_id, change.day, change.from_tier, change.to_tier, change.model_id, now, change.cause])?;
        }
        Ok(tx.commit()?)
    }

    fn history(
        &self,
        account: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let rows = history_where(
            self,
            "account_id = ?1 AND day BETWEEN ?2 AND ?3",
            params![account, day_number(from), day_number(to)],
        )?;
        Ok(rows
            .iter()
            .map(|(day, model_id, row)| HistoryPoint::of(*day, row, *model_id))
            .collect())
    }

    fn tier_changes(
        &self,
        since: NaiveDate,
        account: Option<&str>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut query = self.prepare(
            "SELECT id, account_id, day, from_tier, to_tier, model_id, cause FROM tier_changes
             WHERE day >= ?1 AND (?2 IS NULL OR account_id = ?2) ORDER BY day, id",
        )?;
        let rows = query.query_map(params![day_number(since), account], |r| {
            let change = TierChange {
                account_id: r.get(1)?,
                day: r.get(2)?,
                from_tier: r.get(3)?,
                to_tier: r.get(4)?,
                model_id: r.get(5)?,
                cause: r.get(6)?,
            };
            Ok(Change::of(r.get(0)?, &change))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The stored history rows meeting `condition`, oldest first, as (day, model id, row).
fn history_where(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(i32, i64, HistoryRow)>, StoreError> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT account_id, day, score, band, tier, expected_rate, monthly_uses, model_id, engagement, raw_tier, raw_since FROM health_history
         WHERE {condition} ORDER BY day"
    ))?;
    let rows = query.query_map(params, |r| {
        let row = HistoryRow {
            account_id: r.get(0)?,
            model_id: r.get(7)?,
            raw_tier: r.get(9)?,
            raw_since: r.get(10)?,
            score: r.get(2)?,
            band: r.get(3)?,
            tier: r.get(4)?,
            expected_rate: r.get(5)?,
            monthly_uses: r.get(6)?,
            engagement: r.get(8)?,
        };
        Ok((r.get(1)?, r.get(7)?, row))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
