//! One `Config`, loaded from (lowest to highest precedence) built-in defaults, a TOML file,
//! `BELLWETHER_*` environment variables and command-line flags.
//!
//! Every key is optional and documented here and in the README. A bad value fails at start
//! with a message naming where it came from (file path or variable), the key and the reason.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits;

// The domains own their settings; the config composes them.
pub use crate::health::config::{HealthConfig, SCORE_MEASURES_EXTRA};
pub use crate::metrics::config::{CurrencyConfig, EngagementWeights, MetricsConfig, Windows};

/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./bellwether-data";
/// Default HTTP listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8780";
/// Source name given to write keys that come from `BELLWETHER_WRITE_KEYS` without a name.
pub const SOURCE_NAME_DEFAULT: &str = "default";

/// The environment variables bellwether reads. Any other `BELLWETHER_*` variable is an
/// error, so a typo cannot silently leave a default in force.
pub const ENV_VARS: &[&str] = &[
    "BELLWETHER_CONFIG",
    "BELLWETHER_DATA_DIR",
    "BELLWETHER_LISTEN",
    "BELLWETHER_WRITE_KEYS",
    "BELLWETHER_DEDUP_WINDOW_DAYS",
    "BELLWETHER_QUEUE_BYTES_MAX",
    "BELLWETHER_STORE",
    // The ClickHouse store's credentials (kept out of the config file and the URL).
    "BELLWETHER_CLICKHOUSE_USER",
    "BELLWETHER_CLICKHOUSE_PASSWORD",
    "BELLWETHER_LOG",
    "BELLWETHER_LOG_FORMAT",
    // Read by `user create` only.
    "BELLWETHER_PASSWORD",
    // The password for [actions.smtp] username (kept out of the config file).
    "BELLWETHER_SMTP_PASSWORD",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    Key {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("flag --{flag}: {reason}")]
    Flag { flag: String, reason: String },
}

/// The whole configuration after all layers are applied and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the database file. Created if missing.
    pub data_dir: PathBuf,
    /// Address `serve` listens on.
    pub listen: SocketAddr,
    /// Write key -> source name. The source name is recorded with every event.
    pub write_keys: BTreeMap<String, String>,
    pub ingest: IngestConfig,
    pub currency: CurrencyConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub actions: crate::actions::ActionsConfig,
    pub listening: crate::listening::ListeningConfig,
    /// `[review]`: who the quarterly review is from.
    pub review: ReviewConfig,
    pub retention: RetentionConfig,
    /// `[server]`: timeouts, connection caps and per-address limits of the HTTP server.
    pub server: ServerConfig,
    /// Where events and records are kept: the embedded files in `data_dir`, or ClickHouse.
    pub store: StoreLocation,
    /// Where the file layer came from, for messages.
    pub file: Option<PathBuf>,
}

/// `[review]`: the vendor the quarterly review comes from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewConfig {
    /// Your company's name, at the top of every review.
    pub vendor_name: Option<String>,
    /// A PNG, JPEG or SVG file (at most 200 KB; relative to the config file), shown beside
    /// the name. Read once at start and served inside the page.
    pub vendor_logo: Option<PathBuf>,
    /// The logo as a `data:` URL, once read.
    #[serde(skip)]
    pub logo_data_url: Option<String>,
}

/// Largest logo file.
pub const LOGO_BYTES_MAX: u64 = 200 * 1024;

impl ReviewConfig {
    /// Checks the name and reads the logo (relative paths from `base`).
    pub fn load_logo(&mut self, base: Option<&Path>) -> Result<(), (String, String)> {
        if self
            .vendor_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 100)
        {
            return Err(("vendor_name".into(), "1 to 100 characters".into()));
        }
        let Some(file) = &self.vendor_logo else {
            return Ok(());
        };
        let file = match base {
            Some(base) if file.is_relative() => base.join(file),
            _ => file.clone(),
        };
        let mime = match file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("svg") => "image/svg+xml",
            _ => {
                return Err((
                    "vendor_logo".into(),
                    format!("{}: a .png, .jpg or .svg file", file.display()),
                ))
            }
        };
        let bytes_len = std::fs::metadata(&file)
            .map_err(|e| {
                (
                    "vendor_logo".to_string(),
                    format!("{}: {e}", file.display()),
                )
            })?
            .len();
        if bytes_len > LOGO_BYTES_MAX {
            return Err((
                "vendor_logo".into(),
                format!(
                    "{}: {bytes_len} bytes, at most {LOGO_BYTES_MAX}",
                    file.display()
                ),
            ));
        }
        let bytes = std::fs::read(&file).map_err(|e| {
            (
                "vendor_logo".to_string(),
                format!("{}: {e}", file.display()),
            )
        })?;
        use base64::Engine;
        self.logo_data_url = Some(format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ));
        Ok(())
    }
}

/// `store` (file), `BELLWETHER_STORE`, `--store`: `embedded` (the default) or
/// `clickhouse://host:port/database`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreLocation {
    #[default]
    Embedded,
    ClickHouse(ClickHouseLocation),
}

/// A ClickHouse server's HTTP interface and the database bellwether keeps its tables in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseLocation {
    /// `http://host:port`.
    pub url: String,
    pub database: String,
    /// From BELLWETHER_CLICKHOUSE_USER / BELLWETHER_CLICKHOUSE_PASSWORD.
    pub user: Option<String>,
    pub password: Option<String>,
}

impl StoreLocation {
    /// Parses `embedded` or `clickhouse://host:port/database` (the HTTP port, 8123 by
    /// default; the database a plain name, created if missing).
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        const FORM: &str = "expected `embedded` or clickhouse://host:port/database";
        if text == "embedded" {
            return Ok(StoreLocation::Embedded);
        }
        let Some(rest) = text.strip_prefix("clickhouse://") else {
            return Err(format!("{FORM}, got {text:?}"));
        };
        let Some((authority, database)) = rest.split_once('/') else {
            return Err(format!("{FORM}: {text:?} names no database"));
        };
        if authority.contains('@') {
            return Err("put no user or password in the URL: set BELLWETHER_CLICKHOUSE_USER and BELLWETHER_CLICKHOUSE_PASSWORD".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port: u16 = port.parse().map_err(|_| {
                    format!("{FORM}: port {port:?} is not a number from 1 to 65535")
                })?;
                if port == 0 {
                    return Err(format!("{FORM}: port 0"));
                }
                (host, port)
            }
            _ => (authority, 8123),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
        if !host_ok {
            return Err(format!("{FORM}: {host:?} is not a host name or address"));
        }
        let name_ok = !database.is_empty()
            && database.len() <= 64
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !database.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            return Err(format!("{FORM}: database {database:?} must be 1 to 64 letters, digits and underscores, not starting with a digit"));
        }
        Ok(StoreLocation::ClickHouse(ClickHouseLocation {
            url: format!("http://{host}:{port}"),
            database: database.to_string(),
            user: None,
            password: None,
        }))
    }
}

/// Messages a second each source may send unless configured: far above what a product's
/// real traffic needs of one key, far below what the store takes, so a leaked browser key
/// cannot flood it. Bursts of one second's worth pass (a full batch, 2,500, always fits).
pub const RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// A retried message (same source and `messageId`) received within this many days of
    /// the first copy is not stored again.
    pub dedup_window_days: u32,
    /// Bound of the ingest queue in bytes of request bodies; past it `/v1` answers 503.
    pub queue_bytes_max: u64,
    /// Messages per second each source (write key) may send; 0 = no limit. Past it `/v1`
    /// answers 429 with Retry-After. Bursts of up to one second's worth pass; a batch larger
    /// than that is a 413.
    pub rate_limit_per_second: u32,
    /// Source name -> its own messages per second, overriding `rate_limit_per_second`.
    pub rate_limits: BTreeMap<String, u32>,
    /// Origins browsers may send `/v1` calls from (CORS); `"*"` allows any. None: no CORS
    /// headers, so browsers refuse cross-origin calls.
    pub cors_origins: Vec<String>,
    /// Event times accepted: `earliest_event` (a date, default 2000-01-01) to
    /// `future_event_days` (default 1) after receipt, after clock-skew correction.
    pub event_times: crate::ingest::TimeRange,
}

/// `[retention]`: how long raw events are kept (see `store::sqlite::retention`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw events whose time and receipt are both older than this many days are dropped;
    /// the rollups (and so every metric) keep them. 0 keeps raw events forever. At least
    /// `[ingest] dedup_window_days`, so retried copies are still recognised.
    pub raw_events_days: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            dedup_window_days: 7,
            queue_bytes_max: limits::QUEUE_BYTES_MAX_DEFAULT,
            rate_limit_per_second: RATE_LIMIT_PER_SECOND_DEFAULT,
            rate_limits: BTreeMap::new(),
            cors_origins: Vec::new(),
            event_times: crate::ingest::TimeRange::default(),
        }
    }
}

/// `[server]`: connection and request limits of the HTTP server.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a connection may take to send a complete request head, counted from its
    /// opening or from the first byte of the request (slow headers are closed after it).
    pub header_timeout_seconds: u64,
    /// Seconds a kept-alive connection may sit idle (no request, nothing read or written)
    /// before it is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds a request body may stall between two pieces before the request fails (408).
    pub body_timeout_seconds: u64,
    /// Open connections at most; past it new connections are closed at once.
    pub max_connections: usize,
    /// Open connections one client address may hold.
    pub max_connections_per_address: usize,
    /// Requests a second one client address may make to the public endpoints (`/v1/*`,
    /// `/s/*`, `/r/*`, `/login`), bursts of twice that; 0 = no limit.
    pub requests_per_second_per_address: u32,
    /// Sign-in attempts a minute from one client address, whatever the user names.
    pub sign_ins_per_minute_per_address: u32,
    /// Password hashes computed at once (each takes ~19 MiB for ~50 ms); 0 = one per core.
    pub sign_in_hashes_max: usize,
    /// Sign-ins waiting for a hash slot at most; past it, 503 with Retry-After.
    pub sign_in_queue_max: usize,
    /// Host names the dashboard answers to besides IP addresses, `localhost` and the host
    /// of `[actions] dashboard_url` (a page on any other name is refused: DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (its last address that is
    /// not itself a trusted proxy). Empty: the connection's address is the client's.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_timeout_seconds: 10,
            idle_timeout_seconds: 30,
            body_timeout_seconds: 10,
            max_connections: 1_024,
            max_connections_per_address: 64,
            requests_per_second_per_address: 200,
            sign_ins_per_minute_per_address: 30,
            sign_in_hashes_max: 0,
            sign_in_queue_max: 32,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        let range = |key: &str, value: u64, low: u64, high: u64| {
            if value < low || value > high {
                return Err((
                    key.to_string(),
                    format!("{value} is outside {low} to {high}"),
                ));
            }
            Ok(())
        };
        range(
            "header_timeout_seconds",
            self.header_timeout_seconds,
            1,
            3_600,
        )?;
        range("idle_timeout_seconds", self.idle_timeout_seconds, 1, 3_600)?;
        range("body_timeout_seconds", self.body_timeout_seconds, 1, 3_600)?;
        range("max_connections", self.max_connections as u64, 1, 100_000)?;
        range(
            "max_connections_per_address",
            self.max_connections_per_address as u64,
            1,
            self.max_connections as u64,
        )?;
        range(
            "sign_ins_per_minute_per_address",
            u64::from(self.sign_ins_per_minute_per_address),
            1,
            10_000,
        )?;
        range(
            "sign_in_hashes_max",
            self.sign_in_hashes_max as u64,
            0,
            1_024,
        )?;
        range(
            "sign_in_queue_max",
            self.sign_in_queue_max as u64,
            0,
            10_000,
        )?;
        for host in &self.allowed_hosts {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err((
                    "allowed_hosts".into(),
                    format!("{host:?} is not a host name (letters, digits, '.', '-', no port)"),
                ));
            }
        }
        Ok(())
    }

    /// Hashes at once: the configured number, else one per core.
    pub fn hashes(&self) -> usize {
        match self.sign_in_hashes_max {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        }
    }
}

/// The file layer, exactly as the TOML file may spell it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    data_dir: Option<PathBuf>,
    store: Option<String>,
    listen: Option<String>,
    write_keys: Option<BTreeMap<String, String>>,
    ingest: Option<FileIngest>,
    currency: Option<FileCurrency>,
    metrics: Option<MetricsConfig>,
    health: Option<HealthConfig>,
    actions: Option<crate::actions::ActionsConfig>,
    listening: Option<crate::listening::ListeningConfig>,
    review: Option<ReviewConfig>,
    retention: Option<RetentionConfig>,
    server: Option<ServerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCurrency {
    report: Option<String>,
    rates: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIngest {
    dedup_window_days: Option<u32>,
    queue_bytes_max: Option<u64>,
    rate_limit_per_second: Option<u32>,
    rate_limits: Option<BTreeMap<String, u32>>,
    cors_origins: Option<Vec<String>>,
    earliest_event: Option<String>,
    future_event_days: Option<u32>,
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub listen: Option<String>,
}

impl Config {
    /// The dashboard's address as people reach it, for links in messages: `[actions]
    /// dashboard_url`, else `http://LISTEN`.
    pub fn base_url(&self) -> String {
        let url = self.actions.dashboard_url.clone();
        let url = url.unwrap_or_else(|| format!("http://{}", self.listen));
        url.trim_end_matches('/').to_string()
    }

    /// Loads defaults <- file <- environment <- flags, then validates.
    pub fn load(flags: &Flags, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let env_get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for (name, _) in env {
            if name.starts_with("BELLWETHER_") && !ENV_VARS.contains(&name.as_str()) {
                return Err(ConfigError::Env {
                    var: name.clone(),
                    reason: format!("unknown variable; known: {}", ENV_VARS.join(", ")),
                });
            }
        }
        let file = flags
            .config
            .clone()
            .or_else(|| env_get("BELLWETHER_CONFIG").map(PathBuf::from));
        let layer = match &file {
            Some(path) => read_file_layer(path)?,
            None => FileLayer::default(),
        };
        let mut config = Config::from_file_layer(layer, file.as_deref())?;
        config.apply_env(&env_get)?;
        config.apply_flags(flags)?;
        config.apply_credentials(&env_get);
        config.check_retention()?;
        Ok(config)
    }

    /// A config from TOML text alone (defaults, then the text; no environment or flags):
    /// what a config file would give. `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = Config::from_file_layer(parse_file_layer(text, path)?, Some(path))?;
        config.check_retention()?;
        Ok(config)
    }

    /// Raw events must outlive the dedup window (checked once every layer is applied).
    fn check_retention(&self) -> Result<(), ConfigError> {
        let (kept, window) = (
            self.retention.raw_events_days,
            self.ingest.dedup_window_days,
        );
        if kept != 0 && kept < window {
            return Err(ConfigError::Key {
                path: self.file.clone().unwrap_or_default(),
                key: "retention.raw_events_days".into(),
                reason: format!(
                    "{kept} days is shorter than the dedup window ({window} days, [ingest] dedup_window_days): retried messages could be stored twice; keep raw events at least {window} days, or 0 to keep them forever"
                ),
            });
        }
        Ok(())
    }

    // Over 100 lines: One check per key of the file layer, in the file's order, each naming its key.
    #[allow(clippy::too_many_lines)]
    fn from_file_layer(layer: FileLayer, path: Option<&Path>) -> Result<Config, ConfigError> {
        let key_error = |key: &str, reason: String| ConfigError::Key {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            key: key.to_string(),
            reason,
        };
        let listen = layer.listen.as_deref().unwrap_or(LISTEN_DEFAULT);
        let listen = parse_listen(listen).map_err(|reason| key_error("listen", reason))?;
        let store = match &layer.store {
            Some(text) => {
                StoreLocation::parse(text).map_err(|reason| key_error("store", reason))?
            }
            None => StoreLocation::Embedded,
        };
        let mut ingest = IngestConfig::default();
        if let Some(file_ingest) = layer.ingest {
            if let Some(days) = file_ingest.dedup_window_days {
                ingest.dedup_window_days = check_window_days(days)
                    .map_err(|reason| key_error("ingest.dedup_window_days", reason))?;
            }
            if let Some(bytes) = file_ingest.queue_bytes_max {
                ingest.queue_bytes_max = check_queue_bytes(bytes)
                    .map_err(|reason| key_error("ingest.queue_bytes_max", reason))?;
            }
            if let Some(rate) = file_ingest.rate_limit_per_second {
                ingest.rate_limit_per_second = rate;
            }
            ingest.rate_limits = file_ingest.rate_limits.unwrap_or_default();
            if let Some(date) = &file_ingest.earliest_event {
                let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                    key_error(
                        "ingest.earliest_event",
                        format!("{date:?} is not a date (YYYY-MM-DD)"),
                    )
                })?;
                ingest.event_times.earliest_ms = date
                    .and_hms_opt(0, 0, 0)
                    .expect("invariant: midnight exists")
                    .and_utc()
                    .timestamp_millis();
            }
            if let Some(days) = file_ingest.future_event_days {
                if days > 3_650 {
                    return Err(key_error(
                        "ingest.future_event_days",
                        format!("{days} is more than 3650"),
                    ));
                }
                ingest.event_times.future_ms = i64::from(days) * 86_400_000;
            }
            for origin in file_ingest.cors_origins.unwrap_or_default() {
                let ok = origin == "*"
                    || ((origin.starts_with("http://") || origin.starts_with("https://"))
                        && !origin.ends_with('/')
                        && origin.len() <= 2048
                        && axum::http::HeaderValue::from_str(&origin).is_ok());
                if !ok {
                    return Err(key_error("ingest.cors_origins", format!("{origin:?} is not \"*\" or an origin like https://app.example.com (scheme and host, no path)")));
                }
                ingest.cors_origins.push(origin);
            }
        }
        let mut currency = CurrencyConfig::default();
        if let Some(file_currency) = layer.currency {
            if let Some(report) = file_currency.report {
                currency.report =
                    check_currency_code(&report).map_err(|r| key_error("currency.report", r))?;
            }
            for (code, rate) in file_currency.rates.unwrap_or_default() {
                let key = format!("currency.rates.{code}");
                check_currency_code(&code).map_err(|r| key_error(&key, r))?;
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(key_error(
                        &key,
                        format!("a rate must be a positive number, got {rate}"),
                    ));
                }
                currency.rates.insert(code, rate);
            }
        }
        let metrics = layer.metrics.unwrap_or_default();
        metrics
            .check()
            .map_err(|(key, reason)| key_error(&format!("metrics.{key}"), reason))?;
        let health = layer.health.unwrap_or_default();
        health
            .check()
            .map_err(|(key, reason)| key_error(&format!("health.{key}"), reason))?;
        let listening = layer.listening.unwrap_or_default();
        listening
            .check()
            .map_err(|(key, reason)| key_error(&format!("listening.{key}"), reason))?;
        let mut review = layer.review.unwrap_or_default();
        review
            .load_logo(path.and_then(Path::parent))
            .map_err(|(key, reason)| key_error(&format!("review.{key}"), reason))?;
        let actions = layer.actions.unwrap_or_default();
        actions
            .check()
            .map_err(|(key, reason)| key_error(&format!("actions.{key}"), reason))?;
        let server = layer.server.unwrap_or_default();
        server
            .check()
            .map_err(|(key, reason)| key_error(&format!("server.{key}"), reason))?;
        let write_keys = layer.write_keys.unwrap_or_default();
        check_write_keys(&write_keys).map_err(|(key, reason)| key_error(&key, reason))?;
        Ok(Config {
            data_dir: layer
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            listen,
            write_keys,
            ingest,
            currency,
            metrics,
            health,
            actions,
            listening,
            review,
            retention: layer.retention.unwrap_or_default(),
            server,
            store,
            file: path.map(Path::to_path_buf),
        })
    }

    fn apply_env(&mut self, env_get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env_error = |var: &str, reason: String| ConfigError::Env {
            var: var.to_string(),
            reason,
        };
        if let Some(dir) = env_get("BELLWETHER_DATA_DIR") {
            if dir.is_empty() {
                return Err(env_error("BELLWETHER_DATA_DIR", "must not be empty".into()));
            }
            self.data_dir = PathBuf::from(dir);
        }
        if let Some(store) = env_get("BELLWETHER_STORE") {
            self.store =
                StoreLocation::parse(&store).map_err(|r| env_error("BELLWETHER_STORE", r))?;
        }
        if let Some(listen) = env_get("BELLWETHER_LISTEN") {
            self.listen = parse_listen(&listen).map_err(|r| env_error("BELLWETHER_LISTEN", r))?;
        }
        if let Some(keys) = env_get("BELLWETHER_WRITE_KEYS") {
            let parsed = parse_env_write_keys(&keys);
            check_write_keys(&parsed)
                .map_err(|(_, reason)| env_error("BELLWETHER_WRITE_KEYS", reason))?;
            self.write_keys = parsed;
        }
        if let Some(days) = env_get("BELLWETHER_DEDUP_WINDOW_DAYS") {
            let days: u32 = days.parse().map_err(|_| {
                env_error(
                    "BELLWETHER_DEDUP_WINDOW_DAYS",
                    format!("not a whole number: {days:?}"),
                )
            })?;
            self.ingest.dedup_window_days = check_window_days(days)
                .map_err(|r| env_error("BELLWETHER_DEDUP_WINDOW_DAYS", r))?;
        }
        if let Some(bytes) = env_get("BELLWETHER_QUEUE_BYTES_MAX") {
            let bytes: u64 = bytes.parse().map_err(|_| {
                env_error(
                    "BELLWETHER_QUEUE_BYTES_MAX",
                    format!("not a whole number: {bytes:?}"),
                )
            })?;
            self.ingest.queue_bytes_max =
                check_queue_bytes(bytes).map_err(|r| env_error("BELLWETHER_QUEUE_BYTES_MAX", r))?;
        }
        Ok(())
    }

    /// The ClickHouse credentials come from the environment alone (after the flags, which
    /// may name the store).
    fn apply_credentials(&mut self, env_get: &dyn Fn(&str) -> Option<String>) {
        if let StoreLocation::ClickHouse(location) = &mut self.store {
            location.user = env_get("BELLWETHER_CLICKHOUSE_USER").filter(|u| !u.is_empty());
            location.password = env_get("BELLWETHER_CLICKHOUSE_PASSWORD");
        }
    }

    fn apply_flags(&mut self, flags: &Flags) -> Result<(), ConfigError> {
        if let Some(dir) = &flags.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(store) = &flags.store {
            self.store = StoreLocation::parse(store).map_err(|reason| ConfigError::Flag {
                flag: "store".into(),
                reason,
            })?;
        }
        if let Some(listen) = &flags.listen {
            self.listen = parse_listen(listen).map_err(|reason| ConfigError::Flag {
                flag: "listen".into(),
                reason,
            })?;
        }
        Ok(())
    }
}

fn read_file_layer(path: &Path) -> Result<FileLayer, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    if meta.len() > limits::CONFIG_BYTES_MAX {
        return Err(file_error(format!(
            "{} bytes, larger than the {} byte limit",
            meta.len(),
            limits::CONFIG_BYTES_MAX
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    parse_file_layer(&text, path)
}

/// The file layer from TOML text (`path` names it in errors).
fn parse_file_layer(text: &str, path: &Path) -> Result<FileLayer, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    toml::from_str::<FileLayer>(text).map_err(|e| {
        // toml names the line, column and (for type errors) the key; keep its words.
        let key = e
            .span()
            .map(|span| key_at(text, span.start))
            .unwrap_or_default();
        let reason = e.message().to_string();
        let line = e
            .span()
            .map(|span| text[..span.start].lines().count().max(1))
            .unwrap_or(0);
        if key.is_empty() {
            file_error(format!("line {line}: {reason}"))
        } else {
            ConfigError::Key {
                path: path.to_path_buf(),
                key,
                reason: format!("line {line}: {reason}"),
            }
        }
    })
}

/// The dotted key whose value or name starts at byte `offset` of a TOML document: the
/// last `[table]` header before it plus the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(text.len());
    let line = &text[line_start..line_end];
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let trimmed = line.trim();
    if trimmed.starts_with('[') {
        return trimmed
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = trimmed
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string();
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, _) => key,
    }
}

fn check_currency_code(code: &str) -> Result<String, String> {
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code.to_string())
    } else {
        Err(format!(
            "not an ISO 4217 currency code (three capital letters): {code:?}"
        ))
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("not an address like 127.0.0.1:8780: {text:?}"))
}

fn check_window_days(days: u32) -> Result<u32, String> {
    if days == 0 || days > limits::DEDUP_WINDOW_DAYS_MAX {
        return Err(format!(
            "must be 1 to {}, got {days}",
            limits::DEDUP_WINDOW_DAYS_MAX
        ));
    }
    Ok(days)
}

fn check_queue_bytes(bytes: u64) -> Result<u64, String> {
    let min = limits::BATCH_BYTES_MAX as u64;
    if bytes < min {
        return Err(format!(
            "must be at least {min} (one full batch), got {bytes}"
        ));
    }
    Ok(bytes)
}

/// `key1,key2` or `key1=web,key2=mobile`: a key without `=name` gets the default source name.
fn parse_env_write_keys(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, name)) => (key.trim().to_string(), name.trim().to_string()),
            None => (item.to_string(), SOURCE_NAME_DEFAULT.to_string()),
        })
        .collect()
}

/// Returns the offending key path (`write_keys.<source>` style, never the secret) and reason.
fn check_write_keys(keys: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    if keys.len() > limits::WRITE_KEYS_MAX {
        return Err((
            "write_keys".into(),
            format!("more than {} keys", limits::WRITE_KEYS_MAX),
        ));
    }
    for (key, source) in keys {
        let at = format!("write_keys (source {source:?})");
        if key.is_empty() || key.len() > limits::WRITE_KEY_BYTES_MAX {
            return Err((
                at,
                format!(
                    "a write key must be 1 to {} bytes",
                    limits::WRITE_KEY_BYTES_MAX
                ),
            ));
        }
        if key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            return Err((
                at,
                "a write key must not contain spaces, control characters or ':'".into(),
            ));
        }
        let name_ok = !source.is_empty()
            && source.len() <= limits::SOURCE_NAME_BYTES_MAX
            && source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err((
                at,
                format!(
                    "a source name must be 1 to {} characters of A-Z a-z 0-9 - _ .",
                    limits::SOURCE_NAME_BYTES_MAX
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_clickhouse_store_url_names_host_port_and_database_and_the_flag_beats_the_environment() {
        let parsed = StoreLocation::parse("clickhouse://ch.internal:9123/analytics_1").unwrap();
        let StoreLocation::ClickHouse(location) = parsed else {
            panic!("not ClickHouse")
        };
        assert_eq!(
            (location.url.as_str(), location.database.as_str()),
            ("http://ch.internal:9123", "analytics_1")
        );
        let StoreLocation::ClickHouse(location) =
            StoreLocation::parse("clickhouse://127.0.0.1/bw").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            location.url, "http://127.0.0.1:8123",
            "the HTTP port by default"
        );
        assert_eq!(
            StoreLocation::parse("embedded").unwrap(),
            StoreLocation::Embedded
        );
        for (bad, reason) in [
            ("clickhouse://h:0/bw", "port 0"),
            ("clickhouse://h:99999/bw", "port \"99999\""),
            ("clickhouse://h:8123/", "database \"\""),
            ("clickhouse://h:8123/1st", "not starting with a digit"),
            ("clickhouse://h:8123/a;DROP", "database \"a;DROP\""),
            ("clickhouse://h o/bw", "\"h o\" is not a host name"),
            ("clickhouse://u:p@h/bw", "BELLWETHER_CLICKHOUSE_USER"),
            ("sqlite://x", "expected `embedded`"),
        ] {
            let error = StoreLocation::parse(bad).unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let from_env = env(&[
            ("BELLWETHER_STORE", "clickhouse://a:1/x"),
            ("BELLWETHER_CLICKHOUSE_USER", "bw"),
            ("BELLWETHER_CLICKHOUSE_PASSWORD", "s3cret"),
        ]);
        let config = Config::load(&Flags::default(), &from_env).unwrap();
        let StoreLocation::ClickHouse(location) = &config.store else {
            panic!()
        };
        assert_eq!(
            (
                location.url.as_str(),
                location.user.as_deref(),
                location.password.as_deref()
            ),
            ("http://a:1", Some("bw"), Some("s3cret"))
        );
        let flags = Flags {
            store: Some("clickhouse://b:2/y".into()),
            ..Flags::default()
        };
        let StoreLocation::ClickHouse(location) = Config::load(&flags, &from_env).unwrap().store
        else {
            panic!()
        };
        assert_eq!(
            (
                location.url.as_str(),
                location.database.as_str(),
                location.user.as_deref()
            ),
            ("http://b:2", "y", Some("bw"))
        );
        let error = Config::load(
            &Flags::default(),
            &env(&[("BELLWETHER_STORE", "clickhouse://a:1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("BELLWETHER_STORE") && error.contains("names no database"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bellwether.toml");
        std::fs::write(&path, "store = \"clickhouse://h:8123/bad-name\"\n").unwrap();
        let error = Config::load(
            &Flags {
                config: Some(path),
                ..Flags::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("key `store`") && error.contains("bad-name"),
            "{error}"
        );
    }

    #[test]
    fn health_and_metrics_sections_are_checked_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(
                &Flags {
                    config: Some(path.clone()),
                    ..Flags::default()
                },
                &[],
            )
            .map_err(|e| e.to_string())
        };
        let ok = load("[health]\ncut_points = [1, 6, 11, 16]\n[health.segment_score_weights.pro]\ntier = 2\nnps = 1\n").unwrap();
        assert_eq!(ok.health.cut_points, Some(vec![1.0, 6.0, 11.0, 16.0]));
        assert_eq!(ok.health.weights_for("pro").map(BTreeMap::len), Some(2));
        assert_eq!(
            ok.health.weights_for("starter"),
            None,
            "no hand-set weights: learned"
        );
        let bad = load("[health.segment_score_weights.pro]\nlogins = 1\n").unwrap_err();
        assert!(
            bad.contains("health.segment_score_weights.pro.logins")
                && bad.contains("not a numeric metric"),
            "{bad}"
        );
        let bad = load("[health]\ncut_points = [6, 1]\n").unwrap_err();
        assert!(
            bad.contains("health.cut_points") && bad.contains("increasing"),
            "{bad}"
        );
        let bad = load("[health]\ncut_points = \"often\"\n").unwrap_err();
        assert!(bad.contains("auto"), "{bad}");
        let bad = load("[metrics]\nsession_idle_minutes = 0\n").unwrap_err();
        assert!(bad.contains("metrics.session_idle_minutes"), "{bad}");
        let bad = load("[metrics.features]\n\"Report [\" = \"r\"\n").unwrap_err();
        assert!(
            bad.contains("metrics.features") && bad.contains("bad glob"),
            "{bad}"
        );
    }

    #[test]
    fn defaults_apply_without_file_env_or_flags() {
        let config = Config::load(&Flags::default(), &[]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("./bellwether-data"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8780");
        assert!(config.write_keys.is_empty());
        assert_eq!(config.ingest.dedup_window_days, 7);
    }

    #[test]
    fn flag_beats_env_which_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1001\"\ndata_dir = \"/from-file\"\n[ingest]\ndedup_window_days = 3\n").unwrap();
        let flags = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let config = Config::load(&flags, &[]).unwrap();
        assert_eq!(config.listen.port(), 1001);
        assert_eq!(config.data_dir, PathBuf::from("/from-file"));
        assert_eq!(config.ingest.dedup_window_days, 3);

        let vars = env(&[
            ("BELLWETHER_LISTEN", "127.0.0.1:1002"),
            ("BELLWETHER_DATA_DIR", "/from-env"),
        ]);
        let config = Config::load(&flags, &vars).unwrap();
        assert_eq!(config.listen.port(), 1002);
        assert_eq!(config.data_dir, PathBuf::from("/from-env"));

        let flags = Flags {
            listen: Some("127.0.0.1:1003".into()),
            ..flags
        };
        let config = Config::load(&flags, &vars).unwrap();
        assert_eq!(config.listen.port(), 1003);
        assert_eq!(config.data_dir, PathBuf::from("/from-env"));
    }

    #[test]
    fn write_keys_from_env_and_file_table() {
        let vars = env(&[("BELLWETHER_WRITE_KEYS", "k1, k2=mobile")]);
        let config = Config::load(&Flags::default(), &vars).unwrap();
        assert_eq!(
            config.write_keys.get("k1").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            config.write_keys.get("k2").map(String::as_str),
            Some("mobile")
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[write_keys]\nwk_abc = \"web-app\"\n").unwrap();
        let config = Config::load(
            &Flags {
                config: Some(path),
                ..Flags::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            config.write_keys.get("wk_abc").map(String::as_str),
            Some("web-app")
        );
    }

    #[test]
    fn bad_config_names_file_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let check = |text: &str, expect: &[&str]| {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(
                &Flags {
                    config: Some(path.clone()),
                    ..Flags::default()
                },
                &[],
            )
            .unwrap_err()
            .to_string();
            for part in expect {
                assert!(err.contains(part), "{err:?} should contain {part:?}");
            }
            assert!(err.contains("bad.toml"), "{err:?} should name the file");
        };
        check(
            "[ingest]\ndedup_window_days = \"seven\"\n",
            &["ingest.dedup_window_days", "invalid type"],
        );
        check(
            "[ingest]\ndedup_window_days = 0\n",
            &["ingest.dedup_window_days", "must be 1 to 365"],
        );
        check("listen = \"localhost\"\n", &["listen", "not an address"]);
        check("lisen = \"127.0.0.1:1\"\n", &["lisen", "unknown field"]);
        check(
            "[write_keys]\nk = \"bad name!\"\n",
            &["write_keys", "source name"],
        );
        check("listen = \n", &["line 1"]);
        check(
            "[currency.rates]\nEUR = -1.0\n",
            &["currency.rates.EUR", "positive"],
        );
        check(
            "[currency]\nreport = \"usd\"\n",
            &["currency.report", "ISO 4217"],
        );
    }

    #[test]
    fn a_missing_exchange_rate_is_an_error_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[currency]\nreport = \"EUR\"\n[currency.rates]\nSEK = 0.09\n",
        )
        .unwrap();
        let config = Config::load(
            &Flags {
                config: Some(path),
                ..Flags::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(config.currency.to_report(100.0, "EUR"), Ok(100.0));
        assert!((config.currency.to_report(100.0, "SEK").unwrap() - 9.0).abs() < 1e-9);
        assert!(config
            .currency
            .to_report(100.0, "USD")
            .unwrap_err()
            .contains("no exchange rate for USD"));
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let err = Config::load(&Flags::default(), &env(&[("BELLWETHER_LISTN", "x")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("BELLWETHER_LISTN: unknown variable"),
            "{err}"
        );
        let err = Config::load(
            &Flags::default(),
            &env(&[("BELLWETHER_DEDUP_WINDOW_DAYS", "x")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("BELLWETHER_DEDUP_WINDOW_DAYS: not a whole number"),
            "{err}"
        );
        let err =
            Config::load(&Flags::default(), &env(&[("BELLWETHER_WRITE_KEYS", "a b")])).unwrap_err();
        assert!(err.to_string().contains("BELLWETHER_WRITE_KEYS"), "{err}");
        let missing = Flags {
            config: Some("/nonexistent/x.toml".into()),
            ..Flags::default()
        };
        let err = Config::load(&missing, &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/x.toml: cannot read"),
            "{err}"
        );
    }
}
