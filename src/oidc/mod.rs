//! OpenID Provider protocol: discovery, keys, tokens, and their verification.

pub mod access_token;
pub mod access_token_cache;
mod common;
pub mod discovery;
pub mod id_token;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod logout_token;
pub mod pkce;
pub mod token;
