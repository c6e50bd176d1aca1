//! Starting servers, sending requests and reading back what was stored.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const KEY: &str = "test-write-key";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bellwether")
}

/// A command for the binary with a clean environment (no stray BELLWETHER_* variables).
pub fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("BELLWETHER_LOG", "warn");
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// Runs a CLI command to completion.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir)
        .args(args)
        .output()
        .expect("run bellwether")
}

/// A `bellwether serve` process on a free loopback port, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = command(data_dir);
        cmd.env("BELLWETHER_WRITE_KEYS", format!("{KEY},other-key=other"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn bellwether serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("bellwether listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Server {
            child: Some(child),
            base,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// A handle on a server another `Server` owns (for use from another thread).
    pub fn attach(base: &str) -> Server {
        Server {
            child: None,
            base: base.to_string(),
            data_dir: PathBuf::new(),
        }
    }

    /// The server process's id (for reading its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("an owned server").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("an owned server");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait for bellwether")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type");
    let mut text = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .expect("read body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        body,
        retry_after,
        content_type,
    }
}

/// POST with the write key as Basic auth user name (when `key` is given).
pub fn post(server: &Server, path: &str, key: Option<&str>, body: impl AsRef<[u8]>) -> Reply {
    post_with(server, path, key, &[], body)
}

pub fn post_with(
    server: &Server,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> Reply {
    let mut request = agent().post(&server.url(path));
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    if let Some(key) = key {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        request = request.header("authorization", &format!("Basic {basic}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    reply(request.send(body.as_ref()).expect("POST"))
}

/// A batch answer's `rejected` list as (index, field).
pub fn rejected_fields(reply: &Reply) -> Vec<(u64, String)> {
    let rejected = reply.body["rejected"].as_array().expect("a rejected list");
    rejected
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn get(server: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut request = agent().get(&server.url(path));
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    reply(request.call().expect("GET"))
}

pub fn create_token(data_dir: &Path, role: &str) -> String {
    let out = cli(data_dir, &["token", "create", "--role", role]);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Every stored event (as resolved by the API: user, account, timestamp ...).
pub fn stored_events(server: &Server, token: &str) -> Vec<Value> {
    let reply = get(
        server,
        "/api/v1/events?since=2000-01-01&limit=10000",
        Some(token),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["events"]
        .as_array()
        .expect("events array")
        .clone()
}

/// Every stored event as received (the CLI's ndjson), read from the data dir directly.
pub fn stored_raw(data_dir: &Path) -> Vec<Value> {
    let out = cli(
        data_dir,
        &[
            "events",
            "--since",
            "2000-01-01",
            "--format",
            "ndjson",
            "--limit",
            "10000",
        ],
    );
    assert!(
        out.status.success(),
        "events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

/// A Prometheus counter's value from `/metrics` (0 when absent).
pub fn counter(server: &Server, series: &str) -> f64 {
    let text = match get(server, "/metrics", None).body {
        Value::String(text) => text,
        other => panic!("metrics not text: {other:?}"),
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().expect("number"))
        .unwrap_or(0.0)
}

pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Starts `bellwether demo` with `args` on port 0 in `data_dir` and waits until it serves;
/// returns the child (kill it at the end) and a handle on its server.
pub fn start_demo(data_dir: &Path, args: &[&str]) -> (Child, Server) {
    let mut child = command(data_dir)
        .arg("demo")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bellwether demo");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let base = line
        .trim()
        .strip_prefix("bellwether demo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (child, Server::attach(&base))
}

/// Runs a browser script of `tests/clients/` (headless chromium via playwright-core) with
/// `args` and returns the JSON report it prints; fails the test with its output otherwise.
pub fn browser_report(script: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(clients_dir().join(script))
        .args(args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser steps failed (chromium and playwright-core are installed by the README's test command):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON report: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A ClickHouse server (Debian's `clickhouse-server`, installed by the test command) as a
/// plain process: its config, data and logs under a temp dir, HTTP and native ports free
/// loopback ports. Killed when dropped.
pub struct ClickHouseServer {
    child: Child,
    pub http_port: u16,
    _dir: tempfile::TempDir,
}

impl ClickHouseServer {
    pub const BINARY: &'static str = "/usr/sbin/clickhouse-server";

    pub fn start() -> ClickHouseServer {
        assert!(
            Path::new(Self::BINARY).exists(),
            "{} is missing: install Debian's clickhouse-server as the README's test command does",
            Self::BINARY
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (http_port, tcp_port) = (free_port(), free_port());
        for sub in ["data", "tmp", "user_files", "log"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let root_text = root.display();
        std::fs::write(
            root.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root_text}/log/server.log</log><errorlog>{root_text}/log/error.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root_text}/data/</path>
  <tmp_path>{root_text}/tmp/</tmp_path>
  <user_files_path>{root_text}/user_files/</user_files_path>
  <users_config>{root_text}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
            ),
        )
        .unwrap();
        let child = Command::new(Self::BINARY)
            .arg(format!(
                "--config-file={}",
                root.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server");
        let mut server = ClickHouseServer {
            child,
            http_port,
            _dir: dir,
        };
        let started = std::time::Instant::now();
        loop {
            let ping = agent()
                .get(&format!("http://127.0.0.1:{http_port}/ping"))
                .call();
            if ping.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._dir.path().join("log/error.log"))
                    .unwrap_or_default();
                panic!("clickhouse-server exited ({status}) before answering /ping:\n{log}");
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "clickhouse-server did not answer /ping within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs one statement over HTTP; its output as text.
    pub fn query(&self, sql: &str) -> String {
        // 64-bit integers in JSON output as numbers (18.16 quotes them by default).
        let url = format!(
            "http://127.0.0.1:{}/?output_format_json_quote_64bit_integers=0",
            self.http_port
        );
        let mut reply = agent().post(&url).send(sql).expect("ClickHouse HTTP");
        let text = reply.body_mut().read_to_string().unwrap();
        assert_eq!(reply.status(), 200, "{sql}: {text}");
        text
    }

    /// `clickhouse://127.0.0.1:PORT/database` for `--store`.
    pub fn store_url(&self, database: &str) -> String {
        format!("clickhouse://127.0.0.1:{}/{database}", self.http_port)
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed-in browser session without a browser: its session cookie.
pub struct Session {
    pub cookie: String,
}

pub fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

pub fn sign_in(server: &Server, user: &str, password: &str) -> Session {
    let response = no_redirects()
        .post(&server.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!("username={user}&password={password}").as_bytes())
        .unwrap();
    assert_eq!(response.status(), 303);
    let set = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "session cookie lacks {flag}: {set}");
    }
    Session {
        cookie: set.split(';').next().unwrap().to_string(),
    }
}

pub fn page(server: &Server, session: &Session, path: &str) -> (u16, String) {
    let mut response = no_redirects()
        .get(&server.url(path))
        .header("cookie", &session.cookie)
        .call()
        .unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

pub fn form_post(
    server: &Server,
    session: &Session,
    path: &str,
    origin: Option<&str>,
    body: &str,
) -> u16 {
    let mut request = no_redirects()
        .post(&server.url(path))
        .header("cookie", &session.cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send(body.as_bytes()).unwrap().status().as_u16()
}
