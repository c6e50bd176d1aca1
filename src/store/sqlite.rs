//! The embedded store: the only code that does I/O on the SQLite files.
//!
//! The embedded backend is two SQLite files in the data directory: `bellwether.db` (events,
//! records, everything else) and `rollups.db` (the rollup tables, attached to every
//! connection as `rollups`), each in WAL mode with `synchronous = FULL`, so a committed
//! transaction survives power loss and readers (the API, the CLI in another process) never
//! block a writer. Two files, two write locks: the ingest writer commits to the first while
//! the rollup worker commits to the second. Write transactions lock through
//! [`write_transaction`]: only the files they write, rollups.db before bellwether.db.
//! A transaction writing both (an erasure, a retention pass) commits bellwether.db, then
//! rollups.db, so a stop between the two (a crash, a full disk) leaves one without the other:
//! an erasure notes the erased ids in bellwether.db and the rollup worker purges their rows
//! if they were left; a retention pass leaves at worst index rows of deleted events, which
//! nothing reads.
//! Writes go through the single [`writer`]; everything else here reads.

pub mod actions;
pub mod dashboard;
pub mod dedup;
pub mod health;
pub mod listening;
pub mod metrics;
pub mod records;
pub mod retention;
pub mod rollup;
pub mod schema;
pub mod users;
pub mod writer;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{ApiToken, EventFilter, Role, StoreError, StoredEvent};
use crate::ingest::format_timestamp;
use crate::limits;

/// A handle on the embedded store: its path; connections are opened per use.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

/// The main database file of the embedded store in `data_dir`.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

const DATABASE_FILE: &str = "bellwether.db";

impl Store {
    /// Creates the data directory and database if needed and runs pending migrations.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = database_path(data_dir);
        let mut conn = connect(&path)?;
        schema::migrate(&mut conn)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .map_err(|reason| StoreError::Schema {
                path: path.clone(),
                reason,
            })?;
        let rollups = rollups_path(&path);
        schema::split_rollups(&mut conn)
            .map_err(|source| StoreError::Open {
                path: rollups.clone(),
                source,
            })?
            .map_err(|reason| StoreError::Schema {
                path: rollups,
                reason,
            })?;
        Ok(Store { path })
    }

    /// A handle on the data dir's database that opens nothing: a node on ClickHouse keeps
    /// it for the handlers it does not route (see `web::App::start`).
    pub fn unopened(data_dir: &Path) -> Store {
        Store {
            path: data_dir.join("bellwether.db"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection for reading (or for the writer).
    pub fn connect(&self) -> Result<Connection, StoreError> {
        connect(&self.path)
    }
}

/// How long a write waits for another writer (an import in another process, say) before
/// failing. A large import holds the write lock for its whole file.
const BUSY_TIMEOUT_SECS: u64 = 60;

/// Writes a consistent copy of the database, rollups included, to one file `target` while
/// it is in use: `VACUUM INTO` copies one read snapshot of a file, so concurrent commits
/// neither block it nor restart it. The copy is written beside the target and renamed into
/// place once complete and synced.
pub fn backup(store: &Store, target: &Path) -> Result<u64, StoreError> {
    let io_error = |source| StoreError::DataDir {
        path: target.to_path_buf(),
        source,
    };
    if target.exists() {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "already exists; choose a new file",
        )));
    }
    let partial = target.with_extension("partial");
    let rollups = target.with_extension("rollups.partial");
    let _ = std::fs::remove_file(&partial);
    let _ = std::fs::remove_file(&rollups);
    // Both files are copied (rollups.db's write lock held by a second connection across
    // the two copies, so no step, erasure or retention pass commits between them: a pair of
    // snapshots that agree; ingest goes on and the rollups catch up after), then the rollup
    // tables go into the copy of bellwether.db, one file to keep: opening the restored file
    // moves them back out (schema::split_rollups). The partial files, which hold everything,
    // are removed whatever happens (a killed backup leaves them; the next one removes them).
    let copied = (|| -> Result<(), StoreError> {
        let conn = store.connect()?;
        let holder = store.connect()?;
        let hold = write_transaction(&holder, Lock::Rollups)?;
        conn.execute("VACUUM rollups INTO ?1", [rollups.to_string_lossy()])?;
        conn.execute("VACUUM main INTO ?1", [partial.to_string_lossy()])?;
        drop(hold);
        let mut copy = Connection::open(&partial)?;
        copy.execute("ATTACH DATABASE ?1 AS copied", [rollups.to_string_lossy()])?;
        let tx = copy.transaction()?;
        for table in schema::ROLLUP_TABLES {
            tx.execute_batch(&format!(
                "CREATE TABLE main.{table} AS SELECT * FROM copied.{table}"
            ))?;
        }
        tx.commit()?;
        copy.execute("DETACH DATABASE copied", [])?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&rollups);
    if let Err(error) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io_error)?;
    std::fs::rename(&partial, target).map_err(io_error)?;
    std::fs::metadata(target).map(|m| m.len()).map_err(io_error)
}

/// Puts a backup in place as the data dir's database (stop the server first). Refuses a
/// file that is not a bellwether database or fails SQLite's integrity check, and refuses
/// to replace an existing database unless `replace` is set. Older schemas are migrated.
pub fn restore(backup: &Path, data_dir: &Path, replace: bool) -> Result<Store, StoreError> {
    let bad = |reason: String| StoreError::Schema {
        path: backup.to_path_buf(),
        reason,
    };
    {
        let source = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open {
                path: backup.to_path_buf(),
                source,
            })?;
        let check: String = source
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| bad(format!("not a readable database: {e}")))?;
        if check != "ok" {
            return Err(bad(format!("integrity check failed: {check}")));
        }
        let has_events: bool = source.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'events'",
            [],
            |r| r.get(0),
        )?;
        if !has_events {
            return Err(bad("not a bellwether database (no events table)".into()));
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let target = data_dir.join("bellwether.db");
    if target.exists() && !replace {
        return Err(StoreError::Schema {
            path: target,
            reason:
                "a database is already there; pass --force to replace it (stop the server first)"
                    .into(),
        });
    }
    let io_error = |source| StoreError::DataDir {
        path: target.clone(),
        source,
    };
    let partial = data_dir.join("bellwether.db.restoring");
    std::fs::copy(backup, &partial).map_err(io_error)?;
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io_error)?;
    // The old files go, each WAL before its database (a WAL left beside a newer database
    // would be replayed into it). The backup carries its rollups in its one file; opening
    // moves them into a new rollups.db.
    let stale = [
        "bellwether.db-wal",
        "bellwether.db-shm",
        "rollups.db-wal",
        "rollups.db-shm",
        ROLLUPS_FILE,
    ];
    for name in stale {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::DataDir { path, source: e })
            }
            _ => {}
        }
    }
    std::fs::rename(&partial, &target).map_err(io_error)?;
    Store::open(data_dir)
}

/// Which files a write transaction locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// bellwether.db only: ingest and the rollup worker go on.
    Main,
    /// rollups.db, then bellwether.db (an erasure, a retention pass).
    Both,
    /// rollups.db only (a rollup step; a backup holds it to copy both files consistently).
    Rollups,
}

/// Begins a write transaction holding the write lock of `lock`'s files before anything is
/// read. `BEGIN IMMEDIATE` would lock every attached file, in attach order: a transaction
/// writing only bellwether.db would then wait for a rollup step while holding the lock ingest
/// commits under. So: a deferred transaction whose first statements are no-op writes, to
/// rollups.db first (the order every transaction takes both in, so none waits on another
/// holding what it needs), then to bellwether.db.
pub(crate) fn write_transaction(
    conn: &Connection,
    lock: Lock,
) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    // Deferred (rusqlite's default); "unchecked" only means a nested one fails at run time.
    let tx = conn.unchecked_transaction()?;
    if matches!(lock, Lock::Both | Lock::Rollups) {
        tx.execute("UPDATE rollups.rollup_state SET id = id WHERE id = 1", [])?;
    }
    if matches!(lock, Lock::Both | Lock::Main) {
        tx.execute("UPDATE main.write_lock SET id = id WHERE id = 1", [])?;
    }
    Ok(tx)
}

/// The rollups file beside the database at `path` (see [`schema`]).
fn rollups_path(path: &Path) -> PathBuf {
    path.with_file_name(ROLLUPS_FILE)
}
const ROLLUPS_FILE: &str = "rollups.db";

/// Opens a connection with the pragmas every connection needs, with the rollups file
/// attached as `rollups` (unqualified table names find its tables).
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = connect_main(path)?;
    let rollups = rollups_path(path);
    let open_error = |source| StoreError::Open {
        path: rollups.clone(),
        source,
    };
    conn.execute("ATTACH DATABASE ?1 AS rollups", [rollups.to_string_lossy()])
        .map_err(open_error)?;
    conn.execute_batch(
        "PRAGMA rollups.journal_mode = WAL;
         PRAGMA rollups.synchronous = FULL;
         PRAGMA rollups.cache_size = -16384;",
    )
    .map_err(open_error)?;
    Ok(conn)
}

/// A connection to the main file alone: the ingest writer's, whose IMMEDIATE transactions
/// then lock that file only (with `rollups` attached they would lock both).
fn connect_main(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(BUSY_TIMEOUT_SECS))
        .map_err(open_error)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA cache_size = -32768;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(open_error)?;
    Ok(conn)
}

const LIST_EVENTS: &str = "SELECT e.id, e.received_ms, e.source, e.message_id, e.type,
        coalesce(e.user_id, (SELECT l.user_id FROM identity_links l WHERE l.previous_id = e.anonymous_id
                             ORDER BY l.timestamp_ms LIMIT 1)),
        e.anonymous_id, e.group_id, e.event, e.timestamp_ms, e.raw
    FROM events e
    WHERE e.received_ms >= ?1 AND e.received_ms < ?2 AND e.id > ?3
    ORDER BY e.id LIMIT ?4";
const ACCOUNT_AT: &str = "SELECT account_id FROM memberships
    WHERE (user_id = ?1 OR (?1 IS NULL AND anonymous_id = ?2)) AND timestamp_ms <= ?3
    ORDER BY timestamp_ms DESC, event_id DESC LIMIT 1";
/// Events before a user's first group call go to the first account they joined.
const ACCOUNT_FIRST: &str = "SELECT account_id FROM memberships
    WHERE (user_id = ?1 OR (?1 IS NULL AND anonymous_id = ?2))
    ORDER BY timestamp_ms, event_id LIMIT 1";
const SCAN_PAGE_ROWS: i64 = 4_096;

/// Safety margin of the binary search by receive time. The writer stores receive times
/// that never decrease with id, so none is needed for rows it wrote; ranges still start
/// this much earlier and filter, which costs a little scanning and guards the invariant.
const RECEIVE_DISORDER_MS: i64 = 60_000;

/// The smallest id that may hold an event received at or after `since_ms` (ids follow
/// receive order up to [`RECEIVE_DISORDER_MS`]); found by binary search on the rowid.
pub fn first_id_received_since(
    conn: &Connection,
    since_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let target = since_ms.saturating_sub(RECEIVE_DISORDER_MS);
    let mut at_or_after = conn
        .prepare_cached("SELECT id, received_ms FROM events WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    let mut row_at = |id: i64| -> Result<Option<(i64, i64)>, StoreError> {
        Ok(at_or_after
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    };
    let Some((first, first_ms)) = row_at(i64::MIN)? else {
        return Ok(None);
    };
    if first_ms >= target {
        return Ok(Some(first));
    }
    let last: i64 = conn.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
    // Invariant: the row at or after `low` is received before target; `high` is past it.
    let (mut low, mut high) = (first, last + 1);
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        match row_at(mid)? {
            Some((id, ms)) if ms < target => low = id.max(mid),
            _ => high = mid,
        }
    }
    Ok(if high > last { None } else { Some(high) })
}

/// Events received in the filter's range, oldest first, at most `filter.limit`
/// (capped at [`limits::EVENTS_LIST_ROWS_MAX`]).
pub fn list_events(
    conn: &Connection,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>, StoreError> {
    let limit = filter.limit.clamp(1, limits::EVENTS_LIST_ROWS_MAX);
    let until = filter.until_ms.unwrap_or(i64::MAX);
    let mut page = conn.prepare_cached(LIST_EVENTS)?;
    let mut account_at = conn.prepare_cached(ACCOUNT_AT)?;
    let mut account_first = conn.prepare_cached(ACCOUNT_FIRST)?;
    let mut out = Vec::new();
    let Some(first_id) = first_id_received_since(conn, filter.since_ms)? else {
        return Ok(out);
    };
    let mut after_id = first_id - 1;
    loop {
        let rows: Vec<StoredEvent> = page
            .query_map(
                params![filter.since_ms, until, after_id, SCAN_PAGE_ROWS],
                |r| {
                    let received_ms: i64 = r.get(1)?;
                    let timestamp_ms: i64 = r.get(9)?;
                    Ok(StoredEvent {
                        id: r.get(0)?,
                        received_at: format_timestamp(received_ms),
                        source: r.get(2)?,
                        message_id: r.get(3)?,
                        kind: r.get(4)?,
                        user_id: r.get(5)?,
                        anonymous_id: r.get(6)?,
                        account_id: r.get(7)?,
                        event: r.get(8)?,
                        timestamp: format_timestamp(timestamp_ms),
                        received_ms,
                        timestamp_ms,
                        raw: r.get(10)?,
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        let Some(last) = rows.last() else { break };
        after_id = last.id;
        let full_page = rows.len() as i64 == SCAN_PAGE_ROWS;
        for mut event in rows {
            if event.account_id.is_none() {
                event.account_id = account_at
                    .query_row(
                        params![event.user_id, event.anonymous_id, event.timestamp_ms],
                        |r| r.get(0),
                    )
                    .optional()?;
            }
            if event.account_id.is_none() {
                event.account_id = account_first
                    .query_row(params![event.user_id, event.anonymous_id], |r| r.get(0))
                    .optional()?;
            }
            let user_ok = filter
                .user
                .as_ref()
                .is_none_or(|u| event.user_id.as_ref() == Some(u));
            let account_ok = filter
                .account
                .as_ref()
                .is_none_or(|a| event.account_id.as_ref() == Some(a));
            if user_ok && account_ok {
                out.push(event);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if !full_page {
            break;
        }
    }
    Ok(out)
}

/// Creates an API token, valid for `valid_for_seconds` (None: until revoked), and returns
/// its secret, shown once; only its SHA-256 is stored.
pub fn create_token(
    conn: &Connection,
    name: &str,
    role: Role,
    valid_for_seconds: Option<i64>,
) -> Result<String, StoreError> {
    let secret = new_token_secret();
    let now = chrono::Utc::now().timestamp_millis();
    conn.execute(
        "INSERT INTO api_tokens (name, role, token_sha256, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, role.as_str(), token_digest(&secret), now, valid_for_seconds.map(|s| now + s * 1000)],
    )?;
    Ok(secret)
}

/// The role of a presented token, if it is known and has not expired. The lookup is by
/// SHA-256 of the token, so timing reveals nothing about stored secrets.
pub fn token_role(conn: &Connection, secret: &str) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .query_row(
            "SELECT role FROM api_tokens WHERE token_sha256 = ?1 AND (expires_ms IS NULL OR expires_ms > ?2)",
            params![token_digest(secret), chrono::Utc::now().timestamp_millis()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// Every API token, expired ones included.
pub fn list_tokens(conn: &Connection) -> Result<Vec<ApiToken>, StoreError> {
    let mut query =
        conn.prepare("SELECT id, name, role, created_ms, expires_ms FROM api_tokens ORDER BY id")?;
    let rows = query.query_map([], |r| {
        Ok(ApiToken {
            id: r.get(0)?,
            name: r.get(1)?,
            role: r.get(2)?,
            created_ms: r.get(3)?,
            expires_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a token at once; false when there was none with that id.
pub fn delete_token(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])? > 0)
}

/// A new API token's secret: `bw_` and 24 random bytes in hex.
pub(crate) fn new_token_secret() -> String {
    format!("bw_{}", hex(&rand::random::<[u8; 24]>()))
}

pub(crate) fn token_digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Store-level tests of the embedded backend's side of each capability trait, on a real
/// database file: what is written is read back, and the all-or-none and once-only rules
/// hold where the store keeps them.
#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use rusqlite::Connection;
    use serde_json::json;

    use super::Store;
    use crate::store::{
        Alerts, Answered, FollowUp, HandTask, NewAlert, NewMessage, NewNote, NewSend, NewTask,
        Notes, Outbox, Records, Role, Rules, Sessions, Surveys, TaskFilter, Tasks, Tokens, User,
        UserRole, Users,
    };

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Store::open(dir.path()).unwrap().connect().unwrap();
        (dir, conn)
    }

    fn account(conn: &mut Connection, id: &str) {
        let kind = crate::records::kind("accounts").unwrap();
        let object = json!({"account_id": id, "name": format!("{id} Inc")});
        let record = crate::records::from_json(kind, object.as_object().unwrap()).unwrap();
        let mut target = conn.import_target(kind).unwrap();
        target.upsert(kind, &record).unwrap();
        target.commit().unwrap();
    }

    fn alert(account: &str, cooldown_from_ms: i64) -> NewAlert {
        NewAlert {
            rule: "low-use".into(),
            account_id: account.into(),
            account_name: account.into(),
            reason: "license_utilization is 0.2".into(),
            measures: serde_json::Map::new(),
            cooldown_from_ms,
        }
    }

    fn follow_up(alert: &NewAlert, id: i64) -> FollowUp {
        FollowUp {
            messages: vec![NewMessage {
                idempotency_key: format!("alert-{id}"),
                channel: "cs".into(),
                kind: "webhook".into(),
                target: "http://127.0.0.1:9/hook".into(),
                subject: None,
                body: format!("{{\"account\": \"{}\"}}", alert.account_id),
            }],
            tasks: vec![NewTask {
                cause: "renewal".into(),
                csm: Some("csm-1".into()),
                title: format!("Call {}", alert.account_name),
                due: NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(),
            }],
        }
    }

    #[test]
    fn notes_need_an_account_and_goals_are_kept_per_quarter() {
        let (_dir, mut conn) = store();
        let note = |account, kind, text, at_ms| NewNote {
            account,
            author: "ana",
            person: None,
            kind,
            text,
            at_ms,
        };
        assert_eq!(
            conn.add_note(&note("acct-1", "note", "hello", 5)).unwrap(),
            None
        );
        account(&mut conn, "acct-1");
        let id = conn
            .add_note(&NewNote {
                person: Some("u-1"),
                ..note("acct-1", "call", "call went well", 1_000)
            })
            .unwrap();
        let notes = conn.stored_notes(Some("acct-1")).unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(
            (
                Some(notes[0].id),
                notes[0].kind.as_str(),
                notes[0].text.as_str(),
                notes[0].created_ms,
                notes[0].person.as_deref()
            ),
            (id, "call", "call went well", 1_000, Some("u-1"))
        );
        // The newest activity of each account, up to a time.
        conn.add_note(&note("acct-1", "note", "later", 2_000))
            .unwrap();
        assert_eq!(
            conn.last_notes(1_999).unwrap(),
            std::collections::HashMap::from([("acct-1".to_string(), 1_000)])
        );
        assert_eq!(conn.last_notes(2_000).unwrap()["acct-1"], 2_000);
        assert!(conn.last_notes(999).unwrap().is_empty());
        assert_eq!(conn.review_plan("acct-1", "2026Q4").unwrap(), None);
        let plan = |goals: &str| crate::store::ReviewPlan {
            goals: Some(goals.into()),
            hidden: vec!["support".into(), "surveys".into()],
            targets: [("hours_saved".to_string(), 120.5)].into(),
        };
        conn.set_review_plan("acct-1", "2026Q4", &plan("grow to 50 seats"))
            .unwrap();
        conn.set_review_plan("acct-1", "2026Q4", &plan("grow to 60 seats"))
            .unwrap();
        assert_eq!(
            conn.review_plan("acct-1", "2026Q4").unwrap(),
            Some(plan("grow to 60 seats"))
        );
        assert_eq!(conn.review_plan("acct-1", "2027Q1").unwrap(), None);
    }

    #[test]
    fn an_accounts_people_have_names_from_traits_and_roles_set_on_it() {
        use crate::store::{Contact, People, SavedView, Views};
        let (_dir, conn) = store();
        conn.execute_batch(
            r#"INSERT INTO users (user_id, traits, traits_ms, first_seen_ms) VALUES
                 ('u-1', '{"firstName": "Ana", "lastName": "Costa", "email": "ana@x.example"}', 1, 1),
                 ('u-2', '{"name": "Ben Ito"}', 1, 1),
                 ('u-3', '{"email": "c@x.example"}', 1, 1);
               INSERT INTO memberships (user_id, anonymous_id, account_id, timestamp_ms, event_id) VALUES
                 ('u-1', NULL, 'acct-1', 1, 1), ('u-1', NULL, 'acct-1', 2, 2),
                 ('u-2', NULL, 'acct-1', 1, 3), ('u-3', NULL, 'acct-2', 1, 4);"#,
        )
        .unwrap();
        let contact =
            |id: &str, name: Option<&str>, email: Option<&str>, role: Option<&str>| Contact {
                user_id: id.into(),
                name: name.map(Into::into),
                email: email.map(Into::into),
                role: role.map(Into::into),
            };
        // By name while no one has a role.
        assert_eq!(
            conn.account_people("acct-1").unwrap(),
            vec![
                contact("u-1", Some("Ana Costa"), Some("ana@x.example"), None),
                contact("u-2", Some("Ben Ito"), None, None),
            ]
        );
        // A sponsor comes first; someone given a role without a group call is listed too.
        conn.set_contact_role("acct-1", "u-2", Some("sponsor"), 5)
            .unwrap();
        conn.set_contact_role("acct-1", "u-3", Some("user"), 5)
            .unwrap();
        assert_eq!(
            conn.account_people("acct-1").unwrap(),
            vec![
                contact("u-2", Some("Ben Ito"), None, Some("sponsor")),
                contact("u-3", None, Some("c@x.example"), Some("user")),
                contact("u-1", Some("Ana Costa"), Some("ana@x.example"), None),
            ]
        );
        conn.set_contact_role("acct-1", "u-3", None, 6).unwrap();
        // Roles as forms give them: one of four, or none.
        assert_eq!(crate::store::contact_role(" sponsor"), Ok(Some("sponsor")));
        assert_eq!(crate::store::contact_role(""), Ok(None));
        assert!(crate::store::contact_role("boss")
            .unwrap_err()
            .contains("champion, sponsor, admin, user"));
        assert_eq!(conn.account_people("acct-1").unwrap().len(), 2);
        assert_eq!(conn.account_people("acct-2").unwrap()[0].role, None);

        // Saved views: per user and page, replaced by name, deleted once.
        let view = |name: &str, query: &str| SavedView {
            page: "portfolio".into(),
            name: name.into(),
            query: query.into(),
        };
        conn.save_view("ana", &view("Red renewals", "tier=red"), 1)
            .unwrap();
        conn.save_view("ana", &view("Red renewals", "tier=red&sort=renewal"), 2)
            .unwrap();
        conn.save_view("ana", &view("All", "status=all"), 2)
            .unwrap();
        conn.save_view("ben", &view("Mine", "csm=me"), 2).unwrap();
        assert_eq!(
            conn.saved_views("ana", "portfolio").unwrap(),
            vec![
                view("All", "status=all"),
                view("Red renewals", "tier=red&sort=renewal")
            ]
        );
        assert!(conn.delete_view("ana", "portfolio", "All", 3).unwrap());
        assert!(!conn.delete_view("ana", "portfolio", "All", 3).unwrap());
        assert_eq!(conn.saved_views("ana", "portfolio").unwrap().len(), 1);
        assert!(conn.saved_views("ana", "inbox").unwrap().is_empty());

        // Settings made on the dashboard: set, replaced, removed.
        use crate::store::StoredSettings;
        assert_eq!(conn.stored_setting("actions.surveys").unwrap(), None);
        conn.set_stored_setting("actions.surveys", Some("{}"))
            .unwrap();
        conn.set_stored_setting("actions.surveys", Some(r#"{"enabled": true}"#))
            .unwrap();
        assert_eq!(
            conn.stored_setting("actions.surveys").unwrap().as_deref(),
            Some(r#"{"enabled": true}"#)
        );
        conn.set_stored_setting("actions.surveys", None).unwrap();
        assert_eq!(conn.stored_setting("actions.surveys").unwrap(), None);
    }

    #[test]
    fn share_links_are_kept_listed_newest_first_and_revoked_once() {
        let (_dir, conn) = store();
        let link = |account: &str, quarter: &str| crate::store::ShareLink {
            id: 0,
            account_id: account.into(),
            quarter: quarter.into(),
            created_by: "ana".into(),
            created_ms: 1_000,
            expires_ms: 9_000,
            revoked_ms: None,
        };
        let first = conn.add_share_link(&link("acct-1", "2026-Q3")).unwrap();
        let second = conn.add_share_link(&link("acct-1", "2026-Q4")).unwrap();
        conn.add_share_link(&link("acct-2", "2026-Q4")).unwrap();
        let listed = conn.share_links("acct-1").unwrap();
        assert_eq!(
            listed.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![second, first]
        );
        assert_eq!(
            listed[1],
            crate::store::ShareLink {
                id: first,
                ..link("acct-1", "2026-Q3")
            }
        );
        // Only the account's own link, and only once.
        assert!(!conn.revoke_share_link("acct-2", first, 5_000).unwrap());
        assert!(conn.revoke_share_link("acct-1", first, 5_000).unwrap());
        assert!(!conn.revoke_share_link("acct-1", first, 6_000).unwrap());
        assert_eq!(
            conn.share_link(first).unwrap().unwrap().revoked_ms,
            Some(5_000)
        );
        assert_eq!(conn.share_link(second).unwrap().unwrap().revoked_ms, None);
        assert_eq!(conn.share_link(999).unwrap(), None);
    }

    #[test]
    fn an_activities_file_is_logged_all_or_nothing_and_once() {
        let (_dir, mut conn) = store();
        account(&mut conn, "acct-1");
        let now = 1_764_936_000_000; // 2025-12-05T12:00:00Z
        let import = |conn: &Connection, file: &str| {
            crate::import::activities::import(conn, file.as_bytes(), now).unwrap()
        };
        // An unknown account refuses the whole file, naming its row.
        let refused = import(
            &conn,
            "account_id,kind,at,text\nacct-1,call,2025-12-01,Kick-off\nacct-9,call,2025-12-01,Who?\n",
        );
        assert!(!refused.stored);
        assert_eq!(
            (refused.errors[0].row, refused.errors[0].column.as_str()),
            (3, "account_id")
        );
        assert!(conn.stored_notes(Some("acct-1")).unwrap().is_empty());
        // Stored, each counting as contact; again, nothing more (a repeat in the file too).
        let file = "account_id,kind,at,text,author\nacct-1,call,2025-12-01,Kick-off,ana\nacct-1,email,2025-12-02,Sent the plan,\nacct-1,call,2025-12-01,Kick-off,ana\n";
        let first = import(&conn, file);
        assert!(first.stored);
        assert_eq!((first.rows, first.inserted), (3, 2));
        assert_eq!(import(&conn, file).inserted, 0);
        let notes = conn.stored_notes(Some("acct-1")).unwrap();
        assert_eq!(notes.len(), 2);
        assert!(notes
            .iter()
            .any(|n| n.kind == "call" && n.author == "ana" && n.text == "Kick-off"));
        assert!(notes.iter().any(|n| n.author == "import"));
        assert_eq!(
            conn.last_notes(now).unwrap()["acct-1"],
            1_764_676_800_000 // 2025-12-02 at noon UTC
        );
    }

    #[test]
    fn rules_are_saved_replaced_and_deleted_by_name() {
        let (_dir, conn) = store();
        let rule = |when: &str| -> crate::actions::Rule {
            serde_json::from_value(json!({"name": "low-use", "when": when})).unwrap()
        };
        conn.save_rule(&rule("license_utilization < 0.3")).unwrap();
        conn.save_rule(&rule("license_utilization < 0.4")).unwrap();
        let stored = conn.stored_rules().unwrap();
        assert_eq!(stored, vec![rule("license_utilization < 0.4")]);
        assert!(conn.delete_rule("low-use").unwrap());
        assert!(!conn.delete_rule("low-use").unwrap());
        assert!(conn.stored_rules().unwrap().is_empty());
    }

    #[test]
    fn an_alert_comes_with_its_messages_and_tasks_once_per_cooldown() {
        let (_dir, conn) = store();
        let ids = conn
            .record_alerts(1_000, &[alert("acct-1", 0)], &follow_up)
            .unwrap();
        let Some(id) = ids[0] else { panic!("recorded") };
        // Within the cooldown (it fired after 500): held back, nothing else written.
        assert_eq!(
            conn.record_alerts(2_000, &[alert("acct-1", 500)], &follow_up)
                .unwrap(),
            vec![None]
        );
        let alerts = conn.alerts(0, Some("acct-1"), 10).unwrap();
        assert_eq!(alerts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![id]);
        let pending = conn.outbox("pending", 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].idempotency_key, format!("alert-{id}"));
        assert_eq!(pending[0].alert_id, Some(id));
        let tasks = conn.tasks(TaskFilter::default(), 10).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            (tasks[0].title.as_str(), tasks[0].status.as_str()),
            ("Call acct-1", "open")
        );
    }

    #[test]
    fn a_second_rule_with_the_same_cause_merges_into_the_open_task() {
        let (_dir, conn) = store();
        let other_rule = |cause: &'static str| {
            move |alert: &NewAlert, id: i64| {
                let mut follow = follow_up(alert, id);
                follow.tasks[0].cause = cause.into();
                follow.tasks[0].title = format!("Other {}", alert.account_name);
                follow
            }
        };
        let second = |rule: &str| NewAlert {
            rule: rule.into(),
            reason: "Tier is red, renewal in 44 days".into(),
            ..alert("acct-1", 0)
        };
        conn.record_alerts(1_000, &[alert("acct-1", 0)], &follow_up)
            .unwrap();
        // Same account, same cause, another rule: the alert is recorded, its reason goes
        // on the open task, and no task is made.
        let ids = conn
            .record_alerts(2_000, &[second("red-near-renewal")], &other_rule("renewal"))
            .unwrap();
        assert!(ids[0].is_some());
        let tasks = conn.tasks(TaskFilter::default(), 10).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].title, "Call acct-1");
        assert_eq!(tasks[0].cause.as_deref(), Some("renewal"));
        assert_eq!(
            tasks[0].also,
            vec!["Tier is red, renewal in 44 days (red-near-renewal)".to_string()]
        );
        assert_eq!(tasks[0].updated_ms, 2_000);
        // Another cause makes its own task.
        conn.record_alerts(3_000, &[second("nps-detractor")], &other_rule("nps"))
            .unwrap();
        assert_eq!(conn.tasks(TaskFilter::default(), 10).unwrap().len(), 2);
        // Once the task is done, the cause makes a new one.
        conn.update_task(tasks[0].id, "done", None, None, 4_000)
            .unwrap();
        conn.record_alerts(5_000, &[second("renewal-late")], &other_rule("renewal"))
            .unwrap();
        let open = TaskFilter {
            status: Some("open"),
            ..TaskFilter::default()
        };
        let open = conn.tasks(open, 10).unwrap();
        assert_eq!(open.len(), 2);
        assert!(open.iter().all(|t| t.also.is_empty()));
    }

    #[test]
    fn the_outbox_hands_out_what_is_due_and_a_dead_letter_goes_back_in_line() {
        let (_dir, conn) = store();
        conn.record_alerts(1_000, &[alert("acct-1", 0)], &follow_up)
            .unwrap();
        let mut message = conn.due(1_000, 10).unwrap().pop().expect("due at once");
        message.status = "dead".into();
        message.attempts = 5;
        message.last_error = Some("webhook 127.0.0.1: refused".into());
        conn.mark(&message).unwrap();
        assert!(conn.due(10_000, 10).unwrap().is_empty());
        assert_eq!(conn.outbox("dead", 10).unwrap()[0].attempts, 5);
        assert!(conn.retry(message.id, 20_000).unwrap());
        assert!(!conn.retry(message.id, 20_000).unwrap(), "no longer dead");
        assert_eq!(conn.due(20_000, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_snoozed_task_wakes_on_its_day() {
        let (_dir, conn) = store();
        conn.record_alerts(1_000, &[alert("acct-1", 0)], &follow_up)
            .unwrap();
        let task = conn
            .tasks(TaskFilter::default(), 10)
            .unwrap()
            .pop()
            .unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert!(conn
            .update_task(task.id, "snoozed", Some(day(8)), None, 2_000)
            .unwrap());
        assert!(!conn
            .update_task(task.id + 100, "done", None, None, 2_000)
            .unwrap());
        conn.wake_snoozed(day(7)).unwrap();
        let snoozed = TaskFilter {
            status: Some("snoozed"),
            ..TaskFilter::default()
        };
        assert_eq!(conn.tasks(snoozed, 10).unwrap().len(), 1);
        conn.wake_snoozed(day(8)).unwrap();
        let open = TaskFilter {
            status: Some("open"),
            ..TaskFilter::default()
        };
        assert_eq!(conn.tasks(open, 10).unwrap().len(), 1);
        // A task made by hand: open, no alert, listed with the account's others by due day.
        let id = conn
            .add_task(&HandTask {
                account: "acct-1",
                csm: Some("csm-1"),
                title: "Plan the QBR",
                due: day(3),
                now_ms: 3_000,
            })
            .unwrap();
        let listed = conn.tasks(open, 10).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (
                listed[0].id,
                listed[0].alert_id,
                listed[0].title.as_str(),
                listed[0].csm.as_deref()
            ),
            (id, None, "Plan the QBR", Some("csm-1"))
        );
    }

    #[test]
    fn an_invitation_is_recorded_once_per_key_and_answered_once() {
        let (_dir, conn) = store();
        let send = NewSend {
            key: "nps-u-1-2026Q4".into(),
            user_id: "u-1".into(),
            account_id: "acct-1".into(),
            kind: "nps".into(),
            trigger: "quarterly",
            email: None,
        };
        let none = |_: &NewSend, _: i64| None;
        assert_eq!(
            conn.record_sends(1_000, std::slice::from_ref(&send), &none)
                .unwrap(),
            1
        );
        assert_eq!(
            conn.record_sends(2_000, &[send], &none).unwrap(),
            0,
            "same key"
        );
        let id = conn.pending_survey("u-1", 0).unwrap().expect("pending");
        assert_eq!(conn.sends_to(&["u-1"]).unwrap().len(), 1);
        assert_eq!(
            conn.survey_send(id).unwrap().map(|s| s.kind),
            Some("nps".into())
        );
        assert!(matches!(
            conn.answer(id, 9, Some("great"), 3_000).unwrap(),
            Answered::Stored(_)
        ));
        assert_eq!(
            conn.answer(id, 3, None, 4_000).unwrap(),
            Answered::AlreadyAnswered
        );
        assert_eq!(
            conn.answer(id + 100, 3, None, 4_000).unwrap(),
            Answered::NoSuchSurvey
        );
        assert_eq!(conn.pending_survey("u-1", 0).unwrap(), None);
    }

    #[test]
    fn users_sessions_secrets_and_tokens_round_trip() {
        let (_dir, conn) = store();
        let ana = User {
            username: "ana".into(),
            role: UserRole::Csm,
            csm_id: None,
        };
        assert!(conn.put_user(&ana, "hash-1", false).unwrap());
        assert!(
            !conn.put_user(&ana, "hash-2", false).unwrap(),
            "exists already"
        );
        assert_eq!(
            conn.user_row("ana")
                .unwrap()
                .map(|(_, hash)| hash)
                .as_deref(),
            Some("hash-1")
        );
        conn.open_session("digest-1", "ana", "csrf-1", 10_000)
            .unwrap();
        assert_eq!(
            conn.session_of("digest-1", 5_000)
                .unwrap()
                .map(|s| s.csrf)
                .as_deref(),
            Some("csrf-1")
        );
        assert!(
            conn.session_of("digest-1", 10_001).unwrap().is_none(),
            "expired"
        );
        conn.end_session("digest-1").unwrap();
        assert!(conn.session_of("digest-1", 5_000).unwrap().is_none());
        let first = conn.secret_or("share", [1; 32]).unwrap();
        assert_eq!(
            conn.secret_or("share", [2; 32]).unwrap(),
            first,
            "the first stored wins"
        );
        assert!(conn.remove_user("ana").unwrap());
        assert!(conn.users().unwrap().is_empty());
        let secret = conn.add_token("ci", Role::Read, None).unwrap();
        assert_eq!(super::token_role(&conn, &secret).unwrap(), Some(Role::Read));
        let id = conn.tokens().unwrap()[0].id;
        assert!(conn.revoke_token(id).unwrap());
        assert_eq!(super::token_role(&conn, &secret).unwrap(), None);
    }
}
