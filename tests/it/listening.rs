//! Listening on a hand-made fixture: comment streams in one list, themes (keyword rules and
//! automatic), the churn-reason report checked against hand-computed numbers, notes, and
//! bad reason codes refused on import with their row number.

use std::path::Path;

use serde_json::{json, Value};

use super::support::*;

fn import(dir: &Path, config: &Path, kind: &str, text: &str) -> std::process::Output {
    let path = dir.join(format!("{kind}.csv"));
    std::fs::write(&path, text).unwrap();
    cli(
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "import",
            kind,
            path.to_str().unwrap(),
        ],
    )
}

#[test]
fn comments_get_themes_and_churn_reasons_add_up_by_quarter_and_segment() {
    comments_themes_and_churn_reasons(None);
}

#[test]
fn comments_get_themes_and_churn_reasons_add_up_by_quarter_and_segment_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    comments_themes_and_churn_reasons(Some(&clickhouse.store_url("bw_listening")));
}

fn comments_themes_and_churn_reasons(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    let store = store.map_or(String::new(), |url| format!("store = \"{url}\"\n"));
    std::fs::write(&config, format!("{store}[currency.rates]\nEUR = 1.1\n\n[listening.themes]\nprice = \"Pricing\"\n\"single sign\" = \"SSO\"\n")).unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    ok(import(dir.path(), &config, "accounts", "account_id,name,parent_id,segment,plan,csm,timezone,created_at\na1,A One,,pro,pro,,,\na2,A Two,,pro,pro,,,\na3,A Three,,starter,starter,,,\n"));
    // Q1 2026: a1 churns for price (12,000 USD), a2 for price (10,000 EUR = 11,000 USD),
    // a3 (starter) renews smaller for budget: 5,000 -> 3,000 = 2,000 lost. Q2: a3 churns
    // without a reason (3,000 lost, "unknown").
    ok(import(
        dir.path(),
        &config,
        "subscriptions",
        "subscription_id,account_id,product,plan,seats,arr,currency,start_date,end_date,status,outcome,provisioned_at,go_live_at,reason,feedback\n\
         s1,a1,app,pro,10,12000,USD,2025-01-01,2026-01-31,ended,churned,,,price,The price went up too much\n\
         s2,a2,app,pro,10,10000,EUR,2025-02-01,2026-03-31,ended,churned,,,price,Price is too high for a small team\n\
         s3,a3,app,starter,5,5000,USD,2025-03-01,2026-02-28,ended,renewed,,,budget,Budget cuts this year\n\
         s4,a3,app,starter,3,3000,USD,2026-03-01,2026-04-30,ended,churned,,,,\n",
    ));
    ok(import(
        dir.path(),
        &config,
        "survey_responses",
        "response_id,account_id,user_id,kind,score,comment,answered_at,trigger\n\
         r1,a1,u1,nps,3,Exports are slow on big reports,2026-01-10T10:00:00Z,quarterly\n\
         r2,a2,u2,nps,9,Love the dashboards,2026-01-11T10:00:00Z,quarterly\n\
         r3,a3,u3,nps,5,Reports export slowly and time out,2026-04-02T10:00:00Z,quarterly\n",
    ));
    ok(import(
        dir.path(),
        &config,
        "tickets",
        "ticket_id,account_id,user_id,type,priority,opened_at,first_response_at,resolved_at,escalated,subject\n\
         t1,a2,u2,question,low,2026-02-01T10:00:00Z,,,false,How do I set up single sign on\n",
    ));
    // A bad reason code is refused with its row and nothing is stored.
    let bad = import(
        dir.path(),
        &config,
        "subscriptions",
        "subscription_id,account_id,product,plan,seats,arr,currency,start_date,end_date,status,outcome,provisioned_at,go_live_at,reason,feedback\n\
         s9,a1,app,pro,1,1,USD,2026-01-01,2026-02-01,ended,churned,,,price,\n\
         s10,a1,app,pro,1,1,USD,2026-01-01,2026-02-01,ended,churned,,,weather,\n",
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("row 3, column reason: \"weather\" is not a reason code"),
        "{stderr}"
    );

    let server = Server::start(
        dir.path(),
        &[("BELLWETHER_CONFIG", config.to_str().unwrap())],
    );
    let out = cli(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "token",
            "create",
            "--role",
            "admin",
        ],
    );
    ok(out.clone());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    if !store.is_empty() {
        assert!(
            !dir.path().join("bellwether.db").exists(),
            "a ClickHouse test wrote {}",
            dir.path().display()
        );
    }
    let note = post_with(
        &server,
        "/api/v1/accounts/a3/notes",
        None,
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"text": "Their new CFO questions the price", "author": "maja"}"#,
    );
    assert_eq!(note.status, 201, "{:?}", note.body);
    assert_eq!(
        post_with(
            &server,
            "/api/v1/accounts/nope/notes",
            None,
            &[("authorization", &format!("Bearer {token}"))],
            r#"{"text": "x"}"#
        )
        .status,
        404
    );

    // Churn reasons, by hand: see the fixture.
    let report = get(
        &server,
        "/api/v1/reports/churn_reasons?from=2026-01-01&to=2026-07-01",
        Some(&token),
    )
    .body;
    let rows: Vec<Value> = report["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["quarter"],
                r["segment"],
                r["reason"],
                r["kind"],
                r["accounts"],
                r["arr_lost"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            json!(["2026-Q1", "pro", "price", "churn", 2, 23000.0]),
            json!(["2026-Q1", "starter", "budget", "downgrade", 1, 2000.0]),
            json!(["2026-Q2", "starter", "unknown", "churn", 1, 3000.0]),
        ]
    );
    let csv = agent()
        .get(&server.url("/api/v1/reports/churn_reasons?from=2026-01-01&to=2026-07-01&format=csv"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("quarter,segment,reason,kind,accounts,terms,arr_lost")
    );
    assert_eq!(
        csv.lines().nth(1),
        Some("2026-Q1,pro,price,churn,2,2,23000.0")
    );

    // Themes: the price rule takes both churn feedbacks and the note; "single sign" the
    // ticket; the two export complaints share "export" and "report" (a tie: the
    // alphabetically first names the theme); the praise stands alone.
    let comments = get(&server, "/api/v1/comments", Some(&token)).body;
    let themed: Vec<(String, String, String)> = comments["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_string(),
                c["text"].as_str().unwrap().to_string(),
                c["theme"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let theme_of = |text: &str| {
        themed
            .iter()
            .find(|(_, t, _)| t == text)
            .unwrap_or_else(|| panic!("{text} in {themed:?}"))
            .2
            .clone()
    };
    assert_eq!(theme_of("The price went up too much"), "Pricing");
    assert_eq!(theme_of("Price is too high for a small team"), "Pricing");
    assert_eq!(theme_of("Their new CFO questions the price"), "Pricing");
    assert_eq!(theme_of("How do I set up single sign on"), "SSO");
    assert_eq!(theme_of("Exports are slow on big reports"), "export");
    assert_eq!(theme_of("Reports export slowly and time out"), "export");
    assert_eq!(theme_of("Love the dashboards"), "other");
    assert_eq!(
        themed.len(),
        8,
        "3 survey comments, 1 ticket, 3 churn feedbacks, 1 note: {themed:?}"
    );

    let themes = get(&server, "/api/v1/themes", Some(&token)).body;
    let pricing = themes["themes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["theme"] == "Pricing")
        .unwrap();
    assert_eq!(pricing["comments"], 3);
    assert_eq!(pricing["accounts"], 3, "a1, a2 and a3 (the note)");
    // a1 and a2 churned with no contract now; a3's last term also churned: all churned.
    assert_eq!(pricing["share_churned"], 1.0);
    // Every account is churned and all three spoke; pricing came from all three.
    assert_eq!(pricing["churned_accounts_raising"], 1.0);
    assert_eq!(
        pricing["retained_accounts_raising"],
        Value::Null,
        "no retained account said anything"
    );
    let export = themes["themes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["theme"] == "export")
        .unwrap();
    assert_eq!(
        export["churned_accounts_raising"].as_f64().unwrap(),
        2.0 / 3.0,
        "a1 and a3 of a1, a2, a3"
    );
    // Two churn feedbacks in 2026-Q1, the note today.
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let this_quarter = format!("{}-Q{}", today.year(), (today.month() - 1) / 3 + 1);
    let mut expected = std::collections::BTreeMap::from([("2026-Q1".to_string(), 2)]);
    *expected.entry(this_quarter).or_insert(0) += 1;
    assert_eq!(pricing["per_quarter"], json!(expected));
    // Detractors (latest NPS 0-6): u1 and u3, so the two report comments only.
    let detractors = get(&server, "/api/v1/themes?among=detractors", Some(&token)).body;
    let names: Vec<(&str, u64)> = detractors["themes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["theme"].as_str().unwrap(),
                t["comments"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, vec![("export", 2)]);
    assert_eq!(
        get(&server, "/api/v1/themes?among=everyone", Some(&token)).status,
        400
    );
}
