//! Schema migrations, applied in order at start. `PRAGMA user_version` records how many
//! have run. A migration is never edited once released: add a new one instead.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: raw events, identities, accounts, API tokens.
    r#"
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,   -- assigned by the single writer, in commit order
        received_ms  INTEGER NOT NULL,
        source       TEXT NOT NULL,         -- source name of the write key
        message_id   TEXT NOT NULL,
        type         TEXT NOT NULL,         -- track identify group page screen alias
        user_id      TEXT,
        anonymous_id TEXT,
        group_id     TEXT,                  -- groupId of a group call, else context.groupId
        event        TEXT,                  -- track event, page/screen name
        timestamp_ms INTEGER NOT NULL,      -- after clock-skew correction
        raw          TEXT NOT NULL          -- the message exactly as received
    );
    -- No index on received_ms: ids follow receive order, so time ranges are found by
    -- binary search on id (store::sqlite::first_id_received_since); every index costs each insert.

    CREATE TABLE users (
        user_id       TEXT PRIMARY KEY,
        traits        TEXT NOT NULL DEFAULT '{}',
        traits_ms     INTEGER NOT NULL,     -- timestamp of the newest identify merged in
        first_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE user_traits (               -- every identify, for trait history
        user_id      TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        event_id     INTEGER NOT NULL,
        traits       TEXT NOT NULL
    );
    CREATE INDEX user_traits_user ON user_traits(user_id, timestamp_ms);

    -- Records (see records.rs for the meaning of every column). Date-times are TEXT in
    -- RFC 3339 UTC with milliseconds, dates TEXT YYYY-MM-DD: both sort as text.
    CREATE TABLE csms (
        csm_id TEXT PRIMARY KEY, name TEXT, email TEXT,
        traits TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        name       TEXT,
        parent_id  TEXT,
        segment    TEXT,
        plan       TEXT,
        csm        TEXT,
        timezone   TEXT,
        created_at TEXT,
        traits     TEXT NOT NULL DEFAULT '{}',
        traits_ms  INTEGER NOT NULL DEFAULT 0   -- timestamp of the newest group call merged in
    );
    CREATE INDEX accounts_parent ON accounts(parent_id);
    CREATE TABLE account_traits (
        account_id   TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        event_id     INTEGER NOT NULL,
        traits       TEXT NOT NULL
    );
    CREATE INDEX account_traits_account ON account_traits(account_id, timestamp_ms);
    CREATE TABLE subscriptions (
        subscription_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL, product TEXT, plan TEXT, seats INTEGER, arr REAL, currency TEXT,
        start_date TEXT NOT NULL, end_date TEXT, status TEXT, outcome TEXT,
        provisioned_at TEXT, go_live_at TEXT,
        traits TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX subscriptions_account ON subscriptions(account_id);
    CREATE TABLE tickets (
        ticket_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL, user_id TEXT, type TEXT, priority TEXT,
        opened_at TEXT NOT NULL, first_response_at TEXT, resolved_at TEXT, escalated INTEGER NOT NULL DEFAULT 0,
        traits TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX tickets_account ON tickets(account_id);
    CREATE TABLE survey_responses (
        response_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL, user_id TEXT, kind TEXT NOT NULL, score INTEGER NOT NULL,
        comment TEXT, answered_at TEXT NOT NULL, trigger TEXT,
        traits TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX survey_responses_account ON survey_responses(account_id);
    CREATE INDEX survey_responses_user ON survey_responses(user_id);
    CREATE TABLE suggestions (
        suggestion_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL, user_id TEXT, title TEXT NOT NULL, category TEXT, status TEXT,
        created_at TEXT NOT NULL,
        traits TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX suggestions_account ON suggestions(account_id);
    CREATE TABLE kpis (
        account_id TEXT NOT NULL, name TEXT NOT NULL, date TEXT NOT NULL, value REAL NOT NULL,
        traits TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (account_id, name, date)
    );

    -- Who belonged to which account from when on: history, never overwritten.
    CREATE TABLE memberships (
        user_id      TEXT,
        anonymous_id TEXT,
        account_id   TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        event_id     INTEGER NOT NULL
    );
    CREATE INDEX memberships_user ON memberships(user_id, timestamp_ms);
    CREATE INDEX memberships_anonymous ON memberships(anonymous_id, timestamp_ms);

    -- previous_id (an anonymousId, or an older userId) now known as user_id: from alias
    -- calls and from identify calls carrying both ids.
    CREATE TABLE identity_links (
        previous_id  TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        event_id     INTEGER NOT NULL
    );
    CREATE INDEX identity_links_previous ON identity_links(previous_id, timestamp_ms);

    CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('admin', 'read')),
        token_sha256 TEXT NOT NULL UNIQUE,
        created_ms   INTEGER NOT NULL
    );
    "#,
    // 2: per-user-per-day rollups (store::sqlite::rollup) and the indexes that find one person's
    // events when their identity or membership changes after the fact.
    r#"
    CREATE INDEX events_user ON events(user_id, timestamp_ms);
    CREATE INDEX events_anonymous ON events(anonymous_id, timestamp_ms);
    CREATE INDEX identity_links_user ON identity_links(user_id);

    -- One row per account, local day (days since 1970-01-01 in the account's timezone)
    -- and person (the canonical userId). Minute lists are sorted distinct UTC minutes
    -- (minutes since the epoch) as little-endian u32.
    CREATE TABLE user_days (
        account_id    TEXT NOT NULL,
        day           INTEGER NOT NULL,
        user_id       TEXT NOT NULL,
        events        INTEGER NOT NULL,   -- activity events (track, page, screen; not passive)
        logins        INTEGER NOT NULL,
        sessions      INTEGER NOT NULL,   -- runs of activity split by the idle timeout
        transactions  INTEGER NOT NULL,   -- feature events
        education     INTEGER NOT NULL,
        minutes_count INTEGER NOT NULL,
        minutes       BLOB NOT NULL,
        login_minutes BLOB NOT NULL,
        key_minutes   BLOB NOT NULL,
        first_ms      INTEGER NOT NULL,
        last_ms       INTEGER NOT NULL,
        PRIMARY KEY (account_id, day, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX user_days_user ON user_days(user_id);
    CREATE TABLE user_day_features (
        account_id TEXT NOT NULL,
        day        INTEGER NOT NULL,
        user_id    TEXT NOT NULL,
        feature    TEXT NOT NULL,
        uses       INTEGER NOT NULL,
        PRIMARY KEY (account_id, day, user_id, feature)
    ) WITHOUT ROWID;
    CREATE INDEX user_day_features_user ON user_day_features(user_id);
    -- First day each account used each feature (kept equal to min(day) of user_day_features).
    CREATE TABLE account_features (
        account_id TEXT NOT NULL,
        feature    TEXT NOT NULL,
        first_day  INTEGER NOT NULL,
        PRIMARY KEY (account_id, feature)
    ) WITHOUT ROWID;
    -- The timezone each account's days were cut with; a change rebuilds its rows.
    CREATE TABLE rollup_accounts (
        account_id TEXT PRIMARY KEY,
        timezone   TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE rollup_state (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_id INTEGER NOT NULL,   -- every event up to this id is in the rollups
        fingerprint   TEXT NOT NULL       -- MetricsConfig::rollup_fingerprint they were built with ('': none)
    );
    INSERT INTO rollup_state VALUES (1, 0, '');
    "#,
    // 3: health models, daily score and tier history, tier changes.
    r#"
    CREATE TABLE health_models (
        id         INTEGER PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        as_of      TEXT NOT NULL,      -- renewals decided before this day trained it
        reason     TEXT NOT NULL,      -- schedule, manual, first start
        body       TEXT NOT NULL       -- JSON: per segment indicators, power feature, cut points, buckets
    );
    CREATE TABLE health_history (
        account_id    TEXT NOT NULL,
        day           INTEGER NOT NULL,
        engagement    REAL,                -- engagement_score (0-100, within the segment)
        score         REAL,
        band          TEXT,
        tier          TEXT,
        expected_rate REAL,
        monthly_uses  REAL,
        model_id      INTEGER NOT NULL,
        PRIMARY KEY (account_id, day)
    ) WITHOUT ROWID;
    CREATE INDEX health_history_day ON health_history(day);
    CREATE TABLE tier_changes (
        id         INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        day        INTEGER NOT NULL,
        from_tier  TEXT NOT NULL,
        to_tier    TEXT NOT NULL,
        model_id   INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX tier_changes_account ON tier_changes(account_id, day);
    "#,
    // 4: dashboard users and sessions, the server's signing secret, quarterly review goals.
    r#"
    CREATE TABLE dashboard_users (
        username      TEXT PRIMARY KEY,
        role          TEXT NOT NULL,       -- admin, csm, viewer
        csm_id        TEXT,                -- the csms record a CSM user is ("my accounts")
        password_hash TEXT NOT NULL,       -- argon2id PHC string
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE web_sessions (
        token_sha256 TEXT PRIMARY KEY,     -- the cookie's secret is never stored
        username     TEXT NOT NULL,       -- deleted with the user
        csrf         TEXT NOT NULL,
        expires_ms   INTEGER NOT NULL
    );
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE review_goals (
        account_id TEXT NOT NULL,
        quarter    TEXT NOT NULL,          -- 2026-Q3
        goals      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (account_id, quarter)
    ) WITHOUT ROWID;
    "#,
    // 5: actions: API-made rules, alerts, the outbox, CSM tasks, survey sends.
    r#"
    CREATE TABLE rules (
        name       TEXT PRIMARY KEY,
        body       TEXT NOT NULL,          -- JSON of actions::Rule
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE alerts (
        id         INTEGER PRIMARY KEY,
        rule       TEXT NOT NULL,
        account_id TEXT NOT NULL,
        fired_ms   INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        measures   TEXT NOT NULL           -- JSON: the account's measures when it fired
    );
    CREATE INDEX alerts_rule_account ON alerts(rule, account_id, fired_ms);
    -- Written in the transaction that decides to send; the worker sends and marks.
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        alert_id        INTEGER,
        channel         TEXT NOT NULL,
        kind            TEXT NOT NULL,     -- slack, webhook, email
        target          TEXT NOT NULL,     -- URL or address
        subject         TEXT,
        body            TEXT NOT NULL,
        status          TEXT NOT NULL,     -- pending, sent, dead
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_error      TEXT,
        created_ms      INTEGER NOT NULL,
        sent_ms         INTEGER
    );
    CREATE INDEX outbox_due ON outbox(status, next_attempt_ms);
    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY,
        account_id    TEXT NOT NULL,
        alert_id      INTEGER,
        csm           TEXT,                -- the account's CSM when it was made
        title         TEXT NOT NULL,
        status        TEXT NOT NULL,       -- open, snoozed, done
        due           TEXT,                -- YYYY-MM-DD
        snoozed_until TEXT,                -- YYYY-MM-DD
        created_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    );
    CREATE INDEX tasks_account ON tasks(account_id);
    CREATE TABLE survey_sends (
        id          INTEGER PRIMARY KEY,
        key         TEXT NOT NULL UNIQUE,  -- the occasion and person (actions::surveys::Trigger::key)
        user_id     TEXT NOT NULL,
        account_id  TEXT NOT NULL,
        kind        TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        delivery    TEXT NOT NULL,         -- email or snippet
        sent_ms     INTEGER NOT NULL,
        answered_ms INTEGER,
        response_id TEXT
    );
    CREATE INDEX survey_sends_user ON survey_sends(user_id, sent_ms);
    "#,
    // 6: listening: churn reasons and feedback, ticket subjects, CSM notes.
    r#"
    ALTER TABLE subscriptions ADD COLUMN reason TEXT;
    ALTER TABLE subscriptions ADD COLUMN feedback TEXT;
    ALTER TABLE tickets ADD COLUMN subject TEXT;
    CREATE TABLE notes (
        id         INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        author     TEXT NOT NULL,          -- the dashboard user or API token name
        person     TEXT,                   -- the customer's person it is about, if any
        text       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX notes_account ON notes(account_id);
    "#,
    // 7: retention of raw events (store::sqlite::retention): rollup days before frozen_before_day
    // (a local day number) are kept as they are, their raw events may be gone; the frozen
    // rows hold every event of those days with id <= max(last_event_id, frozen_counted_to).
    r#"
    ALTER TABLE rollup_state ADD COLUMN frozen_before_day INTEGER;
    ALTER TABLE rollup_state ADD COLUMN frozen_counted_to INTEGER NOT NULL DEFAULT 0;
    "#,
    // 8: a person's events are found through person_events, which the rollup worker fills
    // in sorted batches, instead of two indexes on events that every ingest commit updated
    // at random places (they halved the ingest rate; see BENCHMARKS.md).
    r#"
    CREATE TABLE person_events (
        key TEXT NOT NULL,      -- a userId or anonymousId of the event (both, if it has both)
        id  INTEGER NOT NULL,   -- events.id
        PRIMARY KEY (key, id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO person_events (key, id) SELECT user_id, id FROM events WHERE user_id IS NOT NULL;
    INSERT OR IGNORE INTO person_events (key, id) SELECT anonymous_id, id FROM events WHERE anonymous_id IS NOT NULL;
    -- person_events holds every event up to this id.
    ALTER TABLE rollup_state ADD COLUMN indexed_to INTEGER NOT NULL DEFAULT 0;
    UPDATE rollup_state SET indexed_to = (SELECT coalesce(max(id), 0) FROM events);
    DROP INDEX events_user;
    DROP INDEX events_anonymous;
    "#,
    // 9: API tokens may expire.
    r#"
    ALTER TABLE api_tokens ADD COLUMN expires_ms INTEGER;   -- NULL: never
    "#,
    // 10: the rollup tables (made by 2, 7 and 8) live in their own file, rollups.db, so the
    // rollup worker's commits take that file's write lock and never the one ingest commits
    // under. The move needs that file attached and is done by `split_rollups` at every
    // open (it also adopts the tables of a restored backup); this version marks databases
    // an older bellwether must not open.
    "",
    // 11: write_lock, a one-row table whose no-op update takes bellwether.db's write lock
    // alone (store::sqlite::write_transaction); erased_ids, the ids of erased people whose rollup
    // rows are still to be purged (store::sqlite::records::delete_user, store::rollup).
    r#"
    CREATE TABLE write_lock (id INTEGER PRIMARY KEY CHECK (id = 1));
    INSERT INTO write_lock VALUES (1);
    CREATE TABLE erased_ids (key TEXT PRIMARY KEY) WITHOUT ROWID;
    "#,
    // 12: tiers that hold (health::hold): each history day keeps the day's own tier and
    // since when it has been that; tier changes say whether usage or a new model caused them.
    r#"
    ALTER TABLE health_history ADD COLUMN raw_tier TEXT;
    ALTER TABLE health_history ADD COLUMN raw_since INTEGER;
    ALTER TABLE tier_changes ADD COLUMN cause TEXT NOT NULL DEFAULT 'usage';
    "#,
    // 13: a writeKey sent in a message's body is a secret, no longer kept (ingest strips
    // it); earlier versions stored it in the raw text, removed here (those rows' text
    // comes back compact: SQLite's json_remove rewrites it).
    r#"
    UPDATE events SET raw = json_remove(raw, '$.writeKey')
    WHERE instr(raw, '"writeKey"') > 0 AND json_valid(raw) AND json_type(raw, '$.writeKey') IS NOT NULL;
    "#,
    // 14: activities: a note is one kind of what a CSM logs against an account, beside
    // calls, meetings and emails; created_ms is when it happened.
    r#"
    ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAULT 'note';
    "#,
    // 15: one task per account per cause: a rule's task knows what it is about, and the
    // reasons of later alerts with the same cause merge into it.
    r#"
    ALTER TABLE tasks ADD COLUMN cause TEXT;
    ALTER TABLE tasks ADD COLUMN also TEXT;
    CREATE INDEX tasks_account_cause ON tasks(account_id, cause);
    "#,
    // 16: reviews: sections hidden from the customer and KPI targets beside the goals;
    // share links kept so they can be listed and revoked.
    r#"
    ALTER TABLE review_goals ADD COLUMN hidden TEXT NOT NULL DEFAULT '';
    ALTER TABLE review_goals ADD COLUMN targets TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE share_links (
        id          INTEGER PRIMARY KEY,
        account_id  TEXT NOT NULL,
        quarter     TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        revoked_ms  INTEGER
    );
    CREATE INDEX share_links_account ON share_links(account_id);
    "#,
    // 17: people's roles on an account (champion, sponsor, admin, user) and the views
    // dashboard users save.
    r#"
    CREATE TABLE contact_roles (
        account_id TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        role       TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (account_id, user_id)
    );
    CREATE TABLE saved_views (
        username   TEXT NOT NULL,
        page       TEXT NOT NULL,
        name       TEXT NOT NULL,
        query      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (username, page, name)
    );
    CREATE INDEX memberships_account ON memberships(account_id, user_id);
    "#,
    // 18: settings changed on the dashboard instead of the config file (channels, the
    // survey policy), as JSON.
    r#"
    CREATE TABLE settings (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    "#,
];

/// The tables of `rollups.db`, attached to every connection as `rollups` (unqualified names
/// find them): per-user-day rollups, the person index and the rollup cursor. All derived
/// from the events, except days frozen by retention (see `store::sqlite::retention`).
pub(crate) const ROLLUP_TABLES: &[&str] = &[
    "user_days",
    "user_day_features",
    "account_features",
    "rollup_accounts",
    "rollup_state",
    "person_events",
    "pruned_ids",
];

/// The schema of `rollups.db` (its `user_version` 1); column order as in the main file's
/// tables before version 10, so that rows move over unchanged.
const ROLLUPS_SCHEMA: &str = r#"
    -- One row per account, local day (days since 1970-01-01 in the account's timezone)
    -- and person (the canonical userId). Minute lists are sorted distinct UTC minutes
    -- (minutes since the epoch) as little-endian u32.
    CREATE TABLE IF NOT EXISTS rollups.user_days (
        account_id    TEXT NOT NULL,
        day           INTEGER NOT NULL,
        user_id       TEXT NOT NULL,
        events        INTEGER NOT NULL,   -- activity events (track, page, screen; not passive)
        logins        INTEGER NOT NULL,
        sessions      INTEGER NOT NULL,   -- runs of activity split by the idle timeout
        transactions  INTEGER NOT NULL,   -- feature events
        education     INTEGER NOT NULL,
        minutes_count INTEGER NOT NULL,
        minutes       BLOB NOT NULL,
        login_minutes BLOB NOT NULL,
        key_minutes   BLOB NOT NULL,
        first_ms      INTEGER NOT NULL,
        last_ms       INTEGER NOT NULL,
        PRIMARY KEY (account_id, day, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rollups.user_days_user ON user_days(user_id);
    CREATE TABLE IF NOT EXISTS rollups.user_day_features (
        account_id TEXT NOT NULL,
        day        INTEGER NOT NULL,
        user_id    TEXT NOT NULL,
        feature    TEXT NOT NULL,
        uses       INTEGER NOT NULL,
        PRIMARY KEY (account_id, day, user_id, feature)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rollups.user_day_features_user ON user_day_features(user_id);
    -- First day each account used each feature (kept equal to min(day) of user_day_features).
    CREATE TABLE IF NOT EXISTS rollups.account_features (
        account_id TEXT NOT NULL,
        feature    TEXT NOT NULL,
        first_day  INTEGER NOT NULL,
        PRIMARY KEY (account_id, feature)
    ) WITHOUT ROWID;
    -- The timezone each account's days were cut with; a change rebuilds its rows.
    CREATE TABLE IF NOT EXISTS rollups.rollup_accounts (
        account_id TEXT PRIMARY KEY,
        timezone   TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rollups.rollup_state (
        id                INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_id     INTEGER NOT NULL,   -- every event up to this id is in the rollups
        fingerprint       TEXT NOT NULL,      -- MetricsConfig::rollup_fingerprint they were built with ('': none)
        frozen_before_day INTEGER,            -- retention: days before this local day are frozen
        frozen_counted_to INTEGER NOT NULL DEFAULT 0,   -- frozen rows hold every event up to here
        indexed_to        INTEGER NOT NULL DEFAULT 0,   -- person_events holds every event up to here
        pruned_known      INTEGER NOT NULL DEFAULT 0    -- 1: pruned_ids lists every id retention dropped events of
    );
    INSERT OR IGNORE INTO rollups.rollup_state (id, last_event_id, fingerprint, pruned_known) VALUES (1, 0, '', 1);
    -- Ids (userId or anonymousId) some of whose raw events retention dropped: only their
    -- people keep frozen rows through a recompute (store::sqlite::rollup).
    CREATE TABLE IF NOT EXISTS rollups.pruned_ids (
        key TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    -- A person's events up to rollup_state.indexed_to: the rollup worker writes them in
    -- batches (store::sqlite::rollup::INDEX_EVERY); newer ones are found by reading the events after it.
    CREATE TABLE IF NOT EXISTS rollups.person_events (
        key TEXT NOT NULL,      -- a userId or anonymousId of the event (both, if it has both)
        id  INTEGER NOT NULL,   -- events.id
        PRIMARY KEY (key, id)
    ) WITHOUT ROWID;
"#;
const ROLLUPS_VERSION: i64 = 2;

/// Creates the tables of the attached `rollups` file if missing, and moves into it any
/// rollup table the main file still holds (a database from before version 10, or a
/// restored backup, which carries them in its one file): those rows replace the file's.
/// One transaction. A missing `rollups.db` beside existing events is recreated empty and
/// the rollup worker rebuilds it from the raw events.
pub fn split_rollups(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let version: i64 = conn.query_row("PRAGMA rollups.user_version", [], |r| r.get(0))?;
    if version > ROLLUPS_VERSION {
        return Ok(Err(format!("rollups.db schema version {version} is newer than this bellwether understands ({ROLLUPS_VERSION}); upgrade bellwether")));
    }
    let in_main: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM main.sqlite_master WHERE type = 'table' AND name IN ('{}')",
            ROLLUP_TABLES.join("', '")
        ),
        [],
        |r| r.get(0),
    )?;
    if version == ROLLUPS_VERSION && in_main == 0 {
        return Ok(Ok(())); // the usual open: nothing to write, so no lock to wait for
    }
    // The tables (each statement idempotent), then two transactions locked as every writer
    // locks (store::sqlite::write_transaction): the copy into rollups.db commits first, then the
    // tables leave bellwether.db. A commit writing both files is not atomic; stopped between
    // the two, the next open copies again.
    // Version 2 added pruned_ids and rollup_state.pruned_known (set below).
    let has_state: bool = conn.query_row(
        "SELECT count(*) > 0 FROM rollups.sqlite_master WHERE name = 'rollup_state'",
        [],
        |r| r.get(0),
    )?;
    let has_known: bool = conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('rollup_state', 'rollups') WHERE name = 'pruned_known'", [], |r| r.get(0))?;
    if has_state && !has_known {
        conn.execute_batch(
            "ALTER TABLE rollups.rollup_state ADD COLUMN pruned_known INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    conn.execute_batch(ROLLUPS_SCHEMA)?;
    let moved: Vec<&str> = {
        let tx =
            crate::store::sqlite::write_transaction(conn, crate::store::sqlite::Lock::Rollups)?;
        tx.pragma_update(Some("rollups"), "user_version", ROLLUPS_VERSION)?;
        let mut moved = Vec::new();
        for &table in ROLLUP_TABLES {
            let in_main: bool = tx.query_row(
                "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            if !in_main {
                continue;
            }
            let columns: Vec<String> = tx
                .prepare("SELECT name FROM pragma_table_info(?1, 'main')")?
                .query_map([table], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let columns = columns.join(", ");
            tx.execute_batch(&format!(
                "DELETE FROM rollups.{table}; INSERT INTO rollups.{table} ({columns}) SELECT {columns} FROM main.{table};"
            ))?;
            moved.push(table);
        }
        // The list of pruned ids (empty if none was copied) is complete if retention never
        // ran; else only if the copied state says so.
        tx.execute(
            "UPDATE rollups.rollup_state SET pruned_known = 1 WHERE frozen_before_day IS NULL",
            [],
        )?;
        tx.commit()?;
        moved
    };
    if !moved.is_empty() {
        let tx = crate::store::sqlite::write_transaction(conn, crate::store::sqlite::Lock::Main)?;
        for table in &moved {
            tx.execute_batch(&format!("DROP TABLE main.{table};"))?;
        }
        tx.commit()?;
        tracing::info!(tables = ?moved, "moved the rollup tables into rollups.db");
    }
    Ok(Ok(()))
}

/// The schema version this binary writes.
pub const VERSION: usize = MIGRATIONS.len();

/// Runs the migrations not yet applied, each in its own transaction. A database written by
/// a newer bellwether is refused rather than misread.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > VERSION {
        return Ok(Err(format!(
            "database schema version {current} is newer than this bellwether understands ({VERSION}); upgrade bellwether"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied schema migration");
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_13_removes_write_keys_from_stored_events() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("bellwether.db")).unwrap();
            for sql in &MIGRATIONS[..12] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 12).unwrap();
            conn.execute_batch(
                r#"INSERT INTO events (id, received_ms, source, message_id, type, user_id, timestamp_ms, raw) VALUES
                   (1, 0, 's', 'm1', 'track', 'u', 0, '{"writeKey":"secret","userId":"u","event":"E"}'),
                   (2, 0, 's', 'm2', 'track', 'u', 0, '{"userId":"u", "event":"E","properties":{"writeKey":"kept"}}');"#,
            )
            .unwrap();
        }
        let conn = crate::store::sqlite::Store::open(dir.path())
            .unwrap()
            .connect()
            .unwrap();
        let raws: Vec<String> = conn
            .prepare("SELECT raw FROM events ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            raws,
            vec![
                r#"{"userId":"u","event":"E"}"#.to_string(),
                r#"{"userId":"u", "event":"E","properties":{"writeKey":"kept"}}"#.to_string()
            ]
        );
    }

    #[test]
    fn opening_a_database_from_before_version_10_moves_its_rollups_into_rollups_db() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("bellwether.db")).unwrap();
            for sql in &MIGRATIONS[..9] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 9).unwrap();
            conn.execute_batch(
                "INSERT INTO user_days VALUES ('acme', 20000, 'u1', 3, 1, 1, 2, 0, 2, x'01', x'', x'', 10, 20);
                 INSERT INTO user_day_features VALUES ('acme', 20000, 'u1', 'Report Created', 2);
                 INSERT INTO account_features VALUES ('acme', 'Report Created', 20000);
                 INSERT INTO rollup_accounts VALUES ('acme', 'Europe/Stockholm');
                 INSERT INTO person_events VALUES ('u1', 7);
                 UPDATE rollup_state SET last_event_id = 7, fingerprint = 'f', frozen_before_day = 19990, frozen_counted_to = 5, indexed_to = 7;",
            )
            .unwrap();
        }
        for _ in 0..2 {
            // The second open finds nothing to move and changes nothing.
            let conn = crate::store::sqlite::Store::open(dir.path())
                .unwrap()
                .connect()
                .unwrap();
            let version: i64 = conn
                .query_row("PRAGMA main.user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, VERSION as i64);
            let left: i64 = conn
                .query_row("SELECT count(*) FROM main.sqlite_master WHERE name IN ('user_days', 'user_day_features', 'account_features', 'rollup_accounts', 'rollup_state', 'person_events')", [], |r| r.get(0))
                .unwrap();
            assert_eq!(left, 0, "no rollup table left in bellwether.db");
            // Retention ran before pruned ids were noted: every frozen row stays frozen.
            let state: (i64, String, Option<i64>, i64, i64, bool) = conn
                .query_row(
                    "SELECT last_event_id, fingerprint, frozen_before_day, frozen_counted_to, indexed_to, pruned_known FROM rollups.rollup_state",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .unwrap();
            assert_eq!(state, (7, "f".to_string(), Some(19990), 5, 7, false));
            let day: (String, i64, String, i64, i64, Vec<u8>, i64) = conn
                .query_row("SELECT account_id, day, user_id, events, transactions, minutes, last_ms FROM rollups.user_days", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })
                .unwrap();
            assert_eq!(
                day,
                (
                    "acme".to_string(),
                    20000,
                    "u1".to_string(),
                    3,
                    2,
                    vec![1],
                    20
                )
            );
            let others: (i64, i64, String, i64) = conn
                .query_row(
                    "SELECT (SELECT uses FROM rollups.user_day_features), (SELECT first_day FROM rollups.account_features),
                            (SELECT timezone FROM rollups.rollup_accounts), (SELECT id FROM rollups.person_events WHERE key = 'u1')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            assert_eq!(others, (2, 20000, "Europe/Stockholm".to_string(), 7));
        }
    }

    #[test]
    fn a_version_1_rollups_file_knows_its_pruned_ids_only_if_retention_never_ran() {
        for (frozen_before_day, known) in [(None, true), (Some(19990), false)] {
            let dir = tempfile::tempdir().unwrap();
            drop(crate::store::sqlite::Store::open(dir.path()).unwrap());
            {
                // Back to rollups.db as version 1 wrote it.
                let conn = Connection::open(dir.path().join("rollups.db")).unwrap();
                conn.execute_batch(
                    "DROP TABLE pruned_ids;
                     DROP TABLE rollup_state;
                     CREATE TABLE rollup_state (
                         id INTEGER PRIMARY KEY CHECK (id = 1), last_event_id INTEGER NOT NULL, fingerprint TEXT NOT NULL,
                         frozen_before_day INTEGER, frozen_counted_to INTEGER NOT NULL DEFAULT 0, indexed_to INTEGER NOT NULL DEFAULT 0);
                     PRAGMA user_version = 1;",
                )
                .unwrap();
                conn.execute("INSERT INTO rollup_state (id, last_event_id, fingerprint, frozen_before_day) VALUES (1, 0, '', ?1)", [frozen_before_day])
                    .unwrap();
            }
            let conn = crate::store::sqlite::Store::open(dir.path())
                .unwrap()
                .connect()
                .unwrap();
            let state: (Option<i64>, bool, i64) = conn
                .query_row(
                    "SELECT frozen_before_day, pruned_known, (SELECT count(*) FROM rollups.pruned_ids) FROM rollups.rollup_state",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!(state, (frozen_before_day, known, 0));
            let version: i64 = conn
                .query_row("PRAGMA rollups.user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, ROLLUPS_VERSION);
        }
    }

    #[test]
    fn migration_8_indexes_the_events_already_stored_and_drops_the_old_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        let insert = "INSERT INTO events (id, received_ms, source, message_id, type, user_id, anonymous_id, timestamp_ms, raw)
                      VALUES (?1, 0, 'web', ?1, 'track', ?2, ?3, 0, '{}')";
        for (id, user, anonymous) in [
            (1, Some("u1"), None),
            (2, None, Some("a1")),
            (3, Some("u1"), Some("a1")),
            (5, Some("u2"), None),
        ] {
            conn.execute(insert, rusqlite::params![id, user, anonymous])
                .unwrap();
        }
        migrate(&mut conn).unwrap().unwrap();
        let keys: Vec<(String, i64)> = conn
            .prepare("SELECT key, id FROM person_events ORDER BY key, id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [("a1", 2), ("a1", 3), ("u1", 1), ("u1", 3), ("u2", 5)]
            .map(|(k, i)| (k.to_string(), i));
        assert_eq!(keys, expected);
        let indexed_to: i64 = conn
            .query_row("SELECT indexed_to FROM rollup_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexed_to, 5);
        let old_indexes: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('events_user', 'events_anonymous')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old_indexes, 0);
    }
}
