//! Identity and transport security of fhirlink's management API: who a caller is, and that
//! nobody else can listen in.
//!
//! - [`jwt`]: ES256 JSON Web Tokens, issued and verified as pure functions (algorithm pinned,
//!   signature before claims, `exp`/`nbf`/`iss`/`aud` checked).
//! - [`identity`]: fhirlink's own issuer, its signing key in the data folder, and the verifier
//!   built from the issuers it trusts (open to external OIDC issuers later).
//! - [`tls`]: the local CA and server certificate in the data folder, or the operator's own;
//!   the client side that trusts the CA.
//! - [`service_tls`]: the data plane's certificates, one per FHIR service chosen by SNI
//!   and a default one for `localhost` and the listeners' addresses.
//! - [`https`]: the TLS serving loop for an axum router, with graceful shutdown.
//!
//! This crate knows nothing of ARM, the control-plane model or the store: it turns a bearer
//! token into an [`jwt::Identity`] and a socket into HTTPS, and leaves the rest to its caller.

pub mod https;
pub mod identity;
pub mod jwt;
pub mod service_tls;
pub mod tls;

mod files;
