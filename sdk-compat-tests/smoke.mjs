#!/usr/bin/env node
// Herald SDK-compatibility smoke test.
//
// Black box: this script never imports Herald code. It starts the `herald` binary as a child
// process, then talks to it only through the unmodified official Pusher libraries:
//   - pusher-js 8.6.0 (Node build) as the WebSocket client,
//   - pusher-http-node (`pusher` on npm) to trigger events and to sign private-channel auth.
//
// Usage: node smoke.mjs            (binary: $HERALD_BIN, else ../target/release/herald)
// Output: one `ok - <name>` / `not ok - <name>: <error>` line per scenario, then
// `N passed, M failed`. Exit status 0 only when every scenario passed.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, inspect } from 'node:util';

// `pusher-js` resolves to its Node build (package.json "main": dist/node/pusher.js); its
// default export is the Pusher client class.
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

const APP_ID = '424242';
const APP_KEY = 'smoke-key-0123456789';
const APP_SECRET = 'smoke-secret-0123456789';

const OVERALL_TIMEOUT_MS = 60_000;
const STARTUP_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

const scriptDir = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------------------------
// Reporting

const results = [];
const serverLog = [];
const clientLog = [];

function report(name, error) {
  if (finishing) return;
  if (error === undefined) {
    results.push({ name, ok: true });
    console.log(`ok - ${name}`);
  } else {
    const message = (error && error.message) || String(error);
    results.push({ name, ok: false });
    console.log(`not ok - ${name}: ${message.replace(/\s*\n\s*/g, ' ')}`);
  }
}

/** Runs one scenario; a failure is reported and returned as `false`, never thrown. */
async function scenario(name, body) {
  try {
    await body();
    report(name);
    return true;
  } catch (error) {
    report(name, error);
    return false;
  }
}

function skip(name, reason) {
  report(name, new Error(`not run (${reason})`));
}

function summary() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  return failed;
}

function dumpLogs() {
  if (serverLog.length > 0) {
    console.error('# --- herald output (last 60 lines) ---');
    for (const line of serverLog.slice(-60)) console.error(`# ${line}`.replace(/\n/g, '\n# '));
  }
  if (clientLog.length > 0) {
    console.error('# --- pusher-js log (last 60 lines) ---');
    for (const line of clientLog.slice(-60)) console.error(`# ${line}`.replace(/\n/g, '\n# '));
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function stripAnsi(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, '');
}

function splitHostPort(address) {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!match) throw new Error(`cannot parse host:port from ${JSON.stringify(address)}`);
  return { host: match[1], port: Number(match[2]) };
}

async function findBinary() {
  const candidate = process.env.HERALD_BIN
    ? path.resolve(process.env.HERALD_BIN)
    : path.resolve(scriptDir, '..', 'target', 'release', 'herald');
  try {
    await fs.access(candidate, fsConstants.X_OK);
  } catch {
    const origin = process.env.HERALD_BIN ? 'HERALD_BIN' : 'default location';
    throw new Error(
      `herald binary not found or not executable at ${candidate} (${origin}); ` +
        'run `cargo build --release` in the repository root or set HERALD_BIN',
    );
  }
  return candidate;
}

// ---------------------------------------------------------------------------------------------
// Server process

let server = null; // { child, exited: Promise<{code, signal}>, exitInfo }
let dataDir = null;
let client = null;

function startServer(binary) {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    // Hermetic: no inherited Herald settings (e.g. a HERALD_DATABASE_URL) leak into the run.
    if (name.startsWith('HERALD_') || name === 'RUST_LOG') continue;
    env[name] = value;
  }
  Object.assign(env, {
    HERALD_BIND: '127.0.0.1:0',
    HERALD_DATA_DIR: dataDir,
    HERALD_DEFAULT_APP_ID: APP_ID,
    HERALD_DEFAULT_APP_KEY: APP_KEY,
    HERALD_DEFAULT_APP_SECRET: APP_SECRET,
    RUST_LOG: 'info',
  });

  const child = spawn(binary, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const state = { child, exitInfo: null };
  state.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      state.exitInfo = { code, signal };
      resolve(state.exitInfo);
    });
    child.on('error', (error) => {
      state.exitInfo = { code: null, signal: null, error };
      resolve(state.exitInfo);
    });
  });

  let onListening;
  const listening = new Promise((resolve) => {
    onListening = resolve;
  });
  const stdout = readline.createInterface({ input: child.stdout });
  stdout.on('line', (raw) => {
    const line = stripAnsi(raw);
    serverLog.push(line);
    const match = /listening on http:\/\/([^\s]+)/.exec(line);
    if (match) onListening(match[1]);
  });
  readline.createInterface({ input: child.stderr }).on('line', (raw) => {
    serverLog.push(`[stderr] ${stripAnsi(raw)}`);
  });

  state.address = (async () => {
    const early = state.exited.then((info) => {
      const how = info.error
        ? `could not be started: ${info.error.message}`
        : `exited early (code ${info.code}, signal ${info.signal})`;
      throw new Error(`herald ${how} before printing 'listening on http://…'`);
    });
    return withTimeout(
      Promise.race([listening, early]),
      STARTUP_TIMEOUT_MS,
      "herald to print 'listening on http://…' on stdout",
    );
  })();
  // Avoid an unhandled rejection if nobody awaits it (e.g. overall timeout).
  state.address.catch(() => {});
  return state;
}

async function stopServer() {
  if (!server) return null;
  const { child } = server;
  if (server.exitInfo) return server.exitInfo;
  child.kill('SIGTERM');
  let timer;
  const killed = new Promise((resolve) => {
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve('killed');
    }, STOP_TIMEOUT_MS);
  });
  const outcome = await Promise.race([server.exited, killed]);
  clearTimeout(timer);
  if (outcome === 'killed') {
    await server.exited;
    return { ...server.exitInfo, forced: true };
  }
  return outcome;
}

let cleanupPromise = null;
/** Disconnects the client, stops the server, removes the data dir. Idempotent: every caller
 * awaits the same run. Resolves to the server's exit info (or null if it was never started). */
function cleanup() {
  cleanupPromise ??= (async () => {
    if (client) {
      try {
        client.disconnect();
      } catch {
        // ignore: best effort
      }
    }
    try {
      return await stopServer();
    } finally {
      if (dataDir) await fs.rm(dataDir, { recursive: true, force: true }).catch(() => {});
    }
  })();
  return cleanupPromise;
}

// ---------------------------------------------------------------------------------------------
// pusher-js helpers

function waitForConnected(pusher) {
  return new Promise((resolve, reject) => {
    const connection = pusher.connection;
    if (connection.state === 'connected') return resolve(connection.socket_id);
    const onChange = ({ previous, current }) => {
      clientLog.push(`state ${previous} -> ${current}`);
      if (current === 'connected') {
        connection.unbind('state_change', onChange);
        resolve(connection.socket_id);
      } else if (current === 'failed' || current === 'unavailable') {
        connection.unbind('state_change', onChange);
        reject(new Error(`connection state became '${current}' (previous '${previous}')`));
      }
    };
    connection.bind('state_change', onChange);
    connection.bind('error', (error) => clientLog.push(`connection error: ${inspect(error, { depth: 4, breakLength: Infinity })}`));
  });
}

function waitForSubscription(channel) {
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', (data) => resolve(data));
    channel.bind('pusher:subscription_error', (error) =>
      reject(new Error(`pusher:subscription_error ${inspect(error, { depth: 4, breakLength: Infinity })}`)),
    );
  });
}

function nextEvent(channel, eventName) {
  return new Promise((resolve) => {
    const handler = (data) => {
      channel.unbind(eventName, handler);
      resolve(data);
    };
    channel.bind(eventName, handler);
  });
}

async function triggerAndExpect(rest, channel, eventName, payload) {
  const received = nextEvent(channel, eventName);
  let response;
  try {
    response = await rest.trigger(channel.name, eventName, payload);
  } catch (error) {
    const status = error && error.status !== undefined ? ` (HTTP ${error.status})` : '';
    const body = error && error.body ? `: ${String(error.body).slice(0, 300)}` : '';
    throw new Error(`pusher-http-node trigger failed${status}${body || `: ${error.message}`}`);
  }
  if (response.status !== 200) {
    throw new Error(`trigger answered HTTP ${response.status}, expected 200`);
  }
  const data = await withTimeout(received, STEP_TIMEOUT_MS, `'${eventName}' on ${channel.name}`);
  if (!isDeepStrictEqual(data, payload)) {
    throw new Error(`received ${JSON.stringify(data)}, expected ${JSON.stringify(payload)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const SCENARIOS = {
  start: 'herald starts and prints its listening address',
  connect: 'pusher-js connects over ws',
  publicSubscribe: 'public channel smoke-channel: subscription succeeds',
  publicEvent: 'public channel smoke-channel: event triggered with pusher-http-node is received',
  privateSubscribe: 'private channel private-smoke: subscription authorized by pusher-http-node succeeds',
  privateEvent: 'private channel private-smoke: event triggered with pusher-http-node is received',
  stop: 'herald exits with status 0 on SIGTERM',
};

async function main() {
  const binary = await findBinary();
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'herald-smoke-'));
  server = startServer(binary);

  let host;
  let port;
  const started = await scenario(SCENARIOS.start, async () => {
    ({ host, port } = splitHostPort(await server.address));
  });

  if (started) {
    const rest = new PusherServer({
      appId: APP_ID,
      key: APP_KEY,
      secret: APP_SECRET,
      host,
      port,
      useTLS: false,
    });

    PusherClient.log = (message) => clientLog.push(String(message));
    client = new PusherClient(APP_KEY, {
      cluster: 'mt1',
      wsHost: host,
      wsPort: port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) => {
          try {
            callback(null, rest.authorizeChannel(socketId, channelName));
          } catch (error) {
            callback(error, null);
          }
        },
      },
    });

    const connected = await scenario(SCENARIOS.connect, async () => {
      const socketId = await withTimeout(waitForConnected(client), STEP_TIMEOUT_MS, "connection state 'connected'");
      if (!/^\d+\.\d+$/.test(String(socketId))) {
        throw new Error(`socket_id ${JSON.stringify(socketId)} does not look like '123.456'`);
      }
    });

    if (connected) {
      const publicChannel = client.subscribe('smoke-channel');
      const publicReady = await scenario(SCENARIOS.publicSubscribe, () =>
        withTimeout(waitForSubscription(publicChannel), STEP_TIMEOUT_MS, 'pusher:subscription_succeeded'),
      );
      if (publicReady) {
        await scenario(SCENARIOS.publicEvent, () =>
          triggerAndExpect(rest, publicChannel, 'greeting', { hello: 'world' }),
        );
      } else {
        skip(SCENARIOS.publicEvent, 'subscription failed');
      }

      const privateChannel = client.subscribe('private-smoke');
      const privateReady = await scenario(SCENARIOS.privateSubscribe, () =>
        withTimeout(waitForSubscription(privateChannel), STEP_TIMEOUT_MS, 'pusher:subscription_succeeded'),
      );
      if (privateReady) {
        await scenario(SCENARIOS.privateEvent, () =>
          triggerAndExpect(rest, privateChannel, 'greeting', { hello: 'private world' }),
        );
      } else {
        skip(SCENARIOS.privateEvent, 'subscription failed');
      }
    } else {
      for (const name of [
        SCENARIOS.publicSubscribe,
        SCENARIOS.publicEvent,
        SCENARIOS.privateSubscribe,
        SCENARIOS.privateEvent,
      ]) {
        skip(name, 'not connected');
      }
    }
  } else {
    for (const name of [
      SCENARIOS.connect,
      SCENARIOS.publicSubscribe,
      SCENARIOS.publicEvent,
      SCENARIOS.privateSubscribe,
      SCENARIOS.privateEvent,
    ]) {
      skip(name, 'server did not start');
    }
  }

  const alreadyExited = server.exitInfo;
  const stopped = await cleanup();
  if (alreadyExited) {
    report(SCENARIOS.stop, new Error(`herald had already exited (code ${alreadyExited.code}, signal ${alreadyExited.signal})`));
  } else if (stopped && stopped.forced) {
    report(SCENARIOS.stop, new Error(`herald did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; killed`));
  } else if (stopped && stopped.code !== 0) {
    report(SCENARIOS.stop, new Error(`herald exited with code ${stopped.code}, signal ${stopped.signal}`));
  } else {
    report(SCENARIOS.stop);
  }
}

let finishing = false;
/** The single exit path: optional last failure, cleanup, summary, logs on failure, exit. */
async function finish(lastFailure) {
  if (finishing) return;
  if (lastFailure) report(lastFailure.name, lastFailure.error);
  finishing = true; // from here on, late reports from a still-running main() are dropped
  clearTimeout(overall);
  await Promise.race([
    cleanup().catch(() => {}),
    new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS + 2_000)),
  ]);
  const failed = summary();
  if (failed !== 0) dumpLogs();
  process.exit(failed === 0 ? 0 : 1);
}

const overall = setTimeout(() => {
  finish({ name: 'smoke test overall', error: new Error(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`) });
}, OVERALL_TIMEOUT_MS);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    finish({ name: 'smoke test overall', error: new Error(`interrupted by ${signal}`) });
  });
}

try {
  await main();
  await finish();
} catch (error) {
  await finish({ name: 'smoke test harness', error });
}
