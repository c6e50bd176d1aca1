//! The ClickHouse backend (`--store clickhouse://host:port/database`): several stateless
//! bellwether nodes share one ClickHouse.
//!
//! What runs on it so far: the Segment tracking API (each node's writer inserts its group of
//! requests as one block and answers only once ClickHouse accepted it), `/healthz`,
//! `/readyz`, `/metrics`, `bellwether events`, `bellwether import` ([`RecordImport`]), the
//! records API, the metrics (`ClickHouse` is a `store::Source`), health and its
//! daily history, listening, users, tokens and the dashboard ([`dashboard`]), and the
//! actions: alert rules, alerts, tasks, the outbox and surveys ([`actions`]).
//!
//! Schema (created at start with `IF NOT EXISTS`, so nodes starting together agree):
//! `events` is a ReplacingMergeTree partitioned by month of the event's UTC day and ordered
//! for per-day reads. A retried message may land on two nodes at once, and the ClickHouse
//! this is tested on (18.16) has no insert dedup for unreplicated tables, so duplicates are
//! allowed on disk: every read keeps the first received copy of each (source, messageId)
//! (`LIMIT 1 BY` after ordering by receipt), as the embedded store's write-time dedup does,
//! and background merges drop the later copies that share a sort key (the version column
//! `first_wins` makes a merge keep the first received copy, not the last inserted).
//! Works on ClickHouse 18.16 and later: no window functions, CTEs, query parameters,
//! Nullable key columns, DateTime64 or TTL; values are bound client-side with escaping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{EventFilter, Role, StoreError, StoredEvent};
use crate::config::{ClickHouseLocation, CurrencyConfig, MetricsConfig};
use crate::ingest::queue::JobReceiver;
use crate::ingest::{format_timestamp, Job, JobOutcome};
use crate::limits;
use crate::metrics::activity::{self, Classifier};
use crate::metrics::{self, FeatureDay, UserDay};
use crate::records::{self, Cell, ColumnType, Kind, Record};
use crate::store::AccountInfo;
use crate::store::{Deleted, ImportTarget, ListFilter, Page, RecordStore, UserDeletion};
use crate::store::{HistoryRow, TierChange};
use crate::telemetry::Telemetry;

mod actions;
mod backup;
mod dashboard;

/// A connection to one ClickHouse database (cheap to clone: a pooled HTTP client).
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    location: ClickHouseLocation,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClickHouse({}/{})",
            self.location.url, self.location.database
        )
    }
}

/// Every schema statement, each idempotent. `v` is the first column written: RowBinary
/// data must not start with a whitespace byte on servers before 22.6 (ClickHouse issue
/// 37420), and it is always 1.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS {db}.events (
        v            UInt8,
        day          Date,
        timestamp_ms Int64,
        received_ms  Int64,
        position     UInt32,
        source       String,
        message_id   String,
        type         String,
        user_id      String,
        anonymous_id String,
        group_id     String,
        event        String,
        previous_id  String,
        traits       String,
        raw          String,
        first_wins   UInt64
    ) ENGINE = ReplacingMergeTree(first_wins)
    PARTITION BY toYYYYMM(day)
    ORDER BY (day, user_id, anonymous_id, source, message_id)",
    // The rollups ClickHouse keeps itself: per person ids, event and quarter hour (every
    // timezone's offset is a whole number of quarter hours, so any account's local days are
    // unions of buckets). Each state is safe under duplicate copies, which the view sees as
    // the blocks arrive: the events are counted by distinct messageId, minutes are a set,
    // first and last are min and max.
    "CREATE TABLE IF NOT EXISTS {db}.activity (
        day          Date,
        bucket       UInt32,
        source       String,
        user_id      String,
        anonymous_id String,
        group_id     String,
        type         String,
        event        String,
        messages     AggregateFunction(uniqExact, String),
        minutes      AggregateFunction(groupUniqArray, UInt32),
        first_ms     AggregateFunction(min, Int64),
        last_ms      AggregateFunction(max, Int64)
    ) ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(day)
    ORDER BY (day, user_id, anonymous_id, group_id, source, type, event, bucket)",
    // API tokens shared by every node: a revocation is a newer version with `deleted`; reads
    // take each id's newest version (argMax), never FINAL with a filter (older servers may
    // filter before they merge).
    "CREATE TABLE IF NOT EXISTS {db}.api_tokens (
        id           Int64,
        name         String,
        role         String,
        token_sha256 String,
        created_ms   Int64,
        expires_ms   Int64,
        version      UInt64,
        deleted      UInt8
    ) ENGINE = ReplacingMergeTree(version) ORDER BY id",
    // Health models, one row per version (ids given in order by the node that trains one).
    "CREATE TABLE IF NOT EXISTS {db}.health_models (
        id         Int64,
        created_ms Int64,
        as_of      String,
        reason     String,
        body       String
    ) ENGINE = MergeTree ORDER BY id",
    // The daily health history: a day written again (by the same node later, or by another)
    // replaces its rows; reads filter on key columns only, inside FINAL.
    "CREATE TABLE IF NOT EXISTS {db}.health_history (
        account_id    String,
        day           Int32,
        engagement    Nullable(Float64),
        score         Nullable(Float64),
        band          Nullable(String),
        tier          Nullable(String),
        expected_rate Nullable(Float64),
        monthly_uses  Nullable(Float64),
        model_id      Int64,
        version       UInt64,
        raw_tier      Nullable(String),
        raw_since     Nullable(Int32)
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (account_id, day)",
    // CSM notes (ids from the time of writing and a random part: nodes write them apart).
    "CREATE TABLE IF NOT EXISTS {db}.notes (
        id         Int64,
        account_id String,
        author     String,
        person     Nullable(String),
        text       String,
        created_ms Int64
    ) ENGINE = MergeTree ORDER BY (account_id, id)",
    // Tier changes: one per account, day and new tier, however many nodes record it.
    "CREATE TABLE IF NOT EXISTS {db}.tier_changes (
        id         Int64,
        account_id String,
        day        Int32,
        from_tier  String,
        to_tier    String,
        model_id   Int64,
        created_ms Int64,
        cause      String DEFAULT 'usage'
    ) ENGINE = ReplacingMergeTree ORDER BY (account_id, day, to_tier)",
    // Dashboard users: a deleted user or a new password is a newer version. `csm_id` is ''
    // for none (argMax skips NULLs). Sessions opened before `password_ms` are over.
    "CREATE TABLE IF NOT EXISTS {db}.dashboard_users (
        username      String,
        role          String,
        csm_id        String,
        password_hash String,
        password_ms   Int64,
        version       UInt64,
        deleted       UInt8
    ) ENGINE = ReplacingMergeTree(version) ORDER BY username",
    "CREATE TABLE IF NOT EXISTS {db}.web_sessions (
        token_sha256 String,
        username     String,
        csrf         String,
        opened_ms    Int64,
        expires_ms   Int64,
        version      UInt64,
        deleted      UInt8
    ) ENGINE = ReplacingMergeTree(version) ORDER BY token_sha256",
    // The server's secrets: the first stored wins (version = u64::MAX - nanoseconds).
    "CREATE TABLE IF NOT EXISTS {db}.secrets (
        name    String,
        value   String,
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY name",
    "CREATE TABLE IF NOT EXISTS {db}.review_goals (
        account_id String,
        quarter    String,
        goals      String,
        version    UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (account_id, quarter)",
    // The actions' rules, alerts, outbox messages, tasks and survey invitations
    // (store::clickhouse::actions): versioned JSON documents, one insert block a decision.
    "CREATE TABLE IF NOT EXISTS {db}.action_rows (
        kind       String,
        id         Int64,
        version    UInt64,
        status     String,
        account_id String,
        user_id    String,
        at_ms      Int64,
        created_ms Int64,
        body       String
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (kind, id)",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.activity_view TO {db}.activity AS
    SELECT day, toUInt32(intDiv(greatest(timestamp_ms, 0), 900000)) AS bucket, source, user_id, anonymous_id, group_id, type, event,
           uniqExactState(message_id) AS messages,
           groupUniqArrayState(toUInt32(intDiv(greatest(timestamp_ms, 0), 60000))) AS minutes,
           minState(timestamp_ms) AS first_ms, maxState(timestamp_ms) AS last_ms
    FROM {db}.events
    WHERE type IN ('track', 'page', 'screen')
    GROUP BY day, bucket, source, user_id, anonymous_id, group_id, type, event",
];

/// The table of one record kind, from the spec: its columns (key columns plain `String`,
/// the others Nullable), `traits` (JSON object text), and `version` (nanoseconds of the
/// write: a ReplacingMergeTree keeps the newest row of each key) and `deleted`.
fn record_table(kind: &Kind, database: &str) -> String {
    let columns: Vec<String> = kind
        .columns
        .iter()
        .map(|c| {
            let ty = if kind.key.contains(&c.name) {
                "String"
            } else {
                match c.ty {
                    ColumnType::Count | ColumnType::Score | ColumnType::Bool => "Nullable(Int64)",
                    ColumnType::Money | ColumnType::Number => "Nullable(Float64)",
                    _ => "Nullable(String)",
                }
            };
            format!("{} {ty}", c.name)
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} ({columns}, traits String, version UInt64, deleted UInt8)
         ENGINE = ReplacingMergeTree(version) ORDER BY ({key})",
        table = kind.name,
        columns = columns.join(", "),
        key = kind.key.join(", ")
    )
}

/// The id an identity call links to its userId: an alias's previousId, an identify's
/// anonymousId.
const LINKED_ID: &str = "if(type = 'alias', previous_id, anonymous_id)";
/// Each message once, its first received copy (the dedup rule of every read).
const FIRST_COPY: &str = "ORDER BY received_ms, position LIMIT 1 BY source, message_id";

/// How long an insert may take to send and to be accepted, and a query to answer.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Reading a run of activity rollup rows for an export may take a while on a large install.
const ROLLUP_READ_TIMEOUT: Duration = Duration::from_secs(3600);
/// Stored `activity` rows one query merges at most (more when one day holds more), and
/// the days it spans at most: the rows bound the memory, and every query costs its own
/// overhead (31 days at most made a year of the 30-account demo 26 queries: 3.3 s, against
/// 2.1 s for 2).
const ACTIVITY_ROWS_PER_READ: u64 = 500_000;
const ACTIVITY_DAYS_PER_READ: u16 = 366;

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct EventRow {
    v: u8,
    day: u16,
    timestamp_ms: i64,
    received_ms: i64,
    /// The message's place in its insert block: with `received_ms`, the listing order.
    position: u32,
    source: String,
    message_id: String,
    #[serde(rename = "type")]
    kind: String,
    user_id: String,
    anonymous_id: String,
    group_id: String,
    event: String,
    previous_id: String,
    traits: String,
    raw: String,
    /// `u64::MAX - received_ms`: merges keep the copy with the highest, the first received.
    first_wins: u64,
}

fn error(context: &str, e: clickhouse::error::Error) -> StoreError {
    StoreError::ClickHouse(format!("{context}: {e}"))
}

impl ClickHouse {
    /// Connects, creates the database and tables if missing.
    pub async fn open(location: &ClickHouseLocation) -> Result<ClickHouse, StoreError> {
        let mut client = clickhouse::Client::default()
            .with_url(&location.url)
            .with_validation(false);
        if let Some(user) = &location.user {
            client = client.with_user(user);
        }
        if let Some(password) = &location.password {
            client = client.with_password(password);
        }
        let context = format!("ClickHouse at {}", location.url);
        let answered =
            tokio::time::timeout(Duration::from_secs(10), client.query("SELECT 1").execute()).await;
        match answered {
            Ok(result) => result.map_err(|e| error(&format!("{context} does not answer"), e))?,
            Err(_) => {
                return Err(StoreError::ClickHouse(format!(
                    "{context} does not answer within 10 s"
                )))
            }
        }
        let database = &location.database;
        execute(
            &client,
            &format!("CREATE DATABASE IF NOT EXISTS {database}"),
            &context,
        )
        .await?;
        for statement in SCHEMA {
            execute(&client, &statement.replace("{db}", database), &context).await?;
        }
        for kind in records::KINDS {
            execute(&client, &record_table(kind, database), &context).await?;
        }
        add_columns(&client, database, &context).await?;
        strip_write_keys(&client, database, &context).await?;
        // Numbers in JSON output as numbers (18.16 quotes 64-bit integers by default).
        let client = client
            .with_database(database)
            .with_setting("output_format_json_quote_64bit_integers", "0");
        Ok(ClickHouse {
            client,
            location: location.clone(),
        })
    }

    /// Answers when the server does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        execute(&self.client, "SELECT 1", "ClickHouse ping").await
    }

    /// Creates an API token (as `store::sqlite::create_token` does on the embedded store) and returns
    /// its secret; only its SHA-256 is stored.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        valid_for_seconds: Option<i64>,
    ) -> Result<String, StoreError> {
        let secret = crate::store::sqlite::new_token_secret();
        let now = chrono::Utc::now().timestamp_millis();
        // Ids stay below 2^53 so that JSON readers keep them exact.
        let id = (rand::random::<u64>() >> 11) as i64;
        let query = self
            .client
            .query("INSERT INTO api_tokens (id, name, role, token_sha256, created_ms, expires_ms, version, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, 0)")
            .bind(id)
            .bind(name)
            .bind(role.as_str())
            .bind(crate::store::sqlite::token_digest(&secret))
            .bind(now)
            .bind(valid_for_seconds.map_or(0, |s| now + s * 1000))
            .bind(now as u64);
        run(query, "create token").await?;
        Ok(secret)
    }

    /// The role of a presented token, if it is known, not revoked and not expired.
    pub async fn token_role(&self, secret: &str) -> Result<Option<Role>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Current {
            role: String,
            expires_ms: i64,
            deleted: u8,
        }
        let query = self
            .client
            .query(
                "SELECT argMax(role, version) AS role, argMax(expires_ms, version) AS expires_ms, argMax(deleted, version) AS deleted
                 FROM api_tokens WHERE token_sha256 = ? GROUP BY id",
            )
            .bind(crate::store::sqlite::token_digest(secret));
        let rows: Vec<Current> = fetch_all(query, "token lookup").await?;
        let now = chrono::Utc::now().timestamp_millis();
        Ok(rows
            .iter()
            .find(|t| t.deleted == 0 && (t.expires_ms == 0 || t.expires_ms > now))
            .and_then(|t| Role::parse(&t.role)))
    }

    /// Inserts the messages of `jobs` as one block; Ok once ClickHouse accepted it.
    async fn insert(&self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<EventRow>("events")
            .await
            .map_err(|e| error("insert", e))?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        let mut position = 0u32;
        for job in jobs {
            for m in &job.messages {
                position += 1;
                let row = EventRow {
                    v: 1,
                    day: day_of(m.timestamp_ms),
                    timestamp_ms: m.timestamp_ms,
                    received_ms: m.received_ms,
                    position,
                    source: job.source.to_string(),
                    message_id: m.message_id.clone(),
                    kind: m.kind.as_str().to_string(),
                    user_id: m.user_id.clone().unwrap_or_default(),
                    anonymous_id: m.anonymous_id.clone().unwrap_or_default(),
                    group_id: m.group_id.clone().unwrap_or_default(),
                    event: m.event.clone().unwrap_or_default(),
                    previous_id: m.previous_id.clone().unwrap_or_default(),
                    traits: m.traits.as_deref().map(compact_json).unwrap_or_default(),
                    raw: m.raw.clone(),
                    first_wins: u64::MAX - m.received_ms.max(0) as u64,
                };
                insert.write(&row).await.map_err(|e| error("insert", e))?;
            }
        }
        insert.end().await.map_err(|e| error("insert", e))
    }

    /// Events received in the filter's range, oldest first, each message once (its first
    /// received copy), with user and account resolved as the embedded store does.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_in_order(filter, false).await
    }

    /// [`Self::list_events`], the first received first or (`newest_first`) the last.
    // Over 100 lines: One paged read with its identity columns; shrinks with issue 29 item 3.
    #[allow(clippy::too_many_lines)]
    async fn events_in_order(
        &self,
        filter: &EventFilter,
        newest_first: bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = filter.limit.clamp(1, limits::EVENTS_LIST_ROWS_MAX);
        let until = filter.until_ms.unwrap_or(i64::MAX);
        // Each message once (LIMIT 1 BY runs before LIMIT, after ORDER BY: its first copy).
        // A user or account filter narrows the read to the events that may resolve to it
        // (its own, its linked anonymous ids', its members'); the exact test follows below.
        let mut sql =
            String::from("SELECT ?fields FROM events WHERE received_ms >= ? AND received_ms < ?");
        let linked = format!(
            "SELECT {LINKED_ID} FROM events WHERE type IN ('alias', 'identify') AND user_id"
        );
        if filter.user.is_some() {
            sql.push_str(&format!(
                " AND (user_id = ? OR (user_id = '' AND anonymous_id IN ({linked} = ?)))"
            ));
        }
        if filter.account.is_some() {
            const MEMBERS: &str = "SELECT user_id FROM events WHERE type = 'group' AND user_id != '' AND group_id = ?";
            sql.push_str(&format!(
                " AND (group_id = ? OR (group_id = '' AND (user_id IN ({MEMBERS})
                      OR anonymous_id IN (SELECT anonymous_id FROM events WHERE type = 'group' AND user_id = '' AND group_id = ?)
                      OR anonymous_id IN ({linked} IN ({MEMBERS})))))"
            ));
        }
        sql.push_str(if newest_first {
            " ORDER BY received_ms DESC, position DESC, source, message_id LIMIT 1 BY source, message_id LIMIT ?"
        } else {
            " ORDER BY received_ms, position, source, message_id LIMIT 1 BY source, message_id LIMIT ?"
        });
        let mut query = self.client.query(&sql).bind(filter.since_ms).bind(until);
        if let Some(user) = &filter.user {
            query = query.bind(user).bind(user);
        }
        if let Some(account) = &filter.account {
            query = query
                .bind(account)
                .bind(account)
                .bind(account)
                .bind(account);
        }
        let read = if filter.user.is_some() || filter.account.is_some() {
            limits::EVENTS_LIST_ROWS_MAX * 10
        } else {
            limit
        };
        let rows: Vec<EventRow> = fetch_all(query.bind(read), "list events").await?;
        let people: BTreeSet<String> = rows
            .iter()
            .flat_map(|r| [r.user_id.clone(), r.anonymous_id.clone()])
            .filter(|k| !k.is_empty())
            .collect();
        let links = self.links(&people).await?;
        let memberships = self.memberships(&people, &links).await?;
        let mut out = Vec::new();
        for row in rows {
            let user_id = non_empty(&row.user_id).or_else(|| links.get(&row.anonymous_id).cloned());
            let anonymous_id = non_empty(&row.anonymous_id);
            let mut account_id = non_empty(&row.group_id);
            if account_id.is_none() {
                let key = user_id
                    .clone()
                    .or_else(|| anonymous_id.clone())
                    .unwrap_or_default();
                if let Some(joined) = memberships.get(&key) {
                    account_id = joined
                        .iter()
                        .rev()
                        .find(|(ms, _)| *ms <= row.timestamp_ms)
                        .or(joined.first())
                        .map(|(_, a)| a.clone());
                }
            }
            let user_ok = filter
                .user
                .as_ref()
                .is_none_or(|u| user_id.as_ref() == Some(u));
            let account_ok = filter
                .account
                .as_ref()
                .is_none_or(|a| account_id.as_ref() == Some(a));
            if !(user_ok && account_ok) {
                continue;
            }
            out.push(StoredEvent {
                id: 0,
                received_at: format_timestamp(row.received_ms),
                source: row.source,
                message_id: row.message_id,
                kind: row.kind,
                user_id,
                anonymous_id,
                account_id,
                event: non_empty(&row.event),
                timestamp: format_timestamp(row.timestamp_ms),
                received_ms: row.received_ms,
                timestamp_ms: row.timestamp_ms,
                raw: row.raw,
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// anonymousId -> the userId an alias or identify call first linked it to.
    async fn links(&self, keys: &BTreeSet<String>) -> Result<BTreeMap<String, String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Link {
            previous: String,
            user_id: String,
        }
        let keys: Vec<&String> = keys.iter().collect();
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(1_000) {
            let query = self
                .client
                .query(&format!(
                    "SELECT {LINKED_ID} AS previous, argMin(user_id, timestamp_ms) AS user_id
                     FROM (SELECT * FROM events WHERE type IN ('alias', 'identify') AND user_id != ''
                           AND has(?, {LINKED_ID}) LIMIT 1 BY source, message_id)
                     GROUP BY previous"
                ))
                .bind(chunk);
            let links: Vec<Link> = fetch_all(query, "identity links").await?;
            out.extend(links.into_iter().map(|l| (l.previous, l.user_id)));
        }
        Ok(out)
    }

    /// Person (userId, else anonymousId) -> the group calls that placed them, by time.
    async fn memberships(
        &self,
        keys: &BTreeSet<String>,
        links: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Vec<(i64, String)>>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Joined {
            user_id: String,
            anonymous_id: String,
            timestamp_ms: i64,
            group_id: String,
        }
        let mut wanted: BTreeSet<&String> = keys.iter().collect();
        wanted.extend(links.values());
        let wanted: Vec<&String> = wanted.into_iter().collect();
        let mut out: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for chunk in wanted.chunks(1_000) {
            let query = self
                .client
                .query(&format!(
                    "SELECT user_id, anonymous_id, timestamp_ms, group_id FROM events
                     WHERE type = 'group' AND group_id != '' AND (has(?, user_id) OR (user_id = '' AND has(?, anonymous_id)))
                     {FIRST_COPY}"
                ))
                .bind(chunk)
                .bind(chunk);
            let joined: Vec<Joined> = fetch_all(query, "memberships").await?;
            for j in joined {
                let key = if j.user_id.is_empty() {
                    j.anonymous_id
                } else {
                    j.user_id
                };
                out.entry(key)
                    .or_default()
                    .push((j.timestamp_ms, j.group_id));
            }
        }
        for joined in out.values_mut() {
            joined.sort();
        }
        Ok(out)
    }
}

/// Runs a query within [`QUERY_TIMEOUT`]; all its rows.
async fn fetch_all<T: clickhouse::RowOwned + clickhouse::RowRead>(
    query: clickhouse::query::Query,
    context: &str,
) -> Result<Vec<T>, StoreError> {
    match tokio::time::timeout(QUERY_TIMEOUT, query.fetch_all()).await {
        Ok(result) => result.map_err(|e| error(context, e)),
        Err(_) => Err(StoreError::ClickHouse(format!(
            "{context}: no answer within {} s",
            QUERY_TIMEOUT.as_secs()
        ))),
    }
}

/// Runs one statement within [`QUERY_TIMEOUT`].
async fn execute(client: &clickhouse::Client, sql: &str, context: &str) -> Result<(), StoreError> {
    run(client.query(sql), context).await
}

/// Columns added to tables after they were first created, as (table, column, type): added
/// at start where missing (18.16 has no `ADD COLUMN IF NOT EXISTS`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("health_history", "raw_tier", "Nullable(String)"),
    ("health_history", "raw_since", "Nullable(Int32)"),
    ("tier_changes", "cause", "String DEFAULT 'usage'"),
];

async fn add_columns(
    client: &clickhouse::Client,
    database: &str,
    context: &str,
) -> Result<(), StoreError> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Count {
        n: u64,
    }
    for (table, column, kind) in ADDED_COLUMNS {
        let query = client
            .query("SELECT count() AS n FROM system.columns WHERE database = ? AND table = ? AND name = ?")
            .bind(database)
            .bind(*table)
            .bind(*column);
        if fetch_all::<Count>(query, context)
            .await?
            .first()
            .is_some_and(|c| c.n == 0)
        {
            execute(
                client,
                &format!("ALTER TABLE {database}.{table} ADD COLUMN {column} {kind}"),
                context,
            )
            .await?;
        }
    }
    Ok(())
}

/// Once per database: a `writeKey` an older bellwether kept in events' raw text is removed
/// (ingest strips it now), by a mutation ClickHouse applies in the background; a row in
/// `secrets` notes it was asked for. A database without events needs none.
async fn strip_write_keys(
    client: &clickhouse::Client,
    database: &str,
    context: &str,
) -> Result<(), StoreError> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Count {
        n: u64,
    }
    const DONE: &str = "migration.write_keys_stripped";
    let query = client
        .query(&format!(
            "SELECT count() AS n FROM {database}.secrets WHERE name = ?"
        ))
        .bind(DONE);
    if fetch_all::<Count>(query, context)
        .await?
        .first()
        .is_some_and(|c| c.n > 0)
    {
        return Ok(());
    }
    // A database without events has nothing to strip (and stays empty for `restore`).
    let query = client.query(&format!("SELECT count() AS n FROM {database}.events"));
    if fetch_all::<Count>(query, context)
        .await?
        .first()
        .is_none_or(|c| c.n == 0)
    {
        return Ok(());
    }
    // A top-level "writeKey":"..." member with the comma that joins it to the next or the
    // previous one (RE2; a key is a JSON string without quotes or backslashes in practice,
    // escapes are matched anyway).
    let member = r#""writeKey"\s*:\s*"(?:[^"\\]|\\.)*""#;
    // As SQL string literals: backslashes and quotes escaped; `?` doubled, the client's
    // own escape for a literal `?` (not a bind placeholder).
    let literal = |regex: String| {
        format!(
            "'{}'",
            regex
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('?', "??")
        )
    };
    let (then_comma, comma_then) = (
        literal(format!(r"{member}\s*,\s*")),
        literal(format!(r",?\s*{member}")),
    );
    let sql = format!(
        "ALTER TABLE {database}.events UPDATE raw = replaceRegexpOne(replaceRegexpOne(raw, {then_comma}, ''), {comma_then}, '') WHERE position(raw, '\"writeKey\"') > 0"
    );
    // Not fatal: the server still starts (and tries again at its next start).
    if let Err(e) = execute(client, &sql, context).await {
        tracing::warn!(error = %e, "could not remove write keys stored in old events; trying again at the next start");
        return Ok(());
    }
    run(
        client
            .query(&format!(
                "INSERT INTO {database}.secrets (name, value, version) VALUES (?, 'asked', 0)"
            ))
            .bind(DONE),
        context,
    )
    .await
}

/// Runs one statement with its values bound within [`QUERY_TIMEOUT`].
async fn run(query: clickhouse::query::Query, context: &str) -> Result<(), StoreError> {
    match tokio::time::timeout(QUERY_TIMEOUT, query.execute()).await {
        Ok(result) => result.map_err(|e| error(context, e)),
        Err(_) => Err(StoreError::ClickHouse(format!(
            "{context}: no answer within {} s",
            QUERY_TIMEOUT.as_secs()
        ))),
    }
}

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
    async fn records_of(
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
    async fn read_records(
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
    async fn insert_lines(
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

/// How long an erasure waits for ClickHouse to finish rewriting the parts it touches.
const ERASURE_TIMEOUT: Duration = Duration::from_secs(600);

impl ClickHouse {
    /// GDPR erasure, as `store::sqlite::records::delete_user` on the embedded store: the person's
    /// events (by userId, and by every id linked to it: anonymous ids and older userIds
    /// aliased to it) with their traits, memberships and identity links, their `activity`
    /// rollups, survey answers (every version); tickets, suggestions and notes keep their
    /// account but lose the person. Mutations rewrite the parts that hold these rows; this returns
    /// once ClickHouse has finished them (the replaced parts leave the disk after the
    /// server's `old_parts_lifetime`). The calls are counted by kind: `trait_versions` are
    /// identify calls, `memberships` group calls, `identity_links` calls linking an id.
    // Over 100 lines: Erases a person from every table in a fixed order; each step is one statement.
    #[allow(clippy::too_many_lines)]
    pub async fn delete_user(&self, user_id: &str) -> Result<UserDeletion, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Linked {
            previous: String,
        }
        #[derive(clickhouse::Row, Deserialize)]
        struct Calls {
            kind: String,
            links: u64,
            n: u64,
        }
        let linked: Vec<String> = fetch_all::<Linked>(
            self.client
                .query(&format!(
                    "SELECT DISTINCT {LINKED_ID} AS previous FROM events
                     WHERE type IN ('alias', 'identify') AND user_id = ? AND {LINKED_ID} != '' AND {LINKED_ID} != user_id"
                ))
                .bind(user_id),
            "ids linked to the person",
        )
        .await?
        .into_iter()
        .map(|l| l.previous)
        .collect();
        let mut ids = linked.clone();
        ids.push(user_id.to_string());
        // Their userId is one of the ids, or they have none and their anonymousId is linked
        // (an empty array literal has no type on older servers: bound only when non-empty).
        let whose = if linked.is_empty() {
            "has(?, user_id)"
        } else {
            "(has(?, user_id) OR (user_id = '' AND has(?, anonymous_id)))"
        };
        let bind = |query: clickhouse::query::Query| {
            if linked.is_empty() {
                query.bind(&ids)
            } else {
                query.bind(&ids).bind(&linked)
            }
        };
        let calls: Vec<Calls> = fetch_all(
            bind(self.client.query(&format!(
                "SELECT type AS kind, countIf({LINKED_ID} != '') AS links, count() AS n
                 FROM (SELECT type, previous_id, anonymous_id FROM events WHERE {whose} {FIRST_COPY}) GROUP BY type"
            ))),
            "the person's events",
        )
        .await?;
        let mut deletion = UserDeletion {
            user_id: user_id.to_string(),
            ..UserDeletion::default()
        };
        for call in &calls {
            deletion.events += call.n as usize;
            match call.kind.as_str() {
                "identify" => deletion.trait_versions += call.n as usize,
                "group" => deletion.memberships += call.n as usize,
                _ => {}
            }
            if matches!(call.kind.as_str(), "identify" | "alias") {
                deletion.identity_links += call.links as usize;
            }
        }
        let of_person = |kind: &'static Kind| {
            let query = self
                .client
                .query(&current_records(kind, "", " AND has(?, user_id)", ""))
                .bind(&ids);
            self.read_records(kind, query)
        };
        deletion.survey_responses = of_person(&records::SURVEY_RESPONSES).await?.len();
        deletion.tickets_unlinked = of_person(&records::TICKETS).await?.len();
        deletion.suggestions_unlinked = of_person(&records::SUGGESTIONS).await?.len();
        #[derive(clickhouse::Row, Deserialize)]
        struct Notes {
            n: u64,
        }
        let notes = fetch_all::<Notes>(
            self.client
                .query("SELECT count() AS n FROM notes WHERE has(?, ifNull(person, ''))")
                .bind(&ids),
            "notes about the person",
        );
        deletion.notes_unlinked = notes.await?.first().map_or(0, |n| n.n as usize);
        let sends = fetch_all::<Notes>(
            self.client.query("SELECT uniqExact(id) AS n FROM action_rows WHERE kind = 'survey_send' AND has(?, user_id)").bind(&ids),
            "survey invitations of the person",
        );
        deletion.survey_sends = sends.await?.first().map_or(0, |n| n.n as usize);

        let mutations = [
            format!("ALTER TABLE events DELETE WHERE {whose}"),
            format!("ALTER TABLE activity DELETE WHERE {whose}"),
            format!("ALTER TABLE {} DELETE WHERE has(?, user_id)", records::SURVEY_RESPONSES.name),
            format!("ALTER TABLE {} UPDATE user_id = NULL WHERE has(?, user_id)", records::TICKETS.name),
            format!("ALTER TABLE {} UPDATE user_id = NULL WHERE has(?, user_id)", records::SUGGESTIONS.name),
            "ALTER TABLE notes UPDATE person = NULL WHERE has(?, ifNull(person, ''))".to_string(),
            // Survey invitations and their emails (which hold the address), every version.
            "ALTER TABLE action_rows DELETE WHERE kind IN ('survey_send', 'outbox') AND has(?, user_id)".to_string(),
        ];
        for (i, sql) in mutations.iter().enumerate() {
            let query = if i < 2 {
                bind(self.client.query(sql))
            } else {
                self.client.query(sql).bind(&ids)
            };
            run(query, "erasure").await?;
        }
        self.mutations_done(&format!("erasure of {user_id}"))
            .await?;
        Ok(deletion)
    }

    /// Waits until ClickHouse has finished every mutation of the database, at most
    /// [`ERASURE_TIMEOUT`].
    async fn mutations_done(&self, what: &str) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Pending {
            n: u64,
        }
        let deadline = Instant::now() + ERASURE_TIMEOUT;
        loop {
            let pending: Vec<Pending> = fetch_all(
                self.client.query("SELECT count() AS n FROM system.mutations WHERE database = ? AND is_done = 0").bind(self.location.database.as_str()),
                "mutation progress",
            )
            .await?;
            if pending.first().is_none_or(|p| p.n == 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::ClickHouse(format!("{what}: ClickHouse has not finished rewriting its parts within {} s; it goes on in the background", ERASURE_TIMEOUT.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Retention: drops the raw activity events (track, page, screen) timed more than 14
    /// hours before the horizon's UTC midnight (today - `days`: their local day is before it
    /// in every timezone) and received more than `days` ago (a retry within the dedup window
    /// still finds its first copy). The metrics keep them: they read the `activity` rollups,
    /// which ClickHouse filled as the events arrived, and the identify, group and alias calls,
    /// which stay. One mutation; returns once ClickHouse has finished it.
    pub async fn prune(&self, days: u32, now_ms: i64) -> Result<crate::store::Pruned, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Count {
            n: u64,
        }
        let horizon = crate::store::sqlite::retention::wanted_horizon(days, now_ms);
        let (timed_before, received_before) =
            crate::store::sqlite::retention::cutoffs(horizon, days, now_ms);
        let condition =
            "type IN ('track', 'page', 'screen') AND timestamp_ms < ? AND received_ms < ?";
        let count = self
            .client
            .query(&format!(
                "SELECT count() AS n FROM events WHERE {condition}"
            ))
            .bind(timed_before)
            .bind(received_before);
        let events = fetch_all::<Count>(count, "events past retention")
            .await?
            .first()
            .map_or(0, |c| c.n);
        if events > 0 {
            run(
                self.client
                    .query(&format!("ALTER TABLE events DELETE WHERE {condition}"))
                    .bind(timed_before)
                    .bind(received_before),
                "retention",
            )
            .await?;
            self.mutations_done("retention").await?;
        }
        Ok(crate::store::Pruned {
            events,
            horizon: activity::day_date(horizon as i32),
            skipped: None,
        })
    }
}

/// The current version of each record of `kind`, deleted ones left out. `FINAL` merges
/// versions in a subquery, and `deleted` is filtered outside it: a filter on a non-key
/// column next to `FINAL` may run before the merge on older servers and let an older
/// version through. `inner` filters key columns only (inside, before the merge), `outer`
/// adds ` AND ...` conditions on any column, `tail` orders and limits.
fn current_records(kind: &Kind, inner: &str, outer: &str, tail: &str) -> String {
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
impl RecordStore for ClickHouse {
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

/// One link of an identity (alias previousId, or identify anonymousId, to a userId).
#[derive(clickhouse::Row, Deserialize)]
struct LinkRow {
    previous: String,
    user_id: String,
    timestamp_ms: i64,
    received_ms: i64,
    position: u32,
}

/// One group call.
#[derive(clickhouse::Row, Deserialize)]
struct GroupRow {
    user_id: String,
    anonymous_id: String,
    group_id: String,
    timestamp_ms: i64,
    received_ms: i64,
    position: u32,
    name: String,
    plan: String,
}

/// The accounts only group calls name (`known` tells those with a record), with the name
/// and plan of their newest call that has one (as the embedded store merges group traits).
fn group_only_accounts<'a>(
    groups: &'a [GroupRow],
    known: &dyn Fn(&str) -> bool,
) -> BTreeMap<&'a str, (Option<String>, Option<String>)> {
    let mut sorted: Vec<&GroupRow> = groups.iter().filter(|g| !known(&g.group_id)).collect();
    sorted.sort_by_key(|g| (g.timestamp_ms, g.received_ms, g.position));
    let mut out: BTreeMap<&str, (Option<String>, Option<String>)> = BTreeMap::new();
    for group in sorted {
        let (name, plan) = out.entry(&group.group_id).or_default();
        *name = non_empty(&group.name).or(name.take());
        *plan = non_empty(&group.plan).or(plan.take());
    }
    out
}

/// One merged `activity` row.
#[derive(clickhouse::Row, Deserialize)]
struct ActivityRow {
    user_id: String,
    anonymous_id: String,
    group_id: String,
    kind: String,
    event: String,
    messages: u64,
    minutes: Vec<u32>,
    first_ms: i64,
}

/// Per-user-day rollups of every account, cut as the embedded store's rollup worker cuts
/// them (see `store::sqlite::rollup`): each activity row counts for the person its ids resolve to
/// and for its event's account (`context.groupId`, else the account the person was grouped
/// into at the time; none: not counted), on the local day of that account's timezone.
#[derive(Default)]
struct Rollups {
    days: HashMap<String, Vec<UserDay>>,
    features: HashMap<String, Vec<FeatureDay>>,
    first_use: HashMap<String, HashMap<String, i32>>,
    /// Each account's last local day with counted activity (found with `first_use`).
    last_day: HashMap<String, i32>,
    /// The first local day with counted activity (of any account).
    first_day: Option<i32>,
}

impl ClickHouse {
    /// Every group call, each message once.
    async fn group_calls(&self) -> Result<Vec<GroupRow>, StoreError> {
        fetch_all(
            self.client.query(&format!(
                "SELECT user_id, anonymous_id, group_id, timestamp_ms, received_ms, position,
                        visitParamExtractString(traits, 'name') AS name, visitParamExtractString(traits, 'plan') AS plan
                 FROM events WHERE type = 'group' {FIRST_COPY}"
            )),
            "group calls",
        )
        .await
    }

    /// `columns` of every current record of kind `table`.
    async fn record_cells(
        &self,
        table: &str,
        columns: &[&str],
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        let kind = records::kind(table)
            .ok_or_else(|| StoreError::Invalid(format!("no record kind {table}")))?;
        let index = columns
            .iter()
            .map(|c| {
                kind.columns
                    .iter()
                    .position(|k| k.name == *c)
                    .ok_or_else(|| StoreError::Invalid(format!("{table} has no column {c}")))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let stored = self.records_of(kind, None).await?;
        let mut rows: Vec<Vec<Cell>> = stored
            .iter()
            .map(|r| index.iter().map(|&i| r.cells[i].clone()).collect())
            .collect();
        if kind.name == records::ACCOUNTS.name {
            // Accounts known from group calls alone are accounts too, as on the embedded store.
            let known: HashSet<String> = stored
                .iter()
                .filter_map(|r| r.get(kind, "account_id").as_text().map(str::to_string))
                .collect();
            let groups = self.group_calls().await?;
            for (id, (name, plan)) in group_only_accounts(&groups, &|id| known.contains(id)) {
                let cell = |value: Option<String>| value.map_or(Cell::Null, Cell::Text);
                rows.push(
                    columns
                        .iter()
                        .map(|&c| match c {
                            "account_id" => Cell::Text(id.to_string()),
                            "name" => cell(name.clone()),
                            "plan" => cell(plan.clone()),
                            _ => Cell::Null,
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    /// Every account, by id order, as the embedded store lists them.
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.account_infos(&self.group_calls().await?).await
    }

    /// The records the metrics read, of the accounts of `infos` only, of the kinds in
    /// `tables` (None: every kind the metrics read).
    async fn metric_records(
        &self,
        infos: &[&AccountInfo],
        currency: &CurrencyConfig,
        tables: Option<&[&str]>,
    ) -> Result<crate::store::load::Records, StoreError> {
        let wanted: HashSet<&str> = infos.iter().map(|i| i.account_id.as_str()).collect();
        let mut rows: HashMap<&str, Vec<Vec<Cell>>> = HashMap::new();
        for (table, columns) in crate::store::load::RECORD_COLUMNS
            .iter()
            .filter(|(t, _)| tables.is_none_or(|tables| tables.contains(t)))
        {
            let current = self.record_cells(table, columns).await?;
            rows.insert(
                table,
                current
                    .into_iter()
                    .filter(|cells| cells[0].as_text().is_some_and(|a| wanted.contains(a)))
                    .collect(),
            );
        }
        crate::store::load::build_records(
            &mut |table, _| Ok(rows.remove(table).unwrap_or_default()),
            infos.iter().copied(),
            currency,
        )
    }

    /// The data of `infos` as `store::sqlite::metrics::load` reads it on the embedded store: records
    /// and the `activity` rollups read from ClickHouse (events already aggregated there),
    /// cut into per-user local days here, from `from_day - lookback` to `to_day` plus each
    /// account's value window.
    pub async fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<metrics::AccountData>, StoreError> {
        let groups = self.group_calls().await?;
        let mut records = self.metric_records(infos, currency, None).await?;
        let mut datas: Vec<metrics::AccountData> = infos
            .iter()
            .map(|info| records.account_data(info))
            .collect();
        let position: HashMap<&str, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| (info.account_id.as_str(), i))
            .collect();
        let from = from_day - config.lookback_days();
        // The days the computation reads: the lookback window and the value window.
        let windows = |account: &str, first_use: &HashMap<String, i32>| -> Vec<(i32, i32)> {
            let mut windows = vec![(from, to_day)];
            let moment = position
                .get(account)
                .and_then(|&i| datas[i].value_moment_with(first_use, config));
            if let Some(moment) = moment {
                windows.push((moment, moment + config.windows.adoption_days as i32 - 1));
            }
            windows
        };
        let mut rollups = self
            .rollups(infos, &groups, config, Windows::AfterFirstUse(&windows))
            .await?;
        for (info, data) in infos.iter().zip(datas.iter_mut()) {
            let id = info.account_id.as_str();
            let days = rollups.days.remove(id).unwrap_or_default();
            data.features = rollups
                .features
                .remove(id)
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f.day >= from && f.day <= to_day)
                .collect();
            data.first_use = rollups.first_use.remove(id).unwrap_or_default();
            data.last_active = rollups.last_day.remove(id);
            data.days = days
                .iter()
                .filter(|d| d.day >= from && d.day <= to_day)
                .cloned()
                .collect();
            if let Some(moment) = data.value_moment(config) {
                let last = moment + config.windows.adoption_days as i32 - 1;
                data.value_days = days
                    .into_iter()
                    .filter(|d| d.day >= moment && d.day <= last)
                    .collect();
            }
        }
        Ok(datas)
    }

    /// Every account's subscriptions, in the report currency.
    async fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<metrics::Subscription>>, StoreError> {
        let all: Vec<&AccountInfo> = infos.iter().collect();
        Ok(self
            .metric_records(&all, currency, Some(&["subscriptions"]))
            .await?
            .subscriptions)
    }

    /// The accounts of the records, plus those only group calls named (their plan from the
    /// newest call's traits), by id: as the embedded store lists them.
    async fn account_infos(&self, groups: &[GroupRow]) -> Result<Vec<AccountInfo>, StoreError> {
        let kind = &records::ACCOUNTS;
        let mut infos: BTreeMap<String, AccountInfo> = BTreeMap::new();
        for account in self.records_of(kind, None).await? {
            let text = |name: &str| account.get(kind, name).as_text().map(str::to_string);
            let id = text("account_id").unwrap_or_default();
            let plan = text("plan");
            infos.insert(
                id.clone(),
                AccountInfo {
                    account_id: id,
                    parent_id: text("parent_id"),
                    segment: text("segment")
                        .or_else(|| plan.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    plan,
                    tz: text("timezone")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(chrono_tz::UTC),
                },
            );
        }
        for (id, (_, plan)) in group_only_accounts(groups, &|id| infos.contains_key(id)) {
            infos.insert(
                id.to_string(),
                AccountInfo {
                    account_id: id.to_string(),
                    parent_id: None,
                    segment: plan.clone().unwrap_or_else(|| "unknown".into()),
                    plan,
                    tz: chrono_tz::UTC,
                },
            );
        }
        Ok(infos.into_values().collect())
    }

    /// Two passes over the `activity` rows, streamed: the first finds each account's first
    /// day of each feature, the second keeps the per-user days inside `windows(account,
    /// first uses)` only, so memory is that of the days an export reads. With `Windows::Known`
    /// the first pass is skipped and only the days around the windows are read.
    // Over 100 lines: Identity resolution duplicated from store/rollup.rs: issue 29 item 3 writes it once as a pure module and removes this.
    #[allow(clippy::too_many_lines)]
    async fn rollups(
        &self,
        infos: &[&AccountInfo],
        groups: &[GroupRow],
        config: &MetricsConfig,
        windows: Windows<'_>,
    ) -> Result<Rollups, StoreError> {
        let links: Vec<LinkRow> = fetch_all(
            self.client.query(&format!(
                "SELECT {LINKED_ID} AS previous, user_id, timestamp_ms, received_ms, position
                 FROM events WHERE type IN ('alias', 'identify') AND user_id != '' AND {LINKED_ID} != '' {FIRST_COPY}"
            )),
            "identity links",
        )
        .await?;
        let timezones: HashMap<&str, chrono_tz::Tz> = infos
            .iter()
            .map(|i| (i.account_id.as_str(), i.tz))
            .collect();
        // The newest link of each id, as the rollup worker follows them.
        let mut newest_link: HashMap<&str, &LinkRow> = HashMap::new();
        let mut linked_from: HashMap<&str, Vec<&str>> = HashMap::new();
        for link in links.iter().filter(|l| l.previous != l.user_id) {
            let slot = newest_link.entry(&link.previous).or_insert(link);
            if (link.timestamp_ms, link.received_ms, link.position)
                >= (slot.timestamp_ms, slot.received_ms, slot.position)
            {
                *slot = link;
            }
            linked_from
                .entry(&link.user_id)
                .or_default()
                .push(&link.previous);
        }
        let canonical = |id: &str, is_user: bool| -> Option<String> {
            let mut current = id;
            let mut linked = false;
            let mut seen = HashSet::new();
            while seen.insert(current) && seen.len() <= 16 {
                match newest_link.get(current) {
                    Some(link) => {
                        current = &link.user_id;
                        linked = true;
                    }
                    None => break,
                }
            }
            (is_user || linked).then(|| current.to_string())
        };
        // Each person's group calls under any id linked into it, by time.
        let mut calls_of: HashMap<&str, Vec<&GroupRow>> = HashMap::new();
        for group in groups {
            let id = if group.user_id.is_empty() {
                &group.anonymous_id
            } else {
                &group.user_id
            };
            calls_of.entry(id).or_default().push(group);
        }
        let mut memberships: HashMap<String, Vec<(i64, i64, u32, String)>> = HashMap::new();
        let mut account_at = |person: &str, ts: i64| -> Option<String> {
            let list = memberships.entry(person.to_string()).or_insert_with(|| {
                let mut ids = vec![person];
                let mut index = 0;
                while index < ids.len() && ids.len() < 1000 {
                    for previous in linked_from.get(ids[index]).into_iter().flatten() {
                        if !ids.contains(previous) {
                            ids.push(previous);
                        }
                    }
                    index += 1;
                }
                let mut all: Vec<(i64, i64, u32, String)> = ids
                    .iter()
                    .flat_map(|id| calls_of.get(id).into_iter().flatten())
                    .map(|g| {
                        (
                            g.timestamp_ms,
                            g.received_ms,
                            g.position,
                            g.group_id.clone(),
                        )
                    })
                    .collect();
                all.sort();
                all
            });
            let index = list.partition_point(|(at, ..)| *at <= ts);
            index.checked_sub(1).map(|i| list[i].3.clone())
        };

        let scope = people_of(infos, groups, &links);
        let mut classifier = Classifier::new(config);
        let mut cut: BTreeMap<(String, i32, String), crate::store::sqlite::rollup::DayAgg> =
            BTreeMap::new();
        let mut first_use: HashMap<String, HashMap<String, i32>> = HashMap::new();
        let mut last_day: HashMap<String, i32> = HashMap::new();
        let mut kept: Option<HashMap<String, Vec<(i32, i32)>>> = match &windows {
            Windows::Known(known) => Some(
                infos
                    .iter()
                    .map(|i| (i.account_id.clone(), known(&i.account_id)))
                    .collect(),
            ),
            Windows::AfterFirstUse(_) => None,
        };
        // Known windows: the UTC days that may hold their local days (a day either side).
        let span = kept.as_ref().and_then(|k| {
            let from = k.values().flatten().map(|w| w.0).min()?;
            let to = k.values().flatten().map(|w| w.1).max()?;
            Some((from - 1, to + 1))
        });
        if kept.is_some() && span.is_none() {
            return Ok(Rollups::default());
        }
        let mut first_day: Option<i32> = None;
        // An empty array literal has no element type on older servers: empty lists are left out.
        let filter = match &scope {
            None => "1".to_string(),
            Some((accounts, people)) => {
                let mut any = Vec::new();
                if !accounts.is_empty() {
                    any.push("has(?, group_id)");
                }
                if !people.is_empty() {
                    any.extend(["has(?, user_id)", "has(?, anonymous_id)"]);
                }
                if any.is_empty() {
                    "0".to_string()
                } else {
                    format!("({})", any.join(" OR "))
                }
            }
        };
        let bind_scope = |mut query: clickhouse::query::Query| {
            if let Some((accounts, people)) = &scope {
                if !accounts.is_empty() {
                    query = query.bind(accounts);
                }
                if !people.is_empty() {
                    query = query.bind(people).bind(people);
                }
            }
            query
        };
        // Merging every row's states in one query needs memory in proportion to all of them
        // (a year of 10 M events went past 3.7 GB): the rows are read in runs of days, each
        // under ACTIVITY_ROWS_PER_READ stored rows and ACTIVITY_DAYS_PER_READ days (a bucket
        // never spans two days, so no row is split between runs).
        #[derive(clickhouse::Row, Deserialize)]
        struct DayRows {
            day: u16,
            rows: u64,
        }
        let per_day: Vec<DayRows> = fetch_all(
            bind_scope(self.client.query(&format!("SELECT toUInt16(day) AS day, count() AS rows FROM activity WHERE {filter} GROUP BY day ORDER BY day"))),
            "activity rollups",
        )
        .await?;
        let mut runs: Vec<(u16, u16)> = Vec::new();
        let mut in_run = 0u64;
        let wanted = |day: u16| span.is_none_or(|(from, to)| (from..=to).contains(&i32::from(day)));
        for d in per_day.iter().filter(|d| wanted(d.day)) {
            match runs.last_mut() {
                Some(run)
                    if in_run + d.rows <= ACTIVITY_ROWS_PER_READ
                        && d.day - run.0 < ACTIVITY_DAYS_PER_READ =>
                {
                    run.1 = d.day;
                    in_run += d.rows;
                }
                _ => {
                    runs.push((d.day, d.day));
                    in_run = d.rows;
                }
            }
        }
        let date = |day: u16| activity::day_date(i32::from(day)).to_string();
        for _pass in 0..2 {
            for &(first, last) in &runs {
                // The rollup rows stream by (never all in memory).
                let query = self.client.query(&format!(
                    "SELECT user_id, anonymous_id, group_id, type AS kind, event, uniqExactMerge(messages) AS messages,
                            groupUniqArrayMerge(minutes) AS minutes, minMerge(first_ms) AS first_ms
                     FROM activity WHERE {filter} AND day BETWEEN toDate(?) AND toDate(?) GROUP BY user_id, anonymous_id, group_id, kind, event, bucket"
                ));
                let mut cursor = bind_scope(query)
                    .bind(date(first))
                    .bind(date(last))
                    .fetch::<ActivityRow>()
                    .map_err(|e| error("activity rollups", e))?;
                let deadline = tokio::time::Instant::now() + ROLLUP_READ_TIMEOUT;
                loop {
                    let next = match tokio::time::timeout_at(deadline, cursor.next()).await {
                        Ok(next) => next.map_err(|e| error("activity rollups", e))?,
                        Err(_) => {
                            return Err(StoreError::ClickHouse(format!(
                                "activity rollups: not read within {} s",
                                ROLLUP_READ_TIMEOUT.as_secs()
                            )))
                        }
                    };
                    let Some(row) = next else { break };
                    let Some(act) =
                        classifier.classify(&row.kind, non_empty(&row.event).as_deref())
                    else {
                        continue;
                    };
                    let person = if !row.user_id.is_empty() {
                        canonical(&row.user_id, true)
                    } else if !row.anonymous_id.is_empty() {
                        canonical(&row.anonymous_id, false)
                    } else {
                        None
                    };
                    let Some(person) = person else { continue };
                    let account = match non_empty(&row.group_id) {
                        Some(group) => group,
                        None => match account_at(&person, row.first_ms) {
                            Some(account) => account,
                            None => continue,
                        },
                    };
                    let tz = timezones
                        .get(account.as_str())
                        .copied()
                        .unwrap_or(chrono_tz::UTC);
                    let local = activity::local_day(row.first_ms, tz);
                    let Some(kept) = &kept else {
                        first_day = Some(first_day.map_or(local, |d: i32| d.min(local)));
                        match last_day.get_mut(&account) {
                            Some(last) => *last = (*last).max(local),
                            None => {
                                last_day.insert(account.clone(), local);
                            }
                        }
                        if let Some(feature) = &act.feature {
                            let first = first_use
                                .entry(account)
                                .or_default()
                                .entry(feature.clone())
                                .or_insert(local);
                            *first = (*first).min(local);
                        }
                        continue;
                    };
                    // Days of accounts the export does not list, or outside its windows, are not kept.
                    let Some(spans) = kept.get(&account) else {
                        continue;
                    };
                    if !spans.iter().any(|&(from, to)| local >= from && local <= to) {
                        continue;
                    }
                    let day = cut.entry((account, local, person)).or_default();
                    let uses = row.messages as i64;
                    day.events += uses;
                    day.minutes.extend(&row.minutes);
                    if act.login {
                        day.logins += uses;
                        day.login_minutes.extend(&row.minutes);
                    }
                    if act.education {
                        day.education += uses;
                    }
                    if let Some(feature) = &act.feature {
                        day.transactions += uses;
                        *day.features.entry(feature.clone()).or_default() += uses;
                        if act.key {
                            day.key_minutes.extend(&row.minutes);
                        }
                    }
                }
            }
            let Windows::AfterFirstUse(windows) = &windows else {
                break;
            };
            if kept.is_some() {
                break;
            }
            let none = HashMap::new();
            let windows: HashMap<String, Vec<(i32, i32)>> = infos
                .iter()
                .map(|i| {
                    (
                        i.account_id.clone(),
                        windows(&i.account_id, first_use.get(&i.account_id).unwrap_or(&none)),
                    )
                })
                .collect();
            if windows.values().all(Vec::is_empty) {
                // Nothing to keep: no second pass.
                break;
            }
            kept = Some(windows);
        }
        let mut out = Rollups {
            first_use,
            last_day,
            first_day,
            ..Rollups::default()
        };
        for ((account, day, person), mut agg) in cut {
            for list in [
                &mut agg.minutes,
                &mut agg.login_minutes,
                &mut agg.key_minutes,
            ] {
                list.sort_unstable();
                list.dedup();
            }
            for (feature, uses) in agg.features {
                out.features
                    .entry(account.clone())
                    .or_default()
                    .push(FeatureDay { day, feature, uses });
            }
            out.days.entry(account).or_default().push(UserDay {
                day,
                user: person,
                logins: agg.logins,
                transactions: agg.transactions,
                education: agg.education,
                minutes: agg.minutes,
                login_minutes: agg.login_minutes,
                key_minutes: agg.key_minutes,
            });
        }
        Ok(out)
    }
}

/// Which per-user days a rollups read keeps, by account (local day number ranges).
enum Windows<'a> {
    /// Known before reading: one pass over the days they cover.
    Known(&'a dyn Fn(&str) -> Vec<(i32, i32)>),
    /// Known from each feature's first use: a first pass over every day finds those.
    AfterFirstUse(&'a FromFirstUse<'a>),
}

/// An account's day windows from its features' first days of use.
type FromFirstUse<'a> = dyn Fn(&str, &HashMap<String, i32>) -> Vec<(i32, i32)> + 'a;

/// Accounts read together up to which the `activity` rows are filtered by who may count
/// for them (more: every row is read, which is cheaper than a long id list).
const SCOPED_ACCOUNTS_MAX: usize = 64;
/// Ids a scoped read may name before it reads every row instead.
const SCOPED_IDS_MAX: usize = 100_000;

/// For a read of a few accounts: their ids, and every user or anonymous id whose activity
/// may count for them: the ids in their group calls and every id linked to those, however
/// indirectly (a superset of the people the rollup rules resolve into these accounts).
/// None: read every row.
fn people_of(
    infos: &[&AccountInfo],
    groups: &[GroupRow],
    links: &[LinkRow],
) -> Option<(Vec<String>, Vec<String>)> {
    let accounts: HashSet<&str> = infos.iter().map(|i| i.account_id.as_str()).collect();
    // A quarter or more of the accounts with group calls: their people are most rows, and
    // matching every row against long id lists costs more than reading it (the 30-account
    // demo's export: 2.1 s scoped, 0.65 s reading every row).
    let grouped: HashSet<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
    if infos.len() > SCOPED_ACCOUNTS_MAX || accounts.len() * 4 > grouped.len() {
        return None;
    }
    let mut linked: HashMap<&str, Vec<&str>> = HashMap::new();
    for link in links {
        linked
            .entry(&link.previous)
            .or_default()
            .push(&link.user_id);
        linked
            .entry(&link.user_id)
            .or_default()
            .push(&link.previous);
    }
    let mut people: HashSet<&str> = HashSet::new();
    let mut next: Vec<&str> = groups
        .iter()
        .filter(|g| accounts.contains(g.group_id.as_str()))
        .flat_map(|g| [g.user_id.as_str(), g.anonymous_id.as_str()])
        .filter(|id| !id.is_empty())
        .collect();
    while let Some(id) = next.pop() {
        if people.insert(id) {
            if people.len() > SCOPED_IDS_MAX {
                return None;
            }
            next.extend(linked.get(id).into_iter().flatten());
        }
    }
    Some((
        accounts.into_iter().map(str::to_string).collect(),
        people.into_iter().map(str::to_string).collect(),
    ))
}

/// The metrics' reads, from synchronous code (a blocking thread of the server, or the CLI
/// inside a runtime): each waits for its queries.
impl crate::store::Source for ClickHouse {
    fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        block_on(ClickHouse::accounts(self))?
    }

    fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<metrics::AccountData>, StoreError> {
        block_on(ClickHouse::load(
            self, infos, from_day, to_day, config, currency,
        ))?
    }

    fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<metrics::Subscription>>, StoreError> {
        block_on(ClickHouse::subscriptions(self, infos, currency))?
    }

    /// A load reads every activity row of the lookback: a run of days costs about one
    /// snapshot (14 days of 2,000 accounts hold about 100 MB of rows).
    fn days_per_load(&self) -> usize {
        14
    }

    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError> {
        block_on(self.record_cells(table, columns))?
    }
}

impl ClickHouse {
    /// Each span's uses of each feature, from one read of the `activity` rollups.
    async fn feature_uses(
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

/// Health on ClickHouse, from a blocking thread.
impl crate::store::HealthSource for ClickHouse {
    fn data_start(&self, config: &MetricsConfig) -> Result<Option<i32>, StoreError> {
        let infos = block_on(ClickHouse::accounts(self))??;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let nothing = |_: &str, _: &HashMap<String, i32>| Vec::new();
        block_on(async {
            let groups = self.group_calls().await?;
            Ok(self
                .rollups(&all, &groups, config, Windows::AfterFirstUse(&nothing))
                .await?
                .first_day)
        })?
    }

    fn feature_uses(
        &self,
        spans: &[(String, i32, i32)],
        config: &MetricsConfig,
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        block_on(ClickHouse::feature_uses(self, spans, config))?
    }

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
    ) -> Result<Vec<Value>, StoreError> {
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
    ) -> Result<Vec<Value>, StoreError> {
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
    ) -> Result<Vec<Value>, StoreError> {
        let rows = self
            .history_where("account_id = ? AND day >= ? AND day <= ?", |query| {
                query.bind(account).bind(from).bind(to)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|(day, model_id, row)| super::history_point(*day, row, *model_id))
            .collect())
    }

    async fn change_rows(
        &self,
        since: i32,
        account: Option<&str>,
    ) -> Result<Vec<Value>, StoreError> {
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
                super::change_value(s.id, &change)
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

/// CSM notes on ClickHouse, from a blocking thread.
impl crate::store::ListeningSource for ClickHouse {
    fn add_note(
        &self,
        account: &str,
        author: &str,
        person: Option<&str>,
        text: &str,
    ) -> Result<Option<i64>, StoreError> {
        if crate::store::account_name(self, account)?.is_none() {
            return Ok(None);
        }
        let created_ms = chrono::Utc::now().timestamp_millis();
        let id = created_ms * 1000 + rand::random_range(0..1000);
        let query = self
            .client
            .query("INSERT INTO notes (id, account_id, author, person, text, created_ms) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(account)
            .bind(author)
            .bind(person)
            .bind(text)
            .bind(created_ms);
        block_on(run(query, "store a note"))??;
        Ok(Some(id))
    }

    fn stored_notes(&self, account: Option<&str>) -> Result<Vec<crate::store::Note>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stored {
            id: i64,
            account_id: String,
            author: String,
            person: Option<String>,
            text: String,
            created_ms: i64,
        }
        let one = if account.is_some() {
            "WHERE account_id = ?"
        } else {
            ""
        };
        let mut query = self.client.query(&format!(
            "SELECT id, account_id, author, person, text, created_ms FROM notes {one}"
        ));
        if let Some(account) = account {
            query = query.bind(account);
        }
        Ok(block_on(fetch_all::<Stored>(query, "notes"))??
            .into_iter()
            .map(|s| crate::store::Note {
                id: s.id,
                account_id: s.account_id,
                author: s.author,
                person: s.person,
                text: s.text,
                created_ms: s.created_ms,
            })
            .collect())
    }
}

/// JSON object text without whitespace outside strings: `visitParamExtract*` (what reads
/// traits on servers without JSONExtract) finds no value after `": "`. Text that is not
/// JSON stays as it is (ingest has checked it is an object).
fn compact_json(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_string(), |v| v.to_string())
}

/// Nanoseconds since 1970: the version of a row written now (a ReplacingMergeTree keeps
/// the highest).
fn now_version() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// The event's UTC day as ClickHouse's `Date` (days since 1970-01-01, 0 to 65535: events
/// outside 1970-2149 are filed under the nearest end).
fn day_of(timestamp_ms: i64) -> u16 {
    timestamp_ms
        .div_euclid(86_400_000)
        .clamp(0, i64::from(u16::MAX)) as u16
}

/// Runs `future` to completion from synchronous code, inside or outside a tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(tokio::task::block_in_place(|| handle.block_on(future))),
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Thread(e.to_string()))?;
            Ok(runtime.block_on(future))
        }
    }
}

/// Group commit for ClickHouse: gathers requests like the embedded writer (up to
/// `GROUP_MESSAGES_ENOUGH` messages, waiting at most `GROUP_WAIT` for more and at most
/// `GROUP_IDLE` between two requests), inserts them as
/// one block and answers each request once ClickHouse accepted it; up to `IN_FLIGHT` blocks
/// are on their way at once (an insert is a network round trip, not CPU). A failed insert
/// answers 503 and the clients resend. When the queue closes, the blocks in flight finish.
pub fn spawn_writer(
    store: ClickHouse,
    mut receiver: JobReceiver,
    telemetry: Telemetry,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    const GROUP_WAIT: Duration = Duration::from_millis(50);
    // A group also closes when no request came for this long (few clients: no point waiting).
    const GROUP_IDLE: Duration = Duration::from_millis(5);
    const GROUP_MESSAGES_ENOUGH: usize = 20_000;
    // Every insert is a part ClickHouse writes and later merges: fewer, larger blocks. With
    // ClickHouse on the same 2 cores (500 k events, 32 connections, two runs each): 20,000
    // messages / 50 ms / 5 ms idle / 2 in flight gave 59-67 k events/s in ~160 inserts;
    // 5,000 / 20 ms / 2 ms / 4 gave 47-63 k in 270-480 inserts; one block in flight 42-49 k.
    // On its own machine the network round trip is what a block waits for, which the second
    // block in flight overlaps.
    const IN_FLIGHT: u32 = 2;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    std::thread::Builder::new()
        .name("clickhouse-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT as usize));
                while let Some(first) = receiver.recv().await {
                    let mut count = first.messages.len();
                    let mut jobs = vec![first];
                    let deadline = tokio::time::Instant::now() + GROUP_WAIT;
                    while count < GROUP_MESSAGES_ENOUGH.min(limits::COMMIT_MESSAGES_MAX) {
                        let until = deadline.min(tokio::time::Instant::now() + GROUP_IDLE);
                        match tokio::time::timeout_at(until, receiver.recv()).await {
                            Ok(Some(job)) => {
                                count += job.messages.len();
                                jobs.push(job);
                            }
                            _ => break,
                        }
                    }
                    let slot = std::sync::Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .expect("invariant: the semaphore is never closed");
                    let (store, telemetry) = (store.clone(), telemetry.clone());
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let result = store.insert(&jobs).await;
                        telemetry
                            .commit_seconds
                            .observe(started.elapsed().as_secs_f64());
                        telemetry.commit_messages.observe(count as f64);
                        answer(jobs, result, &telemetry);
                        drop(slot);
                    });
                }
                let _ = slots.acquire_many(IN_FLIGHT).await;
                tracing::info!("ClickHouse writer stopped: ingest queue closed");
            })
        })
        .map_err(|e| StoreError::Thread(e.to_string()))
}

fn answer(jobs: Vec<Job>, result: Result<(), StoreError>, telemetry: &Telemetry) {
    match result {
        Ok(()) => {
            for job in jobs {
                let stored = job.messages.len();
                telemetry.accepted.inc_by(stored as u64);
                job.answer(Ok(JobOutcome {
                    stored,
                    duplicates: 0,
                }));
            }
        }
        Err(e) => {
            let messages: usize = jobs.iter().map(|j| j.messages.len()).sum();
            tracing::error!(error = %e, messages, "ClickHouse insert failed; the requests get 503 and are retried by their clients");
            telemetry.reject("store_error");
            for job in jobs {
                job.answer(Err(e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_outside_clickhouse_dates_go_to_the_nearest_end() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_400_000 * 20_000 + 5), 20_000);
        assert_eq!(day_of(-1), 0);
        assert_eq!(day_of(i64::MAX), u16::MAX);
    }
}
