//! Fetching provider metadata and keys by callout, and sharing them across VMs.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::Context;
use proxy_wasm::types::Status;

use super::engine::Engine;
use super::metrics::{Fetch, Metrics};
use super::store::HostSharedData;
use crate::config::Config;
use crate::flow::{Callout, CalloutOutcome};
use crate::oidc::discovery::{self, ProviderMetadata};
use crate::oidc::jwks::Jwks;
use crate::provider::schedule::FetchStatus;
use crate::provider::{Provider, SharedProvider};

const DOCUMENT_KEY: &str = "provider/document";
const STATUS_KEY: &str = "provider/status";

/// Provider responses larger than this are refused rather than copied in.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// This VM's parsed copy of the shared provider documents.
pub struct ProviderCache {
    data: HostSharedData,
    provider: Option<Rc<Provider>>,
    cas: Option<u32>,
    checked_at: u64,
}

impl ProviderCache {
    pub fn new(data: HostSharedData) -> ProviderCache {
        ProviderCache {
            data,
            provider: None,
            cas: None,
            checked_at: 0,
        }
    }

    /// Re-reads shared data at most once a second, re-parses only on change.
    pub fn current(&mut self, now: u64) -> Option<Rc<Provider>> {
        if self.provider.is_none() || now != self.checked_at {
            self.reload(now);
        }
        self.provider.clone()
    }

    pub fn reload(&mut self, now: u64) {
        self.checked_at = now;
        let (value, cas) = self.data.read(DOCUMENT_KEY);
        if cas == self.cas && self.provider.is_some() {
            return;
        }
        let Some(shared) = value.as_deref().and_then(SharedProvider::decode) else {
            return;
        };
        match shared.to_provider() {
            Some(provider) => {
                self.provider = Some(Rc::new(provider));
                self.cas = cas;
            }
            None => {
                log::error!("shared provider document does not parse; keeping the previous one")
            }
        }
    }
}

/// Takes the fetch lease if a fetch is due. The first VM to see no status
/// creates it, because compare-and-swap on an absent key always succeeds.
pub fn claim_fetch(data: &HostSharedData, now: u64, lease_seconds: u64) -> bool {
    let (value, cas) = data.read(STATUS_KEY);
    let Some(status) = value.as_deref().and_then(FetchStatus::decode) else {
        let _ = data.write(STATUS_KEY, &FetchStatus::default().encode(), None);
        return false;
    };
    match status.claim(now, lease_seconds) {
        Some(claimed) => data.write(STATUS_KEY, &claimed.encode(), cas).is_ok(),
        None => false,
    }
}

pub fn record_failure(
    data: &HostSharedData,
    metrics: &Metrics,
    fetch: Fetch,
    now: u64,
    what: &str,
) {
    metrics.fetch_failed(fetch);
    let (value, _) = data.read(STATUS_KEY);
    let status = value
        .as_deref()
        .and_then(FetchStatus::decode)
        .unwrap_or_default();
    let next = status.failed(now);
    log::warn!(
        "identity provider metadata: {what}; retrying in {}s (attempt {})",
        next.next_attempt_at.saturating_sub(now),
        next.failures
    );
    let _ = data.write(STATUS_KEY, &next.encode(), None);
}

pub fn record_success(
    data: &HostSharedData,
    config: &Config,
    now: u64,
    metadata: ProviderMetadata,
    jwks: String,
) {
    // A scheduled fetch does not reset the rate limit of refetches on unknown `kid`s.
    let kid_refetches = data
        .read(DOCUMENT_KEY)
        .0
        .as_deref()
        .and_then(SharedProvider::decode)
        .map(|previous| previous.kid_refetches)
        .unwrap_or_default();
    let shared = SharedProvider {
        metadata,
        jwks,
        metadata_fetched_at: now,
        jwks_fetched_at: now,
        kid_refetches,
    };
    if let Err(status) = data.write(DOCUMENT_KEY, &shared.encode(), None) {
        log::error!("provider document could not be shared: {status:?}");
        return;
    }
    let _ = data.write(
        STATUS_KEY,
        &FetchStatus::succeeded(now, config.metadata_refresh).encode(),
        None,
    );
    log::info!(
        "identity provider metadata and keys loaded from {}",
        config.issuer
    );
}

/// Claims a keys refetch for `kid` for every VM with compare-and-swap on the
/// shared document, so an unknown `kid` causes one fetch, not one per worker.
pub fn claim_jwks_refetch(data: &HostSharedData, kid: &str, now: u64) -> bool {
    let (value, cas) = data.read(DOCUMENT_KEY);
    let Some(mut shared) = value.as_deref().and_then(SharedProvider::decode) else {
        return false;
    };
    if !shared.kid_refetches.claim(kid, now) {
        return false;
    }
    data.write(DOCUMENT_KEY, &shared.encode(), cas).is_ok()
}

/// Replaces the shared keys after a refetch for `kid`. Refuses a set that does
/// not parse. A failed refetch still counts against the rate limit.
pub fn store_refetched_jwks(
    data: &HostSharedData,
    kid: &str,
    now: u64,
    body: &[u8],
) -> Result<(), String> {
    let parsed = Jwks::parse(body).map_err(|e| e.to_string())?;
    let jwks = String::from_utf8(body.to_vec()).map_err(|_| "JWKS is not UTF-8".to_string())?;
    for _ in 0..4 {
        let (value, cas) = data.read(DOCUMENT_KEY);
        let mut shared = value
            .as_deref()
            .and_then(SharedProvider::decode)
            .ok_or("no provider document to update")?;
        shared.jwks = jwks.clone();
        shared.jwks_fetched_at = now;
        shared.kid_refetches.refetched(kid, &parsed, now);
        match data.write(DOCUMENT_KEY, &shared.encode(), cas) {
            Ok(()) => return Ok(()),
            Err(Status::CasMismatch) => continue,
            Err(status) => return Err(format!("shared data write failed: {status:?}")),
        }
    }
    Err("provider document stayed contended".to_string())
}

pub fn discovery_callout(config: &Config) -> Callout {
    Callout::new(config, "GET", &discovery::discovery_url(&config.issuer_url))
}

pub fn jwks_callout(config: &Config, metadata: &ProviderMetadata) -> Callout {
    Callout::new(config, "GET", &metadata.jwks_uri)
}

/// Sends a callout. `:scheme` tells ngx_wasm_module to use TLS (Envoy takes
/// TLS from the cluster and ignores it).
pub fn dispatch(ctx: &dyn Context, engine: Engine, callout: &Callout) -> Result<u32, Status> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", callout.method),
        (":scheme", &callout.scheme),
        (":path", &callout.path),
        (":authority", &callout.authority),
    ];
    headers.extend(
        callout
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let body = (!callout.body.is_empty()).then_some(callout.body.as_slice());
    let result = ctx.dispatch_http_call(
        &callout.cluster,
        headers,
        body,
        vec![],
        Duration::from_millis(callout.timeout_ms),
    );
    if let Err(status) = &result {
        log::error!(
            "callout to provider_cluster {:?} could not be sent ({status:?}): {}",
            callout.cluster,
            engine.callout_hint()
        );
    }
    result
}

/// Reads a finished callout. Envoy reports timeouts and connection failures as
/// ordinary 503/504 answers, and a reset as no headers at all;
/// ngx_wasm_module reports every failure (an unresolvable name too) as no
/// headers.
pub fn read_response(
    ctx: &dyn Context,
    engine: Engine,
    num_headers: usize,
    body_size: usize,
) -> CalloutOutcome {
    if num_headers == 0 {
        let reason = match engine {
            Engine::Envoy => "the connection was reset".to_string(),
            Engine::NgxWasm => format!(
                "no answer (see the engine's error above; {})",
                engine.callout_hint()
            ),
        };
        return CalloutOutcome::Failed(reason);
    }
    let status = ctx
        .get_http_call_response_header_bytes(":status")
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
    let Some(status) = status else {
        return CalloutOutcome::Failed("the answer had no status".to_string());
    };
    if body_size > MAX_RESPONSE_BYTES {
        return CalloutOutcome::Failed(format!("the answer was too large ({body_size} bytes)"));
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        ctx.get_http_call_response_body(0, body_size)
            .unwrap_or_default()
    };
    CalloutOutcome::Response { status, body }
}

/// Judges a finished fetch into the value to use, or a reason.
pub fn expect_ok(outcome: CalloutOutcome, what: &str) -> Result<Vec<u8>, String> {
    match outcome {
        CalloutOutcome::Response { status: 200, body } => Ok(body),
        CalloutOutcome::Response { status, .. } => Err(format!("{what} answered HTTP {status}")),
        CalloutOutcome::Failed(reason) => Err(format!("{what} failed: {reason}")),
    }
}
