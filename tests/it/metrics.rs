//! The metrics engine against a small fixture whose every expected number is worked out by
//! hand in the comments. As-of day: Sunday 2026-03-15. Account `acme` lives in
//! Europe/Stockholm (UTC+1 in March 2026, UTC+2 from 2025-03-30 to 2025-10-26).
//!
//! Windows at 2026-03-15: 7 d = 03-09..03-15, 14 d = 03-02..03-15, 28 d = 02-16..03-15,
//! 30 d = 02-14..03-15, the 30 d before = 01-15..02-13, 90 d = 2025-12-16..03-15,
//! 180 d = 2025-09-17..03-15. The last four complete weeks: 02-16..02-22, 02-23..03-01,
//! 03-02..03-08, 03-09..03-15.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::support::*;

pub(super) const AS_OF: &str = "2026-03-15";

const CONFIG: &str = r#"
[currency]
report = "USD"
[currency.rates]
EUR = 1.1

[metrics]
key_actions = ["Report Created"]
value_feature = "Report Created"
[metrics.features]
"Dashboard *" = "dashboards"
[metrics.plan_features]
pro = ["Report Created", "dashboards", "Export", "Share"]
"#;

pub(super) fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    std::fs::write(&config, CONFIG).unwrap();
    (dir, config)
}

pub(super) fn track(id: &str, user: &str, event: &str, ts: &str) -> Value {
    json!({"type": "track", "messageId": id, "userId": user, "event": event, "timestamp": ts})
}

pub(super) fn group(id: &str, user: &str, account: &str, ts: &str) -> Value {
    json!({"type": "group", "messageId": id, "userId": user, "groupId": account, "timestamp": ts})
}

pub(super) fn send(server: &Server, batch: Vec<Value>) {
    let reply = post(
        server,
        "/v1/batch",
        Some(KEY),
        json!({"batch": batch}).to_string(),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

fn create(server: &Server, token: &str, kind: &str, body: Value) {
    let reply = post_with(
        server,
        &format!("/api/v1/{kind}"),
        None,
        &[("authorization", &format!("Bearer {token}"))],
        body.to_string(),
    );
    assert_eq!(reply.status, 201, "{kind}: {:?}", reply.body);
}

/// `bellwether metrics --format json` rows by account id (it brings the rollups up to date first).
pub(super) fn export(dir: &Path, config: &Path) -> serde_json::Map<String, Value> {
    let out = cli(
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "metrics",
            "--as-of",
            AS_OF,
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| (r["account_id"].as_str().unwrap().to_string(), r))
        .collect()
}

fn ureq_put(server: &Server, path: &str, token: &str, body: Value) -> u16 {
    agent()
        .put(&server.url(path))
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .expect("PUT")
        .status()
        .as_u16()
}

fn close(actual: &Value, expected: f64, what: &str) {
    let x = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (x - expected).abs() < 1e-9,
        "{what}: expected {expected}, got {x}"
    );
}

/// Every record of the fixture, by kind, in an order that creates accounts first.
pub(super) fn record_bodies() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for account in [
        json!({"account_id": "acme", "segment": "pro", "plan": "pro", "timezone": "Europe/Stockholm"}),
        json!({"account_id": "beta", "segment": "pro", "plan": "pro"}),
        json!({"account_id": "zero", "segment": "basic", "plan": "basic"}),
        json!({"account_id": "holding", "segment": "enterprise"}),
        json!({"account_id": "north", "segment": "enterprise", "parent_id": "holding"}),
        json!({"account_id": "south", "segment": "enterprise", "parent_id": "holding"}),
    ] {
        out.push(("accounts", account));
    }
    for sub in [
        // acme renews on the last day of Q1: 2025-04-01..2026-03-31, then 2026-04-01..2027-03-31.
        json!({"subscription_id": "a1", "account_id": "acme", "product": "core", "seats": 4, "arr": 1200, "currency": "USD",
               "start_date": "2025-04-01", "end_date": "2026-03-31", "outcome": "renewed",
               "provisioned_at": "2025-04-03T10:00:00Z", "go_live_at": "2025-04-15T09:00:00Z"}),
        json!({"subscription_id": "a2", "account_id": "acme", "product": "core", "seats": 6, "arr": 1500, "currency": "USD",
               "start_date": "2026-04-01", "end_date": "2027-03-31"}),
        // north pays in EUR (1.1 USD) and adds a second product on 2026-02-01.
        json!({"subscription_id": "n1", "account_id": "north", "product": "core", "seats": 5, "arr": 1000, "currency": "EUR",
               "start_date": "2025-07-01", "end_date": "2026-06-30"}),
        json!({"subscription_id": "n2", "account_id": "north", "product": "addon", "seats": 0, "arr": 500, "currency": "EUR",
               "start_date": "2026-02-01", "end_date": "2026-06-30"}),
        // south churns on the last day of Q1.
        json!({"subscription_id": "s1", "account_id": "south", "product": "core", "seats": 10, "arr": 2000, "currency": "USD",
               "start_date": "2025-01-01", "end_date": "2026-03-31", "outcome": "churned"}),
        // zero: a contract with zero seats, open-ended, new in Q1.
        json!({"subscription_id": "z1", "account_id": "zero", "product": "core", "seats": 0, "arr": 0, "currency": "USD", "start_date": "2026-01-15"}),
    ] {
        out.push(("subscriptions", sub));
    }
    for ticket in [
        // t1: response 2 h, resolved after 24 h, inside 90 d.
        json!({"ticket_id": "t1", "account_id": "acme", "type": "bug", "opened_at": "2026-03-01T10:00:00Z",
               "first_response_at": "2026-03-01T12:00:00Z", "resolved_at": "2026-03-02T10:00:00Z"}),
        // t2: open and escalated, response 1 h.
        json!({"ticket_id": "t2", "account_id": "acme", "type": "bug", "opened_at": "2026-03-10T08:00:00Z",
               "first_response_at": "2026-03-10T09:00:00Z", "escalated": true}),
        // t3: opened before the window, resolved 2026-01-01 after 1464 h; response outside.
        json!({"ticket_id": "t3", "account_id": "acme", "type": "question", "opened_at": "2025-11-01T00:00:00Z",
               "first_response_at": "2025-11-01T06:00:00Z", "resolved_at": "2026-01-01T00:00:00Z"}),
        // t4: opened 23:30 Stockholm time on the as-of day: in the window, open.
        json!({"ticket_id": "t4", "account_id": "acme", "type": "question", "opened_at": "2026-03-15T22:30:00Z"}),
        // t5: resolved at 00:30 on 03-16 in Stockholm (still 03-15 in UTC): open at the end of 03-15.
        json!({"ticket_id": "t5", "account_id": "acme", "type": "billing", "opened_at": "2026-02-01T00:00:00Z",
               "first_response_at": "2026-02-01T04:00:00Z", "resolved_at": "2026-03-15T23:30:00Z"}),
    ] {
        out.push(("tickets", ticket));
    }
    let answers = [
        ("r1", Some("u1"), "nps", json!(10), "2025-10-01T10:00:00Z"),
        ("r2", Some("u1"), "nps", json!(3), "2026-02-01T10:00:00Z"), // u1's latest: detractor
        ("r3", Some("u2"), "nps", json!(9), "2026-03-01T10:00:00Z"), // promoter
        ("r4", Some("u3"), "nps", json!(7), "2026-03-02T10:00:00Z"), // passive
        ("r5", None, "nps", json!(0), "2026-03-03T10:00:00Z"),       // anonymous detractor
        ("r6", Some("u4"), "nps", json!(0), "2025-09-01T10:00:00Z"), // outside 180 d
        ("r7", Some("u1"), "csat", json!(5), "2026-03-01T10:00:00Z"),
        ("r8", Some("u2"), "csat", json!(4), "2026-03-02T10:00:00Z"),
        ("r9", Some("u3"), "csat", json!(2), "2026-03-03T10:00:00Z"),
        ("r10", Some("u3"), "csat", json!(1), "2025-12-01T10:00:00Z"), // outside 90 d
        ("r11", Some("u1"), "ces", json!(6), "2026-03-01T10:00:00Z"),
        ("r12", Some("u2"), "ces", json!(3), "2026-03-02T10:00:00Z"),
        (
            "r13",
            Some("u1"),
            "go_live_recommend",
            json!("yes"),
            "2025-04-20T10:00:00Z",
        ),
        (
            "r14",
            Some("u2"),
            "go_live_recommend",
            json!("no"),
            "2025-04-21T10:00:00Z",
        ),
    ];
    for (id, user, kind, score, at) in answers {
        out.push(("survey_responses", json!({"response_id": id, "account_id": "acme", "user_id": user, "kind": kind, "score": score, "answered_at": at})));
    }
    for (id, category, at) in [
        ("g1", "reports", "2026-03-01T10:00:00Z"),
        ("g2", "ui", "2026-02-01T10:00:00Z"),
        ("g3", "ui", "2025-11-01T10:00:00Z"),
    ] {
        out.push(("suggestions", json!({"suggestion_id": id, "account_id": "acme", "title": "more", "category": category, "created_at": at})));
    }
    for (date, value) in [
        ("2026-01-31", 10.0),
        ("2026-02-28", 16.0),
        ("2026-03-31", 30.0),
    ] {
        out.push((
            "kpis",
            json!({"account_id": "acme", "name": "hours_saved", "date": date, "value": value}),
        ));
    }
    out
}

pub(super) fn records(server: &Server, token: &str) {
    for (kind, body) in record_bodies() {
        create(server, token, kind, body);
    }
}

/// The first events: acme's u1 and u2, u3 still in beta, beta's two heavy users, the
/// holding's children, an anonymous visit.
pub(super) fn first_batch() -> Vec<Value> {
    let mut batch = vec![
        group("g-u1", "u1", "acme", "2026-01-01T00:00:00Z"),
        group("g-u2", "u2", "acme", "2026-01-01T00:00:00Z"),
        group("g-u3", "u3", "beta", "2026-01-01T00:00:00Z"),
        group("g-u5", "u5", "beta", "2026-01-01T00:00:00Z"),
        group("g-u6", "u6", "beta", "2026-01-01T00:00:00Z"),
        group("g-u7", "u7", "north", "2026-01-01T00:00:00Z"),
        group("g-u8", "u8", "south", "2026-01-01T00:00:00Z"),
        // u1: 23:30Z on 03-14 is 00:30 on 03-15 in Stockholm.
        track("e1", "u1", "Signed In", "2026-03-14T23:30:00Z"),
        track("e2", "u1", "Report Created", "2026-03-14T23:35:00Z"),
        // u1 in the previous 30 days; its dashboard use makes `dashboards` not new.
        track("e10", "u1", "Signed In", "2026-01-20T09:00:00Z"),
        track("e12", "u1", "Dashboard Opened", "2026-01-20T09:05:00Z"),
        // u2 on 03-03: login, a feature, two heartbeats in one minute -> 3 minutes.
        track("e3", "u2", "Signed In", "2026-03-03T10:00:00Z"),
        track("e4", "u2", "Dashboard Opened", "2026-03-03T10:01:00Z"),
        track("e5", "u2", "Active Ping", "2026-03-03T10:02:30Z"),
        track("e6", "u2", "Active Ping", "2026-03-03T10:02:50Z"),
        // u3 while in beta, and once more on 03-12 (moved to acme by a group call sent later).
        track("e7", "u3", "Dashboard Opened", "2026-03-05T12:00:00Z"),
        track("e8", "u3", "Dashboard Opened", "2026-03-12T12:00:00Z"),
        // An anonymous visit, linked to u2 later.
        json!({"type": "page", "messageId": "e9", "anonymousId": "anon-9", "name": "Pricing", "timestamp": "2026-03-13T09:00:00Z"}),
        // The holding's children: u7 in north, u8 in south, u9 in both in the same minute.
        track("e20", "u7", "Dashboard Opened", "2026-03-14T12:00:00Z"),
        track("e21", "u8", "Dashboard Opened", "2026-03-14T12:00:00Z"),
        json!({"type": "track", "messageId": "e22", "userId": "u9", "event": "Dashboard Opened", "timestamp": "2026-03-15T10:00:10Z", "context": {"groupId": "north"}}),
        json!({"type": "track", "messageId": "e23", "userId": "u9", "event": "Dashboard Opened", "timestamp": "2026-03-15T10:00:20Z", "context": {"groupId": "south"}}),
    ];
    // beta's u5 and u6 log in on Monday to Wednesday of each of the last four weeks, with a
    // key action 5 minutes later; u6's last session (Wednesday 03-11) has none.
    let days = [
        "02-16", "02-17", "02-18", "02-23", "02-24", "02-25", "03-02", "03-03", "03-04", "03-09",
        "03-10", "03-11",
    ];
    for user in ["u5", "u6"] {
        for day in days {
            batch.push(track(
                &format!("{user}-in-{day}"),
                user,
                "Signed In",
                &format!("2026-{day}T09:00:00Z"),
            ));
            let action = if user == "u6" && day == "03-11" {
                "Dashboard Opened"
            } else {
                "Report Created"
            };
            batch.push(track(
                &format!("{user}-do-{day}"),
                user,
                action,
                &format!("2026-{day}T09:05:00Z"),
            ));
        }
    }
    batch
}

/// Late and out-of-order: u3's move to acme dated 03-10, the alias of anon-9 to u2, a
/// retry of e2, and an event dated a week before the newest.
pub(super) fn second_batch() -> Vec<Value> {
    vec![
        group("g-u3-acme", "u3", "acme", "2026-03-10T00:00:00Z"),
        json!({"type": "alias", "messageId": "al-9", "previousId": "anon-9", "userId": "u2", "timestamp": "2026-03-14T00:00:00Z"}),
        track("e2", "u1", "Report Created", "2026-03-14T23:35:00Z"),
        track("e11", "u1", "Doc Viewed", "2026-03-08T08:00:00Z"),
    ]
}

#[test]
fn every_metric_matches_the_hand_computed_fixture() {
    let (dir, config) = setup();
    let server = Server::start(
        dir.path(),
        &[("BELLWETHER_CONFIG", config.to_str().unwrap())],
    );
    let admin = create_token(dir.path(), "admin");
    records(&server, &admin);
    send(&server, first_batch());

    // Before the late events: acme has u2 on 03-03 and u1 on 03-15 only; u3 counts in beta.
    let early = export(dir.path(), &config);
    assert_eq!(early["acme"]["active_days_14d"], 2);
    assert_eq!(early["acme"]["active_users_30d"], 2);
    assert_eq!(
        early["beta"]["active_days_14d"], 8,
        "03-02..04, 03-05, 03-09..11 and u3's 03-12"
    );

    send(&server, second_batch());
    let rows = export(dir.path(), &config);
    let acme = &rows["acme"];
    // Active days (Stockholm): 03-03 u2, 03-08 u1 (late), 03-12 u3 (moved), 03-13 u2 (alias), 03-15 u1.
    assert_eq!(acme["active_days_14d"], 5);
    assert_eq!(
        acme["usage_frequency"], "weekly",
        "5 < 10 days, active in both halves"
    );
    // Minutes: u1 23:30, 23:35 (03-15) + 08:00 (03-08) = 3; u2 10:00, 10:01, 10:02 + 09:00 = 4; u3 1.
    assert_eq!(acme["active_minutes_14d"], 8);
    assert_eq!(acme["active_users_14d"], 3);
    assert_eq!(acme["active_users_30d"], 3);
    assert_eq!(acme["dau"], 1, "u1 on 03-15 local");
    assert_eq!(acme["wau"], 3);
    assert_eq!(acme["mau"], 3);
    close(
        &acme["logins_per_user_week"],
        2.0 / 3.0 / 4.0,
        "2 logins in 28 d / 3 users / 4",
    );
    assert_eq!(acme["seats"], 4);
    close(&acme["license_utilization"], 0.75, "3 users / 4 seats");
    // Features in 30 d: Report Created, Doc Viewed, dashboards (glob); the plan lists 4.
    assert_eq!(acme["features_used_30d"], 3);
    close(&acme["feature_breadth"], 0.75, "3 / 4");
    assert_eq!(
        acme["new_features_30d"], 2,
        "dashboards was first used on 01-20"
    );
    assert_eq!(
        acme["transactions_30d"], 4,
        "e2 (once: the retry is a duplicate), e11, e4, e8"
    );
    close(
        &acme["user_adoption_growth"],
        2.0,
        "3 users now / 1 (u1 on 01-20) - 1",
    );
    close(
        &acme["rate_of_adoption"],
        0.0,
        "nobody logs in 3 times a week",
    );
    assert_eq!(acme["education_events_30d"], 1);
    assert_eq!(acme["time_to_provision_days"], 2, "2025-04-01 -> 04-03");
    assert_eq!(
        acme["time_to_value_days"], 12,
        "go-live 04-15 - provisioned 04-03"
    );
    assert_eq!(
        acme["initial_adoption"],
        json!({"active_users": 0, "transactions": 0})
    );
    close(&acme["go_live_recommend_rate"], 0.5, "one yes, one no");
    assert_eq!(acme["tickets_opened_90d"], 4, "t1 t2 t4 t5");
    assert_eq!(acme["tickets_open"], 3, "t2 t4 t5");
    assert_eq!(acme["tickets_closed_90d"], 2, "t1 t3");
    assert_eq!(
        acme["tickets_by_type"],
        json!({"billing": {"opened_90d": 1, "open": 1, "closed_90d": 0}, "bug": {"opened_90d": 2, "open": 1, "closed_90d": 1}, "question": {"opened_90d": 1, "open": 1, "closed_90d": 1}})
    );
    assert_eq!(acme["escalations_open"], 1);
    close(
        &acme["median_resolution_hours_90d"],
        744.0,
        "(24 + 1464) / 2",
    );
    close(&acme["p90_resolution_hours_90d"], 1320.0, "24 + 0.9 * 1440");
    close(&acme["median_first_response_hours_90d"], 2.0, "of 1, 2, 4");
    close(
        &acme["nps"],
        -25.0,
        "latest per person: 3 (u1), 9 (u2), 7 (u3), 0 (anonymous): (1 - 2) / 4",
    );
    close(&acme["csat"], 2.0 / 3.0, "5, 4, 2");
    close(&acme["ces"], 4.5, "6, 3");
    assert_eq!(acme["suggestions_90d"], 2);
    assert_eq!(
        acme["suggestions_by_category"],
        json!({"reports": 1, "ui": 1})
    );
    assert_eq!(
        acme["business_results"],
        json!({"hours_saved": {"value": 16.0, "date": "2026-02-28", "change": 6.0}})
    );

    // beta (UTC, no subscription): seats 0, utilization null; u5 adopted, u6 and u3 not.
    let beta = &rows["beta"];
    assert_eq!(
        beta["active_days_14d"], 7,
        "03-02..04, 03-05, 03-09..11: u3's 03-12 moved to acme"
    );
    assert_eq!(
        beta["active_minutes_14d"], 25,
        "u5 and u6: 2 minutes on 6 days each, u3 1"
    );
    assert_eq!(beta["seats"], 0);
    assert_eq!(beta["license_utilization"], Value::Null);
    assert_eq!(beta["time_to_provision_days"], Value::Null);
    close(&beta["rate_of_adoption"], 1.0 / 3.0, "u5 of u3, u5, u6");
    // Engagement in segment pro (acme, beta), mid-rank percentiles:
    // acme: days 5 vs 7 -> 25, minutes 8 vs 25 -> 25, users 3 = 3 -> 50, utilization alone -> 50.
    close(
        &acme["engagement_score"],
        (25.0 + 25.0 + 50.0 + 50.0) / 4.0,
        "acme engagement",
    );
    // beta: 75, 75, 50, utilization null and left out.
    close(
        &beta["engagement_score"],
        (75.0 + 75.0 + 50.0) / 3.0,
        "beta engagement",
    );
    assert_eq!(rows["zero"]["seats"], 0);
    assert_eq!(rows["zero"]["license_utilization"], Value::Null);
    close(
        &rows["zero"]["engagement_score"],
        50.0,
        "alone in its segment",
    );

    // The CSV has exactly the documented columns, null as empty.
    let out = cli(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "metrics",
            "--as-of",
            AS_OF,
        ],
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header
            .starts_with("account_id,segment,active_days_14d,usage_frequency,active_minutes_14d,"),
        "{header}"
    );
    let beta_line = csv.lines().find(|l| l.starts_with("beta,")).unwrap();
    assert!(
        beta_line.contains(",0,,"),
        "seats 0 then an empty utilization: {beta_line}"
    );

    // Windows are configurable: with a 7-day engagement window acme was active on 03-12,
    // 03-13 and 03-15: fewer than 5 days, active in both halves (..03-12 and 03-13..): weekly.
    let short = dir.path().join("short.toml");
    std::fs::write(
        &short,
        format!(
            "{}[metrics.windows]\nengagement_days = 7\n",
            CONFIG.replace("[metrics]\n", "[metrics]\ndaily_min_active_days = 5\n")
        ),
    )
    .unwrap();
    let out = cli(
        dir.path(),
        &[
            "--config",
            short.to_str().unwrap(),
            "metrics",
            "--as-of",
            AS_OF,
            "--format",
            "json",
        ],
    );
    let short_rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let short_acme = short_rows
        .iter()
        .find(|r| r["account_id"] == "acme")
        .unwrap();
    assert_eq!(short_acme["active_days_14d"], 3);
    assert_eq!(short_acme["active_users_14d"], 3);
    assert_eq!(short_acme["usage_frequency"], "weekly");
    // A bad window is refused with its key.
    std::fs::write(
        &short,
        format!("{CONFIG}[metrics.windows]\nlogins_days = 10\n"),
    )
    .unwrap();
    let out = cli(
        dir.path(),
        &[
            "--config",
            short.to_str().unwrap(),
            "metrics",
            "--as-of",
            AS_OF,
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics.windows.logins_days") && stderr.contains("whole number of weeks"),
        "{stderr}"
    );

    // The API gives the same numbers; a subtree counts people once.
    let token = create_token(dir.path(), "read");
    let reply = get(
        &server,
        &format!("/api/v1/accounts/acme/metrics?as_of={AS_OF}"),
        Some(&token),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(&reply.body["metrics"], acme);
    let holding = get(
        &server,
        &format!("/api/v1/accounts/holding/metrics?as_of={AS_OF}&subtree=true"),
        Some(&token),
    )
    .body;
    // u7 (north), u8 (south), u9 in both in one minute: 3 people, 3 minutes; seats 5 + 10.
    assert_eq!(holding["metrics"]["active_users_14d"], 3);
    assert_eq!(holding["metrics"]["active_minutes_14d"], 3);
    assert_eq!(holding["metrics"]["seats"], 15);
    close(&holding["metrics"]["license_utilization"], 0.2, "3 / 15");
    assert_eq!(rows["north"]["active_minutes_14d"], 2, "u7 and u9");
    assert_eq!(
        rows["holding"]["active_users_14d"], 0,
        "without subtree the parent has no people of its own"
    );
    // Daily series: 03-13 u2 (the aliased visit), 03-14 nobody in Stockholm time, 03-15 u1.
    let series = get(
        &server,
        "/api/v1/accounts/acme/timeseries?metric=dau&from=2026-03-13&to=2026-03-15",
        Some(&token),
    )
    .body;
    let values: Vec<Value> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].clone())
        .collect();
    assert_eq!(values, vec![json!(1), json!(0), json!(1)], "{series}");
    let segments = get(
        &server,
        &format!("/api/v1/segments?as_of={AS_OF}"),
        Some(&token),
    )
    .body;
    let pro = segments["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["segment"] == "pro")
        .unwrap();
    assert_eq!(pro["accounts"], 2);
    close(
        &pro["metrics"]["active_days_14d"]["median"],
        6.0,
        "of 5 and 7",
    );
    close(&pro["metrics"]["active_users_14d"]["sum"], 6.0, "3 + 3");

    // Moving beta to Auckland (UTC+13) moves u3's 12:00Z visit of 03-05 to 03-06 local.
    let dau = |server: &Server| -> Vec<Value> {
        let series = get(
            server,
            "/api/v1/accounts/beta/timeseries?metric=dau&from=2026-03-05&to=2026-03-06",
            Some(&token),
        )
        .body;
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].clone())
            .collect()
    };
    assert_eq!(dau(&server), vec![json!(1), json!(0)]);
    let reply = ureq_put(
        &server,
        "/api/v1/accounts/beta",
        &admin,
        json!({"account_id": "beta", "segment": "pro", "plan": "pro", "timezone": "Pacific/Auckland"}),
    );
    assert_eq!(reply, 200);
    let moved = export(dir.path(), &config);
    assert_eq!(
        moved["beta"]["active_days_14d"], 7,
        "03-02..04 (22:00 local), 03-06, 03-09..11"
    );
    assert_eq!(dau(&server), vec![json!(0), json!(1)]);
    let out = cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "rebuild"],
    );
    assert!(out.status.success());
    assert_eq!(
        export(dir.path(), &config),
        moved,
        "incremental timezone change equals a rebuild"
    );
    let back = ureq_put(
        &server,
        "/api/v1/accounts/beta",
        &admin,
        json!({"account_id": "beta", "segment": "pro", "plan": "pro"}),
    );
    assert_eq!(back, 200);

    // Rebuilding from raw events gives the very same export.
    let out = cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "rebuild"],
    );
    assert!(
        out.status.success(),
        "rebuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(export(dir.path(), &config), rows);

    // Erasing u2 takes their activity out of the rollups.
    let out = cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "delete-user", "u2"],
    );
    assert!(out.status.success());
    let after = export(dir.path(), &config);
    assert_eq!(after["acme"]["active_users_30d"], 2);
    assert_eq!(after["acme"]["active_days_14d"], 3, "03-08, 03-12, 03-15");
}

#[test]
fn outcomes_count_renewals_expansion_and_churn_in_money_and_accounts() {
    let (dir, config) = setup();
    let server = Server::start(
        dir.path(),
        &[("BELLWETHER_CONFIG", config.to_str().unwrap())],
    );
    let admin = create_token(dir.path(), "admin");
    records(&server, &admin);
    let reply = get(
        &server,
        "/api/v1/outcomes?from=2026-01-01&to=2026-04-01&by=all",
        Some(&admin),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let q1 = &reply.body["periods"][0];
    // Active on 01-01: acme 1200, north 1100 (1000 EUR), south 2000 -> 4300.
    assert_eq!(q1["accounts_start"], 3);
    close(&q1["starting_arr"], 4300.0, "start");
    // acme renewed on 03-31 (the period's last day) and continues at 1500: +300.
    assert_eq!(q1["renewals"], 1);
    close(&q1["renewals_arr"], 1200.0, "renewed ARR");
    // north added the addon (500 EUR = 550 USD): expansion and a new product.
    close(&q1["expansion_arr"], 850.0, "300 + 550");
    assert_eq!(q1["accounts_added_product"], 1);
    close(&q1["contraction_arr"], 0.0, "none");
    // south's contract ended 03-31 unrenewed.
    assert_eq!(q1["churned_accounts"], 1);
    close(&q1["churned_arr"], 2000.0, "south");
    assert_eq!(q1["new_accounts"], 1, "zero, from 01-15");
    close(&q1["grr"], 2300.0 / 4300.0, "(4300 - 0 - 2000) / 4300");
    close(&q1["nrr"], 3150.0 / 4300.0, "(4300 - 2000 + 850) / 4300");
    close(&q1["logo_retention"], 2.0 / 3.0, "acme and north of three");
    let by_segment = get(
        &server,
        "/api/v1/outcomes?from=2026-01-01&to=2026-04-01",
        Some(&admin),
    )
    .body;
    let pro = by_segment["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["segment"] == "pro")
        .unwrap();
    close(&pro["nrr"], 1500.0 / 1200.0, "acme alone");
    let bad = get(
        &server,
        "/api/v1/outcomes?from=2026-04-01&to=2026-01-01",
        Some(&admin),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["field"], "from");
}
