//! Small pure HTTP helpers: cookies, cache control, paths and redirects, local pages.

pub mod cache_control;
pub mod callout;
pub mod cookies;
pub mod framing;
pub mod pages;
pub mod paths;
