//! Token endpoint requests (RFC 6749 §4.1.3, §6) and the judgement of responses.

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
    let _ = (client.client_id, code, redirect_uri, code_verifier);
    todo!()
}

pub fn refresh_request(client: &ClientCredentials<'_>, refresh_token: &str) -> FormPost {
    let _ = (client.client_id, refresh_token);
    todo!()
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
    NotBearer(String),
}

pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenResponse, TokenError> {
    todo!("{status}{body:?}")
}
