// Test OpenID Provider for the oidc-filter demo and end-to-end tests.
//
// oidc-provider (pinned in package.json) on 127.0.0.1, configured through environment variables:
//
//   IDP_PORT                      port to listen on (default 9601); issuer is http://127.0.0.1:$IDP_PORT
//   RP_REDIRECT_URIS              comma list (default http://127.0.0.1:8080/oauth2/callback)
//   RP_POST_LOGOUT_REDIRECT_URIS  comma list (default http://127.0.0.1:8080/)
//   RP_BACKCHANNEL_LOGOUT_URI     optional; enables back-channel logout for the demo client
//   TTL_ACCESS_TOKEN, TTL_ID_TOKEN, TTL_REFRESH_TOKEN, TTL_SESSION   seconds (3600/3600/86400/86400)
//   ROTATE_REFRESH_TOKEN          "1"/"true": a new refresh token on every refresh (default: off)
//   ISSUE_REFRESH_TOKEN           "always" (default): every code grant of a client allowed the
//                                 refresh_token grant gets a refresh token; "offline_access": only
//                                 when scope has offline_access and prompt=consent (the library default)
//   IDP_LOG_REQUESTS              "1": log every request line to stderr
//   IDP_PROFILE                   "okta": shaped like an Okta custom authorization server (below)
//
// Clients: oidc-filter-demo / demo-client-secret (authorization_code + refresh_token,
// client_secret_basic) and m2m / m2m-secret (client_credentials).
// Login goes through devInteractions: any login name becomes `sub`, any password works.
// Users whose name starts with `big` get about 5 KB of `groups`, for sessions too large
// for one cookie.
//
// IDP_PROFILE=okta, like Okta's "default" custom authorization server:
//   - issuer http://127.0.0.1:$IDP_PORT/oauth2/default (the provider is mounted under that path);
//   - the ID token's `sub` is a user id (`00u` + the login in hex), while access tokens are JWTs
//     with `aud: api://default`, `sub` = the login (email), `uid` = the user id, `cid` = the client
//     id, `scp` = the granted scopes as an array, and the `groups` claim;
//   - refresh tokens only when `offline_access` is requested, rotated on every refresh (reuse of
//     an old one revokes the grant).
//
// Test hooks (not part of OIDC):
//   GET  /__test/stats   JSON counters: token requests per grant_type, back-channel logouts, ...
//   POST /__test/reset   zeroes the counters
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Provider from 'oidc-provider';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;

function intEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n <= 0 || String(n) !== raw.trim()) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function listEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

function boolEnv(name) {
  return ['1', 'true', 'yes', 'on'].includes(String(env[name] ?? '').toLowerCase());
}

const PORT = intEnv('IDP_PORT', 9601);
const HOST = '127.0.0.1';
const PROFILE = env.IDP_PROFILE || 'default';
if (!['default', 'okta'].includes(PROFILE)) {
  throw new Error(`IDP_PROFILE must be "default" or "okta", got ${PROFILE}`);
}
const OKTA = PROFILE === 'okta';
// Okta's custom authorization servers have a path in the issuer.
const MOUNT = OKTA ? '/oauth2/default' : '';
const ISSUER = `http://${HOST}:${PORT}${MOUNT}`;
const API_RESOURCE = OKTA ? 'api://default' : 'https://api.example/';
const OKTA_SCOPES = 'openid profile email groups offline_access';

// Okta user ids look like 00u…; here the login in hex, so either form maps back to the user.
function oktaUserId(login) {
  return `00u${Buffer.from(login, 'utf8').toString('hex')}`;
}
function loginOf(accountId) {
  return /^00u([0-9a-f]{2})+$/.test(accountId)
    ? Buffer.from(accountId.slice(3), 'hex').toString('utf8')
    : accountId;
}

const TTL = {
  AccessToken: intEnv('TTL_ACCESS_TOKEN', 3600),
  IdToken: intEnv('TTL_ID_TOKEN', 3600),
  RefreshToken: intEnv('TTL_REFRESH_TOKEN', 86400),
  Session: intEnv('TTL_SESSION', 86400),
};

const issueRefreshTokenMode = env.ISSUE_REFRESH_TOKEN || 'always';
if (!['always', 'offline_access'].includes(issueRefreshTokenMode)) {
  throw new Error(`ISSUE_REFRESH_TOKEN must be "always" or "offline_access", got ${issueRefreshTokenMode}`);
}

const demoClient = {
  client_id: 'oidc-filter-demo',
  client_secret: 'demo-client-secret',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  redirect_uris: listEnv('RP_REDIRECT_URIS', ['http://127.0.0.1:8080/oauth2/callback']),
  post_logout_redirect_uris: listEnv('RP_POST_LOGOUT_REDIRECT_URIS', ['http://127.0.0.1:8080/']),
};
if (env.RP_BACKCHANNEL_LOGOUT_URI) {
  demoClient.backchannel_logout_uri = env.RP_BACKCHANNEL_LOGOUT_URI;
  demoClient.backchannel_logout_session_required = true;
}

const m2mClient = {
  client_id: 'm2m',
  client_secret: 'm2m-secret',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
};

function groupsOf(sub) {
  if (sub === 'alice') return ['admins', 'users'];
  if (sub.startsWith('big')) {
    return Array.from({ length: 150 }, (_, i) => `a-group-with-a-rather-long-name-${i}`);
  }
  return ['users'];
}

const jwks = JSON.parse(readFileSync(join(here, 'keys', 'signing-jwks.json'), 'utf8'));

const configuration = {
  clients: [demoClient, m2mClient],
  jwks,
  cookies: { keys: ['oidc-filter-test-idp-cookie-key'] },
  async findAccount(ctx, accountId) {
    // Okta profile: the account id (the ID token's sub) is the user id 00u…; claims use the login.
    const sub = loginOf(accountId);
    return {
      accountId,
      async claims() {
        return {
          sub,
          email: `${sub}@example.test`,
          email_verified: true,
          name: sub.charAt(0).toUpperCase() + sub.slice(1),
          groups: groupsOf(sub),
        };
      },
    };
  },
  claims: {
    // The library's defaults (sid reaches the ID token; back-channel logout matches on it).
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  rotateRefreshToken: OKTA || boolEnv('ROTATE_REFRESH_TOKEN'),
  issueRefreshToken(ctx, client, code) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    if (OKTA) return code.scopes.has('offline_access');
    return issueRefreshTokenMode === 'always' || code.scopes.has('offline_access');
  },
  formats: {
    customizers: {
      // Okta's access token claims: sub is the login, uid the user id, cid and scp.
      async jwt(ctx, token, jwt) {
        if (!OKTA) return;
        const { payload } = jwt;
        const login = token.accountId ? loginOf(token.accountId) : undefined;
        payload.ver = 1;
        payload.cid = payload.client_id;
        payload.scp = (payload.scope || '').split(' ').filter(Boolean);
        delete payload.client_id;
        delete payload.scope;
        if (login !== undefined) {
          payload.sub = `${login}@example.test`;
          payload.uid = oktaUserId(login);
          payload.groups = groupsOf(login);
        }
      },
    },
  },
  ttl: {
    AccessToken: TTL.AccessToken,
    AuthorizationCode: 60,
    BackchannelAuthenticationRequest: 600,
    ClientCredentials: 600,
    DeviceCode: 600,
    Grant: TTL.RefreshToken > TTL.Session ? TTL.RefreshToken : TTL.Session,
    IdToken: TTL.IdToken,
    Interaction: 3600,
    RefreshToken: TTL.RefreshToken,
    Session: TTL.Session,
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client) => (OKTA || client.clientId === 'm2m' ? API_RESOURCE : undefined),
      useGrantedResource: () => OKTA,
      getResourceServerInfo(ctx, resource) {
        if (resource !== API_RESOURCE) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          scope: OKTA ? `${OKTA_SCOPES} api:read api:write` : 'api:read api:write',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: TTL.AccessToken,
        };
      },
    },
  },
  // oidc-provider 9 refuses outgoing requests to loopback/private addresses; the
  // back-channel logout receiver is the gateway on 127.0.0.1, so use plain fetch.
  fetch(url, options) {
    // eslint-disable-next-line no-param-reassign
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
};

const provider = new Provider(ISSUER, configuration);

// ---- test hooks -------------------------------------------------------------------------
const stats = {};
function resetStats() {
  stats.token_requests = {};
  stats.token_errors = {};
  stats.requests = {};
  stats.backchannel = { success: 0, error: 0 };
  stats.revocations = 0;
  stats.introspections = 0;
  stats.end_sessions = 0;
}
resetStats();
const bump = (obj, key) => {
  obj[key] = (obj[key] || 0) + 1;
};

provider.use(async (ctx, next) => {
  // Okta issues a refresh token for offline_access without asking for consent again;
  // oidc-provider drops offline_access unless prompt=consent, so add it.
  if (OKTA && ctx.path === '/auth' && ctx.method === 'GET') {
    const params = new URLSearchParams(ctx.querystring);
    if ((params.get('scope') || '').split(' ').includes('offline_access') && !params.get('prompt')) {
      params.set('prompt', 'consent');
      ctx.querystring = params.toString();
      // oidc-provider finds its mount path by locating ctx.url in req.originalUrl.
      ctx.req.originalUrl = `${MOUNT}${ctx.url}`;
    }
  }
  // Okta profile: the typed login name becomes the account id 00u… (the ID token's sub), as
  // Okta's ID tokens carry the user id. The devInteractions form is rewritten before the
  // library reads it (it falls back to req.body once the stream is consumed).
  if (OKTA && ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    if (form.get('prompt') === 'login' && form.get('login')) {
      form.set('login', oktaUserId(loginOf(form.get('login'))));
    }
    ctx.req.body = form.toString();
  }
  if (ctx.path === '/__test/stats' && ctx.method === 'GET') {
    ctx.status = 200;
    ctx.set('cache-control', 'no-store');
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/__test/reset' && ctx.method === 'POST') {
    resetStats();
    ctx.status = 204;
    return;
  }
  if (boolEnv('IDP_LOG_REQUESTS')) {
    process.stderr.write(`idp: ${ctx.method} ${ctx.url}\n`);
  }
  bump(stats.requests, `${ctx.method} ${ctx.path.replace(/^\/(interaction|auth)\/[^/]+/, '/$1/:uid')}`);
  await next();
  if (ctx.path === '/token' && ctx.method === 'POST') {
    const grantType = ctx.oidc?.params?.grant_type ?? 'unknown';
    bump(stats.token_requests, grantType);
    if (ctx.status >= 400) bump(stats.token_errors, grantType);
  }
  // oidc-provider 9 emits no success events for these two endpoints: count answered requests.
  if (ctx.method === 'POST' && ctx.status === 200) {
    if (ctx.path === '/token/revocation') stats.revocations += 1;
    if (ctx.path === '/token/introspection') stats.introspections += 1;
  }
});

provider.on('backchannel.success', () => {
  stats.backchannel.success += 1;
});
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  stats.backchannel.error += 1;
  process.stderr.write(
    `idp: backchannel.error client=${client?.clientId} sub=${accountId} sid=${sid}: ${err?.message}`
      + `${err?.cause ? ` (cause: ${err.cause.message ?? err.cause})` : ''}\n`,
  );
});
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`idp: server_error on ${ctx?.method} ${ctx?.path}: ${err?.stack ?? err}\n`);
});
provider.on('end_session.success', () => {
  stats.end_sessions += 1;
});

// Mounted like an Express/Koa prefix router: oidc-provider derives the mount path from
// req.originalUrl minus req.url. Nothing outside MOUNT exists.
const callback = provider.callback();
const server = createServer((req, res) => {
  if (!MOUNT) return callback(req, res);
  if (req.url !== MOUNT && !req.url.startsWith(`${MOUNT}/`) && !req.url.startsWith(`${MOUNT}?`)) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return undefined;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(MOUNT.length) || '/';
  return callback(req, res);
}).listen(PORT, HOST);
server.on('listening', () => {
  console.log(`test IdP ready: issuer ${ISSUER} (login with any name, e.g. alice, and any password)`);
});
server.on('error', (err) => {
  process.stderr.write(`idp: cannot listen on ${HOST}:${PORT}: ${err.message}\n`);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
