//! The in-flight login, sealed into a short-lived cookie so that unauthenticated
//! traffic costs the proxy no memory.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, seal};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
    /// Same-origin path (and query) to return to after login.
    pub return_to: String,
    pub issued_at: u64,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("return_to", &self.return_to)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl LoginState {
    pub fn new(return_to: String, now: u64, rng: &mut impl rand_core::CryptoRngCore) -> LoginState {
        LoginState {
            state: crypto::random_token(rng, 32),
            nonce: crypto::random_token(rng, 32),
            code_verifier: crate::oidc::pkce::new_verifier(rng),
            return_to,
            issued_at: now,
        }
    }

    /// One cookie per login in flight, named after its state, so logins started in
    /// several tabs do not overwrite each other.
    pub fn cookie_name(login_prefix: &str, state: &str) -> String {
        let digest = crypto::sha256_b64url(state.as_bytes());
        format!("{login_prefix}{}", &digest[..8])
    }

    pub fn seal(
        &self,
        keys: &seal::SealingKeys,
        cookie_name: &str,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> String {
        let plaintext = serde_json::to_vec(self).unwrap_or_default();
        seal::seal(keys, &associated_data(cookie_name), &plaintext, rng)
    }

    pub fn open(keys: &seal::SealingKeys, cookie_name: &str, sealed: &str) -> Option<LoginState> {
        let plaintext = seal::open(keys, &associated_data(cookie_name), sealed)?;
        serde_json::from_slice(&plaintext).ok()
    }
}

/// Binds the sealed value to its cookie name and format version.
fn associated_data(cookie_name: &str) -> Vec<u8> {
    format!("oidc-filter login v1|{cookie_name}").into_bytes()
}
