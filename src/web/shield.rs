//! What stands between the network and the handlers: the accept loop's connection caps and
//! timeouts, the client's address, per-address rate limits on the public endpoints, the
//! `Host` check that keeps DNS-rebinding pages off the dashboard, and the bound on password
//! hashes running at once. `[server]` in the config sets each; SECURITY.md lists them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
pub use crate::config::ServerConfig;

/// Open connections, in total and per client address.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    max_per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<Connections>,
    address: IpAddr,
}

impl Connections {
    pub fn new(max: usize, max_per_address: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            max_per_address,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `address`, or `None` when the server or the address is
    /// at its cap (the caller closes the connection at once).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().expect("invariant: not poisoned");
        let of_address = open.1.get(&address).copied().unwrap_or(0);
        if open.0 >= self.max || of_address >= self.max_per_address {
            return None;
        }
        open.0 += 1;
        open.1.insert(address, of_address + 1);
        Some(ConnectionPermit {
            gate: self.clone(),
            address,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("invariant: not poisoned").0
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().expect("invariant: not poisoned");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.address);
            }
        }
    }
}

/// What one connection has been doing, for its watchdog ([`Activity::expired`]).
#[derive(Debug)]
struct ConnState {
    /// The last byte read or written.
    last: Instant,
    /// When the request head now arriving began (or the connection opened), until the
    /// head is complete.
    head_since: Option<Instant>,
    /// Requests being answered.
    in_flight: usize,
}

/// Shared between a connection's socket ([`Watched`]), its requests ([`Activity::started`])
/// and its watchdog.
#[derive(Debug, Clone)]
pub struct Activity(Arc<Mutex<ConnState>>);

/// A request being answered; dropping it (with the response) makes the connection idle.
pub struct InFlight(Activity);

/// How often the watchdog looks while a request is being answered (its body has its own
/// timeout: `body_timeout_seconds`).
const WATCH_TICK: Duration = Duration::from_secs(1);

impl Activity {
    /// A connection just opened: its first request head is due within the header timeout.
    pub fn new() -> Activity {
        let now = Instant::now();
        Activity(Arc::new(Mutex::new(ConnState {
            last: now,
            head_since: Some(now),
            in_flight: 0,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut ConnState) -> T) -> T {
        f(&mut self.0.lock().expect("invariant: not poisoned"))
    }

    /// A request head is complete and is being answered.
    pub fn started(&self) -> InFlight {
        self.with(|s| {
            s.head_since = None;
            s.in_flight += 1;
        });
        InFlight(self.clone())
    }

    /// Returns once the connection should be closed: a request head not complete within
    /// `header` of its first byte (or of the connection's opening), or no request and no
    /// byte either way for `idle`.
    pub async fn expired(&self, header: Duration, idle: Duration) {
        loop {
            let wait = self.with(|s| {
                if s.in_flight > 0 {
                    Some(WATCH_TICK)
                } else if let Some(since) = s.head_since {
                    header.checked_sub(since.elapsed())
                } else {
                    idle.checked_sub(s.last.elapsed())
                }
            });
            match wait {
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(10))).await,
                None => return,
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.with(|s| {
            s.in_flight -= 1;
            s.last = Instant::now();
        });
    }
}

/// A socket that tells its [`Activity`] when bytes move.
pub struct Watched<T> {
    io: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Activity) -> Watched<T> {
        Watched { io, activity }
    }
}

type Polled<T> = std::task::Poll<std::io::Result<T>>;

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Polled<()> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.with(|s| {
                s.last = Instant::now();
                // Bytes while nothing is being answered: the next request head has begun.
                if s.in_flight == 0 && s.head_since.is_none() {
                    s.head_since = Some(s.last);
                }
            });
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Polled<usize> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.with(|s| s.last = Instant::now());
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Polled<()> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Polled<()> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client's address, put on every request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The address the accept loop put on a request; a request that did not come through
    /// it (none does in production) is from the unspecified address.
    pub fn of(extensions: &axum::http::Extensions) -> ClientAddr {
        let unspecified = ClientAddr(IpAddr::from([0, 0, 0, 0]));
        extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(unspecified)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(&parts.extensions))
    }
}

/// The client of a request that came over a connection from `peer`: the peer itself,
/// unless it is a trusted proxy, then the last `X-Forwarded-For` address that is not a
/// trusted proxy (proxies append; what a client wrote itself is further left).
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer.ip())
}

/// Rate limiters keyed by client address (and, for sign-in, user name and address).
pub struct Limiters {
    /// Public endpoints, per address (`None`: no limit).
    pub requests: Option<governor::DefaultKeyedRateLimiter<IpAddr>>,
    /// Sign-in attempts per address, whatever the user name.
    pub sign_ins_by_address: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// Sign-in attempts per user name from one address: a client hammering a name slows
    /// itself only, so nobody can lock a user out from elsewhere.
    pub sign_ins: governor::DefaultKeyedRateLimiter<(String, IpAddr)>,
}

/// Sign-in attempts one user name may make per minute from one address (a burst of this
/// many, then one every 60/N seconds).
pub const SIGN_INS_PER_MINUTE: u32 = 10;

impl Limiters {
    pub fn new(config: &ServerConfig) -> Limiters {
        let per_minute = |n: u32| {
            governor::Quota::per_minute(NonZeroU32::new(n).expect("invariant: checked positive"))
        };
        Limiters {
            requests: NonZeroU32::new(config.requests_per_second_per_address).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::new(2).expect("invariant: positive"));
                governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
            }),
            sign_ins_by_address: governor::RateLimiter::keyed(per_minute(
                config.sign_ins_per_minute_per_address,
            )),
            sign_ins: governor::RateLimiter::keyed(per_minute(SIGN_INS_PER_MINUTE)),
        }
    }

    /// Forgets keys whose limits are back to full, so the maps do not grow with every
    /// address and name ever seen (called every minute).
    pub fn forget_idle(&self) {
        if let Some(requests) = &self.requests {
            requests.retain_recent();
            requests.shrink_to_fit();
        }
        self.sign_ins_by_address.retain_recent();
        self.sign_ins_by_address.shrink_to_fit();
        self.sign_ins.retain_recent();
        self.sign_ins.shrink_to_fit();
    }
}

/// Seconds until a refused key may try again (at least 1).
pub fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Whether a path is one of the public endpoints limited per address.
fn is_public(path: &str) -> bool {
    path.starts_with("/v1/")
        || path.starts_with("/s/")
        || path.starts_with("/r/")
        || path == "/login"
}

/// Whether a path serves people or programs that may reach the server under any name:
/// the tracking API and its script (customers' pages), probes of load balancers.
fn any_host(path: &str) -> bool {
    path.starts_with("/v1/")
        || path.starts_with("/js/")
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The host part of a `Host` header (or a URL's authority), lower case, without the port.
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.to_ascii_lowercase()
}

/// Whether the dashboard may answer a request sent to `host`: an IP address (a rebinding
/// page always uses a name), `localhost`, or a configured name.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Every request passes here: the `Host` check for the dashboard and the API, then the
/// per-address limit on the public endpoints.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !any_host(&path) {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host_allowed(host, &state.allowed_hosts) {
            tracing::warn!(host = ?host, "request to a host name this server does not answer to");
            let reason = format!(
                "this server does not answer to the host name {:?}; add it to [server] allowed_hosts (or set [actions] dashboard_url)",
                host_name(host)
            );
            return (StatusCode::MISDIRECTED_REQUEST, reason).into_response();
        }
    }
    if let (true, Some(limiter)) = (is_public(&path), &state.limiters.requests) {
        let address = ClientAddr::of(request.extensions()).0;
        if let Err(not_until) = limiter.check_key(&address) {
            state.telemetry.reject("address_rate_limited");
            let retry = retry_after(&not_until);
            let reason = "too many requests from your address; retry later";
            let body = if path.starts_with("/v1/") {
                axum::Json(
                    serde_json::json!({"success": false, "field": "address", "reason": reason}),
                )
                .into_response()
            } else {
                reason.into_response()
            };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry.to_string())],
                body,
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Bounds the password hashes running at once; sign-ins past the queue are refused.
#[derive(Debug)]
pub struct HashGate {
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    queue_max: usize,
}

/// No hash slot came free in time, or the queue was full.
#[derive(Debug)]
pub struct Busy;

/// The longest a sign-in waits for a hash slot.
const HASH_WAIT: Duration = Duration::from_secs(5);

impl HashGate {
    pub fn new(slots: usize, queue_max: usize) -> HashGate {
        HashGate {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            waiting: AtomicUsize::new(0),
            queue_max,
        }
    }

    /// A slot, waited for at most [`HASH_WAIT`] behind at most `queue_max` others.
    pub async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Busy> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_max {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let permit = tokio::time::timeout(HASH_WAIT, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_address() {
        let gate = Connections::new(3, 2);
        let (a, b, c) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "a third from one address");
        let _third = gate.admit(b).unwrap();
        assert!(gate.admit(c).is_none(), "a fourth in total");
        drop(first);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(c).is_some(), "a place freed is given again");
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let proxy = IpAddr::from([10, 0, 0, 9]);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        let from_proxy = SocketAddr::new(proxy, 5000);
        assert_eq!(
            client_addr(from_proxy, &headers, &[proxy]),
            IpAddr::from([5, 6, 7, 8]),
            "the proxy's own entry is the last"
        );
        assert_eq!(
            client_addr(from_proxy, &headers, &[]),
            proxy,
            "an untrusted peer's header is ignored"
        );
        let direct = SocketAddr::new(IpAddr::from([9, 9, 9, 9]), 5000);
        assert_eq!(
            client_addr(direct, &headers, &[proxy]),
            IpAddr::from([9, 9, 9, 9])
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_addr(from_proxy, &headers, &[proxy]), proxy);
    }

    #[test]
    fn the_dashboard_answers_to_addresses_localhost_and_configured_names() {
        let allowed = vec!["cs.example.com".to_string()];
        for host in [
            "127.0.0.1:8780",
            "localhost:8780",
            "[::1]:8780",
            "10.1.2.3",
            "CS.example.com",
            "cs.example.com:443",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8780",
            "cs.example.com.evil.example",
            "",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }

    #[tokio::test]
    async fn a_full_hash_queue_refuses_at_once() {
        let gate = HashGate::new(1, 0);
        let held = gate.slot().await.unwrap();
        assert!(gate.slot().await.is_err(), "no slot and no queue");
        drop(held);
        assert!(gate.slot().await.is_ok());
    }
}
