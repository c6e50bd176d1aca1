//! Every background thread of a server starts here: the writer, the rollup worker,
//! retention, the health thread, the actions evaluator and the outbox worker, on the
//! embedded store or on ClickHouse. They talk through explicit [`Signals`], handed to each,
//! never through process-wide statics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::NaiveDate;

use crate::actions::run as actions_run;
use crate::actions::ActionsConfig;
use crate::config::Config;
use crate::health::history::{self, OwnedSettings, PassState};
use crate::health::model::Settings;
use crate::ingest::queue::JobReceiver as Receiver;
use crate::store::{Backend, Pruned, Storage, StoreError};
use crate::telemetry::Telemetry;

/// Wake-ups and holds between the request handlers, the health thread and the evaluator.
#[derive(Debug, Clone, Default)]
pub struct Signals(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// Set by [`Signals::poke`], cleared by the evaluator's [`Signals::wait`].
    poked: Mutex<bool>,
    wake: Condvar,
    /// Set while a bulk load (the demo's) is under way: evaluating half-loaded data would
    /// fire on numbers that are not true yet, and a model would learn from half the renewals.
    paused: AtomicBool,
}

impl Signals {
    /// Asks the evaluator to evaluate soon (after an import, a health update, a survey
    /// answer, a rule saved).
    pub fn poke(&self) {
        *self.0.poked.lock().expect("invariant: not poisoned") = true;
        self.0.wake.notify_all();
    }

    /// Holds (true) or releases (false) the evaluator and the health thread; releasing
    /// pokes the evaluator.
    pub fn pause(&self, paused: bool) {
        self.0.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.poke();
        }
    }

    /// Whether a bulk load holds the background work back.
    pub fn paused(&self) -> bool {
        self.0.paused.load(Ordering::SeqCst)
    }

    /// Waits until poked or until `timeout`, then clears the poke.
    pub fn wait(&self, timeout: Duration) {
        let mut poked = self.0.poked.lock().expect("invariant: not poisoned");
        if !*poked {
            poked = self
                .0
                .wake
                .wait_timeout(poked, timeout)
                .expect("invariant: not poisoned")
                .0;
        }
        *poked = false;
    }
}

/// What [`start`] opened and started.
pub struct Started {
    pub backend: Backend,
    /// The writer: it commits what the ingest queue holds and exits once the queue closes.
    pub writer: std::thread::JoinHandle<()>,
}

/// Opens the configured store and starts its threads. On ClickHouse the health history,
/// retention, the evaluator and the outbox run only where `[health] background = true`;
/// on the embedded store `background = false` turns the health thread off.
pub fn start(
    config: &Config,
    receiver: Receiver,
    telemetry: &Telemetry,
    signals: &Signals,
) -> Result<Started, StoreError> {
    let backend = Backend::open(&config.store, &config.data_dir)?;
    let writer = backend.spawn_writer(receiver, config.ingest.dedup_window_days, telemetry)?;
    backend.spawn_rollups(&config.metrics, telemetry)?;
    if !backend.runs_background(config.health.background) {
        tracing::info!("the health history, retention, alert evaluation, surveys and the outbox run on the node with [health] background = true; not this one");
        return Ok(Started { backend, writer });
    }
    // ClickHouse's calls wait on the server's runtime: each thread enters it.
    let runtime = tokio::runtime::Handle::try_current().ok();
    if config.retention.raw_events_days > 0 {
        spawn_retention(
            backend.clone(),
            runtime.clone(),
            config.retention.raw_events_days,
        )?;
    }
    if config.health.background != Some(false) {
        let (storage, entered) = (backend.for_thread()?, runtime.clone());
        spawn_health(
            signals.clone(),
            settings(config),
            move |settings, today, state| {
                let _entered = entered.as_ref().map(|r| r.enter());
                if !storage.settled()? {
                    return Ok(None);
                }
                history::run_once(&*storage, settings, today, state).map(Some)
            },
        )?;
    }
    let storage = (backend.for_thread()?, backend.for_thread()?);
    let actions = (config.actions.clone(), config.base_url());
    spawn_actions(storage, runtime, settings(config), actions, signals)?;
    Ok(Started { backend, writer })
}

/// How often the health thread passes when it is ready.
const HEALTH_PERIOD: Duration = Duration::from_secs(60);
/// How soon a thread that was not ready (a bulk load, rollups behind) looks again.
const NOT_READY_RETRY: Duration = Duration::from_secs(2);

/// The health thread: every [`HEALTH_PERIOD`] a `pass` (`None`: not ready, again in 2 s)
/// recalibrates when due and brings the history up to today; held while a bulk load runs
/// (half-loaded renewals would make a model of nothing); pokes the evaluator when tiers may
/// have moved, so rules on tiers fire now rather than at their next schedule.
fn spawn_health(
    signals: Signals,
    owned: OwnedSettings,
    mut pass: impl FnMut(Settings, NaiveDate, &mut PassState) -> Result<Option<bool>, StoreError>
        + Send
        + 'static,
) -> Result<(), StoreError> {
    let mut state = PassState::default();
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || loop {
            let wait = if signals.paused() {
                NOT_READY_RETRY
            } else {
                match pass(
                    owned.borrowed(),
                    chrono::Utc::now().date_naive(),
                    &mut state,
                ) {
                    Ok(Some(moved)) => {
                        if moved {
                            signals.poke();
                        }
                        HEALTH_PERIOD
                    }
                    Ok(None) => NOT_READY_RETRY,
                    Err(error) => {
                        tracing::error!(%error, "health update failed; retrying in 60 s");
                        HEALTH_PERIOD
                    }
                }
            };
            std::thread::sleep(wait);
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(())
}

/// The evaluator (rules and surveys on the schedule and when poked) on `evaluator` and the
/// outbox worker (every second) on `outbox`, for the life of the process, inside `runtime`
/// when given (ClickHouse's calls need one).
fn spawn_actions(
    (evaluator, outbox): (Box<dyn Storage + Send>, Box<dyn Storage + Send>),
    runtime: Option<tokio::runtime::Handle>,
    owned: OwnedSettings,
    (config, base_url): (ActionsConfig, String),
    signals: &Signals,
) -> Result<(), StoreError> {
    let (evaluator_config, evaluator_runtime, signals) =
        (config.clone(), runtime.clone(), signals.clone());
    std::thread::Builder::new()
        .name("actions".into())
        .spawn(move || {
            let _entered = evaluator_runtime.as_ref().map(|r| r.enter());
            let config = evaluator_config;
            // Let the first rollups and health model settle before the first evaluation.
            std::thread::sleep(Duration::from_secs(5));
            loop {
                let today = chrono::Utc::now().date_naive();
                let ran = if signals.paused() {
                    Ok(None)
                } else {
                    actions_run::run_once(&*evaluator, today, owned.borrowed(), &config, &base_url)
                };
                match ran {
                    Ok(Some((alerts, surveys))) if alerts + surveys > 0 => {
                        tracing::info!(alerts, surveys, "actions evaluated")
                    }
                    Ok(Some(_)) => {}
                    // Not now (a bulk load, rollups behind): again soon, not at the next turn.
                    Ok(None) => {
                        std::thread::sleep(NOT_READY_RETRY);
                        continue;
                    }
                    Err(error) => tracing::error!(%error, "action evaluation failed"),
                }
                signals.wait(Duration::from_secs(config.evaluate_every_seconds));
                // Several changes in a burst (an import, then the health update) make one run.
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    let password = std::env::var("BELLWETHER_SMTP_PASSWORD").ok();
    std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || {
            let _entered = runtime.as_ref().map(|r| r.enter());
            loop {
                match actions_run::deliver_due(&*outbox, &config, password.as_deref()) {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "outbox delivery failed"),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(())
}

/// The settings a background thread keeps for its life.
fn settings(config: &Config) -> OwnedSettings {
    OwnedSettings {
        metrics: config.metrics.clone(),
        health: config.health.clone(),
        currency: config.currency.clone(),
    }
}

/// Starts the retention thread: a pass at start and then every 6 hours while serving
/// (`store::sqlite::retention` says what a pass drops), inside `runtime` when given.
fn spawn_retention(
    backend: Backend,
    runtime: Option<tokio::runtime::Handle>,
    days: u32,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    spawn_passes(days, move |now_ms| {
        let _entered = runtime.as_ref().map(|r| r.enter());
        backend.prune(days, now_ms, &mut |_, _| {})
    })
}

fn spawn_passes(
    days: u32,
    mut pass: impl FnMut(i64) -> Result<Pruned, StoreError> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
    const RETRY: std::time::Duration = std::time::Duration::from_secs(600);
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || loop {
            let wait = match pass(chrono::Utc::now().timestamp_millis()) {
                Ok(Pruned { skipped: Some(reason), .. }) => {
                    tracing::info!(%reason, "retention pass skipped; trying again in 10 minutes");
                    RETRY
                }
                Ok(pruned) => {
                    tracing::info!(events = pruned.events, horizon = %pruned.horizon, raw_events_days = days, "retention pass dropped old raw events");
                    EVERY
                }
                Err(error) => {
                    tracing::error!(%error, "retention pass failed; trying again in 10 minutes");
                    RETRY
                }
            };
            std::thread::sleep(wait);
        })
        .map_err(|e| StoreError::Thread(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poke_wakes_the_waiter_once_and_a_pause_holds_until_released() {
        let signals = Signals::default();
        signals.poke();
        let started = std::time::Instant::now();
        signals.wait(Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a poke given before the wait counts"
        );
        let (waiter, poker) = (signals.clone(), signals.clone());
        let woken = std::thread::spawn(move || waiter.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        poker.poke();
        woken.join().unwrap();
        assert!(!signals.paused());
        signals.pause(true);
        assert!(signals.paused(), "a clone sees the hold");
        signals.pause(false);
        assert!(!signals.paused());
    }
}
