//! The session model and its stores.
