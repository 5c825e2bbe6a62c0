// A scriptable, deliberately misbehaving OpenID Provider for negative end-to-end tests.
//
// oidc-provider (server.mjs) is a correct provider; this one does exactly what a test tells it,
// including what no correct provider would: rotate keys mid-run, sign with a key it does not
// publish, put control characters in tokens, answer slowly, fail refreshes. It implements just
// enough of OpenID Connect for the filter: discovery, JWKS, an /auth that logs in at once, the
// token endpoint (authorization_code with PKCE S256, refresh_token with rotation and reuse
// detection), revocation (RFC 7009), introspection (RFC 7662) and end_session.
//
//   ROGUE_PORT   port on 127.0.0.1 (issuer http://127.0.0.1:$ROGUE_PORT)
//
// Client: oidc-filter-demo / demo-client-secret (client_secret_basic or client_secret_post).
//
// Test hooks:
//   POST /__control   JSON object merged into the behaviour (see DEFAULTS)
//   POST /__reset     behaviour back to DEFAULTS, counters zeroed
//   GET  /__test/stats counters (see resetStats)
//   POST /__sign      {"claims": {...}, "header": {...}, "kid": "k1"} -> {"jwt": "..."}
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

const PORT = Number.parseInt(process.env.ROGUE_PORT ?? '', 10);
if (!Number.isInteger(PORT) || PORT <= 0) throw new Error('ROGUE_PORT must be a port number');
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = 'oidc-filter-demo';
const CLIENT_SECRET = 'demo-client-secret';

const DEFAULTS = {
  sub: 'alice', // the user every login returns
  jwks_kids: ['k1'], // keys published at /jwks
  signing_kid: 'k1', // key that signs ID tokens
  id_token_claims: {}, // merged into ID token claims (null removes), code and refresh
  refresh_id_token_claims: {}, // merged in addition for refresh responses
  id_token_header: {}, // merged into the JOSE header
  refresh_id_token: true, // include an id_token in refresh responses
  token_response: {}, // merged into code-grant responses (null removes)
  refresh_response: {}, // merged into refresh responses (null removes)
  access_token_ttl: 3600, // expires_in
  token_status: null, // or an HTTP status answered with {"error": token_error}
  refresh_status: null,
  token_error: null, // default "invalid_request"
  token_delay_ms: 0,
  refresh_delay_ms: 0,
  rotate_refresh_tokens: true,
  revoke_on_reuse: true, // a rotated-away refresh token presented again revokes the grant
  jwks_status: 200,
  discovery: {}, // merged into the discovery document (null removes)
};
let behaviour = structuredClone(DEFAULTS);

const KIDS = ['k1', 'k2', 'k3'];
const keys = {};
for (const kid of KIDS) {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  keys[kid] = { privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

let stats;
function resetStats() {
  stats = {
    token_requests: {},
    token_errors: {},
    revocations: 0,
    revoked_tokens: [],
    jwks_requests: 0,
    discovery_requests: 0,
    introspections: 0,
    end_sessions: 0,
  };
}
resetStats();
const bump = (obj, key) => {
  obj[key] = (obj[key] || 0) + 1;
};

const codes = new Map(); // code -> {nonce, challenge, redirectUri, scope, sub}
const grants = new Map(); // grant id -> {sub, sid, scope, revoked}
const refreshTokens = new Map(); // token -> {grant, used}
const accessTokens = new Map(); // token -> {grant, exp}
let sidCounter = 0;

const random = () => randomBytes(24).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function merge(base, overrides) {
  const out = { ...base };
  for (const [k, v] of Object.entries(overrides ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

function discovery() {
  return merge({
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/auth`,
    token_endpoint: `${ISSUER}/token`,
    jwks_uri: `${ISSUER}/jwks`,
    end_session_endpoint: `${ISSUER}/end_session`,
    revocation_endpoint: `${ISSUER}/revoke`,
    introspection_endpoint: `${ISSUER}/introspect`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    authorization_response_iss_parameter_supported: true,
    backchannel_logout_supported: true,
    backchannel_logout_session_supported: true,
  }, behaviour.discovery);
}

async function sign(claims, header = {}, kid = 'k1') {
  const key = keys[kid] ?? keys.k1;
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, ...header }).sign(key.privateKey);
}

async function idToken(grant, extra) {
  const t = now();
  let claims = {
    iss: ISSUER,
    sub: grant.sub,
    aud: CLIENT_ID,
    iat: t,
    exp: t + 3600,
    sid: grant.sid,
    email: `${grant.sub}@example.test`,
    ...extra,
  };
  claims = merge(claims, behaviour.id_token_claims);
  return { claims, header: merge({}, behaviour.id_token_header) };
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain' : 'application/json',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function clientOf(req, form) {
  const auth = req.headers.authorization ?? '';
  if (auth.toLowerCase().startsWith('basic ')) {
    const [id, secret] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
    return { id: decodeURIComponent(id ?? ''), secret: decodeURIComponent(secret ?? '') };
  }
  return { id: form.get('client_id'), secret: form.get('client_secret') };
}

function issueTokens(grantId) {
  const access = random();
  accessTokens.set(access, { grant: grantId, exp: now() + behaviour.access_token_ttl });
  return access;
}

async function tokenEndpoint(req, res, form) {
  const grantType = form.get('grant_type') ?? 'unknown';
  bump(stats.token_requests, grantType);
  const fail = (status, error) => {
    bump(stats.token_errors, grantType);
    send(res, status, { error });
  };
  const client = clientOf(req, form);
  if (client.id !== CLIENT_ID || client.secret !== CLIENT_SECRET) return fail(401, 'invalid_client');

  if (grantType === 'authorization_code') {
    if (behaviour.token_delay_ms) await sleep(behaviour.token_delay_ms);
    if (behaviour.token_status) return fail(behaviour.token_status, behaviour.token_error ?? 'invalid_request');
    const code = codes.get(form.get('code') ?? '');
    codes.delete(form.get('code') ?? '');
    if (!code || code.redirectUri !== form.get('redirect_uri')) return fail(400, 'invalid_grant');
    const verifier = form.get('code_verifier') ?? '';
    if (createHash('sha256').update(verifier).digest('base64url') !== code.challenge) {
      return fail(400, 'invalid_grant');
    }
    const grantId = random();
    sidCounter += 1;
    grants.set(grantId, { sub: code.sub, sid: `sid-${sidCounter}`, scope: code.scope, revoked: false });
    const refresh = random();
    refreshTokens.set(refresh, { grant: grantId, used: false });
    const { claims, header } = await idToken(grants.get(grantId), { nonce: code.nonce });
    const body = merge({
      access_token: issueTokens(grantId),
      token_type: 'Bearer',
      expires_in: behaviour.access_token_ttl,
      refresh_token: refresh,
      id_token: await sign(claims, header, behaviour.signing_kid),
      scope: code.scope,
    }, behaviour.token_response);
    return send(res, 200, body);
  }

  if (grantType === 'refresh_token') {
    if (behaviour.refresh_delay_ms) await sleep(behaviour.refresh_delay_ms);
    if (behaviour.refresh_status) return fail(behaviour.refresh_status, behaviour.token_error ?? 'invalid_request');
    const presented = refreshTokens.get(form.get('refresh_token') ?? '');
    if (!presented) return fail(400, 'invalid_grant');
    const grant = grants.get(presented.grant);
    if (presented.used && behaviour.revoke_on_reuse) grant.revoked = true;
    if (grant.revoked || presented.used) return fail(400, 'invalid_grant');
    const body = {
      access_token: issueTokens(presented.grant),
      token_type: 'Bearer',
      expires_in: behaviour.access_token_ttl,
      scope: grant.scope,
    };
    if (behaviour.rotate_refresh_tokens) {
      presented.used = true;
      const next = random();
      refreshTokens.set(next, { grant: presented.grant, used: false });
      body.refresh_token = next;
    }
    if (behaviour.refresh_id_token) {
      const { claims, header } = await idToken(grant, {});
      body.id_token = await sign(merge(claims, behaviour.refresh_id_token_claims), header, behaviour.signing_kid);
    }
    return send(res, 200, merge(body, behaviour.refresh_response));
  }
  return fail(400, 'unsupported_grant_type');
}

function revoke(form) {
  const token = form.get('token') ?? '';
  stats.revocations += 1;
  stats.revoked_tokens.push(token);
  const entry = refreshTokens.get(token) ?? accessTokens.get(token);
  if (entry) {
    const grant = grants.get(entry.grant);
    if (grant && refreshTokens.has(token)) grant.revoked = true;
    accessTokens.delete(token);
  }
}

function introspect(form) {
  stats.introspections += 1;
  const token = form.get('token') ?? '';
  const access = accessTokens.get(token);
  const grant = access && grants.get(access.grant);
  if (!access || !grant || grant.revoked || access.exp <= now()) return { active: false };
  return {
    active: true, sub: grant.sub, client_id: CLIENT_ID, exp: access.exp, iss: ISSUER, scope: grant.scope, token_type: 'Bearer',
  };
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, ISSUER);
    const body = req.method === 'POST' ? await readBody(req) : '';
    const form = new URLSearchParams(body);
    switch (`${req.method} ${url.pathname}`) {
      case 'GET /.well-known/openid-configuration':
        stats.discovery_requests += 1;
        return send(res, 200, discovery());
      case 'GET /jwks':
        stats.jwks_requests += 1;
        if (behaviour.jwks_status !== 200) return send(res, behaviour.jwks_status, { error: 'jwks unavailable' });
        return send(res, 200, { keys: behaviour.jwks_kids.filter((k) => keys[k]).map((k) => keys[k].publicJwk) });
      case 'GET /auth': {
        const p = url.searchParams;
        const redirectUri = p.get('redirect_uri');
        if (!redirectUri || p.get('client_id') !== CLIENT_ID) return send(res, 400, 'bad authorization request');
        const code = random();
        codes.set(code, {
          nonce: p.get('nonce'),
          challenge: p.get('code_challenge'),
          redirectUri,
          scope: p.get('scope') ?? 'openid',
          sub: behaviour.sub,
        });
        const back = new URL(redirectUri);
        back.searchParams.set('code', code);
        if (p.get('state') !== null) back.searchParams.set('state', p.get('state'));
        back.searchParams.set('iss', ISSUER);
        res.writeHead(302, { location: back.toString() });
        return res.end();
      }
      case 'POST /token':
        return await tokenEndpoint(req, res, form);
      case 'POST /revoke':
        revoke(form);
        return send(res, 200, '');
      case 'POST /introspect':
        return send(res, 200, introspect(form));
      case 'GET /end_session': {
        stats.end_sessions += 1;
        const target = url.searchParams.get('post_logout_redirect_uri');
        if (!target) return send(res, 200, 'logged out');
        const back = new URL(target);
        if (url.searchParams.get('state') !== null) back.searchParams.set('state', url.searchParams.get('state'));
        res.writeHead(302, { location: back.toString() });
        return res.end();
      }
      case 'POST /__control':
        behaviour = { ...behaviour, ...JSON.parse(body || '{}') };
        return send(res, 200, behaviour);
      case 'POST /__reset':
        behaviour = structuredClone(DEFAULTS);
        resetStats();
        return send(res, 200, behaviour);
      case 'GET /__test/stats':
        return send(res, 200, stats);
      case 'POST /__sign': {
        const spec = JSON.parse(body || '{}');
        return send(res, 200, { jwt: await sign(spec.claims ?? {}, spec.header ?? {}, spec.kid ?? 'k1') });
      }
      default:
        return send(res, 404, { error: 'not_found', path: url.pathname });
    }
  } catch (err) {
    process.stderr.write(`rogue: ${err?.stack ?? err}\n`);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
    return undefined;
  }
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`rogue test provider ready: issuer ${ISSUER}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
