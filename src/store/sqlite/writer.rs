//! The single writer: drains the ingest queue, dedups, stores and applies identity effects
//! in one transaction per group of requests; a second thread, the syncer, makes what was
//! committed durable and answers each request.
//!
//! The writer's connection commits without syncing (`synchronous = NORMAL`: SQLite still
//! syncs around checkpoints and when the write-ahead log is reused) and hands each group to
//! the syncer, which calls `fdatasync` on the log, then answers: a 200 still means fsynced,
//! as with `synchronous = FULL`, but the writer stores the next group while the disk syncs
//! the last, and one sync covers every group committed since the one before. Events
//! committed but not yet synced are visible to readers; the rollup worker of this process
//! reads only up to `bellwether_store_last_event_id`, which the syncer advances.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Statement, Transaction, TransactionBehavior};

use super::{connect, connect_main, StoreError};
use crate::ingest::queue::JobReceiver;
use crate::ingest::{Job, JobOutcome, Kind, Message};
use crate::limits;
use crate::store::sqlite::dedup::{Dedup, Key, SEGMENT_SHIFT};
use crate::telemetry::Telemetry;

const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Group commit: a group smaller than this waits a little for more requests, because
/// each commit has a fixed cost (fsync, transaction) that a larger group shares.
const GROUP_MESSAGES_ENOUGH: usize = 2_000;
/// The longest such wait. The wait is also never longer than the previous commit took,
/// so an idle server (fast commits) adds next to nothing to latency.
const GROUP_WAIT_MAX: Duration = Duration::from_millis(2);
const GROUP_POLL: Duration = Duration::from_micros(100);
const REBUILD_PROGRESS_ROWS: u64 = 1_000_000;

/// Opens the database, rebuilds the dedup index from the events of the window and starts
/// the writer thread. Errors here are start-up errors.
pub fn spawn(
    path: &Path,
    dedup_window_days: u32,
    receiver: JobReceiver,
    telemetry: Telemetry,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    // The main file alone: the rollup worker commits to rollups.db meanwhile, unhindered.
    let conn = connect_main(path)?;
    // Appends need little page cache: keep the writer's small (8 MiB).
    conn.pragma_update(None, "cache_size", -8192)?;
    // Commits are synced by the syncer thread before any request is answered (module notes).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Another writer (a rollup step, a large import) may hold the lock: wait it out rather
    // than fail; the byte-bounded queue answers 503 to new requests meanwhile. Polled finely
    // at first: SQLite's own timeout sleeps up to 100 ms between tries, which an ack waits.
    conn.busy_handler(Some(writer_busy))?;
    // Checkpoints copy the WAL into the database file and fsync it. A background thread
    // does most of that copying between commits; the writer's own small autocheckpoint
    // then has little left to copy, and because it runs between the writer's
    // transactions it always catches up, which lets the WAL restart from its beginning.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    let checkpointer = spawn_checkpointer(path)?;
    let last_received_ms: i64 = conn.query_row(
        "SELECT coalesce(max(received_ms), 0) FROM events",
        [],
        |r| r.get(0),
    )?;
    let mut state = State {
        dedup: Dedup::new(dedup_window_days),
        next_id: next_id(&connect(path)?)?,
        last_received_ms,
    };
    rebuild_dedup(&conn, &mut state.dedup, dedup_window_days)?;
    telemetry.dedup_entries.set(state.dedup.len() as i64);
    let (to_sync, committed) = mpsc::sync_channel(SYNC_QUEUE_GROUPS);
    let mut wal = WalFile {
        path: wal_path(path),
        file: None,
    };
    // What an earlier process committed but may not have synced counts as stored from now on.
    match wal.sync() {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::Schema {
                path: wal.path.clone(),
                reason: format!("cannot sync the write-ahead log: {e}"),
            })
        }
        _ => {}
    }
    telemetry.stored_to.set(state.next_id - 1);
    let sync_telemetry = telemetry.clone();
    let syncer = std::thread::Builder::new()
        .name("store-sync".into())
        .spawn(move || sync_and_answer(wal, committed, sync_telemetry))
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            run(conn, state, receiver, to_sync, telemetry);
            // The syncer answers what it was handed, then stops: the sender is gone.
            let _ = syncer.join();
            drop(checkpointer); // the checkpointer does a last checkpoint and stops
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(handle)
}

/// Committed groups waiting for the syncer; past this the writer waits for it (a sync is
/// a few ms, a commit as long or longer, so the queue is rarely more than one deep).
const SYNC_QUEUE_GROUPS: usize = 8;

/// One committed group on its way to the syncer.
struct Committed {
    jobs: Vec<Job>,
    outcomes: Vec<JobResult>,
    /// The id of the group's newest event.
    last_id: i64,
}

/// SQLite's write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The write-ahead log, opened for syncing. SQLite keeps the file while any connection is
/// open (the writer's always is); it is reopened should the path ever name another file.
struct WalFile {
    path: PathBuf,
    file: Option<(std::fs::File, u64)>,
}

impl WalFile {
    /// Makes everything written to the log so far durable.
    fn sync(&mut self) -> std::io::Result<()> {
        let inode = std::fs::metadata(&self.path)?.ino();
        if self.file.as_ref().map(|(_, i)| *i) != Some(inode) {
            let file = std::fs::File::open(&self.path)?;
            let inode = file.metadata()?.ino();
            self.file = Some((file, inode));
        }
        let (file, _) = self.file.as_ref().expect("invariant: opened above");
        file.sync_data()
    }
}

/// The syncer: takes every committed group waiting, syncs the log once for all of them,
/// then answers their requests (or, if the sync failed, answers 503: the events are
/// committed, so a retry finds them stored and is answered as duplicates).
fn sync_and_answer(mut wal: WalFile, committed: mpsc::Receiver<Committed>, telemetry: Telemetry) {
    while let Ok(first) = committed.recv() {
        let mut groups = vec![first];
        groups.extend(committed.try_iter());
        let started = Instant::now();
        let synced = wal.sync();
        telemetry
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &synced {
            tracing::error!(error = %e, path = %wal.path.display(), "syncing the write-ahead log failed; the requests of its groups get 503");
            telemetry.reject("store_error");
        }
        for group in groups {
            if synced.is_ok() {
                telemetry.stored_to.set(group.last_id);
            }
            for (job, outcome) in group.jobs.into_iter().zip(group.outcomes) {
                match (&synced, outcome) {
                    (Ok(()), Ok(outcome)) => {
                        telemetry.accepted.inc_by(outcome.stored as u64);
                        telemetry.deduplicated.inc_by(outcome.duplicates as u64);
                        job.answer(Ok(outcome));
                    }
                    (Ok(()), Err(reason)) => job.answer(Err(reason)),
                    (Err(e), _) => {
                        job.answer(Err(format!("syncing the write-ahead log failed: {e}")))
                    }
                }
            }
        }
    }
}

/// The writer's busy handler: retry every 250 µs for the first half second (a rollup step
/// holds the lock for milliseconds), then every 10 ms, giving up after about an hour.
fn writer_busy(retries: i32) -> bool {
    const FINE: i32 = 2_000;
    if retries < FINE {
        std::thread::sleep(Duration::from_micros(250));
        true
    } else {
        std::thread::sleep(Duration::from_millis(10));
        retries < FINE + 360_000
    }
}
/// How often the background thread copies the WAL into the database file. Often, so the
/// writer's own autocheckpoint (inside a commit, which every waiting request then waits
/// for) finds little left to copy and sync: its slow commits were its database fsync.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);
/// The writer checkpoints when the WAL holds this many 4 KiB pages (16 MiB).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4_096;
/// A WAL larger than this many pages (256 MiB) is truncated by the background thread.
const WAL_PAGES_TRUNCATE: i64 = 65_536;

/// Starts the checkpoint thread; it stops (after a final checkpoint) when the returned
/// sender is dropped.
fn spawn_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    // rollups.db is checkpointed by its own writer's commits (SQLite's autocheckpoint).
    let conn = connect_main(path)?;
    conn.pragma_update(None, "cache_size", -1024)?;
    // Never make the writer wait behind a checkpoint that waits for readers: try, retry later.
    conn.busy_timeout(Duration::from_millis(100))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || loop {
            let last = matches!(
                stopped.recv_timeout(CHECKPOINT_EVERY),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            );
            let result: rusqlite::Result<(i64, i64, i64)> =
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
            match result {
                Ok((_, wal_pages, _)) if wal_pages > WAL_PAGES_TRUNCATE || last => {
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL truncate checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
            }
            if last {
                break;
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(stop)
}

struct State {
    dedup: Dedup,
    next_id: i64,
    /// Stored receive times never go backwards (a wall-clock step back, a slow upload),
    /// so ids stay in receive order for `first_id_received_since`.
    last_received_ms: i64,
}

fn run(
    mut conn: Connection,
    mut state: State,
    mut receiver: JobReceiver,
    to_sync: mpsc::SyncSender<Committed>,
    telemetry: Telemetry,
) {
    let mut last_expire = Instant::now();
    let mut last_commit = Duration::ZERO;
    while let Some(first) = receiver.blocking_recv() {
        let mut count = first.messages.len();
        let mut jobs = vec![first];
        let wait_until = Instant::now() + last_commit.min(GROUP_WAIT_MAX);
        while count < limits::COMMIT_MESSAGES_MAX {
            match receiver.try_recv() {
                Ok(job) => {
                    count += job.messages.len();
                    jobs.push(job);
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty)
                    if count < GROUP_MESSAGES_ENOUGH && Instant::now() < wait_until =>
                {
                    std::thread::sleep(GROUP_POLL);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit(&mut conn, &mut state, &jobs);
        last_commit = started.elapsed();
        telemetry.commit_seconds.observe(last_commit.as_secs_f64());
        telemetry.commit_messages.observe(count as f64);
        match result {
            Ok(outcomes) => {
                if to_sync
                    .send(Committed {
                        jobs,
                        outcomes,
                        last_id: state.next_id - 1,
                    })
                    .is_err()
                {
                    tracing::error!("the store syncer stopped; the store writer stops too");
                    break;
                }
                // Sealing sorts up to a million ids (tens of ms): done while the syncer
                // syncs, after the group's hand-off.
                state.dedup.seal_if_full();
            }
            Err(e) => {
                tracing::error!(error = %e, messages = count, "store commit failed; nothing of this group was stored and its requests get 503");
                telemetry.reject("store_error");
                let reason = e.to_string();
                for job in jobs {
                    job.answer(Err(reason.clone()));
                }
            }
        }
        if last_expire.elapsed() >= EXPIRE_EVERY {
            let dropped = state.dedup.expire(chrono::Utc::now().timestamp_millis());
            if dropped > 0 {
                tracing::debug!(dropped, "expired message ids past the dedup window");
            }
            last_expire = Instant::now();
        }
        telemetry.dedup_entries.set(state.dedup.len() as i64);
    }
    tracing::info!("store writer stopped: ingest queue closed");
}

const INSERT_EVENT: &str = "INSERT INTO events (id, received_ms, source, message_id, type, user_id, anonymous_id, group_id, event, timestamp_ms, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const FIND_STORED: &str =
    "SELECT 1 FROM events WHERE id BETWEEN ?1 AND ?2 AND message_id = ?3 AND source = ?4 LIMIT 1";

/// Each job's answer: its outcome, or why it alone was not stored.
type JobResult = Result<JobOutcome, String>;

/// One group commit. Each job runs inside a savepoint, so a job that fails (its SQL
/// refused) is rolled back alone and answered with an error while the others commit. If
/// the commit itself fails the whole transaction rolls back; either way the dedup index
/// is restored for what was not stored, so a retry is handled as new.
fn commit(
    conn: &mut Connection,
    state: &mut State,
    jobs: &[Job],
) -> Result<Vec<JobResult>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut undo = Vec::new();
    let (next_id_before, last_received_before) = (state.next_id, state.last_received_ms);
    let result =
        store_jobs(&tx, state, jobs, &mut undo).and_then(|outcomes| tx.commit().map(|()| outcomes));
    if result.is_err() {
        for entry in undo {
            state.dedup.remove(entry);
        }
        state.next_id = next_id_before;
        state.last_received_ms = last_received_before;
    }
    result
}

fn store_jobs(
    tx: &Transaction,
    state: &mut State,
    jobs: &[Job],
    undo: &mut Vec<u64>,
) -> Result<Vec<JobResult>, rusqlite::Error> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        tx.execute_batch("SAVEPOINT job")?;
        let (next_id_before, last_received_before, undo_before) =
            (state.next_id, state.last_received_ms, undo.len());
        match store_job(tx, state, job, undo) {
            Ok(outcome) => {
                tx.execute_batch("RELEASE job")?;
                outcomes.push(Ok(outcome));
            }
            Err(e) => {
                tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                for entry in undo.drain(undo_before..) {
                    state.dedup.remove(entry);
                }
                state.next_id = next_id_before;
                state.last_received_ms = last_received_before;
                tracing::warn!(error = %e, source = %job.source, "a request's messages were refused by the database; the rest of its group is stored");
                outcomes.push(Err(e.to_string()));
            }
        }
    }
    Ok(outcomes)
}

fn store_job(
    tx: &Transaction,
    state: &mut State,
    job: &Job,
    undo: &mut Vec<u64>,
) -> Result<JobOutcome, rusqlite::Error> {
    let mut insert = tx.prepare_cached(INSERT_EVENT)?;
    let mut find = tx.prepare_cached(FIND_STORED)?;
    {
        let mut outcome = JobOutcome::default();
        for message in &job.messages {
            let key = state.dedup.key(&job.source, &message.message_id);
            if !message.message_id_generated
                && is_stored(
                    &mut find,
                    &state.dedup,
                    key,
                    &job.source,
                    &message.message_id,
                )?
            {
                outcome.duplicates += 1;
                continue;
            }
            let id = state.next_id;
            let received_ms = message.received_ms.max(state.last_received_ms);
            insert.execute(params![
                id,
                received_ms,
                &*job.source,
                message.message_id,
                message.kind.as_str(),
                message.user_id,
                message.anonymous_id,
                message.group_id,
                message.event,
                message.timestamp_ms,
                message.raw,
            ])?;
            state.next_id += 1;
            state.last_received_ms = received_ms;
            undo.push(state.dedup.insert(key, id, received_ms));
            apply_identity(tx, id, message)?;
            outcome.stored += 1;
        }
        Ok(outcome)
    }
}

fn is_stored(
    find: &mut Statement,
    dedup: &Dedup,
    key: Key,
    source: &str,
    message_id: &str,
) -> Result<bool, rusqlite::Error> {
    for (first, last) in dedup.candidates(key) {
        if find.exists(params![first, last, message_id, source])? {
            return Ok(true);
        }
    }
    Ok(false)
}

const UPSERT_USER: &str = "INSERT INTO users (user_id, traits, traits_ms, first_seen_ms) VALUES (?1, ?2, ?3, ?3)
    ON CONFLICT(user_id) DO UPDATE SET
      traits = CASE WHEN excluded.traits_ms >= users.traits_ms THEN json_patch(users.traits, excluded.traits)
                    ELSE json_patch(excluded.traits, users.traits) END,
      traits_ms = max(users.traits_ms, excluded.traits_ms),
      first_seen_ms = min(users.first_seen_ms, excluded.first_seen_ms)";
const UPSERT_ACCOUNT: &str = "INSERT INTO accounts (account_id, name, plan, traits, traits_ms)
    VALUES (?1, json_extract(?2, '$.name'), json_extract(?2, '$.plan'), ?2, ?3)
    ON CONFLICT(account_id) DO UPDATE SET
      traits = CASE WHEN excluded.traits_ms >= accounts.traits_ms THEN json_patch(accounts.traits, excluded.traits)
                    ELSE json_patch(excluded.traits, accounts.traits) END,
      name = CASE WHEN excluded.traits_ms >= accounts.traits_ms THEN coalesce(excluded.name, accounts.name)
                  ELSE coalesce(accounts.name, excluded.name) END,
      plan = CASE WHEN excluded.traits_ms >= accounts.traits_ms THEN coalesce(excluded.plan, accounts.plan)
                  ELSE coalesce(accounts.plan, excluded.plan) END,
      traits_ms = max(accounts.traits_ms, excluded.traits_ms)";

/// What identify, group and alias calls mean beyond the raw event: users and their trait
/// history, accounts and membership history, and links from earlier ids to a user.
/// Traits merge key by key; of two values for a key, the later `timestamp` wins, whatever
/// order the calls arrive in.
fn apply_identity(tx: &Transaction, id: i64, message: &Message) -> Result<(), rusqlite::Error> {
    let ts = message.timestamp_ms;
    let traits = message.traits.as_deref().unwrap_or("{}");
    match message.kind {
        Kind::Identify => {
            if let Some(user) = &message.user_id {
                tx.prepare_cached(UPSERT_USER)?
                    .execute(params![user, traits, ts])?;
                tx.prepare_cached("INSERT INTO user_traits (user_id, timestamp_ms, event_id, traits) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![user, ts, id, traits])?;
                if let Some(anonymous) = &message.anonymous_id {
                    link(tx, anonymous, user, ts, id)?;
                }
            }
        }
        Kind::Group => {
            let account = message
                .group_id
                .as_deref()
                .expect("invariant: ingest requires groupId on group calls");
            tx.prepare_cached(UPSERT_ACCOUNT)?
                .execute(params![account, traits, ts])?;
            if message.traits.is_some() {
                tx.prepare_cached("INSERT INTO account_traits (account_id, timestamp_ms, event_id, traits) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![account, ts, id, traits])?;
            }
            tx.prepare_cached("INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![message.user_id, message.anonymous_id, account, ts, id])?;
        }
        Kind::Alias => {
            let user = message
                .user_id
                .as_deref()
                .expect("invariant: ingest requires userId on alias calls");
            let previous = message
                .previous_id
                .as_deref()
                .expect("invariant: ingest requires previousId on alias calls");
            link(tx, previous, user, ts, id)?;
        }
        Kind::Track | Kind::Page | Kind::Screen => {}
    }
    Ok(())
}

fn link(
    tx: &Transaction,
    previous: &str,
    user: &str,
    ts: i64,
    id: i64,
) -> Result<(), rusqlite::Error> {
    if previous == user {
        return Ok(());
    }
    tx.prepare_cached("INSERT INTO identity_links (previous_id, user_id, timestamp_ms, event_id) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![previous, user, ts, id])?;
    Ok(())
}

/// The id the next event gets: past every stored id and past every rollup mark (cursor,
/// person index, frozen rows), so an id freed by a deletion (GDPR erasure of the newest
/// events) is never handed out again and then skipped by the rollups.
fn next_id(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(id) FROM events), 0), last_event_id, indexed_to, frozen_counted_to) + 1
         FROM rollup_state WHERE id = 1",
        [],
        |r| r.get(0),
    )
}

/// Loads the ids of every message received within the window (from the start of the
/// segment holding the first one, so whole segments are covered).
fn rebuild_dedup(conn: &Connection, dedup: &mut Dedup, window_days: u32) -> Result<(), StoreError> {
    let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(window_days) * 86_400_000;
    let Some(first) = super::first_id_received_since(conn, cutoff)? else {
        return Ok(());
    };
    let start = (first >> SEGMENT_SHIFT) << SEGMENT_SHIFT;
    let started = Instant::now();
    let mut stmt = conn.prepare(
        "SELECT id, source, message_id, received_ms FROM events WHERE id >= ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([start])?;
    let mut loaded: u64 = 0;
    while let Some(row) = rows.next()? {
        let (id, source, message_id, received_ms): (i64, String, String, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let key = dedup.key(&source, &message_id);
        dedup.insert(key, id, received_ms);
        dedup.seal_if_full();
        loaded += 1;
        if loaded.is_multiple_of(REBUILD_PROGRESS_ROWS) {
            tracing::info!(loaded, "rebuilding the dedup index from stored events");
        }
    }
    tracing::info!(
        loaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        window_days,
        "dedup index ready"
    );
    Ok(())
}
