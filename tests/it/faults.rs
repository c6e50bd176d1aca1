//! Faults: a full disk (a small tmpfs as the data dir) answers 503 with a clear log line and
//! corrupts nothing; a kill -9 in the middle of an import leaves the database as it was; a
//! kill -9 during recalibration keeps what committed and the next run completes.
//! (kill -9 during ingest: durability.rs; during outbox delivery: actions.rs.)

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::*;

/// A tmpfs of `megabytes` mounted on `dir`, unmounted when dropped (the test command runs
/// as root, as it installs Debian packages).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u32) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m"),
                "tmpfs",
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, megabytes: u32) {
        let status = Command::new("mount")
            .args([
                "-o",
                &format!("remount,size={megabytes}m"),
                self.0.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_full_disk_answers_503_logs_why_and_keeps_every_acknowledged_event() {
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let disk = Tmpfs::mount(&data, 3);
    let log = outer.path().join("server.log");
    let mut child = command(&data)
        .env("BELLWETHER_WRITE_KEYS", KEY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("bellwether listening on ")
        .unwrap()
        .to_string();
    let server = Server::attach(&base);

    // Send until the disk is full: every batch is acknowledged (200) or refused (503).
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused = 0;
    let started = Instant::now();
    let padding = "x".repeat(300);
    for batch in 0..3_000 {
        let items: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"type":"track","userId":"u{i}","event":"Filling","messageId":"b{batch}-m{i}","properties":{{"pad":"{padding}"}}}}"#))
            .collect();
        let reply = post(
            &server,
            "/v1/batch",
            Some(KEY),
            format!(r#"{{"batch":[{}]}}"#, items.join(",")),
        );
        match reply.status {
            200 => acked.extend((0..50).map(|i| format!("b{batch}-m{i}"))),
            503 => {
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("batch {batch}: {other} {:?}", reply.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the 3 MB disk never filled"
        );
    }
    assert!(refused >= 3, "a full disk answers 503");
    assert!(!acked.is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("database or disk is full"),
        "the log says why: {}",
        &text[text.len().saturating_sub(2_000)..]
    );

    // Kill it, give the disk room, restart: the database is whole and every acknowledged
    // event is there once.
    let _ = child.kill();
    let _ = child.wait();
    disk.resize(64);
    assert_eq!(integrity(&data.join("bellwether.db")), "ok");
    let server = Server::start(&data, &[]);
    assert_eq!(get(&server, "/readyz", None).status, 200, "it serves again");
    let conn = rusqlite::Connection::open(data.join("bellwether.db")).unwrap();
    let mut query = conn
        .prepare("SELECT message_id, COUNT(*) FROM events GROUP BY message_id")
        .unwrap();
    let stored: Vec<(String, i64)> = query
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(stored.iter().all(|(_, n)| *n == 1), "no event stored twice");
    let ids: HashSet<String> = stored.into_iter().map(|(id, _)| id).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[test]
fn a_kill_during_an_import_leaves_nothing_half_imported() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        "account_id,name,parent_id,segment,plan,csm,timezone,created_at\na1,A,,pro,pro,,,\n",
    )
    .unwrap();
    assert!(cli(
        dir.path(),
        &["import", "accounts", accounts.to_str().unwrap()]
    )
    .status
    .success());
    // A file big enough to take a while: 400,000 tickets.
    let tickets = dir.path().join("tickets.csv");
    let mut text = String::from("ticket_id,account_id,user_id,type,priority,opened_at,first_response_at,resolved_at,escalated\n");
    for i in 0..400_000 {
        text.push_str(&format!(
            "t{i},a1,u{},bug,low,2026-01-01T00:00:00Z,,,false\n",
            i % 100
        ));
    }
    std::fs::write(&tickets, text).unwrap();
    let mut import = command(dir.path())
        .args(["import", "tickets", tickets.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once it reports progress (it is inside its transaction then).
    let mut progress = BufReader::new(import.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("rows") {
        use std::io::Read;
        if progress.read(&mut byte).unwrap() == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    let _ = import.kill();
    let status = import.wait().unwrap();
    assert!(
        !status.success(),
        "killed before it finished: {}",
        String::from_utf8_lossy(&seen)
    );
    let db = dir.path().join("bellwether.db");
    assert_eq!(integrity(&db), "ok");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM tickets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "all or nothing");
    drop(conn);
    // The same import again completes.
    let out = cli(
        dir.path(),
        &["import", "tickets", tickets.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(
        conn.query_row("SELECT COUNT(*) FROM tickets", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        400_000
    );
}

#[test]
fn a_kill_during_recalibration_leaves_a_whole_database_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    // A 60-account demo, stopped: renewals to learn from and history to write.
    let (mut demo, _server) = start_demo(dir.path(), &["--accounts", "60", "--years", "3"]);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(demo.id().to_string())
        .status();
    demo.wait().unwrap();
    let db = dir.path().join("bellwether.db");
    let models_before: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM health_models", [], |r| r.get(0))
        .unwrap();

    // Kill it once the model is stored, while it writes the daily history.
    let mut run = command(dir.path())
        .arg("recalibrate")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("stored health model") {
        line.clear();
    }
    assert!(
        line.contains("stored health model"),
        "recalibrate stored a model before the kill"
    );
    let _ = run.kill();
    let status = run.wait().unwrap();
    assert!(!status.success(), "killed while writing history");
    assert_eq!(integrity(&db), "ok");
    let models: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM health_models", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        models,
        models_before + 1,
        "the model committed before the kill is whole and kept"
    );

    // The next run completes; health is served from the newest model.
    let out = cli(dir.path(), &["recalibrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("history brought up to today"));
    let out = cli(dir.path(), &["health", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["model_id"], models_before + 2);
}
