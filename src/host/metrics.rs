//! Counters and gauges Envoy shows under the `wasmcustom` stats prefix.

use std::cell::RefCell;
use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::flow::event::{self, Metric};
use crate::session::shared_store::Changes;

/// A provider document the root context (or a request, for a `kid` refetch) fetched.
#[derive(Debug, Clone, Copy)]
pub enum Fetch {
    Discovery,
    Jwks,
}

/// Metric ids of this VM. Every VM defining the same name shares one
/// process-wide stat, so counts add up across workers.
pub struct Metrics {
    sessions_created: Option<u32>,
    sessions_expired: Option<u32>,
    sessions_evicted: Option<u32>,
    sessions_live: Option<u32>,
    index_links_live: Option<u32>,
    backchannel_logouts: Option<u32>,
    metadata_fetch_failures: Option<u32>,
    discovery_fetches: Option<u32>,
    jwks_fetches: Option<u32>,
    discovery_fetch_failures: Option<u32>,
    jwks_fetch_failures: Option<u32>,
    store_unavailable: Option<u32>,
    /// The flow's event counters by family and reason: all known ones are
    /// defined at start (so they show at 0), any other on first use.
    events: RefCell<HashMap<Metric, Option<u32>>>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("metric {name} could not be defined: {status:?}");
            None
        }
    }
}

fn counter(name: &str) -> Option<u32> {
    define(
        MetricType::Counter,
        &format!("{}{name}", event::METRIC_PREFIX),
    )
}

fn add(id: Option<u32>, n: usize) {
    if let (Some(id), Ok(n)) = (id, i64::try_from(n)) {
        if n > 0 {
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

fn set(id: Option<u32>, n: usize) {
    if let (Some(id), Ok(n)) = (id, u64::try_from(n)) {
        let _ = hostcalls::record_metric(id, n);
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        let events = event::known_metrics()
            .into_iter()
            .map(|metric| {
                let id = define(MetricType::Counter, &metric.full_name());
                (metric, id)
            })
            .collect();
        Metrics {
            sessions_created: counter("sessions_created"),
            sessions_expired: counter("sessions_expired"),
            sessions_evicted: counter("sessions_evicted"),
            sessions_live: define(
                MetricType::Gauge,
                &format!("{}sessions_live", event::METRIC_PREFIX),
            ),
            index_links_live: define(
                MetricType::Gauge,
                &format!("{}index_links_live", event::METRIC_PREFIX),
            ),
            backchannel_logouts: counter("backchannel_logout_sessions_ended"),
            metadata_fetch_failures: counter("metadata_fetch_failures"),
            discovery_fetches: counter("discovery_fetches"),
            jwks_fetches: counter("jwks_fetches"),
            discovery_fetch_failures: counter("discovery_fetch_failures"),
            jwks_fetch_failures: counter("jwks_fetch_failures"),
            store_unavailable: counter("store_unavailable"),
            events: RefCell::new(events),
        }
    }

    /// Counts one of the flow's events: a map lookup and an increment.
    pub fn count(&self, metric: Metric) {
        let mut events = self.events.borrow_mut();
        let id = *events
            .entry(metric)
            .or_insert_with(|| define(MetricType::Counter, &metric.full_name()));
        add(id, 1);
    }

    pub fn record(&self, changes: &Changes) {
        add(self.sessions_created, changes.created);
        add(self.sessions_expired, changes.expired);
        add(self.sessions_evicted, changes.evicted);
    }

    /// A discovery or JWKS document was fetched and accepted.
    pub fn fetched(&self, what: Fetch) {
        match what {
            Fetch::Discovery => add(self.discovery_fetches, 1),
            Fetch::Jwks => add(self.jwks_fetches, 1),
        }
    }

    /// A discovery or JWKS fetch failed (scheduled, or a refetch for an unknown key).
    pub fn fetch_failed(&self, what: Fetch) {
        add(self.metadata_fetch_failures, 1);
        match what {
            Fetch::Discovery => add(self.discovery_fetch_failures, 1),
            Fetch::Jwks => add(self.jwks_fetch_failures, 1),
        }
    }

    /// The session store (etcd) could not answer a request's operation.
    pub fn store_unavailable(&self) {
        add(self.store_unavailable, 1);
    }

    pub fn backchannel_ended(&self, n: usize) {
        add(self.backchannel_logouts, n);
    }

    /// The counts of a finished sweep pass.
    pub fn set_live(&self, changes: &Changes) {
        set(self.sessions_live, changes.live);
        set(self.index_links_live, changes.index_links);
    }
}
