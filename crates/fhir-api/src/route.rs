//! The one entry point: parse the request line into an [`Interaction`] (FHIR R4 http.html
//! §3.1.0, `interaction.rs`), authorize it and call its module. Resource types are data (146
//! of them), so routing is a match on the parsed interaction rather than 146 axum routes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_model::IssueCode;

use crate::access::Access;
use crate::authorize::{authorize, Admitted};
use crate::error::FhirError;
use crate::interaction::{decode_segments, Interaction, JobKind, Kind, Level, Scope as IScope};
use crate::request::Ctx;
use crate::search::{self, Scope};
use crate::service::{request_host, service_for_host, AdmittedService};
use crate::{
    bulk, bundle, capabilities, everything, history, member_match, meta, purge, read, smart,
    terminology, validate, write, AppState,
};

pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let host = request_host(&parts.headers, &parts.uri).map(str::to_owned);
    let service = match parts.extensions.get::<AdmittedService>() {
        Some(AdmittedService(name)) => name.clone(),
        None => service_for_host(host.as_deref(), &state.inner.config.dns_suffix),
    };
    // The plan's services are known to exist; only another name asks the store.
    let known = state.inner.known.contains(&service);
    match if known {
        Ok(true)
    } else {
        state.inner.store.service_exists(&service).await
    } {
        Ok(true) => {}
        Ok(false) => {
            return FhirError::not_found(format!("FHIR service '{service}' does not exist"))
                .into_response()
        }
        Err(e) => return FhirError::from(e).into_response(),
    }
    let access = match parts.extensions.remove::<Arc<Access>>() {
        Some(a) => a,
        None if state.inner.config.require_access => {
            return FhirError::new(
                StatusCode::FORBIDDEN,
                IssueCode::Forbidden,
                "no identity was established for this request",
            )
            .into_response()
        }
        None => Arc::new(Access::unrestricted("anonymous")),
    };
    let security = parts.extensions.get::<crate::access::Security>().cloned();
    let call = Call {
        state,
        service,
        access,
        security,
        host,
    };
    serve(&call, parts.method, &parts.uri, parts.headers, body).await
}

/// Who a request is for and from: what a bundle entry shares with the Bundle it came in.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) state: AppState,
    pub(crate) service: String,
    pub(crate) access: Arc<Access>,
    pub(crate) security: Option<crate::access::Security>,
    pub(crate) host: Option<String>,
}

impl Call {
    /// The service's base URL as this request reached it (links only; it decides nothing).
    pub(crate) fn base(&self) -> String {
        crate::request::base_url(self.host.as_deref(), self.state.inner.config.https)
    }
}

/// Serves one request of `call`'s caller on its service: parses the interaction, checks it
/// against the caller's access and runs its module. Bundle entries that read (searches,
/// histories) come through here too, so that each is routed and authorized exactly as the
/// same request alone. The response carries the interaction's [`Kind`] as an extension.
pub(crate) fn serve<'a>(
    call: &'a Call,
    method: Method,
    uri: &'a axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> BoxFuture<'a, Response> {
    // Boxed with its `Send` spelled out: a batch serves its entries through here, so the
    // future contains itself.
    Box::pin(async move {
        let segments = match decode_segments(uri.path()) {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
        let interaction = match Interaction::parse(&method, &segs, call.state.inner.defs) {
            Ok(i) => i,
            Err(e) => {
                let mut resp = e.into_response();
                resp.extensions_mut().insert(Kind::Unknown);
                return resp;
            }
        };
        let kind = interaction.kind();
        let mut resp = match run(call, &interaction, uri.path(), uri.query(), headers, body).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        resp.extensions_mut().insert(kind);
        resp
    })
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

async fn run(
    call: &Call,
    interaction: &Interaction<'_>,
    path: &str,
    query: Option<&str>,
    mut headers: axum::http::HeaderMap,
    mut body: Body,
) -> Result<Response, FhirError> {
    use Interaction as I;
    if let I::SmartConfiguration = interaction {
        // Not a FHIR resource: plain JSON whatever the request's Accept or `_format`, and
        // nothing to authorize (SMART App Launch 2.0 §conformance: needs no token).
        return smart::configuration(call.security.as_ref(), &call.base());
    }
    if let I::JobStatus { .. } | I::JobFile { .. } = interaction {
        // A manifest is plain JSON and a file NDJSON, whatever the client accepts (clients
        // send `application/json` or `application/fhir+ndjson`): no format to negotiate.
        headers.remove(axum::http::header::ACCEPT);
    }
    let mut ctx = Ctx::new(
        call.state.clone(),
        call.service.clone(),
        headers,
        call.host.as_deref(),
        query,
        call.access.clone(),
    )?;
    let limit = ctx.state.inner.config.max_body_bytes;
    let admitted = match authorize(&ctx, interaction, &mut body).await {
        Ok(a) => a,
        Err(e) => {
            // Read what the client is still sending before refusing, so that it hears the
            // answer instead of a reset stream (HTTP/2) or connection (HTTP/1.1).
            crate::request::drain(body).await;
            return Err(e);
        }
    };
    if let Admitted::InCompartment(patient) = admitted {
        // A patient-scoped type search runs inside the patient's compartment.
        if let I::Search {
            scope: IScope::Type(t),
            post,
        } = *interaction
        {
            let body = post.then_some(body);
            return if t == "Patient" {
                ctx.params.push(("_id".into(), patient));
                search::search(&ctx, Scope::Type("Patient"), body).await
            } else {
                search::search(&ctx, Scope::Compartment("Patient", &patient, t), body).await
            };
        }
        return Err(FhirError::bad_request("no type to search"));
    }
    match *interaction {
        I::Capabilities => capabilities::capabilities(&ctx, call.security.as_ref()),
        I::SmartConfiguration => smart::configuration(call.security.as_ref(), &call.base()),
        I::Token => Err(FhirError::not_found(
            "this server has no token endpoint without its authentication layer",
        )),
        I::BatchOrTransaction => bundle::batch_or_transaction(&ctx, call, body, limit).await,
        I::Search { scope, post } => {
            let body = post.then_some(body);
            let scope = match scope {
                IScope::System => Scope::System,
                IScope::Type(t) => Scope::Type(t),
                IScope::Compartment(ct, cid, t) => Scope::Compartment(ct, cid, t),
                IScope::Instance(..) => return Err(FhirError::bad_request("no such search")),
            };
            search::search(&ctx, scope, body).await
        }
        I::History(scope) => match scope {
            IScope::System => history::system(&ctx).await,
            IScope::Type(t) => history::type_level(&ctx, t).await,
            IScope::Instance(t, id) | IScope::Compartment(t, id, _) => {
                history::instance(&ctx, t, id).await
            }
        },
        I::Read { rtype, id } => read::read(&ctx, rtype, id).await,
        I::Vread { rtype, id, vid } => read::vread(&ctx, rtype, id, vid).await,
        I::Create { rtype } => write::create(&ctx, rtype, body, limit).await,
        I::Update {
            rtype,
            id: Some(id),
        } => write::update(&ctx, rtype, id, body, limit).await,
        I::Update { rtype, id: None } => write::conditional_update(&ctx, rtype, body, limit).await,
        I::Patch {
            rtype,
            id: Some(id),
        } => write::patch(&ctx, rtype, id, body, limit).await,
        I::Patch { rtype, id: None } => write::conditional_patch(&ctx, rtype, body, limit).await,
        I::Delete {
            rtype,
            id: Some(id),
        } => write::delete(&ctx, rtype, id).await,
        I::Delete { rtype, id: None } => write::conditional_delete(&ctx, rtype).await,
        I::Operation {
            name: "export",
            level,
            post,
        } => bulk::kick_off(&ctx, level, post, body, limit, path, query).await,
        I::Operation {
            name: "everything",
            level: Level::Instance("Patient", id),
            post,
        } => everything::everything(&ctx, id, post, body, limit).await,
        I::Operation {
            name: "import",
            level: Level::System,
            post: true,
        } => bulk::import_kick_off(&ctx, body, limit, path).await,
        I::Operation {
            name: "meta",
            level,
            post,
        } => meta::meta(&ctx, level, post, body).await,
        I::Operation {
            name: name @ ("meta-add" | "meta-delete"),
            level,
            ..
        } => meta::change(&ctx, level, name == "meta-add", body).await,
        I::Operation {
            name: "expand",
            level,
            post,
        } => terminology::expand(&ctx, level, post, body).await,
        I::Operation {
            name: "validate-code",
            level,
            post,
        } => terminology::validate_code(&ctx, level, post, body).await,
        I::Operation {
            name: "subsumes",
            level,
            post,
        } => terminology::subsumes(&ctx, level, post, body).await,
        I::Operation {
            name: "member-match",
            level: Level::Type("Patient"),
            post,
        } => member_match::member_match(&ctx, post, body).await,
        I::Operation {
            name: "validate",
            level,
            post,
        } => validate::validate(&ctx, level, post, body).await,
        I::Operation {
            name: "purge-history",
            level: Level::Instance(t, id),
            post,
        } => purge::purge_history(&ctx, t, id, post, body).await,
        I::JobStatus {
            job: JobKind::Export,
            id,
            cancel,
        } => bulk::status(&ctx, id, cancel).await,
        I::JobFile {
            job: JobKind::Export,
            id,
            file,
        } => bulk::file(&ctx, id, file).await,
        I::JobStatus {
            job: JobKind::Import,
            id,
            cancel,
        } => bulk::import_status(&ctx, id, cancel).await,
        I::JobFile {
            job: JobKind::Import,
            id,
            file,
        } => bulk::import_file(&ctx, id, file).await,
        I::Operation { name, .. } => Err(unsupported_operation(name)),
    }
}

/// An operation this server does not serve (FHIR R4 operations.html: unknown operations are
/// an error, not ignored).
pub(crate) fn unsupported_operation(name: &str) -> FhirError {
    FhirError::new(
        StatusCode::NOT_FOUND,
        IssueCode::NotSupported,
        format!("the operation ${name} is not supported here"),
    )
}
