//! Segment's own client libraries (Python from PyPI, Node from npm) send to a running
//! server; every message must be stored once with the right user, account, timestamp and
//! properties. The libraries are installed by the test command (see README).

use std::collections::HashMap;
use std::process::Command;

use serde_json::{json, Value};

use super::support::*;

/// Runs one client script and returns the messages it reports as sent.
pub(super) fn run_client(
    program: &str,
    script: &str,
    server: &Server,
    prefix: &str,
    extra: &[&str],
) -> Vec<Value> {
    let path = clients_dir().join(script);
    let out = Command::new(program)
        .arg(&path)
        .args([
            "--host",
            &server.base,
            "--write-key",
            KEY,
            "--prefix",
            prefix,
        ])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}); install the clients as the README's test command does.\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("client report JSON");
    report["messages"].as_array().expect("messages").clone()
}

fn check_stored(server: &Server, token: &str, prefix: &str, sent: &[Value]) {
    assert_eq!(sent.len(), 307, "the scenario sends 307 messages");
    let stored = stored_events(server, token);
    let raw = stored_raw(&server.data_dir);
    assert_eq!(stored.len(), sent.len(), "every message stored, none twice");
    let by_id: HashMap<&str, &Value> = stored
        .iter()
        .map(|e| (e["message_id"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "message ids are unique");
    let raw_by_id: HashMap<&str, &Value> = raw
        .iter()
        .map(|e| (e["messageId"].as_str().unwrap(), e))
        .collect();
    for message in sent {
        let id = message["messageId"].as_str().unwrap();
        let event = by_id.get(id).unwrap_or_else(|| panic!("{id} not stored"));
        assert_eq!(event["type"], message["type"], "{id}");
        if let Some(user) = message["userId"].as_str() {
            assert_eq!(event["user_id"], json!(user), "{id}");
        }
    }
    let u1 = format!("{prefix}-u1");
    let u2 = format!("{prefix}-u2");
    let acct = format!("{prefix}-acct");
    let find = |name: &str| -> &Value {
        stored
            .iter()
            .find(|e| e["event"] == json!(name))
            .unwrap_or_else(|| panic!("no {name} event"))
    };
    // Track with an explicit timestamp: the client sends it with a batch-level sentAt, so
    // the stored time is that timestamp moved by the (tiny) send delay.
    let report = find("Report Created");
    assert_eq!(report["user_id"], json!(u1));
    assert_eq!(
        report["account_id"],
        json!(acct),
        "u1 belongs to the account it was grouped into"
    );
    let ts = chrono::DateTime::parse_from_rfc3339(report["timestamp"].as_str().unwrap()).unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:00Z").unwrap();
    assert!(
        (ts - expected).num_milliseconds().abs() < 5_000,
        "timestamp {ts}"
    );
    let report_raw = raw_by_id[report["message_id"].as_str().unwrap()];
    assert_eq!(report_raw["properties"]["rows"], json!(42));
    assert_eq!(report_raw["properties"]["format"], json!("pdf"));
    assert_eq!(find("Dashboard")["type"], json!("page"));
    // The anonymous visit counts for u2 once aliased.
    assert_eq!(find("Visited Pricing")["user_id"], json!(u2));
    let feature_uses = stored
        .iter()
        .filter(|e| e["event"] == json!("Feature Used") && e["user_id"] == json!(u2))
        .count();
    assert_eq!(feature_uses, 300);
    let group = stored.iter().find(|e| e["type"] == json!("group")).unwrap();
    assert_eq!(group["account_id"], json!(acct));
    let identify_raw = raw.iter().find(|e| e["type"] == json!("identify")).unwrap();
    assert_eq!(
        identify_raw["traits"]["email"],
        json!(format!("{u1}@example.com"))
    );
}

#[test]
fn python_library_messages_are_stored_once_with_user_account_timestamp_and_properties() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "read");
    let sent = run_client("python3", "segment_python.py", &server, "py", &[]);
    check_stored(&server, &token, "py", &sent);
    // The same library with gzip bodies, and its retries of the same batches, stay exact.
    let sent_gzip = run_client("python3", "segment_python.py", &server, "pyz", &["--gzip"]);
    assert_eq!(sent_gzip.len(), 307);
    assert_eq!(stored_events(&server, &token).len(), 614);
}

#[test]
fn node_library_messages_are_stored_once_with_user_account_timestamp_and_properties() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "read");
    let sent = run_client("node", "segment_node.mjs", &server, "js", &[]);
    check_stored(&server, &token, "js", &sent);
}
