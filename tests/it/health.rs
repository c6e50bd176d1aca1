//! Health: on the demo generator's planted truth (power features, bucket rates, backtest),
//! and on a hand-made fixture (awkward segments, scorecard, history and tier changes).

use std::path::Path;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::support::*;

fn json_out(dir: &Path, args: &[&str]) -> Value {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn planted_power_features_rank_first_and_tiers_match_the_planted_rates() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_demo(
        dir.path(),
        &[
            "--accounts",
            "300",
            "--years",
            "3",
            "--end-date",
            "2026-11-20",
        ],
    );
    let truth: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo-input/truth.json")).unwrap())
            .unwrap();
    let marker: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let token = marker["api_token"].as_str().unwrap();

    // 1. The planted power feature of each segment ranks first among its features.
    let rows = json_out(
        dir.path(),
        &["indicators", "--as-of", "2026-11-21", "--format", "json"],
    );
    for (segment, planted) in truth["segments"].as_object().unwrap() {
        let top = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["segment"] == *segment && r["rank"] == 1)
            .unwrap();
        assert_eq!(top["feature"], planted["power_feature"], "{segment}: {top}");
        assert_eq!(top["power_feature"], true);
        assert!(top["auc"].as_f64().unwrap() > 0.6, "{segment}: {top}");
    }

    // 2. With the seed's cut points, every bucket's 95% Wilson interval holds its planted rate.
    let config = dir.path().join("cuts.toml");
    std::fs::write(
        &config,
        "[health]\ncut_points = [1, 6, 11, 16]\nhistory_days = 2\n",
    )
    .unwrap();
    // --force: the seed's cut points are put in force whatever the held-out test says.
    let out = cli(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "recalibrate",
            "--as-of",
            "2026-11-21",
            "--force",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id: i64 = stderr
        .split("stored health model ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let model = get(&server, &format!("/api/v1/models/{id}"), Some(token)).body;
    assert_eq!(model["status"], "promoted");
    assert!(
        model["gate"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "the held-out test is recorded: {}",
        model["gate"]
    );
    for (segment, planted) in truth["segments"].as_object().unwrap() {
        let ours = &model["segments"][segment];
        assert_eq!(
            ours["fallback"], false,
            "{segment} has enough decisions for its own model"
        );
        for (bucket, planted) in ours["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .zip(planted["buckets"].as_array().unwrap())
        {
            let rate = planted["renewal_probability"].as_f64().unwrap();
            let (low, high) = (
                bucket["interval_low"].as_f64().unwrap(),
                bucket["interval_high"].as_f64().unwrap(),
            );
            assert!(
                low <= rate && rate <= high,
                "{segment} {}: planted {rate} outside [{low}, {high}] ({bucket})",
                bucket["label"]
            );
        }
        let labels: Vec<&str> = ours["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, vec!["< 1", "1-6", "6-11", "11-16", "16+"]);
    }

    // 2b. A worse model (a power feature nobody uses) is tested on the last quarter's
    // renewals, rejected with the reason, and the model in force stays.
    let worse = dir.path().join("worse.toml");
    let segments: Vec<&String> = truth["segments"].as_object().unwrap().keys().collect();
    let forced: String = segments
        .iter()
        .map(|s| format!("{s} = \"Nothing Here\"\n"))
        .collect();
    std::fs::write(
        &worse,
        format!("[health]\nhistory_days = 2\n[health.power_features]\n{forced}"),
    )
    .unwrap();
    let out = cli(
        dir.path(),
        &[
            "--config",
            worse.to_str().unwrap(),
            "recalibrate",
            "--as-of",
            "2026-11-21",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let models = get(&server, "/api/v1/models", Some(token)).body;
    let newest = &models["models"][0];
    assert_eq!(newest["status"], "rejected", "{newest}");
    assert!(
        newest["gate"]["reason"]
            .as_str()
            .unwrap()
            .contains("rejected"),
        "{newest}"
    );
    assert!(
        newest["gate"]["decided"].as_u64().unwrap() >= 10,
        "{newest}"
    );
    let in_force = get(
        &server,
        "/api/v1/accounts/acct-0003/health?as_of=2026-11-20",
        Some(token),
    )
    .body;
    assert_eq!(
        in_force["model"]["id"], id,
        "the rejected model is not in force"
    );

    // 3. Backtest a year back: tiers separate renewals better than logins alone.
    let report = json_out(
        dir.path(),
        &[
            "backtest",
            "--as-of",
            "2025-11-20",
            "--horizon-days",
            "365",
            "--format",
            "json",
        ],
    );
    let all = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"] == "all")
        .unwrap();
    assert!(all["decided"].as_u64().unwrap() > 100, "{all}");
    let (tier, logins) = (
        all["auc_tier"].as_f64().unwrap(),
        all["auc_logins_per_user_week"].as_f64().unwrap(),
    );
    assert!(
        tier > logins,
        "tier AUC {tier} should beat logins {logins}: {all}"
    );
    let rate = all["auc_expected_renewal_rate"].as_f64().unwrap();
    assert!(rate > 0.65, "expected renewal rate AUC {rate}");

    // 4. An account's health says which model gave it and why.
    let health = get(
        &server,
        "/api/v1/accounts/acct-0003/health?as_of=2026-11-20",
        Some(token),
    );
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.body["model"]["id"], id);
    let components = health.body["health"]["components"].as_array().unwrap();
    let measures: Vec<&str> = components
        .iter()
        .map(|c| c["measure"].as_str().unwrap())
        .collect();
    assert_eq!(
        measures,
        vec![
            "expected_renewal_rate",
            "window_monthly_uses",
            "window_features_used",
            "nps",
            "escalations_open"
        ]
    );
    assert_eq!(
        health.body["health"]["score_weights"], "learned",
        "pro, enterprise, starter and trial have their own renewals"
    );
    // The score is the renewal estimate its components' contributions explain.
    let score = health.body["health"]["health_score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score));
    let _ = child.kill();
    let _ = child.wait();
}

fn day(offset: i64) -> String {
    (Utc::now().date_naive() + Duration::days(offset)).to_string()
}

fn at(offset: i64, hour: u32) -> String {
    format!("{}T{hour:02}:00:00Z", day(offset))
}

fn track(id: String, user: &str, event: &str, ts: String) -> Value {
    json!({"type": "track", "messageId": id, "userId": user, "event": event, "timestamp": ts})
}

#[test]
fn awkward_segments_fall_back_and_a_fading_account_turns_red_with_a_tier_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    std::fs::write(
        &config,
        "[health]\ncut_points = [1]\nusage_days = 7\nhistory_days = 20\nmin_decided = 4\nmin_outcomes = 2\ntier_hold_days = 2\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &[("BELLWETHER_CONFIG", config.to_str().unwrap())],
    );
    let admin = create_token(dir.path(), "admin");
    let create = |kind: &str, body: Value| {
        let reply = post_with(
            &server,
            &format!("/api/v1/{kind}"),
            None,
            &[("authorization", &format!("Bearer {admin}"))],
            body.to_string(),
        );
        assert_eq!(reply.status, 201, "{kind}: {:?}", reply.body);
    };
    // Segment x: x1, x2 renewed after using Power in the last week of their term (the
    // 7-day window the model learns from, as it scores); x3, x4 churned without. Everybody
    // used Common in that week (AUC 0.5). Segment tiny: one renewal.
    let mut batch = Vec::new();
    for (account, segment, outcome) in [
        ("x1", "x", "renewed"),
        ("x2", "x", "renewed"),
        ("x3", "x", "churned"),
        ("x4", "x", "churned"),
        ("t1", "tiny", "renewed"),
    ] {
        create(
            "accounts",
            json!({"account_id": account, "segment": segment}),
        );
        create(
            "subscriptions",
            json!({"subscription_id": format!("{account}-old"), "account_id": account, "seats": 5, "arr": 1000, "currency": "USD",
                                       "start_date": day(-120), "end_date": day(-61), "outcome": outcome}),
        );
        let user = format!("{account}-u");
        batch.push(json!({"type": "group", "messageId": format!("g-{account}"), "userId": user, "groupId": account, "timestamp": at(-400, 9)}));
        batch.push(track(format!("c-{account}"), &user, "Common", at(-62, 10)));
        if outcome == "renewed" && segment == "x" {
            for d in 0..7 {
                batch.push(track(
                    format!("p-{account}-{d}"),
                    &user,
                    "Power",
                    at(-67 + d, 11),
                ));
            }
        }
    }
    create(
        "subscriptions",
        json!({"subscription_id": "x1-now", "account_id": "x1", "seats": 5, "arr": 1000, "currency": "USD", "start_date": day(-60), "end_date": day(300)}),
    );
    // x1 uses Power daily until 10 days ago, then stops: green while the 7-day window holds
    // uses, red from day -3 on, and held red (2 days) from day -2.
    for d in -30..=-10 {
        batch.push(track(format!("now-{d}"), "x1-u", "Power", at(d, 12)));
    }
    let reply = post(
        &server,
        "/v1/batch",
        Some(KEY),
        json!({"batch": batch}).to_string(),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let out = cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "recalibrate"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let indicators = get(&server, "/api/v1/indicators?segment=x", Some(&admin)).body;
    let rows = indicators["indicators"].as_array().unwrap();
    assert_eq!(rows[0]["feature"], "Power");
    assert_eq!(rows[0]["auc"], 1.0);
    assert_eq!(rows[0]["renewal_rate_users"], 1.0);
    assert_eq!(rows[0]["renewal_rate_non_users"], 0.0);
    assert_eq!(
        rows[0]["warning"],
        Value::Null,
        "2 and 2 meet min_outcomes = 2"
    );
    let common = rows.iter().find(|r| r["feature"] == "Common").unwrap();
    assert_eq!(common["auc"], 0.5, "used alike by all: no separation");
    assert_eq!(
        common["renewal_rate_non_users"],
        Value::Null,
        "nobody did without it"
    );
    // tiny: one decision: unknown, and it says why.
    let tiny = get(&server, "/api/v1/indicators?segment=tiny", Some(&admin)).body;
    assert_eq!(
        tiny["notes"]["tiny"],
        "1 decided renewals (1 renewed, 0 churned): fewer than 4 to say anything; tier unknown",
        "{tiny}"
    );
    assert_eq!(tiny["indicators"], json!([]));
    assert_eq!(
        get(&server, "/api/v1/accounts/t1/health", Some(&admin)).body["health"]["tier"],
        "unknown"
    );
    assert_eq!(
        get(&server, "/api/v1/indicators?segment=nope", Some(&admin)).status,
        404
    );

    // Today x1 has no Power use in 7 days: red. Its expected rate is the posterior of the
    // no-use bucket. Pooled (every segment): no use 1 of 3 (x3, x4 churned, t1 renewed),
    // use 2 of 2, base (4 + 1) / (5 + 2) = 4/7; with 2 pseudo-decisions at 4/7 each: 3/7 and
    // 11/14. Segment x's base (2 + 8/7) / (4 + 2) = 11/21 shifts log-odds by
    // ln((11/10) / (4/3)) = ln(33/40): prior means 99/259 and 121/161. x's cells (0 of 2,
    // 2 of 2) spread less than binomially around them, so the prior strength is the maximum,
    // 200: (200 x 99/259 + 0) / (200 + 2).
    let health = get(&server, "/api/v1/accounts/x1/health", Some(&admin)).body;
    assert_eq!(health["health"]["tier"], "red", "{health}");
    let rate = health["health"]["expected_renewal_rate"].as_f64().unwrap();
    assert!(
        (rate - 200.0 * 99.0 / 259.0 / 202.0).abs() < 1e-12,
        "{rate}"
    );
    assert_eq!(health["health"]["power_feature"], "Power");
    // History: green 12 days ago (uses in the week before), red today; one change event.
    let history = get(
        &server,
        &format!(
            "/api/v1/accounts/x1/health/history?from={}&to={}",
            day(-19),
            day(0)
        ),
        Some(&admin),
    )
    .body;
    let tiers: Vec<&str> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers.len(), 20, "{history}");
    assert_eq!(tiers[19 - 12], "green");
    assert_eq!(tiers[19], "red");
    let engagement = &history["points"][19]["engagement_score"];
    // Segment x today: x1 active on days -13..-10, x2..x4 not at all: 87.5 for days, minutes
    // and users ((3 + 1/2) / 4); utilization only x1 has seats for: 50. (3 x 87.5 + 50) / 4.
    assert_eq!(engagement.as_f64(), Some(78.125), "{engagement}");
    let changes = get(
        &server,
        &format!("/api/v1/tier_changes?since={}&account=x1", day(-19)),
        Some(&admin),
    )
    .body;
    let changes = changes["tier_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (
            changes[0]["from"].as_str(),
            changes[0]["to"].as_str(),
            changes[0]["cause"].as_str()
        ),
        (Some("green"), Some("red"), Some("usage"))
    );
    // The first red day: the 7-day window no longer holds day -10, i.e. day -3; held for
    // tier_hold_days = 2, the tier changes on day -2 (day -3 still shows green).
    assert_eq!(changes[0]["date"], day(-2));
    assert_eq!((tiers[19 - 3], tiers[19 - 2]), ("green", "red"));
    assert_eq!(history["points"][19 - 3]["usage_tier"], "red");
}
