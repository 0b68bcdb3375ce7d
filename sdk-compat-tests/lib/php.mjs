// pusher-http-php, unmodified, in the compat suite: where the SDK is, how `php/ops.php` runs one
// SDK call, the PHP auth and webhook endpoint (`php -S` with `php/endpoint.php`) that pusher-js
// clients and Herald talk to, and a reverse proxy that mounts Herald under a path prefix (the
// SDK's `path` option). Nothing here knows Herald.
//
// The SDK is not installed from Packagist (not reachable from the build machines): it is the
// snapshot in `shared/vendor/pusher-http-php` (its SOURCE.md), loaded with Debian's Guzzle and PSR
// packages (`setup.sh` installs them). Where it is, in this order: $HERALD_PHP_SDK_DIR (an error
// if it is set and wrong), `../shared/vendor/pusher-http-php` next to the repository,
// `/work/shared/vendor/pusher-http-php`. A run with PHP scenarios selected fails before it starts
// when the SDK or PHP is missing: never a silent skip.

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { eventually, requirement, runSdkDriver, STEP_TIMEOUT_MS } from './harness.mjs';
import { SUITE_DIR } from './clients.mjs';

const REPO_ROOT = path.resolve(SUITE_DIR, '..');
const PHP_DIR = path.join(SUITE_DIR, 'php');
const SDK_MARKER = path.join('src', 'Pusher.php');

/** The PHP interpreter: $HERALD_COMPAT_PHP, else `php` from PATH. */
export function phpBinary() {
  return process.env.HERALD_COMPAT_PHP || 'php';
}

/**
 * The SDK's directory, or throws saying where it looked. An explicit $HERALD_PHP_SDK_DIR that
 * does not hold the SDK is an error of its own (no falling back behind the caller's back).
 */
export function phpSdkDir() {
  const given = process.env.HERALD_PHP_SDK_DIR;
  if (given) {
    const dir = path.resolve(given);
    if (fs.existsSync(path.join(dir, SDK_MARKER))) return dir;
    throw new Error(`HERALD_PHP_SDK_DIR=${given} does not hold pusher-http-php (no ${SDK_MARKER} there)`);
  }
  const candidates = [
    path.resolve(REPO_ROOT, '..', 'shared', 'vendor', 'pusher-http-php'),
    '/work/shared/vendor/pusher-http-php',
  ];
  const found = candidates.find((dir) => fs.existsSync(path.join(dir, SDK_MARKER)));
  if (found) return found;
  throw new Error(
    `pusher-http-php not found (looked in ${candidates.join(', ')}): set HERALD_PHP_SDK_DIR to the SDK's ` +
      'directory (the unmodified pusher/pusher-php-server sources, see shared/vendor/pusher-http-php/SOURCE.md)',
  );
}

/** The environment of every PHP process: the caller's, plus where the SDK is. */
function phpEnv(extra = {}) {
  return { ...process.env, HERALD_PHP_SDK_DIR: phpSdkDir(), ...extra };
}

/** `php/ops.php`'s `config`: pusher-http-php configured for the target. */
export function phpConfig(target) {
  return {
    app_id: target.appId,
    key: target.key,
    secret: target.secret,
    host: target.host,
    port: target.port,
    scheme: target.tls ? 'https' : 'http',
  };
}

/**
 * Runs `php php/ops.php OP ARGS_JSON` (one SDK call in a fresh PHP process, as one web request
 * of a PHP application would); resolves with its JSON answer (see ops.php).
 */
export function runPhp(target, op, args = {}) {
  let env;
  try {
    env = phpEnv();
  } catch (error) {
    return Promise.reject(error);
  }
  const script = path.join(PHP_DIR, 'ops.php');
  const payload = { config: phpConfig(target), ...args };
  return runSdkDriver(phpBinary(), script, op, payload, { env, jsonOnFailure: true });
}

// The preflight of every scenario that `requires: ['php']`: PHP runs, the SDK is found and loads
// with its dependencies. Checked before the server starts; failing it fails the run.
requirement('php', async () => {
  let dir;
  try {
    dir = phpSdkDir();
  } catch (error) {
    return error.message;
  }
  const answer = await new Promise((resolve) => {
    execFile(
      phpBinary(),
      [path.join(PHP_DIR, 'ops.php'), 'check', JSON.stringify({ config: { app_id: '1', key: 'k', secret: 's', host: '127.0.0.1', port: 1 } })],
      { env: phpEnv(), timeout: 15_000 },
      (error, stdout, stderr) => resolve({ error, stdout, stderr }),
    );
  });
  if (answer.error && answer.error.code === 'ENOENT') {
    return `${phpBinary()} not found: install Debian's php-cli and the SDK's dependencies (sdk-compat-tests/setup.sh)`;
  }
  try {
    const out = JSON.parse(answer.stdout);
    if (out.ok) return null;
    return `pusher-http-php at ${dir} does not load: ${out.error}: ${out.message}`;
  } catch {
    return `pusher-http-php at ${dir} does not load: ${(answer.stderr || answer.stdout || String(answer.error)).trim()}`;
  }
});

/**
 * The `php -S` processes running now. Each leads a process group of its own, so that stopping it
 * also stops anything it forked; on any exit of the suite's process the groups still here are
 * killed (the servers must not outlive the run).
 */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** A TCP port free on 127.0.0.1 a moment ago (php -S cannot be asked for port 0). */
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * The customer's PHP backend: `php -S 127.0.0.1:PORT php/endpoint.php`, configured for `target`
 * (with the encryption master key `masterKey`), with the auth endpoints and the webhook
 * receiver described in endpoint.php. `url` is its base; `log()` what it did, in order.
 */
export class PhpEndpoint {
  constructor(target, { masterKey } = {}) {
    this.target = target;
    this.masterKey = masterKey;
    this.output = [];
  }

  async start() {
    this.dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'herald-compat-php-'));
    this.logFile = path.join(this.dir, 'log.jsonl');
    const config = { ...phpConfig(this.target) };
    if (this.masterKey) config.encryption_master_key_base64 = this.masterKey;
    let lastError;
    // The free port may be taken between the probe and php -S binding it: try again then.
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const port = await freePort();
      try {
        await this.spawn(port, config);
        return this;
      } catch (error) {
        lastError = error;
        await this.stop();
      }
    }
    throw lastError;
  }

  async spawn(port, config) {
    this.url = `http://127.0.0.1:${port}`;
    const child = spawn(phpBinary(), ['-S', `127.0.0.1:${port}`, path.join(PHP_DIR, 'endpoint.php')], {
      cwd: PHP_DIR,
      env: phpEnv({
        HERALD_COMPAT_PHP_CONFIG: JSON.stringify(config),
        HERALD_COMPAT_PHP_LOG: this.logFile,
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: stop() signals the whole group.
      detached: true,
    });
    this.child = child;
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
      child.on('error', (error) => {
        running.delete(child);
        resolve({ error: error.message });
      });
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream.on('data', (chunk) => this.output.push(...chunk.toString('utf8').split('\n').filter(Boolean)));
    }
    let gone = null;
    this.exited.then((status) => {
      gone = status;
    });
    await eventually(
      async () => {
        if (gone) throw new Error(`php -S exited: ${JSON.stringify(gone)} ${this.output.slice(-5).join(' | ')}`);
        const response = await fetch(`${this.url}/log`);
        return response.status === 200;
      },
      `php -S on ${this.url} to answer`,
      STEP_TIMEOUT_MS,
    ).catch((error) => {
      // An exit is final: say it as such rather than as a timeout.
      if (gone) throw new Error(`php -S exited: ${JSON.stringify(gone)} ${this.output.slice(-5).join(' | ')}`);
      throw error;
    });
  }

  /** Every request the endpoint handled (see endpoint.php), in order. */
  async log() {
    const response = await fetch(`${this.url}/log`);
    return response.json();
  }

  /** pusher-js `channelAuthorization` through this endpoint, as the user `user` ({user_id, user_info}). */
  channelAuthorization(user = {}, extra = {}) {
    const params = { ...extra };
    if (user.user_id !== undefined) params.user_id = user.user_id;
    if (user.user_info !== undefined) params.user_info = JSON.stringify(user.user_info);
    return { endpoint: `${this.url}/pusher/auth`, transport: 'ajax', params };
  }

  /** pusher-js `userAuthentication` through this endpoint, signing in `user` ({user_id, user_info}). */
  userAuthentication(user) {
    const params = { user_id: user.user_id };
    if (user.user_info !== undefined) params.user_info = JSON.stringify(user.user_info);
    return { endpoint: `${this.url}/pusher/user-auth`, transport: 'ajax', params };
  }

  async stop() {
    const child = this.child;
    this.child = null;
    if (child && child.pid && child.exitCode === null && child.signalCode === null) {
      const signalGroup = (signal) => {
        try {
          process.kill(-child.pid, signal);
        } catch {
          // The group is gone already.
        }
      };
      signalGroup('SIGTERM');
      const timer = setTimeout(() => signalGroup('SIGKILL'), 3_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  async dispose() {
    await this.stop();
    if (this.dir) await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A reverse proxy on 127.0.0.1 that serves `target` under `prefix`, as an operator mounts Herald
 * under a path of a shared host. `strip: true` forwards `/prefix/apps/...` as `/apps/...`
 * (nginx's `location /prefix/ { proxy_pass http://herald/; }`); `strip: false` forwards the path
 * unchanged, so Herald sees the prefix itself. Requests elsewhere get 404 from the proxy.
 * `seen` records `{method, url}` of every request that reached the proxy.
 */
export class PrefixProxy {
  constructor(target, { prefix, strip }) {
    this.target = target;
    this.prefix = prefix;
    this.strip = strip;
    this.seen = [];
    this.server = http.createServer((req, res) => this.forward(req, res));
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    return this;
  }

  forward(req, res) {
    this.seen.push({ method: req.method, url: req.url });
    if (!req.url.startsWith(`${this.prefix}/`)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not under the prefix');
      return;
    }
    const upstreamPath = this.strip ? req.url.slice(this.prefix.length) : req.url;
    const upstream = http.request(
      {
        host: this.target.host,
        port: this.target.port,
        method: req.method,
        path: upstreamPath,
        headers: { ...req.headers, host: `${this.target.host}:${this.target.port}` },
      },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (error) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${error.message}`);
    });
    req.pipe(upstream);
  }

  async close() {
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}
