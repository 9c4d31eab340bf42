// The express-session peers of cloakroom's benchmark (see docs/benchmark-method.md).
//
//   node --expose-gc server.js --target express-memory|express-redis --port PORT [--redis-url URL]
//
// Same routes and meaning as the Rust targets (bench/servers):
//   GET /login    sets `user` = "bench", answers "ok" with the session cookie
//   GET /read     answers "user: bench" (or "user: none" without a session), changes nothing
//   GET /counter  adds one to `views` (a store write on every request), answers the new number
//   GET /__heap   forces a GC and answers V8's heapUsed in bytes (needs --expose-gc)
//
// Prints `ready 127.0.0.1:PORT` once listening, exits on SIGTERM, logs nothing per request and
// never an id, a cookie or session data.
'use strict';

const { parseArgs } = require('node:util');
const express = require('express');
const session = require('express-session');

// A test key, public on purpose: never use it anywhere else. The same as the Rust targets'.
const SIGNING_KEY = 'bench-only-fake-signing-key-0123456789-not-a-secret-do-not-reuse';
const HOST = '127.0.0.1';

const { values: args } = parseArgs({
  options: {
    target: { type: 'string' },
    port: { type: 'string' },
    'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379' },
  },
});

async function makeStore(target) {
  switch (target) {
    case 'express-memory':
      return { store: new session.MemoryStore(), close: async () => {} };
    case 'express-redis': {
      const { createClient } = require('redis');
      const { RedisStore } = require('connect-redis');
      const client = createClient({ url: args['redis-url'] });
      client.on('error', (err) => console.error(`redis client error: ${err.message}`));
      await client.connect();
      return { store: new RedisStore({ client }), close: () => client.quit() };
    }
    default:
      throw new Error(`unknown --target ${JSON.stringify(target)} (express-memory or express-redis)`);
  }
}

async function main() {
  const port = Number(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error('--port PORT is required');
  }
  const { store, close } = await makeStore(args.target);

  const app = express();

  // Before the session middleware: measuring the heap should not touch sessions.
  app.get('/__heap', (req, res) => {
    if (typeof global.gc !== 'function') {
      res.status(500).send('run node with --expose-gc');
      return;
    }
    global.gc();
    res.type('text/plain').send(String(process.memoryUsage().heapUsed));
  });

  // The peer configuration: cookie `sid`, a fixed key, no resave, no saving of untouched new
  // sessions, no rolling, and the default cookie (no maxAge: a browser-session cookie).
  app.use(
    session({
      store,
      secret: SIGNING_KEY,
      name: 'sid',
      resave: false,
      saveUninitialized: false,
      rolling: false,
    }),
  );

  app.get('/login', (req, res) => {
    req.session.user = 'bench';
    res.send('ok');
  });

  app.get('/read', (req, res) => {
    res.send(`user: ${req.session.user ?? 'none'}`);
  });

  app.get('/counter', (req, res) => {
    const views = (req.session.views ?? 0) + 1;
    req.session.views = views;
    res.send(String(views));
  });

  const server = app.listen(port, HOST, () => {
    process.stdout.write(`ready ${HOST}:${server.address().port}\n`);
  });
  server.on('error', (err) => {
    console.error(`failed to listen on ${HOST}:${port}: ${err.message}`);
    process.exit(1);
  });

  const shutdown = () => {
    server.close();
    server.closeAllConnections();
    Promise.resolve(close())
      .catch((err) => console.error(`failed to close the store: ${err.message}`))
      .finally(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
