//! The root context: configuration, background fetches, HTTP contexts.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::engine::Engine;
use super::filter::Filter;
use super::metrics::{Fetch, Metrics};
use super::provider_fetch::{self, ProviderCache};
use super::store::{HostSharedData, ProcessKeys};
use super::waiters::Waiters;
use crate::config::Config;
use crate::oidc::discovery::{self, ProviderMetadata};
use crate::oidc::jwks::Jwks;
use crate::session::namespace;
use crate::session::shared_store::SessionStore;

/// What the root context shares with the HTTP contexts of its VM.
pub struct Shared {
    pub engine: Engine,
    pub config: Config,
    pub provider: RefCell<ProviderCache>,
    pub store: SessionStore<HostSharedData>,
    pub process_keys: ProcessKeys,
    pub metrics: Metrics,
    /// Requests of this VM waiting on a session's refresh.
    pub waiters: Waiters,
    /// Set with the etcd session store.
    pub etcd: Option<super::etcd_store::EtcdShared>,
    /// What this VM remembers between requests (see [`crate::flow::Caches`]).
    pub caches: RefCell<crate::flow::Caches>,
}

enum Fetching {
    Discovery(u32),
    /// Discovery answered; the keys are fetched from the next tick, because
    /// ngx_wasm_module crashes on a callout dispatched from a root context's
    /// `on_http_call_response`.
    JwksDue(Box<ProviderMetadata>),
    Jwks(u32, Box<ProviderMetadata>),
}

/// Ticks this often, so that requests waiting on a refresh go on soon after
/// it ends (see [`super::waiters`]); set once, since Kong's engine traps on a
/// second `set_tick_period`.
const TICK: Duration = Duration::from_millis(100);

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    fetching: Option<Fetching>,
    /// The second of the last background work: fetches and sweeps run once a
    /// second, whatever the tick.
    background_at: u64,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = super::now(self);
        let data = &shared.store.data;
        let outcome = provider_fetch::read_response(self, shared.engine, num_headers, body_size);
        match self.fetching.take() {
            Some(Fetching::Discovery(expected)) if expected == token => {
                let metadata = provider_fetch::expect_ok(outcome, "discovery").and_then(|body| {
                    discovery::parse_discovery(
                        &body,
                        &shared.config.issuer,
                        shared.config.allow_http,
                    )
                    .map_err(|e| format!("discovery document refused: {e}"))
                });
                match metadata {
                    Ok(metadata) => {
                        shared.metrics.fetched(Fetch::Discovery);
                        self.fetching = Some(Fetching::JwksDue(Box::new(metadata)))
                    }
                    Err(reason) => provider_fetch::record_failure(
                        data,
                        &shared.metrics,
                        Fetch::Discovery,
                        now,
                        &reason,
                    ),
                }
            }
            Some(Fetching::Jwks(expected, metadata)) if expected == token => {
                let jwks = provider_fetch::expect_ok(outcome, "JWKS").and_then(|body| {
                    Jwks::parse(&body).map_err(|e| format!("JWKS refused: {e}"))?;
                    String::from_utf8(body).map_err(|_| "JWKS is not UTF-8".to_string())
                });
                match jwks {
                    Ok(jwks) => {
                        shared.metrics.fetched(Fetch::Jwks);
                        provider_fetch::record_success(data, &shared.config, now, *metadata, jwks);
                        shared.provider.borrow_mut().reload(now);
                    }
                    Err(reason) => provider_fetch::record_failure(
                        data,
                        &shared.metrics,
                        Fetch::Jwks,
                        now,
                        &reason,
                    ),
                }
            }
            other => self.fetching = other,
        }
    }
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            shared: None,
            fetching: None,
            background_at: 0,
        }
    }

    fn fetch_jwks(&mut self, shared: &Shared, now: u64, metadata: Box<ProviderMetadata>) {
        let callout = provider_fetch::jwks_callout(&shared.config, &metadata);
        match provider_fetch::dispatch(self, shared.engine, &callout) {
            Ok(token) => self.fetching = Some(Fetching::Jwks(token, metadata)),
            Err(status) => provider_fetch::record_failure(
                &shared.store.data,
                &shared.metrics,
                Fetch::Jwks,
                now,
                &format!("JWKS callout not sent: {status:?}"),
            ),
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&raw, |name| std::env::var(name).ok()) {
            Ok(config) => {
                // Below this level nothing reaches the proxy, whatever its own level.
                log::set_max_level(config.log_level);
                let engine = Engine::detect();
                log::info!("oidc-filter: running on {}", engine.name());
                let prefix = namespace::instance_prefix(&config.issuer, &config.client_id);
                let data = HostSharedData::new(prefix, engine);
                let store = SessionStore {
                    data: data.clone(),
                    layout: config.session.layout(),
                    issuer: config.issuer.clone(),
                    idle_timeout: config.session.idle_timeout,
                    absolute_timeout: config.session.absolute_timeout,
                    max_sessions: config.session.max_sessions,
                    max_sessions_per_subject: config.session.max_sessions_per_subject,
                    sweeper_id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
                    sweep_seen: Default::default(),
                    records: Default::default(),
                };
                let etcd = super::etcd_store::EtcdShared::new(&config);
                self.shared = Some(Rc::new(Shared {
                    etcd,
                    engine,
                    config,
                    provider: RefCell::new(ProviderCache::new(data.clone())),
                    store,
                    process_keys: ProcessKeys::new(data.clone()),
                    metrics: Metrics::define(),
                    waiters: Waiters::default(),
                    caches: Default::default(),
                }));
                // On Envoy the first on_configure runs in the canary VM, before
                // any worker: the one key that must exist before workers race.
                crate::session::first_write::create_lock(&data);
                // Fetches start from the first tick: a callout made here would die
                // with the short-lived canary VM that runs on_configure.
                self.set_tick_period(TICK);
                true
            }
            Err(err) => {
                log::error!("oidc-filter: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = super::now(self);
        if now != self.background_at {
            self.background_at = now;
            self.background(&shared, now);
        }
        shared
            .waiters
            .wake_ready(&shared.store.data, self.context_id, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Filter::handle(shared, context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Once a second on every VM: the sweep's slice, and the metadata fetch
    /// when it is due (one VM takes it).
    fn background(&mut self, shared: &Shared, now: u64) {
        sweep_if_due(shared, now);
        match self.fetching.take() {
            Some(Fetching::JwksDue(metadata)) => return self.fetch_jwks(shared, now, metadata),
            Some(other) => {
                self.fetching = Some(other);
                return;
            }
            None => {}
        }
        let data = &shared.store.data;
        // Two callouts and the tick between them.
        let lease = 2 * shared.config.callout_timeout_ms.div_ceil(1000) + 2;
        if !provider_fetch::claim_fetch(data, now, lease) {
            return;
        }
        let callout = provider_fetch::discovery_callout(&shared.config);
        match provider_fetch::dispatch(self, shared.engine, &callout) {
            Ok(token) => self.fetching = Some(Fetching::Discovery(token)),
            Err(status) => provider_fetch::record_failure(
                data,
                &shared.metrics,
                Fetch::Discovery,
                now,
                &format!("discovery callout not sent: {status:?}"),
            ),
        }
    }
}

/// Workers take turns sweeping a slice of the store each tick.
fn sweep_if_due(shared: &Shared, now: u64) {
    if shared.config.session.store != crate::config::SessionStoreKind::SharedData {
        return; // nothing of cookie sessions lives in shared data but the bounded deny-list
    }
    if let Some(changes) = shared
        .store
        .sweep_tick(now, shared.config.session.sweep_interval)
    {
        shared.metrics.record(&changes);
        if changes.pass_ended {
            shared.metrics.set_live(&changes);
        }
    }
}
