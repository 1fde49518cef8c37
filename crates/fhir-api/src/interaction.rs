//! What a request *is*: the one classification of a FHIR request line (FHIR R4 http.html
//! §3.1.0), parsed once from the method and the path and read by everything that needs to
//! know — routing (`route.rs`), authorization (`authorize.rs`, for requests and bundle entries
//! alike), bundle processing (`bundle.rs`), and, in the binary, the audit record and the
//! metric label ([`classify`]). A new interaction or operation is added here, in one place.
//!
//! Resource types are data (the R4 definitions name 146 of them), so a segment is a type
//! when the definitions say so; ids follow FHIR R4 datatypes.html#id.

use std::borrow::Cow;

use axum::http::{Method, StatusCode};
use fhir_model::{Definitions, IssueCode};

use crate::error::FhirError;

/// The name of an interaction, as audit records, metrics and authorization tables see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    SearchCompartment,
    /// `POST /`: which of the two only the body says.
    BatchTransaction,
    /// `GET /metadata` and SMART's `/.well-known/smart-configuration`.
    Capabilities,
    /// `$name` at the system, type or instance level.
    Operation,
    /// The status URL of an asynchronous job (`/_operations/export/[id]`): poll or cancel.
    JobStatus,
    /// An output file of a finished job (`/_operations/export/[id]/[file]`).
    JobFile,
    /// `POST /auth/token`: the service's OAuth token endpoint (SMART Backend Services), served
    /// by the authentication layer in front, never by the FHIR router.
    Token,
    /// Nothing FHIR defines at this method and path.
    Unknown,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 19] = [
        Kind::Read,
        Kind::Vread,
        Kind::Update,
        Kind::Patch,
        Kind::Delete,
        Kind::HistoryInstance,
        Kind::HistoryType,
        Kind::HistorySystem,
        Kind::Create,
        Kind::SearchType,
        Kind::SearchSystem,
        Kind::SearchCompartment,
        Kind::BatchTransaction,
        Kind::Capabilities,
        Kind::Operation,
        Kind::JobStatus,
        Kind::JobFile,
        Kind::Token,
        Kind::Unknown,
    ];

    /// The code of the interaction (FHIR R4 valueset-type-restful-interaction, with `-` for
    /// its levels), used as the audit `action` and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Vread => "vread",
            Kind::Update => "update",
            Kind::Patch => "patch",
            Kind::Delete => "delete",
            Kind::HistoryInstance => "history-instance",
            Kind::HistoryType => "history-type",
            Kind::HistorySystem => "history-system",
            Kind::Create => "create",
            Kind::SearchType => "search-type",
            Kind::SearchSystem => "search-system",
            Kind::SearchCompartment => "search-compartment",
            Kind::BatchTransaction => "batch/transaction",
            Kind::Capabilities => "capabilities",
            Kind::Operation => "operation",
            Kind::JobStatus => "job-status",
            Kind::JobFile => "job-file",
            Kind::Token => "token",
            Kind::Unknown => "unknown",
        }
    }
}

/// Where an operation is invoked (FHIR R4 operations.html#levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level<'a> {
    System,
    Type(&'a str),
    Instance(&'a str, &'a str),
    /// `[type]/[id]/_history/[vid]/$name`: one version of an instance (FHIR R4
    /// resource-operation-meta: `$meta` of a version).
    Version(&'a str, &'a str, &'a str),
}

/// Where a search or a history is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    System,
    Type(&'a str),
    /// `Patient/123/Observation`: the compartment type and id, and the type searched (a
    /// history has no compartment form).
    Compartment(&'a str, &'a str, &'a str),
    Instance(&'a str, &'a str),
}

/// One FHIR interaction, with the names its path gave it. `HEAD` is read as `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction<'a> {
    /// `GET /metadata`.
    Capabilities,
    /// `GET /.well-known/smart-configuration` (SMART App Launch 2.0 §conformance).
    SmartConfiguration,
    /// `POST /auth/token`: the token endpoint of fhirlink's own issuer for the service (SMART
    /// Backend Services), answered by the authentication layer.
    Token,
    /// `POST /`.
    BatchOrTransaction,
    /// `GET [scope]?…` or `POST [scope]/_search` (`post`: the form body adds parameters).
    /// Never [`Scope::Instance`].
    Search {
        scope: Scope<'a>,
        post: bool,
    },
    /// `GET [scope]/_history`. Never [`Scope::Compartment`].
    History(Scope<'a>),
    Read {
        rtype: &'a str,
        id: &'a str,
    },
    Vread {
        rtype: &'a str,
        id: &'a str,
        vid: &'a str,
    },
    Create {
        rtype: &'a str,
    },
    /// `PUT [type]/[id]`, or with `id: None` the conditional `PUT [type]?…`.
    Update {
        rtype: &'a str,
        id: Option<&'a str>,
    },
    /// `PATCH [type]/[id]`, or conditional `PATCH [type]?…`.
    Patch {
        rtype: &'a str,
        id: Option<&'a str>,
    },
    /// `DELETE [type]/[id]`, or conditional `DELETE [type]?…`.
    Delete {
        rtype: &'a str,
        id: Option<&'a str>,
    },
    /// `$name` at a level. `post`: a Parameters body may come (POST); GET, HEAD and DELETE
    /// (Azure's `$purge-history`) carry their parameters in the query only.
    Operation {
        name: &'a str,
        level: Level<'a>,
        post: bool,
    },
    /// `GET` (poll) or `DELETE` (`cancel`) of `/_operations/export/[id]` or
    /// `/_operations/import/[id]`, the status URL the `$export` or `$import` kick-off names
    /// (Azure's form; Bulk Data IG 2.0.0 §status request).
    JobStatus {
        job: JobKind,
        id: &'a str,
        cancel: bool,
    },
    /// `GET /_operations/{export|import}/[id]/[file]`: an output file of a finished export,
    /// or an error file of a finished import.
    JobFile {
        job: JobKind,
        id: &'a str,
        file: &'a str,
    },
}

/// Which asynchronous bulk job a status URL is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Export,
    Import,
}

impl JobKind {
    fn of(segment: &str) -> JobKind {
        if segment == "import" {
            JobKind::Import
        } else {
            JobKind::Export
        }
    }
}

impl<'a> Interaction<'a> {
    /// The interaction at `method` and the percent-decoded path `segs` (no empty segments),
    /// or why there is none: 404 for a path FHIR does not define, 405 for a method the path
    /// does not take, 400 for a malformed id.
    pub fn parse(
        method: &Method,
        segs: &[&'a str],
        defs: &Definitions,
    ) -> Result<Interaction<'a>, FhirError> {
        use Interaction as I;
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let m = method.as_str();
        let typed = |t: &str| defs.is_resource_type(t);
        let wrong = |what: &str, allow: &'static str| FhirError::method_not_allowed(m, what, allow);
        match segs {
            [] if post => Ok(I::BatchOrTransaction),
            [] if get => Ok(I::Search {
                scope: Scope::System,
                post: false,
            }),
            [] => Err(wrong("the base", "GET, POST")),
            ["metadata"] if get => Ok(I::Capabilities),
            ["metadata"] => Err(wrong("/metadata", "GET")),
            [".well-known", "smart-configuration"] if get => Ok(I::SmartConfiguration),
            [".well-known", "smart-configuration"] => {
                Err(wrong("/.well-known/smart-configuration", "GET"))
            }
            ["auth", "token"] if post => Ok(I::Token),
            ["auth", "token"] => Err(wrong("/auth/token", "POST")),
            ["_search"] if post => Ok(I::Search {
                scope: Scope::System,
                post: true,
            }),
            ["_search"] => Err(wrong("/_search", "POST")),
            ["_history"] if get => Ok(I::History(Scope::System)),
            ["_history"] => Err(wrong("/_history", "GET")),
            ["_operations", kind @ ("export" | "import"), id] => {
                let job = JobKind::of(kind);
                let id = checked_job(id)?;
                match *method {
                    _ if get => Ok(I::JobStatus {
                        job,
                        id,
                        cancel: false,
                    }),
                    Method::DELETE => Ok(I::JobStatus {
                        job,
                        id,
                        cancel: true,
                    }),
                    _ => Err(wrong("a bulk job's status", "GET, DELETE")),
                }
            }
            ["_operations", kind @ ("export" | "import"), id, file] => {
                let job = JobKind::of(kind);
                let id = checked_job(id)?;
                if !valid_file_name(file) {
                    return Err(no_interaction(segs));
                }
                if get {
                    Ok(I::JobFile { job, id, file })
                } else {
                    Err(wrong("a bulk job's file", "GET"))
                }
            }
            [op] if is_operation(op) => operation(method, op, Level::System),
            [t, rest @ ..] if typed(t) => {
                let t = *t;
                match rest {
                    [] => match *method {
                        Method::POST => Ok(I::Create { rtype: t }),
                        Method::PUT => Ok(I::Update { rtype: t, id: None }),
                        Method::PATCH => Ok(I::Patch { rtype: t, id: None }),
                        Method::DELETE => Ok(I::Delete { rtype: t, id: None }),
                        _ if get => Ok(I::Search {
                            scope: Scope::Type(t),
                            post: false,
                        }),
                        _ => Err(wrong(t, "GET, POST, PUT, PATCH, DELETE")),
                    },
                    // Before `[id]`: `_history` and `_search` are no ids.
                    ["_history"] if get => Ok(I::History(Scope::Type(t))),
                    ["_history"] => Err(wrong(&format!("{t}/_history"), "GET")),
                    ["_search"] if post => Ok(I::Search {
                        scope: Scope::Type(t),
                        post: true,
                    }),
                    ["_search"] => Err(wrong(&format!("{t}/_search"), "POST")),
                    [op] if is_operation(op) => operation(method, op, Level::Type(t)),
                    [id] => {
                        let id = checked_id(id)?;
                        match *method {
                            Method::PUT => Ok(I::Update {
                                rtype: t,
                                id: Some(id),
                            }),
                            Method::PATCH => Ok(I::Patch {
                                rtype: t,
                                id: Some(id),
                            }),
                            Method::DELETE => Ok(I::Delete {
                                rtype: t,
                                id: Some(id),
                            }),
                            _ if get => Ok(I::Read { rtype: t, id }),
                            _ => Err(wrong(&format!("{t}/{id}"), "GET, PUT, PATCH, DELETE")),
                        }
                    }
                    [id, "_history"] => {
                        let id = checked_id(id)?;
                        if get {
                            Ok(I::History(Scope::Instance(t, id)))
                        } else {
                            Err(wrong(&format!("{t}/{id}/_history"), "GET"))
                        }
                    }
                    [id, "_history", vid] => {
                        let id = checked_id(id)?;
                        if get {
                            Ok(I::Vread { rtype: t, id, vid })
                        } else {
                            Err(wrong(&format!("{t}/{id}/_history/{vid}"), "GET"))
                        }
                    }
                    [id, op] if is_operation(op) => {
                        let id = checked_id(id)?;
                        operation(method, op, Level::Instance(t, id))
                    }
                    [id, "_history", vid, op] if is_operation(op) => {
                        let id = checked_id(id)?;
                        operation(method, op, Level::Version(t, id, vid))
                    }
                    [id, ct] if typed(ct) => {
                        let id = checked_id(id)?;
                        if get {
                            Ok(I::Search {
                                scope: Scope::Compartment(t, id, ct),
                                post: false,
                            })
                        } else {
                            Err(wrong(&format!("{t}/{id}/{ct}"), "GET"))
                        }
                    }
                    [id, ct, "_search"] if typed(ct) => {
                        let id = checked_id(id)?;
                        if post {
                            Ok(I::Search {
                                scope: Scope::Compartment(t, id, ct),
                                post: true,
                            })
                        } else {
                            Err(wrong(&format!("{t}/{id}/{ct}/_search"), "POST"))
                        }
                    }
                    _ => Err(no_interaction(segs)),
                }
            }
            [t, ..] if t.starts_with(|c: char| c.is_ascii_uppercase()) => {
                Err(FhirError::not_found(format!("Unknown resource type '{t}'")))
            }
            _ => Err(no_interaction(segs)),
        }
    }

    /// Its name.
    pub fn kind(&self) -> Kind {
        use Interaction as I;
        match self {
            I::Capabilities | I::SmartConfiguration => Kind::Capabilities,
            I::BatchOrTransaction => Kind::BatchTransaction,
            I::Search { scope, .. } => match scope {
                Scope::System => Kind::SearchSystem,
                Scope::Type(_) => Kind::SearchType,
                Scope::Compartment(..) | Scope::Instance(..) => Kind::SearchCompartment,
            },
            I::History(scope) => match scope {
                Scope::System => Kind::HistorySystem,
                Scope::Type(_) => Kind::HistoryType,
                Scope::Compartment(..) | Scope::Instance(..) => Kind::HistoryInstance,
            },
            I::Read { .. } => Kind::Read,
            I::Vread { .. } => Kind::Vread,
            I::Create { .. } => Kind::Create,
            I::Update { .. } => Kind::Update,
            I::Patch { .. } => Kind::Patch,
            I::Delete { .. } => Kind::Delete,
            I::Operation { .. } => Kind::Operation,
            I::JobStatus { .. } => Kind::JobStatus,
            I::JobFile { .. } => Kind::JobFile,
            I::Token => Kind::Token,
        }
    }

    /// The resource type and id the path names, for audit records: for a compartment search,
    /// the compartment's.
    pub fn target(&self) -> (Option<&'a str>, Option<&'a str>) {
        use Interaction as I;
        match *self {
            I::Capabilities
            | I::SmartConfiguration
            | I::Token
            | I::BatchOrTransaction
            | I::JobStatus { .. }
            | I::JobFile { .. } => (None, None),
            I::Search { scope, .. } | I::History(scope) => match scope {
                Scope::System => (None, None),
                Scope::Type(t) => (Some(t), None),
                Scope::Compartment(t, id, _) | Scope::Instance(t, id) => (Some(t), Some(id)),
            },
            I::Read { rtype, id } | I::Vread { rtype, id, .. } => (Some(rtype), Some(id)),
            I::Create { rtype } => (Some(rtype), None),
            I::Update { rtype, id } | I::Patch { rtype, id } | I::Delete { rtype, id } => {
                (Some(rtype), id)
            }
            I::Operation { level, .. } => match level {
                Level::System => (None, None),
                Level::Type(t) => (Some(t), None),
                Level::Instance(t, id) | Level::Version(t, id, _) => (Some(t), Some(id)),
            },
        }
    }
}

/// An operation: `GET` or `POST` (FHIR R4 operations.html#request), except those that change
/// data, which a `GET` must not (FHIR R4 operations.html: `affectsState`), and Azure's
/// `$purge-history`, a `DELETE` (or a `POST`).
fn operation<'a>(
    method: &Method,
    op: &'a str,
    level: Level<'a>,
) -> Result<Interaction<'a>, FhirError> {
    let name = &op[1..];
    let refuse = |allow: &'static str| {
        Err(FhirError::method_not_allowed(
            method.as_str(),
            &format!("the operation {op}"),
            allow,
        ))
    };
    match name {
        // AHDS's $import is a POST of a Parameters body only.
        "import" | "meta-add" | "meta-delete" if *method != Method::POST => return refuse("POST"),
        "purge-history" => {
            return match *method {
                Method::DELETE => Ok(Interaction::Operation {
                    name,
                    level,
                    post: false,
                }),
                Method::POST => Ok(Interaction::Operation {
                    name,
                    level,
                    post: true,
                }),
                _ => refuse("DELETE, POST"),
            }
        }
        _ => {}
    }
    if *method == Method::POST || *method == Method::GET || *method == Method::HEAD {
        Ok(Interaction::Operation {
            name,
            level,
            post: *method == Method::POST,
        })
    } else {
        Err(FhirError::method_not_allowed(
            method.as_str(),
            &format!("the operation {op}"),
            "GET, POST",
        ))
    }
}

fn no_interaction(segs: &[&str]) -> FhirError {
    FhirError::not_found(format!("no FHIR interaction at '{}'", segs.join("/")))
}

/// `$name`: a name of at most 64 letters, digits, `-` and `_` (FHIR R4
/// operationdefinition: `code`, as operations are named).
fn is_operation(s: &str) -> bool {
    s.len() > 1
        && s.len() <= 65
        && s.starts_with('$')
        && s[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Logical ids are `[A-Za-z0-9\-\.]{1,64}` (FHIR R4 datatypes.html#id).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A job id: what [`fhir_bulk`] makes (a UUID), checked as an id so that nothing else
/// reaches the job store.
fn checked_job(id: &str) -> Result<&str, FhirError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(FhirError::not_found(format!("no export job '{id}'")))
    }
}

/// An output file's name: `Type-N.ndjson` and the like, letters, digits, `-`, `_` and one
/// `.` before an extension; never a path.
fn valid_file_name(name: &str) -> bool {
    name.len() <= 128
        && name.bytes().filter(|b| *b == b'.').count() == 1
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn checked_id(id: &str) -> Result<&str, FhirError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Value,
            format!("'{id}' is not a valid resource id: 1-64 of A-Z a-z 0-9 - ."),
        ))
    }
}

/// Splits a path into percent-decoded segments, ignoring one leading and one trailing slash.
pub(crate) fn decode_segments(path: &str) -> Result<Vec<Cow<'_, str>>, FhirError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| FhirError::bad_request("the request path is not valid UTF-8"))
        })
        .collect()
}

/// What a request line names, for the audit record and the metric label: the same parse the
/// router makes ([`Interaction::parse`] over the R4 definitions), so that what is recorded is
/// what was served. A request the router would refuse is [`Kind::Unknown`], with the type
/// its path names when that is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    pub kind: Kind,
    pub resource_type: Option<Cow<'a, str>>,
    pub resource_id: Option<Cow<'a, str>>,
}

/// The most segments an interaction's path has (`Patient/1/_history/2/$meta`), plus one.
const MAX_SEGMENTS: usize = 6;

/// Classifies a data-plane request from its method and (undecoded) path; borrows from the
/// path unless a name had to be percent-decoded, and allocates nothing otherwise (it runs
/// for every request, refused ones included).
pub fn classify<'a>(method: &Method, path: &'a str) -> Classified<'a> {
    let unknown = Classified {
        kind: Kind::Unknown,
        resource_type: None,
        resource_id: None,
    };
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut segments: [Cow<'a, str>; MAX_SEGMENTS] = Default::default();
    let mut n = 0;
    if !trimmed.is_empty() {
        for s in trimmed.split('/') {
            let Some(slot) = segments.get_mut(n) else {
                return unknown;
            };
            let Ok(decoded) = percent_encoding::percent_decode_str(s).decode_utf8() else {
                return unknown;
            };
            *slot = decoded;
            n += 1;
        }
    }
    let defs = fhir_model::r4();
    let (kind, named) = {
        let mut segs = [""; MAX_SEGMENTS];
        for (to, from) in segs.iter_mut().zip(&segments[..n]) {
            *to = from.as_ref();
        }
        let segs = &segs[..n];
        match Interaction::parse(method, segs, defs) {
            Ok(i) => {
                let (t, id) = i.target();
                (
                    i.kind(),
                    usize::from(t.is_some()) + usize::from(id.is_some()),
                )
            }
            Err(_) => (
                Kind::Unknown,
                usize::from(segs.first().is_some_and(|t| defs.is_resource_type(t))),
            ),
        }
    };
    // Every interaction names its type first and its id second (`Type/id/…`).
    let mut names = segments.into_iter().take(named);
    Classified {
        kind,
        resource_type: names.next(),
        resource_id: names.next(),
    }
}

/// Whether a request may be served without a token: the CapabilityStatement, SMART's
/// configuration and the token endpoint (FHIR R4 http.html#capabilities; SMART App Launch
/// 2.0 §conformance and Backend Services).
pub fn needs_no_token(method: &Method, path: &str) -> bool {
    // Every request asks this before its token is checked: what cannot be one of the three
    // paths (no escapes, another first segment) is answered without the full parse.
    let could_be = path.contains('%')
        || ["/metadata", "/.well-known/", "/auth/"]
            .iter()
            .any(|p| path.starts_with(p));
    could_be
        && matches!(
            classify(method, path).kind,
            Kind::Capabilities | Kind::Token
        )
}

/// Whether a request is for the token endpoint (`POST /auth/token`).
pub fn is_token_request(method: &Method, path: &str) -> bool {
    path.starts_with("/auth/") && classify(method, path).kind == Kind::Token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Result<Kind, StatusCode> {
        let segs = decode_segments(path).map_err(|e| e.status)?;
        let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
        Interaction::parse(&method, &segs, fhir_model::r4())
            .map(|i| i.kind())
            .map_err(|e| e.status)
    }

    #[test]
    fn every_interaction_of_r4_http_is_named() {
        use Kind as K;
        let cases: &[(Method, &str, Result<Kind, StatusCode>)] = &[
            (Method::GET, "/metadata", Ok(K::Capabilities)),
            (Method::HEAD, "/metadata", Ok(K::Capabilities)),
            (
                Method::GET,
                "/.well-known/smart-configuration",
                Ok(K::Capabilities),
            ),
            (Method::POST, "/auth/token", Ok(K::Token)),
            (
                Method::GET,
                "/auth/token",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (Method::POST, "/", Ok(K::BatchTransaction)),
            (Method::GET, "/", Ok(K::SearchSystem)),
            (Method::POST, "/_search", Ok(K::SearchSystem)),
            (Method::GET, "/_history", Ok(K::HistorySystem)),
            (Method::POST, "/Patient", Ok(K::Create)),
            (Method::GET, "/Patient", Ok(K::SearchType)),
            (Method::GET, "/Patient/", Ok(K::SearchType)),
            (Method::POST, "/Patient/_search", Ok(K::SearchType)),
            (Method::PUT, "/Patient", Ok(K::Update)),
            (Method::PATCH, "/Patient", Ok(K::Patch)),
            (Method::DELETE, "/Patient", Ok(K::Delete)),
            (Method::GET, "/Patient/_history", Ok(K::HistoryType)),
            (Method::GET, "/Patient/p1", Ok(K::Read)),
            (Method::HEAD, "/Patient/p1", Ok(K::Read)),
            (Method::PUT, "/Patient/p1", Ok(K::Update)),
            (Method::PATCH, "/Patient/p1", Ok(K::Patch)),
            (Method::DELETE, "/Patient/p1", Ok(K::Delete)),
            (Method::GET, "/Patient/p1/_history", Ok(K::HistoryInstance)),
            (Method::GET, "/Patient/p1/_history/2", Ok(K::Vread)),
            (
                Method::GET,
                "/Patient/p1/Observation",
                Ok(K::SearchCompartment),
            ),
            (
                Method::POST,
                "/Patient/p1/Observation/_search",
                Ok(K::SearchCompartment),
            ),
            (Method::GET, "/$export", Ok(K::Operation)),
            (Method::POST, "/Patient/$validate", Ok(K::Operation)),
            (Method::GET, "/Patient/p1/$everything", Ok(K::Operation)),
            (Method::GET, "/Patient/p1/$meta", Ok(K::Operation)),
            (
                Method::GET,
                "/Patient/p1/_history/2/$meta",
                Ok(K::Operation),
            ),
            (Method::POST, "/Patient/p1/$meta-add", Ok(K::Operation)),
            (
                Method::GET,
                "/Patient/p1/$meta-add",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::GET,
                "/Patient/p1/$meta-delete",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::DELETE,
                "/Patient/p1/$purge-history",
                Ok(K::Operation),
            ),
            (Method::POST, "/Patient/p1/$purge-history", Ok(K::Operation)),
            (
                Method::GET,
                "/Patient/p1/$purge-history",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::GET,
                "/Patient/p1/_history/2/$meta/x",
                Err(StatusCode::NOT_FOUND),
            ),
            (Method::GET, "/_operations/export/j-1", Ok(K::JobStatus)),
            (Method::HEAD, "/_operations/export/j-1", Ok(K::JobStatus)),
            (Method::DELETE, "/_operations/export/j-1", Ok(K::JobStatus)),
            (
                Method::GET,
                "/_operations/export/j-1/Patient-1.ndjson",
                Ok(K::JobFile),
            ),
            (
                Method::POST,
                "/_operations/export/j-1",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::DELETE,
                "/_operations/export/j-1/Patient-1.ndjson",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::GET,
                "/_operations/export/j-1/..",
                Err(StatusCode::NOT_FOUND),
            ),
            (
                Method::GET,
                "/_operations/export/j-1/a%2F..%2Fb.ndjson",
                Err(StatusCode::NOT_FOUND),
            ),
            (
                Method::GET,
                "/_operations/export/bad%20job",
                Err(StatusCode::NOT_FOUND),
            ),
            (Method::GET, "/_operations/import/j-1", Ok(K::JobStatus)),
            (Method::DELETE, "/_operations/import/j-1", Ok(K::JobStatus)),
            (
                Method::GET,
                "/_operations/import/j-1/Errors-1.ndjson",
                Ok(K::JobFile),
            ),
            (Method::POST, "/$import", Ok(K::Operation)),
            (Method::GET, "/$import", Err(StatusCode::METHOD_NOT_ALLOWED)),
            (
                Method::GET,
                "/_operations/reindex/j-1",
                Err(StatusCode::NOT_FOUND),
            ),
            (
                Method::POST,
                "/Patient/p1",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::DELETE,
                "/metadata",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::PUT,
                "/Patient/$validate",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (
                Method::GET,
                "/Patient/_search",
                Err(StatusCode::METHOD_NOT_ALLOWED),
            ),
            (Method::GET, "/Banana/1", Err(StatusCode::NOT_FOUND)),
            (
                Method::GET,
                "/Patient/p1/Banana",
                Err(StatusCode::NOT_FOUND),
            ),
            (
                Method::GET,
                "/Patient/p1/_history/2/x",
                Err(StatusCode::NOT_FOUND),
            ),
            (
                Method::GET,
                "/Patient/bad%20id",
                Err(StatusCode::BAD_REQUEST),
            ),
            (Method::GET, "/Patient/%FF", Err(StatusCode::BAD_REQUEST)),
        ];
        for (method, path, want) in cases {
            assert_eq!(&parse(method.clone(), path), want, "{method} {path}");
        }
    }

    #[test]
    fn only_the_capabilities_need_no_token() {
        for (m, p, want) in [
            (Method::GET, "/metadata", true),
            (Method::HEAD, "/metadata/", true),
            (Method::GET, "/%6Detadata", true),
            (Method::GET, "/.well-known/smart-configuration", true),
            (Method::POST, "/metadata", false),
            (Method::GET, "/metadata/x", false),
            (Method::GET, "/Patient", false),
            (Method::GET, "/.well-known/other", false),
        ] {
            assert_eq!(needs_no_token(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn classify_names_the_target_and_unknown_paths_keep_their_type() {
        let c = classify(&Method::GET, "/Patient/p1/Observation");
        assert_eq!(c.kind, Kind::SearchCompartment);
        assert_eq!(c.resource_type.as_deref(), Some("Patient"));
        assert_eq!(c.resource_id.as_deref(), Some("p1"));
        let c = classify(&Method::POST, "/Patient/p1");
        assert_eq!(c.kind, Kind::Unknown);
        assert_eq!(c.resource_type.as_deref(), Some("Patient"));
        assert_eq!(classify(&Method::GET, "/a/b/c/d/e/f/g").kind, Kind::Unknown);
        let c = classify(&Method::GET, "/Patient/p1/_history/3/$meta");
        assert_eq!(c.kind, Kind::Operation);
        assert_eq!(c.resource_type.as_deref(), Some("Patient"));
        assert_eq!(c.resource_id.as_deref(), Some("p1"));
        let c = classify(&Method::DELETE, "/Observation/o1/$purge-history");
        assert_eq!(c.kind, Kind::Operation);
        assert_eq!(c.resource_id.as_deref(), Some("o1"));
    }
}
