//! `bellwether backup` and `restore` on ClickHouse: every table of the database in one
//! file, each table's rows in ClickHouse's Native format (aggregate states included).
//!
//! The file: a header line, then per table `table NAME\n` and its data in chunks, each
//! `LENGTH\n` and that many bytes, closed by `0\n`; `end\n` closes the file. It is written
//! beside the target and renamed into place once complete and synced.
//!
//! ClickHouse has no snapshot across tables. The `activity` rollups are copied first and
//! `events` last: every event whose activity the copy holds is in the copy too, and
//! restoring the events fills `activity` again through the materialized view, whose states
//! merge idempotently with the copied ones (distinct message ids, distinct minutes, min and
//! max), so the restored rollups are those of the restored events, plus those of the
//! events retention had dropped.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::Deserialize;

use super::{
    block_on, fetch_all, ClickHouse, INSERT_END_TIMEOUT, INSERT_SEND_TIMEOUT, ROLLUP_READ_TIMEOUT,
};
use crate::store::StoreError;

const HEADER: &str = "bellwether clickhouse backup 1";
/// The largest chunk a restore reads into memory at once.
const CHUNK_BYTES_MAX: usize = 256 << 20;
/// Chunks a backup writes are cut at about this size.
const CHUNK_BYTES: usize = 4 << 20;

/// What a restore put back, table by table (rows as ClickHouse counts them after it).
#[derive(Debug, Default)]
pub struct Restored {
    pub tables: Vec<(String, u64)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Schema {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A table name as the file may carry it.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl ClickHouse {
    /// The tables that hold rows (not views), `activity` first and `events` last.
    async fn tables(&self) -> Result<Vec<String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Table {
            name: String,
        }
        let query = self
            .client
            .query("SELECT name FROM system.tables WHERE database = ? AND engine NOT LIKE '%View' ORDER BY name")
            .bind(self.location.database.as_str());
        let mut names: Vec<String> = fetch_all::<Table>(query, "the database's tables")
            .await?
            .into_iter()
            .map(|t| t.name)
            .filter(|n| plain_name(n))
            .collect();
        let rank = |name: &str| match name {
            "activity" => 0,
            "events" => 2,
            _ => 1,
        };
        names.sort_by_key(|n| rank(n));
        Ok(names)
    }

    /// Writes every table's rows to `target` (which must not exist); its size in bytes.
    pub async fn backup(&self, target: &Path) -> Result<u64, StoreError> {
        if target.exists() {
            return Err(io(target)(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists; choose a new file",
            )));
        }
        let partial = target.with_extension("partial");
        let written = self.write_backup(&partial).await;
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        std::fs::rename(&partial, target).map_err(io(target))?;
        std::fs::metadata(target)
            .map(|m| m.len())
            .map_err(io(target))
    }

    async fn write_backup(&self, partial: &Path) -> Result<(), StoreError> {
        let file = std::fs::File::create(partial).map_err(io(partial))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{HEADER}").map_err(io(partial))?;
        let deadline = tokio::time::Instant::now() + ROLLUP_READ_TIMEOUT;
        for table in self.tables().await? {
            writeln!(out, "table {table}").map_err(io(partial))?;
            let mut cursor = self
                .client
                .query(&format!("SELECT * FROM {table}"))
                .fetch_bytes("Native")
                .map_err(|e| super::error("backup", e))?;
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let next = tokio::time::timeout_at(deadline, cursor.next())
                    .await
                    .map_err(|_| {
                        StoreError::ClickHouse(format!(
                            "backup of {table}: not read within {} s",
                            ROLLUP_READ_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| super::error(&format!("backup of {table}"), e))?;
                let done = next.is_none();
                if let Some(bytes) = next {
                    pending.extend_from_slice(&bytes);
                }
                if !pending.is_empty() && (done || pending.len() >= CHUNK_BYTES) {
                    writeln!(out, "{}", pending.len()).map_err(io(partial))?;
                    out.write_all(&pending).map_err(io(partial))?;
                    pending.clear();
                }
                if done {
                    break;
                }
            }
            writeln!(out, "0").map_err(io(partial))?;
        }
        writeln!(out, "end").map_err(io(partial))?;
        let file = out.into_inner().map_err(|e| io(partial)(e.into_error()))?;
        file.sync_all().map_err(io(partial))
    }

    /// Puts a backup's rows into this database, which must hold none yet (restore into a
    /// new database name). Refuses a file that is not such a backup, names a table this
    /// database lacks, or ends early; all but the last before writing anything. From a
    /// blocking thread inside a runtime (the CLI's).
    pub fn restore(&self, backup: &Path) -> Result<Restored, StoreError> {
        let tables = block_on(self.tables())??;
        // Read through once to check the frames and the tables, then again to insert.
        let listed = frames(backup, &mut |_, _| Ok(()))?;
        if let Some(table) = listed.iter().find(|t| !tables.contains(t)) {
            return Err(bad(
                backup,
                format!(
                    "the backup holds table {table}, which database {} lacks",
                    self.location.database
                ),
            ));
        }
        for table in &tables {
            let rows = block_on(self.rows(table))??;
            if rows > 0 {
                return Err(bad(backup, format!("database {} already holds data ({rows} rows in {table}): restore into a new database", self.location.database)));
            }
        }
        type Open = Option<(String, clickhouse::insert_formatted::InsertFormatted)>;
        let finish = |insert: &mut Open| -> Result<(), StoreError> {
            match insert.take() {
                Some((table, open)) => block_on(open.end())?
                    .map_err(|e| super::error(&format!("restore of {table}"), e)),
                None => Ok(()),
            }
        };
        let mut insert: Open = None;
        frames(backup, &mut |table, chunk| {
            if insert.as_ref().is_none_or(|(t, _)| t != table) {
                finish(&mut insert)?;
                let open = self
                    .client
                    .insert_formatted_with(format!("INSERT INTO {table} FORMAT Native"))
                    .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
                insert = Some((table.to_string(), open));
            }
            let (_, open) = insert.as_mut().expect("invariant: opened above");
            block_on(open.send(chunk.to_vec().into()))?
                .map_err(|e| super::error(&format!("restore of {table}"), e))
        })?;
        finish(&mut insert)?;
        let mut restored = Restored::default();
        for table in listed {
            let rows = block_on(self.rows(&table))??;
            restored.tables.push((table, rows));
        }
        Ok(restored)
    }

    async fn rows(&self, table: &str) -> Result<u64, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Count {
            n: u64,
        }
        let counted = fetch_all::<Count>(
            self.client
                .query(&format!("SELECT count() AS n FROM {table}")),
            "row count",
        )
        .await?;
        Ok(counted.first().map_or(0, |c| c.n))
    }
}

/// Takes one chunk of a table's rows from a backup file.
type ChunkSink<'a> = dyn FnMut(&str, &[u8]) -> Result<(), StoreError> + 'a;

/// Reads a backup file's frames, handing each non-empty chunk to `chunk(table, bytes)`;
/// the tables in order. Fails, naming the file, on anything that is not such a backup.
fn frames(path: &Path, chunk: &mut ChunkSink) -> Result<Vec<String>, StoreError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut input = BufReader::new(file);
    let mut line = String::new();
    let read_line =
        |input: &mut BufReader<std::fs::File>, line: &mut String| -> Result<(), StoreError> {
            line.clear();
            // A frame line is short: a longer one means this is not a backup.
            (&mut *input).take(256).read_line(line).map_err(io(path))?;
            if !line.ends_with('\n') {
                return Err(bad(
                    path,
                    "not a bellwether ClickHouse backup, or it ends early",
                ));
            }
            line.pop();
            Ok(())
        };
    read_line(&mut input, &mut line)?;
    if line != HEADER {
        return Err(bad(
            path,
            format!("not a bellwether ClickHouse backup (its first line is not {HEADER:?})"),
        ));
    }
    let mut tables = Vec::new();
    let mut buffer = Vec::new();
    loop {
        read_line(&mut input, &mut line)?;
        if line == "end" {
            return Ok(tables);
        }
        let Some(table) = line
            .strip_prefix("table ")
            .filter(|t| plain_name(t))
            .map(str::to_string)
        else {
            return Err(bad(
                path,
                format!("unexpected line {line:?} where a table begins"),
            ));
        };
        loop {
            read_line(&mut input, &mut line)?;
            let length: usize = line.parse().map_err(|_| {
                bad(
                    path,
                    format!("table {table}: {line:?} is not a chunk length"),
                )
            })?;
            if length == 0 {
                break;
            }
            if length > CHUNK_BYTES_MAX {
                return Err(bad(path, format!("table {table}: a chunk of {length} bytes is over the {CHUNK_BYTES_MAX} a backup writes")));
            }
            buffer.resize(length, 0);
            input
                .read_exact(&mut buffer)
                .map_err(|_| bad(path, format!("table {table}: the file ends inside a chunk")))?;
            chunk(&table, &buffer)?;
        }
        tables.push(table);
    }
}
