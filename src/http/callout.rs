//! How an HTTP call to another service ended, whichever layer made it (the
//! flow's provider calls, the etcd store's requests).

/// How a callout ended.
#[derive(Debug, Clone)]
pub enum CalloutOutcome {
    Response {
        status: u16,
        body: Vec<u8>,
    },
    /// Not sent, reset, or no answer: the reason, for logs and the error page.
    Failed(String),
}
