//! Per-user-per-day rollups, kept up to date from committed events.
//!
//! The rollup tables live in their own file, `rollups.db` (attached as `rollups`, see
//! [`super::schema`]), with its own write lock: a step never makes the ingest writer wait.
//! The rollup worker follows the events table by id (ids are assigned in commit order, so
//! "every event up to `last_event_id`" is a complete prefix). Each [`step`] is one
//! transaction holding the rollups file's lock that reads the next events, updates
//! `user_days`, `user_day_features` and `account_features`, and advances
//! `rollup_state.last_event_id`: a crash loses nothing and counts nothing twice. Several
//! processes (a server and `bellwether metrics`) may step the same database; SQLite
//! serialises them and each reads the cursor inside its transaction.
//!
//! Late events simply add to their (past) day. What cannot be added is a change of meaning
//! after the fact: a `group` call dated before activity already counted, an `alias` or
//! `identify` that links an id whose events were counted under another id (or not at all),
//! an account's timezone changing. The person concerned is then recomputed from their raw
//! events, found through `person_events` up to `rollup_state.indexed_to` and through the
//! step's [`Tail`] after it (it always covers the step's own batch before anything reads
//! it), so the rollups always equal what [`rebuild`] computes from scratch.
//!
//! `person_events` is keyed by person, so writing it touches about one page per person
//! whatever the number of events: written for every 20,000-event step that was ~5,000 pages
//! (20 MB of WAL, then as much again checkpointed) per step under load, which made the
//! ingest's own fsyncs wait. The worker therefore keeps the newest events' postings in
//! memory and writes them once per [`INDEX_EVERY`] events; readers outside a step (erasure,
//! the dashboard's recent events) scan the events after `indexed_to` themselves.
//!
//! Retention ([`super::retention`]) may drop raw events of days before a horizon
//! (`rollup_state.frozen_before_day`). Rows of those days are then kept as they are when
//! recomputing a person some of whose raw events were dropped (an id in `pruned_ids`; a
//! person who lost nothing is recomputed whole, so a backfill of old days rolls up exactly),
//! and by a rebuild: those rewrite only the days from the horizon on, and skip an old-day
//! event already rolled up (id up to `max(last_event_id, frozen_counted_to)`): frozen rows
//! keep the attribution it had then (an anonymous event that counted for nobody stays
//! uncounted); an old-day event arriving late still adds. Known inexactness: the frozen test
//! uses the account's timezone of now, so an event within a day of the horizon whose
//! account's timezone changes, or that a retroactive group call moves to an account in
//! another timezone, may count on both sides of the horizon or on neither (an exact test
//! would need the day each event was cut into).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::StoreError;
use crate::config::MetricsConfig;
use crate::identity;
use crate::metrics::activity::{self, Classifier};
use crate::telemetry::Telemetry;

/// Events read per transaction: large enough to amortise, small enough that an erasure or
/// a retention pass (which lock rollups.db too) never waits long for it.
pub const STEP_EVENTS: usize = 20_000;

/// How many events' postings the worker keeps in memory before writing them to
/// `person_events` in one sorted pass (see the module notes; a few MB). Readers outside a
/// step scan up to this many events (plus the rollup lag) themselves: ~17 ms at 100,000
/// (measured: 34 ms for 200,000 with a warm cache), against 5x fewer index pages written
/// than at every 20,000-event step.
pub const INDEX_EVERY: i64 = 100_000;

/// The rollup maintainer of one process.
pub struct Rollup {
    classifier: Classifier,
    fingerprint: String,
    idle_minutes: u32,
    /// [`INDEX_EVERY`] (the tests write the index more often).
    index_every: i64,
    /// The postings not yet in `person_events`, as of this process's last step (`None`
    /// after a failed step: read again).
    tail: Option<Tail>,
    /// In a server: the newest event the ingest writer has synced. Steps read no further,
    /// so nothing a crash of the machine could take back is counted (see `store::sqlite::writer`).
    synced_to: Option<prometheus::IntGauge>,
}

/// The (userId or anonymousId -> event ids) postings of every event with `from < id <= to`,
/// where `from` is `rollup_state.indexed_to`: what `person_events` does not hold yet. An
/// event erased since it was read may still be listed: every use joins with `events`.
#[derive(Debug)]
struct Tail {
    from: i64,
    to: i64,
    postings: BTreeMap<String, Vec<i64>>,
}

impl Tail {
    /// The postings of the stored events with `from < id <= to`.
    fn read(tx: &Transaction, from: i64, to: i64) -> Result<Tail, StoreError> {
        let mut tail = Tail {
            from,
            to,
            postings: BTreeMap::new(),
        };
        let mut query = tx.prepare_cached(
            "SELECT id, user_id, anonymous_id FROM events WHERE id > ?1 AND id <= ?2 ORDER BY id",
        )?;
        let mut rows = query.query(params![from, to])?;
        while let Some(row) = rows.next()? {
            let (user, anonymous): (Option<String>, Option<String>) = (row.get(1)?, row.get(2)?);
            tail.add(row.get(0)?, user.as_deref(), anonymous.as_deref());
        }
        Ok(tail)
    }

    /// Lists event `id` under its userId and anonymousId (both, if it has both); ids come in
    /// ascending order.
    fn add(&mut self, id: i64, user: Option<&str>, anonymous: Option<&str>) {
        for key in [user, anonymous].into_iter().flatten() {
            match self.postings.get_mut(key) {
                Some(ids) => ids.push(id),
                None => {
                    self.postings.insert(key.to_string(), vec![id]);
                }
            }
        }
    }

    /// The ids listed under `key`, ascending.
    fn ids(&self, key: &str) -> &[i64] {
        self.postings.get(key).map_or(&[], Vec::as_slice)
    }

    /// Writes the postings into `person_events`, in key order (each index page once), and
    /// moves `indexed_to` up to `to`. An erasure may have deleted events since they were
    /// read: a key whose newest event is gone gets only the postings of events still stored
    /// (checking them all would read every event again), so an erased person's ids are never
    /// written back. (Under a key whose newest event stands, a posting of an erased event
    /// may remain; it leads nowhere, as every use joins with `events`.)
    fn flush(self, tx: &Transaction) -> Result<Tail, StoreError> {
        let mut stored = tx.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO person_events (key, id) VALUES (?1, ?2)")?;
        for (key, ids) in &self.postings {
            let all_stored = match ids.last() {
                Some(&newest) => stored.exists([newest])?,
                None => continue,
            };
            for &id in ids {
                if all_stored || stored.exists([id])? {
                    insert.execute(params![key, id])?;
                }
            }
        }
        tx.execute(
            "UPDATE rollup_state SET indexed_to = ?1 WHERE id = 1",
            [self.to],
        )?;
        Ok(Tail {
            from: self.to,
            to: self.to,
            postings: BTreeMap::new(),
        })
    }
}

/// The retention horizon as a step sees it (see the module notes).
#[derive(Debug, Clone, Copy)]
struct Frozen {
    before_day: i64,
    counted_to: i64,
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Step {
    /// Events read (of every kind).
    pub read: usize,
    /// Activity events counted.
    pub events: usize,
    pub recomputed_users: usize,
    /// The id every event up to which is now rolled up.
    pub last_event_id: i64,
}

/// One person's activity on one local day of one account, as it is added up (the ClickHouse
/// store cuts its rollup rows into the same).
#[derive(Debug, Default)]
pub(crate) struct DayAgg {
    pub(crate) events: i64,
    pub(crate) logins: i64,
    pub(crate) transactions: i64,
    pub(crate) education: i64,
    pub(crate) minutes: Vec<u32>,
    pub(crate) login_minutes: Vec<u32>,
    pub(crate) key_minutes: Vec<u32>,
    pub(crate) first_ms: i64,
    pub(crate) last_ms: i64,
    pub(crate) features: BTreeMap<String, i64>,
}

/// (account, local day, person)
type DayKey = (String, i32, String);

struct EventRow {
    id: i64,
    kind: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    group_id: Option<String>,
    event: Option<String>,
    timestamp_ms: i64,
}

const EVENT_COLUMNS: &str = "id, type, user_id, anonymous_id, group_id, event, timestamp_ms";

/// The first `max` events after id `after` up to id `until`, in id order.
fn events_after(
    conn: &Connection,
    after: i64,
    until: i64,
    max: usize,
) -> Result<Vec<EventRow>, StoreError> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
    ))?;
    let rows = query
        .query_map(params![after, until, max as i64], event_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn event_row(r: &rusqlite::Row) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        user_id: r.get(2)?,
        anonymous_id: r.get(3)?,
        group_id: r.get(4)?,
        event: r.get(5)?,
        timestamp_ms: r.get(6)?,
    })
}

/// Lookups valid within one transaction.
struct Lookups {
    timezones: HashMap<String, chrono_tz::Tz>,
    /// (userIds, anonymousIds) -> the person each stands for, as found so far.
    canonical: (
        HashMap<String, Option<String>>,
        HashMap<String, Option<String>>,
    ),
    /// canonical person -> (timestamp, event id, account) of every membership, sorted.
    memberships: HashMap<String, Vec<(i64, i64, String)>>,
}

impl Rollup {
    pub fn new(config: &MetricsConfig) -> Rollup {
        Rollup {
            classifier: Classifier::new(config),
            fingerprint: config.rollup_fingerprint(),
            idle_minutes: config.session_idle_minutes,
            index_every: INDEX_EVERY,
            tail: None,
            synced_to: None,
        }
    }

    /// Rolls up at most `max_events` new events in one transaction.
    // Over 100 lines: One rollup step in one transaction; its identity part becomes the shared pure module of issue 29 item 3.
    #[allow(clippy::too_many_lines)]
    pub fn step(&mut self, conn: &mut Connection, max_events: usize) -> Result<Step, StoreError> {
        // Nothing to do (the usual case when idle): answer without taking the write lock.
        let (cursor, fingerprint): (i64, String) = conn.query_row(
            "SELECT last_event_id, fingerprint FROM rollup_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let newest: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
        let until = self
            .synced_to
            .as_ref()
            .map_or(i64::MAX, prometheus::IntGauge::get);
        let newest = newest.min(until);
        let timezones_moved: i64 = conn.query_row(
            "SELECT count(*) FROM rollup_accounts r LEFT JOIN accounts a ON a.account_id = r.account_id WHERE r.timezone != coalesce(a.timezone, 'UTC')",
            [],
            |r| r.get(0),
        )?;
        let erased: i64 = conn.query_row("SELECT count(*) FROM erased_ids", [], |r| r.get(0))?;
        if fingerprint == self.fingerprint
            && newest <= cursor
            && timezones_moved == 0
            && erased == 0
        {
            return Ok(Step {
                read: 0,
                events: 0,
                recomputed_users: 0,
                last_event_id: cursor,
            });
        }
        // Read the new events before taking the write lock (WAL readers do not block the
        // ingest writer); used below if no other process stepped meanwhile.
        let prefetched = if fingerprint == self.fingerprint {
            Some((cursor, events_after(conn, cursor, until, max_events)?))
        } else {
            None
        };
        // rollups.db's lock alone; reads of bellwether.db then see one snapshot, taken after
        // the lock, so no other step or erasure changes what this one reads.
        let tx = super::write_transaction(conn, super::Lock::Rollups)?;
        let (last, fingerprint, frozen_before, counted_to): (i64, String, Option<i64>, i64) = tx.query_row(
            "SELECT last_event_id, fingerprint, frozen_before_day, frozen_counted_to FROM rollup_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let (last, counted_to) = if fingerprint != self.fingerprint {
            if !fingerprint.is_empty() {
                tracing::info!(frozen_before_day = frozen_before, "the [metrics] settings the rollups depend on changed: rebuilding them from the raw events");
            }
            let counted_to = clear(&tx, frozen_before, last.max(counted_to))?;
            tx.execute("UPDATE rollup_state SET last_event_id = 0, fingerprint = ?1, frozen_counted_to = ?2", params![&self.fingerprint, counted_to])?;
            (0, counted_to)
        } else {
            (last, counted_to)
        };
        // Days before the retention horizon: their rows already hold every event up to here.
        let frozen = frozen_before.map(|day| Frozen {
            before_day: day,
            counted_to: last.max(counted_to),
        });
        // An erasure whose commit stopped after bellwether.db: purge the rows it left here.
        let erased: Vec<String> = tx
            .prepare("SELECT key FROM erased_ids")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        purge_people(&tx, &erased)?;
        let mut lookups = Lookups {
            timezones: load_timezones(&tx)?,
            canonical: Default::default(),
            memberships: HashMap::new(),
        };
        let mut dirty: BTreeSet<String> = BTreeSet::new();

        // Accounts whose timezone changed since their days were cut: recompute their people.
        let used: Vec<(String, String)> = tx
            .prepare("SELECT account_id, timezone FROM rollup_accounts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut moved: Vec<(String, &'static str)> = Vec::new();
        for (account, used_tz) in used {
            let now = lookups
                .timezones
                .get(&account)
                .copied()
                .unwrap_or(chrono_tz::UTC);
            if now.name() != used_tz {
                moved.push((account.clone(), now.name()));
                let mut people =
                    tx.prepare("SELECT DISTINCT user_id FROM user_days WHERE account_id = ?1")?;
                for person in people.query_map([&account], |r| r.get::<_, String>(0))? {
                    dirty.insert(person?);
                }
            }
        }

        // The prefetched rows stand if no process stepped and nothing among them was erased
        // meanwhile (an erasure deletes events; nothing else changes stored ones).
        let prefetch_holds = |from: i64, rows: &[EventRow]| -> Result<bool, StoreError> {
            let Some(newest) = rows.last().map(|r| r.id) else {
                return Ok(from == last);
            };
            let still: usize = tx.query_row(
                "SELECT count(*) FROM events WHERE id > ?1 AND id <= ?2",
                params![from, newest],
                |r| r.get(0),
            )?;
            Ok(from == last && still == rows.len())
        };
        let rows: Vec<EventRow> = match prefetched {
            Some((from, rows)) if prefetch_holds(from, &rows)? => rows,
            _ => events_after(&tx, last, until, max_events)?,
        };
        let batch_max = rows.last().map(|r| r.id).unwrap_or(last);
        // The postings after indexed_to: this process's from its last step if nothing moved
        // since, else read again; then this batch's (a rebuild rereads what is indexed).
        let indexed_to: i64 = tx.query_row(
            "SELECT indexed_to FROM rollup_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let covered = indexed_to.max(last);
        let mut tail = match self.tail.take() {
            Some(tail) if tail.from == indexed_to && tail.to == covered => tail,
            _ => Tail::read(&tx, indexed_to, covered)?,
        };
        let read_to = tail.to;
        for row in rows.iter().filter(|r| r.id > read_to) {
            tail.add(row.id, row.user_id.as_deref(), row.anonymous_id.as_deref());
        }
        tail.to = tail.to.max(batch_max);

        // Pass 1: identity and membership changes that rewrite what was already counted.
        for row in &rows {
            match row.kind.as_str() {
                "group" => {
                    let id = row.user_id.as_deref().or(row.anonymous_id.as_deref());
                    let Some(person) = id
                        .and_then(|id| {
                            lookups
                                .canonical_of(&tx, id, row.user_id.is_some())
                                .transpose()
                        })
                        .transpose()?
                    else {
                        continue;
                    };
                    if has_activity(
                        &tx,
                        &tail,
                        &identity_set(&tx, &person)?,
                        Some(row.timestamp_ms),
                        row.id,
                    )? {
                        dirty.insert(person);
                    }
                }
                "alias" | "identify" => {
                    let (Some(user), Some(previous)) =
                        (row.user_id.as_deref(), previous_id(&tx, row)?)
                    else {
                        continue;
                    };
                    if has_activity(&tx, &tail, &[previous], None, row.id)? {
                        if let Some(person) = lookups.canonical_of(&tx, user, true)? {
                            dirty.insert(person);
                        }
                    }
                }
                _ => {}
            }
        }

        // Pass 2: everything else simply adds up.
        let mut pending: HashMap<DayKey, DayAgg> = HashMap::new();
        let mut events = 0;
        for row in &rows {
            let Some(act) = self.classifier.classify(&row.kind, row.event.as_deref()) else {
                continue;
            };
            let Some(person) = lookups.person_of(&tx, row)? else {
                continue;
            };
            if dirty.contains(&person) {
                continue;
            }
            if self.add(&tx, &mut lookups, &mut pending, frozen, &person, row, &act)? {
                events += 1;
            }
        }

        // Recompute the people whose past changed, from their raw events up to batch_max.
        let pruned_known: bool = tx.query_row(
            "SELECT pruned_known FROM rollup_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let mut touched_accounts: BTreeSet<String> = BTreeSet::new();
        for person in &dirty {
            let ids = identity_set(&tx, person)?;
            // Frozen rows stay only if some raw event of theirs may be gone, or a rebuild
            // under way will skip old days' events beyond this batch (they are in those rows).
            let frozen = match frozen {
                Some(f) if pruned_known && f.counted_to <= batch_max && !any_pruned(&tx, &ids)? => {
                    None
                }
                other => other,
            };
            touched_accounts.extend(forget(&tx, &ids, frozen.map(|f| f.before_day))?);
            let mut own: Vec<EventRow> = Vec::new();
            for id in &ids {
                let mut by_key = tx.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT id FROM person_events WHERE key = ?1 AND id <= ?2)
                         AND (user_id = ?1 OR (user_id IS NULL AND anonymous_id = ?1))"
                ))?;
                own.extend(
                    by_key
                        .query_map(params![id, batch_max], event_row)?
                        .collect::<Result<Vec<_>, _>>()?,
                );
                let mut by_id = tx.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND (user_id = ?2 OR (user_id IS NULL AND anonymous_id = ?2))"
                ))?;
                for &event in tail.ids(id).iter().take_while(|&&event| event <= batch_max) {
                    own.extend(by_id.query_row(params![event, id], event_row).optional()?);
                }
            }
            own.sort_by_key(|r| r.id);
            own.dedup_by_key(|r| r.id);
            for row in &own {
                let Some(act) = self.classifier.classify(&row.kind, row.event.as_deref()) else {
                    continue;
                };
                // Each event counts for the person its own ids resolve to (an id linked
                // elsewhere later belongs to that other person).
                if lookups.person_of(&tx, row)?.as_deref() == Some(person.as_str()) {
                    self.add(&tx, &mut lookups, &mut pending, frozen, person, row, &act)?;
                }
            }
        }

        flush(&tx, pending, &lookups, self.idle_minutes)?;
        for account in &touched_accounts {
            refresh_account_features(&tx, account)?;
        }
        // Accounts whose timezone changed are now all cut with the current one.
        for (account, tz) in &moved {
            tx.execute(
                "UPDATE rollup_accounts SET timezone = ?2 WHERE account_id = ?1",
                params![account, tz],
            )?;
        }
        tx.execute(
            "UPDATE rollup_state SET last_event_id = ?1 WHERE id = 1",
            [batch_max],
        )?;
        let tail = if tail.to - tail.from >= self.index_every {
            tail.flush(&tx)?
        } else {
            tail
        };
        tx.commit()?;
        self.tail = Some(tail);
        purged(conn, &erased)?;
        Ok(Step {
            read: rows.len(),
            events,
            recomputed_users: dirty.len(),
            last_event_id: batch_max,
        })
    }

    /// Adds one activity event of `person` to `pending`; false when it counts for no account
    /// or is already in a frozen (pre-retention) row.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        tx: &Transaction,
        lookups: &mut Lookups,
        pending: &mut HashMap<DayKey, DayAgg>,
        frozen: Option<Frozen>,
        person: &str,
        row: &EventRow,
        act: &activity::Activity,
    ) -> Result<bool, StoreError> {
        let account = match &row.group_id {
            Some(group) => Some(group.clone()),
            None => lookups.account_at(tx, person, row.timestamp_ms)?,
        };
        let Some(account) = account else {
            return Ok(false);
        };
        let tz = lookups
            .timezones
            .get(&account)
            .copied()
            .unwrap_or(chrono_tz::UTC);
        let day = activity::local_day(row.timestamp_ms, tz);
        if frozen.is_some_and(|f| i64::from(day) < f.before_day && row.id <= f.counted_to) {
            return Ok(false);
        }
        let agg = pending
            .entry((account, day, person.to_string()))
            .or_insert_with(|| DayAgg {
                first_ms: i64::MAX,
                last_ms: i64::MIN,
                ..DayAgg::default()
            });
        let minute = activity::minute(row.timestamp_ms);
        agg.events += 1;
        agg.minutes.push(minute);
        agg.first_ms = agg.first_ms.min(row.timestamp_ms);
        agg.last_ms = agg.last_ms.max(row.timestamp_ms);
        if act.login {
            agg.logins += 1;
            agg.login_minutes.push(minute);
        }
        if act.education {
            agg.education += 1;
        }
        if let Some(feature) = &act.feature {
            agg.transactions += 1;
            *agg.features.entry(feature.clone()).or_default() += 1;
            if act.key {
                agg.key_minutes.push(minute);
            }
        }
        Ok(true)
    }
}

impl Lookups {
    /// The person an event counts for: its userId's, else its anonymousId's (if linked).
    fn person_of(
        &mut self,
        tx: &Transaction,
        row: &EventRow,
    ) -> Result<Option<String>, StoreError> {
        match (&row.user_id, &row.anonymous_id) {
            (Some(user), _) => self.canonical_of(tx, user, true),
            (None, Some(anonymous)) => self.canonical_of(tx, anonymous, false),
            (None, None) => Ok(None),
        }
    }

    /// The person an id stands for (`identity::person_of`), cached for the step.
    fn canonical_of(
        &mut self,
        tx: &Transaction,
        id: &str,
        is_user: bool,
    ) -> Result<Option<String>, StoreError> {
        let cache = if is_user {
            &mut self.canonical.0
        } else {
            &mut self.canonical.1
        };
        if let Some(known) = cache.get(id) {
            return Ok(known.clone());
        }
        let person = identity::person_of(&mut Linked(tx), id, is_user)?;
        cache.insert(id.to_string(), person.clone());
        Ok(person)
    }

    /// The account `person` was last grouped into at or before `ts`.
    fn account_at(
        &mut self,
        tx: &Transaction,
        person: &str,
        ts: i64,
    ) -> Result<Option<String>, StoreError> {
        if !self.memberships.contains_key(person) {
            let mut all = Vec::new();
            for id in identity_set(tx, person)? {
                let mut query = tx.prepare_cached(
                    "SELECT timestamp_ms, event_id, account_id FROM memberships WHERE user_id = ?1
                     UNION ALL SELECT timestamp_ms, event_id, account_id FROM memberships WHERE user_id IS NULL AND anonymous_id = ?1",
                )?;
                all.extend(
                    query
                        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            all.sort();
            self.memberships.insert(person.to_string(), all);
        }
        let call = identity::call_at(&self.memberships[person], ts, |call| call.0);
        Ok(call.map(|call| call.2.clone()))
    }
}

fn load_timezones(tx: &Transaction) -> Result<HashMap<String, chrono_tz::Tz>, StoreError> {
    let mut query =
        tx.prepare("SELECT account_id, timezone FROM accounts WHERE timezone IS NOT NULL")?;
    let rows = query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut map = HashMap::new();
    for row in rows {
        let (account, tz) = row?;
        // Timezones are validated when stored; an unknown one (older data) counts as UTC.
        map.insert(account, tz.parse().unwrap_or(chrono_tz::UTC));
    }
    Ok(map)
}

/// Every id that stands for `person` (`identity::ids_of`).
fn identity_set(tx: &Transaction, person: &str) -> Result<Vec<String>, StoreError> {
    identity::ids_of(&mut Linked(tx), person)
}

/// The identity links of the events table, as identity resolution follows them.
struct Linked<'t>(&'t Transaction<'t>);

impl identity::Links for Linked<'_> {
    type Error = StoreError;

    fn newest_link(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT user_id FROM identity_links WHERE previous_id = ?1 ORDER BY timestamp_ms DESC, event_id DESC LIMIT 1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    fn linked_to(&mut self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT DISTINCT previous_id FROM identity_links WHERE user_id = ?1")?
            .query_map([user], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }
}

/// The previous id an alias (previousId) or identify (anonymousId) links to its userId.
fn previous_id(tx: &Transaction, row: &EventRow) -> Result<Option<String>, StoreError> {
    if row.kind == "identify" {
        return Ok(row.anonymous_id.clone());
    }
    Ok(tx
        .prepare_cached("SELECT previous_id FROM identity_links WHERE event_id = ?1")?
        .query_row([row.id], |r| r.get(0))
        .optional()?)
}

/// Removes every rollup row of the people known by `ids` (erasure): their days, frozen
/// ones included, their `person_events` and `pruned_ids` rows; the accounts' first-use days are
/// recomputed without them.
pub(crate) fn purge_people(tx: &Transaction, ids: &[String]) -> Result<(), StoreError> {
    for account in forget(tx, ids, None)? {
        refresh_account_features(tx, &account)?;
    }
    let mut unindex = tx.prepare_cached("DELETE FROM person_events WHERE key = ?1")?;
    let mut unnote = tx.prepare_cached("DELETE FROM pruned_ids WHERE key = ?1")?;
    for id in ids {
        unindex.execute([id])?;
        unnote.execute([id])?;
    }
    Ok(())
}

/// Forgets the erased ids whose rollup rows are gone (both files committed): run after the
/// commit of a [`purge_people`].
pub(crate) fn purged(conn: &Connection, ids: &[String]) -> Result<(), StoreError> {
    let mut done = conn.prepare_cached("DELETE FROM erased_ids WHERE key = ?1")?;
    for id in ids {
        done.execute([id])?;
    }
    Ok(())
}

/// Runs `delete`, a `DELETE FROM events ... RETURNING id, user_id, anonymous_id`, and
/// removes the deleted events' `person_events` rows (under both ids); returns how many went
/// and their ids.
pub(crate) fn delete_events(
    tx: &Transaction,
    delete: &str,
    params: impl rusqlite::Params,
) -> Result<(usize, BTreeSet<String>), StoreError> {
    let gone: Vec<(i64, Option<String>, Option<String>)> = tx
        .prepare_cached(delete)?
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut unindex = tx.prepare_cached("DELETE FROM person_events WHERE key = ?1 AND id = ?2")?;
    let mut ids = BTreeSet::new();
    for (event, user, anonymous) in &gone {
        for key in [user, anonymous].into_iter().flatten() {
            unindex.execute(params![key, event])?;
            ids.insert(key.clone());
        }
    }
    Ok((gone.len(), ids))
}

/// Whether retention dropped raw events of any of `ids`.
fn any_pruned(tx: &Transaction, ids: &[String]) -> Result<bool, StoreError> {
    let mut noted = tx.prepare_cached("SELECT 1 FROM pruned_ids WHERE key = ?1")?;
    for id in ids {
        if noted.exists([id])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether any of `ids` has activity events (at or after `since`, if given) stored before
/// event `before`.
fn has_activity(
    tx: &Transaction,
    tail: &Tail,
    ids: &[String],
    since: Option<i64>,
    before: i64,
) -> Result<bool, StoreError> {
    let since = since.unwrap_or(i64::MIN);
    let mut activity_at = tx.prepare_cached(
        "SELECT 1 FROM events WHERE id = ?1 AND timestamp_ms >= ?2 AND type IN ('track', 'page', 'screen')
             AND (user_id = ?3 OR (user_id IS NULL AND anonymous_id = ?3))",
    )?;
    for id in ids {
        for &event in tail
            .ids(id)
            .iter()
            .rev()
            .skip_while(|&&event| event >= before)
        {
            if activity_at.exists(params![event, since, id])? {
                return Ok(true);
            }
        }
        let found: Option<i64> = tx
            .prepare_cached(
                "SELECT 1 FROM person_events p JOIN events e ON e.id = p.id
                 WHERE p.key = ?1 AND p.id < ?3 AND e.timestamp_ms >= ?2 AND e.type IN ('track', 'page', 'screen')
                     AND (e.user_id = ?1 OR (e.user_id IS NULL AND e.anonymous_id = ?1))
                 ORDER BY p.id DESC LIMIT 1",
            )?
            .query_row(params![id, since, before], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes the rollup rows of `ids` (only those of days from `from_day` on, when given);
/// returns the accounts they were in.
pub(crate) fn forget(
    tx: &Transaction,
    ids: &[String],
    from_day: Option<i64>,
) -> Result<BTreeSet<String>, StoreError> {
    let from_day = from_day.unwrap_or(i64::MIN);
    let mut accounts = BTreeSet::new();
    for id in ids {
        let mut query = tx.prepare_cached(
            "SELECT DISTINCT account_id FROM user_days WHERE user_id = ?1 AND day >= ?2",
        )?;
        for account in query.query_map(params![id, from_day], |r| r.get::<_, String>(0))? {
            accounts.insert(account?);
        }
        tx.prepare_cached("DELETE FROM user_days WHERE user_id = ?1 AND day >= ?2")?
            .execute(params![id, from_day])?;
        tx.prepare_cached("DELETE FROM user_day_features WHERE user_id = ?1 AND day >= ?2")?
            .execute(params![id, from_day])?;
    }
    Ok(accounts)
}

/// Recomputes one account's first day of each feature from its feature rows.
pub(crate) fn refresh_account_features(tx: &Transaction, account: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM account_features WHERE account_id = ?1")?
        .execute([account])?;
    tx.prepare_cached(
        "INSERT INTO account_features (account_id, feature, first_day)
         SELECT account_id, feature, min(day) FROM user_day_features WHERE account_id = ?1 GROUP BY feature",
    )?
    .execute([account])?;
    Ok(())
}

fn flush(
    tx: &Transaction,
    pending: HashMap<DayKey, DayAgg>,
    lookups: &Lookups,
    idle: u32,
) -> Result<(), StoreError> {
    let mut seen_accounts = HashSet::new();
    // In key order, so the rows' B-tree pages are visited in order rather than at random.
    let mut pending: Vec<(DayKey, DayAgg)> = pending.into_iter().collect();
    pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for ((account, day, person), mut agg) in pending {
        let existing = tx
            .prepare_cached(
                "SELECT events, logins, transactions, education, minutes, login_minutes, key_minutes, first_ms, last_ms
                 FROM user_days WHERE account_id = ?1 AND day = ?2 AND user_id = ?3",
            )?
            .query_row(params![account, day, person], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .optional()?;
        if let Some((
            events,
            logins,
            transactions,
            education,
            minutes,
            login_minutes,
            key_minutes,
            first_ms,
            last_ms,
        )) = existing
        {
            agg.events += events;
            agg.logins += logins;
            agg.transactions += transactions;
            agg.education += education;
            agg.minutes.extend(activity::decode_minutes(&minutes));
            agg.login_minutes
                .extend(activity::decode_minutes(&login_minutes));
            agg.key_minutes
                .extend(activity::decode_minutes(&key_minutes));
            agg.first_ms = agg.first_ms.min(first_ms);
            agg.last_ms = agg.last_ms.max(last_ms);
        }
        activity::normalize(&mut agg.minutes);
        activity::normalize(&mut agg.login_minutes);
        activity::normalize(&mut agg.key_minutes);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO user_days (account_id, day, user_id, events, logins, sessions, transactions, education,
                 minutes_count, minutes, login_minutes, key_minutes, first_ms, last_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            account,
            day,
            person,
            agg.events,
            agg.logins,
            activity::sessions(&agg.minutes, idle),
            agg.transactions,
            agg.education,
            agg.minutes.len() as i64,
            activity::encode_minutes(&agg.minutes),
            activity::encode_minutes(&agg.login_minutes),
            activity::encode_minutes(&agg.key_minutes),
            agg.first_ms,
            agg.last_ms,
        ])?;
        for (feature, uses) in &agg.features {
            tx.prepare_cached(
                "INSERT INTO user_day_features (account_id, day, user_id, feature, uses) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET uses = uses + excluded.uses",
            )?
            .execute(params![account, day, person, feature, uses])?;
            tx.prepare_cached(
                "INSERT INTO account_features (account_id, feature, first_day) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET first_day = min(first_day, excluded.first_day)",
            )?
            .execute(params![account, feature, day])?;
        }
        if seen_accounts.insert(account.clone()) {
            let tz = lookups
                .timezones
                .get(&account)
                .copied()
                .unwrap_or(chrono_tz::UTC);
            tx.prepare_cached(
                "INSERT OR IGNORE INTO rollup_accounts (account_id, timezone) VALUES (?1, ?2)",
            )?
            .execute(params![account, tz.name()])?;
        }
    }
    Ok(())
}

/// Drops the rollups before a rebuild: all of them, or with a retention horizon only the
/// days from it on. Returns the new `frozen_counted_to`: the frozen rows hold every event
/// up to `counted_to`, which the rebuild must not add again.
fn clear(tx: &Transaction, frozen_before: Option<i64>, counted_to: i64) -> Result<i64, StoreError> {
    let Some(day) = frozen_before else {
        tx.execute_batch(
            "DELETE FROM user_days; DELETE FROM user_day_features; DELETE FROM account_features; DELETE FROM rollup_accounts;",
        )?;
        return Ok(0);
    };
    tx.execute("DELETE FROM user_days WHERE day >= ?1", [day])?;
    tx.execute("DELETE FROM user_day_features WHERE day >= ?1", [day])?;
    tx.execute_batch(
        "DELETE FROM account_features;
         INSERT INTO account_features (account_id, feature, first_day)
             SELECT account_id, feature, min(day) FROM user_day_features GROUP BY account_id, feature;",
    )?;
    Ok(counted_to)
}

/// Steps until every committed event is rolled up; `progress` gets (done, total) events.
pub fn catch_up(
    conn: &mut Connection,
    rollup: &mut Rollup,
    progress: &mut dyn FnMut(i64, i64),
) -> Result<Step, StoreError> {
    let mut total = Step::default();
    loop {
        let step = rollup.step(conn, STEP_EVENTS)?;
        total.events += step.events;
        total.recomputed_users += step.recomputed_users;
        total.last_event_id = step.last_event_id;
        let max: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
        progress(step.last_event_id, max);
        if step.last_event_id >= max {
            return Ok(total);
        }
    }
}

/// `bellwether rebuild`: drops every rollup and recomputes them from the raw events. It
/// forgets the fingerprint the rollups were built with, so the next step (this process's,
/// or a server's) clears them and starts over, as after a config change.
pub fn rebuild(
    conn: &mut Connection,
    config: &MetricsConfig,
    progress: &mut dyn FnMut(i64, i64),
) -> Result<Step, StoreError> {
    conn.execute("UPDATE rollup_state SET fingerprint = '' WHERE id = 1", [])?;
    catch_up(conn, &mut Rollup::new(config), progress)
}

/// Every event up to this id is in the rollups.
pub fn rolled_up_to(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT last_event_id FROM rollup_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Whether the rollups are within a step of the newest stored event: what the health and
/// action threads wait for before they read them.
pub fn settled(conn: &Connection) -> Result<bool, StoreError> {
    let newest: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
    Ok(within_a_step(newest - rolled_up_to(conn)?))
}

/// Whether `lag` events behind is caught up.
fn within_a_step(lag: i64) -> bool {
    lag <= STEP_EVENTS as i64
}

/// Starts the background thread that keeps the rollups current while serving: it steps
/// again at once while a step finds a full batch, waits `GATHER` after a partial one (the
/// cost of a step is mostly per user-day touched, so a larger batch costs less per event),
/// and checks every `POLL` when idle or while it yields to a burst of ingest ([`IngestLoad`]).
pub fn spawn(
    store: &super::Store,
    config: &MetricsConfig,
    telemetry: Telemetry,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(100);
    const GATHER: std::time::Duration = std::time::Duration::from_millis(250);
    let mut conn = store.connect()?;
    // Checkpoint rollups.db every 40 MiB of WAL rather than SQLite's 4 MiB: the same user-day
    // pages are rewritten step after step, and each checkpoint copies them once.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    // It reads bellwether.db in id order, once: a small cache there (4 MiB) is enough;
    // rollups.db, which it rewrites, keeps the default.
    conn.pragma_update(Some("main"), "cache_size", -4096)?;
    let mut rollup = Rollup {
        synced_to: Some(telemetry.stored_to.clone()),
        ..Rollup::new(config)
    };
    telemetry.rolled_up_to.set(rolled_up_to(&conn)?);
    std::thread::Builder::new()
        .name("rollup".into())
        .spawn(move || {
            lower_priority();
            let mut last = -1;
            let mut ingest = IngestLoad::new(telemetry.stored_to.get());
            loop {
                if ingest.yield_to_ingest(
                    std::time::Instant::now(),
                    telemetry.stored_to.get(),
                    last,
                ) {
                    std::thread::sleep(POLL);
                    continue;
                }
                match rollup.step(&mut conn, STEP_EVENTS) {
                    Ok(step) if step.last_event_id != last || step.recomputed_users > 0 => {
                        last = step.last_event_id;
                        telemetry.rolled_up_to.set(last);
                        return_free_memory();
                        if step.read < STEP_EVENTS {
                            std::thread::sleep(GATHER);
                        }
                    }
                    Ok(_) => std::thread::sleep(POLL),
                    Err(error) => {
                        tracing::error!(%error, "rollup step failed; retrying in 1 s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))
}

/// Above this ingest rate (events stored per second) the rollup worker waits for the burst
/// to end rather than step alongside it: a step's reads, cache footprint and fsyncs of
/// rollups.db lengthen the ingest writer's commits, and every request in a group waits
/// for its commit (measured in BENCHMARKS.md). At this rate a step keeps up with ~10% of a
/// core, so below it the rollups stay current.
const YIELD_ABOVE_EVENTS_PER_SEC: f64 = 20_000.0;
/// How far the rollups may fall behind while yielding: past either bound they catch up
/// whatever the load, then stay current for [`CURRENT_FOR`] before yielding again, so the
/// metrics are never staler than this and the health and action threads (which wait for
/// caught-up rollups, polling every 2 s) get their turn under sustained load too.
const YIELD_LAG_MAX_EVENTS: i64 = 2_000_000;
const YIELD_FOR_MAX: std::time::Duration = std::time::Duration::from_secs(30);
const CURRENT_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The ingest rate as the rollup worker sees it, between two of its checks.
struct IngestLoad {
    stored_to: i64,
    at: std::time::Instant,
    /// When the rollups were last within a step of the newest event.
    caught_up_at: std::time::Instant,
    /// A bound was hit: stepping until caught up.
    catching_up: bool,
    /// Caught up after a bound: no yielding before this.
    current_until: Option<std::time::Instant>,
}

impl IngestLoad {
    fn new(stored_to: i64) -> IngestLoad {
        let now = std::time::Instant::now();
        IngestLoad {
            stored_to,
            at: now,
            caught_up_at: now,
            catching_up: false,
            current_until: None,
        }
    }

    /// Whether to skip a step at `now`: ingest ran above [`YIELD_ABOVE_EVENTS_PER_SEC`]
    /// since the last check and the rollups (at `rolled_up_to`) are within the yield bounds.
    fn yield_to_ingest(
        &mut self,
        now: std::time::Instant,
        stored_to: i64,
        rolled_up_to: i64,
    ) -> bool {
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let rate = (stored_to - self.stored_to) as f64 / seconds;
        (self.stored_to, self.at) = (stored_to, now);
        let lag = stored_to - rolled_up_to;
        let caught_up = within_a_step(lag);
        if caught_up {
            self.caught_up_at = now;
        }
        if self.catching_up {
            if !caught_up {
                return false;
            }
            self.catching_up = false;
            self.current_until = Some(now + CURRENT_FOR);
        }
        if self.current_until.is_some_and(|until| now < until) || rate <= YIELD_ABOVE_EVENTS_PER_SEC
        {
            return false;
        }
        // Timed from the last time they were caught up, not from the last step: a lull
        // between two commits lets one step through, which must not restart the clock.
        if lag >= YIELD_LAG_MAX_EVENTS || now.duration_since(self.caught_up_at) >= YIELD_FOR_MAX {
            self.catching_up = true;
            return false;
        }
        true
    }
}

/// The rollup thread's scheduling priority (a nice value): on a busy machine the CPU goes to
/// parsing, storing and acknowledging events first; the rollups catch up when load drops
/// (their lag pauses alerting, see `actions::run`). Measured in BENCHMARKS.md.
const ROLLUP_NICE: libc::c_int = 19;

/// Lowers the calling thread's priority to [`ROLLUP_NICE`] (Linux sets nice per thread);
/// a failure only costs speed, so it is logged and ignored.
/// Gives the memory freed since the last call back to the OS. glibc keeps freed memory in
/// per-thread arenas and trims only free space at an arena's top, so a server's RSS creeps
/// up towards the sum of every thread's peak (request bodies, a step's rows); `malloc_trim`
/// also releases the free pages inside them. Called after each rollup step, itself the
/// largest allocation burst. Measured in BENCHMARKS.md.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists, under the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; no memory is shared.
        let result = unsafe {
            libc::setpriority(
                libc::PRIO_PROCESS,
                libc::gettid() as libc::id_t,
                ROLLUP_NICE,
            )
        };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the rollup thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_wait_while_ingest_runs_fast_within_the_lag_bounds() {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut load = IngestLoad::new(0);
        load.at = start;
        // 3,000 events in 100 ms is 30,000/s: above 20,000/s, so wait.
        assert!(load.yield_to_ingest(at(100), 3_000, 0));
        // 1,000 in the next 100 ms is 10,000/s: step.
        assert!(!load.yield_to_ingest(at(200), 4_000, 0));
        // Fast again, but the rollups are 2 M events behind: step until caught up (within
        // 20,000 events), then 5 s of steps whatever the load, then wait again.
        assert!(!load.yield_to_ingest(at(300), 2_004_000, 4_000 - 1));
        assert!(
            !load.yield_to_ingest(at(400), 2_007_000, 1_000_000),
            "still catching up"
        );
        assert!(
            !load.yield_to_ingest(at(500), 2_010_000, 1_990_000),
            "caught up"
        );
        assert!(
            !load.yield_to_ingest(at(5_400), 2_160_000, 2_150_000),
            "current for 5 s"
        );
        assert!(load.yield_to_ingest(at(5_500), 2_163_000, 2_150_000));
        // Fast for 30 s after the rollups were last caught up (tick 2, 19,000 behind; from
        // tick 3 on more than a step's 20,000): then the same catch-up. A lull (100 ms
        // without events) lets one step through but does not restart the 30 s.
        let mut stored = 2_163_000;
        for tick in 1..302 {
            let lull = tick == 150;
            if !lull {
                stored += 3_000;
            }
            assert_eq!(
                load.yield_to_ingest(at(5_500 + tick * 100), stored, 2_150_000),
                !lull,
                "tick {tick}"
            );
        }
        assert!(
            !load.yield_to_ingest(at(5_500 + 302 * 100), stored + 3_000, 2_150_000),
            "30 s behind"
        );
        assert!(
            !load.yield_to_ingest(at(5_500 + 303 * 100), stored + 6_000, 2_150_000),
            "catching up"
        );
    }

    /// Events as the writer stores them, in two deliveries, with the identity link and
    /// membership that an identify and a group call leave: an anonymous visitor who later
    /// identifies as u1 (their two earlier visits then count for u1), and u2, whose later
    /// group call is dated before a visit already counted for no account (it then counts for
    /// beta). Both make a step recompute a person from events of earlier steps.
    fn deliver(conn: &Connection, second: bool) {
        let t0 = 1_772_000_000_000_i64; // 2026-02-25T06:13:20Z
                                        // (id, type, userId, anonymousId, groupId, timestamp)
        type Event<'a> = (
            i64,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            i64,
        );
        let events: &[Event] = if second {
            &[
                (4, "identify", Some("u1"), Some("anon"), None, t0 + 600_000),
                (5, "track", Some("u1"), None, Some("acme"), t0 + 1_200_000),
                (6, "group", Some("u2"), None, Some("beta"), t0 - 60_000),
            ]
        } else {
            &[
                (1, "track", None, Some("anon"), Some("acme"), t0),
                (2, "track", None, Some("anon"), Some("acme"), t0 + 60_000),
                (3, "track", Some("u2"), None, None, t0),
            ]
        };
        for &(id, kind, user, anonymous, group, ts) in events {
            conn.execute(
                "INSERT INTO events (id, received_ms, source, message_id, type, user_id, anonymous_id, group_id, event, timestamp_ms, raw)
                 VALUES (?1, ?2, 'test', ?1, ?3, ?4, ?5, ?6, CASE WHEN ?3 = 'track' THEN 'Report Created' END, ?2, '{}')",
                params![id, ts, kind, user, anonymous, group],
            )
            .unwrap();
        }
        if second {
            conn.execute("INSERT INTO identity_links (previous_id, user_id, timestamp_ms, event_id) VALUES ('anon', 'u1', ?1, 4)", [t0 + 600_000]).unwrap();
            conn.execute("INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES ('u2', NULL, 'beta', ?1, 6)", [t0 - 60_000])
                .unwrap();
        }
    }

    fn counted(conn: &Connection) -> Vec<(String, String, i64)> {
        let mut query = conn
            .prepare("SELECT account_id, user_id, events FROM user_days ORDER BY 1, 2")
            .unwrap();
        query
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_server_step_reads_no_event_past_the_last_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        deliver(&conn, false);
        let synced = prometheus::IntGauge::new("synced", "test").unwrap();
        let mut rollup = Rollup {
            synced_to: Some(synced.clone()),
            ..Rollup::new(&MetricsConfig::default())
        };
        synced.set(0);
        assert_eq!(
            rollup.step(&mut conn, 100).unwrap().last_event_id,
            0,
            "nothing synced yet"
        );
        synced.set(2);
        let step = rollup.step(&mut conn, 100).unwrap();
        assert_eq!((step.read, step.last_event_id), (2, 2));
        assert_eq!(rolled_up_to(&conn).unwrap(), 2);
        synced.set(3);
        let step = rollup.step(&mut conn, 100).unwrap();
        assert_eq!((step.read, step.last_event_id), (1, 3));
    }

    /// Steps one event at a time, writing `person_events` every `index_every` events, with a
    /// new `Rollup` (as another process would) before each step when `fresh`.
    fn step_one_by_one(index_every: i64, fresh: bool) -> (Vec<(String, String, i64)>, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Store::open(dir.path()).unwrap();
        let mut conn = store.connect().unwrap();
        let config = MetricsConfig::default();
        let mut rollup = Rollup {
            index_every,
            ..Rollup::new(&config)
        };
        for second in [false, true] {
            deliver(&conn, second);
            for _ in 0..3 {
                if fresh {
                    rollup = Rollup {
                        index_every,
                        ..Rollup::new(&config)
                    };
                }
                rollup.step(&mut conn, 1).unwrap();
            }
        }
        let indexed: i64 = conn
            .query_row("SELECT count(*) FROM person_events", [], |r| r.get(0))
            .unwrap();
        let indexed_to: i64 = conn
            .query_row("SELECT indexed_to FROM rollup_state", [], |r| r.get(0))
            .unwrap();
        (counted(&conn), indexed, indexed_to)
    }

    #[test]
    fn recomputes_find_a_persons_events_in_the_index_in_memory_or_both() {
        let expected = vec![
            ("acme".to_string(), "u1".to_string(), 3),
            ("beta".to_string(), "u2".to_string(), 1),
        ];
        // Written at every step: 7 postings (event 4 under both its ids).
        assert_eq!(step_one_by_one(1, false), (expected.clone(), 7, 6));
        // Never written: the recomputes find everything in memory.
        assert_eq!(step_one_by_one(1_000, false), (expected.clone(), 0, 0));
        // Written every 4 events (events 1-4), the rest in memory; and the same when each
        // step is a new process that must read the unwritten postings back from the events.
        assert_eq!(step_one_by_one(4, false), (expected.clone(), 5, 4));
        assert_eq!(step_one_by_one(4, true), (expected, 5, 4));
    }
}
