//! The ClickHouse schema: every table and view, created idempotently at start, the
//! columns added since, and the one-time removal of stored write keys.

use serde::Deserialize;

use super::{execute, fetch_all, run};
use crate::records::{ColumnType, Kind};
use crate::store::StoreError;

/// Every schema statement, each idempotent. `v` is the first column written: RowBinary
/// data must not start with a whitespace byte on servers before 22.6 (ClickHouse issue
/// 37420), and it is always 1.
pub(super) const SCHEMA: &[&str] = &[
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
        kind       String DEFAULT 'note',
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
    // Settings changed on the dashboard (deleted: 1 once back to the config file's).
    "CREATE TABLE IF NOT EXISTS {db}.settings (
        name    String,
        value   String,
        deleted UInt8,
        version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY name",
    // People's roles on accounts ('' once cleared) and users' saved views (deleted: 1).
    "CREATE TABLE IF NOT EXISTS {db}.contact_roles (
        account_id String,
        user_id    String,
        role       String,
        version    UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (account_id, user_id)",
    "CREATE TABLE IF NOT EXISTS {db}.saved_views (
        username String,
        page     String,
        name     String,
        query    String,
        deleted  UInt8,
        version  UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (username, page, name)",
    // Review share links; a revocation is a newer version (revoked_ms 0: not revoked).
    "CREATE TABLE IF NOT EXISTS {db}.share_links (
        id         Int64,
        account_id String,
        quarter    String,
        created_by String,
        created_ms Int64,
        expires_ms Int64,
        revoked_ms Int64,
        version    UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY id",
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
pub(super) fn record_table(kind: &Kind, database: &str) -> String {
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

/// Columns added to tables after they were first created, as (table, column, type): added
/// at start where missing (18.16 has no `ADD COLUMN IF NOT EXISTS`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("health_history", "raw_tier", "Nullable(String)"),
    ("health_history", "raw_since", "Nullable(Int32)"),
    ("tier_changes", "cause", "String DEFAULT 'usage'"),
    ("notes", "kind", "String DEFAULT 'note'"),
    ("review_goals", "hidden", "String DEFAULT ''"),
    ("review_goals", "targets", "String DEFAULT '{}'"),
];

pub(super) async fn add_columns(
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
pub(super) async fn strip_write_keys(
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
