//! Identity and transport security of fhirlink: who a caller is, and that nobody else can
//! listen in.
//!
//! - [`jwt`]: JSON Web Tokens, issued (ES256) and verified (ES256, RS256) as pure functions:
//!   algorithm pinned by the key, signature before claims, `exp`/`nbf`/`iss`/`aud` checked, the
//!   claims authorization needs read into a bounded [`jwt::Identity`].
//! - [`jwk`]: JSON Web Keys and JWK Sets as OIDC issuers publish them.
//! - [`oidc`]: external OIDC issuers (discovery, JWKS cache, refresh on an unknown `kid`) and
//!   the [`oidc::Authority`] a FHIR service's tokens are verified against.
//! - [`identity`]: fhirlink's own issuer, its signing key in the data folder, the management
//!   and data-plane tokens it mints, and the verifier built from it.
//! - [`tls`]: the local CA and server certificate in the data folder, or the operator's own;
//!   the client side that trusts the CA.
//! - [`service_tls`]: the data plane's certificates, one per FHIR service chosen by SNI
//!   and a default one for `localhost` and the listeners' addresses.
//! - [`conn`]: connection hygiene shared by every HTTP listener: a deadline on each phase of a
//!   connection, caps per source and in total, the accept loop that applies them.
//! - [`https`]: the TLS serving loop for an axum router, with graceful shutdown.
//!
//! This crate knows nothing of ARM, FHIR resources, the control-plane model or the store: it
//! turns a bearer token into an [`jwt::Identity`] and a socket into HTTPS, and leaves what the
//! identity may do to its caller. Its only outbound requests fetch OIDC issuers' documents.

pub mod assertion;
pub mod conn;
pub mod https;
pub mod identity;
pub mod jwk;
pub mod jwt;
pub mod oidc;
pub mod service_tls;
pub mod tls;

mod claims;
mod fetch;
mod files;
