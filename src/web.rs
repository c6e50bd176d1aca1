//! The HTTP surface: the Segment tracking API (`/v1`), the REST API (`/api/v1`) and the
//! operational endpoints. Only this module knows HTTP; handlers extract, call one function
//! of another module and render.

pub mod actions;
pub mod api;
pub mod health;
pub mod listening;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod records;
pub mod segment;

/// The dashboard's session cookie. Pages need it; the API's reads (GET) take it too, so a
/// signed-in user's CSV and JSON links work without an API token.
pub const SESSION_COOKIE: &str = "bw_session";
pub mod shield;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Config, CurrencyConfig, HealthConfig, MetricsConfig};
use crate::ingest::Ingestor;
use crate::store::{Backend, StoreError};
use crate::telemetry::Telemetry;
use crate::workers;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    pub ingestor: Ingestor,
    /// Where every handler reads and writes: the embedded store or ClickHouse.
    pub backend: Backend,
    pub telemetry: Telemetry,
    /// SHA-256 of each write key -> source name. Looking keys up by digest means the time a
    /// lookup takes says nothing about the stored keys.
    pub write_keys: Arc<HashMap<[u8; 32], Arc<str>>>,
    pub currency: Arc<CurrencyConfig>,
    pub metrics: Arc<MetricsConfig>,
    pub health: Arc<HealthConfig>,
    /// Source name -> its message rate limiter (sources without a limit are absent).
    pub rate_limiters: Arc<HashMap<String, governor::DefaultDirectRateLimiter>>,
    /// Origins allowed to call `/v1` from a browser.
    pub cors_origins: Arc<Vec<String>>,
    /// The last full metrics snapshot, for ranking one account against its segment.
    pub snapshots: Arc<std::sync::Mutex<Option<metrics::SnapshotCache>>>,
    pub actions: Arc<crate::actions::ActionsConfig>,
    pub listening: Arc<crate::listening::ListeningConfig>,
    pub review: Arc<crate::config::ReviewConfig>,
    /// The dashboard's address as people reach it, for links in messages.
    pub base_url: Arc<str>,
    /// Per-address limits of the public endpoints and of sign-in.
    pub limiters: Arc<shield::Limiters>,
    /// Bounds the password hashes running at once.
    pub hash_gate: Arc<shield::HashGate>,
    /// Host names the dashboard answers to besides IP addresses and `localhost`.
    pub allowed_hosts: Arc<Vec<String>>,
    pub server: Arc<shield::ServerConfig>,
    /// Event times `/v1` accepts.
    pub event_times: crate::ingest::TimeRange,
    /// Pokes the actions evaluator (after an import, a rule saved, a survey answer).
    pub signals: workers::Signals,
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(
            segment::router()
                .merge(actions::public_router())
                .layer(cors(&state.cors_origins)),
        )
        .merge(api::router())
        .merge(metrics::router())
        .merge(health::router())
        .merge(actions::router())
        .merge(listening::router())
        .merge(records::router())
        .merge(ops::router())
        .merge(pages::router());
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shield::guard,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// CORS for the tracking API: browsers on the configured origins may POST with a write key.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ])
        .max_age(std::time::Duration::from_secs(86_400))
}

/// One limiter per source with a rate limit.
fn rate_limiters(config: &Config) -> HashMap<String, governor::DefaultDirectRateLimiter> {
    let mut sources: Vec<&String> = config.write_keys.values().collect();
    sources.sort();
    sources.dedup();
    for named in config
        .ingest
        .rate_limits
        .keys()
        .filter(|s| !sources.contains(s))
    {
        tracing::warn!(source = %named, "[ingest.rate_limits] names a source no write key has; it limits nothing");
    }
    sources
        .into_iter()
        .filter_map(|source| {
            let rate = config
                .ingest
                .rate_limits
                .get(source)
                .copied()
                .unwrap_or(config.ingest.rate_limit_per_second);
            std::num::NonZeroU32::new(rate).map(|rate| {
                (
                    source.clone(),
                    governor::RateLimiter::direct(governor::Quota::per_second(rate)),
                )
            })
        })
        .collect()
}

/// The SHA-256 of a write key, the form write keys are looked up in.
pub fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Headers every response carries: no sniffing, no framing, no referrer leaks, and no
/// caching of API answers (the activity script sets its own Cache-Control).
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    // Dashboard pages set their own (they load the embedded stylesheet and script).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A started bellwether: its store open, its writer running, its handler state ready.
pub struct App {
    pub state: AppState,
    writer: std::thread::JoinHandle<()>,
}

impl App {
    /// Opens the store (creating and migrating it) and starts the writer.
    pub fn start(config: &Config) -> Result<App, ServeError> {
        App::start_with(config, workers::Signals::default())
    }

    /// [`App::start`] with the signals the caller keeps (the demo holds the background work
    /// while it loads).
    pub fn start_with(config: &Config, signals: workers::Signals) -> Result<App, ServeError> {
        let telemetry = Telemetry::new();
        let (ingestor, receiver) = Ingestor::new(config.ingest.queue_bytes_max);
        let workers::Started { backend, writer } =
            workers::start(config, receiver, &telemetry, &signals)?;
        let write_keys = config
            .write_keys
            .iter()
            .map(|(key, source)| (key_digest(key), Arc::<str>::from(source.as_str())))
            .collect::<HashMap<_, _>>();
        if write_keys.is_empty() {
            tracing::warn!("no write keys configured: /v1 answers 401 to every request (set BELLWETHER_WRITE_KEYS or [write_keys])");
        }
        let state = AppState {
            ingestor,
            backend,
            telemetry,
            write_keys: Arc::new(write_keys),
            currency: Arc::new(config.currency.clone()),
            metrics: Arc::new(config.metrics.clone()),
            health: Arc::new(config.health.clone()),
            rate_limiters: Arc::new(rate_limiters(config)),
            cors_origins: Arc::new(config.ingest.cors_origins.clone()),
            snapshots: Arc::default(),
            actions: Arc::new(config.actions.clone()),
            listening: Arc::new(config.listening.clone()),
            review: Arc::new(config.review.clone()),
            base_url: Arc::from(config.base_url()),
            limiters: Arc::new(shield::Limiters::new(&config.server)),
            hash_gate: Arc::new(shield::HashGate::new(
                config.server.hashes(),
                config.server.sign_in_queue_max,
            )),
            allowed_hosts: Arc::new(allowed_hosts(config)),
            server: Arc::new(config.server.clone()),
            event_times: config.ingest.event_times,
            signals,
        };
        Ok(App { state, writer })
    }

    /// Serves until SIGINT or SIGTERM; then stops accepting, lets the writer commit what
    /// it was given, and returns. `on_listening` gets the bound address (useful with port 0).
    pub async fn serve(
        self,
        listen: SocketAddr,
        on_listening: impl FnOnce(SocketAddr),
    ) -> Result<(), ServeError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, store = %self.state.backend.describe(), "serving");
        let server = self.state.server.clone();
        let limiters = self.state.limiters.clone();
        let forget = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                limiters.forget_idle();
            }
        });
        let routes = router(self.state);
        on_listening(addr);
        accept_loop(listener, routes, &server).await;
        forget.abort();
        tracing::info!("stopped accepting; waiting for the writer to finish");
        // The router (and with it every Ingestor clone) is dropped once serve returns, which
        // closes the queue; the writer commits what it holds and exits.
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .ok();
        Ok(())
    }
}

/// How long open requests may finish after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts connections until a shutdown signal: each within the caps of `[server]` (a
/// connection past them is closed at once, without stalling the loop), served by HTTP/1
/// under a watchdog (the header and idle timeouts) with the body stall timeout, and told
/// who its client is.
async fn accept_loop(listener: TcpListener, routes: Router, server: &shield::ServerConfig) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let connections =
        shield::Connections::new(server.max_connections, server.max_connections_per_address);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = std::time::Duration::from_secs(server.header_timeout_seconds);
    let idle_timeout = std::time::Duration::from_secs(server.idle_timeout_seconds);
    let body_timeout = std::time::Duration::from_secs(server.body_timeout_seconds);
    let trusted = Arc::new(server.trusted_proxies.clone());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permit) = connections.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (routes, trusted) = (routes.clone(), trusted.clone());
        let activity = shield::Activity::new();
        let io = shield::Watched::new(stream, activity.clone());
        let watched = activity.clone();
        let service = hyper::service::service_fn(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let in_flight = watched.started();
                let client = shield::client_addr(peer, request.headers(), &trusted);
                let mut request = request.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body))
                });
                request.extensions_mut().insert(shield::ClientAddr(client));
                let answer = routes.clone().oneshot(request);
                async move {
                    let response = answer.await;
                    drop(in_flight);
                    response
                }
            },
        );
        let connection = graceful.watch(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes its socket.
                () = activity.expired(header_timeout, idle_timeout) => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still open {}s after the shutdown signal were cut",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Names the dashboard answers to: `[server] allowed_hosts` and the host of
/// `[actions] dashboard_url` (IP addresses and `localhost` always).
fn allowed_hosts(config: &Config) -> Vec<String> {
    let mut hosts = config.server.allowed_hosts.clone();
    if let Some(url) = &config.actions.dashboard_url {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = shield::host_name(authority.rsplit_once('@').map_or(authority, |(_, h)| h));
        if !host.is_empty() {
            hosts.push(host);
        }
    }
    hosts
}

/// `bellwether serve`: start and serve on the configured address.
pub async fn serve(
    config: &Config,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    App::start(config)?.serve(config.listen, on_listening).await
}

/// The credentials of an `Authorization: SCHEME credentials` header, the scheme matched
/// case-insensitively (RFC 9110, 11.1: `bearer` is `Bearer`).
pub fn credentials<'a>(headers: &'a axum::http::HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (given, credentials) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credentials.trim())
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit.
    TooLarge,
    /// The client stopped sending for `[server] body_timeout_seconds`.
    Stalled,
}

/// Reads a request body of at most `limit` bytes. `TooLarge` when it is longer; the rest of
/// the body is then read and dropped (up to [`crate::limits::OVERSIZE_DRAIN_BYTES_MAX`]) so
/// the client gets the 413 rather than a reset connection.
pub async fn read_body_limited(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, BodyError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        if declared.is_some_and(|len| len <= crate::limits::OVERSIZE_DRAIN_BYTES_MAX) {
            let _ = axum::body::to_bytes(body, crate::limits::OVERSIZE_DRAIN_BYTES_MAX).await;
        }
        return Err(BodyError::TooLarge);
    }
    // Without a length the body is read up to the limit: past it, the connection closes.
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if stalled(&e) {
            BodyError::Stalled
        } else {
            BodyError::TooLarge
        }
    })
}

/// Whether a body error is the body timeout's.
fn stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = e.source();
    }
    false
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
