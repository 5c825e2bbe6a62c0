//! Filter configuration: raw JSON in, validated [`Config`] out, with precise errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use url::Url;

mod access;

pub use crate::authz::claims::ClaimPath;
use crate::crypto::seal::SealingKeys;
use crate::http::cookies::{CookieAttributes, SameSite};
use crate::oidc::jwt::Algorithm;
use crate::oidc::token::ClientAuthMethod;

/// A configuration mistake, naming the field so the operator can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: `{}`: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStoreKind {
    SharedData,
    /// The session sealed into the browser's cookies: no server state, any replica.
    Cookie,
    /// Sessions in an etcd cluster all replicas share (see `session.etcd`).
    Etcd,
}

/// What goes to the upstream in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuthorization {
    AccessToken,
    IdToken,
    None,
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// Name of the session cookie (with `__Host-`/`__Secure-` prefix when secure).
    pub session_name: String,
    /// Login cookies are `<login_prefix><8 chars>`, one per login in flight.
    pub login_prefix: String,
    pub attributes: CookieAttributes,
}

impl CookieConfig {
    /// Login cookies come back on the provider's cross-site redirect to the
    /// callback, which browsers never send `Strict` cookies with: they are `Lax`
    /// whatever the session cookie's setting.
    pub fn login_attributes(&self) -> CookieAttributes {
        let mut attributes = self.attributes.clone();
        if attributes.same_site == SameSite::Strict {
            attributes.same_site = SameSite::Lax;
        }
        attributes
    }

    pub fn is_ours(&self, name: &[u8]) -> bool {
        crate::session::chunks::is_session_cookie(name, &self.session_name)
            || crate::session::login::LoginState::is_cookie_name(&self.login_prefix, name)
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub store: SessionStoreKind,
    pub absolute_timeout: u64,
    pub idle_timeout: u64,
    /// Tokens are refreshed when the access token has less than this left.
    pub refresh_margin: u64,
    /// Ceiling on live sessions in shared data; past it the oldest are evicted.
    pub max_sessions: u32,
    /// How often expired sessions are swept from shared data.
    pub sweep_interval: u64,
    /// Set exactly when `store` is `Etcd`.
    pub etcd: Option<crate::session::etcd::config::EtcdConfig>,
    /// Shared-data store: sessions one `sub` or `sid` may have; the next
    /// login ends the oldest (so every session stays revocable).
    pub max_sessions_per_subject: usize,
}

impl SessionConfig {
    pub fn layout(&self) -> crate::session::buckets::Layout {
        crate::session::buckets::Layout::new(self.max_sessions)
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub authorization: UpstreamAuthorization,
    /// (header name, the claims that fill it), header names lower-case.
    pub claim_headers: Vec<(String, HeaderClaims)>,
    /// Joins array claims in one header value.
    pub claims_separator: String,
    /// Carries the whole claim set as base64url JSON, when configured.
    pub claims_header: Option<String>,
}

/// Where the claims for the identity headers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource {
    /// A browser session: the ID token's claims the session kept.
    Session,
    /// A bearer token: the access token's claims or the introspection answer.
    Bearer,
}

/// The claims that fill one identity header, per source. The first claim
/// present (not absent, not `null`) wins, so `["uid", "sub"]` reads `uid` and
/// falls back to `sub`: providers such as Okta name the same user `sub` in the
/// ID token and `uid` in the access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderClaims {
    pub session: Vec<ClaimPath>,
    pub bearer: Vec<ClaimPath>,
}

impl HeaderClaims {
    /// The same claims, whatever the source (the plain `"header": "claim"` form).
    pub fn same(path: ClaimPath) -> HeaderClaims {
        HeaderClaims {
            session: vec![path.clone()],
            bearer: vec![path],
        }
    }

    pub fn for_source(&self, source: ClaimSource) -> &[ClaimPath] {
        match source {
            ClaimSource::Session => &self.session,
            ClaimSource::Bearer => &self.bearer,
        }
    }
}

/// Which Envoy cluster reaches which IdP host.
#[derive(Debug, Clone)]
pub struct ProviderClusters {
    pub default: String,
    pub by_authority: BTreeMap<String, String>,
}

impl ProviderClusters {
    pub fn for_authority(&self, authority: &str) -> &str {
        self.by_authority
            .get(authority)
            .map(String::as_str)
            .unwrap_or(&self.default)
    }
}

/// A validated configuration. Only [`Config::parse`] builds one.
#[derive(Debug, Clone)]
pub struct Config {
    /// Exactly as configured: discovery's `issuer` and every token's `iss` must equal it.
    pub issuer: String,
    pub issuer_url: Url,
    pub allow_http: bool,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_auth: ClientAuthMethod,
    pub redirect_uri: Url,
    /// The path of `redirect_uri`, where the filter answers the callback.
    pub callback_path: String,
    pub logout_path: Option<String>,
    pub post_logout_redirect_uri: String,
    /// Where the provider POSTs back-channel logout tokens. Reading that POST's
    /// body needs `allow_on_headers_stop_iteration: true` in Envoy's wasm
    /// `PluginConfig` (Envoy 1.35+); without it Envoy never hands the body to the
    /// filter and the provider's request hangs.
    pub backchannel_logout_path: Option<String>,
    /// Space-separated, `openid` first.
    pub scope: String,
    pub clusters: ProviderClusters,
    pub callout_timeout_ms: u64,
    pub clock_skew: u64,
    pub login_timeout: u64,
    pub metadata_refresh: u64,
    pub allowed_algorithms: Vec<Algorithm>,
    pub cookies: CookieConfig,
    /// Seals login cookies. `None`: the host generates one random key per process.
    pub sealing_keys: Option<SealingKeys>,
    pub session: SessionConfig,
    pub upstream: UpstreamConfig,
    /// Bearer tokens, public paths, API prefixes and authorization rules.
    pub access: crate::authz::AccessConfig,
    /// The filter logs nothing below this, whatever the proxy's own level.
    pub log_level: log::LevelFilter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: Option<String>,
    #[serde(default)]
    insecure_allow_http: bool,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    token_endpoint_auth_method: Option<ClientAuthMethod>,
    redirect_uri: Option<String>,
    logout_path: Option<String>,
    post_logout_redirect_uri: Option<String>,
    backchannel_logout_path: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    provider_cluster: Option<String>,
    #[serde(default)]
    provider_clusters_by_authority: BTreeMap<String, String>,
    callout_timeout_ms: Option<u64>,
    clock_skew_seconds: Option<u64>,
    login_timeout_seconds: Option<u64>,
    metadata_refresh_seconds: Option<u64>,
    id_token_signing_algorithms: Option<Vec<String>>,
    #[serde(default)]
    cookie: RawCookie,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    upstream: RawUpstream,
    bearer: Option<access::RawBearer>,
    api_path_prefixes: Option<Vec<String>>,
    public_paths: Option<Vec<String>>,
    authorization: Option<access::RawAuthorization>,
    log_level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCookie {
    prefix: Option<String>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<SameSite>,
    domain: Option<String>,
    keys: Option<Vec<String>>,
    keys_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSession {
    store: Option<SessionStoreKind>,
    absolute_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    refresh_margin_seconds: Option<u64>,
    max_sessions: Option<u32>,
    sweep_interval_seconds: Option<u64>,
    etcd: Option<crate::session::etcd::config::RawEtcd>,
    max_sessions_per_subject: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    authorization: Option<UpstreamAuthorization>,
    /// Header → `"claim"`, `["claim", "fallback"]` or `{"session": …, "bearer": …}`.
    claim_headers: Option<BTreeMap<String, serde_json::Value>>,
    claims_separator: Option<String>,
    claims_header: Option<String>,
}

impl Config {
    /// Validates the filter configuration. `env` reads the environment variables
    /// the host passed to the VM (secrets stay out of the configuration).
    pub fn parse(json: &[u8], env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(json_error)?;

        let issuer = required(raw.issuer, "issuer")?;
        let issuer_url = parse_url("issuer", &issuer)?;
        let allow_http = raw.insecure_allow_http;
        require_https("issuer", &issuer_url, allow_http)?;
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(ConfigError::new(
                "issuer",
                "must not have a query or fragment (OIDC Discovery §4.1)",
            ));
        }

        let client_id = required(raw.client_id, "client_id")?;
        let client_secret = match (raw.client_secret, raw.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "client_secret",
                    "set either client_secret or client_secret_env, not both",
                ))
            }
            (Some(secret), None) => secret,
            (None, Some(var)) => env(&var).filter(|s| !s.is_empty()).ok_or_else(|| {
                ConfigError::new(
                    "client_secret_env",
                    format!("environment variable {var} is not set or empty in the VM (list it in vm_config.environment_variables.host_env_keys)"),
                )
            })?,
            (None, None) => {
                return Err(ConfigError::new(
                    "client_secret",
                    "missing: set client_secret or client_secret_env",
                ))
            }
        };
        if client_secret.is_empty() {
            return Err(ConfigError::new("client_secret", "must not be empty"));
        }

        let redirect_uri_raw = required(raw.redirect_uri, "redirect_uri")?;
        let redirect_uri = parse_url("redirect_uri", &redirect_uri_raw)?;
        require_https("redirect_uri", &redirect_uri, allow_http)?;
        if redirect_uri.fragment().is_some() || redirect_uri.query().is_some() {
            return Err(ConfigError::new(
                "redirect_uri",
                "must not have a query or fragment",
            ));
        }
        let callback_path = redirect_uri.path().to_string();
        if callback_path == "/" {
            return Err(ConfigError::new(
                "redirect_uri",
                "needs a dedicated path such as /oauth2/callback",
            ));
        }

        let logout_path = match raw.logout_path {
            Some(path) => Some(local_path("logout_path", &path)?),
            None => None,
        };
        if logout_path.as_deref() == Some(callback_path.as_str()) {
            return Err(ConfigError::new(
                "logout_path",
                "must differ from the redirect_uri path",
            ));
        }
        let backchannel_logout_path = match raw.backchannel_logout_path {
            Some(path) => Some(local_path("backchannel_logout_path", &path)?),
            None => None,
        };
        if backchannel_logout_path.is_some()
            && (backchannel_logout_path.as_deref() == Some(callback_path.as_str())
                || backchannel_logout_path == logout_path)
        {
            return Err(ConfigError::new(
                "backchannel_logout_path",
                "must differ from the redirect_uri path and logout_path",
            ));
        }
        let post_logout_redirect_uri = match raw.post_logout_redirect_uri {
            Some(target) if target.starts_with('/') => {
                local_path("post_logout_redirect_uri", &target)?
            }
            Some(target) => {
                let url = parse_url("post_logout_redirect_uri", &target)?;
                require_https("post_logout_redirect_uri", &url, allow_http)?;
                target
            }
            None => "/".to_string(),
        };

        let mut scopes = vec!["openid".to_string()];
        for scope in raw.scopes {
            if scope.is_empty()
                || !scope
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                return Err(ConfigError::new(
                    "scopes",
                    format!("{scope:?} is not a valid scope token (RFC 6749 §3.3)"),
                ));
            }
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }

        let default_cluster = required(raw.provider_cluster, "provider_cluster")?;
        if default_cluster.is_empty() {
            return Err(ConfigError::new("provider_cluster", "must not be empty"));
        }
        for (authority, cluster) in &raw.provider_clusters_by_authority {
            if authority.is_empty() || cluster.is_empty() || authority.contains('/') {
                return Err(ConfigError::new(
                    "provider_clusters_by_authority",
                    format!(
                        "entry {authority:?} → {cluster:?} needs a host[:port] and a cluster name"
                    ),
                ));
            }
        }

        let log_level = match raw.log_level.as_deref() {
            None | Some("info") => log::LevelFilter::Info,
            Some("error") => log::LevelFilter::Error,
            Some("warn") => log::LevelFilter::Warn,
            Some("debug") => log::LevelFilter::Debug,
            Some("trace") => log::LevelFilter::Trace,
            Some(_) => {
                return Err(ConfigError::new(
                    "log_level",
                    "must be one of error, warn, info, debug, trace",
                ))
            }
        };
        let callout_timeout_ms = raw.callout_timeout_ms.unwrap_or(5_000);
        if !(100..=60_000).contains(&callout_timeout_ms) {
            return Err(ConfigError::new(
                "callout_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        let clock_skew = bounded("clock_skew_seconds", raw.clock_skew_seconds, 60, 0, 600)?;
        let login_timeout = bounded(
            "login_timeout_seconds",
            raw.login_timeout_seconds,
            600,
            30,
            3600,
        )?;
        let metadata_refresh = bounded(
            "metadata_refresh_seconds",
            raw.metadata_refresh_seconds,
            3600,
            60,
            7 * 86400,
        )?;

        let allowed_algorithms = match raw.id_token_signing_algorithms {
            None => Algorithm::ALL.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(ConfigError::new(
                    "id_token_signing_algorithms",
                    "must list at least one algorithm",
                ))
            }
            Some(names) => names
                .iter()
                .map(|name| {
                    Algorithm::from_name(name).ok_or_else(|| {
                        ConfigError::new(
                            "id_token_signing_algorithms",
                            format!("{name:?} is not supported (RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA; never none or HS*)"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let cookies = cookie_config(&raw.cookie)?;
        let sealing_keys = sealing_keys(&raw.cookie, &env)?;

        let absolute_timeout = bounded(
            "session.absolute_timeout_seconds",
            raw.session.absolute_timeout_seconds,
            8 * 3600,
            10,
            400 * 86400,
        )?;
        let idle_timeout = bounded(
            "session.idle_timeout_seconds",
            raw.session.idle_timeout_seconds,
            absolute_timeout.min(3600),
            10,
            absolute_timeout,
        )?;
        let store = raw.session.store.unwrap_or(SessionStoreKind::SharedData);
        // A per-process random key would end every session at the next replica or restart.
        if store == SessionStoreKind::Cookie && sealing_keys.is_none() {
            return Err(ConfigError::new(
                "session.store",
                "cookie needs cookie.keys or cookie.keys_env (the same keys on every replica)",
            ));
        }
        let refresh_margin = bounded(
            "session.refresh_margin_seconds",
            raw.session.refresh_margin_seconds,
            60,
            0,
            3600,
        )?;
        let max_sessions = raw.session.max_sessions.unwrap_or(50_000);
        if !(1..=10_000_000).contains(&max_sessions) {
            return Err(ConfigError::new(
                "session.max_sessions",
                "must be between 1 and 10000000",
            ));
        }
        let sweep_interval = bounded(
            "session.sweep_interval_seconds",
            raw.session.sweep_interval_seconds,
            300,
            1,
            3600,
        )?;
        let etcd = crate::session::etcd::config::parse(
            raw.session.etcd,
            store == SessionStoreKind::Etcd,
            idle_timeout,
            &env,
        )?;
        let max_sessions_per_subject = bounded(
            "session.max_sessions_per_subject",
            raw.session.max_sessions_per_subject,
            64,
            1,
            1024,
        )? as usize;
        let session = SessionConfig {
            store,
            absolute_timeout,
            idle_timeout,
            refresh_margin,
            max_sessions,
            sweep_interval,
            etcd,
            max_sessions_per_subject,
        };

        let upstream = upstream_config(raw.upstream)?;
        let access = access::access_config(access::RawAccess {
            bearer: raw.bearer,
            api_path_prefixes: raw.api_path_prefixes,
            public_paths: raw.public_paths,
            authorization: raw.authorization,
        })?;

        Ok(Config {
            issuer,
            issuer_url,
            allow_http,
            client_id,
            client_secret: Secret(client_secret),
            client_auth: raw
                .token_endpoint_auth_method
                .unwrap_or(ClientAuthMethod::ClientSecretBasic),
            redirect_uri,
            callback_path,
            logout_path,
            post_logout_redirect_uri,
            backchannel_logout_path,
            scope: scopes.join(" "),
            clusters: ProviderClusters {
                default: default_cluster,
                by_authority: raw.provider_clusters_by_authority,
            },
            callout_timeout_ms,
            clock_skew,
            login_timeout,
            metadata_refresh,
            allowed_algorithms,
            cookies,
            sealing_keys,
            session,
            upstream,
            access,
            log_level,
        })
    }

    /// Request headers that only the filter may set: removed from every client request.
    pub fn identity_headers(&self) -> impl Iterator<Item = &str> {
        let authorization = match self.upstream.authorization {
            UpstreamAuthorization::None => None,
            _ => Some("authorization"),
        };
        authorization
            .into_iter()
            .chain(self.upstream.claim_headers.iter().map(|(h, _)| h.as_str()))
            .chain(self.upstream.claims_header.as_deref())
    }

    /// The claims a session must keep: those the configured headers read for
    /// sessions and those the authorization rules read.
    pub fn retained_claims(&self) -> impl Iterator<Item = &str> {
        self.upstream
            .claim_headers
            .iter()
            .flat_map(|(_, claims)| claims.session.iter().map(ClaimPath::root))
            .chain(self.access.retained_claims())
    }
}

fn json_error(err: serde_json::Error) -> ConfigError {
    // serde names the offending field in its message ("unknown field `x`", "missing field `y`").
    let message = err.to_string();
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("<json>")
        .to_string();
    ConfigError { field, message }
}

fn required(value: Option<String>, field: &str) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(ConfigError::new(field, "must not be empty")),
        None => Err(ConfigError::new(field, "missing (required)")),
    }
}

fn parse_url(field: &str, value: &str) -> Result<Url, ConfigError> {
    let url = crate::oidc::discovery::parse_ascii_url(value)
        .map_err(|e| ConfigError::new(field, format!("{value:?} is not a URL: {e}")))?;
    if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            field,
            format!("{value:?} must be an http(s) URL with a host"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(field, "must not carry credentials"));
    }
    Ok(url)
}

fn require_https(field: &str, url: &Url, allow_http: bool) -> Result<(), ConfigError> {
    if url.scheme() == "https" || allow_http {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            "must use https (set insecure_allow_http: true only for local testing)",
        ))
    }
}

fn local_path(field: &str, path: &str) -> Result<String, ConfigError> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains(['\\', '#'])
        && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(path.to_string())
    } else {
        Err(ConfigError::new(
            field,
            format!("{path:?} must be a local path such as /oauth2/logout"),
        ))
    }
}

pub(crate) fn bounded(
    field: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

fn cookie_config(raw: &RawCookie) -> Result<CookieConfig, ConfigError> {
    let prefix = raw.prefix.clone().unwrap_or_else(|| "oidc".to_string());
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if prefix.is_empty() || !prefix.chars().all(token_char) {
        return Err(ConfigError::new(
            "cookie.prefix",
            "must be non-empty and use only letters, digits, '-' and '_'",
        ));
    }
    let secure = raw.secure.unwrap_or(true);
    let same_site = raw.same_site.unwrap_or(SameSite::Lax);
    if same_site == SameSite::None && !secure {
        return Err(ConfigError::new(
            "cookie.same_site",
            "None requires cookie.secure: true (browsers drop the cookie otherwise)",
        ));
    }
    if let Some(domain) = &raw.domain {
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(ConfigError::new(
                "cookie.domain",
                format!("{domain:?} is not a domain name"),
            ));
        }
    }
    // `__Host-` binds the cookie to this host, https and Path=/; `__Secure-` still
    // guarantees it was set over https when a Domain widens it.
    let name_prefix = match (secure, raw.domain.is_some()) {
        (true, false) => "__Host-",
        (true, true) => "__Secure-",
        (false, _) => "",
    };
    Ok(CookieConfig {
        session_name: format!("{name_prefix}{prefix}-session"),
        login_prefix: format!("{name_prefix}{prefix}-login-"),
        attributes: CookieAttributes {
            secure,
            http_only: raw.http_only.unwrap_or(true),
            same_site,
            path: "/".to_string(),
            domain: raw.domain.clone(),
        },
    })
}

fn sealing_keys(
    raw: &RawCookie,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SealingKeys>, ConfigError> {
    let (field, keys) = match (&raw.keys, &raw.keys_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "cookie.keys",
                "set either cookie.keys or cookie.keys_env, not both",
            ))
        }
        (Some(keys), None) => ("cookie.keys", keys.clone()),
        (None, Some(var)) => {
            let value = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                ConfigError::new(
                    "cookie.keys_env",
                    format!("environment variable {var} is not set or empty in the VM (list it in vm_config.environment_variables.host_env_keys)"),
                )
            })?;
            // Several keys in one variable: comma or whitespace separated, newest first.
            let keys = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            ("cookie.keys_env", keys)
        }
        (None, None) => return Ok(None),
    };
    SealingKeys::from_encoded(&keys)
        .map(Some)
        .map_err(|e| ConfigError::new(field, e.to_string()))
}

/// A request header the filter may set from claims: a plain token, and none of
/// the headers that route, frame or authenticate the request.
fn identity_header_name(header: &str) -> Option<String> {
    let name = header.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(
            name.as_str(),
            "cookie" | "host" | "authorization" | "content-length" | "transfer-encoding"
        );
    valid.then_some(name)
}

fn upstream_config(raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let claim_headers = match raw.claim_headers {
        None => vec![
            (
                "x-auth-request-user".to_string(),
                HeaderClaims::same(ClaimPath(vec!["sub".to_string()])),
            ),
            (
                "x-auth-request-email".to_string(),
                HeaderClaims::same(ClaimPath(vec!["email".to_string()])),
            ),
        ],
        Some(map) => map
            .into_iter()
            .map(|(header, spec)| {
                let name = identity_header_name(&header).ok_or_else(|| {
                    ConfigError::new(
                        "upstream.claim_headers",
                        format!("{header:?} cannot carry a claim"),
                    )
                })?;
                let claims = header_claims(&format!("upstream.claim_headers.{name}"), &spec)?;
                Ok((name, claims))
            })
            .collect::<Result<_, _>>()?,
    };
    let claims_separator = raw.claims_separator.unwrap_or_else(|| ",".to_string());
    if claims_separator.is_empty()
        || claims_separator.len() > 8
        || claims_separator.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            "upstream.claims_separator",
            "must be 1 to 8 characters without control characters",
        ));
    }
    let claims_header = match raw.claims_header {
        Some(header) => {
            let name = identity_header_name(&header).ok_or_else(|| {
                ConfigError::new(
                    "upstream.claims_header",
                    format!("{header:?} cannot carry the claims"),
                )
            })?;
            if claim_headers.iter().any(|(h, _)| *h == name) {
                return Err(ConfigError::new(
                    "upstream.claims_header",
                    format!("{name:?} is already used in upstream.claim_headers"),
                ));
            }
            Some(name)
        }
        None => None,
    };
    Ok(UpstreamConfig {
        authorization: raw
            .authorization
            .unwrap_or(UpstreamAuthorization::AccessToken),
        claim_headers,
        claims_separator,
        claims_header,
    })
}

/// Fallback lists longer than this are a mistake, not a need.
const MAX_FALLBACK_CLAIMS: usize = 8;

/// One `upstream.claim_headers` value: `"claim"`, `["claim", "fallback", …]`,
/// or `{"session": <either>, "bearer": <either>}`.
fn header_claims(field: &str, spec: &serde_json::Value) -> Result<HeaderClaims, ConfigError> {
    match spec {
        serde_json::Value::Object(sources) => {
            if let Some(other) = sources
                .keys()
                .find(|k| !matches!(k.as_str(), "session" | "bearer"))
            {
                return Err(ConfigError::new(
                    field,
                    format!("{other:?} is not a source (session, bearer)"),
                ));
            }
            let source = |name: &str| {
                let field = format!("{field}.{name}");
                let spec = sources.get(name).ok_or_else(|| {
                    ConfigError::new(
                        &field,
                        "missing: name the claims for both session and bearer",
                    )
                })?;
                claim_list(&field, spec)
            };
            Ok(HeaderClaims {
                session: source("session")?,
                bearer: source("bearer")?,
            })
        }
        other => {
            let list = claim_list(field, other)?;
            Ok(HeaderClaims {
                session: list.clone(),
                bearer: list,
            })
        }
    }
}

fn claim_list(field: &str, spec: &serde_json::Value) -> Result<Vec<ClaimPath>, ConfigError> {
    let path = |value: &serde_json::Value| {
        value
            .as_str()
            .and_then(ClaimPath::parse)
            .ok_or_else(|| ConfigError::new(field, format!("{value} is not a claim path")))
    };
    match spec {
        serde_json::Value::Array(items) if (1..=MAX_FALLBACK_CLAIMS).contains(&items.len()) => {
            items.iter().map(path).collect()
        }
        serde_json::Value::Array(_) => Err(ConfigError::new(
            field,
            format!("must list 1 to {MAX_FALLBACK_CLAIMS} claims"),
        )),
        single => Ok(vec![path(single)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "issuer": "https://idp.example",
        "client_id": "rp",
        "client_secret": "s3cret",
        "redirect_uri": "https://app.example/oauth2/callback",
        "provider_cluster": "idp"
    }"#;

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut json: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        if value.is_null() {
            json.as_object_mut().unwrap().remove(field);
        } else {
            json[field] = value;
        }
        serde_json::to_vec(&json).unwrap()
    }

    fn error(json: &[u8]) -> ConfigError {
        Config::parse(json, |_| None).expect_err("config should be refused")
    }

    #[test]
    fn log_level_is_read() {
        for (text, level) in [
            ("error", log::LevelFilter::Error),
            ("warn", log::LevelFilter::Warn),
            ("info", log::LevelFilter::Info),
            ("debug", log::LevelFilter::Debug),
            ("trace", log::LevelFilter::Trace),
        ] {
            let config = Config::parse(&with("log_level", text.into()), |_| None).unwrap();
            assert_eq!(config.log_level, level, "{text}");
        }
    }

    #[test]
    fn minimal_config_gets_secure_defaults() {
        let config = Config::parse(MINIMAL.as_bytes(), |_| None).unwrap();
        assert_eq!(config.scope, "openid");
        assert_eq!(config.callback_path, "/oauth2/callback");
        assert_eq!(config.client_auth, ClientAuthMethod::ClientSecretBasic);
        assert_eq!(config.cookies.session_name, "__Host-oidc-session");
        assert_eq!(config.cookies.login_prefix, "__Host-oidc-login-");
        let attrs = &config.cookies.attributes;
        assert!(attrs.secure && attrs.http_only);
        assert_eq!(attrs.same_site, SameSite::Lax);
        assert_eq!(
            config.upstream.authorization,
            UpstreamAuthorization::AccessToken
        );
        assert!(!config.allowed_algorithms.is_empty());
        assert!(config.sealing_keys.is_none());
        assert_eq!(config.log_level, log::LevelFilter::Info);
        let identity: Vec<&str> = config.identity_headers().collect();
        assert_eq!(
            identity,
            [
                "authorization",
                "x-auth-request-user",
                "x-auth-request-email"
            ]
        );
        assert!(format!("{config:?}").contains("<redacted>"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with("bogus", 1.into()), "bogus"),
            (with("issuer", serde_json::Value::Null), "issuer"),
            (with("issuer", "http://idp.example".into()), "issuer"),
            (with("issuer", "not a url".into()), "issuer"),
            (with("issuer", "https://idp.example/?a=b".into()), "issuer"),
            (with("client_id", serde_json::Value::Null), "client_id"),
            (with("client_id", "".into()), "client_id"),
            (
                with("client_secret", serde_json::Value::Null),
                "client_secret",
            ),
            (
                with("redirect_uri", "https://app.example/".into()),
                "redirect_uri",
            ),
            (with("redirect_uri", "/callback".into()), "redirect_uri"),
            (
                with("provider_cluster", serde_json::Value::Null),
                "provider_cluster",
            ),
            (with("scopes", serde_json::json!(["has space"])), "scopes"),
            (with("callout_timeout_ms", 0.into()), "callout_timeout_ms"),
            (with("log_level", "verbose".into()), "log_level"),
            (with("log_level", "INFO".into()), "log_level"),
            (with("log_level", 3.into()), "<json>"),
            (with("logout_path", "//evil".into()), "logout_path"),
            (
                with("id_token_signing_algorithms", serde_json::json!(["none"])),
                "id_token_signing_algorithms",
            ),
            (
                with("id_token_signing_algorithms", serde_json::json!(["HS256"])),
                "id_token_signing_algorithms",
            ),
            (
                with("token_endpoint_auth_method", "private_key_jwt".into()),
                "<json>",
            ),
            (
                with(
                    "cookie",
                    serde_json::json!({"secure": false, "same_site": "None"}),
                ),
                "cookie.same_site",
            ),
            (
                with("cookie", serde_json::json!({"prefix": "a b"})),
                "cookie.prefix",
            ),
            (
                with("cookie", serde_json::json!({"colour": "red"})),
                "colour",
            ),
            (
                with("cookie", serde_json::json!({"keys": ["c2hvcnQ"]})),
                "cookie.keys",
            ),
            (
                with("session", serde_json::json!({"idle_timeout_seconds": 5})),
                "session.idle_timeout_seconds",
            ),
            (
                with(
                    "session",
                    serde_json::json!({"max_sessions_per_subject": 0}),
                ),
                "session.max_sessions_per_subject",
            ),
            (
                with(
                    "session",
                    serde_json::json!({"max_sessions_per_subject": 1025}),
                ),
                "session.max_sessions_per_subject",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"cookie": "sub"}}),
                ),
                "upstream.claim_headers",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"x-a": "a..b"}}),
                ),
                "upstream.claim_headers.x-a",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"x-a": ["uid", 3]}}),
                ),
                "upstream.claim_headers.x-a",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"x-a": []}}),
                ),
                "upstream.claim_headers.x-a",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"X-A": {"session": "sub"}}}),
                ),
                "upstream.claim_headers.x-a.bearer",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"x-a": {"session": "sub", "bearer": "sub", "api": "x"}}}),
                ),
                "upstream.claim_headers.x-a",
            ),
            (
                with(
                    "upstream",
                    serde_json::json!({"claim_headers": {"x-a": {"session": "sub", "bearer": [""]}}}),
                ),
                "upstream.claim_headers.x-a.bearer",
            ),
            (b"not json".to_vec(), "<json>"),
            (b"".to_vec(), "<json>"),
        ];
        for (json, field) in cases {
            let err = error(&json);
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn http_is_allowed_only_when_asked_for() {
        let mut json: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        json["issuer"] = "http://127.0.0.1:9601".into();
        json["redirect_uri"] = "http://127.0.0.1:8080/oauth2/callback".into();
        assert_eq!(error(&serde_json::to_vec(&json).unwrap()).field, "issuer");
        json["insecure_allow_http"] = true.into();
        assert!(Config::parse(&serde_json::to_vec(&json).unwrap(), |_| None).is_ok());
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let json = with("client_secret", serde_json::Value::Null);
        let mut json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        json["client_secret_env"] = "OIDC_SECRET".into();
        json["cookie"] = serde_json::json!({"keys_env": "OIDC_KEYS"});
        let bytes = serde_json::to_vec(&json).unwrap();
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
        let env = |name: &str| match name {
            "OIDC_SECRET" => Some("from-env".to_string()),
            "OIDC_KEYS" => Some(format!("{key},{key}")),
            _ => None,
        };
        let config = Config::parse(&bytes, env).unwrap();
        assert_eq!(config.client_secret.expose(), "from-env");
        assert!(config.sealing_keys.is_some());
        let err = Config::parse(&bytes, |_| None).unwrap_err();
        assert_eq!(err.field, "client_secret_env");
        assert!(err.message.contains("OIDC_SECRET"));
    }

    #[test]
    fn the_cookie_store_requires_configured_keys() {
        let err = error(&with("session", serde_json::json!({"store": "cookie"})));
        assert_eq!(err.field, "session.store");
        let mut json: serde_json::Value =
            serde_json::from_slice(&with("session", serde_json::json!({"store": "cookie"})))
                .unwrap();
        json["cookie"] =
            serde_json::json!({"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]});
        let config = Config::parse(&serde_json::to_vec(&json).unwrap(), |_| None).unwrap();
        assert_eq!(config.session.store, SessionStoreKind::Cookie);
        assert!(config.cookies.is_ours(b"__Host-oidc-session-3"));
        assert!(!config.cookies.is_ours(b"__Host-oidc-sessionx"));
        assert!(config.cookies.is_ours(b"__Host-oidc-login-AbCd-_12"));
        // An application's cookie that only shares the prefix reaches the upstream.
        assert!(!config.cookies.is_ours(b"__Host-oidc-login-preferences"));
    }

    #[test]
    fn scopes_always_start_with_openid_once() {
        let config = Config::parse(
            &with("scopes", serde_json::json!(["email", "openid", "email"])),
            |_| None,
        )
        .unwrap();
        assert_eq!(config.scope, "openid email");
    }

    #[test]
    fn claim_paths_reach_nested_claims() {
        let claims = serde_json::json!({"realm_access": {"roles": ["a", "b"]}, "sub": "x"});
        let claims = claims.as_object().unwrap();
        let path = ClaimPath::parse("realm_access.roles").unwrap();
        assert_eq!(path.lookup(claims), Some(&serde_json::json!(["a", "b"])));
        assert_eq!(ClaimPath::parse("sub.deeper").unwrap().lookup(claims), None);
        assert!(ClaimPath::parse("").is_none());
    }
}
