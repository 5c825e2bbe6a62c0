//! proxy-wasm glue: translates host events into calls of the core and back.
