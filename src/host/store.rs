//! Envoy's shared data as the core's [`SharedData`], and the per-process
//! sealing key.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::crypto::seal::SealingKeys;
use crate::session::shared_store::{SharedData, WriteError};

/// Envoy's shared data of this plugin's `vm_id`.
pub struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        set(key, value, cas).map_err(|status| match status {
            Status::CasMismatch => WriteError::CasMismatch,
            other => WriteError::Failed(format!("{other:?}")),
        })
    }
}

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

const PROCESS_KEY: &str = "keys/login";

/// The random key made once per Envoy process and shared by its workers
/// through shared data, for deployments that configure no keys. The AES key
/// schedule is kept per VM and rebuilt only if the shared key changed (two
/// workers may race to make it at start; all then use the last one written).
#[derive(Default)]
pub struct ProcessKeys {
    cached: std::cell::RefCell<Option<(Vec<u8>, std::rc::Rc<SealingKeys>)>>,
}

impl ProcessKeys {
    pub fn current(&self) -> Option<std::rc::Rc<SealingKeys>> {
        let raw = match get(PROCESS_KEY).0 {
            Some(raw) => raw,
            None => create_process_key()?,
        };
        let mut cached = self.cached.borrow_mut();
        if let Some((cached_raw, keys)) = cached.as_ref() {
            if *cached_raw == raw {
                return Some(keys.clone());
            }
        }
        let keys = std::rc::Rc::new(key_from(&raw)?);
        *cached = Some((raw, keys.clone()));
        Some(keys)
    }
}

fn create_process_key() -> Option<Vec<u8>> {
    let mut key = [0u8; 32];
    if let Err(err) = getrandom_fill(&mut key) {
        log::error!("no randomness for the sealing key: {err}");
        return None;
    }
    // Two workers may race here; both re-read, so they agree on the last write.
    if let Err(status) = set(PROCESS_KEY, &key, None) {
        log::error!("sealing key could not be shared: {status:?}");
    }
    get(PROCESS_KEY).0
}

fn key_from(raw: &[u8]) -> Option<SealingKeys> {
    let key: [u8; 32] = raw.try_into().ok()?;
    SealingKeys::from_raw(vec![key]).ok()
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), rand_core::Error> {
    use rand_core::RngCore;
    rand_core::OsRng.try_fill_bytes(buf)
}
