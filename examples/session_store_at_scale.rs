//! Measures the shared-data session store at 100,000 sessions: bytes per
//! session, the cost of a sweep, and how the ceiling behaves.
//!
//! Run: `cargo run --release --example session_store_at_scale`
//! It runs the store's own code natively on an in-memory shared data with
//! Envoy's compare-and-swap semantics; inside the wasm VM expect it slower.

use std::time::Instant;

use oidc_filter::session::buckets::Layout;
use oidc_filter::session::shared_store::{InMemory, SessionStore};
use oidc_filter::session::writes::StoreWrite;
use oidc_filter::session::{Session, SessionKey};

const SESSIONS: u32 = 100_000;

/// A session as a login at oidc-provider leaves it: opaque 43-character access
/// and refresh tokens, the ID token kept for logout (RS256, ~800 bytes), sid,
/// and the email claim for the default headers.
fn typical_session(n: u32, now: u64) -> Session {
    let mut claims = serde_json::Map::new();
    claims.insert("email".into(), format!("user{n}@example.test").into());
    Session {
        sub: format!("user{n}"),
        sid: Some(format!("{:0>21}", n)),
        // Logins spread evenly over the last eight hours.
        created_at: now - 28_800 + u64::from(n) * 28_800 / u64::from(SESSIONS + SESSIONS / 5),
        expires_at: now + u64::from(n) * 28_800 / u64::from(SESSIONS + SESSIONS / 5),
        last_seen: now,
        access_token: "x".repeat(43),
        access_token_expires_at: Some(now + 3600),
        access_token_lifetime: Some(3600),
        refresh_token: Some("y".repeat(43)),
        id_token: Some("z".repeat(800)),
        claims,
        refreshing_until: None,
    }
}

fn key(n: u32) -> SessionKey {
    SessionKey::from_hash(oidc_filter::crypto::sha256_b64url(&n.to_le_bytes()))
}

fn store(max_sessions: u32) -> SessionStore<InMemory> {
    SessionStore {
        data: InMemory::default(),
        layout: Layout::new(max_sessions),
        issuer: "https://idp.example".into(),
        idle_timeout: 3600,
        absolute_timeout: 28_800,
        max_sessions,
        max_sessions_per_subject: 64,
        sweeper_id: 1,
        sweep_seen: Default::default(),
        records: Default::default(),
    }
}

fn fill(store: &SessionStore<InMemory>, count: u32, now: u64) -> usize {
    let mut evicted = 0;
    for n in 0..count {
        let put = StoreWrite::Put {
            key: key(n),
            session: Box::new(typical_session(n, now)),
        };
        evicted += store.apply(vec![put]).evicted;
    }
    evicted
}

fn main() {
    let now = 1_800_000_000;
    let one = typical_session(1, now);
    println!(
        "one typical session record: {} bytes of JSON",
        one.encode().len()
    );

    let full = store(SESSIONS);
    let started = Instant::now();
    let evicted = fill(&full, SESSIONS, now);
    let fill_time = started.elapsed();
    println!(
        "{SESSIONS} sessions (ceiling {SESSIONS}): {} bytes in {} shared-data keys = {} bytes per session including the sid/sub index; {} evicted by full buckets while filling; {:.1} µs per login write",
        full.data.bytes(),
        full.data.keys(),
        full.data.bytes() / SESSIONS as usize,
        evicted,
        fill_time.as_secs_f64() * 1e6 / f64::from(SESSIONS),
    );

    let started = Instant::now();
    let changes = full.sweep_all(now + 10);
    println!(
        "sweep, nothing expired: {:.0} ms, {} live",
        started.elapsed().as_secs_f64() * 1e3,
        changes.live
    );

    let started = Instant::now();
    let changes = full.sweep_all(now + 28_800 + 1);
    println!(
        "sweep, everything expired: {:.0} ms, {} expired, {} live, {} keys left (emptied, not deleted)",
        started.elapsed().as_secs_f64() * 1e3,
        changes.expired,
        changes.live,
        full.data.keys()
    );

    let ceiling = store(SESSIONS);
    let over = SESSIONS + SESSIONS / 5;
    let evicted_on_write = fill(&ceiling, over, now);
    let started = Instant::now();
    let changes = ceiling.sweep_all(now + 10);
    println!(
        "{over} logins against a ceiling of {SESSIONS}: {evicted_on_write} evicted by full buckets at login, {} by the sweep ({:.0} ms), {} live after",
        changes.evicted,
        started.elapsed().as_secs_f64() * 1e3,
        changes.live
    );
}
