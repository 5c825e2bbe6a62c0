//! Token endpoint requests (RFC 6749 §4.1.3, §6) and the judgement of responses.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};
use url::form_urlencoded;

use super::common::log_safe;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

pub struct ClientCredentials<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub method: ClientAuthMethod,
}

/// The headers (besides `:method`, `:path`, `:authority`) and form body of a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPost {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn authorization_code_request(
    client: &ClientCredentials<'_>,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> FormPost {
    form_post(
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ],
    )
}

pub fn refresh_request(client: &ClientCredentials<'_>, refresh_token: &str) -> FormPost {
    form_post(
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

/// RFC 7662 §2.1: asks the provider whether `token` is active, authenticating
/// as the filter's own client.
pub fn introspection_request(client: &ClientCredentials<'_>, token: &str) -> FormPost {
    form_post(
        client,
        &[("token", token), ("token_type_hint", "access_token")],
    )
}

/// Which kind of token a revocation request names (RFC 7009 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    RefreshToken,
    AccessToken,
}

/// RFC 7009 §2.1: asks the provider to revoke `token`, authenticating as for
/// the token endpoint. Revoking a refresh token also ends its grant's access
/// tokens at providers that support it.
pub fn revocation_request(
    client: &ClientCredentials<'_>,
    token: &str,
    kind: TokenKind,
) -> FormPost {
    let hint = match kind {
        TokenKind::RefreshToken => "refresh_token",
        TokenKind::AccessToken => "access_token",
    };
    form_post(client, &[("token", token), ("token_type_hint", hint)])
}

fn form_post(client: &ClientCredentials<'_>, params: &[(&str, &str)]) -> FormPost {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(params);
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    match client.method {
        ClientAuthMethod::ClientSecretBasic => {
            // RFC 6749 §2.3.1: each part is form-urlencoded before joining, so a
            // ':' in the client id cannot shift the split point.
            let credentials = format!(
                "{}:{}",
                form_urlencoded::byte_serialize(client.client_id.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(client.client_secret.as_bytes())
                    .collect::<String>()
            );
            headers.push((
                "authorization".to_owned(),
                format!("Basic {}", STANDARD.encode(credentials)),
            ));
        }
        ClientAuthMethod::ClientSecretPost => {
            form.append_pair("client_id", client.client_id);
            form.append_pair("client_secret", client.client_secret);
        }
    }
    FormPost {
        headers,
        body: form.finish().into_bytes(),
    }
}

/// A successful token response. Secrets are redacted from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_id_token", &self.id_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// A non-200 answer; `error` and `description` from the RFC 6749 §5.2 body when present.
    Status {
        status: u16,
        error: Option<String>,
        description: Option<String>,
    },
    NotJson,
    MissingField(&'static str),
    /// The field is present but of the wrong JSON type or out of range.
    InvalidField(&'static str),
    NotBearer(String),
    /// A token with characters other than visible ASCII: it goes into headers
    /// (`Authorization`, cookies), where such bytes could split or corrupt them.
    NotVisibleAscii(&'static str),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status {
                status,
                error,
                description,
            } => {
                write!(f, "token endpoint answered HTTP {status}")?;
                if let Some(error) = error {
                    write!(f, " with error {error:?}")?;
                }
                if let Some(description) = description {
                    write!(f, " ({description:?})")?;
                }
                Ok(())
            }
            Self::NotJson => f.write_str("token endpoint response is not a JSON object"),
            Self::MissingField(field) => {
                write!(f, "token endpoint response has no {field:?}")
            }
            Self::InvalidField(field) => {
                write!(f, "token endpoint response field {field:?} is invalid")
            }
            Self::NotVisibleAscii(field) => write!(
                f,
                "token endpoint response field {field:?} has characters other than visible ASCII"
            ),
            Self::NotBearer(token_type) => {
                write!(
                    f,
                    "token endpoint issued a {token_type:?} token, not a Bearer token"
                )
            }
        }
    }
}

impl std::error::Error for TokenError {}

pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenResponse, TokenError> {
    let doc = serde_json::from_slice::<Value>(body).ok();
    let Some(Value::Object(doc)) = doc else {
        if status != 200 {
            return Err(status_error(status, None));
        }
        return Err(TokenError::NotJson);
    };
    if status != 200 {
        return Err(status_error(status, Some(&doc)));
    }

    let text = |field: &'static str| -> Result<Option<String>, TokenError> {
        match doc.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(TokenError::InvalidField(field)),
        }
    };

    // Tokens go into headers: anything but visible ASCII (RFC 6749 VSCHAR
    // without the space, which would split `Bearer <token>`) is refused.
    let token = |field: &'static str| -> Result<Option<String>, TokenError> {
        match text(field)? {
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(TokenError::NotVisibleAscii(field))
            }
            other => Ok(other),
        }
    };

    let access_token = token("access_token")?
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::MissingField("access_token"))?;
    let token_type = text("token_type")?.ok_or(TokenError::MissingField("token_type"))?;
    // RFC 6749 §5.1: token_type is case-insensitive. Anything else (DPoP, MAC)
    // needs proof of possession this relying party does not do.
    if !token_type.eq_ignore_ascii_case("Bearer") {
        return Err(TokenError::NotBearer(log_safe(&token_type, 32)));
    }
    let expires_in = match doc.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(match n.as_u64() {
            Some(seconds) => seconds,
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => f.floor() as u64,
                _ => return Err(TokenError::InvalidField("expires_in")),
            },
        }),
        Some(_) => return Err(TokenError::InvalidField("expires_in")),
    };

    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token: token("refresh_token")?,
        id_token: token("id_token")?,
        scope: text("scope")?,
    })
}

/// The RFC 6749 §5.2 fields, when the body has them as strings. They are the
/// provider's words, shown in logs and error pages, so they are made log-safe.
fn status_error(status: u16, doc: Option<&Map<String, Value>>) -> TokenError {
    let field = |name: &str| {
        doc.and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .map(|s| log_safe(s, 200))
    };
    TokenError::Status {
        status,
        error: field("error"),
        description: field("error_description"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn basic<'a>(id: &'a str, secret: &'a str) -> ClientCredentials<'a> {
        ClientCredentials {
            client_id: id,
            client_secret: secret,
            method: ClientAuthMethod::ClientSecretBasic,
        }
    }

    fn header<'p>(post: &'p FormPost, name: &str) -> Option<&'p str> {
        post.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn code_request_with_basic_auth() {
        let post = authorization_code_request(
            &basic("a:b", "p@ss word"),
            "c/d+e",
            "https://rp.example/callback?x=1",
            "verifier",
        );
        assert_eq!(
            String::from_utf8(post.body.clone()).unwrap(),
            "grant_type=authorization_code&code=c%2Fd%2Be\
             &redirect_uri=https%3A%2F%2Frp.example%2Fcallback%3Fx%3D1&code_verifier=verifier"
        );
        assert_eq!(
            header(&post, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(header(&post, "accept"), Some("application/json"));
        // base64("a%3Ab:p%40ss+word")
        assert_eq!(
            header(&post, "authorization"),
            Some("Basic YSUzQWI6cCU0MHNzK3dvcmQ=")
        );
        assert_eq!(
            STANDARD.decode("YSUzQWI6cCU0MHNzK3dvcmQ=").unwrap(),
            b"a%3Ab:p%40ss+word"
        );
    }

    #[test]
    fn refresh_request_with_post_auth() {
        let client = ClientCredentials {
            client_id: "rp",
            client_secret: "s&=cret",
            method: ClientAuthMethod::ClientSecretPost,
        };
        let post = refresh_request(&client, "rt/1");
        assert_eq!(
            String::from_utf8(post.body.clone()).unwrap(),
            "grant_type=refresh_token&refresh_token=rt%2F1&client_id=rp&client_secret=s%26%3Dcret"
        );
        assert_eq!(header(&post, "authorization"), None);
        assert_eq!(post.headers.len(), 2);
    }

    #[test]
    fn revocation_request_names_the_token_kind_and_authenticates_as_the_client() {
        let post = revocation_request(&basic("rp", "secret"), "rt+1", TokenKind::RefreshToken);
        assert_eq!(
            String::from_utf8(post.body.clone()).unwrap(),
            "token=rt%2B1&token_type_hint=refresh_token"
        );
        assert_eq!(header(&post, "authorization"), Some("Basic cnA6c2VjcmV0"));
        let post = revocation_request(&basic("rp", "secret"), "at", TokenKind::AccessToken);
        assert_eq!(
            String::from_utf8(post.body).unwrap(),
            "token=at&token_type_hint=access_token"
        );
    }

    #[test]
    fn auth_method_config_names() {
        let m: ClientAuthMethod = serde_json::from_str("\"client_secret_post\"").unwrap();
        assert_eq!(m, ClientAuthMethod::ClientSecretPost);
    }

    fn ok(body: Value) -> Result<TokenResponse, TokenError> {
        parse_token_response(200, body.to_string().as_bytes())
    }

    #[test]
    fn good_responses() {
        let r = ok(json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 3600,
            "id_token": "a.b.c", "scope": "openid", "refresh_token": "rt", "extra": 1
        }))
        .unwrap();
        assert_eq!(
            r,
            TokenResponse {
                access_token: "at".into(),
                expires_in: Some(3600),
                refresh_token: Some("rt".into()),
                id_token: Some("a.b.c".into()),
                scope: Some("openid".into()),
            }
        );
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("\"at\"") && !dbg.contains("\"rt\""), "{dbg}");

        let r = ok(json!({"access_token": "at", "token_type": "bearer"})).unwrap();
        assert_eq!(
            (r.expires_in, r.refresh_token, r.id_token, r.scope),
            (None, None, None, None)
        );
        let r = ok(json!({"access_token": "at", "token_type": "BEARER", "expires_in": 59.9}));
        assert_eq!(r.unwrap().expires_in, Some(59));
    }

    #[test]
    fn bad_responses() {
        let cases = [
            (
                json!({"token_type": "Bearer"}),
                TokenError::MissingField("access_token"),
            ),
            (
                json!({"access_token": "", "token_type": "Bearer"}),
                TokenError::MissingField("access_token"),
            ),
            (
                json!({"access_token": 5, "token_type": "Bearer"}),
                TokenError::InvalidField("access_token"),
            ),
            (
                json!({"access_token": "at"}),
                TokenError::MissingField("token_type"),
            ),
            (
                json!({"access_token": "at", "token_type": "DPoP"}),
                TokenError::NotBearer("DPoP".into()),
            ),
            (
                json!({"access_token": "at", "token_type": "Bearer", "expires_in": -1}),
                TokenError::InvalidField("expires_in"),
            ),
            (
                json!({"access_token": "at", "token_type": "Bearer", "expires_in": "3600"}),
                TokenError::InvalidField("expires_in"),
            ),
            (
                json!({"access_token": "at", "token_type": "Bearer", "id_token": ["x"]}),
                TokenError::InvalidField("id_token"),
            ),
            (
                json!({"access_token": "at", "token_type": "Bearer", "refresh_token": 1}),
                TokenError::InvalidField("refresh_token"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(ok(body.clone()).unwrap_err(), want, "{body}");
        }
        for body in [
            &b""[..],
            b"<html>",
            b"[]",
            b"\"x\"",
            b"access_token=x&token_type=bearer",
        ] {
            assert_eq!(
                parse_token_response(200, body).unwrap_err(),
                TokenError::NotJson
            );
        }
    }

    #[test]
    fn tokens_must_be_visible_ascii() {
        for bad in [
            "a\u{1}b",
            "a b",
            "a\r\nSet-Cookie: x=y",
            "caf\u{e9}",
            "a\u{7f}",
            "\t",
            "\u{2028}",
        ] {
            for field in ["access_token", "refresh_token", "id_token"] {
                let mut body = json!({"access_token": "at", "token_type": "Bearer"});
                body[field] = bad.into();
                assert_eq!(
                    ok(body).unwrap_err(),
                    TokenError::NotVisibleAscii(field),
                    "{field} {bad:?}"
                );
            }
        }
        let all_visible: String = (0x21u8..=0x7e).map(char::from).collect();
        let r = ok(json!({"access_token": all_visible, "token_type": "Bearer",
                          "refresh_token": "r~/+=", "id_token": "a.b.c"}))
        .unwrap();
        assert_eq!(r.access_token, all_visible);
        assert_eq!(
            TokenError::NotVisibleAscii("access_token").to_string(),
            "token endpoint response field \"access_token\" has characters other than visible ASCII"
        );
    }

    #[test]
    fn error_statuses() {
        let body = br#"{"error":"invalid_grant","error_description":"authorization code already consumed"}"#;
        assert_eq!(
            parse_token_response(400, body).unwrap_err(),
            TokenError::Status {
                status: 400,
                error: Some("invalid_grant".into()),
                description: Some("authorization code already consumed".into()),
            }
        );
        for (status, body) in [
            (500, &b"oops"[..]),
            (401, b""),
            (400, b"[1]"),
            (400, br#"{"error":7}"#),
        ] {
            assert_eq!(
                parse_token_response(status, body).unwrap_err(),
                TokenError::Status {
                    status,
                    error: None,
                    description: None
                }
            );
        }
        // A 201 with a token in it is still not the answer RFC 6749 §5.1 defines.
        let good = json!({"access_token": "at", "token_type": "Bearer"}).to_string();
        assert!(matches!(
            parse_token_response(201, good.as_bytes()),
            Err(TokenError::Status { status: 201, .. })
        ));
    }

    #[test]
    fn messages() {
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_client","error_description":"bad\nline"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint answered HTTP 400 with error \"invalid_client\" (\"bad?line\")"
        );
        assert_eq!(
            TokenError::Status {
                status: 502,
                error: None,
                description: None
            }
            .to_string(),
            "token endpoint answered HTTP 502"
        );
        assert_eq!(
            TokenError::NotBearer("DPoP".into()).to_string(),
            "token endpoint issued a \"DPoP\" token, not a Bearer token"
        );
    }
}
