//! Retention of raw events: events older than `[retention] raw_events_days` are dropped
//! while the rollups built from them stay.
//!
//! A pass first moves the retention horizon (`rollup_state.frozen_before_day`, a local day
//! number) to today minus the kept days: from then on the rollup rows of earlier days are
//! frozen (see [`super::rollup`]). It then deletes, in short transactions of at most
//! [`CHUNK_IDS`] ids, the events that are
//! - already rolled up (id up to the rollup cursor), never the newest one,
//! - timed more than 14 hours before the horizon's UTC midnight, so their local day is
//!   before the horizon in every timezone (UTC+14 is the furthest ahead), and
//! - received before `now - raw_events_days`, so a retried copy within the dedup window
//!   (never longer than the kept days) is still recognised after a restart.
//!
//! Their `person_events` rows go with them, and their ids are noted in `pruned_ids`: a
//! recompute keeps the frozen rows only of people who lost raw events. Users, trait history, memberships, identity
//! links and records stay. SQLite reuses the freed pages; `bellwether backup` writes a
//! compact copy.

use rusqlite::{params, Connection};

use crate::metrics::activity;
use crate::store::{Pruned, StoreError};

/// Ids looked at per delete transaction: short enough that ingest never waits long.
pub const CHUNK_IDS: i64 = 50_000;

/// The furthest any timezone is ahead of UTC.
const MAX_UTC_OFFSET_MS: i64 = 14 * 3_600_000;

/// The horizon (a day number) that keeping `days` days at `now_ms` asks for.
pub(crate) fn wanted_horizon(days: u32, now_ms: i64) -> i64 {
    let today = activity::day_number(
        chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .date_naive(),
    );
    i64::from(today) - i64::from(days)
}

/// Which raw events may go for a horizon: (timed before, received before) in ms. Timed more
/// than 14 hours before the horizon's UTC midnight, their local day is before it in every
/// timezone; received more than `days` ago, a retry within the dedup window still finds them.
pub(crate) fn cutoffs(horizon: i64, days: u32, now_ms: i64) -> (i64, i64) {
    (
        horizon * 86_400_000 - MAX_UTC_OFFSET_MS,
        now_ms - i64::from(days) * 86_400_000,
    )
}

/// Drops the raw events older than `days` (see the module notes). `progress` gets (ids
/// looked at, ids to look at).
pub fn prune(
    conn: &mut Connection,
    days: u32,
    now_ms: i64,
    progress: &mut dyn FnMut(i64, i64),
) -> Result<Pruned, StoreError> {
    let wanted = wanted_horizon(days, now_ms);
    // It writes only the horizon (rollups.db); the events it reads need no lock.
    let tx = super::write_transaction(conn, super::Lock::Rollups)?;
    let (last, counted_to, frozen_before): (i64, i64, Option<i64>) = tx.query_row(
        "SELECT last_event_id, frozen_counted_to, frozen_before_day FROM rollup_state WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let horizon = frozen_before.map_or(wanted, |day| day.max(wanted));
    let horizon_date =
        activity::day_date(horizon.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
    if last < counted_to {
        // A rebuild is under way: rows of days about to be frozen are not complete yet.
        return Ok(Pruned {
            events: 0,
            horizon: horizon_date,
            skipped: Some(
                "the rollups are being rebuilt; raw events are dropped once they are current"
                    .into(),
            ),
        });
    }
    // The first horizon starts the list of pruned ids: complete, as nothing was dropped before.
    tx.execute(
        "UPDATE rollup_state SET frozen_before_day = ?1, pruned_known = (pruned_known OR frozen_before_day IS NULL) WHERE id = 1",
        [horizon],
    )?;
    let (first, newest): (i64, i64) = tx.query_row(
        "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.commit()?;

    let (timed_before, received_before) = cutoffs(horizon, days, now_ms);
    // Never the newest event (ids must keep growing) and nothing the rollups have not read.
    let end = last.min(newest - 1);
    let mut deleted = 0u64;
    let mut low = first;
    while low <= end {
        let high = (low + CHUNK_IDS - 1).min(end);
        let tx = super::write_transaction(conn, super::Lock::Both)?;
        let (events, ids) = crate::store::sqlite::rollup::delete_events(
            &tx,
            "DELETE FROM events WHERE id BETWEEN ?1 AND ?2 AND timestamp_ms < ?3 AND received_ms < ?4
             RETURNING id, user_id, anonymous_id",
            params![low, high, timed_before, received_before],
        )?;
        let mut note = tx.prepare_cached("INSERT OR IGNORE INTO pruned_ids (key) VALUES (?1)")?;
        for id in &ids {
            note.execute([id])?;
        }
        drop(note);
        deleted += events as u64;
        tx.commit()?;
        progress(high - first + 1, end - first + 1);
        low = high + 1;
    }
    Ok(Pruned {
        events: deleted,
        horizon: horizon_date,
        skipped: None,
    })
}
