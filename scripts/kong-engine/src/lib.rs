//! Re-exports Wasmtime's C API so cargo builds it as libwasmtime.so / libwasmtime.a.
pub use wasmtime_c_api::*;
