//! Hostile traffic (issue 28): sign-in floods, slow and idle sockets, lockouts, formulas in
//! exports, forged log lines, secrets in events, oversized batches, implausible times, ids
//! that are paths, foreign Host names. Other clients are played from other loopback
//! addresses (127.0.0.2 ...), which Linux routes to the same host.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::support::*;

/// A connection to `server` from the loopback address `source`.
fn connect_from(server: &Server, source: [u8; 4]) -> TcpStream {
    let target: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(IpAddr::from(source), 0).into())
        .expect("bind a loopback source address");
    socket.connect(&target.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Sends one request and returns the status and the whole answer (the connection closes).
fn request_from(server: &Server, source: [u8; 4], head: &str, body: &str) -> (u16, String) {
    let mut stream = connect_from(server, source);
    let host = server.base.trim_start_matches("http://");
    let request = format!(
        "{head}\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn login_from(server: &Server, source: [u8; 4], user: &str, password: &str) -> u16 {
    let body = serde_urlencoded::to_string([("username", user), ("password", password)]).unwrap();
    request_from(
        server,
        source,
        "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        &body,
    )
    .0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<f64>().ok())
        .expect("kB")
        / 1024.0
}

fn create_user(dir: &Path, name: &str, password: &str) {
    let mut child = command(dir)
        .args([
            "user",
            "create",
            name,
            "--role",
            "admin",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("bellwether.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// SECURITY.md's bound: a burst of 64 parallel sign-ins (every one a different user name,
/// from a different address) never takes the server above 200 MiB, and 3 s after it the
/// server holds at most 48 MiB more than before (the issue measured 2.7 GiB, 830 MiB held).
#[test]
fn parallel_sign_ins_are_bounded_in_memory_and_memory_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let pid = server.pid();
    assert_eq!(login_from(&server, [127, 0, 9, 1], "warm-up", "x"), 401);
    let before = rss_mib(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0_f64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let base = server.base.clone();
    let attackers: Vec<_> = (0..64u8)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let server = Server::attach(&base);
                (0..3)
                    .map(|round| {
                        login_from(
                            &server,
                            [127, 0, 10, 2 + i],
                            &format!("nobody-{i}-{round}"),
                            "wrong",
                        )
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = attackers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "wrong names are refused, or the server is busy: {statuses:?}"
    );
    assert!(statuses.contains(&401));
    assert!(
        peak < 200.0,
        "peak RSS {peak:.0} MiB during the burst (before: {before:.0} MiB)"
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_mib(pid);
    assert!(
        after < before + 48.0,
        "RSS {after:.0} MiB after the burst, {before:.0} MiB before"
    );
}

#[test]
fn the_right_password_signs_in_while_another_address_hammers_the_name() {
    let dir = tempfile::tempdir().unwrap();
    create_user(dir.path(), "admin", "correct-horse-1");
    let server = Server::start(dir.path(), &[]);
    let attacker = [127, 0, 0, 2];
    let answers: Vec<u16> = (0..12)
        .map(|_| login_from(&server, attacker, "admin", "guess"))
        .collect();
    assert_eq!(
        &answers[..10],
        &[401; 10],
        "ten tries a minute per name and address"
    );
    assert_eq!(&answers[10..], &[429, 429], "then the attacker waits");
    assert_eq!(
        login_from(&server, [127, 0, 0, 3], "admin", "correct-horse-1"),
        303,
        "the owner, elsewhere, is not locked out"
    );
    // And one address cannot try name after name either.
    let spray: Vec<u16> = (0..31)
        .map(|i| login_from(&server, [127, 0, 0, 4], &format!("user{i}"), "guess"))
        .collect();
    assert_eq!(
        spray.iter().filter(|s| **s == 429).count(),
        1,
        "30 a minute per address: {spray:?}"
    );
}

#[test]
fn slow_headers_idle_connections_and_stalled_bodies_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[server]\nheader_timeout_seconds = 1\nidle_timeout_seconds = 3\nbody_timeout_seconds = 1\n");
    let server = Server::start(dir.path(), &[("BELLWETHER_CONFIG", &cfg)]);
    let host = server.base.trim_start_matches("http://").to_string();
    let closed = |mut stream: TcpStream| {
        // The read timeout is 30 s: a socket the server keeps open fails this read.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).map(|_| rest)
    };
    let mut partial = connect_from(&server, [127, 0, 0, 1]);
    partial
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
        .unwrap();
    assert!(
        closed(partial).is_ok(),
        "a partial request head is cut after the header timeout"
    );

    let mut silent = connect_from(&server, [127, 0, 0, 1]);
    let mut nothing = [0u8; 16];
    assert_eq!(
        silent.read(&mut nothing).unwrap_or(0),
        0,
        "a connection that never sends its head is closed"
    );

    // Kept alive past the header timeout (the idle one is longer), then closed once idle.
    let mut idle = connect_from(&server, [127, 0, 0, 1]);
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    idle.write_all(get.as_bytes()).unwrap();
    let mut first = [0u8; 4096];
    let n = idle.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1_500));
    idle.write_all(get.as_bytes())
        .expect("still open after the header timeout");
    let answer = closed(idle).expect("an idle keep-alive connection is closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the second request was answered before the idle close"
    );

    let mut slow = connect_from(&server, [127, 0, 0, 1]);
    let auth = format!("Basic {}", base64_key());
    slow.write_all(format!("POST /v1/track HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"userId\":").as_bytes()).unwrap();
    let answer =
        String::from_utf8_lossy(&closed(slow).expect("a stalled body is answered and closed"))
            .to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"field\":\"body\""), "{answer}");
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
}

#[test]
fn connections_past_the_cap_of_an_address_are_closed_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[server]\nmax_connections_per_address = 4\n");
    let server = Server::start(dir.path(), &[("BELLWETHER_CONFIG", &cfg)]);
    let held: Vec<TcpStream> = (0..10)
        .map(|_| connect_from(&server, [127, 0, 0, 2]))
        .collect();
    let mut refused = 0;
    for mut stream in held.iter().skip(4) {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        if matches!(stream.read(&mut buf), Ok(0) | Err(_)) {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 6,
        "the four first stay, the rest are closed at once"
    );
    assert_eq!(
        request_from(&server, [127, 0, 0, 3], "GET /healthz HTTP/1.1", "").0,
        200,
        "another address is served meanwhile"
    );
    drop(held);
}

#[test]
fn csv_exports_neutralise_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(&accounts, "account_id,name,parent_id,segment,plan,csm,timezone,created_at\nacme,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",,=SUM(1+1),,,,\n").unwrap();
    let responses = dir.path().join("responses.csv");
    std::fs::write(&responses, "response_id,account_id,user_id,kind,score,comment,answered_at,trigger\nr1,acme,,nps,2,\"+cmd|' /C calc'!A0\",2026-01-10T10:00:00Z,\nr2,acme,,nps,9,\"@SUM(1+1)*cmd|' /C calc'!A0\",2026-01-11T10:00:00Z,\nr3,acme,,nps,8,-12,2026-01-12T10:00:00Z,\n").unwrap();
    for (kind, file) in [("accounts", &accounts), ("survey_responses", &responses)] {
        let out = cli(dir.path(), &["import", kind, file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "read");
    let csv = match get(&server, "/api/v1/comments?format=csv", Some(&token)).body {
        serde_json::Value::String(text) => text,
        other => panic!("not CSV: {other}"),
    };
    assert!(csv.contains("'+cmd|' /C calc'!A0"), "{csv}");
    assert!(csv.contains("'@SUM(1+1)"), "{csv}");
    assert!(!csv.contains(",+cmd") && !csv.contains(",@SUM"), "{csv}");
    assert!(
        csv.contains(",-12,") || csv.contains(",-12\n"),
        "a number stays a number: {csv}"
    );
    let out = cli(dir.path(), &["metrics", "--as-of", "2026-02-01"]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("acme,'=SUM(1+1),"),
        "the segment, in the metrics export: {metrics}"
    );
}

#[test]
fn a_newline_in_a_user_name_stays_in_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut cmd = command(dir.path());
    cmd.env("BELLWETHER_LOG", "info")
        .env("BELLWETHER_WRITE_KEYS", KEY);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let server = Server::attach(
        line.trim()
            .strip_prefix("bellwether listening on ")
            .unwrap(),
    );
    let forged = "x\n2026-12-05T06:00:00.000000Z  INFO bellwether::web::pages::auth: dashboard sign-in username=\"admin\"";
    assert_eq!(login_from(&server, [127, 0, 0, 1], forged, "wrong"), 401);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let sign_ins: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("dashboard sign-in"))
        .collect();
    assert_eq!(sign_ins.len(), 1, "{text}");
    assert!(
        sign_ins[0].contains("dashboard sign-in refused")
            && sign_ins[0].contains("username=\"x\\n2026"),
        "{}",
        sign_ins[0]
    );
}

#[test]
fn a_write_key_in_the_body_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body =
        json!({"writeKey": KEY, "userId": "u1", "event": "Opened", "messageId": "m1"}).to_string();
    assert_eq!(post(&server, "/v1/track", None, body).status, 200);
    let batch = json!({"writeKey": KEY, "batch": [{"type": "track", "writeKey": KEY, "userId": "u1", "event": "Closed", "messageId": "m2"}]}).to_string();
    assert_eq!(post(&server, "/v1/batch", None, batch).status, 200);
    let raws = stored_raw(dir.path());
    assert_eq!(raws.len(), 2);
    let text = serde_json::to_string(&raws).unwrap();
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains("writeKey"), "{text}");
}

#[test]
fn implausible_event_times_are_rejected_with_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let item = |id: &str, extra: serde_json::Value| {
        let mut m = json!({"type": "track", "userId": "u1", "event": "E", "messageId": id});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    let batch = json!({"batch": [
        item("ok", json!({})),
        item("ancient", json!({"timestamp": "0000-01-01T00:00:00Z"})),
        item("future", json!({"timestamp": "2999-01-01T00:00:00Z"})),
        item("garbage", json!({"originalTimestamp": "garbage"})),
    ]});
    let reply = post(&server, "/v1/batch", Some(KEY), batch.to_string());
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let rejected = rejected_fields(&reply);
    assert_eq!(
        rejected,
        vec![
            (1, "timestamp".to_string()),
            (2, "timestamp".to_string()),
            (3, "originalTimestamp".to_string())
        ]
    );
    assert!(
        reply.body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("outside the accepted range 2000-01-01"),
        "{:?}",
        reply.body
    );
    assert_eq!(stored_raw(dir.path()).len(), 1);
}

#[test]
fn ids_that_are_paths_are_encoded_and_foreign_hosts_refused() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(&accounts, "account_id,name,parent_id,segment,plan,csm,timezone,created_at\na/b,Slash Inc,,,,,,\n../../etc/passwd,Dots Ltd,,,,,,\n").unwrap();
    assert!(cli(
        dir.path(),
        &["import", "accounts", accounts.to_str().unwrap()]
    )
    .status
    .success());
    create_user(dir.path(), "admin", "correct-horse-1");
    let server = Server::start(dir.path(), &[]);
    let session = sign_in(&server, "admin", "correct-horse-1");
    let (status, portfolio) = page(&server, &session, "/portfolio?status=all");
    assert_eq!(status, 200);
    assert!(
        portfolio.contains("href=\"/accounts/a%2Fb\""),
        "{portfolio}"
    );
    assert!(
        portfolio.contains("href=\"/accounts/..%2F..%2Fetc%2Fpasswd\""),
        "{portfolio}"
    );
    let (status, account) = page(&server, &session, "/accounts/a%2Fb");
    assert_eq!(status, 200);
    assert!(account.contains("Slash Inc"));

    // DNS rebinding: a page on another name reaches the dashboard and the API no more.
    let token = create_token(dir.path(), "read");
    let with_host = |path: &str, host: &str, auth: &str| {
        agent()
            .get(&server.url(path))
            .header("host", host)
            .header("authorization", auth)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        with_host(
            "/api/v1/accounts",
            "evil.example:8780",
            &format!("Bearer {token}")
        ),
        421
    );
    assert_eq!(
        with_host("/api/v1/accounts", "localhost", &format!("Bearer {token}")),
        200
    );
    assert_eq!(
        with_host("/api/v1/accounts", "localhost", &format!("bearer {token}")),
        200,
        "auth schemes are case-insensitive"
    );
    assert_eq!(
        with_host("/healthz", "evil.example", ""),
        200,
        "probes answer under any name"
    );
}

#[test]
fn public_endpoints_are_limited_per_address_and_the_survey_lookup_takes_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nrequests_per_second_per_address = 5\n",
    );
    let server = Server::start(dir.path(), &[("BELLWETHER_CONFIG", &cfg)]);
    let lookup = |source: [u8; 4]| {
        request_from(
            &server,
            source,
            &format!(
                "GET /v1/surveys/pending?userId=u1 HTTP/1.1\r\nAuthorization: Basic {}",
                base64_key()
            ),
            "",
        )
        .0
    };
    let statuses: Vec<u16> = (0..12).map(|_| lookup([127, 0, 0, 2])).collect();
    assert_eq!(
        &statuses[..10],
        &[204; 10],
        "a burst of twice the rate, the key in a header"
    );
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        lookup([127, 0, 0, 3]),
        204,
        "another address has its own allowance"
    );
    let (status, answer) = request_from(&server, [127, 0, 0, 2], "GET /login HTTP/1.1", "");
    assert_eq!(status, 429);
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
}
