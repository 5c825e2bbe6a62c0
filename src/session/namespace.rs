//! The per-instance prefix of shared-data keys.
//!
//! Envoy keeps each `vm_id`'s shared data apart, but ngx_wasm_module has one
//! key space per `shm_kv` zone for every filter in nginx (or Kong): two
//! instances of this filter for different providers would read each other's
//! provider document, keys and sessions without a prefix.

use sha2::{Digest, Sha256};

/// `oidc-` and 12 hex digits of SHA-256 over the issuer and client ID, then a
/// colon. Instances for the same client of the same provider share sessions,
/// as they do on Envoy with the same `vm_id`. No `/`: ngx_wasm_module reads
/// the text before a key's first `/` as the name of a `shm_kv` zone.
pub fn instance_prefix(issuer: &str, client_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(issuer.as_bytes())
        .chain_update([0u8])
        .chain_update(client_id.as_bytes())
        .finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("oidc-{hex}:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_per_provider_and_client_and_is_stable() {
        let a = instance_prefix("https://a.example", "app");
        assert_eq!(a, instance_prefix("https://a.example", "app"));
        assert_ne!(a, instance_prefix("https://b.example", "app"));
        assert_ne!(a, instance_prefix("https://a.example", "app2"));
        // The separator keeps "ab"+"c" apart from "a"+"bc".
        assert_ne!(instance_prefix("ab", "c"), instance_prefix("a", "bc"));
    }

    #[test]
    fn has_no_zone_separator() {
        let p = instance_prefix("https://idp.example/realms/x", "c/d");
        assert!(p.starts_with("oidc-") && p.ends_with(':') && p.len() == 18);
        assert!(!p.contains('/'));
    }
}
