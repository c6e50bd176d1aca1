//! `bellwether backup` while the server takes events, and `bellwether restore`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::support::*;

#[test]
fn backup_while_serving_restores_a_consistent_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let records =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/records/accounts.csv");
    assert!(cli(
        dir.path(),
        &["import", "accounts", records.to_str().unwrap()]
    )
    .status
    .success());
    let token = create_token(dir.path(), "read");

    // A sender keeps committing 50-message batches while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (base, stop) = (server.base.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let server = Server::attach(&base);
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) || batch < 5 {
                let items: Vec<String> = (0..50)
                    .map(|i| format!(r#"{{"type":"track","userId":"u1","event":"During backup","messageId":"b{batch}-m{i}"}}"#))
                    .collect();
                assert_eq!(
                    post(
                        &server,
                        "/v1/batch",
                        Some(KEY),
                        format!(r#"{{"batch":[{}]}}"#, items.join(","))
                    )
                    .status,
                    200
                );
                batch += 1;
            }
            batch
        })
    };
    while counter(&server, "bellwether_ingest_accepted_total") < 100.0 {
        std::thread::yield_now();
    }
    let backup = dir.path().join("copy.bwdb");
    let out = cli(dir.path(), &["backup", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    let batches = sender.join().unwrap();
    let original = stored_events(&server, &token);
    assert_eq!(original.len(), batches * 50);
    let out = cli(dir.path(), &["backup", backup.to_str().unwrap()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists")
    );

    let restored_dir = tempfile::tempdir().unwrap();
    let out = cli(restored_dir.path(), &["restore", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(restored_dir.path(), &["restore", backup.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--force"));
    let restored = Server::start(restored_dir.path(), &[]);
    let events = stored_events(&restored, &token);
    // A snapshot: some whole batches, each exactly as stored, none half.
    assert!(!events.is_empty() && events.len() <= original.len());
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let id = e["message_id"].as_str().unwrap();
        *per_batch
            .entry(id.split('-').next().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        per_batch.values().all(|&n| n == 50),
        "a batch half in the backup: {per_batch:?}"
    );
    let original_ids: HashSet<&str> = original
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert!(events
        .iter()
        .all(|e| original_ids.contains(e["message_id"].as_str().unwrap())));
    let accounts = |s: &Server| get(s, "/api/v1/accounts", Some(&token)).body["items"].clone();
    assert_eq!(accounts(&restored), accounts(&server));
    // The restored data dir works: new events are taken and old retries are deduplicated.
    let again =
        r#"{"batch":[{"type":"track","userId":"u1","event":"During backup","messageId":"b0-m0"}]}"#;
    assert_eq!(post(&restored, "/v1/batch", Some(KEY), again).status, 200);
    assert_eq!(stored_events(&restored, &token).len(), events.len());

    let junk = dir.path().join("junk.bwdb");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let out = cli(
        tempfile::tempdir().unwrap().path(),
        &["restore", junk.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
