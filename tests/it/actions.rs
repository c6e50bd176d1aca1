//! Actions against real receivers: a Python HTTP server standing in for Slack and a
//! webhook target, and an aiosmtpd SMTP server. Firing, cooldown, retries after 500s,
//! signatures, tasks, a kill -9 in the middle of a delivery, and surveys answered through
//! their hosted page (reuse and tampering refused); each on the embedded store and on a
//! ClickHouse node that runs the background work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use super::support::*;

/// A sink process, killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(dir: &Path, script: &str, name: &str, args: &[&str]) -> Sink {
        let (log, port_file) = (
            dir.join(format!("{name}.jsonl")),
            dir.join(format!("{name}.port")),
        );
        let child = Command::new("python3")
            .arg(clients_dir().join(script))
            .args([
                "--log",
                log.to_str().unwrap(),
                "--port-file",
                port_file.to_str().unwrap(),
            ])
            .args(args)
            .spawn()
            .expect("python3");
        let started = Instant::now();
        while !port_file.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{script} did not start (aiosmtpd is installed by the README's test command)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Sink { child, port, log }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until `done` holds for the log.
    fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "waited a minute for {what}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn days_ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Two accounts of CSM Maja; `esc` has an escalated ticket open for 10 days, `calm` none.
fn import_fixture(dir: &Path, config: &Path) {
    let today = Utc::now().date_naive();
    let files = [
        ("csms", "csm_id,name,email\ncsm-1,Maja Lind,maja@vendor.example\n".to_string()),
        ("accounts", "account_id,name,parent_id,segment,plan,csm,timezone,created_at\nesc,Escalated Co,,pro,pro,csm-1,,\ncalm,Calm Co,,pro,pro,csm-1,,\n".to_string()),
        (
            "subscriptions",
            format!(
                "subscription_id,account_id,product,plan,seats,arr,currency,start_date,end_date,status,outcome,provisioned_at,go_live_at\ns-esc,esc,app,pro,10,12000,USD,{},{},active,open,,\ns-calm,calm,app,pro,10,12000,USD,{},{},active,open,,\n",
                today - chrono::Duration::days(100),
                today + chrono::Duration::days(200),
                today - chrono::Duration::days(100),
                today + chrono::Duration::days(200)
            ),
        ),
        ("tickets", format!("ticket_id,account_id,user_id,type,priority,opened_at,first_response_at,resolved_at,escalated\nt-1,esc,u-1,bug,high,{},,,true\nt-2,calm,u-2,question,normal,{},,{},false\nt-3,calm,u-3,question,low,{},,{},false\n", days_ago(10), days_ago(3), days_ago(1), days_ago(4), days_ago(2))),
    ];
    for (kind, text) in files {
        let path = dir.join(format!("{kind}.csv"));
        std::fs::write(&path, text).unwrap();
        let out = cli(
            dir,
            &[
                "--config",
                config.to_str().unwrap(),
                "import",
                kind,
                path.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The config; with `store`, a ClickHouse node that runs the background work.
fn config(dir: &Path, hook: u16, smtp: u16, surveys: bool, store: Option<&str>) -> PathBuf {
    let path = dir.join("bellwether.toml");
    let store = store.map_or(String::new(), |url| {
        format!("store = \"{url}\"\n\n[health]\nbackground = true\n")
    });
    std::fs::write(
        &path,
        format!(
            r#"{store}
[actions]
builtin_rules = false
evaluate_every_seconds = 1
retry_base_seconds = 1
dashboard_url = "https://cs.vendor.example"

[actions.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "s3cret"

[actions.channels.slack]
type = "slack"
url = "http://127.0.0.1:{hook}/slack"

[actions.channels.mail]
type = "email"
to = "owner"

[actions.smtp]
host = "127.0.0.1"
port = {smtp}
from = "bellwether@vendor.example"

[actions.playbooks.escalation]
notify = ["slack", "mail"]
tasks = [{{ title = "Call {{account}} about the escalation", due_days = 2 }}]

[[actions.rules]]
name = "escalation-open"
when = "escalation_open_days > 7"
cooldown_days = 7
notify = ["hook"]
playbook = "escalation"

[actions.surveys]
enabled = {surveys}
quarterly_nps = false
go_live = false
"#
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, config: &Path) -> Server {
    Server::start(dir, &[("BELLWETHER_CONFIG", config.to_str().unwrap())])
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

/// Sinks for the webhook and Slack (`hook_args` for the HTTP sink) and SMTP, the config
/// and the fixture.
fn setup(
    dir: &Path,
    hook_args: &[&str],
    surveys: bool,
    store: Option<&str>,
) -> (Sink, Sink, PathBuf) {
    let hook = Sink::start(dir, "http_sink.py", "hook", hook_args);
    let smtp = Sink::start(dir, "smtp_sink.py", "smtp", &[]);
    let config = config(dir, hook.port, smtp.port, surveys, store);
    import_fixture(dir, &config);
    (hook, smtp, config)
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_rule_fires_once_through_every_channel_with_retries_signature_and_a_task() {
    fires_once_through_every_channel(None);
}

#[test]
fn a_rule_fires_once_through_every_channel_with_retries_signature_and_a_task_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    fires_once_through_every_channel(Some(&clickhouse.store_url("bw_actions")));
}

fn fires_once_through_every_channel(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // The first two requests get 500s: the outbox retries them.
    let (hook, smtp, config) = setup(dir.path(), &["--fail-first", "2"], false, store);
    // A second rule about the same cause (the open escalation): it alerts, but its task
    // merges into the first rule's.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        r#"
[[actions.rules]]
name = "escalation-long"
when = "escalation_open_days > 5"
cooldown_days = 7
tasks = [{ title = "A second task for {account}", due_days = 1 }]
"#,
    );
    std::fs::write(&config, text).unwrap();

    // Dry run first: the CLI names the account and records nothing.
    let out = cli(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "alerts",
            "test",
            "escalation-open",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("esc\tEscalated Co\tAn escalation open for 10 days"),
        "{stdout}"
    );

    let server = start(dir.path(), &config);
    let token = token(dir.path(), &config, "admin");
    let delivered = |lines: &[Value], path: &str| {
        lines
            .iter()
            .filter(|l| l["path"] == path && l["status"] == 200)
            .count()
    };
    let lines = hook.wait_for("the webhook and Slack message", |l| {
        delivered(l, "/hook") == 1 && delivered(l, "/slack") == 1
    });
    let mails = smtp.wait_for("the email to the CSM", |l| !l.is_empty());

    // The webhook: signed over "t.body" with the channel's secret; the idempotency key in
    // the header and the body.
    let webhook = lines
        .iter()
        .find(|l| l["path"] == "/hook" && l["status"] == 200)
        .unwrap();
    let signature = webhook["headers"]["x-bellwether-signature"]
        .as_str()
        .unwrap();
    let (t, v1) = signature
        .strip_prefix("t=")
        .unwrap()
        .split_once(",v1=")
        .unwrap();
    let body = webhook["body"].as_str().unwrap();
    assert_eq!(
        v1,
        hmac_hex("s3cret", format!("{t}.{body}").as_bytes()),
        "signature verifies"
    );
    assert_ne!(v1, hmac_hex("wrong", format!("{t}.{body}").as_bytes()));
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["account_id"], "esc");
    assert_eq!(payload["rule"], "escalation-open");
    assert_eq!(payload["link"], "https://cs.vendor.example/accounts/esc");
    assert_eq!(payload["id"], webhook["headers"]["idempotency-key"]);
    // Slack: Block Kit with the account, the reason and a button to the dashboard.
    let slack: Value = serde_json::from_str(
        lines
            .iter()
            .find(|l| l["path"] == "/slack" && l["status"] == 200)
            .unwrap()["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        slack["blocks"][0]["text"]["text"],
        "Escalated Co: escalation-open"
    );
    assert!(slack["blocks"][2]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("An escalation open for 10 days"));
    assert_eq!(
        slack["blocks"][3]["elements"][0]["url"],
        "https://cs.vendor.example/accounts/esc"
    );
    // Email to the owning CSM.
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["to"], json!(["maja@vendor.example"]));
    assert_eq!(
        mails[0]["subject"],
        "[bellwether] Escalated Co: escalation-open"
    );
    assert!(mails[0]["body"]
        .as_str()
        .unwrap()
        .contains("https://cs.vendor.example/accounts/esc"));

    // Two 500s, then success: three attempts across the messages, none dead.
    assert_eq!(lines.iter().filter(|l| l["status"] == 500).count(), 2);
    // The worker marks a message sent after the sink answered: wait for the last mark.
    let waited = std::time::Instant::now();
    let sent = loop {
        let sent = get(&server, "/api/v1/outbox?status=sent", Some(&token)).body;
        if sent["messages"].as_array().unwrap().len() == 3 || waited.elapsed().as_secs() >= 30 {
            break sent;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
    let attempts: i64 = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["attempts"].as_i64().unwrap())
        .sum();
    assert_eq!(
        attempts, 5,
        "3 messages, 2 of their attempts failed: {sent}"
    );
    assert_eq!(
        get(&server, "/api/v1/outbox?status=dead", Some(&token)).body["messages"],
        json!([])
    );

    // The playbook's task is in the CSM's inbox, due in 2 days.
    let tasks = get(&server, "/api/v1/tasks?csm=csm-1", Some(&token)).body;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "one task per account per cause: {tasks:?}");
    assert_eq!(tasks[0]["title"], "Call Escalated Co about the escalation");
    assert_eq!(
        tasks[0]["also"],
        json!(["An escalation open for 10 days (escalation-long)"]),
        "the second rule's reason is on the task"
    );
    assert_eq!(
        tasks[0]["due"],
        (Utc::now().date_naive() + chrono::Duration::days(2)).to_string()
    );
    let id = tasks[0]["id"].as_i64().unwrap();
    let snooze = post_with(
        &server,
        &format!("/api/v1/tasks/{id}"),
        None,
        &[("authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(snooze.status, 405, "tasks change by PATCH");
    let patch = |body: &str| {
        let mut response = agent()
            .patch(&server.url(&format!("/api/v1/tasks/{id}")))
            .header("authorization", &format!("Bearer {token}"))
            .send(body.as_bytes())
            .unwrap();
        (
            response.status().as_u16(),
            serde_json::from_str::<Value>(&response.body_mut().read_to_string().unwrap()).unwrap(),
        )
    };
    let (status, body) = patch(r#"{"status": "snoozed"}"#);
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("snoozed_until")),
        "{body}"
    );
    let (status, body) = patch(r#"{"status": "done"}"#);
    assert_eq!((status, body["status"].as_str()), (200, Some("done")));

    // Cooldown: evaluating again fires nothing new, and nothing more arrives.
    let again = post_with(
        &server,
        "/api/v1/alerts/evaluate",
        None,
        &[("authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["fired"].as_array().unwrap().len(), 2);
    assert!(
        again.body["fired"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["recorded"] == false),
        "held back by the cooldown: {}",
        again.body
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hook.lines().iter().filter(|l| l["status"] == 200).count(),
        2
    );
    assert_eq!(smtp.lines().len(), 1);
    assert_eq!(
        get(&server, "/api/v1/alerts", Some(&token)).body["alerts"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "both rules alerted"
    );
}

#[test]
fn a_kill_in_the_middle_of_a_delivery_neither_loses_nor_doubles_it() {
    kill_in_a_delivery(None);
}

#[test]
fn a_kill_in_the_middle_of_a_delivery_neither_loses_nor_doubles_it_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    kill_in_a_delivery(Some(&clickhouse.store_url("bw_actions")));
}

fn kill_in_a_delivery(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // The sink holds the first request 10 s: bellwether is killed while it waits.
    let (hook, smtp, config) = setup(dir.path(), &["--hold-first", "10"], false, store);
    let mut server = start(dir.path(), &config);
    hook.wait_for("the first delivery to arrive", |l| !l.is_empty());
    server.kill9();
    let mut server = start(dir.path(), &config);
    let token = token(dir.path(), &config, "read");
    hook.wait_for("the interrupted message again, and the next one", |l| {
        let keys: std::collections::HashSet<&str> = l
            .iter()
            .filter_map(|x| x["headers"]["idempotency-key"].as_str())
            .collect();
        keys.len() == 2
            && l.iter()
                .filter(|x| x["headers"]["idempotency-key"] == l[0]["headers"]["idempotency-key"])
                .count()
                == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let lines = hook.lines();
    // The interrupted message came again with the same key: applied once, answered as a
    // repeat; no third message; the alert was decided once.
    let first_key = lines[0]["headers"]["idempotency-key"].as_str().unwrap();
    let copies: Vec<&Value> = lines
        .iter()
        .filter(|l| l["headers"]["idempotency-key"] == first_key)
        .collect();
    assert_eq!(copies.len(), 2, "{lines:?}");
    assert_eq!(copies[1]["repeat"], true);
    assert_eq!(
        lines.iter().filter(|l| l["repeat"] == false).count(),
        2,
        "each message applied once: {lines:?}"
    );
    let sent = get(&server, "/api/v1/outbox?status=sent", Some(&token)).body;
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
    assert_eq!(
        get(&server, "/api/v1/alerts", Some(&token)).body["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(smtp.wait_for("the email", |l| !l.is_empty()).len(), 1);
    server.stop();
}

#[test]
fn a_closed_ticket_brings_one_survey_answered_once_on_its_page() {
    survey_answered_once(None);
}

#[test]
fn a_closed_ticket_brings_one_survey_answered_once_on_its_page_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    survey_answered_once(Some(&clickhouse.store_url("bw_actions")));
}

fn survey_answered_once(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (_hook, smtp, config) = setup(dir.path(), &[], true, store);
    let server = start(dir.path(), &config);
    // u-2 (whose ticket at calm closed yesterday) has an email; u-1's ticket is still open.
    let identify = post(
        &server,
        "/v1/identify",
        Some(KEY),
        r#"{"userId": "u-2", "traits": {"email": "ann@customer.example"}}"#,
    );
    assert_eq!(identify.status, 200);
    let mails = smtp.wait_for("the survey email", |l| {
        l.iter().any(|m| m["to"] == json!(["ann@customer.example"]))
    });
    let mail = mails
        .iter()
        .find(|m| m["to"] == json!(["ann@customer.example"]))
        .unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    let link = mail
        .split_whitespace()
        .find(|w| w.starts_with("https://cs.vendor.example/s/"))
        .unwrap()
        .to_string();
    let path = link.strip_prefix("https://cs.vendor.example").unwrap();

    let page = agent()
        .get(&server.url(path))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        page.contains("How satisfied are you with the help you got?"),
        "{page}"
    );
    let answer = |path: &str, body: &str| {
        agent()
            .post(&server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body.as_bytes())
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(answer(path, "score=9"), 400, "CSAT is 1 to 5");
    assert_eq!(
        answer(path, &format!("score=4&comment={}", "x".repeat(2_001))),
        413,
        "a comment over 2,000 characters is refused whole, not cut"
    );
    assert_eq!(answer(path, "score=4&comment=Quick+and+kind"), 200);
    assert_eq!(answer(path, "score=1"), 409, "one answer per link");
    let (payload, signature) = path.strip_prefix("/s/").unwrap().split_once('.').unwrap();
    let tampered = format!(
        "/s/{payload}.{}{}",
        if signature.starts_with('A') { "B" } else { "A" },
        &signature[1..]
    );
    assert_eq!(answer(&tampered, "score=1"), 403);
    assert_eq!(
        agent()
            .get(&server.url(&tampered))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        403
    );

    // The answer is a survey response at once.
    let token = token(dir.path(), &config, "read");
    let responses = get(
        &server,
        "/api/v1/survey_responses?account_id=calm",
        Some(&token),
    )
    .body;
    let items = responses["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{responses}");
    assert_eq!(
        (
            items[0]["kind"].as_str(),
            items[0]["score"].as_i64(),
            items[0]["trigger"].as_str(),
            items[0]["user_id"].as_str()
        ),
        (Some("csat"), Some(4), Some("ticket"), Some("u-2"))
    );
    assert_eq!(items[0]["comment"], "Quick and kind");
    let pending = |user: &str, key: &str| {
        agent()
            .get(&server.url(&format!("/v1/surveys/pending?writeKey={key}&userId={user}")))
            .call()
            .unwrap()
    };
    assert_eq!(
        pending("u-2", KEY).status().as_u16(),
        204,
        "answered: nothing pending"
    );
    // u-3 has no email: their survey waits for the web snippet, which gets a working link.
    assert_eq!(pending("u-3", "not-a-key").status().as_u16(), 401);
    let mut waiting = pending("u-3", KEY);
    assert_eq!(waiting.status().as_u16(), 200);
    let url = serde_json::from_str::<Value>(&waiting.body_mut().read_to_string().unwrap()).unwrap()
        ["url"]
        .as_str()
        .unwrap()
        .to_string();
    let snippet_path = url.strip_prefix("https://cs.vendor.example").unwrap();
    assert_eq!(answer(snippet_path, "score=5"), 200);
    assert_eq!(pending("u-3", KEY).status().as_u16(), 204);
    // u-1's ticket is still open: no survey for them.
    assert_eq!(pending("u-1", KEY).status().as_u16(), 204);
    assert_eq!(
        agent()
            .get(&server.url("/js/survey.js"))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // One email in all: the same occasion never asks twice.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        smtp.lines()
            .iter()
            .filter(|m| m["to"] == json!(["ann@customer.example"]))
            .count(),
        1
    );

    // Erasing a person takes their invitation and the email that held their address.
    let admin = self::token(dir.path(), &config, "admin");
    let to_ann = |status: &str| {
        let listed = get(
            &server,
            &format!("/api/v1/outbox?status={status}"),
            Some(&admin),
        )
        .body;
        listed["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["target"] == "ann@customer.example")
            .count()
    };
    let started = Instant::now();
    while to_ann("sent") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the survey email is marked sent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut erase = agent()
        .delete(&server.url("/api/v1/users/u-2"))
        .header("authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    let report: Value = serde_json::from_str(&erase.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(report["survey_sends"], 1, "{report}");
    assert_eq!((to_ann("sent"), to_ann("pending")), (0, 0));
    assert_eq!(
        pending("u-3", KEY).status().as_u16(),
        204,
        "another person's invitation is theirs still (answered)"
    );
}

#[test]
fn a_message_that_keeps_failing_becomes_a_dead_letter_and_a_retry_delivers_it() {
    dead_letter_and_retry(None);
}

#[test]
fn a_message_that_keeps_failing_becomes_a_dead_letter_and_a_retry_delivers_it_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    dead_letter_and_retry(Some(&clickhouse.store_url("bw_actions")));
}

fn dead_letter_and_retry(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // The receiver fails the first 4 requests: with max_attempts = 2 both HTTP messages die.
    let (hook, _smtp, config) = setup(dir.path(), &["--fail-first", "4"], false, store);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "retry_base_seconds = 1",
        "retry_base_seconds = 1\nmax_attempts = 2",
    );
    std::fs::write(&config, text).unwrap();
    let server = start(dir.path(), &config);
    let token = token(dir.path(), &config, "admin");
    let auth = [("authorization", format!("Bearer {token}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = Instant::now();
    let dead = loop {
        let dead = get(&server, "/api/v1/outbox?status=dead", Some(&token)).body;
        if dead["messages"].as_array().unwrap().len() == 2 {
            break dead;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "two dead letters expected: {dead}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for message in dead["messages"].as_array().unwrap() {
        assert_eq!(message["attempts"], 2);
        assert_eq!(message["last_error"], "HTTP 500");
        // Webhook URLs can be secrets: only their scheme and host are shown.
        assert_eq!(message["target"], format!("http://127.0.0.1:{}", hook.port));
    }
    // Retried, they are delivered (the sink answers 200 from the 5th request on).
    for message in dead["messages"].as_array().unwrap() {
        let id = message["id"].as_i64().unwrap();
        let retried = post_with(
            &server,
            &format!("/api/v1/outbox/{id}/retry"),
            None,
            &auth,
            "",
        );
        assert_eq!(retried.status, 200, "{:?}", retried.body);
    }
    assert_eq!(
        post_with(&server, "/api/v1/outbox/999999/retry", None, &auth, "").status,
        404
    );
    hook.wait_for("both messages delivered after the retry", |l| {
        l.iter().filter(|x| x["status"] == 200).count() == 2
    });
    let started = Instant::now();
    while get(&server, "/api/v1/outbox?status=sent", Some(&token)).body["messages"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the retried messages are marked sent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get(&server, "/api/v1/outbox?status=dead", Some(&token)).body["messages"],
        json!([])
    );
}

#[test]
fn a_channel_and_survey_policy_set_in_settings_hold_without_the_config_file() {
    settings_without_the_config_file(None);
}

#[test]
fn a_channel_and_survey_policy_set_in_settings_hold_without_the_config_file_on_clickhouse() {
    let clickhouse = ClickHouseServer::start();
    settings_without_the_config_file(Some(&clickhouse.store_url("bw_settings")));
}

fn settings_without_the_config_file(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (hook, _smtp, config) = setup(dir.path(), &[], false, store);
    let out = command(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(["user", "create", "root", "--role", "admin"])
        .env("BELLWETHER_PASSWORD", "correct horse battery")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = start(dir.path(), &config);
    let token = token(dir.path(), &config, "admin");
    let admin = sign_in(&server, "root", "correct%20horse%20battery");
    let csrf = {
        let html = page(&server, &admin, "/settings").1;
        html.split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let post = |path: &str, body: &str| {
        let mut response = no_redirects()
            .post(&server.url(path))
            .header("cookie", &admin.cookie)
            .header("origin", &server.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .send(format!("csrf={csrf}&{body}").as_bytes())
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    let rule = r#"{"name": "escalation-ops", "when": "escalation_open_days > 7", "cooldown_days": 7, "notify": ["ops"]}"#;
    let add_rule = || {
        post_with(
            &server,
            "/api/v1/rules",
            None,
            &[("authorization", &format!("Bearer {token}"))],
            rule,
        )
    };
    // No such channel yet: the rule is refused, naming notify.
    let refused = add_rule();
    assert_eq!(
        (refused.status, refused.body["errors"][0]["field"].as_str()),
        (400, Some("notify")),
        "{:?}",
        refused.body
    );
    // A bad channel is refused by field; a config channel's name is taken.
    let (status, body) = post(
        "/settings/channels",
        "name=bad&type=webhook&url=ftp%3A%2F%2Fx",
    );
    assert_eq!(status, 400);
    assert!(body.contains("url: must be an http"), "{body}");
    let (status, _) = post(
        "/settings/channels",
        "name=hook&type=slack&url=http%3A%2F%2F127.0.0.1%3A9%2Fx",
    );
    assert_eq!(status, 409);
    // Added here, it takes a rule and the rule's alert reaches it, signed with its secret.
    let (status, _) = post(
        "/settings/channels",
        &format!(
            "name=ops&type=webhook&url=http%3A%2F%2F127.0.0.1%3A{}%2Fops&secret=ops-secret",
            hook.port
        ),
    );
    assert_eq!(status, 303);
    assert_eq!(add_rule().status, 201);
    let lines = hook.wait_for("the alert on the channel added in settings", |l| {
        l.iter().any(|l| l["path"] == "/ops" && l["status"] == 200)
    });
    let sent = lines.iter().find(|l| l["path"] == "/ops").unwrap();
    let signature = sent["headers"]["x-bellwether-signature"].as_str().unwrap();
    let (t, v1) = signature
        .split_once(",v1=")
        .map(|(t, v)| (t.trim_start_matches("t="), v))
        .unwrap();
    let body = sent["body"].as_str().unwrap();
    assert_eq!(v1, hmac_hex("ops-secret", format!("{t}.{body}").as_bytes()));
    let (_, html) = page(&server, &admin, "/settings");
    assert!(html.contains("data-channel=\"ops\""), "{html}");
    // A channel a rule notifies is not deleted (the rule would stop firing): the refusal
    // names the rule.
    let (status, body) = post("/settings/channels/delete", "name=ops");
    assert_eq!(status, 409);
    assert!(body.contains("escalation-ops"), "{body}");

    // The survey policy: a bad value is refused by field; saved, it is the policy in force.
    let policy = |kind: &str, gap: u32| {
        format!("enabled=on&after_ticket=on&after_ticket_kind={kind}&after_ticket_days=30&go_live=on&global_gap_days={gap}&token_valid_days=20")
    };
    let (status, body) = post("/settings/surveys", &policy("nps", 14));
    assert_eq!(status, 400);
    assert!(body.contains("after_ticket_kind"), "{body}");
    assert_eq!(post("/settings/surveys", &policy("ces", 21)).0, 303);
    let (_, html) = page(&server, &admin, "/settings");
    assert!(html.contains("Set here"), "{html}");
    assert!(
        html.contains("name=\"global_gap_days\" min=\"0\" max=\"366\" value=\"21\""),
        "{html}"
    );
    assert!(!html.contains("name=\"quarterly_nps\" checked"), "{html}");
    assert_eq!(post("/settings/surveys/reset", "").0, 303);
    assert!(page(&server, &admin, "/settings")
        .1
        .contains("From the config file"));
}
