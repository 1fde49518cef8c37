//! The DNS server: hickory-server moves the packets (UDP and TCP, parsing, malformed input),
//! [`DnsView::answer`] decides what they say. The view is swapped whole when the control
//! plane publishes a new state, before the management call that changed it answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use hickory_server::Server;
use link_model::Plan;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::answer::{Answer, DnsConfig, DnsView, ViewName};

/// How long a TCP client may stay idle between queries.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// The UDP payload size we offer with EDNS (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Counters of answered questions, by outcome.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    pub forwarded: AtomicU64,
    pub failed: AtomicU64,
}

/// The split-horizon DNS server's state: the current view and where to forward.
pub struct DnsServer {
    config: DnsConfig,
    upstream: Option<SocketAddr>,
    view: ArcSwap<DnsView>,
    serial: AtomicU32,
    counters: DnsCounters,
}

impl DnsServer {
    /// A server with an empty plan until the first [`DnsServer::apply`]; `None` when the
    /// DNS suffix is not a valid domain name.
    pub fn new(config: DnsConfig, upstream: Option<SocketAddr>) -> Option<Arc<DnsServer>> {
        let view = DnsView::new(&Plan::default(), &config, 1)?;
        Some(Arc::new(DnsServer {
            config,
            upstream,
            view: ArcSwap::from_pointee(view),
            serial: AtomicU32::new(1),
            counters: DnsCounters::default(),
        }))
    }

    /// Answers from `plan` from now on (a new SOA serial).
    pub fn apply(&self, plan: &Plan) {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        if let Some(view) = DnsView::new(plan, &self.config, serial) {
            self.view.store(Arc::new(view));
        }
    }

    /// The view answers come from now.
    pub fn view(&self) -> Arc<DnsView> {
        self.view.load_full()
    }

    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Serves DNS on `sockets` until `shutdown` completes.
    ///
    /// Each UDP socket gets a thread of its own with a single-threaded runtime: a query is
    /// received, answered and sent on one thread, with no wake-ups across threads (on two
    /// cores those cost more than the answer itself). TCP is served on the first.
    pub async fn serve(self: Arc<Self>, sockets: DnsSockets, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let mut tcp = Some(sockets.tcp);
        let mut threads = Vec::new();
        for (i, udp) in sockets.udp.into_iter().enumerate() {
            let server = self.clone();
            let tcp = tcp.take();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fhirlink-dns-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "DNS: no runtime for a UDP socket");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let mut dns = Server::new(Handler(server));
                        match UdpSocket::from_std(udp) {
                            Ok(udp) => dns.register_socket(udp),
                            Err(e) => tracing::error!(error = %e, "DNS: UDP socket"),
                        }
                        if let Some(tcp) = tcp {
                            match TcpListener::from_std(tcp) {
                                Ok(tcp) => dns.register_listener(tcp, TCP_TIMEOUT, 64),
                                Err(e) => tracing::error!(error = %e, "DNS: TCP listener"),
                            }
                        }
                        let _ = stopped.wait_for(|s| *s).await;
                        if let Err(e) = dns.shutdown_gracefully().await {
                            tracing::warn!(error = %e, "DNS server stopped with an error");
                        }
                    });
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, "DNS: cannot start a thread"),
            }
        }
        shutdown.await;
        let _ = stop.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Asks the upstream server the same question (the client's raw query, its id kept).
    async fn forward(&self, upstream: SocketAddr, query: &[u8]) -> Option<Message> {
        let bind: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind).await.ok()?;
        socket.connect(upstream).await.ok()?;
        socket.send(query).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf[..n]).ok()
    }
}

/// The DNS server's sockets: one UDP socket per core on the same address
/// (`SO_REUSEPORT`, so the kernel spreads clients over them and each has its own receive
/// loop), and a TCP listener on the same port.
pub struct DnsSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
    addr: SocketAddr,
}

impl DnsSockets {
    /// Binds `addr` for UDP and TCP; with port 0, one free port for both.
    pub fn bind(addr: SocketAddr) -> std::io::Result<DnsSockets> {
        let loops = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let mut last = None;
        for _ in 0..16 {
            let first = udp_socket(addr)?;
            let bound = first.local_addr()?;
            let mut udp = vec![first];
            for _ in 1..loops {
                udp.push(udp_socket(bound)?);
            }
            match tcp_listener(bound) {
                Ok(tcp) => {
                    return Ok(DnsSockets {
                        udp,
                        tcp,
                        addr: bound,
                    })
                }
                // Port 0: the UDP port may be taken for TCP; try another.
                Err(e) if addr.port() == 0 => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    /// The address DNS is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

struct Handler(Arc<DnsServer>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let server = &self.0;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e
        });
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let meta = &request.metadata;
        if meta.message_type != MessageType::Query || meta.op_code != OpCode::Query {
            return send_error(&mut response, builder, meta, ResponseCode::NotImp).await;
        }
        let Ok(info) = request.request_info() else {
            return send_error(&mut response, builder, meta, ResponseCode::FormErr).await;
        };
        let source = info.src.ip();
        let qname = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let answer = if info.query.query_class() == DNSClass::IN {
            server.view.load().answer(source, &qname, qtype)
        } else {
            Answer::NotOurs
        };
        match answer {
            Answer::Authoritative { code, answers, soa } => {
                let counter = if code == ResponseCode::NXDomain {
                    &server.counters.nxdomain
                } else {
                    &server.counters.answered
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let view = match server.view.load().view_of(source) {
                        ViewName::Network(n) => n,
                        ViewName::Public => "public".into(),
                    };
                    tracing::debug!(%source, %qname, %qtype, %view, code = %code, "DNS answer");
                }
                let mut m = Metadata::response_from_request(meta);
                m.authoritative = true;
                m.response_code = code;
                let resp = builder.build(m, answers.iter(), [].iter(), soa.iter(), [].iter());
                send(&mut response, resp, meta).await
            }
            Answer::NotOurs => {
                let Some(upstream) = server.upstream else {
                    server.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return send_error(&mut response, builder, meta, ResponseCode::Refused).await;
                };
                server.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                match server.forward(upstream, request.as_slice()).await {
                    Some(reply) if reply.metadata.id == meta.id => {
                        let mut m = Metadata::response_from_request(meta);
                        m.response_code = reply.metadata.response_code;
                        m.recursion_available = reply.metadata.recursion_available;
                        m.authoritative = reply.metadata.authoritative;
                        let resp = builder.build(
                            m,
                            reply.answers.iter(),
                            reply.authorities.iter(),
                            [].iter(),
                            reply.additionals.iter(),
                        );
                        send(&mut response, resp, meta).await
                    }
                    _ => {
                        server.counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%upstream, %qname, "DNS upstream did not answer");
                        send_error(&mut response, builder, meta, ResponseCode::ServFail).await
                    }
                }
            }
        }
    }
}

async fn send_error<R: ResponseHandler>(
    response: &mut R,
    builder: MessageResponseBuilder<'_>,
    meta: &Metadata,
    code: ResponseCode,
) -> ResponseInfo {
    send(response, builder.error_msg(meta, code), meta).await
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "DNS response not sent");
            let mut m = Metadata::response_from_request(request);
            m.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata: m,
                counts: Default::default(),
            }
            .into()
        }
    }
}
