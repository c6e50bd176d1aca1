//! Health on ClickHouse: feature uses over spans, stored models, the daily history and
//! tier changes.

use crate::store::{Change, HistoryPoint};
use crate::store::{History, Models};
use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use serde::Deserialize;

use super::activity::Windows;
use super::{block_on, fetch_all, now_version, run, ClickHouse};
use crate::config::MetricsConfig;
use crate::metrics::activity::{self};
use crate::store::{AccountInfo, HistoryRow, StoreError, TierChange};

impl ClickHouse {
    /// Each span's uses of each feature, from one read of the `activity` rollups.
    pub(super) async fn feature_uses(
        &self,
        spans: &[(String, i32, i32)],
        config: &MetricsConfig,
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let mut of_account: HashMap<&str, Vec<(i32, i32)>> = HashMap::new();
        for (account, first, last) in spans {
            of_account
                .entry(account.as_str())
                .or_default()
                .push((*first, *last));
        }
        let infos: Vec<AccountInfo> = self
            .accounts()
            .await?
            .into_iter()
            .filter(|i| of_account.contains_key(i.account_id.as_str()))
            .collect();
        let members: Vec<&AccountInfo> = infos.iter().collect();
        let groups = self.group_calls().await?;
        let windows = |account: &str| of_account.get(account).cloned().unwrap_or_default();
        let rollups = self
            .rollups(&members, &groups, config, Windows::Known(&windows))
            .await?;
        Ok(spans
            .iter()
            .map(|(account, first, last)| {
                let mut uses: HashMap<String, i64> = HashMap::new();
                for f in rollups
                    .features
                    .get(account)
                    .into_iter()
                    .flatten()
                    .filter(|f| f.day >= *first && f.day <= *last)
                {
                    *uses.entry(f.feature.clone()).or_default() += f.uses;
                }
                uses
            })
            .collect())
    }

    /// One stored model row, or the first of an ordered selection.
    async fn model_row(
        &self,
        condition: &str,
        order: &str,
        bind: Option<String>,
    ) -> Result<Option<(i64, String)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            id: i64,
            body: String,
        }
        let mut query = self.client.query(&format!(
            "SELECT id, body FROM health_models WHERE {condition} ORDER BY {order} LIMIT 1"
        ));
        if let Some(value) = bind {
            query = query.bind(value);
        }
        Ok(fetch_all::<Stored>(query, "health models")
            .await?
            .pop()
            .map(|s| (s.id, s.body)))
    }
}

/// The condition of a promoted model (the body's top-level `status`; models stored before
/// the gate have none). `status` is the body's first key, and no nested object has one.
const IN_FORCE: &str = "visitParamExtractString(body, 'status') != 'rejected'";

impl Models for ClickHouse {
    fn model_for(
        &self,
        day: Option<NaiveDate>,
    ) -> Result<Option<crate::health::model::Model>, StoreError> {
        let row = block_on(async {
            match day {
                Some(day) => match self
                    .model_row(
                        &format!("as_of <= ? AND {IN_FORCE}"),
                        "as_of DESC, id DESC",
                        Some(day.to_string()),
                    )
                    .await?
                {
                    Some(row) => Ok(Some(row)),
                    None => self.model_row(IN_FORCE, "as_of ASC, id DESC", None).await,
                },
                None => self.model_row(IN_FORCE, "id DESC", None).await,
            }
        })??;
        row.map(|(id, body)| crate::store::parse_model(id, body))
            .transpose()
    }

    fn model(&self, id: i64) -> Result<Option<crate::health::model::Model>, StoreError> {
        let row = block_on(self.model_row("id = toInt64(?)", "id", Some(id.to_string())))??;
        row.map(|(id, body)| crate::store::parse_model(id, body))
            .transpose()
    }

    fn model_bodies(&self) -> Result<Vec<(i64, String)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            id: i64,
            body: String,
        }
        let rows = block_on(fetch_all::<Stored>(
            self.client
                .query("SELECT id, body FROM health_models ORDER BY id DESC"),
            "health models",
        ))??;
        Ok(rows.into_iter().map(|s| (s.id, s.body)).collect())
    }

    /// The next id after the highest stored (two nodes training a model in the same moment
    /// could give both one id: models are trained on demand, by one caller).
    fn store_model(&self, model: &crate::health::model::Model) -> Result<i64, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Max {
            id: i64,
        }
        let body = crate::store::model_body(model)?;
        block_on(async {
            let id = fetch_all::<Max>(
                self.client.query("SELECT max(id) AS id FROM health_models"),
                "health models",
            )
            .await?
            .first()
            .map_or(0, |m| m.id)
                + 1;
            let query = self
                .client
                .query("INSERT INTO health_models (id, created_ms, as_of, reason, body) VALUES (?, ?, ?, ?, ?)")
                .bind(id)
                .bind(chrono::Utc::now().timestamp_millis())
                .bind(model.as_of.as_str())
                .bind(model.reason.as_str())
                .bind(body.as_str());
            run(query, "store a health model").await?;
            Ok(id)
        })?
    }
}

impl History for ClickHouse {
    fn history_last_day(&self) -> Result<Option<i32>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            days: u64,
            day: i32,
        }
        let last = block_on(fetch_all::<Last>(
            self.client
                .query("SELECT count() AS days, max(day) AS day FROM health_history"),
            "health history",
        ))??;
        Ok(last.first().filter(|l| l.days > 0).map(|l| l.day))
    }

    fn history_on(&self, day: i32, model_id: i64) -> Result<(i64, i64), StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Counts {
            rows: u64,
            other: u64,
        }
        let query = self
            .client
            .query("SELECT count() AS rows, countIf(model_id != ?) AS other FROM health_history FINAL WHERE day = ?")
            .bind(model_id)
            .bind(day);
        let counts = block_on(fetch_all::<Counts>(query, "health history"))??;
        Ok(counts
            .first()
            .map_or((0, 0), |c| (c.rows as i64, c.other as i64)))
    }

    fn day_history(&self, day: i32) -> Result<HashMap<String, HistoryRow>, StoreError> {
        let rows = block_on(self.history_where("day = ?", |query| query.bind(day)))??;
        Ok(rows
            .into_iter()
            .map(|(_, _, row)| (row.account_id.clone(), row))
            .collect())
    }

    fn changes_between(
        &self,
        after: i32,
        through: i32,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Change {
            account_id: String,
            to_tier: String,
        }
        let query = self
            .client
            .query(
                "SELECT DISTINCT account_id, to_tier FROM tier_changes WHERE day > ? AND day <= ?",
            )
            .bind(after)
            .bind(through);
        Ok(block_on(fetch_all::<Change>(query, "tier changes"))??
            .into_iter()
            .map(|c| (c.account_id, c.to_tier))
            .collect())
    }

    fn write_history(
        &self,
        day: i32,
        model_id: i64,
        rows: &[HistoryRow],
        changes: &[TierChange],
    ) -> Result<(), StoreError> {
        block_on(self.write_history_day(day, model_id, rows, changes))?
    }

    fn history(
        &self,
        account: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        block_on(self.history_rows(
            account,
            activity::day_number(from),
            activity::day_number(to),
        ))?
    }

    fn tier_changes(
        &self,
        since: NaiveDate,
        account: Option<&str>,
    ) -> Result<Vec<Change>, StoreError> {
        block_on(self.change_rows(activity::day_number(since), account))?
    }
}

/// The daily health history and tier changes on ClickHouse, from a blocking thread.
impl ClickHouse {
    /// The stored history rows meeting `condition` (on key columns), oldest first, as
    /// (day, model id, row).
    async fn history_where(
        &self,
        condition: &str,
        bind: impl FnOnce(clickhouse::query::Query) -> clickhouse::query::Query,
    ) -> Result<Vec<(i32, i64, HistoryRow)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            account_id: String,
            day: i32,
            engagement: Option<f64>,
            score: Option<f64>,
            band: Option<String>,
            tier: Option<String>,
            expected_rate: Option<f64>,
            monthly_uses: Option<f64>,
            model_id: i64,
            raw_tier: Option<String>,
            raw_since: Option<i32>,
        }
        let query = bind(self.client.query(&format!(
            "SELECT account_id, day, engagement, score, band, tier, expected_rate, monthly_uses, model_id, raw_tier, raw_since FROM health_history FINAL
             WHERE {condition} ORDER BY day"
        )));
        Ok(fetch_all::<Stored>(query, "health history")
            .await?
            .into_iter()
            .map(|s| {
                let row = HistoryRow {
                    account_id: s.account_id,
                    model_id: s.model_id,
                    raw_tier: s.raw_tier,
                    raw_since: s.raw_since,
                    engagement: s.engagement,
                    score: s.score,
                    band: s.band,
                    tier: s.tier,
                    expected_rate: s.expected_rate,
                    monthly_uses: s.monthly_uses,
                };
                (s.day, s.model_id, row)
            })
            .collect())
    }

    async fn history_rows(
        &self,
        account: &str,
        from: i32,
        to: i32,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let rows = self
            .history_where("account_id = ? AND day >= ? AND day <= ?", |query| {
                query.bind(account).bind(from).bind(to)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|(day, model_id, row)| HistoryPoint::of(*day, row, *model_id))
            .collect())
    }

    async fn change_rows(
        &self,
        since: i32,
        account: Option<&str>,
    ) -> Result<Vec<Change>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            id: i64,
            account_id: String,
            day: i32,
            from_tier: String,
            to_tier: String,
            model_id: i64,
            cause: String,
        }
        let one = if account.is_some() {
            " AND account_id = ?"
        } else {
            ""
        };
        let mut query = self
            .client
            .query(&format!("SELECT id, account_id, day, from_tier, to_tier, model_id, cause FROM tier_changes FINAL WHERE day >= ?{one} ORDER BY day, id"))
            .bind(since);
        if let Some(account) = account {
            query = query.bind(account);
        }
        Ok(fetch_all::<Stored>(query, "tier changes")
            .await?
            .into_iter()
            .map(|s| {
                let change = TierChange {
                    account_id: s.account_id,
                    day: s.day,
                    from_tier: s.from_tier,
                    to_tier: s.to_tier,
                    model_id: s.model_id,
                    cause: s.cause,
                };
                Change::of(s.id, &change)
            })
            .collect())
    }

    /// Writes the changes first: if the history then fails, the day has no rows and is
    /// computed again, finding its changes already recorded.
    async fn write_history_day(
        &self,
        day: i32,
        model_id: i64,
        rows: &[HistoryRow],
        changes: &[TierChange],
    ) -> Result<(), StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if !changes.is_empty() {
            let mut body = Vec::new();
            for (n, change) in changes.iter().enumerate() {
                // Ids in order of recording (a node writes at most a day's accounts per ms).
                let line = serde_json::json!({"id": now_ms * 1000 + n as i64, "account_id": change.account_id, "day": change.day,
                    "from_tier": change.from_tier, "to_tier": change.to_tier, "model_id": change.model_id, "created_ms": now_ms, "cause": change.cause});
                body.extend_from_slice(line.to_string().as_bytes());
                body.push(b'\n');
            }
            self.insert_lines(
                "tier_changes",
                "id, account_id, day, from_tier, to_tier, model_id, created_ms, cause",
                body,
            )
            .await?;
        }
        let version = now_version();
        let mut body = Vec::new();
        for row in rows {
            let line = serde_json::json!({"account_id": row.account_id, "day": day, "engagement": row.engagement, "score": row.score, "band": row.band,
                "tier": row.tier, "expected_rate": row.expected_rate, "monthly_uses": row.monthly_uses, "model_id": model_id, "version": version,
                "raw_tier": row.raw_tier, "raw_since": row.raw_since});
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
        if body.is_empty() {
            return Ok(());
        }
        self.insert_lines("health_history", "account_id, day, engagement, score, band, tier, expected_rate, monthly_uses, model_id, version, raw_tier, raw_since", body)
            .await
    }
}
