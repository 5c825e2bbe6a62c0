//! The per-instance prefix of shared-data keys, and values framed with their
//! key for hosts whose store may confuse keys.
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

/// A stored value prefixed with its own key and a NUL, for hosts whose store
/// may hand one key's value to another: ngx_wasm_module finds keys by their
/// CRC32 alone, so two keys with the same checksum share one entry.
pub fn frame(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1 + value.len());
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out.extend_from_slice(value);
    out
}

/// The value of a [`frame`]d entry if it belongs to `key`; `None` when the
/// entry holds another key's value (or no frame at all).
pub fn unframe<'a>(key: &str, stored: &'a [u8]) -> Option<&'a [u8]> {
    let rest = stored.strip_prefix(key.as_bytes())?;
    rest.strip_prefix(&[0u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_value_is_only_read_back_under_its_own_key() {
        let stored = frame("oidc-1:sess/3", b"{\"x\":1}");
        assert_eq!(unframe("oidc-1:sess/3", &stored), Some(&b"{\"x\":1}"[..]));
        assert_eq!(unframe("oidc-1:sess/4", &stored), None);
        assert_eq!(unframe("oidc-1:sess/", &stored), None);
        assert_eq!(
            unframe("oidc-1:sess/3", b"{\"x\":1}"),
            None,
            "an unframed value"
        );
        assert_eq!(unframe("k", &frame("k", b"")), Some(&b""[..]));
    }

    #[test]
    fn crc32_twins_are_told_apart() {
        // "plumless" and "buckeroo" share a CRC32 (0x4ddb0c25), the classic example.
        let stored = frame("plumless", b"one");
        assert_eq!(unframe("buckeroo", &stored), None);
    }

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
