//! Small pure HTTP helpers: cookies, paths and redirects, local pages.

pub mod cookies;
pub mod framing;
pub mod pages;
pub mod paths;
