//! The demo: generate a realistic customer base with known truth (`generate`), load it
//! through the same import and ingest paths a user's data takes (`load`), then serve.

pub mod generate;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::CurrencyConfig;
use crate::import::{Checks, Import};
use crate::ingest::{self, Ingestor};
use crate::records;
use crate::store::{Records, Users};

/// Written into the data dir once a demo load completed; its presence makes `demo` reuse
/// the data instead of generating again.
pub const MARKER: &str = "demo.json";

/// How many batches are in flight to the writer at once while loading, so that group
/// commit has work to share.
const LOAD_BATCHES_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading {kind}: {report}")]
    Import { kind: &'static str, report: String },
    #[error("loading events: {0}")]
    Events(String),
    #[error("demo sign-ins: {0}")]
    Users(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What the marker records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub seed: u64,
    pub accounts: usize,
    pub years: u32,
    pub end_date: String,
    pub events: u64,
    /// An admin API token for the demo (demo data only).
    pub api_token: String,
    /// Dashboard sign-ins made for the demo: (user name, password, role).
    #[serde(default)]
    pub logins: Vec<(String, String, String)>,
}

/// Makes the demo's dashboard users (an admin, and a CSM who owns some accounts) once, and
/// records their passwords in the marker so later runs print them again.
pub fn ensure_logins(
    source: &(impl Records + Users + ?Sized),
    data_dir: &Path,
    loaded: &mut Loaded,
) -> Result<(), DemoError> {
    use crate::store::{User, UserRole};
    use crate::users;
    if !loaded.logins.is_empty() {
        return Ok(());
    }
    let csm = source
        .record_rows("accounts", &["csm"])?
        .iter()
        .filter_map(|r| r[0].as_text().map(str::to_string))
        .min();
    for (name, role, csm_id) in [
        ("admin", UserRole::Admin, None),
        ("csm", UserRole::Csm, csm),
    ] {
        let password = crate::store::sqlite::hex(&rand::random::<[u8; 8]>());
        let user = User {
            username: name.into(),
            role,
            csm_id,
        };
        users::create_user(source, &user, &password, true)
            .map_err(|e| DemoError::Users(format!("{name}: {e}")))?;
        loaded
            .logins
            .push((name.into(), password, role.as_str().into()));
    }
    let path = data_dir.join(MARKER);
    let text = serde_json::to_string_pretty(&loaded).expect("invariant: the marker serialises");
    std::fs::write(&path, text).map_err(|source| DemoError::Io { path, source })
}

pub fn read_marker(data_dir: &Path) -> Option<Loaded> {
    let text = std::fs::read_to_string(data_dir.join(MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Imports the generated CSVs (all kinds, accounts first) into the store.
pub fn import_records(
    store: &mut dyn Records,
    dir: &Path,
    currency: &CurrencyConfig,
    listening: &crate::listening::ListeningConfig,
) -> Result<(), DemoError> {
    for kind in records::KINDS {
        let path = dir.join(format!("{}.csv", kind.name));
        let file = std::fs::File::open(&path).map_err(|source| DemoError::Io {
            path: path.clone(),
            source,
        })?;
        let check = |code: &str| currency.check(code);
        let reason = |code: &str| listening.check_reason(code);
        let import = Import::into_target(
            store.import_target(kind)?,
            kind,
            Checks {
                currency: &check,
                reason: &reason,
            },
        );
        let report = crate::import::read_into(
            import,
            crate::import::Format::Csv,
            BufReader::new(file),
            &mut |_| {},
        )?;
        if !report.stored {
            let first: Vec<String> = report
                .errors
                .iter()
                .take(3)
                .map(|e| format!("row {} {}: {}", e.row, e.column, e.reason))
                .collect();
            return Err(DemoError::Import {
                kind: kind.name,
                report: first.join("; "),
            });
        }
        eprintln!("  imported {:>7} {}", report.rows, kind.name);
    }
    Ok(())
}

/// Sends every batch of `events.ndjson.gz` through the ingest queue (the path `/v1/batch`
/// takes after HTTP), with a progress bar. Returns the messages stored or deduplicated.
pub async fn load_events(ingestor: &Ingestor, dir: &Path) -> Result<u64, DemoError> {
    let path = dir.join("events.ndjson.gz");
    let file = std::fs::File::open(&path).map_err(|source| DemoError::Io {
        path: path.clone(),
        source,
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("  events {bar:40} {percent:>3}%  {msg}")
            .expect("invariant: valid template"),
    );
    let reader = BufReader::new(flate2::read::GzDecoder::new(bar.wrap_read(file)));
    let source: Arc<str> = Arc::from("demo");
    let slots = Arc::new(tokio::sync::Semaphore::new(LOAD_BATCHES_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent: u64 = 0;
    for line in reader.lines() {
        let line = line.map_err(|source| DemoError::Io {
            path: path.clone(),
            source,
        })?;
        let received_ms = chrono::Utc::now().timestamp_millis();
        let batch = ingest::parse_batch(line.as_bytes(), received_ms, &ingest::TimeRange::ANY)
            .map_err(|r| DemoError::Events(format!("{}: {}", r.field, r.reason)))?;
        if let Some(bad) = batch.rejected.first() {
            return Err(DemoError::Events(format!(
                "message {} rejected: {} {}",
                bad.index, bad.field, bad.reason
            )));
        }
        sent += batch.messages.len() as u64;
        bar.set_message(format!("{sent} messages"));
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("invariant: the semaphore is never closed");
        let (ingestor, source, bytes) = (ingestor.clone(), Arc::clone(&source), line.len() as u64);
        tasks.spawn(async move {
            let _permit = permit;
            loop {
                match ingestor
                    .submit(Arc::clone(&source), batch.messages.clone(), bytes)
                    .await
                {
                    Err(ingest::SubmitError::QueueFull) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await
                    }
                    other => return other,
                }
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| DemoError::Events(e.to_string()))?
                .map_err(|e| DemoError::Events(e.to_string()))?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| DemoError::Events(e.to_string()))?
            .map_err(|e| DemoError::Events(e.to_string()))?;
    }
    bar.finish_with_message(format!("{sent} messages"));
    Ok(sent)
}
