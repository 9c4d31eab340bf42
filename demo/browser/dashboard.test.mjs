// The demo in a real browser (headless Debian chromium driven by playwright-core): log in
// through the form, see the dashboard, reload, see this session on "Your sessions", log in from
// a second browser context and sign it out from the first ("Sign out all other sessions"),
// restart the server, still see the dashboard, log out with the dashboard's button, land on the
// login page (each step's one-time message shown: a wrong password's error, "Signed out 1 other
// session.", "You have been logged out."). Checks along the way that the pages
// are styled under the Content-Security-Policy (no violation reported), that a form posted from
// another origin (another port of 127.0.0.1: same site, so the cookie goes along) is refused
// for its missing token, and that visiting GET /logout logs nobody out. Reads the session
// cookie's attributes from the browser's jar and keeps a screenshot of the dashboard.
//
// Run by demo/tests/browser.rs (which passes DEMO_BIN, the built demo binary) from the
// project's test command; standalone: DEMO_BIN=target/debug/cloakroom-demo node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.DEMO_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = resolve(process.env.ARTIFACTS_DIR ?? 'artifacts');

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
    server.on('error', fail);
  });
}

function listening(port) {
  return new Promise((done) => {
    const socket = connect(port, '127.0.0.1', () => { socket.end(); done(true); });
    socket.on('error', () => done(false));
  });
}

async function startDemo(port, database) {
  const child = spawn(BIN, [
    '--addr', `127.0.0.1:${port}`,
    '--store', `sqlite://${database}`,
    '--secret', 'browser test secret, obviously fake',
    '--user', 'ann:pa55',
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 20_000;
  while (!(await listening(port))) {
    assert.ok(Date.now() < deadline, 'the demo did not start listening');
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

// A page on another origin that posts a logout form to the demo as soon as it loads, without
// the token (it cannot read it): cross-site request forgery.
function startForger(port, target) {
  const html = `<!doctype html><title>forger</title><form method="post" action="${target}/logout">` +
    '<input type="hidden" name="_csrf" value="guessed"></form>' +
    '<script>document.forms[0].submit()</script>';
  const server = createHttpServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  return new Promise((done) => server.listen(port, '127.0.0.1', () => done(server)));
}

// The page's background colour, from /style.css: proof the stylesheet applied.
const STYLED = 'rgb(246, 244, 239)';
const background = (page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);

function stopDemo(child) {
  return new Promise((done) => {
    child.on('exit', (code, signal) => done({ code, signal }));
    child.kill('SIGTERM');
  });
}

// The rows of the "Your sessions" table, as text.
const sessionRows = (page) => page.locator('tbody tr').allTextContents();

async function logIn(page, base) {
  await page.goto(`${base}/login`);
  await page.fill('#username', 'ann');
  await page.fill('#password', 'pa55');
  await Promise.all([page.waitForURL(`${base}/dashboard`), page.click('button[type=submit]')]);
}

test('log in, reload, sign out another session, survive a restart, log out', { timeout: 90_000 }, async () => {
  assert.ok(BIN, 'DEMO_BIN must name the demo binary (demo/tests/browser.rs sets it)');
  const dir = mkdtempSync(join(tmpdir(), 'cloakroom-browser-'));
  const database = join(dir, 'sessions.db');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let demo = await startDemo(port, database);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const forger = await startForger(await freePort(), base);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Chromium reports every CSP violation on the console.
    const violations = [];
    page.on('console', (message) => {
      if (/Content[ -]Security[ -]Policy/i.test(message.text())) violations.push(message.text());
    });

    await page.goto(`${base}/dashboard`);
    assert.equal(new URL(page.url()).pathname, '/login', 'not logged in: sent to the login page');
    assert.equal(await background(page), STYLED, 'the login page is styled');

    // A wrong password: redirected back to the form, which shows the error once (a flash).
    await page.fill('#username', 'ann');
    await page.fill('#password', 'wrong');
    const [failed] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/login` && r.request().method() === 'POST'),
      page.waitForResponse((r) => r.url() === `${base}/login` && r.request().method() === 'GET'),
      page.click('button[type=submit]'),
    ]);
    assert.equal(failed.status(), 303, 'a failed login redirects to the form');
    await page.waitForLoadState();
    assert.equal(new URL(page.url()).pathname, '/login');
    assert.equal((await page.textContent('p.error')).trim(), 'Invalid username or password.');
    await page.reload();
    assert.equal(await page.locator('p.error').count(), 0, 'the error is shown once');

    await page.fill('#username', 'ann');
    await page.fill('#password', 'pa55');
    await Promise.all([page.waitForURL(`${base}/dashboard`), page.click('button[type=submit]')]);
    assert.match(await page.textContent('h1'), /Welcome ann! This is your dashboard\./);
    assert.equal(await background(page), STYLED, 'the dashboard is styled');
    const headers = (await page.goto(`${base}/dashboard`)).headers();
    assert.match(headers['content-security-policy'], /default-src 'none'/);
    assert.equal(headers['cache-control'], 'no-store');

    const [cookie] = (await context.cookies()).filter((c) => c.name === 'connect.sid');
    assert.ok(cookie, 'the browser holds the session cookie');
    assert.equal(cookie.httpOnly, true, 'HttpOnly');
    assert.equal(cookie.path, '/', 'Path');
    assert.equal(cookie.sameSite, 'Lax', 'SameSite');
    assert.ok(cookie.expires > Date.now() / 1000, 'a persistent cookie with an expiry');
    assert.match(decodeURIComponent(cookie.value), /^s:[A-Za-z0-9_-]{32}\.[A-Za-z0-9+/]{43}$/);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    await page.reload();
    assert.match(await page.textContent('h1'), /Welcome ann!/, 'still logged in after a reload');

    // "Your sessions", from the dashboard's link: this one, marked.
    await Promise.all([page.waitForURL(`${base}/sessions`), page.click('a[href="/sessions"]')]);
    assert.match(await page.textContent('h1'), /Your sessions/);
    assert.equal(await background(page), STYLED, 'the session list is styled');
    let rows = await sessionRows(page);
    assert.equal(rows.length, 1, `one session: ${rows}`);
    assert.match(rows[0], /This session/);
    assert.match(rows[0], /Chrome on Linux/, 'the device, from the User-Agent');

    // A second browser (its own cookie jar) logs in too; the first signs it out.
    const elsewhere = await browser.newContext();
    const otherPage = await elsewhere.newPage();
    await logIn(otherPage, base);
    assert.match(await otherPage.textContent('h1'), /Welcome ann!/, 'logged in elsewhere');
    await page.reload();
    rows = await sessionRows(page);
    assert.equal(rows.length, 2, `two sessions: ${rows}`);
    assert.equal(rows.filter((row) => /This session/.test(row)).length, 1, 'one marked');
    const sessionId = decodeURIComponent(cookie.value).slice('s:'.length).split('.')[0];
    assert.ok(!(await page.content()).includes(sessionId),
      'the page shows no session id');
    await Promise.all([
      page.waitForURL(`${base}/sessions`),
      page.click('form[action="/sessions/revoke-others"] button[type=submit]'),
    ]);
    assert.equal((await page.textContent('p.info')).trim(), 'Signed out 1 other session.');
    rows = await sessionRows(page);
    assert.equal(rows.length, 1, `only this session left: ${rows}`);
    assert.match(rows[0], /This session/);
    await otherPage.goto(`${base}/dashboard`);
    assert.equal(new URL(otherPage.url()).pathname, '/login', 'the other browser is signed out');
    await elsewhere.close();
    await page.goto(`${base}/dashboard`);
    assert.match(await page.textContent('h1'), /Welcome ann!/, 'this browser is not');

    const stopped = await stopDemo(demo);
    assert.equal(stopped.code, 0, 'SIGTERM shuts the demo down cleanly');
    demo = await startDemo(port, database);
    await page.reload();
    assert.match(await page.textContent('h1'), /Welcome ann!/, 'still logged in after a restart');

    // A forged logout from another origin: refused, still logged in.
    const forgedResponse = page.waitForResponse((response) => response.url() === `${base}/logout`);
    await page.goto(`http://127.0.0.1:${forger.address().port}/`);
    await page.waitForURL(`${base}/logout`);
    assert.equal((await forgedResponse).status(), 403, 'a form without the session token is refused');
    assert.match(await page.textContent('h1'), /This form has expired/);
    await page.goto(`${base}/dashboard`);
    assert.match(await page.textContent('h1'), /Welcome ann!/, 'still logged in after the forgery');

    // Following a link to /logout changes nothing either.
    const visit = await page.goto(`${base}/logout`);
    assert.equal(visit.status(), 405);
    await page.goto(`${base}/dashboard`);
    assert.match(await page.textContent('h1'), /Welcome ann!/, 'still logged in after GET /logout');

    const loggedIn = (await context.cookies()).find((c) => c.name === 'connect.sid');
    await Promise.all([
      page.waitForURL(`${base}/login`),
      page.click('form[action="/logout"] button[type=submit]'),
    ]);
    assert.equal(new URL(page.url()).pathname, '/login', 'logged out: on the login page');
    assert.equal((await page.textContent('p.info')).trim(), 'You have been logged out.');
    // The logout's notice is kept in a new session, which replaces the logged-in one.
    const left = (await context.cookies()).filter((c) => c.name === 'connect.sid');
    assert.ok(left.every((c) => c.value !== loggedIn.value), 'the logged-in cookie is gone');
    await page.goto(`${base}/dashboard`);
    assert.equal(new URL(page.url()).pathname, '/login', 'the dashboard is closed again');
    assert.deepEqual(violations, [], 'no Content-Security-Policy violation');
  } finally {
    forger.close();
    await browser.close();
    await stopDemo(demo);
    rmSync(dir, { recursive: true, force: true });
  }
});
