//! etcd's v3 JSON gateway: request bodies and the parts of answers we read.
//!
//! Keys and values travel base64-encoded; 64-bit integers travel as strings
//! (proto3 JSON) but numbers are accepted too. Fields proto3 leaves out when
//! zero or false (`succeeded`, `kvs`, `TTL`) default accordingly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

/// A call to the gateway: always a POST with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRequest {
    pub path: &'static str,
    pub body: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn request(path: &'static str, body: Value) -> EtcdRequest {
    EtcdRequest {
        path,
        body: body.to_string().into_bytes(),
    }
}

/// The first key after every key starting with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn range(key: &str) -> EtcdRequest {
    request("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))
}

pub fn lease_grant(ttl: u64) -> EtcdRequest {
    request("/v3/lease/grant", json!({ "TTL": ttl.to_string() }))
}

pub fn lease_keepalive(id: i64) -> EtcdRequest {
    request("/v3/lease/keepalive", json!({ "ID": id.to_string() }))
}

/// Ends a lease and deletes every key attached to it.
pub fn lease_revoke(id: i64) -> EtcdRequest {
    request("/v3/lease/revoke", json!({ "ID": id.to_string() }))
}

pub fn authenticate(name: &str, password: &str) -> EtcdRequest {
    request(
        "/v3/auth/authenticate",
        json!({ "name": name, "password": password }),
    )
}

/// One condition of a transaction.
pub enum Compare<'a> {
    /// The key does not exist (it was never created, or deleted since).
    Absent(&'a str),
    /// The key exists.
    Present(&'a str),
    /// The key was last modified at this revision.
    ModRevision(&'a str, i64),
}

/// One operation of a transaction.
pub enum TxnOp<'a> {
    /// Put under a lease; `None` keeps the key's current lease.
    Put {
        key: &'a str,
        value: &'a [u8],
        lease: Option<i64>,
    },
    Get(&'a str),
    Delete(&'a str),
    DeletePrefix(&'a str),
    /// Keys only, for an index.
    ListPrefix(&'a str),
}

pub fn txn(compare: &[Compare<'_>], success: &[TxnOp<'_>]) -> EtcdRequest {
    txn_else(compare, success, &[])
}

/// A transaction that runs `failure` when a comparison fails.
pub fn txn_else(
    compare: &[Compare<'_>],
    success: &[TxnOp<'_>],
    failure: &[TxnOp<'_>],
) -> EtcdRequest {
    let compare: Vec<Value> = compare
        .iter()
        .map(|c| match c {
            Compare::Absent(key) => json!({
                "key": b64(key.as_bytes()), "target": "CREATE",
                "result": "EQUAL", "create_revision": "0"
            }),
            Compare::Present(key) => json!({
                "key": b64(key.as_bytes()), "target": "VERSION",
                "result": "GREATER", "version": "0"
            }),
            Compare::ModRevision(key, rev) => json!({
                "key": b64(key.as_bytes()), "target": "MOD",
                "result": "EQUAL", "mod_revision": rev.to_string()
            }),
        })
        .collect();
    let ops = |ops: &[TxnOp<'_>]| -> Vec<Value> { ops.iter().map(txn_op).collect() };
    request(
        "/v3/kv/txn",
        json!({ "compare": compare, "success": ops(success), "failure": ops(failure) }),
    )
}

fn txn_op(op: &TxnOp<'_>) -> Value {
    match op {
        TxnOp::Put { key, value, lease } => {
            let mut put = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
            match lease {
                Some(id) => put["lease"] = json!(id.to_string()),
                None => put["ignore_lease"] = json!(true),
            }
            json!({ "request_put": put })
        }
        TxnOp::Get(key) => json!({ "request_range": { "key": b64(key.as_bytes()) } }),
        TxnOp::Delete(key) => {
            json!({ "request_delete_range": { "key": b64(key.as_bytes()) } })
        }
        TxnOp::DeletePrefix(prefix) => json!({ "request_delete_range": {
                "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))
            } }),
        TxnOp::ListPrefix(prefix) => json!({ "request_range": {
                "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
                "keys_only": true, "limit": "200"
            } }),
    }
}

fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

/// A key-value pair as etcd returns it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: i64,
    /// 0: no lease.
    #[serde(default, deserialize_with = "int")]
    pub lease: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteResponse {
    #[serde(default, deserialize_with = "int")]
    pub deleted: i64,
}

#[derive(Debug, Deserialize)]
pub enum TxnResult {
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    #[serde(rename = "response_put")]
    Put(serde::de::IgnoredAny),
    #[serde(rename = "response_delete_range")]
    Delete(DeleteResponse),
}

#[derive(Debug, Deserialize)]
pub struct TxnResponse {
    /// The gateway leaves it out when false; `header` proves the answer is etcd's.
    #[allow(dead_code)]
    header: serde::de::IgnoredAny,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<TxnResult>,
}

#[derive(Debug, Deserialize)]
pub struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "int")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "int")]
    pub ttl: i64,
}

/// The keep-alive stream's first message, wrapped in `result` by the gateway.
#[derive(Debug, Deserialize)]
pub struct KeepAliveResponse {
    pub result: KeepAliveResult,
}

#[derive(Debug, Deserialize)]
pub struct KeepAliveResult {
    /// 0 (left out): the lease no longer exists.
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    pub ttl: i64,
}

/// Any answer that is etcd's (it carries `header`) and says nothing more.
#[derive(Debug, Deserialize)]
pub struct Acknowledged {
    #[allow(dead_code)]
    header: serde::de::IgnoredAny,
}

#[derive(Debug, Deserialize)]
pub struct AuthenticateResponse {
    pub token: String,
}

/// A range answer must carry etcd's `header`; `{}` or a stray JSON is refused.
#[derive(Debug, Deserialize)]
pub struct CheckedRange {
    #[allow(dead_code)]
    header: serde::de::IgnoredAny,
    #[serde(flatten)]
    pub range: RangeResponse,
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("etcd answered something unexpected: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end("\u{7f}"), vec![0x80]);
    }

    #[test]
    fn integers_come_as_strings_or_numbers() {
        let grant: LeaseGrantResponse = parse(br#"{"ID":"7587","TTL":30}"#).unwrap();
        assert_eq!((grant.id, grant.ttl), (7587, 30));
        assert!(parse::<LeaseGrantResponse>(br#"{"ID":"x","TTL":"1"}"#).is_err());
    }

    #[test]
    fn a_failed_transaction_omits_succeeded() {
        let txn: TxnResponse = parse(br#"{"header":{"revision":"3"}}"#).unwrap();
        assert!(!txn.succeeded);
        assert!(parse::<TxnResponse>(b"{}").is_err(), "not etcd's answer");
    }

    #[test]
    fn transaction_answers_are_typed() {
        // As etcd 3.4's gateway answered here.
        let body = br#"{"header":{"revision":"6"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"6"}}},{"response_range":{"header":{"revision":"6"},"kvs":[{"key":"czE=","create_revision":"5","mod_revision":"6","version":"2","value":"djI=","lease":"4111120356328493071"}],"count":"1"}}]}"#;
        let txn: TxnResponse = parse(body).unwrap();
        assert!(txn.succeeded);
        let TxnResult::Range(range) = &txn.responses[1] else {
            panic!("a range answer")
        };
        assert_eq!(range.kvs[0].value, b"v2");
        assert_eq!(range.kvs[0].lease, 4111120356328493071);
        assert_eq!(range.kvs[0].mod_revision, 6);
    }

    #[test]
    fn transactions_are_built_as_etcd_reads_them() {
        let req = txn(
            &[Compare::Absent("p/r/k")],
            &[TxnOp::Put {
                key: "p/r/k",
                value: b"x",
                lease: Some(9),
            }],
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(req.path, "/v3/kv/txn");
        assert_eq!(body["compare"][0]["target"], "CREATE");
        assert_eq!(body["compare"][0]["create_revision"], "0");
        assert_eq!(body["success"][0]["request_put"]["lease"], "9");
        assert_eq!(body["success"][0]["request_put"]["key"], b64(b"p/r/k"));
    }
}
