//! [`Backend`]: the configured storage, opened. The one place that tells the embedded store
//! and ClickHouse apart: every caller outside `store` goes through its methods, and the
//! capabilities it hands out ([`Storage`]) are the same traits on both.

use std::path::Path;

use super::clickhouse::{self, ClickHouse};
use super::sqlite::{self, Store};
use super::{EventFilter, Pruned, Role, Storage, StoreError, StoredEvent, UserDeletion};
use crate::config::StoreLocation;
use crate::ingest::queue::JobReceiver;
use crate::metrics::config::MetricsConfig;
use crate::telemetry::Telemetry;

/// The embedded store (two SQLite files in the data directory) or a ClickHouse database.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded(Store),
    /// Boxed: the client with its settings is some 400 bytes against the path's 24.
    ClickHouse(Box<ClickHouse>),
}

impl Backend {
    /// Opens `location`: the embedded store in `data_dir` (created and migrated if need be)
    /// or ClickHouse (its tables created if missing).
    pub fn open(location: &StoreLocation, data_dir: &Path) -> Result<Backend, StoreError> {
        Ok(match location {
            StoreLocation::Embedded => Backend::Embedded(Store::open(data_dir)?),
            StoreLocation::ClickHouse(location) => {
                Backend::ClickHouse(Box::new(clickhouse::block_on(ClickHouse::open(location))??))
            }
        })
    }

    /// [`Backend::open`] for a command that reads what was stored: an embedded store must
    /// exist already (opening would create an empty one).
    pub fn open_existing(location: &StoreLocation, data_dir: &Path) -> Result<Backend, StoreError> {
        match location {
            StoreLocation::Embedded => Ok(Backend::Embedded(existing_embedded(data_dir)?)),
            StoreLocation::ClickHouse(_) => Backend::open(location, data_dir),
        }
    }

    /// The store as messages name it: the database file, or the ClickHouse database.
    pub fn describe(&self) -> String {
        match self {
            Backend::Embedded(store) => store.path().display().to_string(),
            Backend::ClickHouse(clickhouse) => {
                format!("ClickHouse database {}", clickhouse.database())
            }
        }
    }

    /// Runs `work` with every capability, from this thread: on a fresh connection to the
    /// embedded store, or on ClickHouse (whose calls wait on the runtime this thread is in,
    /// or on one of their own).
    pub fn run<T>(&self, work: impl FnOnce(&mut dyn Storage) -> T) -> Result<T, StoreError> {
        Ok(match self {
            Backend::Embedded(store) => work(&mut store.connect()?),
            Backend::ClickHouse(clickhouse) => work(&mut (**clickhouse).clone()),
        })
    }

    /// What a background thread keeps for its whole life: a connection of its own to the
    /// embedded store, or the (pooled) ClickHouse client.
    pub fn for_thread(&self) -> Result<Box<dyn Storage + Send>, StoreError> {
        Ok(match self {
            Backend::Embedded(store) => Box::new(store.connect()?),
            Backend::ClickHouse(clickhouse) => clickhouse.clone(),
        })
    }

    /// Brings what is derived from the events up to date before reads: the embedded
    /// store's rollups (`progress` gets done and total events). Nothing on ClickHouse, whose
    /// materialized view keeps them as events arrive.
    pub fn catch_up(
        &self,
        config: &MetricsConfig,
        progress: &mut dyn FnMut(i64, i64),
    ) -> Result<(), StoreError> {
        if let Backend::Embedded(store) = self {
            let mut rollup = sqlite::rollup::Rollup::new(config);
            sqlite::rollup::catch_up(&mut store.connect()?, &mut rollup, progress)?;
        }
        Ok(())
    }

    /// Rebuilds the rollups of the embedded store at `data_dir` from the raw events (after
    /// the metrics config changed what an event means); `None`, without connecting, on
    /// ClickHouse, which applies the meaning as it reads.
    pub fn rebuild_rollups(
        location: &StoreLocation,
        data_dir: &Path,
        config: &MetricsConfig,
        progress: &mut dyn FnMut(i64, i64),
    ) -> Result<Option<sqlite::rollup::Step>, StoreError> {
        if let StoreLocation::ClickHouse(_) = location {
            return Ok(None);
        }
        let store = existing_embedded(data_dir)?;
        Ok(Some(sqlite::rollup::rebuild(
            &mut store.connect()?,
            config,
            progress,
        )?))
    }

    /// Whether rollups must be rebuilt by hand after the metrics config changes (on
    /// ClickHouse, what an event means is applied as it is read).
    pub fn has_rollups(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }

    /// Starts the thread that stores what the ingest queue holds; it exits once the queue
    /// closes.
    pub fn spawn_writer(
        &self,
        receiver: JobReceiver,
        dedup_window_days: u32,
        telemetry: &Telemetry,
    ) -> Result<std::thread::JoinHandle<()>, StoreError> {
        match self {
            Backend::Embedded(store) => {
                sqlite::writer::spawn(store.path(), dedup_window_days, receiver, telemetry.clone())
            }
            Backend::ClickHouse(clickhouse) => {
                clickhouse::spawn_writer((**clickhouse).clone(), receiver, telemetry.clone())
            }
        }
    }

    /// Starts the rollup worker of the embedded store, for the life of the process (a step
    /// interrupted by exit rolls back). ClickHouse has none.
    pub fn spawn_rollups(
        &self,
        config: &MetricsConfig,
        telemetry: &Telemetry,
    ) -> Result<(), StoreError> {
        if let Backend::Embedded(store) = self {
            sqlite::rollup::spawn(store, config, telemetry.clone())?;
        }
        Ok(())
    }

    /// Whether this node runs the background work (health history, retention, alerts,
    /// surveys, the outbox): always on the embedded store; on ClickHouse, whose nodes share
    /// one database, only where `[health] background = true`.
    pub fn runs_background(&self, background: Option<bool>) -> bool {
        match self {
            Backend::Embedded(_) => true,
            Backend::ClickHouse(_) => background == Some(true),
        }
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> bool {
        match self {
            Backend::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    store
                        .connect()
                        .and_then(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(Into::into))
                        .is_ok()
                })
                .await
                .unwrap_or(false)
            }
            Backend::ClickHouse(clickhouse) => clickhouse.ping().await.is_ok(),
        }
    }

    /// The events received in the filter's range, with user and account resolved.
    pub fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Backend::Embedded(store) => sqlite::list_events(&store.connect()?, filter),
            Backend::ClickHouse(clickhouse) => {
                clickhouse::block_on(clickhouse.list_events(filter))?
            }
        }
    }

    /// The role of a presented API token, if it is known and has not expired.
    pub fn token_role(&self, secret: &str) -> Result<Option<Role>, StoreError> {
        match self {
            Backend::Embedded(store) => sqlite::token_role(&store.connect()?, secret),
            Backend::ClickHouse(clickhouse) => clickhouse::block_on(clickhouse.token_role(secret))?,
        }
    }

    /// Erases a person: their events, traits, memberships, links and answers.
    pub fn delete_user(&self, user_id: &str) -> Result<UserDeletion, StoreError> {
        match self {
            Backend::Embedded(store) => {
                sqlite::records::delete_user(&mut store.connect()?, user_id)
            }
            Backend::ClickHouse(clickhouse) => {
                clickhouse::block_on(clickhouse.delete_user(user_id))?
            }
        }
    }

    /// Drops the raw events older than `days` (see `sqlite::retention`; on ClickHouse the
    /// track, page and screen events, whose rollups the view keeps). `progress` gets ids
    /// looked at and to look at, on the embedded store.
    pub fn prune(
        &self,
        days: u32,
        now_ms: i64,
        progress: &mut dyn FnMut(i64, i64),
    ) -> Result<Pruned, StoreError> {
        match self {
            Backend::Embedded(store) => {
                sqlite::retention::prune(&mut store.connect()?, days, now_ms, progress)
            }
            Backend::ClickHouse(clickhouse) => {
                clickhouse::block_on(clickhouse.prune(days, now_ms))?
            }
        }
    }

    /// Writes a backup of everything to `file`; its size in bytes.
    pub fn backup(&self, file: &Path) -> Result<u64, StoreError> {
        match self {
            Backend::Embedded(store) => sqlite::backup(store, file),
            Backend::ClickHouse(clickhouse) => clickhouse::block_on(clickhouse.backup(file))?,
        }
    }

    /// Restores a backup into `location` (the embedded store: as the data dir's database,
    /// replacing one only with `replace`): the store restored into, and the tables restored
    /// with their rows, where the backend counts them.
    pub fn restore(
        location: &StoreLocation,
        data_dir: &Path,
        backup: &Path,
        replace: bool,
    ) -> Result<(Backend, Vec<(String, u64)>), StoreError> {
        match location {
            StoreLocation::Embedded => {
                let store = sqlite::restore(backup, data_dir, replace)?;
                Ok((Backend::Embedded(store), Vec::new()))
            }
            StoreLocation::ClickHouse(location) => {
                let clickhouse = clickhouse::block_on(ClickHouse::open(location))??;
                let tables = clickhouse.restore(backup)?.tables;
                Ok((Backend::ClickHouse(Box::new(clickhouse)), tables))
            }
        }
    }
}

/// The embedded store in `data_dir`, which must exist already (opening would create an empty
/// one).
fn existing_embedded(data_dir: &Path) -> Result<Store, StoreError> {
    let path = sqlite::database_path(data_dir);
    if !path.exists() {
        return Err(StoreError::Missing(path));
    }
    Store::open(data_dir)
}
