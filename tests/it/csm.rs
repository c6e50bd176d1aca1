//! Issue 30, a dashboard a CSM can act on, in headless Chromium against a demo: every page
//! at 1280 and 390 px reads as words (no JSON, ISO timestamps or column names), the account
//! page opens on why the account is in its tier and what to do next, as the API says, and
//! a task made and a call logged from it land where the API and the page show them.
//! Screenshots of every page at both widths are saved as test artifacts.

use serde_json::{json, Value};

use super::support::*;

/// Words written for machines: `license_utilization`, `renewal_in_days`.
fn snake_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            let inner = w.trim_matches('_');
            inner.contains('_') && inner.chars().any(|c| c.is_ascii_lowercase())
        })
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// ISO dates and times as written for machines: `2026-11-29T15:49`, `2026-11-29`.
fn iso_dates(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    (0..b.len().saturating_sub(9))
        .filter(|&i| {
            (i == 0 || !b[i - 1].is_ascii_alphanumeric())
                && digits(i..i + 4)
                && b[i + 4] == b'-'
                && digits(i + 5..i + 7)
                && b[i + 7] == b'-'
                && digits(i + 8..i + 10)
        })
        .map(|i| text[i..(i + 16).min(text.len())].to_string())
        .collect()
}

#[test]
fn the_scans_find_what_they_look_for() {
    assert_eq!(
        snake_words("Licence use 35% · renewal_in_days is 44; acct-0067-u031"),
        vec!["renewal_in_days"]
    );
    assert_eq!(
        iso_dates("opened 2026-11-29T15:49:00.000Z, due 2026-12-01"),
        vec!["2026-11-29T15:49", "2026-12-01"]
    );
    assert_eq!(iso_dates("sub-000004, 5 Dec 2026"), Vec::<String>::new());
}

#[test]
fn every_page_reads_as_words_and_the_account_page_says_why_and_what_next() {
    let dir = tempfile::tempdir().unwrap();
    // The vendor's name and logo for the review, from the config file.
    let config = dir.path().join("bellwether.toml");
    std::fs::write(
        dir.path().join("logo.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><circle cx="20" cy="20" r="18" fill="#0a58ca"/></svg>"##,
    )
    .unwrap();
    std::fs::write(
        &config,
        "[review]\nvendor_name = \"Acme Analytics\"\nvendor_logo = \"logo.svg\"\n",
    )
    .unwrap();
    let (mut child, server) = start_demo(
        dir.path(),
        &[
            "--accounts",
            "60",
            "--years",
            "3",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let marker: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let token = marker["api_token"].as_str().unwrap();
    let admin = marker["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l[2] == "admin")
        .unwrap();
    let login = format!(
        "{}:{}",
        admin[0].as_str().unwrap(),
        admin[1].as_str().unwrap()
    );
    let api = |path: &str| {
        let reply = get(&server, path, Some(token));
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        reply.body
    };

    // A current customer (seats in force) with a tier and a power feature: the top card
    // has all to say.
    let metrics = api("/api/v1/metrics");
    let (account, health) = metrics["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["seats"].as_i64() > Some(0))
        .map(|a| a["account_id"].as_str().unwrap().to_string())
        .find_map(|id| {
            let h = api(&format!("/api/v1/accounts/{id}/health"))["health"].clone();
            (h["tier"].is_string() && h["power_feature"].is_string()).then_some((id, h))
        })
        .expect("a demo account with a tier");

    // A business result in the quarter the review shows (the last complete one), for a
    // target.
    let today = chrono::Utc::now().date_naive();
    let quarter_start = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        (chrono::Datelike::month0(&today) / 3) * 3 + 1,
        1,
    )
    .unwrap();
    let kpi = post_with(
        &server,
        "/api/v1/kpis",
        None,
        &[("authorization", &format!("Bearer {token}"))],
        json!({"account_id": account, "name": "hours_saved", "date": (quarter_start - chrono::Duration::days(20)).to_string(), "value": 120}).to_string(),
    );
    assert_eq!(kpi.status, 201, "{:?}", kpi.body);
    // Activities from another tool, as CSV: a bad row refuses the file and is named; a
    // good file is logged once however often it is sent.
    let auth = format!("Bearer {token}");
    let send = |csv: &str| {
        post_with(
            &server,
            "/api/v1/import/activities",
            None,
            &[("authorization", &auth), ("content-type", "text/csv")],
            csv,
        )
    };
    let yesterday = (today - chrono::Duration::days(1)).to_string();
    let refused = send(&format!(
        "account_id,kind,at,text\n{account},lunch,{yesterday},Lunch with the team\n"
    ));
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        (
            &refused.body["errors"][0]["row"],
            &refused.body["errors"][0]["column"]
        ),
        (&json!(2), &json!("kind"))
    );
    let file = format!(
        "account_id,kind,at,text,author\n{account},email,{yesterday},Sent the renewal quote,ana\n"
    );
    for inserted in [1, 0] {
        let sent = send(&file);
        assert_eq!(
            (sent.status, &sent.body["inserted"]),
            (200, &json!(inserted)),
            "{:?}",
            sent.body
        );
    }

    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("csm-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let report = browser_report(
        "csm_browser.mjs",
        &[
            "--base",
            &server.base,
            "--login",
            &login,
            "--account",
            &account,
            "--screenshots",
            screenshots.to_str().unwrap(),
        ],
    );
    assert_eq!(
        report["console_errors"],
        serde_json::json!([]),
        "no script errors or CSP violations"
    );

    // Every page, both widths: words, not data.
    let pages = report["pages"].as_object().unwrap();
    assert_eq!(pages.len(), 20, "{:?}", pages.keys());
    let mut machine_words = Vec::new();
    for (page, shown) in pages {
        assert_eq!(shown["status"], 200, "{page}");
        let text = shown["text"].as_str().unwrap();
        if text.contains("{\"") {
            machine_words.push(format!("{page}: JSON"));
        }
        for found in iso_dates(text).into_iter().chain(snake_words(text)) {
            machine_words.push(format!("{page}: {found}"));
        }
        let png = format!(
            "{}{}.png",
            page.split(' ').next().unwrap(),
            page.split(' ').nth(1).unwrap().replace('/', "-")
        );
        assert!(screenshots.join(&png).exists(), "{png}");
    }
    machine_words.dedup();
    assert_eq!(
        machine_words,
        Vec::<String>::new(),
        "pages show text written for machines"
    );
    // Every page fits a phone: nothing scrolls sideways (tables' rows are cards there).
    for path in pages.keys().filter_map(|k| k.strip_prefix("narrow ")) {
        let narrow = &pages[&format!("narrow {path}")];
        assert!(
            narrow["overflow"].as_i64().unwrap() <= 0,
            "{path}: {}",
            narrow["overflow"]
        );
    }

    // The portfolio by keyboard alone: an arrow key in a filter does not reload the page.
    let keyboard = &report["keyboard"];
    assert_eq!(keyboard["reached"], "segment", "{keyboard}");
    assert_eq!(keyboard["after_arrow_same_url"], true, "{keyboard}");
    assert!(
        keyboard["applied"].is_string(),
        "the button applied it: {keyboard}"
    );

    // Headers sort, each way; missing values last.
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str()?.parse().ok())
            .collect()
    };
    let sorted = &report["sorted"];
    let first = numbers(&sorted["arr_first"]);
    assert!(
        first.len() > 10 && first.windows(2).all(|w| w[0] >= w[1]),
        "{sorted}"
    );
    assert_eq!(sorted["arr_first_aria"], "descending");
    let second = numbers(&sorted["arr_second"]);
    assert!(second.windows(2).all(|w| w[0] <= w[1]), "{sorted}");
    assert_eq!(sorted["arr_second_aria"], "ascending");
    let utilization = numbers(&sorted["utilization"]);
    assert!(utilization.windows(2).all(|w| w[0] <= w[1]), "{sorted}");
    let nulls_at = sorted["utilization"]
        .as_array()
        .unwrap()
        .iter()
        .position(Value::is_null);
    if let Some(i) = nulls_at {
        assert!(sorted["utilization"].as_array().unwrap()[i..]
            .iter()
            .all(Value::is_null));
    }

    // Tier chips count the view's accounts by tier; the red one lists those.
    let chips = &report["chips"];
    let by_tier: u64 = ["red", "orange", "yellow", "green"]
        .iter()
        .map(|t| chips[t].as_u64().unwrap())
        .sum();
    assert!(by_tier <= chips["all"].as_u64().unwrap(), "{chips}");
    assert_eq!(report["red"]["count"], chips["red"], "{report}");
    assert!(report["red"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t == "red"));

    // The CSV of the view is its rows, in its order, with the API's numbers.
    let csv = &report["csv"];
    assert_eq!(csv["status"], 200);
    assert_eq!(csv["type"], "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(csv["body"].as_str().unwrap().as_bytes());
    let head = reader.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: Vec<&str> = rows.iter().map(|r| &r[col("account_id")]).collect();
    let listed: Vec<&str> = report["view_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(ids, listed);
    assert!(!rows.is_empty());
    let by_id: std::collections::HashMap<&str, &Value> = metrics["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["account_id"].as_str().unwrap(), a))
        .collect();
    for r in &rows {
        let id = &r[col("account_id")];
        let h = api(&format!("/api/v1/accounts/{id}/health"))["health"].clone();
        assert_eq!(&r[col("tier")], h["tier"].as_str().unwrap_or(""), "{id}");
        assert_eq!(
            r[col("health_score")].parse::<f64>().ok(),
            h["health_score"].as_f64(),
            "{id}"
        );
        assert_eq!(
            r[col("license_utilization")].parse::<f64>().ok(),
            by_id[id]["license_utilization"].as_f64(),
            "{id}"
        );
        assert_eq!(
            r[col("escalations_open")].parse::<f64>().ok(),
            by_id[id]["escalations_open"].as_f64(),
            "{id}"
        );
    }

    // The VP's tiles: the trailing twelve months as the outcomes API gives them.
    let outcomes = &report["outcomes"];
    let tiles = outcomes["tiles"].as_array().unwrap();
    let fields: Vec<&str> = tiles.iter().map(|t| t["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["arr", "grr", "nrr", "logo_retention"]);
    let today = chrono::Utc::now().date_naive();
    let end = today + chrono::Duration::days(1);
    let whole = api(&format!(
        "/api/v1/outcomes?from={}&to={end}&interval=whole&by=all",
        end - chrono::Months::new(12)
    ));
    let period = &whole["periods"][0];
    for t in &tiles[1..] {
        let field = t["field"].as_str().unwrap();
        assert_eq!(
            t["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
            period[field].as_f64(),
            "{field}: {t} vs {period}"
        );
    }
    // Quarters by name, charts at their own aspect with whole-percent ticks.
    let periods = outcomes["periods"].as_array().unwrap();
    assert!(!periods.is_empty());
    assert!(
        periods.iter().all(|p| {
            let p = p.as_str().unwrap();
            p.starts_with('Q') && p.len() == 7
        }),
        "{periods:?}"
    );
    assert_eq!(outcomes["stretched"], 0);
    for tick in outcomes["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .filter(|t| t.ends_with('%'))
    {
        let n: f64 = tick.trim_end_matches('%').parse().unwrap();
        assert_eq!(n % 5.0, 0.0, "a readable tick: {tick}");
    }
    // Churn reasons as bars with a total; their CSV with the session alone.
    let listening = &report["listening"];
    assert!(listening["bars"].as_u64().unwrap() > 0, "{listening}");
    assert!(
        listening["total"].as_str().unwrap().starts_with("In all: "),
        "{listening}"
    );
    assert_eq!(listening["csv"]["status"], 200, "{listening}");
    assert_eq!(listening["csv"]["type"], "text/csv; charset=utf-8");

    // The top card: the power feature and its renewal rate as the API gives them, first.
    let card = &report["card"];
    assert_eq!(card["power_feature"], health["power_feature"], "{card}");
    assert_eq!(
        card["rate"].as_f64(),
        health["expected_renewal_rate"].as_f64(),
        "{card}"
    );
    let percent = format!(
        "{:.0}%",
        health["expected_renewal_rate"].as_f64().unwrap() * 100.0
    );
    assert_eq!(card["rate_text"], percent.as_str());
    assert_eq!(
        card["monthly_uses"].as_f64(),
        health["power_feature_monthly_uses"].as_f64(),
        "{card}"
    );
    assert_eq!(
        card["buttons"],
        serde_json::json!([
            "Create a task",
            "Log an activity",
            "Open the quarterly review"
        ])
    );
    assert_eq!(card["before_tasks"], true);
    // People by the name they gave in identify traits, their email on hover, not by id.
    let people = card["people"].as_array().unwrap();
    assert!(!people.is_empty(), "{card}");
    for p in people {
        let id = p["id"].as_str().unwrap();
        let shown = p["shown"].as_str().unwrap();
        assert!(shown.contains(' ') && !shown.contains(id), "{p}");
        assert_eq!(p["title"], format!("{id}@customer.example").as_str(), "{p}");
    }
    assert_eq!(card["raw_tables_folded"], true);

    // The task made by hand: on the page and in the API, for the account, open, due as set.
    let title = "Walk the admins through reporting";
    assert_eq!(
        report["task"]["url"],
        format!("/accounts/{account}#tasks").as_str()
    );
    assert!(
        report["task"]["listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().starts_with(title)),
        "{report}"
    );
    let tasks = api(&format!("/api/v1/tasks?account={account}"));
    let made = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == title)
        .unwrap_or_else(|| panic!("{tasks}"));
    assert_eq!(
        (&made["status"], &made["due"], made["alert_id"].is_null()),
        (&Value::from("open"), &Value::from("2099-01-31"), true)
    );

    // The playbook started: its three steps are the account's tasks, due 2, 7 and 21 days on.
    let tasks = api(&format!("/api/v1/tasks?account={account}"));
    let mut steps: Vec<(String, String)> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let title = t["title"].as_str().unwrap();
            title.contains("sponsor about what would make them renew")
                || title.starts_with("Agree a success plan with")
                || title.contains("use of the power feature against the plan")
        })
        .map(|t| {
            (
                t["due"].as_str().unwrap().to_string(),
                t["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    steps.sort();
    let due: Vec<String> = steps.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(
        due,
        [2, 7, 21].map(|d| (today + chrono::Duration::days(d)).to_string()),
        "{tasks}"
    );
    assert!(!steps[0].1.contains("{account}"), "{steps:?}");
    assert!(report["playbook"]["listed"].as_array().unwrap().len() >= 4);

    // The review: the vendor, the CSM, this quarter beside the last, scales, confirmation;
    // printed on A4 each value on its label's line (the PDF is kept with the screenshots).
    let review = &report["review"];
    assert_eq!(review["vendor"], "Acme Analytics", "{review}");
    assert_eq!(review["logo"], 1);
    assert!(
        review["csm"]
            .as_str()
            .unwrap()
            .starts_with("Your customer success manager: "),
        "{review}"
    );
    assert!(
        review["saved"].as_str().unwrap().starts_with("Saved"),
        "{review}"
    );
    // People by name (the demo's identify traits carry first and last names); the role
    // set from the page puts the person first, back at the people section.
    let people = &report["people"];
    assert!(
        people["names"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.as_str().unwrap().contains(' ')),
        "{people}"
    );
    assert_eq!(people["first"], people["chosen"], "{people}");
    assert_eq!(people["first_role"], "champion");
    assert_eq!(people["at"], "#people");
    // Grouped headings label a phone's cards by group and column.
    assert_eq!(
        report["outcome_labels"],
        json!([
            "Segment",
            "Starting ARR",
            "Renewed accounts",
            "Renewed ARR",
            "Expansion",
            "Contraction",
            "Churned accounts",
            "Churned ARR",
            "New accounts",
            "New ARR",
            "GRR",
            "NRR",
            "Logo retention"
        ])
    );
    assert_eq!(report["outcome_card"], "block");
    // Amounts in a German browser: "12.500 USD".
    let german = report["german_arr"].as_array().unwrap();
    assert!(!german.is_empty(), "{report}");
    for pair in german {
        let value: i64 = pair[0].as_str().unwrap().parse().unwrap();
        let digits = value.abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push('.');
            }
            grouped.push(c);
        }
        let sign = if value < 0 { "-" } else { "" };
        assert_eq!(pair[1], format!("{sign}{grouped} USD").as_str(), "{pair}");
    }
    // Percentages too: "35 %" (a no-break space) in German.
    let german = report["german_use"].as_array().unwrap();
    assert!(!german.is_empty(), "{report}");
    for pair in german {
        let share: f64 = pair[0].as_str().unwrap().parse().unwrap();
        let shown: f64 = pair[1]
            .as_str()
            .unwrap()
            .strip_suffix("\u{a0}%")
            .unwrap_or_else(|| panic!("{pair}"))
            .parse()
            .unwrap();
        assert!((shown - share * 100.0).abs() <= 0.5, "{pair}");
    }
    // A saved view brings the same rows back, and is deleted after a question.
    let saved = &report["saved_view"];
    assert_eq!(saved["listed"], json!(["Red by licence use"]), "{saved}");
    assert_eq!(saved["rows"], report["view_accounts"], "{saved}");
    assert!(saved["question"].as_str().unwrap().starts_with("Delete"));
    assert_eq!(saved["after_delete"], 0);
    // Share links: the POST ends on the review page (a GET), the link is listed, active,
    // with its copy button and expiry 30 days out; the stranger sees the review without
    // the hidden section and with the target met; revoked after a question, it is refused.
    let share = &report["share"];
    assert_eq!(
        share["page_after_post"],
        format!("/accounts/{account}/review"),
        "{share}"
    );
    assert_eq!(share["rows"], 1, "{share}");
    assert_eq!(share["status"], "active");
    assert_eq!(share["copy"], share["url"]);
    let expires = chrono::DateTime::parse_from_rfc3339(share["expires"].as_str().unwrap()).unwrap();
    assert_eq!((expires.date_naive() - today).num_days(), 30, "{share}");
    assert_eq!(share["opened"], 200);
    let sections: Vec<&str> = share["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        sections,
        ["usage", "features", "surveys", "results", "goals"],
        "support hidden"
    );
    // Each hours-saved result has the target beside it, met when at least 100 (the one
    // posted above is 120); other results have none.
    let results = share["results"].as_array().unwrap();
    assert!(
        results.iter().any(|r| r[1] == "120" && r[2] == "100 (met)"),
        "{share}"
    );
    for r in results {
        let value: f64 = r[1].as_str().unwrap().replace(',', "").parse().unwrap();
        let expected = match r[0].as_str().unwrap() {
            "Hours saved" if value >= 100.0 => "100 (met)",
            "Hours saved" => "100 (not yet)",
            _ => "–",
        };
        assert_eq!(r[2], expected, "{r}");
    }
    assert!(
        share["question"].as_str().unwrap().starts_with("Revoke"),
        "{share}"
    );
    assert_eq!(share["status_after"], "revoked");
    assert_eq!(share["revoked_open"], 410);
    assert_eq!(share["revoked_text"], "this link was revoked");
    assert_eq!(review["compared_rows"], 6);
    assert!(review["scales"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.as_str().unwrap().contains(": ")));
    // Its numbers are the metrics API's on the quarter's last day (the last complete one).
    let quarter_start = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        (chrono::Datelike::month0(&today) / 3) * 3 + 1,
        1,
    )
    .unwrap();
    let last_day = quarter_start - chrono::Duration::days(1);
    let then = api(&format!(
        "/api/v1/accounts/{account}/metrics?as_of={last_day}"
    ));
    for field in [
        "active_users_30d",
        "seats",
        "license_utilization",
        "logins_per_user_week",
    ] {
        assert_eq!(
            review["shown"][field]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok()),
            then["metrics"][field].as_f64(),
            "{field}: {review} vs {then}"
        );
    }
    let rows = review["print_rows"].as_array().unwrap();
    assert!(rows.len() >= 11, "{review}");
    assert!(rows.iter().all(|r| r["same_line"] == true), "{rows:?}");
    assert!(screenshots.join("review-a4.pdf").exists());

    // A rule built from the form, as the condition syntax; deleting it asks first.
    let rule = &report["rule"];
    assert_eq!(
        rule["when"], "days_since_last_activity >= 14 and arr > 50000",
        "{rule}"
    );
    assert_eq!(rule["question"], "Delete the rule quiet-big-account?");
    assert_eq!(rule["after_dismiss"], 1, "dismissed: still there");
    assert_eq!(rule["after_accept"], 0);
    // A new token: a copy button and an example that uses it.
    let made = &report["token"];
    let secret = made["shown"].as_str().unwrap();
    assert_eq!(made["copy"], secret);
    assert!(
        made["example"]
            .as_str()
            .unwrap()
            .contains(&format!("Bearer {secret}")),
        "{made}"
    );
    assert_eq!(
        get(&server, "/api/v1/accounts?limit=1", Some(secret)).status,
        200
    );
    assert_eq!(made["page"], "/settings", "shown on a GET after the POST");
    assert_eq!(made["after_reload"], 0, "shown once");
    assert_eq!(made["listed"], 1, "reloading made no second token");

    // The inbox: a priority and ARR on every task, open ones high first.
    let inbox = report["inbox"].as_array().unwrap();
    assert!(!inbox.is_empty());
    let rank = |p: &Value| {
        ["high", "medium", "low"]
            .iter()
            .position(|x| p == x)
            .unwrap()
    };
    let open: Vec<usize> = inbox
        .iter()
        .filter(|t| t["status"].as_str().unwrap().starts_with("open"))
        .map(|t| rank(&t["priority"]))
        .collect();
    assert!(open.windows(2).all(|w| w[0] <= w[1]), "{inbox:?}");
    assert!(inbox
        .iter()
        .all(|t| t["arr"].as_str().unwrap().parse::<f64>().is_ok()));

    // On a phone the navigation folds behind its button.
    let menu = &report["menu"];
    assert_eq!(menu["nav_visible"], false, "{menu}");
    assert_eq!(menu["open_nav_visible"], true, "{menu}");
    assert!(menu["folded_height"].as_f64().unwrap() < 80.0, "{menu}");

    // The call logged: first on the timeline, and the last contact is today.
    let activity = &report["activity"];
    assert_eq!(activity["first"], "call", "{activity}");
    assert!(activity["first_text"]
        .as_str()
        .unwrap()
        .contains("Renewal call with the sponsor: budget approved"));
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        activity["last_contact"]
            .as_str()
            .unwrap()
            .starts_with(&today),
        "{activity}"
    );
    let notes = api(&format!("/api/v1/accounts/{account}/notes"));
    assert_eq!(notes["notes"][0]["kind"], "call", "{notes}");
    let _ = child.kill();
}

#[test]
fn tasks_playbooks_and_activities_through_the_api_name_the_field_they_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_demo(dir.path(), &["--accounts", "20", "--years", "2"]);
    let marker: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let admin = marker["api_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {admin}");
    let call = |path: &str, body: &str| {
        post_with(
            &server,
            path,
            None,
            &[("authorization", bearer.as_str())],
            body,
        )
    };
    let today = chrono::Utc::now().date_naive();

    // A task by hand: refused fields named; made for the account's CSM, a week on by default.
    let refused = call("/api/v1/accounts/acct-0001/tasks", r#"{"title": "  "}"#);
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert!(
        refused.body.to_string().contains("title"),
        "{:?}",
        refused.body
    );
    let past = call(
        "/api/v1/accounts/acct-0001/tasks",
        &format!(
            r#"{{"title": "Call", "due": "{}"}}"#,
            today - chrono::Duration::days(1)
        ),
    );
    assert_eq!(past.status, 400);
    assert!(past.body.to_string().contains("due"), "{:?}", past.body);
    assert_eq!(
        call("/api/v1/accounts/nobody/tasks", r#"{"title": "Call"}"#).status,
        404
    );
    let made = call(
        "/api/v1/accounts/acct-0001/tasks",
        r#"{"title": "Call the sponsor"}"#,
    );
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["status"], "open");
    assert_eq!(
        made.body["due"],
        (today + chrono::Duration::days(7)).to_string().as_str()
    );

    // A playbook: unknown ones refused by name; renewal-prep's three steps, due 7, 14, 30.
    let unknown = call(
        "/api/v1/accounts/acct-0001/playbooks",
        r#"{"playbook": "nope"}"#,
    );
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body.to_string().contains("renewal-prep"),
        "{:?}",
        unknown.body
    );
    let started = call(
        "/api/v1/accounts/acct-0001/playbooks",
        r#"{"playbook": "renewal-prep"}"#,
    );
    assert_eq!(started.status, 201, "{:?}", started.body);
    let mut due: Vec<String> = started.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["due"].as_str().unwrap().to_string())
        .collect();
    due.sort();
    assert_eq!(
        due,
        [7, 14, 30].map(|d| (today + chrono::Duration::days(d)).to_string())
    );

    // An activity: its kind and time kept; a future time or an unknown kind refused.
    let call_logged = call(
        "/api/v1/accounts/acct-0001/notes",
        r#"{"text": "QBR prep call", "kind": "meeting", "at": "2026-01-15T10:00:00Z"}"#,
    );
    assert_eq!(call_logged.status, 201, "{:?}", call_logged.body);
    let bad_kind = call(
        "/api/v1/accounts/acct-0001/notes",
        r#"{"text": "x", "kind": "fax"}"#,
    );
    assert_eq!(bad_kind.status, 400);
    assert!(bad_kind.body.to_string().contains("kind"));
    let future = call(
        "/api/v1/accounts/acct-0001/notes",
        r#"{"text": "x", "at": "2999-01-01T00:00:00Z"}"#,
    );
    assert_eq!(future.status, 400);
    assert!(future.body.to_string().contains("at"));
    let notes = get(&server, "/api/v1/accounts/acct-0001/notes", Some(&admin));
    let meeting = notes.body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["text"] == "QBR prep call")
        .unwrap()
        .clone();
    assert_eq!(
        (&meeting["kind"], &meeting["created_at"]),
        (
            &Value::from("meeting"),
            &Value::from("2026-01-15T10:00:00.000Z")
        )
    );

    // The API reads with a dashboard session (no token), never writes with one.
    let login = marker["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l[2] == "admin")
        .unwrap();
    let session = sign_in(
        &server,
        login[0].as_str().unwrap(),
        login[1].as_str().unwrap(),
    );
    let cookie = session.cookie.clone();
    let (status, body) = page(&server, &session, "/api/v1/tasks?account=acct-0001");
    assert_eq!(status, 200);
    assert!(body.contains("Call the sponsor"), "{body}");
    let write = post_with(
        &server,
        "/api/v1/accounts/acct-0001/tasks",
        None,
        &[("cookie", cookie.as_str())],
        r#"{"title": "Sneaky"}"#,
    );
    assert_eq!(write.status, 401);
    let _ = child.kill();
}
