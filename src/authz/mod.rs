//! Who may pass: public paths, how unauthenticated requests are answered, bearer
//! token settings and the claim rules every authenticated request must meet.

pub mod config;
pub mod public_paths;
pub mod request_kind;
pub mod rules;

pub use config::{AccessConfig, BearerConfig, BearerMode, IntrospectionConfig};
