//! Health: on the demo generator's planted truth (power features, bucket rates, backtest),
//! and on a hand-made fixture (awkward segments, scorecard, history and tier changes).

use std::path::Path;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::support::*;

fn json_out(dir: &Path, args: &[&str]) -> Value {
    let out = cli(dir, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn planted_power_features_rank_first_and_tiers_match_the_planted_rates() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_demo(dir.path(), &["--accounts", "300", "--years", "3", "--end-date", "2026-11-20"]);
    let truth: Value = serde_json::from_slice(&std::fs::read(dir.path().join("demo-input/truth.json")).unwrap()).unwrap();
    let marker: Value = serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let token = marker["api_token"].as_str().unwrap();

    // 1. The planted power feature of each segment ranks first among its features.
    let rows = json_out(dir.path(), &["indicators", "--as-of", "2026-11-21", "--format", "json"]);
    for (segment, planted) in truth["segments"].as_object().unwrap() {
        let top = rows.as_array().unwrap().iter().find(|r| r["segment"] == *segment && r["rank"] == 1).unwrap();
        assert_eq!(top["feature"], planted["power_feature"], "{segment}: {top}");
        assert_eq!(top["power_feature"], true);
        assert!(top["auc"].as_f64().unwrap() > 0.6, "{segment}: {top}");
    }

    // 2. With the seed's cut points, every bucket's 95% Wilson interval holds its planted rate.
    let config = dir.path().join("cuts.toml");
    std::fs::write(&config, "[health]\ncut_points = [1, 6, 11, 16]\nhistory_days = 2\n").unwrap();
    let out = cli(dir.path(), &["--config", config.to_str().unwrap(), "recalibrate", "--as-of", "2026-11-21"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id: i64 = stderr.split("stored health model ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let model = get(&server, &format!("/api/v1/models/{id}"), Some(token)).body;
    for (segment, planted) in truth["segments"].as_object().unwrap() {
        let ours = &model["segments"][segment];
        assert_eq!(ours["fallback"], false, "{segment} has enough decisions for its own model");
        for (bucket, planted) in ours["buckets"].as_array().unwrap().iter().zip(planted["buckets"].as_array().unwrap()) {
            let rate = planted["renewal_probability"].as_f64().unwrap();
            let (low, high) = (bucket["wilson_low"].as_f64().unwrap(), bucket["wilson_high"].as_f64().unwrap());
            assert!(low <= rate && rate <= high, "{segment} {}: planted {rate} outside [{low}, {high}] ({bucket})", bucket["label"]);
        }
        let labels: Vec<&str> = ours["buckets"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap()).collect();
        assert_eq!(labels, vec!["< 1", "1-6", "6-11", "11-16", "16+"]);
    }

    // 3. Backtest a year back: tiers separate renewals better than logins alone.
    let report = json_out(dir.path(), &["backtest", "--as-of", "2025-11-20", "--horizon-days", "365", "--format", "json"]);
    let all = report["segments"].as_array().unwrap().iter().find(|s| s["segment"] == "all").unwrap();
    assert!(all["decided"].as_u64().unwrap() > 100, "{all}");
    let (tier, logins) = (all["auc_tier"].as_f64().unwrap(), all["auc_logins_per_user_week"].as_f64().unwrap());
    assert!(tier > logins, "tier AUC {tier} should beat logins {logins}: {all}");
    let rate = all["auc_expected_renewal_rate"].as_f64().unwrap();
    assert!(rate > 0.65, "expected renewal rate AUC {rate}");

    // 4. An account's health says which model gave it and why.
    let health = get(&server, "/api/v1/accounts/acct-0003/health?as_of=2026-11-20", Some(token));
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.body["model"]["id"], id);
    let components = health.body["health"]["components"].as_array().unwrap();
    let measures: Vec<&str> = components.iter().map(|c| c["measure"].as_str().unwrap()).collect();
    assert_eq!(measures, vec!["engagement_score", "escalations_open", "license_utilization", "nps", "tier"]);
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
        "[health]\ncut_points = [1]\nusage_days = 7\nhistory_days = 20\nmin_decided = 4\nmin_outcomes = 2\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &[("BELLWETHER_CONFIG", config.to_str().unwrap())]);
    let admin = create_token(dir.path(), "admin");
    let create = |kind: &str, body: Value| {
        let reply = post_with(&server, &format!("/api/v1/{kind}"), None, &[("authorization", &format!("Bearer {admin}"))], body.to_string());
        assert_eq!(reply.status, 201, "{kind}: {:?}", reply.body);
    };
    // Segment x: x1, x2 renewed after using Power in their term; x3, x4 churned without.
    // Everybody used Common (a feature used by everybody: AUC 0.5). Segment tiny: one renewal.
    let mut batch = Vec::new();
    for (account, segment, outcome) in [("x1", "x", "renewed"), ("x2", "x", "renewed"), ("x3", "x", "churned"), ("x4", "x", "churned"), ("t1", "tiny", "renewed")] {
        create("accounts", json!({"account_id": account, "segment": segment}));
        create("subscriptions", json!({"subscription_id": format!("{account}-old"), "account_id": account, "seats": 5, "arr": 1000, "currency": "USD",
                                       "start_date": day(-120), "end_date": day(-61), "outcome": outcome}));
        let user = format!("{account}-u");
        batch.push(json!({"type": "group", "messageId": format!("g-{account}"), "userId": user, "groupId": account, "timestamp": at(-400, 9)}));
        batch.push(track(format!("c-{account}"), &user, "Common", at(-120, 10)));
        if outcome == "renewed" && segment == "x" {
            for d in 0..10 {
                batch.push(track(format!("p-{account}-{d}"), &user, "Power", at(-115 + d, 11)));
            }
        }
    }
    create("subscriptions", json!({"subscription_id": "x1-now", "account_id": "x1", "seats": 5, "arr": 1000, "currency": "USD", "start_date": day(-60), "end_date": day(300)}));
    // x1 uses Power daily until 10 days ago, then stops: green while the 7-day window holds
    // uses, red after.
    for d in -30..=-10 {
        batch.push(track(format!("now-{d}"), "x1-u", "Power", at(d, 12)));
    }
    let reply = post(&server, "/v1/batch", Some(KEY), json!({"batch": batch}).to_string());
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let out = cli(dir.path(), &["--config", config.to_str().unwrap(), "recalibrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let indicators = get(&server, "/api/v1/indicators?segment=x", Some(&admin)).body;
    let rows = indicators["indicators"].as_array().unwrap();
    assert_eq!(rows[0]["feature"], "Power");
    assert_eq!(rows[0]["auc"], 1.0);
    assert_eq!(rows[0]["renewal_rate_users"], 1.0);
    assert_eq!(rows[0]["renewal_rate_non_users"], 0.0);
    assert_eq!(rows[0]["warning"], Value::Null, "2 and 2 meet min_outcomes = 2");
    let common = rows.iter().find(|r| r["feature"] == "Common").unwrap();
    assert_eq!(common["auc"], 0.5, "used alike by all: no separation");
    assert_eq!(common["renewal_rate_non_users"], Value::Null, "nobody did without it");
    // tiny: one decision, no churn: the all-accounts model, and it says so.
    let tiny = get(&server, "/api/v1/indicators?segment=tiny", Some(&admin)).body;
    assert!(tiny["notes"]["tiny"].as_str().unwrap().contains("all-accounts model"), "{tiny}");
    assert_eq!(tiny["indicators"][0]["model_fallback"], true);
    assert_eq!(get(&server, "/api/v1/indicators?segment=nope", Some(&admin)).status, 404);

    // Today x1 has no Power use in 7 days: red, expected rate 0 (the churned bucket).
    let health = get(&server, "/api/v1/accounts/x1/health", Some(&admin)).body;
    assert_eq!(health["health"]["tier"], "red", "{health}");
    assert_eq!(health["health"]["expected_renewal_rate"], 0.0);
    assert_eq!(health["health"]["power_feature"], "Power");
    // History: green 12 days ago (uses in the week before), red today; one change event.
    let history = get(&server, &format!("/api/v1/accounts/x1/health/history?from={}&to={}", day(-19), day(0)), Some(&admin)).body;
    let tiers: Vec<&str> = history["points"].as_array().unwrap().iter().map(|p| p["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers.len(), 20, "{history}");
    assert_eq!(tiers[19 - 12], "green");
    assert_eq!(tiers[19], "red");
    let engagement = &history["points"][19]["engagement_score"];
    // Segment x today: x1 active on days -13..-10, x2..x4 not at all: 87.5 for days, minutes
    // and users ((3 + 1/2) / 4); utilization only x1 has seats for: 50. (3 x 87.5 + 50) / 4.
    assert_eq!(engagement.as_f64(), Some(78.125), "{engagement}");
    let changes = get(&server, &format!("/api/v1/tier_changes?since={}&account=x1", day(-19)), Some(&admin)).body;
    let changes = changes["tier_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0]["from"].as_str(), changes[0]["to"].as_str()), (Some("green"), Some("red")));
    // The first red day: the 7-day window no longer holds day -10, i.e. day -3.
    assert_eq!(changes[0]["date"], day(-3));
}
