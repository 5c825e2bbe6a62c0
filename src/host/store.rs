//! The host's shared data as the core's [`SharedData`], and the per-process
//! sealing key.
//!
//! Hosts disagree on compare-and-swap: Envoy reads cas 0 as "overwrite" and
//! ignores the cas of an absent key; ngx_wasm_module reads cas 0 as "only if
//! absent" and refuses any other cas for an absent key. Writes here keep
//! Envoy's contract (the one the core is written against) on both.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use super::engine::Engine;
use crate::crypto::seal::SealingKeys;
use crate::session::shared_store::{SharedData, WriteError};
use crate::session::{namespace, process_key};

/// Overwrites race other workers' writes; give up rather than spin.
const OVERWRITE_ATTEMPTS: usize = 8;

/// The host's shared data, every key under this filter instance's prefix.
#[derive(Clone)]
pub struct HostSharedData {
    prefix: String,
    /// Values carry their key ([`namespace::frame`]): ngx_wasm_module finds a
    /// key by its CRC32 only, so two keys can share one entry.
    framed: bool,
}

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.read(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        self.write(key, value, cas).map_err(|status| match status {
            Status::CasMismatch => WriteError::CasMismatch,
            other => WriteError::Failed(format!("{other:?}")),
        })
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_millis() as u64)
    }
}

impl HostSharedData {
    /// `prefix` keeps two filter instances in one key space apart
    /// (see [`crate::session::namespace`]).
    pub fn new(prefix: String, engine: Engine) -> HostSharedData {
        HostSharedData {
            prefix,
            framed: engine == Engine::NgxWasm,
        }
    }

    /// A value, treating the empty value that removal leaves behind as absent.
    pub fn read(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let key = self.full_key(key);
        match hostcalls::get_shared_data(&key) {
            Ok((Some(value), cas)) if self.framed => match namespace::unframe(&key, &value) {
                Some(own) if !own.is_empty() => (Some(own.to_vec()), cas),
                Some(_) => (None, cas),
                None => {
                    // Another key's value in this key's entry: absent here, and
                    // the version lets a write take the entry over.
                    log::warn!("shared data entry of {key} holds another key's value");
                    (None, cas)
                }
            },
            Ok((Some(value), cas)) if !value.is_empty() => (Some(value), cas),
            Ok((_, cas)) => (None, cas),
            Err(status) => {
                log::warn!("shared data read of {key} failed: {status:?}");
                (None, None)
            }
        }
    }

    /// Writes `value`: without `cas` unconditionally, with `cas` only if the
    /// key is still at that version or absent.
    pub fn write(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        let key = self.full_key(key);
        let framed;
        let value = if self.framed {
            framed = namespace::frame(&key, value);
            &framed[..]
        } else {
            value
        };
        match cas {
            Some(cas) => compare_and_swap(&key, value, cas),
            None => overwrite(&key, value),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// The version a write must name to replace what is there now: the current
/// cas, or 0 for an absent key (which both hosts read as "create").
fn current_cas(key: &str) -> u32 {
    match hostcalls::get_shared_data(key) {
        Ok((_, Some(cas))) => cas,
        _ => 0,
    }
}

/// An unconditional write expressed as compare-and-swap against the current
/// version, so it is one on every host.
fn overwrite(key: &str, value: &[u8]) -> Result<(), Status> {
    for _ in 0..OVERWRITE_ATTEMPTS {
        match hostcalls::set_shared_data(key, Some(value), Some(current_cas(key))) {
            Err(Status::CasMismatch) => continue,
            other => return other,
        }
    }
    Err(Status::CasMismatch)
}

/// Compare-and-swap where an absent key accepts any version (Envoy's rule):
/// on a host that refused because the key is absent, create it if still absent.
fn compare_and_swap(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
        Err(Status::CasMismatch) if cas != 0 && current_cas(key) == 0 => {
            hostcalls::set_shared_data(key, Some(value), Some(0))
        }
        other => other,
    }
}

/// The random key made once per proxy process and shared by its workers
/// through shared data, for deployments that configure no keys (see
/// [`process_key`]: workers racing to make it at start all get the one
/// stored). The AES key schedule is kept per VM.
pub struct ProcessKeys {
    data: HostSharedData,
    cached: std::cell::RefCell<Option<(Vec<u8>, std::rc::Rc<SealingKeys>)>>,
}

impl ProcessKeys {
    pub fn new(data: HostSharedData) -> ProcessKeys {
        ProcessKeys {
            data,
            cached: Default::default(),
        }
    }

    pub fn current(&self) -> Option<std::rc::Rc<SealingKeys>> {
        let raw = process_key::shared_key(&self.data, random_key)?;
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

fn random_key() -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    if let Err(err) = getrandom_fill(&mut key) {
        log::error!("no randomness for the sealing key: {err}");
        return None;
    }
    Some(key)
}

fn key_from(raw: &[u8]) -> Option<SealingKeys> {
    let key: [u8; 32] = raw.try_into().ok()?;
    SealingKeys::from_raw(vec![key]).ok()
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), rand_core::Error> {
    use rand_core::RngCore;
    rand_core::OsRng.try_fill_bytes(buf)
}
