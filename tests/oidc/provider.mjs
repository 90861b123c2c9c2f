// A real OpenID provider (panva's oidc-provider) for Flotilla's sign-in tests.
// Test-only: fixed accounts, an in-memory store, a test hook that spoils the
// next id_token. Listens on 127.0.0.1 only.
//
//   node provider.mjs [PORT]          PORT from argv, else OIDC_PORT, else 0 (any free port)
//   env OIDC_REDIRECT_URI             required, comma-separated, e.g. https://127.0.0.1:8443/api/v1/oidc/callback
//   env OIDC_POST_LOGOUT_REDIRECT_URI optional, comma-separated
//   env OIDC_CLIENT_ID / OIDC_CLIENT_SECRET   default flotilla / flotilla-test-secret
//
// Prints one line `OIDC_READY <issuer>` on stdout once it listens.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { Provider } from 'oidc-provider';
import { SignJWT, importJWK, decodeJwt, decodeProtectedHeader } from 'jose';

const ACCOUNTS = {
  alice: { password: 'alice-pw', name: 'Alice Admin', groups: ['flotilla-admins'] },
  bob: { password: 'bob-pw', name: 'Bob Viewer', groups: ['flotilla-viewers'] },
};

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const clientId = process.env.OIDC_CLIENT_ID ?? 'flotilla';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'flotilla-test-secret';
const list = (v) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const redirectUris = list(process.env.OIDC_REDIRECT_URI);
const postLogoutUris = list(process.env.OIDC_POST_LOGOUT_REDIRECT_URI);
if (redirectUris.length === 0) {
  console.error('OIDC_REDIRECT_URI is required');
  process.exit(2);
}

// A fresh RS256 key each run; the provider publishes its public half at jwks_uri.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };
const signingKey = await importJWK(signingJwk, 'RS256');

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (uid, error) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body><h1>Test IdP sign-in</h1>${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>Username <input id="username" name="username" autocomplete="off" required></label>
<label>Password <input id="password" name="password" type="password" required></label>
<button id="sign-in" type="submit">Sign in</button></form></body></html>`;

const server = createServer();
await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    // Only to show a genuinely different audience exists; see the wrong-aud mode.
    { client_id: 'some-other-app', client_secret: 'other-secret', redirect_uris: ['http://127.0.0.1/unused'] },
  ],
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['flotilla-oidc-test-cookie-key'] },
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 supports
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  conformIdTokenClaims: false, // put the scope's claims (groups) in the id_token, not only at userinfo
  features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: 300, AccessToken: 300, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
  async findAccount(ctx, sub) {
    const a = ACCOUNTS[sub];
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims() { return { sub, name: a.name, preferred_username: sub, groups: a.groups }; },
    };
  },
});

// Test hook: POST /__test/next-id-token?mode=... spoils the next id_token the token endpoint returns.
let spoil = null;
const MODES = ['tampered', 'expired', 'wrong-aud', 'wrong-iss', 'bad-nonce', 'alg-none'];
provider.use(async (ctx, next) => {
  await next();
  if (!(ctx.method === 'POST' && ctx.path === '/token' && ctx.body?.id_token && spoil)) return;
  const mode = spoil;
  spoil = null;
  const jwt = ctx.body.id_token;
  const claims = decodeJwt(jwt);
  const header = decodeProtectedHeader(jwt);
  const now = Math.floor(Date.now() / 1000);
  const resign = (c) => new SignJWT(c).setProtectedHeader(header).sign(signingKey);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  if (mode === 'tampered') { // bob makes himself an admin; original signature kept
    const [h, , s] = jwt.split('.');
    ctx.body.id_token = `${h}.${b64({ ...claims, groups: ['flotilla-admins'] })}.${s}`;
  } else if (mode === 'expired') {
    ctx.body.id_token = await resign({ ...claims, iat: now - 7200, exp: now - 3600 });
  } else if (mode === 'wrong-aud') {
    ctx.body.id_token = await resign({ ...claims, aud: 'some-other-app', azp: 'some-other-app' });
  } else if (mode === 'wrong-iss') {
    ctx.body.id_token = await resign({ ...claims, iss: 'http://127.0.0.1:1' });
  } else if (mode === 'bad-nonce') {
    ctx.body.id_token = await resign({ ...claims, nonce: 'not-the-nonce' });
  } else if (mode === 'alg-none') {
    ctx.body.id_token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  }
  console.error(`spoiled id_token: ${mode}`);
});

const oidc = provider.callback();
const body = async (req) => {
  let s = '';
  for await (const c of req) { s += c; if (s.length > 8192) break; }
  return new URLSearchParams(s);
};

server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    let m;
    if (req.method === 'POST' && url.pathname === '/__test/next-id-token') {
      const mode = url.searchParams.get('mode');
      if (!MODES.includes(mode)) { res.writeHead(400).end(`mode must be one of ${MODES}\n`); return; }
      spoil = mode;
      res.writeHead(204).end();
    } else if (req.method === 'GET' && (m = url.pathname.match(/^\/interaction\/([\w-]+)$/))) {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === 'login') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page(m[1]));
      } else { // consent: the dashboard is first-party, grant what it asked for
        await finish(req, res, details, details.session.accountId);
      }
    } else if (req.method === 'POST' && (m = url.pathname.match(/^\/interaction\/([\w-]+)\/login$/))) {
      const details = await provider.interactionDetails(req, res);
      const form = await body(req);
      const user = form.get('username') ?? '';
      const account = Object.hasOwn(ACCOUNTS, user) ? ACCOUNTS[user] : null;
      if (!account || account.password !== form.get('password')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
          .end(page(m[1], 'Invalid username or password'));
        return;
      }
      await finish(req, res, details, user);
    } else {
      oidc(req, res);
    }
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' }).end(`${err.name}: ${err.message}\n`);
  }
});

async function finish(req, res, details, accountId) {
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false });
}

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
console.log(`OIDC_READY ${issuer}`);
