//! Which proxy-wasm host runs the filter, detected once at start, and the few
//! behaviours that differ between hosts.

use proxy_wasm::hostcalls;

/// The proxy-wasm host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Envoy (V8 or another runtime).
    Envoy,
    /// Kong's ngx_wasm_module inside nginx (Kong Gateway 3.4–3.9).
    NgxWasm,
}

impl Engine {
    /// Envoy answers the `node` property (empty when the bootstrap names no
    /// node) and `plugin_vm_id` (empty when no `vm_id` is set, which the
    /// documentation forbids); ngx_wasm_module implements neither (and logs
    /// that once per worker at start).
    ///
    /// The SDK's `Context::get_property` panics when the host answers with an
    /// error, which ngx_wasm_module does for some properties outside a request
    /// ("cannot get scoped properties outside of a request"): an error here
    /// means "not answered", never a dead VM.
    pub fn detect() -> Engine {
        let answers = |name: &str| {
            hostcalls::get_property(vec![name]).is_ok_and(|v| v.is_some_and(|v| !v.is_empty()))
        };
        if answers("node") || answers("plugin_vm_id") {
            Engine::Envoy
        } else {
            Engine::NgxWasm
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Envoy => "Envoy",
            Engine::NgxWasm => "nginx with ngx_wasm_module (Kong's proxy-wasm engine)",
        }
    }

    /// What `provider_cluster` names on this host, for error messages.
    pub fn callout_hint(self) -> &'static str {
        match self {
            Engine::Envoy => "is the cluster defined in Envoy?",
            Engine::NgxWasm => {
                "on this engine provider_cluster is the provider's address as host[:port]: \
                 an IP, or a name nginx can resolve (resolver / resolver_add in the wasm{} block)"
            }
        }
    }

    /// ngx_wasm_module runs `on_http_request_body` only after the request
    /// headers continued, with the whole body at once, and never says in
    /// `on_http_request_headers` that the headers ended the stream. Envoy
    /// delivers the body while the headers are paused.
    pub fn body_follows_headers(self) -> bool {
        self == Engine::NgxWasm
    }

    /// ngx_wasm_module only marks a removed request header, and nginx's
    /// `proxy_pass` still forwards it; overwriting the value in place keeps the
    /// client's value from the upstream (an empty header still arrives).
    pub fn removal_forwards_header(self) -> bool {
        self == Engine::NgxWasm
    }

    /// Envoy lets the root context's tick act on a paused request once
    /// `set_effective_context` names it, which is how requests waiting on a
    /// refresh are woken ([`super::waiters`]). ngx_wasm_module (0.6.0)
    /// implements `set_effective_context` as a no-op: calls from a tick stay
    /// the root's, and setting a request header there traps ("can only set
    /// request headers before response is produced"), which restarts the VM
    /// and leaves every parked request hanging.
    pub fn wakes_requests_from_tick(self) -> bool {
        self == Engine::Envoy
    }

    /// ngx_wasm_module's set of a request header the client sent more than
    /// once marks every copy as removed, the one it updated too.
    pub fn set_clears_duplicates(self) -> bool {
        self == Engine::NgxWasm
    }
}
