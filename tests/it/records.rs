//! Customer records: imports (CSV, NDJSON, CLI, HTTP), the REST API, GDPR erasure.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::support::*;

const KINDS: &[&str] = &[
    "csms",
    "accounts",
    "subscriptions",
    "tickets",
    "survey_responses",
    "suggestions",
    "kpis",
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/records")
        .join(name)
}

/// A data dir with a config that can report EUR; returns (dir, config path).
fn setup() -> (tempfile::TempDir, PathBuf) {
    setup_on(None)
}

/// As [`setup`], the config naming `store` (a ClickHouse URL) when given: every command and
/// server of the test then runs on it.
fn setup_on(store: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    let store = store.map_or(String::new(), |url| format!("store = \"{url}\"\n"));
    std::fs::write(
        &config,
        format!("{store}[currency]\nreport = \"USD\"\n[currency.rates]\nEUR = 1.08\n"),
    )
    .unwrap();
    (dir, config)
}

fn token(dir: &Path, config: &Path, role: &str) -> String {
    let out = cli(
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "token",
            "create",
            "--role",
            role,
        ],
    );
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn start(dir: &Path, config: &Path) -> (Server, String, String) {
    let server = Server::start(dir, &[("BELLWETHER_CONFIG", config.to_str().unwrap())]);
    let (admin, read) = (token(dir, config, "admin"), token(dir, config, "read"));
    if std::fs::read_to_string(config)
        .unwrap()
        .contains("clickhouse://")
    {
        // Really on ClickHouse: nothing in the data dir.
        assert!(
            !dir.join("bellwether.db").exists(),
            "a ClickHouse test wrote {}",
            dir.display()
        );
    }
    (server, admin, read)
}

fn import_cli(dir: &Path, config: &Path, kind: &str, file: &Path) -> std::process::Output {
    cli(
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "import",
            kind,
            file.to_str().unwrap(),
        ],
    )
}

/// Every record of a kind through the API, following cursors with a small page size.
fn list_all(server: &Server, token: &str, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/{kind}?limit=2&cursor={c}"),
            None => format!("/api/v1/{kind}?limit=2"),
        };
        let reply = get(server, &path, Some(token));
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        out.extend(reply.body["items"].as_array().unwrap().iter().cloned());
        match reply.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn send(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let agent = agent();
    let url = server.url(path);
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("POST", Some(b)) | ("PUT", Some(b)) => {
            let mut request = if method == "POST" {
                agent.post(&url)
            } else {
                agent.put(&url)
            };
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes())
        }
        ("DELETE", _) => {
            let mut request = agent.delete(&url);
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request.call()
        }
        _ => panic!("unsupported {method}"),
    };
    let mut response = response.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after: None,
        content_type,
    }
}

#[test]
fn csv_and_ndjson_imports_round_trip_through_the_api() {
    imports_round_trip(setup(), setup());
}

#[test]
fn csv_and_ndjson_imports_round_trip_through_the_api_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    imports_round_trip(
        setup_on(Some(&clickhouse.store_url("bw_csv"))),
        setup_on(Some(&clickhouse.store_url("bw_ndjson"))),
    );
}

fn imports_round_trip(
    (dir_csv, config_csv): (tempfile::TempDir, PathBuf),
    (dir_nd, config_nd): (tempfile::TempDir, PathBuf),
) {
    for kind in KINDS {
        let out = import_cli(
            dir_csv.path(),
            &config_csv,
            kind,
            &data(&format!("{kind}.csv")),
        );
        assert!(
            out.status.success(),
            "{kind}.csv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = import_cli(
            dir_nd.path(),
            &config_nd,
            kind,
            &data(&format!("{kind}.ndjson")),
        );
        assert!(
            out.status.success(),
            "{kind}.ndjson: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (server_csv, _, read_csv) = start(dir_csv.path(), &config_csv);
    let (server_nd, _, read_nd) = start(dir_nd.path(), &config_nd);
    for kind in KINDS {
        let from_csv = list_all(&server_csv, &read_csv, kind);
        let rows = std::fs::read_to_string(data(&format!("{kind}.csv")))
            .unwrap()
            .lines()
            .count()
            - 1;
        assert_eq!(from_csv.len(), rows, "{kind}: every row listed once");
        assert_eq!(
            from_csv,
            list_all(&server_nd, &read_nd, kind),
            "{kind}: CSV and NDJSON give the same records"
        );
    }
    // Values come back typed and normalized.
    let sub = get(&server_csv, "/api/v1/subscriptions/sub-2", Some(&read_csv)).body;
    assert_eq!(sub["seats"], json!(150));
    assert_eq!(sub["arr"], json!(120000.5));
    assert_eq!(sub["provisioned_at"], Value::Null);
    assert_eq!(sub["end_date"], json!("2027-02-28"));
    let sub3 = get(&server_csv, "/api/v1/subscriptions/sub-3", Some(&read_csv)).body;
    assert_eq!(
        sub3["traits"],
        json!({"reseller": "partner-x"}),
        "extra columns become traits"
    );
    assert_eq!(sub3["provisioned_at"], json!("2025-07-01T00:00:00.000Z"));
    let eu = get(&server_csv, "/api/v1/accounts/globex-eu", Some(&read_csv)).body;
    assert_eq!(eu["created_at"], json!("2023-02-01T08:30:00.000Z"));
    assert_eq!(eu["parent_id"], json!("globex"));
    let acme = get(&server_csv, "/api/v1/accounts/acme,%20inc", Some(&read_csv)).body;
    assert_eq!(acme["plan"], json!("starter"));
    let t3 = get(&server_csv, "/api/v1/tickets/t-3", Some(&read_csv)).body;
    assert_eq!(
        (t3["escalated"].clone(), t3["opened_at"].clone()),
        (json!(true), json!("2026-05-04T00:00:00.000Z"))
    );
    let r5 = get(&server_csv, "/api/v1/survey_responses/r-5", Some(&read_csv)).body;
    assert_eq!(
        r5["score"],
        json!(1),
        "go_live_recommend yes is stored as 1"
    );
    let kpi = get(
        &server_csv,
        "/api/v1/kpis/globex-eu/tickets_deflected/2026-06-30",
        Some(&read_csv),
    )
    .body;
    assert_eq!(kpi["value"], json!(-3.0));

    // Importing the same file again updates in place: same records, nothing new.
    let out = import_cli(
        dir_csv.path(),
        &config_csv,
        "accounts",
        &data("accounts.csv"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 new, 5 updated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Imports work while the server runs, over HTTP too.
    let body = "account_id,name,date,value\ninitech,hours_saved,2026-09-30,200\n";
    let reply = post_with_token(
        &server_csv,
        "/api/v1/import/kpis",
        &token(dir_csv.path(), &config_csv, "admin"),
        "text/csv",
        body,
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["inserted"], json!(1));
    assert_eq!(list_all(&server_csv, &read_csv, "kpis").len(), 4);
}

fn post_with_token(
    server: &Server,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> Reply {
    post_with(
        server,
        path,
        None,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", content_type),
        ],
        body,
    )
}

#[test]
fn bad_files_get_a_row_numbered_report_and_store_nothing() {
    bad_files(setup());
}

#[test]
fn bad_files_get_a_row_numbered_report_and_store_nothing_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    bad_files(setup_on(Some(&clickhouse.store_url("bw_bad_files"))));
}

fn bad_files((dir, config): (tempfile::TempDir, PathBuf)) {
    for kind in ["csms", "accounts", "subscriptions", "tickets"] {
        assert!(
            import_cli(dir.path(), &config, kind, &data(&format!("{kind}.csv")))
                .status
                .success()
        );
    }
    let (server, admin, read) = start(dir.path(), &config);
    let counts = |server: &Server| -> Vec<usize> {
        KINDS
            .iter()
            .map(|k| list_all(server, &read, k).len())
            .collect()
    };
    let before = counts(&server);
    let sub_header = "subscription_id,account_id,product,plan,seats,arr,currency,start_date,end_date,status,outcome,provisioned_at,go_live_at";
    let acc_header = "account_id,name,parent_id,segment,plan,csm,timezone,created_at";
    // (kind, content type, file, [(row, column, reason)])
    type Case<'a> = (&'a str, &'a str, String, Vec<(usize, &'a str, &'a str)>);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("accounts", "text/csv", format!("{acc_header}\nnew-1,New,,smb,pro,,,2026-01-01\nnew-2,Bad date,,smb,pro,,,2026-13-01\n"),
            vec![(3, "created_at", "not an ISO-8601 date-time")]),
        ("accounts", "text/csv", format!("{acc_header}\nnew-1,New,,smb,pro,,Mars/Olympus,\n"),
            vec![(2, "timezone", "not an IANA time zone")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,nobody,p,pro,5,100,USD,2026-01-01,2026-12-31,active,,,\n"),
            vec![(2, "account_id", "unknown account \"nobody\"")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,initech,p,pro,-5,100,USD,2026-01-01,2026-12-31,active,,,\n"),
            vec![(2, "seats", "must not be negative")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,initech,p,pro,5,100,USD,2026-01-01,2025-12-31,active,,,\n"),
            vec![(2, "end_date", "before start_date")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,initech,p,pro,5,100,SEK,2026-01-01,2026-12-31,active,,,\n"),
            vec![(2, "currency", "no exchange rate for SEK")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,initech,p,pro,5,100,USD,2026-01-01,2026-12-31,paused,,,\n"),
            vec![(2, "status", "is not one of")]),
        ("subscriptions", "text/csv", "subscription_id,account_id,product,plan,seats,arr,currency,start_date,end_date,status,provisioned_at,go_live_at\n".into(),
            vec![(1, "outcome", "missing header")]),
        ("subscriptions", "text/csv", format!("{sub_header},seats\n"),
            vec![(1, "seats", "duplicate header")]),
        ("subscriptions", "text/csv", format!("{sub_header}\nsub-9,initech,p\n"),
            vec![(2, "", "expected 13 fields")]),
        ("survey_responses", "text/csv", "response_id,account_id,user_id,kind,score,comment,answered_at,trigger\nr-9,initech,u,nps,11,,2026-01-01,manual\nr-10,initech,u,csat,4,,2026-01-01,sometimes\n".into(),
            vec![(2, "score", "nps score must be 0 to 10"), (3, "trigger", "is not one of")]),
        ("tickets", "text/csv", "ticket_id,account_id,user_id,type,priority,opened_at,first_response_at,resolved_at,escalated\nt-9,initech,,bug,low,2026-01-01,,,no\nt-9,initech,,bug,low,2026-01-02,,,no\n".into(),
            vec![(3, "ticket_id", "duplicate id \"t-9\" (first at row 2)")]),
        ("accounts", "text/csv", format!("{acc_header}\ncyc-a,A,cyc-b,,,,,\ncyc-b,B,cyc-a,,,,,\n"),
            vec![(2, "parent_id", "hierarchy cycle: cyc-a -> cyc-b -> cyc-a"), (3, "parent_id", "hierarchy cycle: cyc-b -> cyc-a -> cyc-b")]),
        ("accounts", "text/csv", format!("{acc_header}\nglobex,Globex Holding,globex-eu,,,,,\n"),
            vec![(2, "parent_id", "hierarchy cycle: globex -> globex-eu -> globex")]),
        ("accounts", "text/csv", format!("{acc_header}\norphan,O,nowhere,,,,,\n"),
            vec![(2, "parent_id", "unknown parent account \"nowhere\"")]),
        ("kpis", "application/x-ndjson", "{\"account_id\":\"initech\",\"name\":\"x\",\"date\":\"2026-01-01\",\"value\":1}\n{\"account_id\":\n[1]\n".into(),
            vec![(2, "", "invalid JSON"), (3, "", "expected a JSON object")]),
        ("kpis", "application/x-ndjson", "{\"account_id\":\"initech\",\"name\":\"x\",\"date\":\"2026-01-01\",\"value\":\"lots\"}\n".into(),
            vec![(1, "value", "not a number")]),
    ];
    for (kind, content_type, body, expected) in cases {
        let reply = post_with_token(
            &server,
            &format!("/api/v1/import/{kind}"),
            &admin,
            content_type,
            &body,
        );
        assert_eq!(reply.status, 422, "{kind} {body:?}: {:?}", reply.body);
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/problem+json")
        );
        let got: Vec<(u64, String, String)> = reply.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["row"].as_u64().unwrap(),
                    e["column"].as_str().unwrap().into(),
                    e["reason"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{kind} {body:?}: {got:?}");
        for ((row, column, reason), (want_row, want_column, want_reason)) in
            got.iter().zip(&expected)
        {
            assert_eq!(
                (*row as usize, column.as_str()),
                (*want_row, *want_column),
                "{kind} {body:?}: {got:?}"
            );
            assert!(
                reason.contains(want_reason),
                "{kind}: {reason:?} should contain {want_reason:?}"
            );
        }
    }
    assert_eq!(counts(&server), before, "a bad file stored something");

    // The CLI prints the same report and exits non-zero.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("{sub_header}\nsub-9,nobody,p,pro,5,100,USD,2026-01-01,2026-12-31,active,,,\n"),
    )
    .unwrap();
    let out = import_cli(dir.path(), &config, "subscriptions", &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing was imported")
            && err.contains("row 2, column account_id: unknown account"),
        "{err}"
    );

    // Past the report limit the count is still exact.
    let many: String = (0..150)
        .map(|i| format!("k{i},initech,u,nps,99,,2026-01-01,manual\n"))
        .collect();
    let body =
        format!("response_id,account_id,user_id,kind,score,comment,answered_at,trigger\n{many}");
    let reply = post_with_token(
        &server,
        "/api/v1/import/survey_responses",
        &admin,
        "text/csv",
        &body,
    );
    assert_eq!(reply.body["errors"].as_array().unwrap().len(), 100);
    assert_eq!(reply.body["error_count"], json!(150));
}

#[test]
fn rest_api_creates_reads_updates_deletes_filters_and_pages() {
    rest_api(setup());
}

#[test]
fn rest_api_creates_reads_updates_deletes_filters_and_pages_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    rest_api(setup_on(Some(&clickhouse.store_url("bw_rest"))));
}

fn rest_api((dir, config): (tempfile::TempDir, PathBuf)) {
    for kind in ["csms", "accounts"] {
        assert!(
            import_cli(dir.path(), &config, kind, &data(&format!("{kind}.csv")))
                .status
                .success()
        );
    }
    let (server, admin, read) = start(dir.path(), &config);
    let account = json!({"account_id": "hooli", "name": "Hooli", "segment": "smb", "plan": "pro", "traits": {"tier": "gold"}});
    let created = send(
        &server,
        "POST",
        "/api/v1/accounts",
        Some(&admin),
        Some(account.clone()),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["traits"], json!({"tier": "gold"}));
    assert_eq!(
        send(
            &server,
            "POST",
            "/api/v1/accounts",
            Some(&admin),
            Some(account.clone())
        )
        .status,
        409
    );
    assert_eq!(
        send(
            &server,
            "POST",
            "/api/v1/accounts",
            Some(&read),
            Some(account.clone())
        )
        .status,
        403
    );
    assert_eq!(
        send(&server, "POST", "/api/v1/accounts", None, Some(account)).status,
        401
    );

    let updated = send(
        &server,
        "PUT",
        "/api/v1/accounts/hooli",
        Some(&admin),
        Some(json!({"name": "Hooli XYZ", "plan": "enterprise", "parent_id": "globex"})),
    );
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(
        (
            updated.body["plan"].clone(),
            updated.body["segment"].clone()
        ),
        (json!("enterprise"), Value::Null),
        "PUT replaces the columns"
    );
    assert_eq!(
        updated.body["traits"],
        json!({"tier": "gold"}),
        "PUT merges traits"
    );
    let mismatch = send(
        &server,
        "PUT",
        "/api/v1/accounts/hooli",
        Some(&admin),
        Some(json!({"account_id": "other"})),
    );
    assert_eq!(mismatch.status, 400);
    let invalid = send(
        &server,
        "PUT",
        "/api/v1/accounts/x",
        Some(&admin),
        Some(json!({"plan": 5, "timezone": "Nowhere", "colour": "red"})),
    );
    assert_eq!(invalid.status, 400);
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["colour", "timezone"]);
    let cycle = send(
        &server,
        "PUT",
        "/api/v1/accounts/globex",
        Some(&admin),
        Some(json!({"parent_id": "hooli"})),
    );
    assert_eq!(cycle.status, 400);
    assert!(
        cycle.body["detail"]
            .as_str()
            .unwrap()
            .contains("hierarchy cycle"),
        "{:?}",
        cycle.body
    );

    // Filters and cursor pages.
    let children = get(&server, "/api/v1/accounts?parent_id=globex", Some(&read)).body;
    let ids: Vec<&str> = children["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["globex-eu", "globex-us", "hooli"]);
    let smb = get(
        &server,
        "/api/v1/accounts?segment=smb&plan=pro",
        Some(&read),
    )
    .body;
    assert_eq!(smb["items"].as_array().unwrap().len(), 1);
    let created_range = get(
        &server,
        "/api/v1/accounts?created_at_from=2023-01-31&created_at_to=2023-12-31",
        Some(&read),
    )
    .body;
    assert_eq!(created_range["items"].as_array().unwrap().len(), 2);
    assert_eq!(list_all(&server, &read, "accounts").len(), 6);
    assert_eq!(
        get(&server, "/api/v1/accounts?sement=smb", Some(&read)).status,
        400
    );
    assert_eq!(
        get(&server, "/api/v1/accounts?cursor=zzz", Some(&read)).status,
        400
    );
    assert_eq!(
        get(&server, "/api/v1/accounts?limit=0", Some(&read)).status,
        400
    );
    assert_eq!(get(&server, "/api/v1/widgets", Some(&read)).status, 404);

    // A parent with children cannot be deleted; a leaf can.
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/accounts/globex",
            Some(&admin),
            None
        )
        .status,
        409
    );
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/accounts/hooli",
            Some(&read),
            None
        )
        .status,
        403
    );
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/accounts/hooli",
            Some(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(
        get(&server, "/api/v1/accounts/hooli", Some(&read)).status,
        404
    );
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/accounts/hooli",
            Some(&admin),
            None
        )
        .status,
        404
    );

    // Composite keys (KPIs) and kinds that refer to an account.
    let odd = send(
        &server,
        "PUT",
        "/api/v1/kpis/initech/hours_saved/2026-3-31",
        Some(&admin),
        Some(json!({"value": 1})),
    );
    assert_eq!(
        odd.status, 400,
        "a non-canonical path key is refused, not stored under another key"
    );
    assert!(
        odd.body["detail"].as_str().unwrap().contains("2026-03-31"),
        "{:?}",
        odd.body
    );
    let kpi = send(
        &server,
        "PUT",
        "/api/v1/kpis/initech/hours_saved/2026-03-31",
        Some(&admin),
        Some(json!({"value": 12.5})),
    );
    assert_eq!(kpi.status, 201, "{:?}", kpi.body);
    assert_eq!(
        get(
            &server,
            "/api/v1/kpis/initech/hours_saved/2026-03-31",
            Some(&read)
        )
        .body["value"],
        json!(12.5)
    );
    let orphan = send(
        &server,
        "POST",
        "/api/v1/tickets",
        Some(&admin),
        Some(json!({"ticket_id": "t", "account_id": "nobody", "opened_at": "2026-01-01"})),
    );
    assert_eq!(orphan.status, 400);
    assert_eq!(
        get(&server, "/api/v1/kpis/initech", Some(&read)).status,
        404
    );

    // An account its records refer to stays until they go; a deleted key can come back.
    let referred = send(
        &server,
        "DELETE",
        "/api/v1/accounts/initech",
        Some(&admin),
        None,
    );
    assert_eq!(referred.status, 409, "{:?}", referred.body);
    assert!(
        referred.body["detail"].as_str().unwrap().contains("1 kpis"),
        "{:?}",
        referred.body
    );
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/kpis/initech/hours_saved/2026-03-31",
            Some(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(
        get(
            &server,
            "/api/v1/kpis/initech/hours_saved/2026-03-31",
            Some(&read)
        )
        .status,
        404
    );
    assert_eq!(
        send(
            &server,
            "DELETE",
            "/api/v1/accounts/initech",
            Some(&admin),
            None
        )
        .status,
        204
    );
    let again = send(
        &server,
        "POST",
        "/api/v1/accounts",
        Some(&admin),
        Some(json!({"account_id": "hooli", "name": "Hooli again"})),
    );
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(
        (again.body["name"].clone(), again.body["traits"].clone()),
        (json!("Hooli again"), json!({})),
        "nothing of the deleted record comes back"
    );
    let ids: Vec<String> = list_all(&server, &read, "accounts")
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        vec!["acme, inc", "globex", "globex-eu", "globex-us", "hooli"]
    );
}

/// Starts a server on `dir` (records imported), sends u-7's history under three ids and
/// u-8's event, erases u-7 through the API and checks what the API shows afterwards.
fn erase_u7(dir: &Path, config: &Path) -> (Server, String, String) {
    let (server, admin, read) = start(dir, config);
    let body = r#"{"batch":[
        {"type":"track","anonymousId":"anon-u7","event":"Visited"},
        {"type":"identify","userId":"u-7","anonymousId":"anon-u7","traits":{"email":"u7@example.com"}},
        {"type":"group","userId":"u-7","groupId":"initech"},
        {"type":"track","userId":"u-7","event":"Exported"},
        {"type":"track","userId":"u-7-old","event":"Before rename"},
        {"type":"identify","userId":"u-7-old","traits":{"email":"old7@example.com"}},
        {"type":"alias","previousId":"u-7-old","userId":"u-7"},
        {"type":"track","userId":"u-8","event":"Exported"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), body).status, 200);
    let note =
        json!({"text": "Asked for a call about the renewal", "person": "u-7", "author": "maja"});
    assert_eq!(
        send(
            &server,
            "POST",
            "/api/v1/accounts/initech/notes",
            Some(&admin),
            Some(note)
        )
        .status,
        201
    );
    assert_eq!(
        send(&server, "DELETE", "/api/v1/users/u-7", Some(&read), None).status,
        403
    );
    let deletion = send(&server, "DELETE", "/api/v1/users/u-7", Some(&admin), None);
    assert_eq!(deletion.status, 200, "{:?}", deletion.body);
    assert_eq!(
        deletion.body["events"],
        json!(7),
        "4 as u-7 or its anonymous id, 3 as its earlier userId"
    );
    assert_eq!(deletion.body["survey_responses"], json!(1));
    assert_eq!(deletion.body["tickets_unlinked"], json!(1));
    assert_eq!(deletion.body["notes_unlinked"], json!(1));
    let notes = get(&server, "/api/v1/accounts/initech/notes", Some(&read)).body;
    assert_eq!(
        (&notes["notes"][0]["person"], &notes["notes"][0]["text"]),
        (&Value::Null, &json!("Asked for a call about the renewal")),
        "{notes}"
    );
    let events = stored_events(&server, &read);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["user_id"], json!("u-8"));
    assert_eq!(
        get(&server, "/api/v1/survey_responses/r-1", Some(&read)).status,
        404
    );
    assert_eq!(
        get(&server, "/api/v1/survey_responses/r-2", Some(&read)).status,
        200
    );
    assert_eq!(
        get(&server, "/api/v1/tickets/t-1", Some(&read)).body["user_id"],
        Value::Null
    );
    (server, admin, read)
}

#[test]
fn deleting_a_user_on_clickhouse_erases_events_rollups_and_survey_answers() {
    let clickhouse = ClickHouseServer::start();
    let (dir, config) = setup_on(Some(&clickhouse.store_url("bw_erasure")));
    for kind in ["csms", "accounts", "tickets", "survey_responses"] {
        assert!(
            import_cli(dir.path(), &config, kind, &data(&format!("{kind}.csv")))
                .status
                .success()
        );
    }
    // A version of the answer and the ticket older than the current one: erased too.
    assert!(import_cli(
        dir.path(),
        &config,
        "survey_responses",
        &data("survey_responses.csv")
    )
    .status
    .success());
    let (server, _, read) = erase_u7(dir.path(), &config);
    // No row ClickHouse holds (old versions included) names the person any more.
    let count = |sql: &str| -> u64 {
        clickhouse
            .query(&format!("SELECT count() FROM bw_erasure.{sql}"))
            .trim()
            .parse()
            .unwrap()
    };
    for trace in [
        "u7@example.com",
        "old7@example.com",
        "anon-u7",
        "u-7-old",
        "Before rename",
    ] {
        assert_eq!(
            count(&format!("events WHERE position(raw, '{trace}') > 0")),
            0,
            "{trace}"
        );
    }
    assert_eq!(
        count("activity WHERE user_id IN ('u-7', 'u-7-old') OR anonymous_id = 'anon-u7'"),
        0
    );
    assert_eq!(
        count("activity WHERE user_id = 'u-8'"),
        1,
        "others' rollups stay"
    );
    for table in ["survey_responses", "tickets"] {
        assert_eq!(
            count(&format!(
                "{table} WHERE user_id IN ('u-7', 'u-7-old', 'anon-u7')"
            )),
            0,
            "{table}"
        );
    }
    assert_eq!(count("notes WHERE person = 'u-7'"), 0);
    assert_eq!(count("notes"), 1, "the note stays");
    // The CLI does the same.
    let out = cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "delete-user", "u-8"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored_events(&server, &read).is_empty());
}

#[test]
fn deleting_a_user_erases_events_traits_and_survey_answers() {
    let (dir, config) = setup();
    for kind in ["csms", "accounts", "tickets", "survey_responses"] {
        assert!(
            import_cli(dir.path(), &config, kind, &data(&format!("{kind}.csv")))
                .status
                .success()
        );
    }
    // Survey invitations sent to the person and to their earlier id.
    let sends = rusqlite::Connection::open(dir.path().join("bellwether.db")).unwrap();
    for (key, user) in [
        ("nps:u-7", "u-7"),
        ("nps:u-7-old", "u-7-old"),
        ("nps:u-8", "u-8"),
    ] {
        sends
            .execute("INSERT INTO survey_sends (key, user_id, account_id, kind, trigger, delivery, sent_ms) VALUES (?1, ?2, 'initech', 'nps', 'quarterly', 'email', 1)", [key, user])
            .unwrap();
        // Its email, as the survey dispatcher queues it (the backup check below looks for the address).
        let id = sends.last_insert_rowid();
        sends
            .execute(
                "INSERT INTO outbox (idempotency_key, channel, kind, target, subject, body, status, next_attempt_ms, created_ms)
                 VALUES (?1, 'surveys', 'email', ?2, 'A quick question', 'How likely...', 'sent', 1, 1)",
                [format!("survey-{id}"), format!("{}@example.com", user.replace('-', ""))],
            )
            .unwrap();
    }
    let (server, _, read) = erase_u7(dir.path(), &config);
    let left: Vec<String> = sends
        .prepare("SELECT user_id FROM survey_sends")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        left,
        vec!["u-8".to_string()],
        "the person's invitations go, others' stay"
    );
    let emails: Vec<String> = sends
        .prepare("SELECT target FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        emails,
        vec!["u8@example.com".to_string()],
        "with their emails"
    );
    assert!(!stored_raw(dir.path())
        .iter()
        .any(|e| e.to_string().contains("u7@example.com") || e.to_string().contains("u-7-old")));
    // A backup taken from now on holds no trace of the person, not even in free pages.
    let backup = dir.path().join("after-erasure.bwdb");
    let out = cli(dir.path(), &["backup", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&backup).unwrap();
    for trace in [
        "u7@example.com",
        "old7@example.com",
        "anon-u7",
        "u-7-old",
        "Before rename",
    ] {
        assert!(
            !bytes.windows(trace.len()).any(|w| w == trace.as_bytes()),
            "{trace:?} is in a backup taken after the erasure"
        );
    }
    // The CLI does the same while the server runs, here after the rollups read every event.
    assert!(cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "metrics"]
    )
    .status
    .success());
    let out = cli(dir.path(), &["delete-user", "u-8"]);
    assert!(out.status.success());
    assert!(stored_events(&server, &read).is_empty());

    // The erased events were the newest: a restarted server must not hand their ids out
    // again, or the rollups (already past them) would never count the new events.
    drop(server);
    let (server, _, _) = start(dir.path(), &config);
    let body = r#"{"batch":[{"type":"group","userId":"u-9","groupId":"initech"},{"type":"track","userId":"u-9","event":"Exported"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), body).status, 200);
    assert!(cli(
        dir.path(),
        &["--config", config.to_str().unwrap(), "metrics"]
    )
    .status
    .success());
    let conn = rusqlite::Connection::open(dir.path().join("rollups.db")).unwrap();
    let days: i64 = conn
        .query_row(
            "SELECT count(*) FROM user_days WHERE user_id = 'u-9'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(days, 1, "u-9's event is rolled up");

    // An erasure commits bellwether.db, then rollups.db. Were it stopped between the two,
    // the id noted in bellwether.db makes the rollup worker purge the rows left behind.
    conn.execute(
        "UPDATE user_days SET user_id = 'u-gone' WHERE user_id = 'u-9'",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO person_events (key, id) VALUES ('u-gone', 1)",
        [],
    )
    .unwrap();
    let main = rusqlite::Connection::open(dir.path().join("bellwether.db")).unwrap();
    main.execute("INSERT INTO erased_ids (key) VALUES ('u-gone')", [])
        .unwrap();
    let left = || -> (i64, i64, i64) {
        let days = conn
            .query_row(
                "SELECT count(*) FROM user_days WHERE user_id = 'u-gone'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let index = conn
            .query_row(
                "SELECT count(*) FROM person_events WHERE key = 'u-gone'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let noted = main
            .query_row("SELECT count(*) FROM erased_ids", [], |r| r.get(0))
            .unwrap();
        (days, index, noted)
    };
    assert_eq!(left(), (1, 1, 1));
    let waited = std::time::Instant::now();
    while left() != (0, 0, 0) {
        assert!(waited.elapsed().as_secs() < 30, "not purged: {:?}", left());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(server);
}

#[test]
fn accounts_from_group_calls_and_imports_are_the_same_records() {
    let (dir, config) = setup();
    let (server, admin, read) = start(dir.path(), &config);
    let group = r#"{"userId":"u1","groupId":"initech","traits":{"name":"Initech (from app)","employees":120}}"#;
    assert_eq!(post(&server, "/v1/group", Some(KEY), group).status, 200);
    let account = get(&server, "/api/v1/accounts/initech", Some(&read)).body;
    assert_eq!(account["name"], json!("Initech (from app)"));
    let body = "account_id,name,parent_id,segment,plan,csm,timezone,created_at\ninitech,Initech,,smb,pro,,,2024-06-30\n";
    let reply = post_with_token(&server, "/api/v1/import/accounts", &admin, "text/csv", body);
    assert_eq!(
        (reply.status, reply.body["updated"].clone()),
        (200, json!(1)),
        "{:?}",
        reply.body
    );
    let account = get(&server, "/api/v1/accounts/initech", Some(&read)).body;
    assert_eq!(
        (account["name"].clone(), account["plan"].clone()),
        (json!("Initech"), json!("pro"))
    );
    assert_eq!(
        account["traits"]["employees"],
        json!(120),
        "group traits are kept"
    );
}

#[test]
fn an_api_token_stops_working_when_it_expires() {
    let (dir, config) = setup();
    let (server, _, _) = start(dir.path(), &config);
    let out = cli(
        dir.path(),
        &[
            "token",
            "create",
            "--role",
            "read",
            "--name",
            "quarterly",
            "--valid-for",
            "90d",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid for 90d"));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(get(&server, "/api/v1/accounts", Some(&token)).status, 200);

    // Ninety days later (moved by hand): refused like an unknown token.
    let conn = rusqlite::Connection::open(dir.path().join("bellwether.db")).unwrap();
    let expires: i64 = conn
        .query_row(
            "SELECT expires_ms FROM api_tokens WHERE name = 'quarterly'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let created: i64 = conn
        .query_row(
            "SELECT created_ms FROM api_tokens WHERE name = 'quarterly'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(expires - created, 90 * 86_400_000);
    conn.execute(
        "UPDATE api_tokens SET expires_ms = ?1 WHERE name = 'quarterly'",
        [chrono::Utc::now().timestamp_millis() - 1],
    )
    .unwrap();
    assert_eq!(get(&server, "/api/v1/accounts", Some(&token)).status, 401);

    // Tokens without --valid-for work until revoked; a bad duration is refused by name.
    assert_eq!(
        get(
            &server,
            "/api/v1/accounts",
            Some(&create_token(dir.path(), "read"))
        )
        .status,
        200
    );
    let out = cli(
        dir.path(),
        &["token", "create", "--role", "read", "--valid-for", "400d"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--valid-for: must be more than 0 and at most 365 days"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn imports_and_ingest_go_on_while_a_rollup_step_holds_the_rollups_file() {
    let (dir, config) = setup();
    let (server, admin, _) = start(dir.path(), &config);
    // Hold rollups.db's write lock, as a long rollup step would.
    let rollups = rusqlite::Connection::open(dir.path().join("rollups.db")).unwrap();
    rollups.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A records import writes bellwether.db only: it must neither wait for the rollups nor,
    // while waiting, hold up the events committed under bellwether.db's lock.
    let body = "account_id,name,parent_id,segment,plan,csm,timezone,created_at\ninitech,Initech,,smb,pro,,,2024-06-30\n";
    let reply = post_with_token(&server, "/api/v1/import/accounts", &admin, "text/csv", body);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let batch = r#"{"batch":[{"type":"track","userId":"u1","event":"Exported","messageId":"while-locked"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), batch).status, 200);
    rollups.execute_batch("ROLLBACK").unwrap();
}
