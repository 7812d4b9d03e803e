// ironscale's test OpenID provider script (part of the ironscale project, under its license).
// It runs panva's oidc-provider (npm `oidc-provider` 9.13.3, MIT-licensed, copyright Filip Skokan),
// which is installed from npm at test time (`npm ci` from package.json/package-lock.json beside
// this file, into ~/.cache/ironscale-oidc-provider-9.13.3 by .ci/run or ironscale-testkit) and is
// never vendored into this repository. ironscale-testkit's `oidc` module starts it.
//
// A real OpenID Connect provider for ironscale's OIDC tests: panva's oidc-provider (OpenID
// Certified), with a fixed user table, a plain HTML login form and auto-approved consent.
// Loopback only, in-memory state, no network access needed at run time.
//
//   node provider.mjs config.json
//
// Prints one JSON line on stdout once it is listening ({"ready":true,"issuer":...}); logs go to
// stderr. With "port": 0 the kernel picks a free port and the issuer carries it. Stops on SIGTERM.
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { generateKeyPairSync, randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const cfgPath = process.argv[2];
if (!cfgPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
const host = cfg.host ?? '127.0.0.1';
const prefix = (cfg.issuer_path ?? '').replace(/\/+$/, ''); // e.g. "/realms/test"; "" = root
const autoConsent = cfg.auto_consent ?? true;
const users = cfg.users ?? [];
const log = (...a) => { if (cfg.verbose) console.error('[oidc]', ...a); };

// Authorization requests as the provider received them (query parameters), for tests to check
// what the relying party sent (PKCE challenge, extra_params, scope, prompt...).
const seenAuthorizations = [];

function findUser(login) {
  const l = String(login ?? '').trim().toLowerCase();
  return users.find((u) => u.username.toLowerCase() === l || (u.email ?? '').toLowerCase() === l);
}
const subOf = (u) => u.sub ?? u.username;
function passwordOk(user, given) {
  const a = createHash('sha256').update(String(user.password)).digest();
  const b = createHash('sha256').update(String(given ?? '')).digest();
  return timingSafeEqual(a, b);
}

// RS256 signing key (published at the JWKS endpoint): fresh per start, or kept in "key_file"
// (created there on first start) so that a restarted provider signs with the same key.
function newJwk() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}
let jwk;
if (cfg.key_file && existsSync(cfg.key_file)) {
  jwk = JSON.parse(readFileSync(cfg.key_file, 'utf8'));
} else {
  jwk = newJwk();
  if (cfg.key_file) writeFileSync(cfg.key_file, JSON.stringify(jwk), { mode: 0o600 });
}

// Optional TLS ("tls": {"cert": PEM path, "key": PEM path}) for tests of https-only issuer rules.
const server = cfg.tls
  ? createTlsServer({ cert: readFileSync(cfg.tls.cert), key: readFileSync(cfg.tls.key) })
  : createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(cfg.port ?? 0, host, resolve);
});
const { port } = server.address();
// public_host: the name in the issuer when it differs from the bind address (e.g. "idp.test",
// which the relying party then resolves to 127.0.0.1 itself).
const publicHost = cfg.public_host ?? (host.includes(':') ? `[${host}]` : host);
const issuer = `${cfg.tls ? 'https' : 'http'}://${publicHost}:${port}${prefix}`;

const groupsScope = cfg.groups_scope ?? 'groups';
const claims = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username', 'picture', 'locale', 'updated_at'],
};
claims[groupsScope] = [...(claims[groupsScope] ?? []), 'groups'];
// "extra_claims": {"SCOPE": ["claim", ...]} releases more user fields (only listed claims leave).
for (const [scope, names] of Object.entries(cfg.extra_claims ?? {})) {
  claims[scope] = [...new Set([...(claims[scope] ?? []), ...names])];
}

const ttl = (v, d) => (typeof v === 'number' ? v : d);
const provider = new Provider(issuer, {
  clients: (cfg.clients ?? []).map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  claims,
  scopes: [...new Set(['openid', 'offline_access', ...Object.keys(claims)])],
  responseTypes: ['code'],
  // oidc-provider, per OIDC Core 5.4, puts scope claims only in userinfo when an access token is
  // issued; most real IdPs (Keycloak, Authentik, Google...) also put them in the ID token.
  conformIdTokenClaims: !(cfg.claims_in_id_token ?? true),
  pkce: { required: () => Boolean(cfg.pkce_required) },
  extraParams: cfg.extra_params ?? [],
  clockTolerance: 15,
  ttl: {
    AccessToken: ttl(cfg.access_token_ttl, 3600),
    IdToken: ttl(cfg.id_token_ttl, 3600),
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 86400,
  },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false }, // our own login form below checks passwords
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  interactions: { url: (_ctx, interaction) => `${prefix}/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const u = users.find((x) => subOf(x) === sub);
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() {
        const { password, username, sub: _s, ...rest } = u;
        return { sub, preferred_username: username, ...rest };
      },
    };
  },
  // First-party client: grant everything the provider offers once the user has logged in, so no
  // consent screen appears (prompt=consent still shows the consent step, auto-approved below).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!autoConsent) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...new Set(['openid', 'offline_access', ...Object.keys(claims)])].join(' '));
    grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (_ctx, err) => console.error('[oidc] server_error', err));
provider.on('authorization.error', (_ctx, err) => log('authorization.error', err.message, err.error_description ?? ''));
provider.on('grant.error', (_ctx, err) => log('grant.error', err.message, err.error_description ?? ''));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;
}
function loginPage(uid, params, error) {
  return page('Sign in', `<h1>Sign in to ${esc(params.client_id)}</h1>${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form id="login" method="post" action="${prefix}/interaction/${esc(uid)}/login">
<label>Username or email <input id="username" name="username" autocomplete="username" value="${esc(params.login_hint ?? '')}" autofocus></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="submit" type="submit">Sign in</button></form>
<form method="post" action="${prefix}/interaction/${esc(uid)}/abort"><button id="cancel" type="submit">Cancel</button></form>`);
}
function consentPage(uid, params) {
  return page('Authorize', `<h1>Allow ${esc(params.client_id)} to access ${esc(params.scope)}?</h1>
<form id="consent" method="post" action="${prefix}/interaction/${esc(uid)}/confirm"><button id="allow" type="submit">Allow</button></form>
<form method="post" action="${prefix}/interaction/${esc(uid)}/abort"><button id="deny" type="submit">Deny</button></form>`);
}
async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}
async function approveConsent(details) {
  const { prompt: { details: missing }, params, session: { accountId }, grantId } = details;
  const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const saved = await grant.save();
  // the result must name the prompt it satisfies, or prompt=consent asks again
  return { consent: grantId ? {} : { grantId: saved } };
}

// Test-only and interaction routes, before oidc-provider's own router.
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    seenAuthorizations.push({ ...ctx.query });
    return next();
  }
  if (ctx.method === 'GET' && ctx.path === '/_test/authorizations') {
    ctx.body = seenAuthorizations;
    return undefined;
  }
  const m = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/);
  if (!m) return next();
  ctx.set('cache-control', 'no-store');
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    ctx.type = 'text/plain';
    ctx.body = `interaction not found (${err.error_description ?? err.message}); cookies must be kept from /auth on, with the same host name\n`;
    return undefined;
  }
  const [, uid, action] = m;
  if (details.uid !== uid) ctx.throw(400, 'interaction uid does not match its cookie');
  const { prompt, params } = details;
  let result;
  if (ctx.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(uid, params);
      return undefined;
    }
    if (prompt.name === 'consent' && !autoConsent) {
      ctx.type = 'html';
      ctx.body = consentPage(uid, params);
      return undefined;
    }
    if (prompt.name !== 'consent') ctx.throw(400, `unsupported prompt ${prompt.name}`);
    result = await approveConsent(details);
  } else if (ctx.method === 'POST' && action === 'login') {
    if (prompt.name !== 'login') ctx.throw(400, 'login already done');
    const form = await readForm(ctx.req);
    const user = findUser(form.username);
    if (!user || !passwordOk(user, form.password)) {
      log('login failed for', form.username);
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(uid, params, 'Invalid username or password.');
      return undefined;
    }
    log('login ok', user.username);
    result = { login: { accountId: subOf(user) } };
  } else if (ctx.method === 'POST' && action === 'confirm') {
    if (prompt.name !== 'consent') ctx.throw(400, 'nothing to confirm');
    result = await approveConsent(details);
  } else if (ctx.method === 'POST' && action === 'abort') {
    result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
  } else {
    ctx.throw(405);
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.set('location', returnTo);
  ctx.body = '';
  return undefined;
});

const handler = provider.callback();
server.on('request', (req, res) => {
  if (prefix) {
    if (req.url !== prefix && !req.url.startsWith(`${prefix}/`) && !req.url.startsWith(`${prefix}?`)) {
      res.statusCode = 404;
      res.end('not found\n');
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
  }
  handler(req, res);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // browsers keep connections alive
  });
}
process.stdout.write(`${JSON.stringify({
  ready: true,
  issuer,
  port,
  discovery: `${issuer}/.well-known/openid-configuration`,
  jwks_uri: `${issuer}/jwks`,
  pid: process.pid,
})}\n`);
