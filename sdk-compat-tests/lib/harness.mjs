// The scenario runner: registration, one line per scenario, the closing `N passed, M failed`.
// Scenarios talk to Herald only through official client libraries; nothing here knows Herald.

import { execFile } from 'node:child_process';
import path from 'node:path';

export const STEP_TIMEOUT_MS = 10_000;

/** The default limit for one scenario. */
export const SCENARIO_TIMEOUT_MS = 45_000;

const registered = [];

/**
 * What a scenario cannot run without on the machine running the suite (PHP and pusher-http-php,
 * say): name -> async check resolving to null when met, else why not. Unlike NEEDS (what the
 * target allows, skipped when absent), an unmet requirement FAILS the run before it starts.
 */
const REQUIREMENTS = new Map();

/** Registers a requirement (see REQUIREMENTS): `check` resolves to null, or to why it is unmet. */
export function requirement(name, check) {
  REQUIREMENTS.set(name, check);
}

/**
 * What a scenario may need from the target beyond the network, and why it is skipped without it.
 * Against a server the suite did not start, neither a restart nor the CLI on its store is ours.
 */
const NEEDS = {
  restart: {
    available: (target) => Boolean(target.canRestart),
    why: 'needs a server this suite started (it restarts it)',
  },
  cli: {
    available: (target) => Boolean(target.canAdminister),
    why: "needs a server this suite started (it configures webhooks with the herald CLI on the server's store)",
  },
  binary: {
    available: (target) => Boolean(target.binary),
    why: 'needs the herald binary (it starts a server of its own)',
  },
  oneNode: {
    available: (target) => !(target.nodeCount > 1),
    why: "needs one node (Mercure publishes and history stay on the node that has them; a balancer's round robin splits publisher and subscriber)",
  },
  dashboard: {
    available: (target) => Boolean(target.operator),
    why: "needs a server this suite started (it signs in to the dashboard as the operator, whose password only that server's environment sets)",
  },
  signup: {
    available: (target) => target.signup === 'open' && Array.isArray(target.log),
    why: 'needs a server this suite started with HERALD_SIGNUP=open (it reads the emailed link from the server log: no HERALD_SMTP_URL)',
  },
};

/**
 * Registers a scenario.
 * @param {string} name  one line, unique
 * @param {(ctx) => Promise<void>} run  throws to fail
 * @param {{needs?: string[], requires?: string[], timeoutMs?: number}} [options]  `needs`: what the
 *   target must allow (see NEEDS: `restart` for scenarios that restart the server, `cli` for those
 *   that configure it with the herald CLI, `dashboard` for those that sign in as the operator);
 *   `requires`: what this machine must have (see REQUIREMENTS: `php`), checked before the run;
 *   `timeoutMs` replaces the default limit of SCENARIO_TIMEOUT_MS
 */
export function scenario(name, run, options = {}) {
  if (registered.some((s) => s.name === name)) throw new Error(`duplicate scenario name: ${name}`);
  for (const need of options.needs ?? []) {
    if (!NEEDS[need]) throw new Error(`scenario ${name}: unknown need ${JSON.stringify(need)}`);
  }
  registered.push({
    name,
    run,
    needs: options.needs ?? [],
    requires: options.requires ?? [],
    timeoutMs: options.timeoutMs ?? SCENARIO_TIMEOUT_MS,
  });
}

/** Whether the scenario `s` runs with these `only` / `except` filters (see runAll). */
function selected(s, only, except) {
  if (only.length > 0 && !only.some((part) => s.name.includes(part))) return false;
  return !except.some((part) => s.name.includes(part));
}

/**
 * The requirements of the selected scenarios that this machine does not meet:
 * `[{name, why, scenarios}]`, empty when all are met. An unknown requirement name is unmet too.
 */
export async function unmetRequirements({ only = [], except = [] } = {}) {
  const wanted = new Map();
  for (const s of registered.filter((s) => selected(s, only, except))) {
    for (const name of s.requires) wanted.set(name, (wanted.get(name) ?? 0) + 1);
  }
  const unmet = [];
  for (const [name, scenarios] of wanted) {
    const check = REQUIREMENTS.get(name);
    const why = check ? await check() : `no check is registered for the requirement ${JSON.stringify(name)}`;
    if (why) unmet.push({ name, why, scenarios });
  }
  return unmet;
}

export function scenarios() {
  return registered;
}

export class AssertionError extends Error {}

export function assert(condition, message) {
  if (!condition) throw new AssertionError(message);
}

export function assertEqual(actual, expected, what = 'value') {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new AssertionError(`${what}: expected ${e}, got ${a}`);
}

/** Deep equality that ignores object key order. */
export function assertDeepEqual(actual, expected, what = 'value') {
  const canon = (v) =>
    Array.isArray(v)
      ? v.map(canon)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
        : v;
  assertEqual(canon(actual), canon(expected), what);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with `{data, metadata}` of the first emission of `event` on a pusher-js emitter. */
export function onceWithMetadata(emitter, event, what = event, ms = STEP_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve) => {
      const handler = (data, metadata) => {
        emitter.unbind(event, handler);
        resolve({ data, metadata });
      };
      emitter.bind(event, handler);
    }),
    ms,
    what,
  );
}

/** Resolves with the data of the first emission of `event` on a pusher-js emitter (`bind`). */
export async function once(emitter, event, what = event, ms = STEP_TIMEOUT_MS) {
  return (await onceWithMetadata(emitter, event, what, ms)).data;
}

/** Collects the data of every emission of `event` into an array, for later assertions. */
export function collect(emitter, event) {
  const seen = [];
  emitter.bind(event, (data) => seen.push(data));
  return seen;
}

/**
 * Polls `check` until it returns a truthy value. An `AssertionError` thrown by `check` is final
 * and fails at once; other errors count as "not yet".
 */
export async function eventually(check, what, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      if (error instanceof AssertionError) throw error;
      last = error;
    }
    await sleep(50);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what} (last: ${last})`);
}

/** Asserts that `promise` rejects, and returns the error. */
export async function rejects(promise, what) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new AssertionError(`${what}: expected a rejection, got success`);
}

/**
 * The `--only` filters that match no registered scenario (a subset naming a scenario that was
 * renamed would otherwise shrink silently).
 */
export function unmatchedFilters(only = []) {
  return only.filter((part) => !registered.some((s) => s.name.includes(part)));
}

/**
 * Runs the scenarios in order; returns `{passed, failed}` (the caller prints the summary). `only`:
 * a list of substrings; when not empty, a scenario runs if its name contains any of them.
 * `except`: substrings of names that never run (the scenarios a transport does not apply to).
 */
export async function runAll(ctx, { only = [], except = [], log }) {
  let passed = 0;
  let failed = 0;
  for (const s of registered) {
    if (!selected(s, only, except)) continue;
    const missing = s.needs.find((need) => !NEEDS[need].available(ctx.target));
    if (missing) {
      // Against a server we did not start, a restart or its store is not ours: say so, count nothing.
      console.log(`skip - ${s.name}: ${NEEDS[missing].why}`);
      continue;
    }
    const started = Date.now();
    try {
      await withTimeout(s.run(ctx), s.timeoutMs, `scenario "${s.name}"`);
      passed += 1;
      console.log(`ok - ${s.name} (${Date.now() - started} ms)`);
    } catch (error) {
      failed += 1;
      const message = (error && (error.stack || error.message)) || String(error);
      console.log(`not ok - ${s.name}: ${String(message).split('\n')[0]}`);
      if (log) log(message);
    } finally {
      await ctx.cleanup();
    }
  }
  return { passed, failed };
}

// --- Generic helpers used by the Node and Echo scenarios ---

let uniqueCounter = 0;

/** A name no other scenario of this run uses: `PREFIX-<base36 time>-<n>` (valid channel/user id). */
export function unique(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${Date.now().toString(36)}-${uniqueCounter}`;
}

/**
 * Collects the raw protocol frames a pusher-js connection receives (`{event, channel, data,
 * user_id}`, data already JSON-decoded by pusher-js), optionally only those `keep` accepts.
 * Unlike a channel binding, this also sees frames for channels pusher-js does not know (or no
 * longer knows: after `unsubscribe` it drops the channel and ignores its frames), so it is what
 * "nothing arrived" assertions must look at.
 */
export function rawFrames(connection, keep = () => true) {
  const seen = [];
  connection.bind('message', (frame) => {
    if (keep(frame)) seen.push(frame);
  });
  return seen;
}

/** Resolves when a pusher-js connection is in `state` (at once if it already is). */
export function reachState(connection, state, ms = STEP_TIMEOUT_MS) {
  if (connection.state === state) return Promise.resolve();
  return withTimeout(
    new Promise((resolve) => {
      const handler = ({ current }) => {
        if (current !== state) return;
        connection.unbind('state_change', handler);
        resolve();
      };
      connection.bind('state_change', handler);
    }),
    ms,
    `the connection to become ${state} (it is ${connection.state})`,
  );
}

/**
 * Runs a server SDK's driver script, `BINARY SCRIPT OP ARGS_JSON` (one SDK call per process), and
 * resolves with the JSON it prints. `env` replaces the environment when given; with
 * `jsonOnFailure`, a failing exit that still printed its answer resolves with it (a driver that
 * reports the SDK's exception as JSON and exits non-zero).
 */
export function runSdkDriver(binary, script, op, args, { env, jsonOnFailure = false } = {}) {
  const what = `${path.basename(binary)} ${op}`;
  return withTimeout(
    new Promise((resolve, reject) => {
      const options = { env, timeout: STEP_TIMEOUT_MS };
      execFile(binary, [script, op, JSON.stringify(args)], options, (error, stdout, stderr) => {
        if (error && !(jsonOnFailure && stdout)) {
          return reject(new Error(`${what} failed: ${stderr || error.message}`));
        }
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(new Error(`${what} printed no JSON: ${stdout} ${stderr}`));
        }
      });
    }),
    STEP_TIMEOUT_MS,
    what,
  );
}
