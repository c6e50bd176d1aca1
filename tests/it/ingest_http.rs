//! The Segment tracking API over HTTP: statuses, messages, limits, dedup, identity effects.

use std::io::Write;

use serde_json::{json, Value};

use super::support::*;
use bellwether::limits;

fn server() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "read");
    (dir, server, token)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A body built by `make(padding)` padded to exactly `target` bytes.
fn sized(target: usize, make: impl Fn(&str) -> String) -> String {
    let base = make("").len();
    let body = make(&"x".repeat(target - base));
    assert_eq!(body.len(), target);
    body
}

const FULL_BATCH_MESSAGES: usize = 21;

/// A batch body of exactly `total` bytes made of 21 track messages, each under the
/// per-message limit (the last one padded to reach the total).
fn full_batch(total: usize, user: &str, event: &str) -> String {
    let item = |i: usize, pad: &str| {
        format!(
            r#"{{"type":"track","userId":"{user}","event":"{event}","messageId":"{event}-{total}-{i}","properties":{{"p":"{pad}"}}}}"#
        )
    };
    let head: Vec<String> = (0..FULL_BATCH_MESSAGES - 1)
        .map(|i| item(i, &"y".repeat(24_000)))
        .collect();
    let head = head.join(",");
    sized(total, |pad| {
        format!(
            r#"{{"batch":[{head},{}]}}"#,
            item(FULL_BATCH_MESSAGES - 1, pad)
        )
    })
}

#[test]
fn bad_inputs_get_their_status_and_message_and_change_nothing() {
    let (_dir, server, token) = server();
    let seed = r#"{"batch":[{"type":"identify","userId":"u1","traits":{"plan":"pro"},"messageId":"seed-1"},
        {"type":"group","userId":"u1","groupId":"a1","messageId":"seed-2"},
        {"type":"track","userId":"u1","event":"Seeded","messageId":"seed-3"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), seed).status, 200);
    let before = stored_raw(&server.data_dir);
    assert_eq!(before.len(), 3);

    let gz_bad: &[(&str, &str)] = &[("content-encoding", "gzip")];
    let br: &[(&str, &str)] = &[("content-encoding", "br")];
    // (path, key, headers, body, status, field, reason)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Vec<u8>,
        u16,
        &'a str,
        &'a str,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("/v1/track", Some(KEY), &[], br#"{"userId":"#.to_vec(), 400, "body", "invalid JSON"),
        ("/v1/track", Some(KEY), &[], b"[1,2]".to_vec(), 400, "body", "expected a JSON object"),
        ("/v1/track", Some(KEY), &[], b"".to_vec(), 400, "body", "empty"),
        ("/v1/track", Some(KEY), &[], b"{\"userId\":\"\xff\"}".to_vec(), 400, "body", "not UTF-8"),
        ("/v1/track", Some(KEY), &[], br#"{"event":"E"}"#.to_vec(), 400, "userId", "either userId or anonymousId is required"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","timestamp":"yesterday"}"#.to_vec(), 400, "timestamp", "not an ISO-8601 date-time"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","timestamp":12}"#.to_vec(), 400, "timestamp", "expected a string"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","sentAt":"13/01/2026"}"#.to_vec(), 400, "sentAt", "not an ISO-8601 date-time"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":{"id":1},"event":"E"}"#.to_vec(), 400, "userId", "expected a string or a number"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","properties":[1]}"#.to_vec(), 400, "properties", "expected an object"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1"}"#.to_vec(), 400, "event", "required"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":7}"#.to_vec(), 400, "event", "expected a string"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","type":"identify"}"#.to_vec(), 400, "type", "does not match"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","context":{"groupId":[1]}}"#.to_vec(), 400, "context.groupId", "expected a string or a number"),
        ("/v1/track", Some(KEY), &[], br#"{"userId":"u1","event":"E","userId":"u2"}"#.to_vec(), 400, "body", "duplicate field"),
        ("/v1/identify", Some(KEY), &[], br#"{"userId":"u1","traits":"pro"}"#.to_vec(), 400, "traits", "expected an object"),
        ("/v1/group", Some(KEY), &[], format!(r#"{{"userId":"u1","groupId":"a1","traits":{{"a":{}1{}}}}}"#, "[".repeat(40), "]".repeat(40)).into_bytes(), 400, "message", "nested more than 32 levels"),
        ("/v1/group", Some(KEY), &[], br#"{"userId":"u1"}"#.to_vec(), 400, "groupId", "required for group"),
        ("/v1/alias", Some(KEY), &[], br#"{"userId":"u1"}"#.to_vec(), 400, "previousId", "required for alias"),
        ("/v1/alias", Some(KEY), &[], br#"{"previousId":"p"}"#.to_vec(), 400, "userId", "required for alias"),
        ("/v1/track", Some("wrong-key"), &[], br#"{"userId":"u1","event":"E"}"#.to_vec(), 401, "writeKey", "unknown write key"),
        ("/v1/track", None, &[], br#"{"userId":"u1","event":"E"}"#.to_vec(), 401, "writeKey", "unknown write key"),
        ("/v1/track", None, &[], br#"{"userId":"u1","event":"E","writeKey":"nope"}"#.to_vec(), 401, "writeKey", "unknown write key"),
        ("/v1/batch", Some(KEY), &[], br#"{"sentAt":"2026-01-01T00:00:00Z"}"#.to_vec(), 400, "batch", "required"),
        ("/v1/batch", Some(KEY), &[], br#"{"batch":{"type":"track"}}"#.to_vec(), 400, "batch", "expected an array"),
        ("/v1/batch", Some(KEY), &[], br#"{"batch":[{"type":"track","userId":"u"}],"sentAt":"soon"}"#.to_vec(), 400, "sentAt", "not an ISO-8601"),
        ("/v1/batch", Some(KEY), &[], br#"{"batch":[{"type":"track","event":"E"},{"type":"fly","userId":"u"}]}"#.to_vec(), 400, "batch", "no valid message"),
        ("/v1/track", Some(KEY), gz_bad, br#"{"userId":"u1","event":"E"}"#.to_vec(), 400, "body", "invalid gzip"),
        ("/v1/track", Some(KEY), br, br#"{"userId":"u1","event":"E"}"#.to_vec(), 415, "Content-Encoding", "not supported"),
    ];
    for (path, key, headers, body, status, field, reason) in cases {
        let reply = post_with(&server, path, key, headers, &body);
        let shown = String::from_utf8_lossy(&body);
        assert_eq!(reply.status, status, "{path} {shown}: {:?}", reply.body);
        assert_eq!(reply.body["success"], json!(false), "{path} {shown}");
        assert_eq!(
            reply.body["field"],
            json!(field),
            "{path} {shown}: {:?}",
            reply.body
        );
        let got = reply.body["reason"].as_str().unwrap_or_default();
        assert!(
            got.contains(reason),
            "{path} {shown}: reason {got:?} should contain {reason:?}"
        );
    }
    assert_eq!(
        stored_raw(&server.data_dir),
        before,
        "a bad request changed what was stored"
    );
    let events = stored_events(&server, &token);
    assert_eq!(events[2]["account_id"], json!("a1"));
}

#[test]
fn batch_stores_valid_items_and_lists_rejected_ones_by_index() {
    let (_dir, server, token) = server();
    let body = r#"{"batch":[
        {"type":"track","userId":"u1","event":"Kept A","messageId":"b-0"},
        {"type":"track","event":"No user","messageId":"b-1"},
        {"type":"page","userId":"u1","name":"Home","messageId":"b-2"},
        {"type":"teleport","userId":"u1","messageId":"b-3"},
        "not an object",
        {"type":"track","userId":"u1","event":"Kept B","messageId":"b-5"}]}"#;
    let reply = post(&server, "/v1/batch", Some(KEY), body);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let rejected = rejected_fields(&reply);
    assert_eq!(
        rejected,
        vec![
            (1, "userId".into()),
            (3, "type".into()),
            (4, "message".into())
        ]
    );
    let ids: Vec<String> = stored_events(&server, &token)
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["b-0", "b-2", "b-5"]);
    assert_eq!(counter(&server, "bellwether_ingest_accepted_total"), 3.0);
    assert_eq!(
        counter(
            &server,
            "bellwether_ingest_rejected_total{reason=\"missing_identity\"}"
        ),
        1.0
    );
}

#[test]
fn each_limit_is_accepted_at_max_and_rejected_past_it() {
    let (_dir, server, token) = server();
    let call =
        |pad: &str| format!(r#"{{"userId":"u1","event":"Big","properties":{{"pad":"{pad}"}}}}"#);
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some(KEY),
            sized(limits::CALL_BYTES_MAX, call)
        )
        .status,
        200
    );
    let reply = post(
        &server,
        "/v1/track",
        Some(KEY),
        sized(limits::CALL_BYTES_MAX + 1, call),
    );
    assert_eq!(
        (reply.status, reply.body["field"].as_str()),
        (413, Some("body"))
    );

    // The limit counts decompressed bytes: a tiny gzip body of 32769 bytes is too large.
    let gz = [("content-encoding", "gzip")];
    assert_eq!(
        post_with(
            &server,
            "/v1/track",
            Some(KEY),
            &gz,
            gzip(sized(limits::CALL_BYTES_MAX, call).as_bytes())
        )
        .status,
        200
    );
    assert_eq!(
        post_with(
            &server,
            "/v1/track",
            Some(KEY),
            &gz,
            gzip(sized(limits::CALL_BYTES_MAX + 1, call).as_bytes())
        )
        .status,
        413
    );

    // A batch of exactly 500 KB: 21 items, the last one padded to the exact total.
    let batch = |total: usize| full_batch(total, "u2", "Batch");
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            Some(KEY),
            batch(limits::BATCH_BYTES_MAX)
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            Some(KEY),
            batch(limits::BATCH_BYTES_MAX + 1)
        )
        .status,
        413
    );

    // One item at the per-call limit passes inside a batch; one byte more is refused by index.
    let item = |pad: &str| {
        format!(r#"{{"type":"track","userId":"u3","event":"Item","properties":{{"pad":"{pad}"}}}}"#)
    };
    let two = format!(
        r#"{{"batch":[{},{}]}}"#,
        sized(limits::CALL_BYTES_MAX, item),
        sized(limits::CALL_BYTES_MAX + 1, item)
    );
    let reply = post(&server, "/v1/batch", Some(KEY), two);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["rejected"][0]["index"], json!(1));
    assert_eq!(reply.body["rejected"][0]["field"], json!("message"));

    // Messages per batch.
    let many = |n: usize| {
        let items: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"type":"track","userId":"u4","event":"M","messageId":"n{n}-{i}"}}"#)
            })
            .collect();
        format!(r#"{{"batch":[{}]}}"#, items.join(","))
    };
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            Some(KEY),
            many(limits::BATCH_MESSAGES_MAX)
        )
        .status,
        200
    );
    let reply = post(
        &server,
        "/v1/batch",
        Some(KEY),
        many(limits::BATCH_MESSAGES_MAX + 1),
    );
    assert_eq!(
        (reply.status, reply.body["field"].as_str()),
        (400, Some("batch"))
    );

    // Id and event-name lengths.
    let id = |n: usize| format!(r#"{{"userId":"{}","event":"E"}}"#, "i".repeat(n));
    assert_eq!(
        post(&server, "/v1/track", Some(KEY), id(limits::ID_BYTES_MAX)).status,
        200
    );
    let reply = post(
        &server,
        "/v1/track",
        Some(KEY),
        id(limits::ID_BYTES_MAX + 1),
    );
    assert_eq!(
        (reply.status, reply.body["field"].as_str()),
        (400, Some("userId"))
    );
    let name = |n: usize| format!(r#"{{"userId":"u5","event":"{}"}}"#, "e".repeat(n));
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some(KEY),
            name(limits::EVENT_NAME_BYTES_MAX)
        )
        .status,
        200
    );
    let reply = post(
        &server,
        "/v1/track",
        Some(KEY),
        name(limits::EVENT_NAME_BYTES_MAX + 1),
    );
    assert_eq!(
        (reply.status, reply.body["field"].as_str()),
        (400, Some("event"))
    );

    let stored = stored_events(&server, &token);
    let expected = 2 + FULL_BATCH_MESSAGES + 1 + limits::BATCH_MESSAGES_MAX + 1 + 1;
    assert_eq!(stored.len(), expected);
}

#[test]
fn retried_messages_are_stored_once_per_source() {
    let (_dir, server, token) = server();
    let track = r#"{"userId":"u1","event":"Clicked","messageId":"retry-1"}"#;
    for _ in 0..3 {
        assert_eq!(post(&server, "/v1/track", Some(KEY), track).status, 200);
    }
    // The same id inside one batch, and again in a later batch.
    let batch = r#"{"batch":[{"type":"track","userId":"u1","event":"Clicked","messageId":"retry-2"},
                            {"type":"track","userId":"u1","event":"Clicked","messageId":"retry-2"},
                            {"type":"track","userId":"u1","event":"Clicked","messageId":"retry-1"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), batch).status, 200);
    // Another source (write key) has its own message ids.
    assert_eq!(
        post(&server, "/v1/track", Some("other-key"), track).status,
        200
    );
    let stored: Vec<(String, String)> = stored_events(&server, &token)
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().into(),
                e["message_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        vec![
            ("default".into(), "retry-1".into()),
            ("default".into(), "retry-2".into()),
            ("other".into(), "retry-1".into())
        ]
    );
    assert_eq!(
        counter(&server, "bellwether_ingest_deduplicated_total"),
        4.0
    );

    // After a restart the index is rebuilt from the stored events.
    let dir = server.data_dir.clone();
    drop(server);
    let server = Server::start(&dir, &[]);
    assert_eq!(post(&server, "/v1/track", Some(KEY), track).status, 200);
    assert_eq!(stored_events(&server, &token).len(), 3);
    assert_eq!(
        counter(&server, "bellwether_ingest_deduplicated_total"),
        1.0
    );
}

#[test]
fn write_key_works_as_basic_user_or_in_the_body_and_gzip_bodies_are_read() {
    let (_dir, server, token) = server();
    assert_eq!(
        post(
            &server,
            "/v1/track",
            None,
            format!(r#"{{"writeKey":"{KEY}","userId":"u1","event":"Body key"}}"#)
        )
        .status,
        200
    );
    let batch = format!(
        r#"{{"writeKey":"{KEY}","batch":[{{"type":"track","userId":"u1","event":"Batch body key"}}]}}"#
    );
    assert_eq!(post(&server, "/v1/import", None, batch).status, 200);
    let gz = gzip(br#"{"batch":[{"type":"track","userId":"u1","event":"Zipped"}]}"#);
    assert_eq!(
        post_with(
            &server,
            "/v1/batch",
            Some(KEY),
            &[("content-encoding", "gzip")],
            gz
        )
        .status,
        200
    );
    let events: Vec<Value> = stored_events(&server, &token)
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(
        events,
        vec![json!("Body key"), json!("Batch body key"), json!("Zipped")]
    );
}

#[test]
fn timestamps_are_corrected_for_client_clock_skew_from_sent_at() {
    let (_dir, server, token) = server();
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    // The client clock runs 2 hours fast: the event happened 10 minutes before sending.
    let client_now = now + chrono::Duration::hours(2);
    let body = format!(
        r#"{{"batch":[{{"type":"track","userId":"u1","event":"Skewed","timestamp":"{}"}}],"sentAt":"{}"}}"#,
        fmt(client_now - chrono::Duration::minutes(10)),
        fmt(client_now)
    );
    assert_eq!(post(&server, "/v1/batch", Some(KEY), body).status, 200);
    // Without sentAt the timestamp is taken as given.
    let body = r#"{"userId":"u1","event":"Historic","timestamp":"2025-03-01T12:00:00+02:00"}"#;
    assert_eq!(post(&server, "/v1/track", Some(KEY), body).status, 200);
    let events = stored_events(&server, &token);
    let skewed =
        chrono::DateTime::parse_from_rfc3339(events[0]["timestamp"].as_str().unwrap()).unwrap();
    let error_ms = (skewed.timestamp_millis()
        - (now - chrono::Duration::minutes(10)).timestamp_millis())
    .abs();
    assert!(
        error_ms < 5_000,
        "corrected timestamp {skewed} is {error_ms} ms off"
    );
    assert_eq!(events[1]["timestamp"], json!("2025-03-01T10:00:00.000Z"));
}

#[test]
fn account_of_an_event_follows_membership_history_alias_and_context_group_id() {
    let (_dir, server, token) = server();
    let body = r#"{"batch":[
        {"type":"track","anonymousId":"anon-7","event":"Visited Pricing","timestamp":"2026-01-01T09:00:00Z"},
        {"type":"group","userId":"u1","groupId":"acct-a","traits":{"name":"A Corp","plan":"pro"},"timestamp":"2026-01-02T00:00:00Z"},
        {"type":"track","userId":"u1","event":"In A","timestamp":"2026-01-05T00:00:00Z"},
        {"type":"group","userId":"u1","groupId":"acct-b","timestamp":"2026-02-01T00:00:00Z"},
        {"type":"track","userId":"u1","event":"In B","timestamp":"2026-02-03T00:00:00Z"},
        {"type":"track","userId":"u1","event":"Late, in A","timestamp":"2026-01-20T00:00:00Z"},
        {"type":"track","userId":"u1","event":"Explicit","timestamp":"2026-02-04T00:00:00Z","context":{"groupId":"acct-c"}},
        {"type":"alias","previousId":"anon-7","userId":"u1","timestamp":"2026-01-02T00:00:01Z"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), body).status, 200);
    let events = stored_events(&server, &token);
    let by_event = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == json!(name))
            .unwrap()
            .clone()
    };
    assert_eq!(by_event("In A")["account_id"], json!("acct-a"));
    assert_eq!(by_event("In B")["account_id"], json!("acct-b"));
    assert_eq!(by_event("Late, in A")["account_id"], json!("acct-a"));
    assert_eq!(by_event("Explicit")["account_id"], json!("acct-c"));
    // The anonymous visit belongs to u1 once aliased; it predates the first group call, so
    // it goes to the first account u1 joined.
    let visit = by_event("Visited Pricing");
    assert_eq!(visit["user_id"], json!("u1"));
    assert_eq!(visit["account_id"], json!("acct-a"));
    // Filters of the events API use the resolved user and account.
    let reply = get(
        &server,
        "/api/v1/events?since=2000-01-01&account=acct-b",
        Some(&token),
    );
    let names: Vec<&Value> = reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"])
        .collect();
    assert_eq!(
        names,
        vec![&json!(null), &json!("In B")],
        "the group call itself and In B"
    );
}

#[test]
fn full_queue_answers_503_and_a_200_means_committed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = limits::BATCH_BYTES_MAX.to_string();
    let server = Server::start(dir.path(), &[("BELLWETHER_QUEUE_BYTES_MAX", &queue)]);
    let token = create_token(dir.path(), "read");
    // Hold the database's write lock, as another writer would: the writer cannot commit.
    let lock = rusqlite::Connection::open(dir.path().join("bellwether.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let full = full_batch(limits::BATCH_BYTES_MAX, "u1", "Held");
    let base = server.base.clone();
    let sender = std::thread::spawn(move || {
        post(&Server::attach(&base), "/v1/batch", Some(KEY), full).status
    });
    // Wait until the held batch fills the queue.
    let mut waited = 0;
    while counter(&server, "bellwether_ingest_queue_bytes") < limits::BATCH_BYTES_MAX as f64 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
        assert!(waited < 1_000, "the batch never reached the queue");
    }
    let reply = post(
        &server,
        "/v1/track",
        Some(KEY),
        r#"{"userId":"u1","event":"Refused"}"#,
    );
    assert_eq!(reply.status, 503);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert!(reply.body["reason"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    assert_eq!(get(&server, "/readyz", None).status, 503);
    assert!(!sender.is_finished(), "no answer before the commit");
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(sender.join().unwrap(), 200);
    let events = stored_events(&server, &token);
    assert_eq!(events.len(), FULL_BATCH_MESSAGES);
    assert!(events.iter().all(|e| e["event"] == json!("Held")));
    assert_eq!(
        counter(
            &server,
            "bellwether_ingest_rejected_total{reason=\"queue_full\"}"
        ),
        1.0
    );
    assert_eq!(get(&server, "/readyz", None).status, 200);
}

#[test]
fn events_api_needs_a_token_and_serves_messages_as_received() {
    let (_dir, server, token) = server();
    let body = r#"{"userId":"u1","event":"Exported","properties":{"rows":3},"messageId":"raw-1","custom":{"kept":true}}"#;
    assert_eq!(post(&server, "/v1/track", Some(KEY), body).status, 200);
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some(KEY),
            r#"{"userId":"u1","event":"No id"}"#
        )
        .status,
        200
    );
    let reply = get(&server, "/api/v1/events?since=2000-01-01", None);
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(get(&server, "/api/v1/events", Some("bw_wrong")).status, 401);
    let reply = get(&server, "/api/v1/events?since=someday", Some(&token));
    assert_eq!(
        (reply.status, reply.body["field"].as_str()),
        (400, Some("since"))
    );
    let reply = get(
        &server,
        "/api/v1/events?since=2000-01-01&format=ndjson",
        Some(&token),
    );
    assert_eq!(reply.status, 200);
    let text = match reply.body {
        Value::String(text) => text,
        // A single line of NDJSON is also one JSON value.
        other => other.to_string(),
    };
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["custom"], json!({"kept": true}));
    assert_eq!(lines[0]["messageId"], json!("raw-1"));
    assert!(lines[0]["receivedAt"].as_str().unwrap().ends_with('Z'));
    // A message sent without messageId shows the id bellwether gave it.
    assert_eq!(lines[1]["messageId"].as_str().unwrap().len(), 36);
    assert_eq!(
        stored_raw(&server.data_dir),
        lines,
        "the CLI prints the same as the API"
    );
}

#[test]
fn every_response_carries_security_headers() {
    let (_dir, server, token) = server();
    let agent = agent();
    let checks = [
        agent.get(&server.url("/healthz")).call().unwrap(),
        agent
            .get(&server.url("/api/v1/events"))
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap(),
        agent.get(&server.url("/api/v1/events")).call().unwrap(),
        agent
            .post(&server.url("/v1/track"))
            .send(&b"{}"[..])
            .unwrap(),
        agent.get(&server.url("/no/such/page")).call().unwrap(),
    ];
    for response in checks {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            header("x-content-type-options"),
            "nosniff",
            "{:?}",
            response.status()
        );
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
        assert_eq!(header("cache-control"), "no-store");
    }
    let script = agent.get(&server.url("/js/activity.js")).call().unwrap();
    assert_eq!(
        script.headers().get("cache-control").unwrap(),
        "public, max-age=3600",
        "the script keeps its own caching"
    );
}

#[test]
fn health_and_metrics_endpoints_report_state() {
    let (_dir, server, _token) = server();
    assert_eq!(get(&server, "/healthz", None).status, 200);
    assert_eq!(get(&server, "/readyz", None).body["ready"], json!(true));
    post(
        &server,
        "/v1/track",
        Some(KEY),
        r#"{"userId":"u","event":"E","messageId":"m"}"#,
    );
    post(
        &server,
        "/v1/track",
        Some(KEY),
        r#"{"userId":"u","event":"E","messageId":"m"}"#,
    );
    post(
        &server,
        "/v1/track",
        Some(KEY),
        r#"{"userId":"u","event":"E","timestamp":"x"}"#,
    );
    post(
        &server,
        "/v1/track",
        Some("nope"),
        r#"{"userId":"u","event":"E"}"#,
    );
    assert_eq!(counter(&server, "bellwether_ingest_accepted_total"), 1.0);
    assert_eq!(
        counter(&server, "bellwether_ingest_deduplicated_total"),
        1.0
    );
    assert_eq!(
        counter(
            &server,
            "bellwether_ingest_rejected_total{reason=\"bad_timestamp\"}"
        ),
        1.0
    );
    assert_eq!(
        counter(
            &server,
            "bellwether_ingest_rejected_total{reason=\"unauthorized\"}"
        ),
        1.0
    );
    assert_eq!(
        counter(&server, "bellwether_store_commit_seconds_count"),
        2.0
    );
    // Each request was answered after its own group's WAL sync (the second was sent after).
    assert_eq!(counter(&server, "bellwether_store_sync_seconds_count"), 2.0);
    assert_eq!(counter(&server, "bellwether_ingest_queue_bytes"), 0.0);
    // The one stored event is id 1; the lag is what the rollups have not read yet (one
    // scrape), and the rollup worker catches up.
    let text = get(&server, "/metrics", None)
        .body
        .as_str()
        .unwrap()
        .to_string();
    let series = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(series("bellwether_store_last_event_id"), 1.0);
    assert_eq!(
        series("bellwether_rollup_lag_events"),
        1.0 - series("bellwether_rollup_last_event_id")
    );
    let waited = std::time::Instant::now();
    while counter(&server, "bellwether_rollup_last_event_id") < 1.0 {
        assert!(
            waited.elapsed().as_secs() < 30,
            "the rollups never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(counter(&server, "bellwether_rollup_lag_events"), 0.0);
}

#[test]
fn a_source_over_its_rate_limit_gets_429_and_browsers_need_an_allowed_origin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    std::fs::write(
        &config,
        "[ingest]\nrate_limit_per_second = 5\ncors_origins = [\"https://app.example.com\"]\n[ingest.rate_limits]\nother = 0\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &[("BELLWETHER_CONFIG", config.to_str().unwrap())],
    );
    let track = |id: &str| json!({"type": "track", "userId": "u1", "event": "E", "messageId": id});
    let batch = |ids: &[&str]| {
        json!({"batch": ids.iter().map(|i| track(i)).collect::<Vec<_>>()}).to_string()
    };
    // A second's allowance (5) passes at once; the next message is refused with Retry-After.
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            Some(KEY),
            batch(&["a1", "a2", "a3", "a4", "a5"])
        )
        .status,
        200
    );
    let over = post(&server, "/v1/track", Some(KEY), track("a6").to_string());
    assert_eq!(over.status, 429, "{:?}", over.body);
    assert_eq!(over.body["field"], "writeKey");
    assert!(
        over.retry_after
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|r| r >= 1),
        "{:?}",
        over.retry_after
    );
    // A batch larger than a second's allowance can never pass: a 413 naming the limit, not
    // a 429 that retrying would never get past.
    let big = post(
        &server,
        "/v1/batch",
        Some(KEY),
        batch(&["b1", "b2", "b3", "b4", "b5", "b6"]),
    );
    assert_eq!(big.status, 413, "{:?}", big.body);
    assert_eq!(big.body["field"], "batch");
    assert!(
        big.body["reason"]
            .as_str()
            .unwrap()
            .contains("batches of at most 5"),
        "{:?}",
        big.body
    );
    assert_eq!(big.retry_after, None);
    // Another source has no limit (`other = 0`).
    for i in 0..12 {
        assert_eq!(
            post(
                &server,
                "/v1/track",
                Some("other-key"),
                track(&format!("o{i}")).to_string()
            )
            .status,
            200
        );
    }
    // Refused messages were not stored; the limit refills.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(
        post(&server, "/v1/track", Some(KEY), track("a6").to_string()).status,
        200
    );
    let token = create_token(dir.path(), "read");
    let ids: Vec<String> = stored_events(&server, &token)
        .iter()
        .map(|e| e["message_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ids.iter().filter(|i| i.starts_with('a')).count(),
        6,
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.starts_with('b')), "{ids:?}");
    assert_eq!(
        counter(
            &server,
            "bellwether_ingest_rejected_total{reason=\"rate_limited\"}"
        ),
        1.0
    );

    // CORS: a preflight from the allowed origin is answered; another origin gets no grant.
    let preflight = |origin: &str| {
        agent()
            .options(&server.url("/v1/track"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .call()
            .expect("OPTIONS")
    };
    let allowed = preflight("https://app.example.com");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    let methods = allowed
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let refused = preflight("https://evil.example.com");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}
