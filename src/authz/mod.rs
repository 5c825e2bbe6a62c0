//! Who may pass: public paths, how unauthenticated requests are answered, bearer
//! token settings and the claim rules every authenticated request must meet.

pub mod access;
pub mod claims;
pub mod public_paths;
pub mod request_kind;
pub mod rules;

pub use access::{AccessConfig, BearerConfig, BearerMode, IntrospectionConfig};
