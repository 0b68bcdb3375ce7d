// Starting, stopping and restarting the `herald` binary, or describing a server already running.

import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { withTimeout } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export const DEFAULT_APP = {
  appId: '424242',
  key: 'compat-key-0123456789',
  secret: 'compat-secret-0123456789',
};

/**
 * The platform operator Herald creates on the first start of the suite's empty store: the default
 * email, and the password given in HERALD_ADMIN_PASSWORD (so no first-run file has to be read).
 * Only a server the suite starts has it: the dashboard scenario needs it to sign in.
 */
export const OPERATOR = {
  email: 'admin@localhost',
  password: 'compat-operator-password-0123',
};

/** `$HERALD_BIN`, else the repository's release build, built first when it is missing. */
export async function findBinary() {
  if (process.env.HERALD_BIN) {
    const given = path.resolve(process.env.HERALD_BIN);
    await fs.access(given, fsConstants.X_OK).catch(() => {
      throw new Error(`HERALD_BIN=${given} is not an executable file`);
    });
    return given;
  }
  const repo = path.resolve(here, '..', '..');
  const built = path.join(repo, 'target', 'release', 'herald');
  try {
    await fs.access(built, fsConstants.X_OK);
    return built;
  } catch {
    console.log(`# ${built} is missing: running cargo build --release --bin herald`);
  }
  const status = spawnSync('cargo', ['build', '--release', '--bin', 'herald'], {
    cwd: repo,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (status.status !== 0) {
    throw new Error('cargo build --release failed; build herald yourself or set HERALD_BIN');
  }
  return built;
}

function splitHostPort(address) {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!match) throw new Error(`cannot parse host:port from ${JSON.stringify(address)}`);
  return { host: match[1], port: Number(match[2]) };
}

/**
 * The environment of a `herald` process the suite starts (a server, a node or the CLI): the
 * caller's environment without any HERALD_* setting (nor RUST_LOG), plus `store` (where the store
 * is: server and CLI must see the same one).
 */
export function heraldEnv(store) {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('HERALD_') || name === 'RUST_LOG') continue;
    env[name] = value;
  }
  Object.assign(env, store);
  // The webhook receivers of the scenarios listen on loopback, which Herald refuses otherwise.
  env.HERALD_WEBHOOK_ALLOW_PRIVATE = '127.0.0.0/8,::1/128';
  return env;
}

/**
 * Runs `herald ARGS...` (a CLI subcommand) with `env`. Resolves with stdout, JSON-decoded when
 * `--json` is among the arguments; rejects with stderr when the command fails.
 */
export function runCli(binary, env, args) {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { env, timeout: 15_000 }, (error, stdout, stderr) => {
      const command = `herald ${args.join(' ')}`;
      if (error) return reject(new Error(`${command} failed (${error.code ?? error.signal}): ${stderr.trim() || error.message}`));
      if (!args.includes('--json')) return resolve(stdout);
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`${command} printed no JSON: ${stdout} ${stderr}`));
      }
    });
  });
}

/**
 * Spawns `herald` (`binary`, with `env`) as `owner.child`, its exit status promised in
 * `owner.exited`, each line it prints pushed onto `log` after `prefix`. Resolves with the address
 * it prints it listens on; rejects when it exits first or prints none within 30 s (`name` says who).
 */
export function spawnHerald(owner, { binary, env, log, prefix = '', name = 'herald' }) {
  const child = spawn(binary, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  owner.child = child;
  owner.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      log.push(`${prefix}${line}`);
      // `https://` when the server serves TLS (HERALD_TLS_CERT / HERALD_TLS_KEY).
      const match = /listening on https?:\/\/([^\s]+)/.exec(line);
      if (match) resolve(match[1]);
    });
    readline.createInterface({ input: child.stderr }).on('line', (line) => log.push(`${prefix}[stderr] ${line}`));
    owner.exited.then(({ code, signal }) =>
      reject(new Error(`${name} exited before listening (code ${code}, signal ${signal})`)),
    );
  });
  return withTimeout(listening, 30_000, `${name} to print its listening address`);
}

/**
 * SIGTERM to `owner.child` (then forgotten), SIGKILL after `graceMs`. Resolves with its exit status
 * from `owner.exited`, or null when none runs.
 */
export async function stopChild(owner, graceMs) {
  if (!owner.child) return null;
  const child = owner.child;
  owner.child = null;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const status = await owner.exited;
  clearTimeout(timer);
  return status;
}

/** A herald process this suite owns: started on a free port, restartable on the same port. */
export class OwnedServer {
  constructor(binary) {
    this.binary = binary;
    this.log = [];
    this.child = null;
    this.canRestart = true;
    // The suite owns the store: it can run `herald` subcommands (webhooks) on it.
    this.canAdminister = true;
    // The suite chooses the operator's password: it can sign in to the dashboard.
    this.operator = { ...OPERATOR };
    // Anyone may sign up (HERALD_SIGNUP=open); without HERALD_SMTP_URL the emailed links are in
    // the server's log, which the suite reads.
    this.signup = 'open';
    Object.assign(this, DEFAULT_APP);
  }

  /**
   * The environment of every `herald` process of this server (the server and its CLI): the
   * caller's environment without any HERALD_* setting, plus the store. Server and CLI must see
   * the same store (HERALD_DATA_DIR; no HERALD_DATABASE_URL, so both use the data dir's SQLite).
   */
  storeEnv() {
    return heraldEnv({ HERALD_DATA_DIR: this.dataDir });
  }

  async start() {
    this.dataDir ??= await fs.mkdtemp(path.join(os.tmpdir(), 'herald-compat-'));
    const env = this.storeEnv();
    Object.assign(env, {
      HERALD_BIND: this.port ? `127.0.0.1:${this.port}` : '127.0.0.1:0',
      HERALD_DEFAULT_APP_ID: this.appId,
      HERALD_DEFAULT_APP_KEY: this.key,
      HERALD_DEFAULT_APP_SECRET: this.secret,
      HERALD_ADMIN_PASSWORD: this.operator.password,
      HERALD_SIGNUP: this.signup,
      RUST_LOG: process.env.RUST_LOG ?? 'info',
    });
    const address = await spawnHerald(this, { binary: this.binary, env, log: this.log });
    const { host, port } = splitHostPort(address);
    this.host = host;
    this.port = port;
  }

  /** SIGTERM, then SIGKILL after 10 s. Returns the exit status. */
  stop() {
    return stopChild(this, 10_000);
  }

  /** Stops and starts again on the same port with the same store. */
  async restart() {
    await this.stop();
    await this.start();
  }

  async dispose() {
    await this.stop();
    if (this.dataDir) await fs.rm(this.dataDir, { recursive: true, force: true });
  }

  /** The last resort when the suite's process exits without dispose: SIGKILL the server. */
  killNow() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /**
   * Runs `herald ARGS...` (a CLI subcommand) on this server's store, as an operator would; the
   * running server picks changes up by itself. Resolves with stdout, JSON-decoded when `--json`
   * is among the arguments; rejects with stderr when the command fails.
   */
  cli(args) {
    if (!this.dataDir) return Promise.reject(new Error('the server has no store yet (not started)'));
    return runCli(this.binary, this.storeEnv(), args);
  }
}

/** A server someone else runs: `--url http://host:port --app-id --key --secret`. */
export class ExternalServer {
  constructor({ url, appId, key, secret }) {
    const parsed = new URL(url);
    this.host = parsed.hostname;
    this.port = Number(parsed.port || (parsed.protocol === 'https:' ? 443 : 80));
    this.tls = parsed.protocol === 'https:';
    Object.assign(this, { appId, key, secret });
    this.canRestart = false;
    // Its store is not ours: no `herald` CLI here (webhook endpoints cannot be configured).
    this.canAdminister = false;
    // Nor is its operator: the dashboard's sign-in password is unknown here.
    this.operator = null;
    this.log = [];
  }

  cli() {
    return Promise.reject(new Error('the herald CLI needs a server this suite started'));
  }

  async start() {}
  async stop() {}
  async dispose() {}
}
