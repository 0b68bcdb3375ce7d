#!/usr/bin/env node
// Herald's SDK compatibility suite. Black box: it never imports Herald code; it starts the
// `herald` binary (or targets a server already running) and drives it only through the official
// client libraries.
//
//   node run.mjs                          start target/release/herald (or $HERALD_BIN) and test it
//   node run.mjs --url http://HOST:PORT --app-id ID --key KEY --secret SECRET
//                                         test a server already running (another Herald node, or
//                                         any Pusher-compatible server, for comparison)
//   node run.mjs --cluster                start a 2-node cluster (scratch PostgreSQL database, own
//                                         redis-server, nginx round robin in front) and test it
//                                         through the balancer
//   node run.mjs --only presence          run the scenarios whose name contains "presence"
//                                         (repeatable: those whose name contains any of them)
//   node run.mjs --transport xhr_streaming
//   node run.mjs --transport xhr_polling  pusher-js in Node and in Chromium limited to that HTTP
//                                         fallback (`enabledTransports`, with httpHost/httpPort
//                                         set): by default its channel, presence, client-event,
//                                         signin and encryption scenarios (the `node:` and
//                                         `browser:` ones but the restarts, the REST ones and
//                                         pusher:ping); with --cluster too (behind nginx's
//                                         round robin, a session's requests land on both nodes)
//
// Output: `ok - NAME`, `not ok - NAME: WHY` or `skip - NAME: WHY` per scenario, then
// `N passed, M failed`. Exit status 0 only when nothing failed.

import { parseArgs } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { runAll, unmatchedFilters, unmetRequirements, withTimeout } from './lib/harness.mjs';
import { ExternalServer, OwnedServer, findBinary } from './lib/server.mjs';
import { ClusterServer } from './lib/cluster.mjs';
import { makeContext } from './lib/clients.mjs';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    'app-id': { type: 'string' },
    key: { type: 'string' },
    secret: { type: 'string' },
    cluster: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true, default: [] },
    transport: { type: 'string' },
    verbose: { type: 'boolean', default: false },
  },
});

const here = path.dirname(fileURLToPath(import.meta.url));
const scenarioDir = path.join(here, 'scenarios');
for (const file of fs.readdirSync(scenarioDir).filter((f) => f.endsWith('.mjs')).sort()) {
  await import(pathToFileURL(path.join(scenarioDir, file)).href);
}

const unmatched = unmatchedFilters(values.only);
if (unmatched.length > 0) {
  console.error(`--only matches no scenario: ${unmatched.map((part) => JSON.stringify(part)).join(', ')}`);
  process.exit(2);
}

// pusher-js's HTTP fallbacks: which scenarios run over them by default (pusher-js in Node and
// in Chromium), and which never do (a restart, whose reconnect is about WebSocket; the REST ones,
// which test pusher-http-node; pusher:ping / pusher:pong, which the HTTP transports replace with
// `[]` and `h`).
const FALLBACKS = ['xhr_streaming', 'xhr_polling'];
const FALLBACK_SCENARIOS = ['node: ', 'browser: '];
const FALLBACK_EXCEPT = [
  'restarts',
  'server restart',
  'pusher:ping',
  'node: trigger with info',
  'node: triggerBatch',
  'node: GET /channels',
  'node: refusals surface',
  'node: a channel leaves /channels',
  // Its own TLS server, over WebSocket whatever the run's transport.
  'node: pusher-js with forceTLS',
  // No pusher-js at all: the browser's EventSource against the Mercure hub.
  'browser: Mercure EventSource',
];
let only = values.only;
let except = [];
if (values.transport) {
  if (!FALLBACKS.includes(values.transport)) {
    console.error(`--transport is one of ${FALLBACKS.join(', ')}`);
    process.exit(2);
  }
  if (only.length === 0) only = FALLBACK_SCENARIOS;
  except = FALLBACK_EXCEPT;
}

// What the selected scenarios need on this machine (PHP and pusher-http-php for the `php:` ones):
// missing, the run fails here, before any server starts, rather than skipping them.
const unmet = await unmetRequirements({ only, except });
if (unmet.length > 0) {
  for (const { name, why, scenarios } of unmet) {
    console.log(`not ok - requirement "${name}" of ${scenarios} selected scenario(s): ${why}`);
  }
  console.log(`0 passed, ${unmet.length} failed`);
  process.exit(1);
}

let target;
if (values.url && values.cluster) {
  console.error('--url and --cluster exclude each other');
  process.exit(2);
}
if (values.url) {
  for (const required of ['app-id', 'key', 'secret']) {
    if (!values[required]) {
      console.error(`--url needs --${required}`);
      process.exit(2);
    }
  }
  target = new ExternalServer({
    url: values.url,
    appId: values['app-id'],
    key: values.key,
    secret: values.secret,
  });
} else if (values.cluster) {
  target = new ClusterServer(await findBinary());
} else {
  target = new OwnedServer(await findBinary());
}

// Stopping what the suite started: a node drains for up to 10 s, and a cluster also stops nginx
// and its redis-server and drops its scratch database.
const DISPOSE_MS = 30_000;

// Interrupted (Ctrl-C, `timeout`, CI cancelling): stop the herald we started before leaving.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    console.log(`not ok - the suite ran to its end: interrupted by ${signal}`);
    withTimeout(target.dispose(), DISPOSE_MS, 'herald to stop')
      .catch(() => {})
      .finally(() => process.exit(1));
  });
}

const overall = setTimeout(() => {
  console.log('not ok - the suite finished in time: overall timeout of 20 minutes');
  withTimeout(target.dispose(), DISPOSE_MS, 'herald to stop')
    .catch(() => {})
    .finally(() => process.exit(1));
}, 20 * 60_000);

let passed = 0;
let failures = 0;

// A scenario that failed early can leave a promise it never awaited (an event it was still
// waiting for) to reject later. Without this, Node would end the whole run there, leaving the
// servers running; it counts as a failure instead.
let strayRejections = 0;
process.on('unhandledRejection', (reason) => {
  strayRejections += 1;
  const message = (reason && (reason.stack || reason.message)) || String(reason);
  console.log(`not ok - a promise left behind by a scenario rejected: ${String(message).split('\n')[0]}`);
});
// Whatever ends the process, the servers the suite started must not outlive it.
process.on('exit', () => target.killNow?.());

try {
  await target.start();
  const ctx = makeContext(target, { transport: values.transport });
  ({ passed, failed: failures } = await runAll(ctx, {
    only,
    except,
    log: values.verbose ? (message) => console.error(`# ${message.replace(/\n/g, '\n# ')}`) : null,
  }));
  if (target.canRestart) {
    // The last scenario is the process itself: SIGTERM must end it cleanly.
    const status = await withTimeout(target.stop(), 15_000, 'herald to stop');
    if (status && status.code === 0) {
      passed += 1;
      console.log('ok - herald exits with status 0 on SIGTERM');
    } else {
      failures += 1;
      console.log(`not ok - herald exits with status 0 on SIGTERM: ${JSON.stringify(status)}`);
    }
  }
} catch (error) {
  failures += 1;
  console.log(`not ok - the suite could start: ${error.message}`);
} finally {
  if (failures > 0 && target.log.length > 0) {
    // A cluster's log interleaves its nodes, nginx and Redis: show more of it.
    const tail = values.cluster ? 100 : 40;
    console.error(`# --- herald output (last ${tail} lines) ---`);
    for (const line of target.log.slice(-tail)) console.error(`# ${line}`);
  }
  // The whole log, for a failure the tail does not explain.
  if (process.env.HERALD_COMPAT_LOG_FILE) fs.writeFileSync(process.env.HERALD_COMPAT_LOG_FILE, `${target.log.join('\n')}\n`);
  await withTimeout(target.dispose(), DISPOSE_MS, 'herald to stop').catch((e) => console.error(`# ${e.message}`));
  clearTimeout(overall);
}
failures += strayRejections;
console.log(`${passed} passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
