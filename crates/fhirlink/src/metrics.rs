//! Metrics in the Prometheus text format (exposition format 0.0.4), served at `GET /metrics`
//! on the management listener to principals that may read metrics at the root scope
//! (`Microsoft.Insights/metrics/read`).
//!
//! Series:
//!
//! - `fhirlink_http_requests_total{service,interaction,status,path}`: requests answered on
//!   both planes. `interaction` is the FHIR interaction, or on the management plane the ARM
//!   action; `path` the network path (`public`, the private endpoint's name, `management`).
//! - `fhirlink_access_denials_total{service,reason}`: refused requests; `reason` is the
//!   gateway's verdict (`public-access-disabled`, `security-rule`, …), or `unauthenticated`
//!   (401) and `forbidden` (403) from the layers behind it and on the management plane.
//! - `fhirlink_http_request_duration_seconds{service,interaction}`: a histogram, until the
//!   response head was ready.
//! - `fhirlink_dns_queries_total{view,rcode}`: DNS queries by the view they were answered
//!   from (a virtual network's name, or `public`) and response code.
//! - `fhirlink_audit_dropped_total`, `fhirlink_audit_write_errors_total`.
//!
//! Hand-rolled rather than the `metrics` crate: every label here is known before the request
//! (services and endpoint names come from the plan as small integer ids, interactions and
//! reasons are `Copy` values), so a request costs one uncontended lock of its thread's shard
//! and a few hash-map increments on integer keys, with no allocation. The `metrics` facade
//! would build and hash a key of owned label strings on every call, and its Prometheus
//! exporter keeps histogram samples until an upkeep task drains them. Label values that come
//! from input (Host, ARM paths) are mapped to `unknown` unless the plan or fhirlink's own
//! type list knows them, so no client can grow the series without bound.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use link_dns::DnsServer;

use fhir_api::interaction::Kind as Interaction;

use crate::shard::{thread_shard, SHARDS};

/// Bucket bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a request is counted as (the interaction label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum InteractionLabel {
    Fhir(Interaction),
    /// The ARM action `link_model` decided (one of `link_model::actions()`, so a fixed set).
    Arm(&'static str),
}

impl InteractionLabel {
    pub(crate) fn label(self) -> String {
        match self {
            InteractionLabel::Fhir(i) => i.as_str().to_owned(),
            InteractionLabel::Arm(action) => action.to_owned(),
        }
    }
}

/// One request, labelled: `service` and `path` are ids of [`Labels`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) service: u32,
    pub(crate) path: u32,
    pub(crate) kind: InteractionLabel,
    pub(crate) status: u16,
    pub(crate) denial: Option<&'static str>,
    pub(crate) duration: Duration,
}

/// Label strings by id: grow-only, so that an id never changes meaning.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Labels {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map_or("unknown", String::as_str)
    }
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last is above every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: Duration,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.partition_point(|b| *b < secs);
        self.counts[i] += 1;
        self.sum += d;
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.sum += o.sum;
    }
}

#[derive(Debug, Default)]
struct Table {
    requests: HashMap<(u32, InteractionLabel, u16, u32), u64>,
    denials: HashMap<(u32, &'static str), u64>,
    durations: HashMap<(u32, InteractionLabel), Histogram>,
}

/// Cache-line aligned, so that two threads' shards never share a line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(Mutex<Table>);

/// The request metrics of both planes.
#[derive(Debug)]
pub(crate) struct Metrics {
    shards: Box<[Shard]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl Metrics {
    pub(crate) fn record(&self, s: &Sample) {
        let shard = &self.shards[thread_shard() % self.shards.len()];
        let mut t = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t.requests
            .entry((s.service, s.kind, s.status, s.path))
            .or_default() += 1;
        if let Some(reason) = s.denial {
            *t.denials.entry((s.service, reason)).or_default() += 1;
        }
        t.durations
            .entry((s.service, s.kind))
            .or_default()
            .observe(s.duration);
    }

    /// Every shard's counts, added up.
    fn totals(&self) -> Table {
        let mut all = Table::default();
        for shard in self.shards.iter() {
            let t = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            for (k, v) in &t.requests {
                *all.requests.entry(*k).or_default() += v;
            }
            for (k, v) in &t.denials {
                *all.denials.entry(*k).or_default() += v;
            }
            for (k, h) in &t.durations {
                all.durations.entry(*k).or_default().merge(h);
            }
        }
        all
    }

    /// The exposition text: these metrics, the DNS server's counts and the audit log's.
    pub(crate) fn render(
        &self,
        labels: &Labels,
        dns: &DnsServer,
        audit_dropped: u64,
        audit_errors: u64,
    ) -> String {
        let t = self.totals();
        let mut out = String::with_capacity(16 * 1024);
        let name = |id| escape(labels.name(id));

        let requests: BTreeMap<_, _> = t
            .requests
            .iter()
            .map(|((svc, kind, status, path), n)| {
                (
                    (name(*svc), escape(&kind.label()), *status, name(*path)),
                    *n,
                )
            })
            .collect();
        head(
            &mut out,
            "fhirlink_http_requests_total",
            "counter",
            "Requests answered, by FHIR service, interaction, status and network path.",
        );
        for ((svc, kind, status, path), n) in requests {
            let _ = writeln!(
                out,
                "fhirlink_http_requests_total{{service=\"{svc}\",interaction=\"{kind}\",status=\"{status}\",path=\"{path}\"}} {n}"
            );
        }

        let denials: BTreeMap<_, _> = t
            .denials
            .iter()
            .map(|((svc, reason), n)| ((name(*svc), escape(reason)), *n))
            .collect();
        head(
            &mut out,
            "fhirlink_access_denials_total",
            "counter",
            "Requests refused, by FHIR service and reason.",
        );
        for ((svc, reason), n) in denials {
            let _ = writeln!(
                out,
                "fhirlink_access_denials_total{{service=\"{svc}\",reason=\"{reason}\"}} {n}"
            );
        }

        let durations: BTreeMap<_, _> = t
            .durations
            .iter()
            .map(|((svc, kind), h)| ((name(*svc), escape(&kind.label())), h))
            .collect();
        let metric = "fhirlink_http_request_duration_seconds";
        head(
            &mut out,
            metric,
            "histogram",
            "Time until the response head was ready, by FHIR service and interaction.",
        );
        for ((svc, kind), h) in durations {
            let labels = format!("service=\"{svc}\",interaction=\"{kind}\"");
            let mut cumulative = 0;
            for (i, n) in h.counts.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{metric}_sum{{{labels}}} {}", h.sum.as_secs_f64());
            let _ = writeln!(out, "{metric}_count{{{labels}}} {cumulative}");
        }

        head(
            &mut out,
            "fhirlink_dns_queries_total",
            "counter",
            "DNS queries, by the view that answered them and response code.",
        );
        for q in dns.query_counts() {
            let _ = writeln!(
                out,
                "fhirlink_dns_queries_total{{view=\"{}\",rcode=\"{}\"}} {}",
                escape(&q.view),
                q.rcode,
                q.count
            );
        }

        head(
            &mut out,
            "fhirlink_audit_dropped_total",
            "counter",
            "Audit records dropped: the writer's queue was full, or a write to a file failed (a full disk); one per file not written.",
        );
        let _ = writeln!(out, "fhirlink_audit_dropped_total {audit_dropped}");
        head(
            &mut out,
            "fhirlink_audit_write_errors_total",
            "counter",
            "Writes to an audit file that failed (their records are in fhirlink_audit_dropped_total).",
        );
        let _ = writeln!(out, "fhirlink_audit_write_errors_total {audit_errors}");
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format quotes it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_their_upper_bound() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[BUCKETS.len()], 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn shards_add_up() {
        let m = Metrics::default();
        let s = Sample {
            service: 0,
            path: 1,
            kind: InteractionLabel::Fhir(Interaction::Read),
            status: 200,
            denial: None,
            duration: Duration::from_millis(1),
        };
        m.record(&s);
        std::thread::scope(|scope| {
            scope.spawn(|| m.record(&s));
        });
        let t = m.totals();
        assert_eq!(t.requests.get(&(0, s.kind, 200, 1)), Some(&2));
        assert_eq!(t.durations.get(&(0, s.kind)).map(|h| h.counts[1]), Some(2));
    }
}
