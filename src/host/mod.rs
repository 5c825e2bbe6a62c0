//! proxy-wasm glue: translates host events into calls of the core and the
//! core's steps into host calls. No decisions are made here.

mod engine;
mod etcd_store;
mod filter;
mod metrics;
mod provider_fetch;
mod root;
mod store;
mod waiters;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}

/// Seconds since the UNIX epoch by the proxy's clock.
fn now(ctx: &impl proxy_wasm::traits::Context) -> u64 {
    ctx.get_current_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
