//! Retention: raw events past `[retention] raw_events_days` are dropped while every metric
//! stays, through later recomputes, late events and rebuilds. Each step is compared with a
//! control data dir that got the same input and never dropped anything.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::metrics::{export, first_batch, group, records, second_batch, send, setup, track};
use super::support::*;

fn raw_events(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("bellwether.db")).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

/// The retention horizon (a local day number), once a retention pass has set it.
fn horizon(dir: &Path) -> Option<i64> {
    let conn = rusqlite::Connection::open(dir.join("rollups.db")).unwrap();
    conn.query_row(
        "SELECT frozen_before_day FROM rollup_state WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Waits until the server's rollups hold every stored event.
fn rolled_up(server: &Server) {
    let waited = std::time::Instant::now();
    while counter(server, "bellwether_store_last_event_id") == 0.0
        || counter(server, "bellwether_rollup_lag_events") != 0.0
    {
        assert!(
            waited.elapsed().as_secs() < 60,
            "the rollups never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Makes every stored event look received `days` earlier, as if that time had passed.
fn age_receipts(dir: &Path, days: i64) {
    let conn = rusqlite::Connection::open(dir.join("bellwether.db")).unwrap();
    conn.execute(
        "UPDATE events SET received_ms = received_ms - ?1",
        [days * 86_400_000],
    )
    .unwrap();
}

/// After the fixture: a group call that re-dates u1's membership (u1 is recomputed from its
/// raw events), an alias linking an anonymous id used in March (its person is recomputed),
/// and late events of March days, which are all before the retention horizon.
fn later_batch() -> Vec<Value> {
    vec![
        group("g-u1-again", "u1", "acme", "2025-12-01T00:00:00Z"),
        json!({"type": "page", "messageId": "late-anon", "anonymousId": "anon-late", "name": "Docs", "timestamp": "2026-03-09T08:00:00Z"}),
        json!({"type": "alias", "messageId": "late-alias", "previousId": "anon-late", "userId": "u1", "timestamp": "2026-03-12T00:00:00Z"}),
        track("late-1", "u5", "Report Created", "2026-03-10T09:30:00Z"),
        track("late-2", "u2", "Signed In", "2026-03-11T07:00:00Z"),
    ]
}

#[test]
fn dropping_old_raw_events_keeps_every_metric_through_recomputes_late_events_and_rebuilds() {
    // `kept` drops raw events (30 days kept, by its server and by the CLI); `control` never does.
    let (kept, kept_config) = setup();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&kept_config)
        .unwrap()
        .write_all(b"\n[retention]\nraw_events_days = 30\n")
        .unwrap();
    let (control, control_config) = setup();
    // In `kept`, the server's retention pass at start moves the horizon past the whole
    // fixture (January to March 2026) though nothing is old enough by receipt to drop. The
    // fixture then arrives as a backfill of two batches, each rolled up before the next: the
    // second one's group call and alias rewrite days before the horizon, and as none of
    // those people's raw events was dropped, they are recomputed exactly.
    for (dir, config) in [
        (kept.path(), &kept_config),
        (control.path(), &control_config),
    ] {
        let mut server = Server::start(dir, &[("BELLWETHER_CONFIG", config.to_str().unwrap())]);
        if dir == kept.path() {
            let waited = std::time::Instant::now();
            while horizon(dir).is_none() {
                assert!(
                    waited.elapsed().as_secs() < 60,
                    "the server's retention pass never moved the horizon"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        records(&server, &create_token(dir, "admin"));
        send(&server, first_batch());
        rolled_up(&server);
        send(&server, second_batch());
        server.stop();
    }
    let before = export(control.path(), &control_config);
    assert_eq!(
        export(kept.path(), &kept_config),
        before,
        "same input, same export"
    );
    let stored = raw_events(kept.path());

    // A year passes: the fixture (January to March 2026) is older than the horizon by time
    // and by receipt. The server's retention pass at start drops all but the newest event.
    age_receipts(kept.path(), 365);
    let mut server = Server::start(
        kept.path(),
        &[("BELLWETHER_CONFIG", kept_config.to_str().unwrap())],
    );
    let waited = std::time::Instant::now();
    while raw_events(kept.path()) != 1 {
        assert!(
            waited.elapsed().as_secs() < 60,
            "the server's retention pass left {} of {stored} raw events",
            raw_events(kept.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        export(kept.path(), &kept_config),
        before,
        "the rollups keep what the dropped events said"
    );

    // A rebuild recomputes only the days whose raw events are still there.
    let out = cli(
        kept.path(),
        &["--config", kept_config.to_str().unwrap(), "rebuild"],
    );
    assert!(
        out.status.success(),
        "rebuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(export(kept.path(), &kept_config), before, "after a rebuild");

    // Recomputed people and late events of dropped days land exactly as in the control.
    send(&server, later_batch());
    server.stop();
    let mut control_server = Server::start(
        control.path(),
        &[("BELLWETHER_CONFIG", control_config.to_str().unwrap())],
    );
    send(&control_server, later_batch());
    control_server.stop();
    let after = export(control.path(), &control_config);
    assert_ne!(after, before, "the later events change the metrics");
    assert_eq!(
        export(kept.path(), &kept_config),
        after,
        "late events and recomputes over dropped days"
    );

    // The late events' raw copies are still there (received today); a rebuild must not
    // count them a second time, and once they age out the CLI drops them.
    let out = cli(
        kept.path(),
        &["--config", kept_config.to_str().unwrap(), "rebuild"],
    );
    assert!(
        out.status.success(),
        "rebuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        export(kept.path(), &kept_config),
        after,
        "rebuild after late events"
    );
    assert_eq!(raw_events(kept.path()), 1 + later_batch().len() as i64);
    age_receipts(kept.path(), 365);
    let out = cli(
        kept.path(),
        &["--config", kept_config.to_str().unwrap(), "retention"],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "retention: {said}");
    assert!(
        said.contains(&format!(
            "dropped {} raw events older than 30 days",
            later_batch().len()
        )),
        "{said}"
    );
    assert_eq!(raw_events(kept.path()), 1);
    assert_eq!(
        export(kept.path(), &kept_config),
        after,
        "after the second pass"
    );

    // The rollups live in their own file (rollups.db); a backup carries them in its one
    // file, so a restore keeps the days whose raw events are gone.
    let backup = kept.path().join("kept.bwdb");
    let out = cli(
        kept.path(),
        &[
            "--config",
            kept_config.to_str().unwrap(),
            "backup",
            backup.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tempfile::tempdir().unwrap();
    let out = cli(restored.path(), &["restore", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restored.path().join("rollups.db").exists());
    assert_eq!(raw_events(restored.path()), 1);
    assert_eq!(
        export(restored.path(), &kept_config),
        after,
        "restored from a backup"
    );

    // Raw events must outlive the dedup window.
    let out = cli(
        kept.path(),
        &[
            "--config",
            kept_config.to_str().unwrap(),
            "retention",
            "--raw-events-days",
            "3",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shorter than the dedup window (7 days)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "{}\n[retention]\nraw_events_days = 3\n",
        std::fs::read_to_string(&control_config).unwrap()
    );
    std::fs::write(&control_config, text).unwrap();
    let out = cli(
        control.path(),
        &["--config", control_config.to_str().unwrap(), "metrics"],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("key `retention.raw_events_days`")
            && said.contains("dedup window"),
        "{said}"
    );
}
