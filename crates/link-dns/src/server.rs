//! The DNS server: hickory-server moves the packets (UDP and TCP, parsing, malformed input),
//! [`DnsView::answer`] decides what they say. The view is swapped whole when the control
//! plane publishes a new state, before the management call that changed it answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

/// The response codes counted apart, as `dig` names them; any other counts as `other`.
const RCODES: [(ResponseCode, &str); 6] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
];
const SLOTS: usize = RCODES.len() + 1;
/// Rows of counters per view: one per serving thread ([`DnsSockets::bind`] makes at most 8).
const ROWS: usize = 8;

/// One thread's counts of one view, by response code, alone on its cache line: the serving
/// threads never write to the same line, so counting costs one uncontended atomic add.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Row([AtomicU64; SLOTS]);

/// The queries answered from one view.
#[derive(Debug, Default)]
struct ViewCounters([Row; ROWS]);

impl ViewCounters {
    fn add(&self, row: usize, code: ResponseCode) {
        let slot = RCODES
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(RCODES.len());
        self.0[row % ROWS].0[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// Queries answered from one view with one response code, since the server started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCount {
    /// The virtual network's name, or `public`.
    pub view: String,
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, `SERVFAIL`, `FORMERR`, `NOTIMP` or `other`.
    pub rcode: &'static str,
    pub count: u64,
}

/// The view answers come from, with the counters of its networks (by network index) and of
/// the public view, so that a query finds its counters without a lookup by name.
struct Live {
    view: Arc<DnsView>,
    networks: Box<[Arc<ViewCounters>]>,
    public: Arc<ViewCounters>,
}

impl Live {
    fn counters(&self, source: IpAddr) -> &ViewCounters {
        self.view
            .network_of(source)
            .and_then(|n| self.networks.get(n))
            .unwrap_or(&self.public)
    }
}

/// The split-horizon DNS server's state: the current view and where to forward.
pub struct DnsServer {
    config: DnsConfig,
    upstream: Option<SocketAddr>,
    live: ArcSwap<Live>,
    serial: AtomicU32,
    /// The counters of every network view ever served, by name (a network that is deleted
    /// keeps its counts; one that comes back continues them). Locked only by `apply` and
    /// [`DnsServer::query_counts`].
    views: Mutex<BTreeMap<String, Arc<ViewCounters>>>,
    public: Arc<ViewCounters>,
}

impl DnsServer {
    /// A server with an empty plan until the first [`DnsServer::apply`]; `None` when the
    /// DNS suffix is not a valid domain name.
    pub fn new(config: DnsConfig, upstream: Option<SocketAddr>) -> Option<Arc<DnsServer>> {
        let view = DnsView::new(&Plan::default(), &config, 1)?;
        let public = Arc::new(ViewCounters::default());
        Some(Arc::new(DnsServer {
            config,
            upstream,
            live: ArcSwap::from_pointee(Live {
                view: Arc::new(view),
                networks: Box::new([]),
                public: public.clone(),
            }),
            serial: AtomicU32::new(1),
            views: Mutex::new(BTreeMap::new()),
            public,
        }))
    }

    /// Answers from `plan` from now on (a new SOA serial).
    pub fn apply(&self, plan: &Plan) {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        let Some(view) = DnsView::new(plan, &self.config, serial) else {
            return;
        };
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        let networks = view
            .network_names()
            .map(|name| views.entry(name.to_owned()).or_default().clone())
            .collect();
        self.live.store(Arc::new(Live {
            view: Arc::new(view),
            networks,
            public: self.public.clone(),
        }));
    }

    /// The view answers come from now.
    pub fn view(&self) -> Arc<DnsView> {
        self.live.load().view.clone()
    }

    /// Queries answered so far, by view and response code (counts of zero left out; a
    /// network named `public` is counted with the public view).
    pub fn query_counts(&self) -> Vec<QueryCount> {
        let views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sums: BTreeMap<(&str, usize), u64> = BTreeMap::new();
        for (name, counters) in views
            .iter()
            .map(|(n, c)| (n.as_str(), c))
            .chain([("public", &self.public)])
        {
            for row in &counters.0 {
                for (slot, n) in row.0.iter().enumerate() {
                    *sums.entry((name, slot)).or_default() += n.load(Ordering::Relaxed);
                }
            }
        }
        sums.into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((view, slot), count)| QueryCount {
                view: view.to_owned(),
                rcode: RCODES.get(slot).map_or("other", |(_, name)| name),
                count,
            })
            .collect()
    }

    /// Serves DNS on `sockets` until `shutdown` completes.
    ///
    /// One thread per UDP socket, each with a single-threaded runtime that reads every
    /// socket: a query is received, answered and sent on one thread, with no wake-ups across
    /// threads (on two cores those cost more than the answer itself), and whichever thread
    /// is free takes the next query, however the kernel hashed the clients over the sockets.
    /// TCP is served on the first.
    pub async fn serve(self: Arc<Self>, sockets: DnsSockets, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let mut tcp = Some(sockets.tcp);
        let mut threads = Vec::new();
        let all = sockets.udp;
        for i in 0..all.len() {
            // Every thread reads every socket: SO_REUSEPORT hashes each client to one
            // socket, and a few busy clients hashed to the same one would leave the other
            // thread idle.
            let udp: Vec<std::net::UdpSocket> = (0..all.len())
                .map(|k| all[(i + k) % all.len()].try_clone())
                .filter_map(|s| {
                    s.map_err(|e| tracing::error!(error = %e, "DNS: UDP socket"))
                        .ok()
                })
                .collect();
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
                        let mut dns = Server::new(Handler { server, row: i });
                        for udp in udp {
                            match UdpSocket::from_std(udp) {
                                Ok(udp) => dns.register_socket(udp),
                                Err(e) => tracing::error!(error = %e, "DNS: UDP socket"),
                            }
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
/// (`SO_REUSEPORT`, so the kernel spreads clients over them), and a TCP listener on the
/// same port.
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

/// One serving thread's handler: `row` is the thread's row of counters.
struct Handler {
    server: Arc<DnsServer>,
    row: usize,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let info = self.respond(request, response).await;
        // Counted once the response code is known, by the view of the client's address now.
        self.server
            .live
            .load()
            .counters(request.src().ip())
            .add(self.row, info.response_code);
        info
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let server = &self.server;
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
            server.live.load().view.answer(source, &qname, qtype)
        } else {
            Answer::NotOurs
        };
        match answer {
            Answer::Authoritative { code, answers, soa } => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let view = match server.live.load().view.view_of(source) {
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
                    return send_error(&mut response, builder, meta, ResponseCode::Refused).await;
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use link_model::{NetworkPlan, Prefix};

    fn network(name: &str, prefix: &str) -> NetworkPlan {
        NetworkPlan {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/{name}"),
            name: name.into(),
            location: "westus2".into(),
            prefixes: vec![Prefix::parse(prefix).expect("prefix")],
            subnets: vec![],
            peers: vec![],
            peerings: vec![],
            linked_zones: vec![],
        }
    }

    fn count(server: &DnsServer, from: &str, row: usize, code: ResponseCode) {
        let ip: IpAddr = from.parse().expect("ip");
        server.live.load().counters(ip).add(row, code);
    }

    #[test]
    fn queries_are_counted_by_view_and_response_code_across_rows_and_plans() {
        let server = DnsServer::new(
            DnsConfig {
                dns_suffix: "azurehealthcareapis.com".into(),
                public_ip: "127.0.0.1".parse().expect("ip"),
                extra_services: vec![],
            },
            None,
        )
        .expect("server");
        let plan = |nets: Vec<NetworkPlan>| Plan {
            networks: nets,
            ..Plan::default()
        };
        server.apply(&plan(vec![network("hub", "127.10.0.0/16")]));
        count(&server, "127.10.2.5", 0, ResponseCode::NoError);
        count(&server, "127.10.2.5", 1, ResponseCode::NoError);
        count(&server, "127.10.2.5", 9, ResponseCode::NXDomain);
        count(&server, "127.99.0.1", 0, ResponseCode::Refused);
        count(&server, "127.99.0.1", 0, ResponseCode::YXDomain);
        // A new plan keeps hub's counts; a network named `public` adds to the public view.
        server.apply(&plan(vec![
            network("public", "127.20.0.0/16"),
            network("hub", "127.10.0.0/16"),
        ]));
        count(&server, "127.10.2.5", 0, ResponseCode::NoError);
        count(&server, "127.20.0.1", 0, ResponseCode::Refused);
        let counts: Vec<(String, &str, u64)> = server
            .query_counts()
            .into_iter()
            .map(|q| (q.view, q.rcode, q.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("hub".to_owned(), "NOERROR", 3),
                ("hub".to_owned(), "NXDOMAIN", 1),
                ("public".to_owned(), "REFUSED", 2),
                ("public".to_owned(), "other", 1),
            ]
        );
    }
}
