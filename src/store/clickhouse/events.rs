//! Events on ClickHouse: the group-commit writer, the event list with user and account
//! resolved from identity and group calls, and API tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    compact_json, day_of, error, fetch_all, non_empty, run, ClickHouse, FIRST_COPY,
    INSERT_END_TIMEOUT, INSERT_SEND_TIMEOUT, LINKED_ID,
};
use crate::ingest::queue::JobReceiver;
use crate::ingest::{format_timestamp, Job, JobOutcome};
use crate::limits;
use crate::store::{EventFilter, Role, StoreError, StoredEvent};
use crate::telemetry::Telemetry;

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

impl ClickHouse {
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
    pub(super) async fn events_in_order(
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
