//! The ClickHouse backend (`--store clickhouse://host:port/database`): several stateless
//! bellwether nodes share one ClickHouse.
//!
//! What runs on it so far: the Segment tracking API (each node's writer inserts its group of
//! requests as one block and answers only once ClickHouse accepted it), `/healthz`,
//! `/readyz`, `/metrics`, `bellwether events`, `bellwether import` ([`RecordImport`]), the
//! records API, the metrics (`ClickHouse` implements every `store` trait), health and its
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
//!
//! By concern: [`schema`] (tables, views, added columns), [`events`] (the writer, the event
//! list, tokens), [`records`], [`activity`] (what the metrics read), [`health`], [`notes`],
//! [`dashboard`] (users, sessions, secrets), [`actions`], [`erasure`] (erasure and
//! retention), [`backup`]. This file: the connection, its timeouts and query helpers.

use std::time::Duration;

use serde_json::Value;

use super::StoreError;
use crate::config::ClickHouseLocation;

mod actions;
mod activity;
mod backup;
mod dashboard;
mod erasure;
mod events;
mod health;
mod notes;
mod records;
mod schema;

use schema::{add_columns, record_table, strip_write_keys, SCHEMA};

pub use events::spawn_writer;
pub use records::RecordImport;

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
        for kind in crate::records::KINDS {
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

    /// The database bellwether keeps its tables in.
    pub fn database(&self) -> &str {
        &self.location.database
    }

    /// Answers when the server does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        execute(&self.client, "SELECT 1", "ClickHouse ping").await
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
