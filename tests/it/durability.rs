//! A 200 means durable: acknowledged events survive SIGKILL, exactly once (on either store).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::support::*;

const SENDERS: usize = 4;
const BATCH_MESSAGES: usize = 50;
const BATCHES_PER_SENDER_MAX: usize = 45; // 4 x 45 x 50 = 9000, under one events listing
const KILL_AFTER_ACKED: usize = 1_000;

fn batch_body(sender: usize, batch: usize) -> String {
    let items: Vec<String> = (0..BATCH_MESSAGES)
        .map(|i| format!(r#"{{"type":"track","userId":"u{sender}","event":"Durable","messageId":"s{sender}-b{batch}-m{i}"}}"#))
        .collect();
    format!(r#"{{"batch":[{}]}}"#, items.join(","))
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = std::sync::OnceLock::new();
    sigkill_mid_stream(&|| Server::start(dir.path(), &[]), &|server: &Server| {
        stored_events(
            server,
            token.get_or_init(|| create_token(dir.path(), "read")),
        )
    });
}

/// On ClickHouse a 200 means ClickHouse accepted the block: a killed node loses nothing it
/// acknowledged, and a retry through the restarted node still lists once.
#[test]
fn acknowledged_events_survive_sigkill_of_a_clickhouse_node_exactly_once() {
    let clickhouse = ClickHouseServer::start();
    let store = clickhouse.store_url("bw_durability");
    let dir = tempfile::tempdir().unwrap();
    sigkill_mid_stream(
        &|| Server::start(dir.path(), &[("BELLWETHER_STORE", &store)]),
        &|_: &Server| {
            let out = cli(
                dir.path(),
                &[
                    "events",
                    "--store",
                    &store,
                    "--since",
                    "2000-01-01",
                    "--limit",
                    "10000",
                    "--format",
                    "json",
                ],
            );
            assert!(
                out.status.success(),
                "events: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("a JSON array")
        },
    );
}

/// Senders stream batches; the server is killed (SIGKILL) after some are acknowledged and
/// started again; every acknowledged message is listed exactly once, no batch half, and
/// resending everything still lists each message once. `list` reads back what is stored.
fn sigkill_mid_stream(
    start: &dyn Fn() -> Server,
    list: &dyn Fn(&Server) -> Vec<serde_json::Value>,
) {
    let mut server = start();
    let acked: Arc<Mutex<HashSet<(usize, usize)>>> = Arc::default();
    let acked_messages = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (base, acked, acked_messages, failures) = (
                server.base.clone(),
                Arc::clone(&acked),
                Arc::clone(&acked_messages),
                Arc::clone(&failures),
            );
            std::thread::spawn(move || {
                let agent = agent();
                for batch in 0..BATCHES_PER_SENDER_MAX {
                    let response = agent
                        .post(&format!("{base}/v1/batch"))
                        .header("authorization", "Basic dGVzdC13cml0ZS1rZXk6") // test-write-key:
                        .send(batch_body(sender, batch).as_bytes());
                    match response {
                        Ok(r) if r.status() == 200 => {
                            acked.lock().unwrap().insert((sender, batch));
                            acked_messages.fetch_add(BATCH_MESSAGES, Ordering::SeqCst);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            return batch + 1; // batches attempted
                        }
                    }
                }
                BATCHES_PER_SENDER_MAX
            })
        })
        .collect();
    let mut polls = 0;
    while acked_messages.load(Ordering::SeqCst) < KILL_AFTER_ACKED {
        std::thread::sleep(std::time::Duration::from_millis(2));
        polls += 1;
        assert!(polls < 30_000, "senders made no progress");
    }
    server.kill9();
    let attempted: Vec<usize> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "the kill should interrupt the senders mid-stream"
    );

    let server = start();
    let count_by_id = |events: &[serde_json::Value]| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in events {
            *counts
                .entry(e["message_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        counts
    };
    let counts = count_by_id(&list(&server));
    let acked = acked.lock().unwrap().clone();
    for &(sender, batch) in &acked {
        for i in 0..BATCH_MESSAGES {
            let id = format!("s{sender}-b{batch}-m{i}");
            assert_eq!(
                counts.get(&id),
                Some(&1),
                "acknowledged {id} must be stored exactly once"
            );
        }
    }
    assert!(counts.values().all(|&n| n == 1));
    // A batch is one transaction: never half stored.
    for (sender, &sent) in attempted.iter().enumerate() {
        for batch in 0..sent {
            let stored = (0..BATCH_MESSAGES)
                .filter(|i| counts.contains_key(&format!("s{sender}-b{batch}-m{i}")))
                .count();
            assert!(
                stored == 0 || stored == BATCH_MESSAGES,
                "batch s{sender}-b{batch} half stored: {stored}"
            );
        }
    }
    // Clients retry what was not acknowledged (and some of what was): still exactly once.
    for (sender, &sent) in attempted.iter().enumerate() {
        for batch in 0..sent {
            assert_eq!(
                post(&server, "/v1/batch", Some(KEY), batch_body(sender, batch)).status,
                200
            );
        }
    }
    let counts = count_by_id(&list(&server));
    let total: usize = attempted.iter().sum::<usize>() * BATCH_MESSAGES;
    assert_eq!(counts.len(), total);
    assert!(
        counts.values().all(|&n| n == 1),
        "a retry after restart was stored twice"
    );
}
