'use strict';
// The express-session tutorial apps on Express, with the cloakroom demo's routes, texts and
// session keys (`views`, `username`, `visits`, `user`, and `csrfToken`: the forms' anti-forgery
// token, posted back in the field `_csrf`), so both can share one store and one login, and a
// form one serves can be posted to the other. One-time messages use connect-flash (session key
// `flash`, kinds `error` and `info`), which cloakroom's `Session::flash` writes the same way, so
// a message left by one server is shown by the other. Configuration (environment):
//   PORT               port to listen on, 127.0.0.1 only (default 3001)
//   STORE              redis://… (connect-redis, prefix "sess:"), postgres://… (connect-pg-simple,
//                      table "session", created if missing), mysql://USER[:PASSWORD]@HOST:PORT/DB
//                      (express-mysql-session, table "sessions", created if missing) or
//                      dynamodb://HOST:PORT/TABLE
//                      (connect-dynamodb on a local stand-in such as dynalite, prefix "sess:",
//                      fake static credentials; TABLE default "sessions", created if missing)
//   SECRETS            signing secrets, one per line (a secret may hold commas): the first signs,
//                      all verify
//   USER               the one account, NAME:PASSWORD (default admin:secret; a value without
//                      ":", such as the shell's login name, is ignored)
//   COOKIE_MAX_AGE_MS  session lifetime in ms (default 30 minutes)
// Logs go to stderr and never hold cookies, session ids or session data.

const crypto = require('node:crypto');
const express = require('express');
const session = require('express-session');
const flash = require('connect-flash');

const log = (message) => process.stderr.write(`[express-interop] ${message}\n`);

function fail(message) {
  log(message);
  process.exit(2);
}

const port = Number(process.env.PORT || 3001);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail('PORT must be a port number');
const storeUrl = process.env.STORE || fail('STORE is required: redis://…, postgres://…, mysql://… or dynamodb://…');
const secrets = (process.env.SECRETS || '').split('\n').filter((s) => s !== '');
if (secrets.length === 0) fail('SECRETS is required (one per line; the first signs)');
// USER is also the login name in most shells: only NAME:PASSWORD values count.
let credentials = process.env.USER || '';
if (!credentials.includes(':')) {
  log('USER is not NAME:PASSWORD: logging in with the built-in account admin:secret');
  credentials = 'admin:secret';
}
const [userName, ...passwordParts] = credentials.split(':');
const userPassword = passwordParts.join(':');
if (!userName || !userPassword) fail('USER must be NAME:PASSWORD');
const maxAge = Number(process.env.COOKIE_MAX_AGE_MS || 30 * 60 * 1000);
if (!Number.isInteger(maxAge) || maxAge <= 0) fail('COOKIE_MAX_AGE_MS must be a positive integer');

async function openStore() {
  if (/^rediss?:\/\//.test(storeUrl)) {
    const { createClient } = require('redis');
    const { RedisStore } = require('connect-redis');
    const client = createClient({ url: storeUrl });
    client.on('error', (error) => log(`redis error: ${error.message}`));
    await client.connect();
    return { store: new RedisStore({ client, prefix: 'sess:' }), kind: 'Redis (connect-redis)' };
  }
  if (/^postgres(ql)?:\/\//.test(storeUrl)) {
    const PgStore = require('connect-pg-simple')(session);
    const store = new PgStore({
      conString: storeUrl,
      tableName: 'session',
      createTableIfMissing: true,
      errorLog: (...args) => log(`postgres error: ${args.map(String).join(' ')}`),
    });
    return { store, kind: 'PostgreSQL (connect-pg-simple)' };
  }
  if (storeUrl.startsWith('mysql://')) {
    // express-mysql-session takes the connection's parts, not a URL; its own defaults
    // otherwise (table "sessions", created if missing; expired rows cleared every 15 minutes).
    const url = new URL(storeUrl);
    const MySQLStore = require('express-mysql-session')(session);
    const store = new MySQLStore({
      host: url.hostname,
      port: Number(url.port || 3306),
      user: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
      database: decodeURIComponent(url.pathname.slice(1)),
    });
    await store.onReady();
    return { store, kind: 'MySQL (express-mysql-session)' };
  }
  if (storeUrl.startsWith('dynamodb://')) {
    // dynamodb://HOST:PORT/TABLE: a local DynamoDB stand-in (dynalite) over plain HTTP, with
    // obviously fake static credentials (it checks none); TABLE defaults to connect-dynamodb's
    // "sessions", created if missing by connect-dynamodb itself.
    const url = new URL(storeUrl);
    if (!url.host) fail('STORE dynamodb://HOST:PORT/TABLE needs the stand-in\'s HOST:PORT');
    const { DynamoDBClient } = require('@aws-sdk/client-dynamodb');
    const DynamoDBStore = require('connect-dynamodb')(session);
    const client = new DynamoDBClient({
      endpoint: `http://${url.host}`,
      region: process.env.AWS_REGION || 'us-east-1',
      credentials: { accessKeyId: 'AKIDFAKEINTEROP', secretAccessKey: 'fake-interop-secret' },
    });
    const table = decodeURIComponent(url.pathname.slice(1)) || 'sessions';
    return { store: new DynamoDBStore({ client, table }), kind: 'DynamoDB (connect-dynamodb)' };
  }
  return fail('STORE must be redis://…, postgres://…, mysql://… or dynamodb://…');
}

// The same HTML escaping as the demo: & < > "
function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)} · express</title></head>` +
    `<body><main>${body}<footer><nav><a href="/">Views</a> <a href="/get-session">Session data</a> ` +
    `<a href="/dashboard">Dashboard</a></nav></footer></main></body></html>`;
}

// The demo's security headers (demo/src/routes.rs), minus the stylesheet: these pages have none.
const SECURITY_HEADERS = {
  'Cache-Control': 'no-store',
  'Content-Security-Policy':
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
};

// The anti-forgery token, as the demo's demo/src/csrf.rs: 32 random bytes, base64url, kept in
// the session under `csrfToken` (issued on first use, so the session is saved).
function csrfToken(req) {
  if (typeof req.session.csrfToken !== 'string' || req.session.csrfToken === '') {
    req.session.csrfToken = crypto.randomBytes(32).toString('base64url');
  }
  return req.session.csrfToken;
}

// Whether the form's `_csrf` field is the session's token, compared in constant time.
function validCsrf(req) {
  const expected = req.session.csrfToken;
  const given = req.body && req.body._csrf;
  if (typeof expected !== 'string' || expected === '' || typeof given !== 'string') return false;
  const [a, b] = [Buffer.from(expected), Buffer.from(given)];
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

function csrfField(token) {
  return `<input type="hidden" name="_csrf" value="${escape(token)}">`;
}

const FORGED_FORM = 'This form has expired. Reload the page and try again.';

// The demo's texts (demo/src/routes.rs).
const LOGIN_FAILED = 'Invalid username or password.';
const LOGGED_OUT = 'You have been logged out.';

// The waiting `error` and `info` messages, taken (shown once), as the demo's pages show them.
function flashes(req) {
  const errors = req.flash('error').map((m) => `<p class="error" role="alert">${escape(m)}</p>`);
  const infos = req.flash('info').map((m) => `<p class="info" role="status">${escape(m)}</p>`);
  return errors.join('') + infos.join('');
}

function loginForm(waiting, token) {
  return page('Log in', `<h1>Log in</h1>${waiting}<form method="post" action="/login">` +
    csrfField(token) +
    '<label for="username">Username</label>' +
    '<input id="username" name="username" autocomplete="username" required>' +
    '<label for="password">Password</label>' +
    '<input id="password" name="password" type="password" autocomplete="current-password" required>' +
    '<button type="submit">Log in</button></form>');
}

async function main() {
  const { store, kind } = await openStore();
  const app = express();
  app.disable('x-powered-by');
  // First, so error responses get them too.
  app.use((req, res, next) => {
    res.set(SECURITY_HEADERS);
    next();
  });
  app.use(session({
    store,
    secret: secrets,
    name: 'connect.sid',
    resave: false,
    saveUninitialized: false,
    // secure: 'auto' mirrors the demo's default `--secure auto` (Secure on sessions made over
    // HTTPS; the resolved boolean is stored, so both write the same cookie fields).
    cookie: { maxAge, sameSite: 'lax', httpOnly: true, path: '/', secure: 'auto' },
  }));
  // req.flash, kept in the session (after `session`: it needs req.session).
  app.use(flash());
  app.use(express.urlencoded({ extended: false }));

  app.get('/', (req, res) => {
    req.session.views = (req.session.views || 0) + 1;
    res.send(page('Views', `<h1>Number of views ${req.session.views}</h1>`));
  });

  app.get('/set-session', (req, res) => {
    req.session.username = 'john';
    req.session.visits = (req.session.visits || 0) + 1;
    res.send(page('Session data set', '<h1>Session data set</h1>'));
  });

  app.get('/get-session', (req, res) => {
    const { username, visits } = req.session;
    const text = username !== undefined && visits !== undefined
      ? `Welcome back, ${username}! You've visited ${visits} ${visits === 1 ? 'time' : 'times'}.`
      : 'No session data found';
    res.send(page(text, `<h1>${escape(text)}</h1>`));
  });

  app.get('/login', (req, res) => res.send(loginForm(flashes(req), csrfToken(req))));

  // The token first (403, nothing done), then the credentials (a failure goes back to the login
  // page with an error flash, as the demo's). No failed-login limit here: this is a test fixture
  // (the demo has one).
  app.post('/login', (req, res, next) => {
    if (!validCsrf(req)) return res.status(403).send(page(FORGED_FORM, `<h1>${escape(FORGED_FORM)}</h1>`));
    const { username = '', password = '' } = req.body || {};
    if (username !== userName || password !== userPassword) {
      req.flash('error', LOGIN_FAILED);
      res.redirect(303, '/login');
      return;
    }
    req.session.regenerate((error) => {
      if (error) return next(error);
      req.session.user = { username, role: 'admin' };
      // Where passport.js keeps the signed-in user: the Rust demo's session list finds the
      // session by it (its `set_owner` writes the same field).
      req.session.passport = { user: username };
      // A new token for the new session, as the demo does.
      csrfToken(req);
      req.session.save((saveError) => {
        if (saveError) return next(saveError);
        res.redirect(303, '/dashboard');
      });
    });
  });

  app.get('/dashboard', (req, res) => {
    const user = req.session.user;
    if (!user) return res.redirect(303, '/login');
    res.send(page('Dashboard', `<h1>Welcome ${escape(user.username)}! This is your dashboard.</h1>` +
      `<form method="post" action="/logout">${csrfField(csrfToken(req))}` +
      '<button type="submit">Log out</button></form>'));
  });

  // GET changes nothing (a link on another site could point here); the dashboard's button posts.
  app.get('/logout', (req, res) => {
    const text = 'Log out with the button on your dashboard.';
    res.status(405).set('Allow', 'POST').send(page(text, `<h1>${escape(text)}</h1>`));
  });

  app.post('/logout', (req, res, next) => {
    if (!validCsrf(req)) return res.status(403).send(page(FORGED_FORM, `<h1>${escape(FORGED_FORM)}</h1>`));
    // The old record is destroyed; the notice goes in a new, empty session (connect-flash needs
    // one), whose cookie replaces the old: the demo's `destroy` then `flash`.
    req.session.regenerate((error) => {
      if (error) return next(error);
      req.flash('info', LOGGED_OUT);
      res.redirect(303, '/login');
    });
  });

  // For the interop tests: the session cookie's lifetime as express-session loaded it.
  // Holds no session data and no id.
  app.get('/cookie', (req, res) => {
    const { originalMaxAge, expires } = req.session.cookie;
    res.json({ originalMaxAge, expires: expires ? expires.toISOString() : expires });
  });

  // Errors are logged without request details (which could hold cookies).
  app.use((error, req, res, _next) => {
    log(`request failed: ${error && error.message}`);
    res.status(500).send(page('Error', '<h1>Something went wrong</h1>'));
  });

  const server = app.listen(port, '127.0.0.1', () => {
    log(`serving on http://127.0.0.1:${server.address().port} (sessions: ${kind})`);
  });
  const stop = () => {
    log('shutting down');
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => fail(`cannot start: ${error.message}`));
