//! The etcd session store, sans IO: requests to etcd's v3 JSON gateway, the
//! judging of its answers, and what the filter answers when etcd cannot.

pub mod api;
pub mod config;
pub mod ops;
pub mod transport;
pub mod unavailable;
