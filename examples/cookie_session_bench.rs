//! Cost of the cookie session store per request, natively:
//! `cargo run --release --example cookie_session_bench`.
//!
//! "open" is what every request with a cookie session pays before the flow
//! runs: parse the Cookie header, join the chunks, AES-256-GCM open, JSON decode.
//! Sessions are shaped like the test IdP's (oidc-provider, RS256 ID token).

use std::hint::black_box;
use std::time::Instant;

use oidc_filter::crypto::seal::SealingKeys;
use oidc_filter::http::cookies;
use oidc_filter::session::buckets::IndexEntry;
use oidc_filter::session::cookie_codec;
use oidc_filter::session::deny_list::DenyList;
use oidc_filter::session::Session;

const BASE: &str = "__Host-oidc-session";
const ISSUER: &str = "http://127.0.0.1:9601";

fn session(id_token_len: usize) -> Session {
    Session {
        sub: "alice".to_string(),
        sid: Some("g0hQ2b3cE8Tn1kM5bRz4a".to_string()),
        created_at: 1_800_000_000,
        expires_at: 1_800_028_800,
        last_seen: 1_800_000_000,
        access_token: "x".repeat(43),
        access_token_expires_at: Some(1_800_003_600),
        access_token_lifetime: Some(3600),
        refresh_token: Some("y".repeat(43)),
        id_token: Some("z".repeat(id_token_len)),
        claims: serde_json::json!({"email": "alice@example.test"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        refreshing_until: None,
    }
}

fn time_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        op();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let keys = SealingKeys::from_raw(vec![[7; 32], [8; 32]]).expect("two keys");
    let mut rng = rand_core::OsRng;
    println!("case                                   cookie bytes  chunks      ns/op");
    // 720: about the ID token of the test IdP's alice (its session cookie measured
    // 1427 bytes end to end); 8000: a large one.
    for (label, id_token_len) in [("typical (oidc-provider)", 720), ("large ID token", 8000)] {
        let s = session(id_token_len);
        let written = cookie_codec::write(&s, &keys, BASE, &mut rng).expect("fits");
        let header: String = written
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .chain(["theirs=1".to_string(), "_ga=GA1.2.3".to_string()])
            .collect::<Vec<_>>()
            .join("; ");
        let bytes: usize = written.iter().map(|(_, v)| v.len()).sum();

        let open = time_per_op(20_000, || {
            let parsed = cookies::parse_cookies([header.as_bytes()]);
            let opened = cookie_codec::read(&parsed, &keys, BASE);
            black_box(opened.is_ok_and(|o| o.is_some()));
        });
        println!(
            "open  {label:<32} {bytes:>12} {:>7} {open:>10.0}",
            written.len()
        );

        let write = time_per_op(20_000, || {
            black_box(cookie_codec::write(&s, &keys, BASE, &mut rng));
        });
        println!(
            "write {label:<32} {bytes:>12} {:>7} {write:>10.0}",
            written.len()
        );
    }

    let s = session(720);
    for entries in [0usize, 16, 256] {
        let mut list = DenyList::default();
        for i in 0..entries {
            let entry = IndexEntry::sid(ISSUER, &format!("sid-{i:020}"));
            list.insert(&entry, 2_000_000_000, 1_800_000_000);
        }
        let encoded = list.encode();
        let check = time_per_op(20_000, || {
            black_box(DenyList::check_encoded(&encoded, ISSUER, &s, 1_800_000_001));
        });
        println!(
            "deny-list check, {entries:>3} entries ({:>5} bytes)             {check:>10.0}",
            encoded.len()
        );
        let decode = time_per_op(2_000, || {
            black_box(DenyList::decode(&encoded).map(|l| l.is_denied(ISSUER, &s, 1_800_000_001)));
        });
        println!("  (full decode when the session is mentioned)                 {decode:>10.0}");
    }
}
