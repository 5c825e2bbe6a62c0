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

/// The most of a return target a login cookie keeps, counted as it is sealed
/// (JSON-escaped). With the rest of the state the `Set-Cookie` stays near
/// 2.5 KB, well under the 4 KB browsers keep: a longer cookie is dropped and
/// the login could never complete.
pub const MAX_RETURN_TO_BYTES: usize = 1536;

/// `target` if it fits, else its path without the query, else `/`: the user may
/// lose a long query but always gets logged in.
pub fn bounded_return_to(target: String) -> String {
    let fits =
        |t: &str| serde_json::to_string(t).is_ok_and(|json| json.len() <= MAX_RETURN_TO_BYTES);
    if fits(&target) {
        return target;
    }
    match target.split_once('?') {
        Some((path, _)) if fits(path) => path.to_string(),
        _ => "/".to_string(),
    }
}

/// Characters of the state's digest that name a login cookie.
const LOGIN_COOKIE_SUFFIX_LEN: usize = 8;

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
        format!("{login_prefix}{}", &digest[..LOGIN_COOKIE_SUFFIX_LEN])
    }

    /// Whether `name` has the form of [`LoginState::cookie_name`]: the prefix and
    /// exactly the digest's characters. An application cookie that merely starts
    /// with the prefix is not ours, so it is neither expired nor stripped.
    pub fn is_cookie_name(login_prefix: &str, name: &[u8]) -> bool {
        name.strip_prefix(login_prefix.as_bytes())
            .is_some_and(|suffix| {
                suffix.len() == LOGIN_COOKIE_SUFFIX_LEN
                    && suffix
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cookies::{self, CookieAttributes, SameSite};
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn only_names_of_the_login_cookie_form_are_login_cookies() {
        let prefix = "__Host-oidc-login-";
        let name = LoginState::cookie_name(prefix, "some-state");
        assert!(LoginState::is_cookie_name(prefix, name.as_bytes()));
        for other in [
            "__Host-oidc-login-",
            "__Host-oidc-login-preferences",
            "__Host-oidc-login-abcdefg",
            "__Host-oidc-login-abcdefgh1",
            "__Host-oidc-login-abc.efgh",
            "oidc-login-abcdefgh",
        ] {
            assert!(
                !LoginState::is_cookie_name(prefix, other.as_bytes()),
                "{other}"
            );
        }
    }

    #[test]
    fn long_targets_are_cut_to_fit_a_cookie() {
        let short = "/page?q=1".to_string();
        assert_eq!(bounded_return_to(short.clone()), short);
        let path = format!("/{}", "p".repeat(1000));
        let long_query = format!("{path}?q={}", "x".repeat(5000));
        assert_eq!(bounded_return_to(long_query), path);
        assert_eq!(bounded_return_to(format!("/{}", "p".repeat(5000))), "/");
        assert_eq!(bounded_return_to(format!("/{}?q=1", "p".repeat(5000))), "/");
        // Escapes count: 800 quotes are 1600 bytes of JSON.
        let quotes = format!("/a?q={}", "\"".repeat(800));
        assert_eq!(bounded_return_to(quotes), "/a");
        let at_limit = format!("/{}", "a".repeat(MAX_RETURN_TO_BYTES - 3));
        assert_eq!(bounded_return_to(at_limit.clone()), at_limit);
    }

    #[test]
    fn the_largest_login_cookie_stays_well_under_4_kb() {
        let keys = seal::SealingKeys::from_raw(vec![[1; 32]]).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        // The worst case: every byte of the allowance used.
        let target = bounded_return_to(format!("/{}", "a".repeat(MAX_RETURN_TO_BYTES - 3)));
        let login = LoginState::new(target, u64::MAX, &mut rng);
        let name = LoginState::cookie_name("__Host-oidc-login-", &login.state);
        let attrs = CookieAttributes {
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_string(),
            domain: Some("a-rather-long-subdomain.of.an.example.com".to_string()),
        };
        let sealed = login.seal(&keys, &name, &mut rng);
        let header = cookies::set_cookie(&name, &sealed, Some(600), &attrs);
        assert!(header.len() < 3000, "{} bytes", header.len());
        assert_eq!(LoginState::open(&keys, &name, &sealed), Some(login));
    }
}
