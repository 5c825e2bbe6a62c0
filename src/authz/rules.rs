//! Authorization rules: the first rule matching host, method and path decides,
//! and all of its requirements must hold in the caller's claims.

use serde_json::{Map, Value};

use super::claims::ClaimPath;
use super::public_paths::{under_prefix, under_prefix_ignoring_case};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// Each claim must contain at least one of its values.
    pub claims: Vec<(ClaimPath, Vec<Value>)>,
    /// All must be granted, through `scope` (space-separated) or `scp` (array).
    pub scopes: Vec<String>,
    /// `aud` (string or array) must contain it.
    pub audience: Option<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.scopes.is_empty() && self.audience.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Normalized; matched segment by segment (see [`under_prefix`]).
    pub path_prefix: String,
    /// Lower-case; empty matches every host.
    pub hosts: Vec<String>,
    /// Upper-case; empty matches every method.
    pub methods: Vec<String>,
    pub require: Requirements,
    /// `false`: everyone matching is refused, whatever their claims.
    pub allow: bool,
}

#[derive(Debug, Clone)]
pub struct Authorization {
    pub default: Policy,
    pub rules: Vec<Rule>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            default: Policy::Allow,
            rules: Vec::new(),
        }
    }
}

/// The parts of a request rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `:authority` as sent, if any.
    pub authority: Option<&'a str>,
    pub method: &'a str,
    /// From [`crate::http::paths::normalize_path`].
    pub path: &'a str,
}

/// Why a request was refused; names the requirement, never a claim's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Rule `index` (0-based) has `allow: false`.
    RuleDenies(usize),
    MissingClaim {
        rule: usize,
        claim: String,
    },
    MissingScope {
        rule: usize,
        scope: String,
    },
    WrongAudience {
        rule: usize,
    },
    /// No rule matched and the default is deny.
    Default,
}

impl Denial {
    /// Whether the token lacks privileges (RFC 6750 `insufficient_scope`) rather
    /// than the path being closed.
    pub fn is_insufficient(&self) -> bool {
        !matches!(self, Denial::RuleDenies(_) | Denial::Default)
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::RuleDenies(i) => write!(f, "rule {i} denies the path"),
            Denial::MissingClaim { rule, claim } => {
                write!(f, "rule {rule} requires claim {claim:?} with another value")
            }
            Denial::MissingScope { rule, scope } => {
                write!(f, "rule {rule} requires scope {scope:?}")
            }
            Denial::WrongAudience { rule } => write!(f, "rule {rule} requires another audience"),
            Denial::Default => f.write_str("no rule matches and the default is deny"),
        }
    }
}

impl Authorization {
    /// Whether some request could be refused for its path: only then must a
    /// path that cannot be normalized be refused rather than passed on.
    pub fn depends_on_path(&self) -> bool {
        self.default == Policy::Deny || !self.rules.is_empty()
    }

    /// Decides twice, with paths compared exactly and ignoring case, and allows
    /// only what both allow: a case-insensitive upstream serves `/Admin/x` as
    /// `/admin/x`, so a restricting rule must cover it, while a rule that opens
    /// a path under `default: deny` must not open its other spellings.
    pub fn decide(&self, target: &Target<'_>, claims: &Map<String, Value>) -> Result<(), Denial> {
        self.decide_as(target, claims, false)?;
        if self.rules.is_empty() {
            return Ok(());
        }
        let folded = fold_case(target.path);
        let folded = Target {
            path: &folded,
            ..*target
        };
        self.decide_as(&folded, claims, true)
    }

    fn decide_as(
        &self,
        target: &Target<'_>,
        claims: &Map<String, Value>,
        ignore_case: bool,
    ) -> Result<(), Denial> {
        let Some((index, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(target, ignore_case))
        else {
            return match self.default {
                Policy::Allow => Ok(()),
                Policy::Deny => Err(Denial::Default),
            };
        };
        if !rule.allow {
            return Err(Denial::RuleDenies(index));
        }
        rule.require.check(index, claims)
    }
}

impl Rule {
    /// With `ignore_case`, `target.path` comes from [`fold_case`].
    fn matches(&self, target: &Target<'_>, ignore_case: bool) -> bool {
        let under = if ignore_case {
            under_prefix_ignoring_case(target.path, &self.path_prefix)
        } else {
            under_prefix(target.path, &self.path_prefix)
        };
        under
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| method_matches(m, target.method)))
            && (self.hosts.is_empty()
                || target
                    .authority
                    .is_some_and(|a| host_matches(&self.hosts, a)))
    }
}

/// A path as a case-insensitive server may read it: upper- then lower-cased,
/// so characters with several cases (`ſ`, the Kelvin sign) meet their ASCII twins.
fn fold_case(path: &str) -> String {
    path.to_uppercase().to_lowercase()
}

/// HEAD returns what GET would (headers, length), so a rule on GET covers it.
fn method_matches(rule_method: &str, method: &str) -> bool {
    rule_method == method || (rule_method == "GET" && method == "HEAD")
}

/// Entries with a port compare with the whole authority; entries without, with
/// the host part, so `app.example` covers `app.example:8443`.
fn host_matches(hosts: &[String], authority: &str) -> bool {
    let authority = authority.to_ascii_lowercase();
    let host = match authority.rsplit_once(':') {
        // `[::1]:80` splits at the last colon; a bare `[::1]` ends in `]`.
        Some((host, port)) if !port.contains(']') => host,
        _ => authority.as_str(),
    };
    let host = host.trim_end_matches('.');
    hosts.iter().any(|h| *h == authority || h == host)
}

impl Requirements {
    fn check(&self, rule: usize, claims: &Map<String, Value>) -> Result<(), Denial> {
        for (path, wanted) in &self.claims {
            if !claim_contains_any(path.lookup(claims), wanted) {
                return Err(Denial::MissingClaim {
                    rule,
                    claim: path.0.join("."),
                });
            }
        }
        if !self.scopes.is_empty() {
            let granted = granted_scopes(claims);
            if let Some(missing) = self.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
                return Err(Denial::MissingScope {
                    rule,
                    scope: missing.clone(),
                });
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(Denial::WrongAudience { rule });
            }
        }
        Ok(())
    }
}

/// A scalar claim equal to, or an array claim containing, one of `wanted`.
fn claim_contains_any(claim: Option<&Value>, wanted: &[Value]) -> bool {
    match claim {
        Some(Value::Array(items)) => items.iter().any(|item| wanted.contains(item)),
        Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
            wanted.contains(value)
        }
        _ => false,
    }
}

/// `scope` (RFC 8693 §4.2: space-separated) and `scp` (an array, or a string in
/// some providers), united.
fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> ClaimPath {
        ClaimPath(p.split('.').map(str::to_string).collect())
    }

    fn rule(prefix: &str) -> Rule {
        Rule {
            path_prefix: prefix.to_string(),
            hosts: Vec::new(),
            methods: Vec::new(),
            require: Requirements::default(),
            allow: true,
        }
    }

    fn target<'a>(method: &'a str, path: &'a str) -> Target<'a> {
        Target {
            authority: Some("app.example"),
            method,
            path,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn authz(default: Policy, rules: Vec<Rule>) -> Authorization {
        Authorization { default, rules }
    }

    #[test]
    fn the_default_decides_when_no_rule_matches() {
        let c = claims(json!({"sub": "a"}));
        assert_eq!(
            authz(Policy::Allow, vec![]).decide(&target("GET", "/x"), &c),
            Ok(())
        );
        assert_eq!(
            authz(Policy::Deny, vec![]).decide(&target("GET", "/x"), &c),
            Err(Denial::Default)
        );
        let open = authz(Policy::Deny, vec![rule("/public-ish/")]);
        assert_eq!(open.decide(&target("GET", "/public-ish/a"), &c), Ok(()));
        assert_eq!(
            open.decide(&target("GET", "/other"), &c),
            Err(Denial::Default)
        );
    }

    #[test]
    fn restricting_rules_ignore_case() {
        let mut admins = rule("/admin/");
        admins.require.claims = vec![(path("groups"), vec![json!("admins")])];
        let mut closed = rule("/internal");
        closed.allow = false;
        let a = authz(Policy::Allow, vec![admins, closed]);
        let bob = claims(json!({"groups": ["users"]}));
        let alice = claims(json!({"groups": ["admins"]}));
        let missing = Err(Denial::MissingClaim {
            rule: 0,
            claim: "groups".into(),
        });
        for p in ["/Admin/users", "/ADMIN", "/aDmIn/x/", "/admin/x"] {
            assert_eq!(a.decide(&target("GET", p), &bob), missing, "{p}");
            assert_eq!(a.decide(&target("GET", p), &alice), Ok(()), "{p}");
        }
        assert_eq!(a.decide(&target("GET", "/Administrator"), &bob), Ok(()));
        // The dotless ı upper-cases to I: some servers would read it as i.
        for p in ["/INTERNAL", "/Internal/x", "/\u{131}nternal"] {
            assert_eq!(
                a.decide(&target("GET", p), &alice),
                Err(Denial::RuleDenies(1)),
                "{p}"
            );
        }
        // Other letters with an ASCII twin when folded: the long s and the Kelvin sign.
        let mut secret = rule("/secret/");
        secret.allow = false;
        let mut kv = rule("/kv/");
        kv.allow = false;
        let b = authz(Policy::Allow, vec![secret, kv]);
        assert_eq!(
            b.decide(&target("GET", "/\u{17f}ecret/a"), &alice),
            Err(Denial::RuleDenies(0))
        );
        assert_eq!(
            b.decide(&target("GET", "/\u{212a}v/a"), &alice),
            Err(Denial::RuleDenies(1))
        );
        assert_eq!(b.decide(&target("GET", "/secretive"), &alice), Ok(()));
    }

    #[test]
    fn opening_rules_under_default_deny_stay_exact() {
        let open = authz(Policy::Deny, vec![rule("/docs/")]);
        let c = claims(json!({"sub": "a"}));
        assert_eq!(open.decide(&target("GET", "/docs/a"), &c), Ok(()));
        assert_eq!(
            open.decide(&target("GET", "/Docs/a"), &c),
            Err(Denial::Default)
        );
        // A closed path inside an open one is closed in every spelling.
        let mut closed = rule("/docs/drafts/");
        closed.allow = false;
        let both = authz(Policy::Deny, vec![closed, rule("/docs/")]);
        assert_eq!(
            both.decide(&target("GET", "/docs/DRAFTS/x"), &c),
            Err(Denial::RuleDenies(0))
        );
        assert_eq!(both.decide(&target("GET", "/docs/published"), &c), Ok(()));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let mut admins = rule("/admin/");
        admins.require.claims = vec![(path("groups"), vec![json!("admins")])];
        let mut closed = rule("/admin/secret/");
        closed.allow = false;
        let mut anyone = rule("/admin/");
        anyone.allow = true;
        let a = authz(Policy::Allow, vec![closed.clone(), admins.clone(), anyone]);
        let alice = claims(json!({"groups": ["admins", "users"]}));
        let bob = claims(json!({"groups": ["users"]}));
        assert_eq!(a.decide(&target("GET", "/admin/x"), &alice), Ok(()));
        assert_eq!(
            a.decide(&target("GET", "/admin/x"), &bob),
            Err(Denial::MissingClaim {
                rule: 1,
                claim: "groups".into()
            })
        );
        assert_eq!(
            a.decide(&target("GET", "/admin"), &bob),
            Err(Denial::MissingClaim {
                rule: 1,
                claim: "groups".into()
            })
        );
        assert_eq!(
            a.decide(&target("GET", "/admin/secret/x"), &alice),
            Err(Denial::RuleDenies(0))
        );
        assert_eq!(a.decide(&target("GET", "/administrator"), &bob), Ok(()));
        // Order matters: the broad rule first shadows the closed one.
        let b = authz(Policy::Allow, vec![admins, closed]);
        assert_eq!(b.decide(&target("GET", "/admin/secret/x"), &alice), Ok(()));
    }

    #[test]
    fn hosts_and_methods_narrow_a_rule() {
        let mut writes = rule("/");
        writes.methods = vec!["POST".into(), "DELETE".into()];
        writes.require.scopes = vec!["api:write".into()];
        let mut reads = rule("/");
        reads.methods = vec!["GET".into()];
        reads.hosts = vec!["api.example".into()];
        reads.require.scopes = vec!["api:read".into()];
        let a = authz(Policy::Deny, vec![writes, reads]);
        let reader = claims(json!({"scope": "openid api:read"}));
        let on = |authority: Option<&'static str>, method: &'static str| Target {
            authority,
            method,
            path: "/items",
        };
        assert_eq!(a.decide(&on(Some("api.example"), "GET"), &reader), Ok(()));
        assert_eq!(
            a.decide(&on(Some("API.example:8443"), "HEAD"), &reader),
            Ok(())
        );
        assert_eq!(a.decide(&on(Some("api.example."), "GET"), &reader), Ok(()));
        assert_eq!(
            a.decide(&on(Some("other.example"), "GET"), &reader),
            Err(Denial::Default)
        );
        assert_eq!(a.decide(&on(None, "GET"), &reader), Err(Denial::Default));
        assert_eq!(
            a.decide(&on(Some("api.example"), "PUT"), &reader),
            Err(Denial::Default)
        );
        assert_eq!(
            a.decide(&on(Some("api.example"), "POST"), &reader),
            Err(Denial::MissingScope {
                rule: 0,
                scope: "api:write".into()
            })
        );
        let mut ported = rule("/");
        ported.hosts = vec!["api.example:8443".into()];
        let p = authz(Policy::Deny, vec![ported]);
        assert_eq!(
            p.decide(&on(Some("api.example:8443"), "GET"), &reader),
            Ok(())
        );
        assert_eq!(
            p.decide(&on(Some("api.example"), "GET"), &reader),
            Err(Denial::Default)
        );
        assert_eq!(
            p.decide(&on(Some("[::1]:8443"), "GET"), &reader),
            Err(Denial::Default)
        );
    }

    #[test]
    fn claim_requirements() {
        let mut r = rule("/");
        r.require.claims = vec![
            (
                path("realm_access.roles"),
                vec![json!("editor"), json!("owner")],
            ),
            (path("email_verified"), vec![json!(true)]),
            (path("tier"), vec![json!("gold"), json!(3)]),
        ];
        let a = authz(Policy::Allow, vec![r]);
        let t = target("GET", "/");
        let ok = claims(json!({
            "realm_access": {"roles": ["viewer", "owner"]}, "email_verified": true, "tier": 3
        }));
        assert_eq!(a.decide(&t, &ok), Ok(()));
        let cases = [
            (
                json!({"realm_access": {"roles": ["viewer"]}, "email_verified": true, "tier": "gold"}),
                "realm_access.roles",
            ),
            (
                json!({"realm_access": {"roles": "owner"}, "email_verified": "true", "tier": "gold"}),
                "email_verified",
            ),
            (
                json!({"realm_access": ["owner"], "email_verified": true, "tier": "gold"}),
                "realm_access.roles",
            ),
            (
                json!({"roles": ["owner"], "email_verified": true, "tier": "gold"}),
                "realm_access.roles",
            ),
            (
                json!({"realm_access": {"roles": [["owner"]]}, "email_verified": true, "tier": "gold"}),
                "realm_access.roles",
            ),
            (
                json!({"realm_access": {"roles": {"owner": true}}, "email_verified": true, "tier": "gold"}),
                "realm_access.roles",
            ),
            (
                json!({"realm_access": {"roles": ["owner"]}, "email_verified": true, "tier": "3"}),
                "tier",
            ),
            (
                json!({"realm_access": {"roles": ["owner"]}, "email_verified": true, "tier": null}),
                "tier",
            ),
        ];
        for (value, failing) in cases {
            assert_eq!(
                a.decide(&t, &claims(value.clone())),
                Err(Denial::MissingClaim {
                    rule: 0,
                    claim: failing.into()
                }),
                "{value}"
            );
        }
        // A single string claim counts like a one-element array.
        let string_roles = claims(json!({
            "realm_access": {"roles": "owner"}, "email_verified": true, "tier": "gold"
        }));
        assert_eq!(a.decide(&t, &string_roles), Ok(()));
    }

    #[test]
    fn scopes_must_all_be_granted_through_scope_or_scp() {
        let mut r = rule("/");
        r.require.scopes = vec!["api:read".into(), "api:write".into()];
        let a = authz(Policy::Allow, vec![r]);
        let t = target("GET", "/");
        for granted in [
            json!({"scope": "api:read api:write"}),
            json!({"scope": "openid  api:write api:read"}),
            json!({"scp": ["api:write", "api:read"]}),
            json!({"scp": "api:write api:read"}),
            json!({"scope": "api:read", "scp": ["api:write"]}),
            json!({"scope": ["api:read", "api:write"]}),
        ] {
            assert_eq!(a.decide(&t, &claims(granted.clone())), Ok(()), "{granted}");
        }
        for missing in [
            json!({"scope": "api:read"}),
            json!({"scope": "api:read,api:write"}),
            json!({"scope": "api:readapi:write"}),
            json!({"scp": ["api:read api:write"]}),
            json!({"scp": 7}),
            json!({}),
        ] {
            assert!(
                matches!(
                    a.decide(&t, &claims(missing.clone())),
                    Err(Denial::MissingScope { .. })
                ),
                "{missing}"
            );
        }
    }

    #[test]
    fn audience_requirement() {
        let mut r = rule("/");
        r.require.audience = Some("https://api.example/".into());
        let a = authz(Policy::Allow, vec![r]);
        let t = target("GET", "/");
        assert_eq!(
            a.decide(&t, &claims(json!({"aud": "https://api.example/"}))),
            Ok(())
        );
        assert_eq!(
            a.decide(&t, &claims(json!({"aud": ["x", "https://api.example/"]}))),
            Ok(())
        );
        for bad in [
            json!({"aud": "https://api.example"}),
            json!({"aud": ["x"]}),
            json!({}),
            json!({"aud": 1}),
        ] {
            assert_eq!(
                a.decide(&t, &claims(bad.clone())),
                Err(Denial::WrongAudience { rule: 0 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_requirement_of_a_rule_must_hold() {
        let mut r = rule("/");
        r.require.claims = vec![(path("groups"), vec![json!("admins")])];
        r.require.scopes = vec!["api:read".into()];
        r.require.audience = Some("api".into());
        let a = authz(Policy::Allow, vec![r]);
        let t = target("GET", "/");
        let all = json!({"groups": ["admins"], "scope": "api:read", "aud": "api"});
        assert_eq!(a.decide(&t, &claims(all)), Ok(()));
        for (drop, _) in [("groups", 0), ("scope", 1), ("aud", 2)] {
            let mut c = claims(json!({"groups": ["admins"], "scope": "api:read", "aud": "api"}));
            c.remove(drop);
            assert!(a.decide(&t, &c).is_err(), "{drop}");
        }
    }
}
