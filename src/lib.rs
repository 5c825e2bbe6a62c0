//! OpenID Connect relying party for proxy-wasm gateways.
//!
//! Everything outside [`host`] is a deterministic core: it does no I/O, reads no
//! clock and draws no randomness of its own. Callers pass `now` (seconds since the
//! UNIX epoch) and a cryptographic RNG, and receive values that describe what to do
//! (forward, answer, call out, read or write a session). The proxy-wasm glue in
//! [`host`] performs those actions and feeds the results back in. This keeps the
//! whole flow unit-testable natively and lets a session store answer later (for
//! example after an HTTP callout) without changing the flow.

pub mod authz;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod flow;
pub mod http;
pub mod oidc;
pub mod provider;
pub mod session;

#[cfg(target_arch = "wasm32")]
mod host;
