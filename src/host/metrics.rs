//! Counters and gauges Envoy shows under the `wasmcustom` stats prefix.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::session::shared_store::Changes;

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
        Metrics {
            sessions_created: define(MetricType::Counter, "oidc_filter.sessions_created"),
            sessions_expired: define(MetricType::Counter, "oidc_filter.sessions_expired"),
            sessions_evicted: define(MetricType::Counter, "oidc_filter.sessions_evicted"),
            sessions_live: define(MetricType::Gauge, "oidc_filter.sessions_live"),
            index_links_live: define(MetricType::Gauge, "oidc_filter.index_links_live"),
            backchannel_logouts: define(
                MetricType::Counter,
                "oidc_filter.backchannel_logout_sessions_ended",
            ),
            metadata_fetch_failures: define(
                MetricType::Counter,
                "oidc_filter.metadata_fetch_failures",
            ),
        }
    }

    pub fn record(&self, changes: &Changes) {
        add(self.sessions_created, changes.created);
        add(self.sessions_expired, changes.expired);
        add(self.sessions_evicted, changes.evicted);
    }

    /// A discovery or JWKS fetch failed (scheduled, or a refetch for an unknown key).
    pub fn metadata_fetch_failed(&self) {
        add(self.metadata_fetch_failures, 1);
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
