//! The control plane of fhirlink as a pure model: ARM resources, the rules the source
//! documents define, authorization by role assignments, and the state machine that turns one
//! management request into a new state.
//!
//! This crate knows nothing of HTTP, sockets, the store or the clock: callers pass the time in
//! and persist the [`Changes`] it returns. `link-api` puts it behind an ARM-shaped router; the
//! network plane reads the same [`State`].

/// Who is calling: from a verified token. `id` is the principal id that role assignments name
/// (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub issuer: String,
}

/// The whole control-plane state (filled in by the following commits).
#[derive(Debug, Clone, Default)]
pub struct State {}

/// What a mutation changed (filled in by the following commits).
#[derive(Debug, Clone, Default)]
pub struct Changes {}
