//! The dashboard in headless Chromium (Debian's, driven by playwright-core) against a demo:
//! sign-in, portfolio filters, an account's numbers equal the API's, every page renders,
//! the review share link works signed out and refuses altered and expired links, a CSM
//! starts on their own accounts. Screenshots of each page are saved as test artifacts.

use std::process::Command;

use serde_json::{json, Value};

use super::support::*;

#[test]
fn dashboard_shows_the_api_numbers_and_shares_reviews_by_signed_links() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_demo(dir.path(), &["--accounts", "60", "--years", "3"]);
    let base = server.base.clone();
    let marker: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let token = marker["api_token"].as_str().unwrap();
    let login = |role: &str| {
        let l = marker["logins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l[2] == role)
            .unwrap_or_else(|| panic!("a demo {role} login: {marker}"));
        format!("{}:{}", l[0].as_str().unwrap(), l[1].as_str().unwrap())
    };
    let api = |path: &str| {
        let reply = get(&server, path, Some(token));
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        reply.body
    };

    // A link made to expire at once, for the refusal check.
    let out = cli(
        dir.path(),
        &[
            "review-link",
            "acct-0003",
            "--valid-for",
            "1s",
            "--base-url",
            &base,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expired = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let screenshots =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let report = browser_report(
        "dashboard_browser.mjs",
        &[
            "--base",
            &base,
            "--admin",
            &login("admin"),
            "--csm",
            &login("csm"),
            "--expired-link",
            &expired,
            "--screenshots",
            screenshots.to_str().unwrap(),
        ],
    );

    // Sign-in guards every page; a wrong password is refused; sign-out ends the session.
    assert_eq!(report["signed_out_url"], "/login", "{report}");
    assert!(
        report["wrong_password_error"]
            .as_str()
            .unwrap()
            .contains("Wrong user name or password"),
        "{report}"
    );
    assert_eq!(report["after_login_url"], "/portfolio");
    assert_eq!(report["after_signout_url"], "/login");
    assert_eq!(
        report["console_errors"],
        json!([]),
        "no script errors or CSP violations"
    );

    let metrics = api("/api/v1/metrics");
    let rows = metrics["accounts"].as_array().unwrap();
    // Current customers by default (the demo has churned ones), every account on request.
    let current = report["portfolio_rows"].as_u64().unwrap() as usize;
    assert!(
        0 < current && current < rows.len(),
        "{current} of {}",
        rows.len()
    );
    assert_eq!(report["all_rows"].as_u64().unwrap() as usize, rows.len());
    let pro = rows.iter().filter(|r| r["segment"] == "pro").count();
    assert!(pro > 0);
    assert_eq!(report["filtered_count"].as_u64().unwrap() as usize, pro);
    let shown: Vec<&Value> = report["filtered_segments"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(shown.len(), pro);
    assert!(shown.iter().all(|s| *s == "pro"), "{shown:?}");
    // Its tiers and scores are the health API's.
    for row in report["portfolio_health"].as_array().unwrap() {
        let health = api(&format!(
            "/api/v1/accounts/{}/health",
            row["account"].as_str().unwrap()
        ));
        assert_eq!(
            row["tier"].as_str().unwrap(),
            health["health"]["tier"].as_str().unwrap_or(""),
            "{row} vs {health}"
        );
        assert_eq!(
            row["score"].as_str().map(|s| s.parse::<f64>().unwrap()),
            health["health"]["health_score"].as_f64(),
            "{row} vs {health}"
        );
    }
    assert_eq!(report["first_tab"], "Skip to content");
    assert!(
        !report["localized_time"].as_str().unwrap().ends_with("UTC"),
        "timestamps are shown in the viewer's timezone: {report}"
    );

    // The account page shows the API's numbers.
    let account = report["account"].as_str().unwrap();
    let page = &report["account_shown"];
    let ours = api(&format!("/api/v1/accounts/{account}/metrics"));
    for field in [
        "seats",
        "license_utilization",
        "active_users_30d",
        "active_days_14d",
        "features_used_30d",
        "tickets_open",
    ] {
        let shown = page[field].as_str().map(|s| s.parse::<f64>().unwrap());
        assert_eq!(
            shown,
            ours["metrics"][field].as_f64(),
            "{field}: page {page} vs API {}",
            ours["metrics"]
        );
    }
    let health = api(&format!("/api/v1/accounts/{account}/health"));
    // The page marks an account without a tier (no power feature in its model) with "".
    assert_eq!(
        report["account_tier"].as_str().unwrap(),
        health["health"]["tier"].as_str().unwrap_or(""),
        "{report}"
    );
    assert_eq!(
        page["health_score"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        health["health"]["health_score"].as_f64().unwrap()
    );
    assert_eq!(report["account_charts"], 5);

    for (path, title) in [
        ("/segments", "Segments side by side"),
        ("/indicators", "Indicators"),
        ("/outcomes", "Outcomes"),
        ("/onboarding", "Onboarding"),
        ("/listening", "Listening"),
        ("/inbox", "Inbox"),
        ("/settings", "Settings"),
    ] {
        assert_eq!(
            report["pages"][path],
            json!({"status": 200, "h1": title}),
            "{path}"
        );
    }

    // The built-in rules made tasks; one was finished from the inbox; settings list the rules.
    assert!(report["tasks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["task_status"], "done");
    let tasks = api("/api/v1/tasks?status=done");
    assert!(
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == report["task_id"]),
        "{tasks}"
    );
    assert_eq!(report["rules"], 7);

    // The shared review: readable signed out, nothing internal, goals shown; altered and
    // expired links refused.
    let shared = &report["shared"];
    assert_eq!(shared["status"], 200, "{shared}");
    assert!(
        shared["h1"].as_str().unwrap().contains("quarterly review"),
        "{shared}"
    );
    assert_eq!(shared["nav"], 0, "no dashboard navigation for the customer");
    let text = shared["text"].as_str().unwrap().to_lowercase();
    for internal in [
        "tier",
        "health score",
        "model",
        "power feature",
        "revenue at risk",
    ] {
        assert!(
            !text.contains(internal),
            "the customer's review mentions {internal:?}"
        );
    }
    assert_eq!(shared["goals"], "Roll out reporting to the finance team");
    assert_eq!(report["altered_status"], 403);
    assert_eq!(report["expired_status"], 410);
    assert!(report["expired_text"].as_str().unwrap().contains("expired"));

    // A CSM starts on their own accounts and cannot open settings.
    assert_eq!(report["csm_owner_filter"], "mine");
    let csm_user = login("csm");
    let csm_name = csm_user.split(':').next().unwrap();
    let listed = Command::new(bin())
        .args(["--data-dir", dir.path().to_str().unwrap(), "user", "list"])
        .output()
        .unwrap();
    let csm_id = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{csm_name}\t")))
        .unwrap()
        .split('\t')
        .nth(2)
        .unwrap()
        .to_string();
    let own: Vec<String> = api(&format!("/api/v1/accounts?csm={csm_id}&limit=1000"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!own.is_empty());
    // Their current customers, as the admin's default view (current customers) lists them:
    // which of the generated accounts are current depends on the day the demo ends (today).
    let current: Vec<&str> = report["current_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        current.len() as u64,
        report["portfolio_rows"].as_u64().unwrap()
    );
    let own_current: Vec<String> = own
        .iter()
        .filter(|a| current.contains(&a.as_str()))
        .cloned()
        .collect();
    let mut rows: Vec<String> = report["csm_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    rows.sort();
    assert_eq!(rows, own_current);
    assert_eq!(report["csm_settings_status"], 403);
    for name in [
        "01-login",
        "02-portfolio",
        "03-account",
        "05-review-internal",
        "06-review-shared",
    ] {
        assert!(
            screenshots.join(format!("{name}.png")).exists(),
            "{name} screenshot"
        );
    }
    let _ = child.kill();
}

#[test]
fn user_create_rejects_bad_input_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], password: &str| {
        let mut command = command(dir.path());
        command.args(args).env("BELLWETHER_PASSWORD", password);
        command.output().unwrap()
    };
    let out = run(&["user", "create", "ann", "--role", "admin"], "short");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password: must have at least 10 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["user", "create", "a b", "--role", "admin"],
        "long enough password",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("username: ' ' is not allowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["user", "create", "ann", "--role", "csm", "--csm", "csm-9"],
        "long enough password",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no csms record \"csm-9\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(
        &["user", "create", "ann", "--role", "admin"],
        "long enough password"
    )
    .status
    .success());
    let out = run(
        &["user", "create", "ann", "--role", "viewer"],
        "another long password",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("user ann exists already"));
    assert!(run(
        &["user", "create", "ann", "--role", "viewer", "--replace"],
        "another long password"
    )
    .status
    .success());
    let listed = run(&["user", "list"], "");
    assert_eq!(String::from_utf8(listed.stdout).unwrap(), "ann\tviewer\t\n");
}

#[test]
fn forms_need_the_session_csrf_token_and_this_origin_and_roles_limit_settings() {
    let dir = tempfile::tempdir().unwrap();
    for (user, role) in [("root", "admin"), ("vera", "viewer"), ("pat", "viewer")] {
        let out = command(dir.path())
            .args(["user", "create", user, "--role", role])
            .env("BELLWETHER_PASSWORD", "correct horse battery")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = Server::start(dir.path(), &[]);
    let admin = sign_in(&server, "root", "correct%20horse%20battery");
    let (status, html) = page(&server, &admin, "/settings");
    assert_eq!(status, 200);
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let own_origin = server.base.clone();

    // Wrong token, another site's origin: refused, nothing made.
    assert_eq!(
        form_post(
            &server,
            &admin,
            "/settings/tokens",
            Some(&own_origin),
            "csrf=forged&name=x&role=admin"
        ),
        403
    );
    assert_eq!(
        form_post(
            &server,
            &admin,
            "/settings/tokens",
            Some("http://evil.example"),
            &format!("csrf={csrf}&name=x&role=admin")
        ),
        403
    );
    assert!(!page(&server, &admin, "/settings").1.contains(">x</th>"));
    // The session's token from this origin: done.
    assert_eq!(
        form_post(
            &server,
            &admin,
            "/settings/tokens",
            Some(&own_origin),
            &format!("csrf={csrf}&name=made-here&role=read")
        ),
        303,
        "POST-redirect-GET: the secret is shown once on the page redirected to"
    );
    assert!(page(&server, &admin, "/settings")
        .1
        .contains(">made-here</th>"));

    // A viewer reads pages but cannot open settings or change anything.
    let viewer = sign_in(&server, "vera", "correct%20horse%20battery");
    assert_eq!(page(&server, &viewer, "/portfolio").0, 200);
    assert_eq!(page(&server, &viewer, "/settings").0, 403);
    let (_, html) = page(&server, &viewer, "/portfolio");
    let viewer_csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        form_post(
            &server,
            &viewer,
            "/settings/tokens",
            None,
            &format!("csrf={viewer_csrf}&name=y&role=admin")
        ),
        403
    );

    // Signed out: pages redirect to sign-in; a wrong password is a 401 page.
    let (status, _) = page(
        &server,
        &Session {
            cookie: "bw_session=nothing".into(),
        },
        "/portfolio",
    );
    assert_eq!(status, 303);
    let wrong = no_redirects()
        .post(&server.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(&b"username=root&password=nope"[..])
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Password guessing: after 10 attempts a minute for one user name from one address, 429
    // with Retry-After (when the next attempt is allowed: one every 6 s), even with the
    // right password (another address is not held back: tests/it/hostile.rs).
    let attempt = |password: &str| {
        no_redirects()
            .post(&server.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(format!("username=pat&password={password}").as_bytes())
            .unwrap()
    };
    let statuses: Vec<u16> = (0..10)
        .map(|_| attempt("guess").status().as_u16())
        .collect();
    assert_eq!(statuses, vec![401; 10]);
    let limited = attempt("correct%20horse%20battery");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry), "{retry}");
    // Pages carry their own content security policy.
    let response = no_redirects().get(&server.url("/login")).call().unwrap();
    let csp = response
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
}
