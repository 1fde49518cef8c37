//! A development harness, not a server to deploy: the management router on plain HTTP, on a
//! SQLite store in the folder given as first argument, with the bearer token taken as the
//! principal's name *without verification*. It lets SDK-compatibility checks run before the
//! real HTTPS listener and JWT verification (in the binary) are wired in.
//!
//! `cargo run -p link-api --example plain_admin -- /tmp/cp-data 127.0.0.1:18081`

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;
use link_api::{router, ControlPlane};
use link_model::Principal;

async fn trust_bearer(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(id) = who {
        req.extensions_mut().insert(Principal {
            id,
            issuer: "plain_admin (unverified)".into(),
        });
    }
    next.run(req).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/cp-data".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(SqliteStore::open(std::path::Path::new(&dir))?);
    // The data plane's default service exists, as `fhirlink serve` makes sure.
    store.create_service("default").await?;
    let cp = Arc::new(ControlPlane::open(store, "admin").await?);
    let app = router(cp).layer(middleware::from_fn(trust_bearer));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("management API (plain HTTP, unverified tokens) on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
