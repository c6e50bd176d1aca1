//! Erasure of a person and retention of raw events on ClickHouse, by mutations.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::records::current_records;
use super::{fetch_all, run, ClickHouse, FIRST_COPY, LINKED_ID};
use crate::metrics::activity::{self};
use crate::records::{self, Kind};
use crate::store::{StoreError, UserDeletion};

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
            "ALTER TABLE contact_roles DELETE WHERE has(?, user_id)".to_string(),
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
