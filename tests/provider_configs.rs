//! The provider configurations in deploy/providers/ (shown in docs/providers.md) are
//! accepted by the filter as they are, with only the client secret supplied.

use oidc_filter::config::{ClaimSource, Config};

fn parse(name: &str) -> Config {
    let path = format!(
        "{}/deploy/providers/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let json = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Config::parse(&json, |var| {
        (var == "OIDC_CLIENT_SECRET").then(|| "secret".to_string())
    })
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_provider_configuration_is_valid() {
    let dir = format!("{}/deploy/providers", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".json")?.to_string())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "auth0",
            "entra-id",
            "google",
            "keycloak",
            "oidc-provider",
            "okta"
        ]
    );
    for name in names {
        parse(&name);
    }
}

#[test]
fn okta_names_one_user_the_same_way_on_both_paths() {
    let config = parse("okta");
    assert_eq!(config.access.bearer.audiences, ["api://default"]);
    let (_, user) = config
        .upstream
        .claim_headers
        .iter()
        .find(|(h, _)| h == "x-auth-request-user")
        .unwrap();
    let names = |source| {
        user.for_source(source)
            .iter()
            .map(|p| p.0.join("."))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(ClaimSource::Session), ["sub"]);
    assert_eq!(names(ClaimSource::Bearer), ["uid", "sub"]);
}

#[test]
fn google_maps_each_host_to_a_cluster() {
    let config = parse("google");
    for host in [
        "accounts.google.com",
        "oauth2.googleapis.com",
        "www.googleapis.com",
    ] {
        assert!(config.clusters.by_authority.contains_key(host), "{host}");
    }
}
