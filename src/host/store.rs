//! The host's shared data, keyed as the core names things: sessions, the
//! single-use ledger, the provider documents and the per-process sealing key.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::crypto::seal::SealingKeys;
use crate::flow::StoreWrite;
use crate::session::once::{self, Mark};

/// A value, treating the empty value that removal leaves behind as absent.
pub fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) if !value.is_empty() => (Some(value), cas),
        Ok((_, cas)) => (None, cas),
        Err(status) => {
            log::warn!("shared data read of {key} failed: {status:?}");
            (None, None)
        }
    }
}

pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

pub fn apply(writes: Vec<StoreWrite>) {
    for write in writes {
        let result = match write {
            StoreWrite::Put { key, session } => set(&key, &session.encode(), None),
            StoreWrite::Delete { key } => hostcalls::set_shared_data(&key, None, None),
            StoreWrite::Cache { key, value } => set(&key, &value, None),
        };
        if let Err(status) = result {
            log::error!("session store write failed: {status:?}");
        }
    }
}

/// Records a login in the single-use ledger. `true` on first use.
pub fn record_login(key: &str, issued_at: u64, state: &str) -> bool {
    for _ in 0..8 {
        let (value, cas) = get(key);
        match once::mark(value.as_deref(), issued_at, state) {
            Mark::AlreadyUsed => return false,
            Mark::Record(updated) => match set(key, &updated, cas) {
                Ok(()) => return true,
                Err(Status::CasMismatch) => continue,
                Err(status) => {
                    log::error!("single-use ledger write failed: {status:?}");
                    return false;
                }
            },
        }
    }
    log::error!("single-use ledger stayed contended; login refused");
    false
}

const PROCESS_KEY: &str = "keys/login";

/// The configured keys, or a random key made once per Envoy process and shared
/// by its workers through shared data.
pub fn process_sealing_key() -> Option<SealingKeys> {
    if let (Some(raw), _) = get(PROCESS_KEY) {
        return key_from(&raw);
    }
    let mut key = [0u8; 32];
    if let Err(err) = getrandom_fill(&mut key) {
        log::error!("no randomness for the sealing key: {err}");
        return None;
    }
    // Two workers may race here; both re-read, so they agree on the last write.
    if let Err(status) = set(PROCESS_KEY, &key, None) {
        log::error!("sealing key could not be shared: {status:?}");
    }
    get(PROCESS_KEY).0.and_then(|raw| key_from(&raw))
}

fn key_from(raw: &[u8]) -> Option<SealingKeys> {
    let key: [u8; 32] = raw.try_into().ok()?;
    SealingKeys::from_raw(vec![key]).ok()
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), rand_core::Error> {
    use rand_core::RngCore;
    rand_core::OsRng.try_fill_bytes(buf)
}
