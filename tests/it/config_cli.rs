//! The command line: help, configuration layering and errors, as a user meets them.

use super::support::*;

#[test]
fn every_subcommand_has_help_and_takes_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["serve", "demo", "events", "token"] {
        let out = cli(dir.path(), &[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub} --help failed");
        assert!(
            text.contains("--data-dir"),
            "{sub} --help should list --data-dir:\n{text}"
        );
    }
    let serve_help =
        String::from_utf8_lossy(&cli(dir.path(), &["serve", "--help"]).stdout).to_string();
    assert!(
        serve_help.contains("--listen") && serve_help.contains("127.0.0.1:8780"),
        "{serve_help}"
    );
}

#[test]
fn bad_config_fails_at_start_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bellwether.toml");
    std::fs::write(&config, "[ingest]\ndedup_window_days = 400\n").unwrap();
    let out = cli(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bellwether.toml"), "{err}");
    assert!(err.contains("ingest.dedup_window_days"), "{err}");
    assert!(err.contains("must be 1 to 365"), "{err}");

    let out = command(dir.path())
        .env("BELLWETHER_LISTEN", "nowhere")
        .args(["serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BELLWETHER_LISTEN") && err.contains("not an address"),
        "{err}"
    );
}

#[test]
fn config_file_write_keys_name_the_source_and_flags_beat_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    // The file says one listen address, the environment another, the flag a third (port 0).
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[write_keys]\nwk_file = \"web-app\"\n",
    )
    .unwrap();
    let mut cmd = command(dir.path());
    cmd.env("BELLWETHER_CONFIG", &config)
        .env("BELLWETHER_LISTEN", "127.0.0.1:2");
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("bellwether listening on ")
        .unwrap()
        .to_string();
    assert!(!base.ends_with(":1") && !base.ends_with(":2"), "{base}");
    let server = Server::attach(&base);
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some("wk_file"),
            r#"{"userId":"u","event":"E"}"#
        )
        .status,
        200
    );
    let token = create_token(dir.path(), "read");
    let events = stored_events(&server, &token);
    assert_eq!(events[0]["source"], serde_json::json!("web-app"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_stops_cleanly_after_committing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some(KEY),
            r#"{"userId":"u","event":"Before stop"}"#
        )
        .status,
        200
    );
    assert!(server.stop().success());
    let raw = stored_raw(dir.path());
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["event"], serde_json::json!("Before stop"));
}

#[test]
fn events_cli_filters_by_user_and_account_and_explains_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&dir.path().join("empty"), &["events"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database"));
    let server = Server::start(dir.path(), &[]);
    let body = r#"{"batch":[{"type":"group","userId":"u1","groupId":"a1","timestamp":"2026-01-01T00:00:00Z"},
        {"type":"track","userId":"u1","event":"Mine","timestamp":"2026-01-02T00:00:00Z"},
        {"type":"track","userId":"u2","event":"Theirs"}]}"#;
    assert_eq!(post(&server, "/v1/batch", Some(KEY), body).status, 200);
    let out = cli(
        dir.path(),
        &[
            "events",
            "--since",
            "2000-01-01",
            "--user",
            "u1",
            "--account",
            "a1",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(table.lines().count(), 3, "header, group and Mine:\n{table}");
    assert!(
        table.contains("Mine") && !table.contains("Theirs"),
        "{table}"
    );
    let out = cli(dir.path(), &["events", "--since", "last tuesday"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since: not a date"));
}
