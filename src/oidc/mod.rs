//! OpenID Provider protocol: discovery, keys, tokens, and their verification.

pub mod discovery;
pub mod jwks;
pub mod jwt;
pub mod id_token;
pub mod pkce;
pub mod token;
