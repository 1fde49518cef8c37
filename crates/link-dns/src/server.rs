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
use tokio::net::{TcpListener, UdpSocket};

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

    /// Serves DNS on `udp` and `tcp` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        udp: UdpSocket,
        tcp: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut server = Server::new(Handler(self));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        shutdown.await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "DNS server stopped with an error");
        }
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
