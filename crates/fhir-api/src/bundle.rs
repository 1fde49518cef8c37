//! batch and transaction Bundles posted to the base (FHIR R4 http.html#transaction).
//!
//! Every entry is parsed as the [`Interaction`] its method and url name, with the one parser
//! requests use, and authorized with the same [`permit`] a request alone gets. Reads
//! (`GET`/`HEAD` of an instance or a version) run in the store transaction; the other entries
//! that only read — searches at the system, type and compartment levels, histories,
//! `/metadata`, and reads with parameters or conditional headers — are served by the request
//! pipeline itself (`route::serve`) and their response becomes the entry's (a searchset or
//! history Bundle as its resource).
//!
//! A transaction is one store transaction: every entry is checked before anything is
//! written, entries run in the spec's order (DELETE, POST, PUT/PATCH, GET), `urn:uuid:`
//! fullUrls become server ids in every Reference, and the first failing entry rolls
//! everything back and is named in the OperationOutcome. Searches and histories of a
//! transaction are authorized before anything is written and run once its writes are
//! committed, so that they see them; what the pipeline refuses in their request (a bad
//! search parameter: a 4xx other than 404 and 410) is found by serving them once before
//! anything is written, and fails the transaction. A store failure after the commit can no
//! longer undo the writes and is reported in that entry. A batch runs each entry on its own.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use fhir_model::IssueCode;
use fhir_store::{format_instant, Prepared, StoredResource, WriteTx};
use serde_json::{json, Map, Value};

use crate::access::{Op, Reach};
use crate::authorize::{permit, stored_in_compartment, written_in_compartment, Permit};
use crate::error::FhirError;
use crate::interaction::{decode_segments, Interaction};
use crate::negotiate::request_body_kind;
use crate::patch::Patch;
use crate::read::parse_etag;
use crate::request::{read_body, Ctx, Return};
use crate::respond;
use crate::route::{self, Call};
use crate::search;
use crate::write::{self, check_resource};

/// What one entry asks for.
enum Action {
    Create {
        rtype: String,
    },
    Update {
        rtype: String,
        id: String,
    },
    Patch {
        rtype: String,
        id: String,
    },
    Delete {
        rtype: String,
        id: String,
    },
    Read {
        rtype: String,
        id: String,
        version: Option<u64>,
    },
    /// Any other entry that only reads: served by the request pipeline as the request
    /// `method url` alone would be, with the entry's conditional headers.
    Get {
        method: axum::http::Method,
        url: String,
        headers: Vec<(axum::http::HeaderName, String)>,
    },
}

impl Action {
    /// The spec's processing order (FHIR R4 http.html#trules).
    fn order(&self) -> u8 {
        match self {
            Action::Delete { .. } => 0,
            Action::Create { .. } => 1,
            Action::Update { .. } | Action::Patch { .. } => 2,
            Action::Read { .. } | Action::Get { .. } => 3,
        }
    }
}

struct Entry {
    index: usize,
    method: String,
    url: String,
    full_url: Option<String>,
    action: Action,
    resource: Option<Value>,
    if_match: Option<u64>,
    /// The id a create will get, chosen before any entry runs so references can point at it.
    new_id: Option<String>,
    /// The search of a conditional update or delete (`PUT Patient?identifier=…`).
    criteria: Option<String>,
    /// `request.ifNoneExist` of a create.
    if_none_exist: Option<String>,
    /// The resource a conditional create found: the entry writes nothing and answers 200.
    existing: Option<StoredResource>,
    /// The checked resource of a create or update with its index extracted, under the id it
    /// will be written with.
    prepared: Option<(String, Prepared)>,
    /// What the caller's access still requires of this entry (decided when it was parsed).
    permit: Permit,
    /// `HEAD`: the response entry carries no resource.
    head: bool,
}

fn forbidden(msg: String) -> FhirError {
    FhirError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, msg)
}

/// The patient whose compartment bounds this entry's instance checks, if its permit says so.
fn patient_of(e: &Entry) -> Option<&str> {
    match &e.permit {
        Permit::Compartment { patient, .. } => Some(patient),
        _ => None,
    }
}

/// What an entry produced, to be written into the response Bundle.
enum Outcome {
    Written {
        status: StatusCode,
        stored: StoredResource,
    },
    Deleted(Option<StoredResource>),
    /// A read; `true` for `HEAD` (no resource in the entry).
    Read(StoredResource, bool),
    /// An entry served by the request pipeline: its response entry, already built.
    Served(Value),
}

pub(crate) async fn batch_or_transaction(
    ctx: &Ctx,
    call: &Call,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    request_body_kind(&ctx.headers, false)?;
    let bytes = read_body(body, limit).await?;
    let mut doc = ctx.parse_json(&bytes)?;
    if doc.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::bad_request(
            "only a Bundle of type batch or transaction may be posted to the base",
        )
        .at("resourceType"));
    }
    let kind = doc
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != "batch" && kind != "transaction" {
        return Err(FhirError::bad_request(format!(
            "a Bundle posted to the base must be of type batch or transaction, not '{kind}'"
        ))
        .at("Bundle.type"));
    }
    let raw_entries = match doc.get_mut("entry").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                "Bundle.entry must be an array",
            )
            .at("Bundle.entry"))
        }
    };
    let max = ctx.state.inner.config.max_bundle_entries;
    if raw_entries.len() > max {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooLong,
            format!(
                "the Bundle has {} entries; at most {max} are accepted",
                raw_entries.len()
            ),
        )
        .at("Bundle.entry"));
    }
    if kind == "transaction" {
        transaction(ctx, call, raw_entries).await
    } else {
        batch(ctx, call, raw_entries).await
    }
}

async fn transaction(ctx: &Ctx, call: &Call, raw: Vec<Value>) -> Result<Response, FhirError> {
    let defs = ctx.state.inner.defs;
    let mut entries = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        entries.push(parse_entry(ctx, i, e).map_err(|err| at_entry(err, i))?);
    }
    refuse_before_writes(ctx, call, &entries).await?;

    // Conditional entries and references are decided first, in the transaction that will
    // write them. Without any, everything up to the writes (ids, references, validation,
    // index extraction) happens before the writer is taken, so that concurrent transactions
    // do that work side by side instead of one after another.
    let conditional = entries.iter().any(|e| {
        e.criteria.is_some()
            || e.if_none_exist.is_some()
            || e.resource.as_ref().is_some_and(|r| {
                let mut refs = Vec::new();
                conditional_references(r, &mut refs);
                !refs.is_empty()
            })
    });
    let mut tx = if conditional {
        let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
        for e in &mut entries {
            if e.criteria.is_some() || e.if_none_exist.is_some() {
                let prefix = format!("{} ({} {})", entry_path(e.index), e.method, e.url);
                resolve_conditional(ctx, tx.as_mut(), e)
                    .await
                    .map_err(|err| name_entry(err, e.index, &prefix))?;
            }
        }
        Some(tx)
    } else {
        None
    };

    // Ids first, so that every entry can refer to any other (FHIR R4 http.html#trules).
    let mut ids: HashMap<String, String> = HashMap::new();
    for e in &mut entries {
        let target = match &e.action {
            Action::Create { rtype } => {
                let id = e.new_id.clone().unwrap_or_else(write::new_id);
                let t = format!("{rtype}/{id}");
                e.new_id = Some(id);
                t
            }
            Action::Update { rtype, id } => format!("{rtype}/{id}"),
            _ => continue,
        };
        if let Some(full) = &e.full_url {
            if ids.insert(full.clone(), target).is_some() {
                return Err(FhirError::bad_request(format!(
                    "fullUrl '{full}' appears on more than one entry"
                ))
                .at(format!("{}.fullUrl", entry_path(e.index))));
            }
        }
    }
    if let Some(tx) = tx.as_mut() {
        resolve_references(ctx, tx.as_mut(), &entries, &mut ids).await?;
    }
    for e in &mut entries {
        if let Some(r) = &mut e.resource {
            rewrite_references(r, &ids, &ctx.base)
                .map_err(|err| err.within(&format!("{}.resource", entry_path(e.index)), None))?;
        }
        check_entry_resource(defs, e)?;
        prepare_entry(e, &ctx.base);
    }

    // FHIR R4 http.html#trules: the identities written by steps 1-3 may not overlap.
    let mut touched: HashMap<(String, String), usize> = HashMap::new();
    for e in &entries {
        let key = match &e.action {
            Action::Update { rtype, id }
            | Action::Patch { rtype, id }
            | Action::Delete { rtype, id }
                if !id.is_empty() =>
            {
                (rtype.clone(), id.clone())
            }
            _ => continue,
        };
        if let Some(first) = touched.insert(key.clone(), e.index) {
            return Err(FhirError::bad_request(format!(
                "{}/{} is changed by entry {first} and again by entry {}; a transaction may change a resource once",
                key.0, key.1, e.index
            ))
            .at(entry_path(e.index)));
        }
    }

    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].action.order(), i));
    let mut tx = match tx {
        Some(tx) => tx,
        None => ctx.state.inner.store.begin(&ctx.service).await?,
    };

    let mut outcomes: Vec<Option<Outcome>> = (0..entries.len()).map(|_| None).collect();
    let mut served = Vec::new();
    for i in order {
        let e = &mut entries[i];
        if let Action::Get { .. } = e.action {
            // After the commit, so that it sees the transaction's writes.
            served.push(i);
            continue;
        }
        match run_entry(ctx, tx.as_mut(), e).await {
            Ok(o) => outcomes[i] = Some(o),
            Err(err) => {
                // Dropping `tx` rolls back everything this transaction wrote.
                let prefix = format!("{} ({} {})", entry_path(e.index), e.method, e.url);
                return Err(name_entry(err, e.index, &prefix));
            }
        }
    }
    tx.commit().await?;
    for i in served {
        outcomes[i] = Some(Outcome::Served(serve_entry(ctx, call, &entries[i]).await));
    }
    let entries_json = outcomes
        .into_iter()
        .map(|o| response_entry(ctx, o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond::json(
        ctx,
        StatusCode::OK,
        &response_bundle("transaction-response", entries_json),
    ))
}

async fn batch(ctx: &Ctx, call: &Call, raw: Vec<Value>) -> Result<Response, FhirError> {
    let defs = ctx.state.inner.defs;
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let result = async {
            let mut entry = parse_entry(ctx, i, e).map_err(|err| at_entry(err, i))?;
            if let Action::Get { .. } = entry.action {
                let served = serve_entry(ctx, call, &entry).await;
                return Ok::<_, FhirError>((entry, Outcome::Served(served)));
            }
            let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
            resolve_conditional(ctx, tx.as_mut(), &mut entry).await?;
            if let Action::Create { .. } = entry.action {
                if entry.new_id.is_none() {
                    entry.new_id = Some(write::new_id());
                }
            }
            let mut ids = HashMap::new();
            resolve_references(ctx, tx.as_mut(), std::slice::from_ref(&entry), &mut ids).await?;
            if let Some(r) = &mut entry.resource {
                rewrite_references(r, &ids, &ctx.base)?;
            }
            check_entry_resource(defs, &entry)?;
            prepare_entry(&mut entry, &ctx.base);
            let o = run_entry(ctx, tx.as_mut(), &mut entry).await?;
            tx.commit().await?;
            Ok::<_, FhirError>((entry, o))
        }
        .await;
        out.push(match result {
            Ok((_, o)) => response_entry(ctx, Some(o))?,
            Err(err) => failed_entry(&err),
        });
    }
    Ok(respond::json(
        ctx,
        StatusCode::OK,
        &response_bundle("batch-response", out),
    ))
}

fn entry_path(i: usize) -> String {
    format!("Bundle.entry[{i}]")
}

/// Names the entry on issues that do not name a more precise place already.
fn at_entry(mut err: FhirError, i: usize) -> FhirError {
    for issue in &mut err.issues {
        issue.expression.get_or_insert_with(|| entry_path(i));
    }
    err
}

/// Puts the failing entry's place into the error, keeping its status.
fn name_entry(mut err: FhirError, index: usize, prefix: &str) -> FhirError {
    let path = entry_path(index);
    for issue in &mut err.issues {
        issue.diagnostics = format!("{prefix}: {}", issue.diagnostics);
        match &issue.expression {
            Some(e) if e.starts_with("Bundle.entry[") => {}
            _ => issue.expression = Some(path.clone()),
        }
    }
    err
}

fn check_entry_resource(defs: &fhir_model::Definitions, e: &Entry) -> Result<(), FhirError> {
    let prefix = format!("{}.resource", entry_path(e.index));
    match (&e.action, &e.resource) {
        (Action::Create { rtype }, Some(r)) => check_resource(defs, r, rtype, None),
        (Action::Update { rtype, id }, Some(r)) => check_resource(defs, r, rtype, Some(id)),
        (Action::Create { .. } | Action::Update { .. }, None) => Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Required,
            format!("{} {} needs a resource", e.method, e.url),
        )),
        _ => Ok(()),
    }
    .map_err(|err| {
        let t = e
            .resource
            .as_ref()
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str);
        err.within(&prefix, t)
    })
}

fn parse_entry(ctx: &Ctx, index: usize, mut e: Value) -> Result<Entry, FhirError> {
    use axum::http::{header, Method};
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let resource = e.get_mut("resource").map(Value::take);
    let request = e.get("request").ok_or_else(|| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Required,
            "every entry needs a request (method and url)",
        )
        .at(format!("{}.request", entry_path(index)))
    })?;
    let text = |field: &str| request.get(field).and_then(Value::as_str);
    let method_text = text("method").unwrap_or_default().to_string();
    let url = text("url").unwrap_or_default().to_string();
    let bad = |msg: String, field: &str| {
        FhirError::bad_request(msg).at(format!("{}.request.{field}", entry_path(index)))
    };
    // Bundle.entry.request.method: FHIR R4 valueset-http-verb.
    let method = match method_text.as_str() {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(bad(
                format!(
                    "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE, not '{other}'"
                ),
                "method",
            ))
        }
    };
    let if_match = match text("ifMatch") {
        None => None,
        Some(v) => Some(parse_etag(v).ok_or_else(|| {
            bad(
                format!("ifMatch '{v}' is not a version entity tag like W/\"3\""),
                "ifMatch",
            )
        })?),
    };
    let if_none_exist = text("ifNoneExist").map(str::to_string);
    // Conditional reads (FHIR R4 bundle.html: request.ifNoneMatch, request.ifModifiedSince).
    let mut conditional_headers = Vec::new();
    if let Some(v) = text("ifNoneMatch") {
        conditional_headers.push((header::IF_NONE_MATCH, v.to_string()));
    }
    if let Some(v) = text("ifModifiedSince") {
        conditional_headers.push((header::IF_MODIFIED_SINCE, v.to_string()));
    }
    let full_path = local_path(&url, &ctx.base);
    let (path, query) = match full_path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (full_path, None),
    };
    let at_url = |err: FhirError| err.at(format!("{}.request.url", entry_path(index)));
    let segments = decode_segments(path).map_err(at_url)?;
    let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let interaction = Interaction::parse(&method, &segs, ctx.state.inner.defs).map_err(at_url)?;
    let params: Vec<(String, String)> = query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let permit = permit(&ctx.access, &interaction, &params)?;
    let head = method == Method::HEAD;
    let owned = |s: &str| s.to_string();
    let no_criteria = |what: &str| -> Result<(), FhirError> {
        match &query {
            Some(_) => Err(bad(
                format!("{method_text} {url}: {what} takes no search criteria in its url"),
                "url",
            )),
            None => Ok(()),
        }
    };
    let needs_criteria = |what: &str| -> Result<(), FhirError> {
        match &query {
            Some(q) if !q.trim().is_empty() => Ok(()),
            _ => Err(bad(
                format!(
                    "{method_text} {url}: {what} needs search criteria (Type?param=value) or an id"
                ),
                "url",
            )),
        }
    };
    use Interaction as I;
    let action = match interaction {
        I::Create { rtype } => {
            no_criteria("a create (use ifNoneExist for a conditional create)")?;
            Action::Create {
                rtype: owned(rtype),
            }
        }
        I::Update { rtype, id } => {
            match id {
                Some(_) => no_criteria("an update of an id")?,
                None => needs_criteria("a conditional update")?,
            }
            Action::Update {
                rtype: owned(rtype),
                id: id.map(owned).unwrap_or_default(),
            }
        }
        I::Patch { rtype, id } => {
            match id {
                Some(_) => no_criteria("a patch of an id")?,
                None => needs_criteria("a conditional patch")?,
            }
            Action::Patch {
                rtype: owned(rtype),
                id: id.map(owned).unwrap_or_default(),
            }
        }
        I::Delete { rtype, id } => {
            match id {
                Some(_) => no_criteria("a delete of an id")?,
                None => needs_criteria("a conditional delete")?,
            }
            Action::Delete {
                rtype: owned(rtype),
                id: id.map(owned).unwrap_or_default(),
            }
        }
        I::BatchOrTransaction => {
            return Err(bad(
                "an entry may not post another batch or transaction".into(),
                "url",
            ))
        }
        // The asynchronous pattern answers with headers and NDJSON, nothing an entry's
        // response can carry (Bulk Data IG 2.0.0 is defined on requests alone).
        I::Operation {
            name: "export" | "import",
            ..
        }
        | I::JobStatus { .. }
        | I::JobFile { .. } => {
            return Err(bad(
                format!("{method_text} {url}: a bulk export or import, its status and its files are requested alone, not as bundle entries"),
                "url",
            ))
        }
        // A plain read runs in the transaction; with parameters (`_elements`, `_summary`)
        // or conditional headers it is served as the same request alone.
        I::Read { rtype, id } if query.is_none() && conditional_headers.is_empty() => {
            Action::Read {
                rtype: owned(rtype),
                id: owned(id),
                version: None,
            }
        }
        I::Vread { rtype, id, vid } if query.is_none() && conditional_headers.is_empty() => {
            Action::Read {
                rtype: owned(rtype),
                id: owned(id),
                version: Some(vid.parse().map_err(|_| {
                    at_url(FhirError::not_found(format!(
                        "{rtype}/{id} has no version '{vid}'"
                    )))
                })?),
            }
        }
        I::Token => {
            return Err(at_url(FhirError::bad_request(
                "the token endpoint is not a FHIR interaction and cannot be a bundle entry",
            )))
        }
        I::Read { .. }
        | I::Vread { .. }
        | I::Search { .. }
        | I::History(_)
        | I::Capabilities
        | I::SmartConfiguration
        | I::Operation { .. } => Action::Get {
            method: method.clone(),
            url: full_path.to_string(),
            headers: conditional_headers,
        },
    };
    if if_none_exist.is_some() {
        if !matches!(action, Action::Create { .. }) {
            return Err(bad(
                "ifNoneExist applies to POST entries only".into(),
                "ifNoneExist",
            ));
        }
        // A conditional create searches: as a conditional update, it needs the search in
        // full (FHIR R4 http.html#ccreate).
        if let Some(Action::Create { rtype }) = Some(&action) {
            match ctx.access.check(rtype, Op::Search) {
                Ok(Reach::All) if permit == Permit::All => {}
                Ok(_) => {
                    return Err(forbidden(
                        "a conditional create is not allowed with a patient/ scope: its search could reach beyond the patient's compartment".into(),
                    ))
                }
                Err(r) => return Err(forbidden(r.0)),
            }
        }
    }
    let criteria = match &action {
        Action::Update { id, .. } | Action::Patch { id, .. } | Action::Delete { id, .. }
            if id.is_empty() =>
        {
            query
        }
        _ => None,
    };
    Ok(Entry {
        index,
        method: method_text,
        url,
        full_url,
        action,
        resource,
        if_match,
        new_id: None,
        criteria,
        if_none_exist,
        existing: None,
        prepared: None,
        permit,
        head,
    })
}

/// The reading entries of a transaction that the request pipeline refuses for what they ask
/// (a search parameter it cannot parse, `Prefer: handling=strict` with an unknown one, a
/// bad `_count` or `_since`) fail the transaction before anything is written: they are
/// served after the commit, when their refusal could no longer undo the writes (FHIR R4
/// http.html#transaction: all or nothing). Each is served once now, against the data as it
/// is before the transaction; a 404 or 410 is not decided yet (the writes may create what
/// it reads) and is left to the run after the commit.
async fn refuse_before_writes(ctx: &Ctx, call: &Call, entries: &[Entry]) -> Result<(), FhirError> {
    for e in entries {
        if !matches!(e.action, Action::Get { .. }) {
            continue;
        }
        let served = serve_entry(ctx, call, e).await;
        let response = &served["response"];
        let status = response["status"]
            .as_str()
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        if !status.is_client_error()
            || status == StatusCode::NOT_FOUND
            || status == StatusCode::GONE
        {
            continue;
        }
        let issue = &response["outcome"]["issue"][0];
        let diagnostics = issue["diagnostics"].as_str().unwrap_or("refused");
        // The issue code the pipeline gave, among those a refused request carries.
        let code = [
            IssueCode::NotSupported,
            IssueCode::Value,
            IssueCode::TooLong,
            IssueCode::Forbidden,
            IssueCode::Security,
        ]
        .into_iter()
        .find(|c| issue["code"].as_str() == Some(c.as_str()))
        .unwrap_or(IssueCode::Invalid);
        let prefix = format!("{} ({} {})", entry_path(e.index), e.method, e.url);
        let err = FhirError::new(status, code, diagnostics);
        return Err(name_entry(err, e.index, &prefix));
    }
    Ok(())
}

/// Serves a reading entry through the request pipeline, as the same request alone, and
/// turns its response into the response entry.
async fn serve_entry(ctx: &Ctx, call: &Call, e: &Entry) -> Value {
    use axum::http::{header, HeaderValue};
    let Action::Get {
        method,
        url,
        headers: conditional,
    } = &e.action
    else {
        return json!({});
    };
    let uri: axum::http::Uri = match format!("/{url}").parse() {
        Ok(u) => u,
        Err(_) => {
            return failed_entry(
                &FhirError::bad_request(format!("'{url}' is not a valid request url"))
                    .at(format!("{}.request.url", entry_path(e.index))),
            )
        }
    };
    // The Bundle's own headers, but for what described its body or its own conditions.
    let mut headers = ctx.headers.clone();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::ACCEPT,
    ] {
        headers.remove(h);
    }
    headers.remove("if-none-exist");
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    for (name, value) in conditional {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), v);
        }
    }
    let resp = route::serve(call, method.clone(), &uri, headers, Body::empty()).await;
    response_to_entry(ctx, resp, e.head).await
}

/// A response of the request pipeline as a response entry (FHIR R4 bundle.html
/// #Bundle.entry.response): its status, version headers, and body as the resource — or,
/// for an error, as the outcome.
async fn response_to_entry(ctx: &Ctx, resp: Response, head: bool) -> Value {
    use axum::http::header;
    let status = resp.status();
    let (etag, last_modified, location) = {
        let header_text = |name: header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            header_text(header::ETAG),
            header_text(header::LAST_MODIFIED),
            header_text(header::LOCATION),
        )
    };
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let mut entry = Map::new();
    let mut response = Map::new();
    response.insert("status".into(), json!(status_line(status)));
    if let Some(l) = location {
        response.insert("location".into(), json!(l));
    }
    if let Some(t) = etag {
        response.insert("etag".into(), json!(t));
    }
    if let Some(m) = last_modified {
        // HTTP-date in the header; the entry's lastModified is an instant.
        let instant = httpdate::parse_http_date(&m)
            .ok()
            .map(|t| format_instant(&chrono::DateTime::<chrono::Utc>::from(t)));
        if let Some(i) = instant {
            response.insert("lastModified".into(), json!(i));
        }
    }
    match body {
        Some(v) if status.is_success() && !head => {
            let rt = v.get("resourceType").and_then(Value::as_str);
            let id = v.get("id").and_then(Value::as_str);
            if let (Some(rt), Some(id)) = (rt, id) {
                if rt != "Bundle" && rt != "CapabilityStatement" {
                    entry.insert("fullUrl".into(), json!(format!("{}/{rt}/{id}", ctx.base)));
                }
            }
            entry.insert("resource".into(), v);
        }
        Some(v) if !status.is_success() => {
            response.insert("outcome".into(), v);
        }
        _ => {}
    }
    entry.insert("response".into(), Value::Object(response));
    Value::Object(entry)
}

/// Extracts the search index of a create or update entry whose id is settled, once its
/// resource has been checked (see [`fhir_store::Prepared`]).
fn prepare_entry(e: &mut Entry, base: &str) {
    let id = match &e.action {
        Action::Create { .. } if e.existing.is_none() => e.new_id.clone(),
        Action::Update { id, .. } if !id.is_empty() => Some(id.clone()),
        _ => None,
    };
    let Some(id) = id else {
        return;
    };
    if let Some(resource) = e.resource.take() {
        let prepared = Prepared::with_base(&id, resource, base);
        e.prepared = Some((id, prepared));
    }
}

/// The prepared resource of an entry for `id`, preparing it now if that was not done.
fn take_prepared(e: &mut Entry, id: &str, base: &str) -> Prepared {
    match e.prepared.take() {
        Some((pid, p)) if pid == id => p,
        Some((_, p)) => Prepared::with_base(id, p.into_parts().0, base),
        None => Prepared::with_base(id, e.resource.take().unwrap_or(Value::Null), base),
    }
}

/// An entry URL relative to the base: absolute URLs of our own base are made relative.
fn local_path<'a>(url: &'a str, base: &str) -> &'a str {
    url.strip_prefix(base)
        .unwrap_or(url)
        .trim_start_matches('/')
}

/// Decides conditional creates, updates and deletes inside the transaction (FHIR R4
/// http.html#trules): a conditional update or delete gets the id its criteria match (a new one
/// for an update that matches nothing), a conditional create that matches one resource writes
/// nothing and points its fullUrl at that resource; several matches are a 412.
async fn resolve_conditional(
    ctx: &Ctx,
    tx: &mut dyn WriteTx,
    e: &mut Entry,
) -> Result<(), FhirError> {
    if let (Some(text), Action::Create { rtype }) = (&e.if_none_exist, &e.action) {
        let q = search::criteria(ctx, rtype, text, "conditional create (ifNoneExist)")?;
        match search::matches_in(tx, &q).await?.as_slice() {
            [] => {}
            [id] => {
                e.existing = tx.current(rtype, id).await?;
                e.new_id = Some(id.clone());
            }
            _ => return Err(search::too_many("conditional create", text)),
        }
    }
    let Some(text) = &e.criteria else {
        return Ok(());
    };
    match &mut e.action {
        Action::Update { rtype, id } => {
            let q = search::criteria(ctx, rtype, text, "conditional update")?;
            let body_id = e
                .resource
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            *id = match search::matches_in(tx, &q).await?.as_slice() {
                [] => body_id.unwrap_or_else(write::new_id),
                [found] => found.clone(),
                _ => return Err(search::too_many("conditional update", text)),
            };
            // The body must carry the id the criteria chose (checked like a plain update).
            if let Some(Value::Object(r)) = &mut e.resource {
                r.entry("id").or_insert_with(|| Value::String(id.clone()));
            }
        }
        Action::Delete { rtype, id } => {
            let q = search::criteria(ctx, rtype, text, "conditional delete")?;
            *id = match search::matches_in(tx, &q).await?.as_slice() {
                [] => String::new(),
                [found] => found.clone(),
                _ => return Err(search::too_many("conditional delete", text)),
            };
        }
        // FHIR R4 http.html#cond-patch: one match is patched, none is a 404, several a 412.
        Action::Patch { rtype, id } => {
            let q = search::criteria(ctx, rtype, text, "conditional patch")?;
            *id = match search::matches_in(tx, &q).await?.as_slice() {
                [] => {
                    return Err(FhirError::not_found(format!(
                        "conditional patch: the criteria '{text}' match no resource"
                    )))
                }
                [found] => found.clone(),
                _ => return Err(search::too_many("conditional patch", text)),
            };
        }
        _ => {}
    }
    Ok(())
}

/// Every conditional reference (`Patient?identifier=…`) in `v`.
fn conditional_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("reference") {
                if conditional_reference(r) && !out.contains(r) {
                    out.push(r.clone());
                }
            }
            for child in m.values() {
                conditional_references(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| conditional_references(c, out)),
        _ => {}
    }
}

/// Resolves the conditional references of the entries into `ids`: exactly one match is
/// required; none is a 404 and several a 412 (FHIR R4 http.html#trules).
async fn resolve_references(
    ctx: &Ctx,
    tx: &mut dyn WriteTx,
    entries: &[Entry],
    ids: &mut HashMap<String, String>,
) -> Result<(), FhirError> {
    for e in entries {
        let mut refs = Vec::new();
        if let Some(r) = &e.resource {
            conditional_references(r, &mut refs);
        }
        for r in refs {
            if ids.contains_key(&r) {
                continue;
            }
            let (rtype, query) = r.split_once('?').unwrap_or((&r, ""));
            let name =
                |err: FhirError| err.within(&format!("{}.resource", entry_path(e.index)), None);
            if !ctx.state.inner.defs.is_resource_type(rtype) {
                return Err(name(FhirError::not_found(format!(
                    "conditional reference '{r}': '{rtype}' is not a resource type"
                ))));
            }
            match ctx.access.check(rtype, Op::Search) {
                Ok(Reach::All) => {}
                Ok(Reach::Patient(_)) => {
                    return Err(name(forbidden(format!(
                        "conditional reference '{r}' is not allowed with a patient/ scope"
                    ))))
                }
                Err(refusal) => return Err(name(forbidden(refusal.0))),
            }
            let q = search::criteria(ctx, rtype, query, "conditional reference").map_err(name)?;
            match search::matches_in(tx, &q).await?.as_slice() {
                [] => {
                    return Err(name(FhirError::not_found(format!(
                        "conditional reference '{r}' matches no resource"
                    ))))
                }
                [id] => {
                    ids.insert(r.clone(), format!("{rtype}/{id}"));
                }
                _ => return Err(name(search::too_many("conditional reference", &r))),
            }
        }
    }
    Ok(())
}

/// Rewrites every `reference` that names another entry's fullUrl to the server's
/// `Type/id`. A `urn:uuid:`/`urn:oid:` reference to no entry cannot be resolved: 400.
fn rewrite_references(
    v: &mut Value,
    ids: &HashMap<String, String>,
    base: &str,
) -> Result<(), FhirError> {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("reference") {
                if let Some(target) = ids.get(r.as_str()) {
                    *r = target.clone();
                } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                    return Err(FhirError::new(
                        StatusCode::BAD_REQUEST,
                        IssueCode::NotFound,
                        format!("reference '{r}' names no entry of this transaction"),
                    ));
                } else if let Some(rest) = r.strip_prefix(base).and_then(|s| s.strip_prefix('/')) {
                    // Our own absolute URL: the relative form, which may name a new entry.
                    *r = ids.get(rest).cloned().unwrap_or_else(|| rest.to_string());
                }
            }
            for (_, child) in m.iter_mut() {
                rewrite_references(child, ids, base)?;
            }
        }
        Value::Array(a) => {
            for child in a {
                rewrite_references(child, ids, base)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Patient?identifier=…`: a search in place of a reference (FHIR R4 http.html#trules).
fn conditional_reference(r: &str) -> bool {
    r.split_once('?').is_some_and(|(t, _)| {
        !t.is_empty() && !t.contains('/') && t.starts_with(|c: char| c.is_ascii_uppercase())
    })
}

async fn run_entry(ctx: &Ctx, tx: &mut dyn WriteTx, e: &mut Entry) -> Result<Outcome, FhirError> {
    let defs = ctx.state.inner.defs;
    match &e.action {
        Action::Create { .. } if e.existing.is_some() => Ok(Outcome::Written {
            status: StatusCode::OK,
            stored: e
                .existing
                .clone()
                .ok_or_else(|| FhirError::bad_request("no match"))?,
        }),
        Action::Create { rtype } => {
            let rtype = rtype.clone();
            let id = e.new_id.clone().unwrap_or_else(write::new_id);
            let resource = take_prepared(e, &id, &ctx.base);
            if let Some(p) = patient_of(e) {
                written_in_compartment(Some(resource.resource()), &rtype, Some(&id), p)?;
            }
            let stored = write::create_in(tx, &rtype, &id, resource).await?;
            Ok(Outcome::Written {
                status: StatusCode::CREATED,
                stored,
            })
        }
        Action::Update { rtype, id } => {
            let (rtype, id) = (rtype.clone(), id.clone());
            if let Some(p) = patient_of(e) {
                let current = tx.current(&rtype, &id).await?;
                stored_in_compartment(ctx, p, &rtype, &id, current.as_ref()).await?;
            }
            let resource = take_prepared(e, &id, &ctx.base);
            if let Some(p) = patient_of(e) {
                written_in_compartment(Some(resource.resource()), &rtype, Some(&id), p)?;
            }
            let (stored, created) = write::update_in(tx, &rtype, &id, resource, e.if_match).await?;
            Ok(Outcome::Written {
                status: if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                stored,
            })
        }
        Action::Get { .. } => Err(FhirError::bad_request(
            "a reading entry is served by the request pipeline, not in the transaction",
        )),
        Action::Patch { rtype, id } => {
            let doc = e.resource.take().ok_or_else(|| {
                FhirError::bad_request("a PATCH entry needs a resource: a Parameters (FHIRPath Patch) or a Binary holding a JSON Patch")
            })?;
            let patch = entry_patch(doc)?.max_bytes(ctx.state.inner.config.max_body_bytes);
            let stored =
                write::patch_in(tx, defs, &ctx.base, rtype, id, &patch, e.if_match).await?;
            Ok(Outcome::Written {
                status: StatusCode::OK,
                stored,
            })
        }
        Action::Delete { rtype, id } => {
            if let Some(p) = patient_of(e) {
                let current = tx.current(rtype, id).await?;
                stored_in_compartment(ctx, p, rtype, id, current.as_ref()).await?;
            }
            Ok(Outcome::Deleted(
                write::delete_in(tx, rtype, id, e.if_match).await?,
            ))
        }
        Action::Read { rtype, id, version } => {
            // The compartment first, on what is stored now, as for a request: a resource
            // outside it is not known, deleted or not.
            if let Some(p) = patient_of(e) {
                let current = tx.current(rtype, id).await?;
                stored_in_compartment(ctx, p, rtype, id, current.as_ref()).await?;
            }
            let found = match version {
                None => tx.current(rtype, id).await?,
                Some(v) => {
                    ctx.state
                        .inner
                        .store
                        .vread(&ctx.service, rtype, id, *v)
                        .await?
                }
            };
            match found {
                Some(r) if !r.is_deleted() => Ok(Outcome::Read(r, e.head)),
                Some(r) => Err(FhirError::new(
                    StatusCode::GONE,
                    IssueCode::Deleted,
                    format!("{rtype}/{id} was deleted (version {})", r.version),
                )),
                None => Err(FhirError::not_found(format!("{rtype}/{id} is not known"))),
            }
        }
    }
}

/// A PATCH entry carries a Parameters (FHIRPath Patch) or a Binary whose data is a JSON
/// Patch (FHIR R4 http.html#patch in bundles).
fn entry_patch(doc: Value) -> Result<Patch, FhirError> {
    match doc.get("resourceType").and_then(Value::as_str) {
        Some("Binary") => {
            let data = doc.get("data").and_then(Value::as_str).unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| {
                    FhirError::bad_request(format!(
                        "Binary.data of a PATCH entry is not base64: {e}"
                    ))
                })?;
            let patch: Value = serde_json::from_slice(&bytes).map_err(|e| {
                FhirError::bad_request(format!("Binary.data is not a JSON Patch: {e}"))
            })?;
            Patch::json(patch)
        }
        _ => Patch::fhirpath(doc),
    }
}

fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

fn response_entry(ctx: &Ctx, o: Option<Outcome>) -> Result<Value, FhirError> {
    let Some(o) = o else {
        return Ok(json!({}));
    };
    let want_resource = ctx.prefer_return == Some(Return::Representation);
    let mut entry = Map::new();
    let mut response = Map::new();
    match o {
        Outcome::Written { status, stored } => {
            entry.insert(
                "fullUrl".into(),
                json!(format!(
                    "{}/{}/{}",
                    ctx.base, stored.resource_type, stored.id
                )),
            );
            if want_resource {
                if let Some(b) = &stored.body {
                    entry.insert(
                        "resource".into(),
                        serde_json::from_slice(b).unwrap_or(Value::Null),
                    );
                }
            }
            response.insert("status".into(), json!(status_line(status)));
            response.insert(
                "location".into(),
                json!(format!(
                    "{}/{}/_history/{}",
                    stored.resource_type, stored.id, stored.version
                )),
            );
            version_fields(&mut response, &stored);
        }
        Outcome::Deleted(d) => {
            response.insert("status".into(), json!(status_line(StatusCode::NO_CONTENT)));
            if let Some(d) = d {
                version_fields(&mut response, &d);
            }
        }
        Outcome::Served(entry) => return Ok(entry),
        Outcome::Read(r, head) => {
            entry.insert(
                "fullUrl".into(),
                json!(format!("{}/{}/{}", ctx.base, r.resource_type, r.id)),
            );
            if let Some(b) = r.body.as_ref().filter(|_| !head) {
                entry.insert(
                    "resource".into(),
                    serde_json::from_slice(b).unwrap_or(Value::Null),
                );
            }
            response.insert("status".into(), json!(status_line(StatusCode::OK)));
            version_fields(&mut response, &r);
        }
    }
    entry.insert("response".into(), Value::Object(response));
    Ok(Value::Object(entry))
}

fn version_fields(response: &mut Map<String, Value>, r: &StoredResource) {
    response.insert("etag".into(), json!(respond::etag(r.version)));
    response.insert(
        "lastModified".into(),
        json!(format_instant(&r.last_updated)),
    );
}

fn failed_entry(err: &FhirError) -> Value {
    json!({
        "response": {
            "status": status_line(err.status),
            "outcome": err.outcome(),
        }
    })
}

fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": write::new_id(),
        "type": kind,
        "entry": entries,
    })
}
