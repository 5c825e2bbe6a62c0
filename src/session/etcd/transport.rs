//! Judging a call to etcd before its body is read: whether to use the answer,
//! try the next endpoint, authenticate again, or give up.

use crate::http::callout::CalloutOutcome;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer(Vec<u8>),
    /// The endpoint failed (unreachable, timed out, no leader): another may not.
    TryNext(String),
    /// The auth token expired or was revoked.
    Reauthenticate,
    /// etcd understood and refused: retrying elsewhere would not help.
    Refused(String),
}

/// gRPC's code for an unauthenticated call (an expired or unknown token).
const UNAUTHENTICATED: i64 = 16;

#[derive(serde::Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

pub fn judge(outcome: CalloutOutcome) -> Verdict {
    let (status, body) = match outcome {
        CalloutOutcome::Failed(reason) => return Verdict::TryNext(reason),
        CalloutOutcome::Response { status, body } => (status, body),
    };
    if status == 200 {
        return Verdict::Answer(body);
    }
    let error: Option<GatewayError> = serde_json::from_slice(&body).ok();
    let message = error
        .as_ref()
        .map(|e| e.message.chars().take(200).collect::<String>())
        .unwrap_or_default();
    if status == 401 || error.as_ref().is_some_and(|e| e.code == UNAUTHENTICATED) {
        return Verdict::Reauthenticate;
    }
    if status >= 500 || status == 429 {
        return Verdict::TryNext(format!("HTTP {status} {message}"));
    }
    Verdict::Refused(format!("HTTP {status} {message}"))
}

/// Which cluster to call next, starting from a rotating position so workers
/// spread their load, and trying each at most once per call.
#[derive(Debug, Clone)]
pub struct Endpoints {
    count: usize,
    next: usize,
    left: usize,
}

impl Endpoints {
    /// With a single cluster (several endpoints behind one Envoy cluster), it
    /// is tried twice: Envoy picks another endpoint the second time.
    pub fn new(count: usize, start: usize) -> Endpoints {
        let count = count.max(1);
        Endpoints {
            count,
            next: start % count,
            left: count.max(2),
        }
    }

    pub fn next_index(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let chosen = self.next;
        self.next = (self.next + 1) % self.count;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Verdict {
        judge(CalloutOutcome::Response {
            status,
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn unreachable_and_leaderless_members_are_skipped() {
        assert!(matches!(
            judge(CalloutOutcome::Failed("reset".into())),
            Verdict::TryNext(_)
        ));
        assert!(matches!(
            answer(503, "no healthy upstream"),
            Verdict::TryNext(_)
        ));
        assert!(matches!(
            answer(503, r#"{"error":"etcdserver: no leader","code":14}"#),
            Verdict::TryNext(_)
        ));
        assert!(matches!(answer(504, ""), Verdict::TryNext(_)));
    }

    #[test]
    fn an_expired_token_asks_for_authentication() {
        assert_eq!(
            answer(
                401,
                r#"{"error":"etcdserver: invalid auth token","code":16}"#
            ),
            Verdict::Reauthenticate
        );
    }

    #[test]
    fn refusals_are_final() {
        assert!(matches!(
            answer(400, r#"{"error":"etcdserver: key not found","code":3}"#),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn every_cluster_once_from_a_rotating_start() {
        let mut e = Endpoints::new(3, 4);
        let order: Vec<_> = std::iter::from_fn(|| e.next_index()).collect();
        assert_eq!(order, vec![1, 2, 0]);
        let mut one = Endpoints::new(1, 7);
        assert_eq!(std::iter::from_fn(|| one.next_index()).count(), 2);
    }
}
