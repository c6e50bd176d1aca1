//! Operational counters exported at `/metrics` in the Prometheus text format.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every counter bellwether exports. Cheap to clone (the prometheus types are `Arc`s inside).
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Messages durably stored.
    pub accepted: IntCounter,
    /// Requests or batch items refused, by reason.
    pub rejected: IntCounterVec,
    /// Messages not stored because the same source and messageId were already stored.
    pub deduplicated: IntCounter,
    /// Bytes of request bodies waiting for the writer.
    pub queue_bytes: IntGauge,
    /// Messages held in the in-memory dedup index.
    pub dedup_entries: IntGauge,
    /// Time of one group commit (on the embedded store, the transaction; its fsync is
    /// `sync_seconds`).
    pub commit_seconds: Histogram,
    /// Time of one fsync of the write-ahead log, which covers every group committed since
    /// the one before.
    pub sync_seconds: Histogram,
    /// Messages per group commit.
    pub commit_messages: Histogram,
    /// Id of the newest durably stored event (set by the writer's syncer, after the fsync).
    pub stored_to: IntGauge,
    /// Every event up to this id is in the rollups (set by the rollup worker).
    pub rolled_up_to: IntGauge,
    /// Events stored but not rolled up yet: the difference of the two, at each scrape.
    rollup_lag: IntGauge,
}

/// Seconds: the buckets of the commit and sync histograms.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let accepted = IntCounter::new(
            "bellwether_ingest_accepted_total",
            "messages durably stored",
        )
        .expect("invariant: valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "bellwether_ingest_rejected_total",
                "requests or batch items refused, by reason",
            ),
            &["reason"],
        )
        .expect("invariant: valid metric");
        let deduplicated = IntCounter::new(
            "bellwether_ingest_deduplicated_total",
            "retried messages not stored again",
        )
        .expect("invariant: valid metric");
        let queue_bytes = IntGauge::new(
            "bellwether_ingest_queue_bytes",
            "request bytes waiting for the writer",
        )
        .expect("invariant: valid metric");
        let dedup_entries = IntGauge::new(
            "bellwether_dedup_entries",
            "message ids in the dedup window",
        )
        .expect("invariant: valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bellwether_store_commit_seconds",
                "duration of one group commit (embedded store: the transaction, without its fsync)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("invariant: valid metric");
        let sync_seconds = Histogram::with_opts(
            HistogramOpts::new("bellwether_store_sync_seconds", "duration of one fsync of the write-ahead log (it covers every group committed since the last)")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("invariant: valid metric");
        let commit_messages = Histogram::with_opts(
            HistogramOpts::new(
                "bellwether_store_commit_messages",
                "messages per group commit",
            )
            .buckets(vec![
                1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 20000.0,
            ]),
        )
        .expect("invariant: valid metric");
        let stored_to = IntGauge::new(
            "bellwether_store_last_event_id",
            "id of the newest durably stored event",
        )
        .expect("invariant: valid metric");
        let rolled_up_to = IntGauge::new(
            "bellwether_rollup_last_event_id",
            "every event up to this id is in the rollups",
        )
        .expect("invariant: valid metric");
        let rollup_lag = IntGauge::new(
            "bellwether_rollup_lag_events",
            "events stored but not yet in the rollups (they catch up after a burst)",
        )
        .expect("invariant: valid metric");
        for collector in [
            Box::new(accepted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejected.clone()),
            Box::new(deduplicated.clone()),
            Box::new(queue_bytes.clone()),
            Box::new(dedup_entries.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(sync_seconds.clone()),
            Box::new(commit_messages.clone()),
            Box::new(stored_to.clone()),
            Box::new(rolled_up_to.clone()),
            Box::new(rollup_lag.clone()),
        ] {
            registry
                .register(collector)
                .expect("invariant: metric names are unique");
        }
        Telemetry {
            registry,
            accepted,
            rejected,
            deduplicated,
            queue_bytes,
            dedup_entries,
            commit_seconds,
            sync_seconds,
            commit_messages,
            stored_to,
            rolled_up_to,
            rollup_lag,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.rollup_lag
            .set((self.stored_to.get() - self.rolled_up_to.get()).max(0));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("invariant: encoding to a Vec cannot fail");
        String::from_utf8(out).expect("invariant: the text format is UTF-8")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Text with every control character written as an escape (`\n`, `\r`, `\t`,
/// `\u{1b}`), for log lines: whatever a field holds, one event stays one line.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_logs() {
        assert_eq!(escape_controls("admin"), "admin");
        assert_eq!(
            escape_controls("x\nINFO dashboard sign-in username=admin\r\u{1b}[31m"),
            "x\\nINFO dashboard sign-in username=admin\\r\\u{1b}[31m"
        );
    }
}
