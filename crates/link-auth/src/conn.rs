//! Connection hygiene for fhirlink's HTTP listeners (the data plane's and the management
//! API's): a deadline on every phase of a connection, caps on how many connections are open
//! (per source address and in total), and the accept loop that applies them.
//!
//! The phases and what bounds each:
//!
//! - the TLS handshake: [`ConnectionLimits::handshake_timeout`], from accept;
//! - the first request: its head must be in within [`ConnectionLimits::header_timeout`] of the
//!   connection being ready (this also bounds a client that connects and sends nothing, and
//!   hyper's HTTP/1-or-2 detection, which waits for the first bytes);
//! - a later HTTP/1 request head: [`ConnectionLimits::header_timeout`] from its first byte;
//! - keep-alive idleness (no request in flight, nothing arriving):
//!   [`ConnectionLimits::idle_timeout`], then a graceful close (HTTP/2: GOAWAY);
//! - a request body that stops arriving, or a response the client stops reading:
//!   [`ConnectionLimits::body_timeout`] without progress ([`TimedBody`], and the send side of
//!   [`Watched`]).
//!
//! A request counts as in flight from the moment hyper hands it over until its response body
//! has been sent (or dropped), so a long computation or a long download is never cut by the
//! idle rule. The per-request cost is a few relaxed atomics and one clock read; caps are
//! taken at accept and released at close, never per request.
//!
//! This module knows HTTP and sockets, not what is served: the caller builds each
//! connection's service ([`Accepted`]) and answers a stalled body in its own wire format.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long open connections get to finish after their listener stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits of one listener's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's head: the first one from the moment
    /// the connection is ready, a later HTTP/1 one from its first byte.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How long a request body may stop arriving, or a response stop being read, before the
    /// exchange is given up.
    pub body_timeout: Duration,
    /// Most connections open at once from one source (an IPv4 address, an IPv6 /64).
    pub max_per_source: usize,
    /// Most connections open at once in total.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    /// Handshake 10 s, headers 10 s, idle 60 s, body stall 30 s, 256 connections per
    /// source, and in total what the open-files limit leaves ([`connection_budget`]).
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_per_source: 256,
            max_connections: connection_budget(),
        }
    }
}

/// How many connections the process can hold open: its soft open-files limit
/// (`RLIMIT_NOFILE`) less what the store, the audit files, the other listeners and DNS need
/// (an eighth of it, at least 128). A listener at this cap refuses new connections instead of
/// failing `accept` for every socket of the process. 1024 when the limit cannot be read.
pub fn connection_budget() -> usize {
    let limit = open_files_limit().unwrap_or(1024);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 20);
    limit.saturating_sub((limit / 8).max(128)).max(16)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already has [`ConnectionLimits::max_per_source`] connections open.
    PerSource,
    /// [`ConnectionLimits::max_connections`] are open.
    Total,
}

/// The connection caps of one or more listeners: counted at accept and close only. The
/// per-source counts live in a sharded map, so accepts from different sources rarely meet
/// on one lock.
pub struct Caps {
    per_source: usize,
    total: usize,
    open: AtomicUsize,
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
    refused_per_source: AtomicU64,
    refused_total: AtomicU64,
    /// Seconds since `epoch` of the last refusal logged, so that a flood logs once a second.
    last_logged: AtomicU64,
    epoch: Instant,
}

const SHARDS: usize = 32;

impl Caps {
    pub fn new(limits: &ConnectionLimits) -> Arc<Caps> {
        Arc::new(Caps {
            per_source: limits.max_per_source,
            total: limits.max_connections,
            open: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            refused_per_source: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            last_logged: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        })
    }

    /// A slot for one connection from `source`, held until the connection closes.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Slot, Refusal> {
        if self.open.fetch_add(1, Relaxed) >= self.total {
            self.open.fetch_sub(1, Relaxed);
            self.refused_total.fetch_add(1, Relaxed);
            return Err(Refusal::Total);
        }
        let key = source_key(source);
        let mut shard = self.shard(key);
        let count = shard.entry(key).or_insert(0);
        if *count as usize >= self.per_source {
            drop(shard);
            self.open.fetch_sub(1, Relaxed);
            self.refused_per_source.fetch_add(1, Relaxed);
            return Err(Refusal::PerSource);
        }
        *count += 1;
        Ok(Slot {
            caps: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Connections refused so far: (over the per-source cap, over the total cap).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_per_source.load(Relaxed),
            self.refused_total.load(Relaxed),
        )
    }

    /// Whether a refusal should be logged now: at most once a second.
    fn should_log(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        let last = self.last_logged.load(Relaxed);
        (last == u64::MAX || now > last)
            && self
                .last_logged
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    fn shard(&self, key: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A poisoned shard still holds correct counts: every update is a single write.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a cap counts as one source: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 /64, the smallest prefix a site is usually given (RFC 6177), so that one client
/// cannot step around the cap by cycling through the addresses of its own subnet.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One admitted connection's place under the caps; released when dropped.
pub struct Slot {
    caps: Arc<Caps>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shard = self.caps.shard(self.key);
        if let Some(count) = shard.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&self.key);
            }
        }
        drop(shard);
        self.caps.open.fetch_sub(1, Relaxed);
    }
}

/// What one connection is doing, as its requests, its socket and its watchdog see it.
/// Times are milliseconds since `started`; `0` in a `*_since` field means "not now", so
/// those store the time plus one.
pub struct Activity {
    started: Instant,
    in_flight: AtomicU32,
    /// When the connection was ready for its first request (after the TLS handshake).
    ready_at: AtomicU64,
    served: AtomicBool,
    h2: AtomicBool,
    /// When the last request in flight finished.
    idle_since: AtomicU64,
    /// When bytes first arrived with no request in flight (a request head on its way).
    receiving_since: AtomicU64,
    /// When a write first could not proceed (the client is not reading).
    blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            ready_at: AtomicU64::new(0),
            served: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            receiving_since: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A request has arrived: it is in flight until the returned guard is dropped (move it
    /// into the response body with [`Tracked`]).
    pub fn begin(self: &Arc<Self>, version: hyper::Version) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.receiving_since.store(0, Relaxed);
        if !self.served.load(Relaxed) {
            self.served.store(true, Relaxed);
            self.h2.store(version == hyper::Version::HTTP_2, Relaxed);
        }
        InFlight(self.clone())
    }

    fn read_some(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.receiving_since.load(Relaxed) == 0 {
            self.receiving_since.store(self.now() + 1, Relaxed);
        }
    }

    fn write_pending(&self, pending: bool) {
        let since = self.blocked_since.load(Relaxed);
        if pending && since == 0 {
            self.blocked_since.store(self.now() + 1, Relaxed);
        } else if !pending && since != 0 {
            self.blocked_since.store(0, Relaxed);
        }
    }

    /// What the watchdog does now. `closing_since`: when a graceful close was asked for.
    fn step(&self, limits: &ConnectionLimits, closing_since: Option<u64>) -> Step {
        let now = self.now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        let (header, idle, body) = (
            ms(limits.header_timeout),
            ms(limits.idle_timeout),
            ms(limits.body_timeout),
        );
        // Woken at least this often, so that a phase that began since the last check (bytes
        // of a new head, a blocked write) is seen within half its timeout.
        let tick = header.min(body).div_ceil(2).max(1);
        let blocked = self.blocked_since.load(Relaxed);
        if blocked != 0 && now.saturating_sub(blocked - 1) >= body {
            return Step::Close("the client stopped reading the response");
        }
        if self.in_flight.load(Relaxed) > 0 {
            return Step::Wait(tick);
        }
        let until = |since: u64, limit: u64| (since + limit).saturating_sub(now);
        if let Some(since) = closing_since {
            // Nothing in flight, yet still open after a graceful close (an HTTP/1 head that
            // never completes, an HTTP/2 peer that does not answer GOAWAY's ping).
            return match until(since, header) {
                0 => Step::Close("still open after a graceful close"),
                left => Step::Wait(left.min(tick)),
            };
        }
        if !self.served.load(Relaxed) {
            return match until(self.ready_at.load(Relaxed), header) {
                0 => Step::Close("no request within the header timeout"),
                left => Step::Wait(left.min(tick)),
            };
        }
        let receiving = self.receiving_since.load(Relaxed);
        // HTTP/2 frames arrive on an idle connection too (PING, SETTINGS); only HTTP/1
        // bytes with nothing in flight are the head of a next request.
        if receiving != 0 && !self.h2.load(Relaxed) {
            return match until(receiving - 1, header) {
                0 => Step::Close("request head not complete within the header timeout"),
                left => Step::Wait(left.min(tick)),
            };
        }
        match until(self.idle_since.load(Relaxed), idle) {
            0 => Step::Graceful,
            left => Step::Wait(left.min(tick)),
        }
    }
}

enum Step {
    /// Check again in this many milliseconds.
    Wait(u64),
    /// Close gracefully (idle keep-alive): HTTP/1 closes at once, HTTP/2 sends GOAWAY.
    Graceful,
    /// Drop the connection now; nothing is in flight that a client could still receive.
    Close(&'static str),
}

/// A request in flight on its connection (see [`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Relaxed);
        }
    }
}

/// A response body that keeps its request in flight until it has been sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a [`TimedBody`] ends with when the client stops sending.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving for longer than the body timeout")]
pub struct BodyStalled;

/// Set when a request's [`TimedBody`] timed out, so that the one answering can say 408
/// instead of whatever reading the body's error led to.
#[derive(Clone)]
pub struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    pub fn stalled(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// A request body that fails with [`BodyStalled`] when no frame arrives for `timeout` while
/// it is being read. The timer is armed only while a read waits, so a body that is in
/// memory already (most of them) never touches it.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    done: bool,
    flag: Option<StallFlag>,
}

/// `req` with its body under `timeout`, and the flag that tells whether it stalled (`None`
/// for a request without a body: nothing to stall, nothing allocated).
pub fn timed_request<B: Body>(
    req: hyper::Request<B>,
    timeout: Duration,
) -> (hyper::Request<TimedBody<B>>, Option<StallFlag>) {
    let flag = (!req.body().is_end_stream()).then(|| StallFlag(Arc::new(AtomicBool::new(false))));
    let body_flag = flag.clone();
    let req = req.map(|inner| TimedBody {
        inner,
        timeout,
        sleep: None,
        armed: false,
        done: false,
        flag: body_flag,
    });
    (req, flag)
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                let expired = match &mut this.sleep {
                    Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                this.done = true;
                if let Some(flag) = &this.flag {
                    flag.0.store(true, Relaxed);
                }
                Poll::Ready(Some(Err(Box::new(BodyStalled))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket (TCP or TLS) that tells its [`Activity`] when bytes of a request
/// head arrive and when writes stop making progress.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read_some();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.activity.write_pending(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One accepted connection, for the caller to build its service from.
pub struct Accepted {
    /// The client's address, from the socket.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// Call [`Activity::begin`] as each request arrives.
    pub activity: Arc<Activity>,
}

/// hyper's connection builder with the limits' timers: HTTP/1 and HTTP/2 as the client
/// speaks (ALPN or prior knowledge).
fn builder(limits: &ConnectionLimits, max_header_list_size: u32) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own head timer starts when it starts waiting for a head, which on a
    // kept-alive connection is right after the previous response: set to the idle timeout
    // plus the header timeout, it is only a backstop behind the watchdog's finer rules.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_timeout);
    // A ping after this much silence, and the connection closed when it is not answered
    // (a peer that vanished, or that never acknowledges the ping of a graceful GOAWAY).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_timeout)
        .max_header_list_size(max_header_list_size);
    builder
}

/// Serves one listener until `stop` completes: accepts connections under `caps` (a
/// connection over a cap is closed at once, counted, and logged at most once a second),
/// runs the TLS handshake off the accept loop, serves each connection with the service
/// `make` builds for it under `limits`, and after `stop` lets open connections finish for a
/// while. `name` names the listener in logs. `max_header_list_size` is what HTTP/2 clients
/// are told they may send as a request's header section (RFC 9113 §6.5.2); larger gets
/// h2's own 431.
///
/// When accept fails (out of file descriptors, say) the loop backs off, up to a second,
/// and keeps serving; a socket that was shut down (`EINVAL`) ends it.
#[allow(clippy::too_many_arguments)]
pub async fn serve<M, S, B>(
    listener: Arc<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    caps: Arc<Caps>,
    max_header_list_size: u32,
    name: String,
    mut make: M,
    stop: impl Future<Output = ()>,
) where
    M: FnMut(Accepted) -> S,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let limits = Arc::new(limits);
    let builder = builder(&limits, max_header_list_size);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (closing, closing_rx) = watch::channel(false);
    let mut failures: u32 = 0;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => {
                failures = 0;
                conn
            }
            // The socket was shut down under the loop (an endpoint listener closed).
            Err(e) if e.raw_os_error() == Some(22) => break,
            // The client gave up before its connection was accepted: nothing to back off.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: the connection stays
                // in the backlog, so retrying at once would spin. Back off, doubling up to a
                // second, and log the first failure of a run and then every 64th.
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(64) {
                    tracing::warn!(listener = %name, error = %e, failures, "accept failed; backing off");
                }
                let backoff =
                    Duration::from_millis(5u64 << failures.min(8)).min(Duration::from_secs(1));
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = &mut stop => break,
                }
            }
        };
        let slot = match caps.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once, before any TLS or HTTP work: answering would cost the
                // handshake the flood is made of. The client sees the connection closed.
                if caps.should_log() {
                    let (per_source, total) = caps.refused();
                    tracing::warn!(
                        listener = %name,
                        source = %peer.ip(),
                        cap = ?refusal,
                        refused_per_source = per_source,
                        refused_total = total,
                        open = caps.open(),
                        "connection refused: over the connection cap"
                    );
                }
                drop(tcp);
                continue;
            }
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        let service = make(Accepted {
            peer,
            local,
            activity: activity.clone(),
        });
        let builder = builder.clone();
        let limits = limits.clone();
        let closing = closing_rx.clone();
        let acceptor = acceptor.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let io = TokioIo::new(Watched {
                        io: tcp,
                        activity: activity.clone(),
                    });
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    drive(conn, &activity, &limits, closing, &name, peer).await;
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        limits.handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = %name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = %name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // The first request's header timeout runs from here.
                    activity.ready_at.store(activity.now(), Relaxed);
                    let io = TokioIo::new(Watched {
                        io: tls,
                        activity: activity.clone(),
                    });
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    drive(conn, &activity, &limits, closing, &name, peer).await;
                }
            }
        });
    }
    drop(listener);
    drop(closing_rx);
    let _ = closing.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "connections still open after the drain timeout");
    }
}

/// Polls one connection to its end under the watchdog: the deadlines of [`Activity::step`],
/// and a graceful close when the listener stops.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    limits: &ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    name: &str,
    peer: SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut closing_since = None;
    let mut listening = true;
    loop {
        // Biased: the connection first, and no random draw on each of its wake-ups.
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = closing.changed(), if listening => {
                // The listener stopped (or its loop is gone): finish what is in flight.
                if changed.is_err() || *closing.borrow() {
                    listening = false;
                    if closing_since.is_none() {
                        closing_since = Some(activity.now());
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            () = &mut sleep => match activity.step(limits, closing_since) {
                Step::Wait(ms) => {
                    sleep.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(ms));
                }
                Step::Graceful => {
                    tracing::debug!(listener = %name, %peer, "idle connection closed");
                    closing_since = Some(activity.now());
                    conn.as_mut().graceful_shutdown();
                    sleep.as_mut().reset(tokio::time::Instant::now());
                }
                Step::Close(why) => {
                    tracing::debug!(listener = %name, %peer, why, "connection closed");
                    return;
                }
            },
        }
    }
}
