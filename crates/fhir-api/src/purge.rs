//! `$purge-history` at `[type]/[id]/$purge-history` (Azure API for FHIR's operation, which
//! has no FHIR OperationDefinition: fhirlink names its own, [`DEFINITION`]): every version of
//! the resource but the current one is removed, and `_history` and vread show only the
//! current one afterwards. The current version stays exactly as it is, a deletion included.
//! Azure's form is `DELETE`, answered like a delete (204); `POST` is taken too. It takes no
//! parameters. Authorized as a delete of the resource.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::FhirError;
use crate::params::OpParams;
use crate::request::{Ctx, Return};
use crate::respond;

/// fhirlink's canonical name for Azure's `$purge-history`.
pub(crate) const DEFINITION: &str = "https://fhirlink.dev/fhir/OperationDefinition/purge-history";

pub(crate) async fn purge_history(
    ctx: &Ctx,
    rtype: &str,
    id: &str,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    OpParams::read(ctx, "purge-history", post, body, &[]).await?;
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let current = tx
        .current(rtype, id)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
    let removed = tx.purge_history(rtype, id).await?;
    tx.commit().await?;
    let message = format!(
        "removed {removed} earlier version(s) of {rtype}/{id}; version {} is kept",
        current.version
    );
    Ok(match ctx.prefer_return {
        Some(Return::OperationOutcome | Return::Representation) => {
            respond::json(ctx, StatusCode::OK, &respond::information(&message))
        }
        _ if post => respond::json(ctx, StatusCode::OK, &respond::information(&message)),
        _ => StatusCode::NO_CONTENT.into_response(),
    })
}
