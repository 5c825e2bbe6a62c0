//! `session.etcd`: where the etcd session store lives and how it behaves.

use serde::Deserialize;

use crate::config::{bounded, ConfigError, Secret};

/// Envoy clusters that reach etcd's v3 JSON gateway, tried in turn on failure.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawClusters {
    One(String),
    Several(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    cluster: Option<RawClusters>,
    authority: Option<String>,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
    cache_ttl_seconds: Option<u64>,
    lease_touch_interval_seconds: Option<u64>,
    username_env: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Envoy clusters in order of preference; the next is tried when one fails.
    pub clusters: Vec<String>,
    /// The `:authority` of calls to etcd.
    pub authority: String,
    /// Every key the filter writes starts with this.
    pub key_prefix: String,
    pub timeout_ms: u64,
    /// 0: every request reads etcd. Otherwise a worker reuses a session it read
    /// for this long, so a revoked session may live on that long on that worker.
    pub cache_ttl: u64,
    /// A used session's lease is renewed (and its `last_seen` rewritten) no more
    /// often than this.
    pub lease_touch_interval: u64,
    pub credentials: Option<EtcdCredentials>,
}

#[derive(Debug, Clone)]
pub struct EtcdCredentials {
    pub username: String,
    pub password: Secret,
}

/// Validates `session.etcd`; `Some` only for the etcd store, which requires it.
pub(crate) fn parse(
    raw: Option<RawEtcd>,
    etcd_store: bool,
    idle_timeout: u64,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<EtcdConfig>, ConfigError> {
    let raw = match (raw, etcd_store) {
        (None, false) => return Ok(None),
        (Some(_), false) => {
            return Err(ConfigError::new(
                "session.etcd",
                "is only read with session.store \"etcd\"",
            ))
        }
        (None, true) => {
            return Err(ConfigError::new(
                "session.etcd",
                "is required with session.store \"etcd\"",
            ))
        }
        (Some(raw), true) => raw,
    };
    let clusters = match raw.cluster {
        None => return Err(ConfigError::new("session.etcd.cluster", "is required")),
        Some(RawClusters::One(name)) => vec![name],
        Some(RawClusters::Several(names)) => names,
    };
    if clusters.is_empty() || clusters.len() > 16 || clusters.iter().any(|c| c.trim().is_empty()) {
        return Err(ConfigError::new(
            "session.etcd.cluster",
            "must name one to 16 Envoy clusters, none empty",
        ));
    }
    let authority = raw.authority.unwrap_or_else(|| "etcd".to_string());
    if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            "session.etcd.authority",
            "must be a host name (and port)",
        ));
    }
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "oidc-filter/".to_string());
    if key_prefix.is_empty() || key_prefix.len() > 128 || !key_prefix.ends_with('/') {
        return Err(ConfigError::new(
            "session.etcd.key_prefix",
            "must be 1 to 128 bytes ending in \"/\"",
        ));
    }
    let timeout_ms = bounded("session.etcd.timeout_ms", raw.timeout_ms, 1000, 50, 30_000)?;
    let cache_ttl = bounded(
        "session.etcd.cache_ttl_seconds",
        raw.cache_ttl_seconds,
        0,
        0,
        60,
    )?;
    let lease_touch_interval = bounded(
        "session.etcd.lease_touch_interval_seconds",
        raw.lease_touch_interval_seconds,
        (idle_timeout / 16).clamp(1, 60),
        1,
        (idle_timeout / 2).max(1),
    )?;
    let read = |field: &str, var: &str| {
        env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            ConfigError::new(
                field,
                format!("environment variable {var} is not set or empty"),
            )
        })
    };
    let credentials = match (raw.username_env, raw.password_env) {
        (None, None) => None,
        (Some(user), Some(password)) => Some(EtcdCredentials {
            username: read("session.etcd.username_env", &user)?,
            password: Secret(read("session.etcd.password_env", &password)?),
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::new(
                "session.etcd.username_env",
                "set both username_env and password_env, or neither",
            ))
        }
    };
    Ok(Some(EtcdConfig {
        clusters,
        authority,
        key_prefix,
        timeout_ms,
        cache_ttl,
        lease_touch_interval,
        credentials,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, SessionStoreKind};

    fn parse(session: serde_json::Value, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let json = serde_json::json!({
            "issuer": "https://idp.example",
            "client_id": "rp",
            "client_secret": "s3cret",
            "redirect_uri": "https://app.example/oauth2/callback",
            "provider_cluster": "idp",
            "session": session,
        });
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(&serde_json::to_vec(&json).unwrap(), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn field_of(session: serde_json::Value) -> String {
        parse(session, &[]).expect_err("refused").field
    }

    #[test]
    fn defaults_for_a_single_cluster() {
        let config = parse(
            serde_json::json!({"store": "etcd", "etcd": {"cluster": "etcd"}}),
            &[],
        )
        .unwrap();
        assert_eq!(config.session.store, SessionStoreKind::Etcd);
        let etcd = config.session.etcd.unwrap();
        assert_eq!(etcd.clusters, vec!["etcd"]);
        assert_eq!(etcd.key_prefix, "oidc-filter/");
        assert_eq!(etcd.timeout_ms, 1000);
        assert_eq!(
            etcd.cache_ttl, 0,
            "revocation-critical: no cache unless asked"
        );
        assert_eq!(etcd.lease_touch_interval, 60);
        assert!(etcd.credentials.is_none());
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let session = serde_json::json!({"store": "etcd", "etcd": {
            "cluster": ["e1", "e2", "e3"], "username_env": "U", "password_env": "P"}});
        let config = parse(session.clone(), &[("U", "gw"), ("P", "pw")]).unwrap();
        let etcd = config.session.etcd.unwrap();
        assert_eq!(etcd.clusters.len(), 3);
        let credentials = etcd.credentials.unwrap();
        assert_eq!(credentials.username, "gw");
        assert_eq!(credentials.password.expose(), "pw");
        assert!(
            !format!("{credentials:?}").contains("pw\""),
            "no secret in logs"
        );
        let err = parse(session, &[("U", "gw")]).expect_err("no password");
        assert_eq!(err.field, "session.etcd.password_env");
    }

    #[test]
    fn errors_name_the_field() {
        let etcd = |fields: serde_json::Value| {
            let mut etcd = serde_json::json!({"cluster": "etcd"});
            for (k, v) in fields.as_object().unwrap() {
                etcd[k] = v.clone();
            }
            serde_json::json!({"store": "etcd", "etcd": etcd})
        };
        assert_eq!(
            field_of(serde_json::json!({"store": "etcd"})),
            "session.etcd"
        );
        assert_eq!(
            field_of(serde_json::json!({"etcd": {"cluster": "etcd"}})),
            "session.etcd"
        );
        assert_eq!(
            field_of(serde_json::json!({"store": "etcd", "etcd": {}})),
            "session.etcd.cluster"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"cluster": []}))),
            "session.etcd.cluster"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"key_prefix": "no-slash"}))),
            "session.etcd.key_prefix"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"timeout_ms": 10}))),
            "session.etcd.timeout_ms"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"cache_ttl_seconds": 3600}))),
            "session.etcd.cache_ttl_seconds"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"lease_touch_interval_seconds": 0}))),
            "session.etcd.lease_touch_interval_seconds"
        );
        assert_eq!(
            field_of(etcd(serde_json::json!({"username_env": "U"}))),
            "session.etcd.username_env"
        );
        assert!(parse(etcd(serde_json::json!({"endpoints": []})), &[]).is_err());
    }
}
