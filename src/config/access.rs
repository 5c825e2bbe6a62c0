//! Parses the configuration sections for API clients and authorization
//! (`bearer`, `api_path_prefixes`, `public_paths` and `authorization`) into
//! the policy types of [`crate::authz`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{bounded, ConfigError};
use crate::authz::claims::ClaimPath;
use crate::authz::public_paths::{is_normalized_pattern, PublicPath};
use crate::authz::rules::{Authorization, Policy, Requirements, Rule};
use crate::authz::{AccessConfig, BearerConfig, BearerMode, IntrospectionConfig};

/// The raw sections, as they appear at the top level of the filter's JSON.
pub(crate) struct RawAccess {
    pub bearer: Option<RawBearer>,
    pub api_path_prefixes: Option<Vec<String>>,
    pub public_paths: Option<Vec<String>>,
    pub authorization: Option<RawAuthorization>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBearer {
    mode: Option<String>,
    audiences: Option<Vec<String>>,
    #[serde(default)]
    introspection: RawIntrospection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    enabled: Option<bool>,
    cache_seconds: Option<u64>,
    max_entries: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthorization {
    default: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path_prefix: Option<String>,
    hosts: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    require: Option<RawRequire>,
    allow: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequire {
    #[serde(default)]
    claims: BTreeMap<String, Value>,
    #[serde(default)]
    scopes: Vec<String>,
    audience: Option<String>,
}

/// The access sections of the configuration, validated.
pub(super) fn access_config(raw: RawAccess) -> Result<AccessConfig, ConfigError> {
    let bearer = bearer_config(raw.bearer.unwrap_or_default())?;
    let api_path_prefixes = raw
        .api_path_prefixes
        .unwrap_or_default()
        .into_iter()
        .map(|prefix| {
            if is_normalized_pattern(&prefix) {
                Ok(prefix)
            } else {
                Err(ConfigError::new(
                    "api_path_prefixes",
                    format!("{prefix:?} must be a normalized path such as /api/"),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let public_paths = raw
        .public_paths
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            PublicPath::parse(&entry).ok_or_else(|| {
                ConfigError::new(
                    "public_paths",
                    format!("{entry:?} must be a normalized path such as /health or /static/ (no query, no %, no .. or //)"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let authorization = authorization(raw.authorization.unwrap_or_default())?;
    Ok(AccessConfig {
        bearer,
        api_path_prefixes,
        public_paths,
        authorization,
    })
}

/// Bearer tokens are accepted only for audiences the operator named. A default
/// of the client id would accept ID tokens (their `aud`) as access tokens and
/// refuse the provider's real API tokens (Okta: `api://default`), so without
/// `audiences` the default mode is `ignore`, and `accept`/`require` need them.
fn bearer_config(raw: RawBearer) -> Result<BearerConfig, ConfigError> {
    let mode = match (raw.mode.as_deref(), &raw.audiences) {
        (None, None) | (Some("ignore"), _) => BearerMode::Ignore,
        (None | Some("accept"), _) => BearerMode::Accept,
        (Some("require"), _) => BearerMode::Require,
        (Some(other), _) => {
            return Err(ConfigError::new(
                "bearer.mode",
                format!("{other:?} is not one of accept, require, ignore"),
            ))
        }
    };
    let introspection_enabled = raw.introspection.enabled.unwrap_or(false);
    let audiences = match raw.audiences {
        None if mode == BearerMode::Ignore && !introspection_enabled => Vec::new(),
        None => {
            return Err(ConfigError::new(
                "bearer.audiences",
                "required when bearer.mode is accept or require, or introspection is enabled: list the audience your provider puts in access tokens for this API (Okta: api://default, Auth0: the API identifier); list the client id only if the provider issues access tokens with it",
            ))
        }
        Some(list) if list.is_empty() || list.iter().any(String::is_empty) => {
            return Err(ConfigError::new(
                "bearer.audiences",
                "must list at least one non-empty audience",
            ))
        }
        Some(list) => list,
    };
    let introspection = IntrospectionConfig {
        enabled: introspection_enabled,
        cache_seconds: bounded(
            "bearer.introspection.cache_seconds",
            raw.introspection.cache_seconds,
            60,
            0,
            3600,
        )?,
        max_entries: bounded(
            "bearer.introspection.max_entries",
            raw.introspection.max_entries,
            10_000,
            1,
            1_000_000,
        )?,
    };
    Ok(BearerConfig {
        mode,
        audiences,
        introspection,
    })
}

fn authorization(raw: RawAuthorization) -> Result<Authorization, ConfigError> {
    let default = match raw.default.as_deref() {
        None | Some("allow") => Policy::Allow,
        Some("deny") => Policy::Deny,
        Some(other) => {
            return Err(ConfigError::new(
                "authorization.default",
                format!("{other:?} is not one of allow, deny"),
            ))
        }
    };
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, raw)| rule(i, raw))
        .collect::<Result<_, _>>()?;
    Ok(Authorization { default, rules })
}

fn rule(index: usize, raw: RawRule) -> Result<Rule, ConfigError> {
    let field = |name: &str| format!("authorization.rules[{index}].{name}");
    let err = |name: &str, message: String| ConfigError::new(&field(name), message);

    let path_prefix = raw
        .path_prefix
        .ok_or_else(|| err("path_prefix", "missing (required)".to_string()))?;
    if !is_normalized_pattern(&path_prefix) {
        return Err(err(
            "path_prefix",
            format!("{path_prefix:?} must be a normalized path such as /admin/"),
        ));
    }
    let hosts = raw
        .hosts
        .unwrap_or_default()
        .into_iter()
        .map(|host| {
            let lower = host.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if valid {
                Ok(lower)
            } else {
                Err(err("hosts", format!("{host:?} is not a host[:port]")))
            }
        })
        .collect::<Result<_, _>>()?;
    let methods = raw
        .methods
        .unwrap_or_default()
        .into_iter()
        .map(|method| {
            let upper = method.to_ascii_uppercase();
            if !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(upper)
            } else {
                Err(err("methods", format!("{method:?} is not an HTTP method")))
            }
        })
        .collect::<Result<_, _>>()?;

    let raw_require = raw.require.unwrap_or_default();
    let mut require = Requirements::default();
    for (path, values) in raw_require.claims {
        let claim_field = format!("require.claims.{path}");
        let parsed = ClaimPath::parse(&path)
            .ok_or_else(|| err(&claim_field, format!("{path:?} is not a claim path")))?;
        let values = match values {
            Value::Array(items) => items,
            scalar => vec![scalar],
        };
        let scalars = !values.is_empty()
            && values
                .iter()
                .all(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)));
        if !scalars {
            return Err(err(
                &claim_field,
                "must be a string, number or boolean, or a non-empty list of them".to_string(),
            ));
        }
        require.claims.push((parsed, values));
    }
    for scope in &raw_require.scopes {
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(err(
                "require.scopes",
                format!("{scope:?} is not a valid scope token"),
            ));
        }
    }
    require.scopes = raw_require.scopes;
    if let Some(audience) = raw_require.audience {
        if audience.is_empty() {
            return Err(err("require.audience", "must not be empty".to_string()));
        }
        require.audience = Some(audience);
    }
    let allow = raw.allow.unwrap_or(true);
    if !allow && !require.is_empty() {
        return Err(err(
            "allow",
            "a rule with allow: false refuses everyone; remove its require".to_string(),
        ));
    }
    Ok(Rule {
        path_prefix,
        hosts,
        methods,
        require,
        allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn parse(extra: Value) -> Result<Config, ConfigError> {
        let mut config = json!({
            "issuer": "https://idp.example", "client_id": "rp", "client_secret": "s",
            "redirect_uri": "https://app.example/cb", "provider_cluster": "idp"
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        Config::parse(&serde_json::to_vec(&config).unwrap(), |_| None)
    }

    #[test]
    fn defaults_ignore_bearer_tokens_and_allow_everyone() {
        let access = parse(json!({})).unwrap().access;
        assert_eq!(access.bearer.mode, BearerMode::Ignore);
        assert!(access.bearer.audiences.is_empty());
        assert!(!access.bearer.introspection.enabled);
        assert_eq!(access.bearer.introspection.cache_seconds, 60);
        assert_eq!(access.bearer.introspection.max_entries, 10_000);
        assert!(access.public_paths.is_empty() && access.api_path_prefixes.is_empty());
        assert_eq!(access.authorization.default, Policy::Allow);
    }

    #[test]
    fn a_full_configuration_parses() {
        let config = parse(json!({
            "bearer": {"mode": "require", "audiences": ["https://api.example/"],
                       "introspection": {"enabled": true, "cache_seconds": 30, "max_entries": 100}},
            "api_path_prefixes": ["/api/"],
            "public_paths": ["/health", "/static/"],
            "authorization": {"default": "deny", "rules": [
                {"path_prefix": "/admin/", "hosts": ["App.Example"], "methods": ["get"],
                 "require": {"claims": {"groups": ["admins"], "realm_access.roles": "x"},
                             "scopes": ["api:read"], "audience": "https://api.example/"}},
                {"path_prefix": "/closed", "allow": false}
            ]},
            "upstream": {"claims_header": "X-Auth-Request-Claims", "claims_separator": "; "}
        }))
        .unwrap();
        let rule = &config.access.authorization.rules[0];
        assert_eq!(rule.hosts, ["app.example"]);
        assert_eq!(rule.methods, ["GET"]);
        assert_eq!(rule.require.claims[1].1, [json!("x")]);
        let retained: Vec<&str> = config.retained_claims().collect();
        for claim in [
            "sub",
            "email",
            "groups",
            "realm_access",
            "scope",
            "scp",
            "aud",
        ] {
            assert!(retained.contains(&claim), "{claim} in {retained:?}");
        }
        assert_eq!(
            config.upstream.claims_header.as_deref(),
            Some("x-auth-request-claims")
        );
        assert!(config
            .identity_headers()
            .any(|h| h == "x-auth-request-claims"));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let rule = |r: Value| json!({"authorization": {"rules": [{"path_prefix": "/"}, r]}});
        let cases = [
            (json!({"bearer": {"mode": "maybe"}}), "bearer.mode"),
            (json!({"bearer": {"audiences": []}}), "bearer.audiences"),
            (json!({"bearer": {"mode": "accept"}}), "bearer.audiences"),
            (json!({"bearer": {"mode": "require"}}), "bearer.audiences"),
            (
                json!({"bearer": {"introspection": {"enabled": true}}}),
                "bearer.audiences",
            ),
            (json!({"bearer": {"audiences": [""]}}), "bearer.audiences"),
            (
                json!({"bearer": {"introspection": {"cache_seconds": 99999}}}),
                "bearer.introspection.cache_seconds",
            ),
            (
                json!({"bearer": {"introspection": {"max_entries": 0}}}),
                "bearer.introspection.max_entries",
            ),
            (json!({"bearer": {"colour": 1}}), "colour"),
            (json!({"public_paths": ["health"]}), "public_paths"),
            (
                json!({"public_paths": ["/static/../admin"]}),
                "public_paths",
            ),
            (json!({"public_paths": ["/a%2Fb"]}), "public_paths"),
            (json!({"public_paths": ["/health?x"]}), "public_paths"),
            (json!({"public_paths": ["//static/"]}), "public_paths"),
            (json!({"api_path_prefixes": ["api/"]}), "api_path_prefixes"),
            (
                json!({"authorization": {"default": "maybe"}}),
                "authorization.default",
            ),
            (rule(json!({})), "authorization.rules[1].path_prefix"),
            (
                rule(json!({"path_prefix": "/a/./b"})),
                "authorization.rules[1].path_prefix",
            ),
            (
                rule(json!({"path_prefix": "/", "hosts": ["a b"]})),
                "authorization.rules[1].hosts",
            ),
            (
                rule(json!({"path_prefix": "/", "methods": ["G-T"]})),
                "authorization.rules[1].methods",
            ),
            (
                rule(json!({"path_prefix": "/", "require": {"claims": {"a..b": "x"}}})),
                "authorization.rules[1].require.claims.a..b",
            ),
            (
                rule(json!({"path_prefix": "/", "require": {"claims": {"groups": []}}})),
                "authorization.rules[1].require.claims.groups",
            ),
            (
                rule(json!({"path_prefix": "/", "require": {"claims": {"groups": [{"a": 1}]}}})),
                "authorization.rules[1].require.claims.groups",
            ),
            (
                rule(json!({"path_prefix": "/", "require": {"scopes": ["a b"]}})),
                "authorization.rules[1].require.scopes",
            ),
            (
                rule(json!({"path_prefix": "/", "require": {"audience": ""}})),
                "authorization.rules[1].require.audience",
            ),
            (
                rule(json!({"path_prefix": "/", "allow": false, "require": {"scopes": ["x"]}})),
                "authorization.rules[1].allow",
            ),
            (
                json!({"upstream": {"claims_separator": ""}}),
                "upstream.claims_separator",
            ),
            (
                json!({"upstream": {"claims_separator": "\n"}}),
                "upstream.claims_separator",
            ),
            (
                json!({"upstream": {"claims_header": "Cookie"}}),
                "upstream.claims_header",
            ),
            (
                json!({"upstream": {"claims_header": "x-auth-request-user"}}),
                "upstream.claims_header",
            ),
        ];
        for (extra, field) in cases {
            let err = parse(extra.clone()).expect_err("refused");
            assert_eq!(err.field, field, "{extra}: {err}");
            assert!(err.to_string().contains(field));
        }
    }
}
