// pusher-js (Node build) with `forceTLS: true` against Herald serving TLS itself
// (HERALD_TLS_CERT / HERALD_TLS_KEY), with a test CA made here with the openssl CLI: it connects
// over wss://, receives an event triggered by pusher-http-node over https://, and keeps its socket
// across a certificate reload (SIGHUP): same socket_id, no state change, later events still
// arrive, while new handshakes get the new certificate.
//
// The scenario starts a TLS server of its own (the suite's server stays plain), so it needs the
// binary; pusher-js runs in a child process (lib/tls-client.mjs) trusting the CA through
// NODE_EXTRA_CA_CERTS, as a customer's Node process would.

import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

import PusherServer from 'pusher';

import { scenario, assert, assertEqual, unique, withTimeout, STEP_TIMEOUT_MS } from '../lib/harness.mjs';
import { DEFAULT_APP, heraldEnv, spawnHerald, stopChild } from '../lib/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A CA and two leaf pairs (`a`, `b`) for localhost / 127.0.0.1 in `dir`, made with openssl. */
function makeCertificates(dir) {
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Herald compat test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  for (const leaf of ['a', 'b']) {
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', `${leaf}.key`, '-out', `${leaf}.csr`, '-subj', `/CN=herald compat ${leaf}`);
    execFileSync('sh', ['-c', `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ${leaf}.ext`], { cwd: dir });
    openssl('x509', '-req', '-in', `${leaf}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '2', '-sha256', '-extfile', `${leaf}.ext`, '-out', `${leaf}.pem`);
  }
}

/** Puts leaf `name` in place as the server's cert.pem / key.pem (written aside, then renamed). */
async function install(dir, name) {
  for (const [from, to] of [[`${name}.pem`, 'cert.pem'], [`${name}.key`, 'key.pem']]) {
    await fs.copyFile(path.join(dir, from), path.join(dir, `${to}.new`));
    await fs.rename(path.join(dir, `${to}.new`), path.join(dir, to));
  }
}

/** The SHA-256 fingerprint of the certificate a new TLS handshake with `port` shows. */
function presented(port, ca) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.destroy();
      });
      socket.on('error', reject);
    }),
    STEP_TIMEOUT_MS,
    'a TLS handshake',
  );
}

/** The pusher-js child process: its JSON lines as they come, and a way to wait for one. */
function startClient(port, ca) {
  const child = spawn(process.execPath, [path.join(here, '..', 'lib', 'tls-client.mjs'), 'localhost', String(port), DEFAULT_APP.key], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: ca },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines = [];
  const waiters = [];
  const stderr = [];
  readline.createInterface({ input: child.stdout }).on('line', (text) => {
    const line = JSON.parse(text);
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.test(line)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
  return {
    lines,
    send: (command) => child.stdin.write(`${JSON.stringify(command)}\n`),
    waitFor(test, what) {
      const seen = lines.find(test);
      if (seen) return Promise.resolve(seen);
      return withTimeout(new Promise((resolve) => waiters.push({ test, resolve })), STEP_TIMEOUT_MS, `${what} (stderr: ${stderr.join(' ')})`);
    },
    stop() {
      child.stdin.end();
      setTimeout(() => child.kill('SIGKILL'), 2_000).unref();
    },
  };
}

scenario(
  'node: pusher-js with forceTLS connects over wss:// with a test CA and keeps its socket across a certificate reload',
  async (ctx) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'herald-compat-tls-'));
    const server = { log: [] };
    let client;
    try {
      makeCertificates(dir);
      await install(dir, 'a');
      const caFile = path.join(dir, 'ca.pem');
      const ca = await fs.readFile(caFile);
      const fingerprint = async (leaf) => new crypto.X509Certificate(await fs.readFile(path.join(dir, `${leaf}.pem`))).fingerprint256;
      const env = heraldEnv({ HERALD_DATA_DIR: path.join(dir, 'data') });
      Object.assign(env, {
        HERALD_BIND: '127.0.0.1:0',
        HERALD_DEFAULT_APP_ID: DEFAULT_APP.appId,
        HERALD_DEFAULT_APP_KEY: DEFAULT_APP.key,
        HERALD_DEFAULT_APP_SECRET: DEFAULT_APP.secret,
        HERALD_ADMIN_PASSWORD: 'compat-tls-operator-password',
        HERALD_TLS_CERT: path.join(dir, 'cert.pem'),
        HERALD_TLS_KEY: path.join(dir, 'key.pem'),
        RUST_LOG: 'info',
      });
      const address = await spawnHerald(server, { binary: ctx.target.binary, env, log: server.log, name: 'herald (TLS)' });
      assert(server.log.some((line) => line.includes(`listening on https://${address}`)), 'logs listening on https://');
      const port = Number(address.split(':').pop());
      assertEqual(await presented(port, ca), await fingerprint('a'), 'certificate before the reload');

      const backend = new PusherServer({
        appId: DEFAULT_APP.appId,
        key: DEFAULT_APP.key,
        secret: DEFAULT_APP.secret,
        host: 'localhost',
        port: String(port),
        useTLS: true,
        agent: new https.Agent({ ca }),
      });
      client = startClient(port, caFile);
      const connected = await client.waitFor((l) => l.state === 'connected', 'pusher-js connected over TLS');
      const socketId = connected.socket_id;
      assert(/^\d+\.\d+$/.test(socketId), `socket_id ${socketId}`);
      // pusher-js names its WebSocket transport `ws` with or without TLS; this port speaks TLS only.
      assertEqual(connected.transport, 'ws', 'pusher-js transport (a WebSocket, not a fallback)');
      const channel = unique('compat-tls');
      client.send({ subscribe: channel });
      await client.waitFor((l) => l.subscribed === channel, 'subscription');
      const first = await backend.trigger(channel, 'news', { n: 1 });
      assertEqual(first.status, 200, 'trigger over https');
      await client.waitFor((l) => l.event === 'news' && l.data?.n === 1, 'the first event');

      await install(dir, 'b');
      server.child.kill('SIGHUP');
      const expected = await fingerprint('b');
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      // The file watch may get there first; the SIGHUP's own reload is logged either way.
      const hungUp = () => server.log.some((line) => line.includes('TLS certificate reloaded') && line.includes('SIGHUP'));
      while (!hungUp() || (await presented(port, ca)) !== expected) {
        assert(Date.now() < deadline, `no reload: ${server.log.slice(-5).join(' | ')}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }

      await backend.trigger(channel, 'news', { n: 2 });
      await client.waitFor((l) => l.event === 'news' && l.data?.n === 2, 'an event after the reload');
      const states = client.lines.filter((l) => l.state);
      // (`connecting` happens inside the constructor, before the child binds its listener.)
      assertEqual(states.map((l) => l.state), ['connected'], 'connection states (no reconnect)');
      assertEqual(states.at(-1).socket_id, socketId, 'socket_id after the reload');
    } finally {
      client?.stop();
      const status = await stopChild(server, 10_000);
      if (status && status.code !== 0) console.error(`# TLS server exited with ${JSON.stringify(status)}: ${server.log.slice(-10).join(' | ')}`);
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
  { needs: ['binary'], timeoutMs: 60_000 },
);
