//! What a request changes in the session store, as the flow asks for it and
//! every store (shared data, etcd, cookies) applies it.

use super::{Session, SessionKey};

#[derive(Debug)]
pub enum StoreWrite {
    /// Create or replace a session (a new login, refreshed tokens).
    Put {
        key: SessionKey,
        session: Box<Session>,
    },
    /// Replace a session that still exists (refreshed tokens). A session
    /// deleted meanwhile (logout, back-channel logout, the sweep) stays deleted.
    Update {
        key: SessionKey,
        session: Box<Session>,
    },
    /// Record activity for the idle timeout without rewriting the tokens, so a
    /// touch can never undo another worker's refresh.
    Touch {
        key: SessionKey,
        at: u64,
    },
    /// Give up a refresh claim that failed, so the next request retries at once.
    ReleaseRefresh {
        key: SessionKey,
    },
    Delete {
        key: SessionKey,
    },
}
