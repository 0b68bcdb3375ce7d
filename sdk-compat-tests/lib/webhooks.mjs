// A local webhook receiver that plays the customer's backend: a Node `http` server on 127.0.0.1
// that accepts a request (200) only when BOTH official server SDKs accept it, pusher-http-node's
// `pusher.webhook({headers, rawBody}).isValid()` and pusher-http-python's
// `Pusher.validate_webhook(key, signature, body)`, and answers 401 otherwise, recording why.
// Accepted events are the SDK's own reading of the body (`getEvents()`). Nothing here knows Herald:
// the endpoint is registered with the herald CLI on the store of the server the suite started.

import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';

import { AssertionError, eventually, unique, withTimeout, STEP_TIMEOUT_MS } from './harness.mjs';
import { SUITE_DIR, pythonBinary, pythonConfig } from './clients.mjs';

/** The seven webhook event types (contract section 6). */
export const WEBHOOK_EVENTS = [
  'channel_occupied',
  'channel_vacated',
  'member_added',
  'member_removed',
  'client_event',
  'cache_miss',
  'subscription_count',
];

/** How long a CLI change may take to reach the running server (2 s documented), with margin. */
const ACTIVATION_MS = 15_000;

/** How often the activation probe occupies a fresh channel. */
const PROBE_INTERVAL_MS = 250;

/**
 * One long-lived `py/ops.py serve` process: JSON lines in, one JSON line out per request, matched
 * by id. Started from the suite's venv, so the validator is the pinned pusher-http-python.
 */
class PythonSdk {
  constructor(target) {
    this.pending = new Map();
    this.nextId = 0;
    this.stderr = [];
    this.child = spawn(
      pythonBinary(),
      [path.join(SUITE_DIR, 'py', 'ops.py'), 'serve', JSON.stringify({ config: pythonConfig(target) })],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => resolve({ code, signal }));
      this.child.on('error', (error) => resolve({ error }));
    });
    this.exited.then((status) => {
      const why = `pusher-http-python (ops.py serve) exited: ${JSON.stringify(status)} ${this.stderr.join(' ')}`;
      for (const { reject } of this.pending.values()) reject(new Error(why));
      this.pending.clear();
      this.gone = why;
    });
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let answer;
      try {
        answer = JSON.parse(line);
      } catch {
        this.stderr.push(`[stdout] ${line}`);
        return;
      }
      const waiter = this.pending.get(answer.id);
      if (!waiter) return;
      this.pending.delete(answer.id);
      waiter.resolve(answer);
    });
    readline.createInterface({ input: this.child.stderr }).on('line', (line) => this.stderr.push(line));
    // A write to a dead process must not crash the suite; the exit handler reports it.
    this.child.stdin.on('error', () => {});
  }

  /** Runs one ops.py op in the long-lived process; resolves with its JSON answer. */
  call(op, args) {
    if (this.gone) return Promise.reject(new Error(this.gone));
    const id = ++this.nextId;
    const answer = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.child.stdin.write(`${JSON.stringify({ id, op, args })}\n`);
    return withTimeout(answer, STEP_TIMEOUT_MS, `pusher-http-python ${op}`).finally(() => this.pending.delete(id));
  }

  async close() {
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** `[[name, value], ...]` from Node's flat `rawHeaders`, names as they were sent. */
function headerPairs(raw) {
  const pairs = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i], raw[i + 1]]);
  return pairs;
}

export class WebhookReceiver {
  /**
   * @param target  the server (its app key and secret configure both SDKs)
   * @param backend  pusher-http-node configured for the target (`ctx.backend()`)
   */
  constructor(target, backend) {
    this.target = target;
    this.backend = backend;
    /**
     * Every request, in arrival order: `{seq, receivedAt, method, path, headers (lower-case
     * names), rawHeaders ([name, value] as sent), rawBody, status (null while validating),
     * accepted, node, python, reason, timeMs, events}`.
     */
    this.requests = [];
    /** Accepted events in arrival order: the SDK's event object plus `request` (its record). */
    this.events = [];
    this.python = new PythonSdk(target);
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`receiver error: ${error.message}`);
      });
    });
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = this.server.address();
    this.url = `http://127.0.0.1:${port}/pusher/webhooks/${unique('hook')}`;
    return this;
  }

  /**
   * What both SDKs say about one request: `{accepted, node, python, reason, data}`. `data` is
   * pusher-http-node's `getData()` when it accepted. Used by the HTTP handler and directly by the
   * scenario that checks the wiring with a tampered copy.
   */
  async validate({ method = 'POST', headers, rawBody }) {
    const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    const webhook = this.backend.webhook({ headers: lower, rawBody });
    const node = webhook.isValid();
    let python = false;
    let pythonWhy = 'validate_webhook returned None';
    try {
      const answer = await this.python.call('validate_webhook', {
        key: lower['x-pusher-key'] ?? '',
        signature: lower['x-pusher-signature'] ?? '',
        body: rawBody,
      });
      python = answer.ok && answer.result !== null && typeof answer.result === 'object';
      if (!answer.ok) pythonWhy = `validate_webhook raised ${answer.error}: ${answer.message}`;
    } catch (error) {
      pythonWhy = `no answer: ${error.message}`;
    }
    const reasons = [];
    if (method !== 'POST') reasons.push(`method ${method}, not POST`);
    if (!node) {
      reasons.push(
        `pusher-http-node isValid() is false (content-type ${JSON.stringify(lower['content-type'])}, ` +
          `x-pusher-key ${JSON.stringify(lower['x-pusher-key'])}, body is JSON: ${webhook.isBodyValid()})`,
      );
    }
    if (!python) reasons.push(`pusher-http-python ${pythonWhy}`);
    const accepted = reasons.length === 0;
    return { accepted, node, python, reason: accepted ? null : reasons.join('; '), data: node ? webhook.getData() : null };
  }

  async handle(req, res) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const record = {
      seq: this.requests.length + 1,
      receivedAt: Date.now(),
      method: req.method,
      path: req.url,
      headers: { ...req.headers },
      rawHeaders: headerPairs(req.rawHeaders),
      rawBody: Buffer.concat(chunks).toString('utf8'),
      status: null,
    };
    this.requests.push(record);
    const { data, ...verdict } = await this.validate({ method: req.method, headers: req.headers, rawBody: record.rawBody });
    Object.assign(record, verdict);
    if (verdict.accepted) {
      // The events as the SDK hands them to an application.
      const webhook = this.backend.webhook({ headers: req.headers, rawBody: record.rawBody });
      const events = webhook.getEvents();
      record.timeMs = data.time_ms;
      record.events = Array.isArray(events) ? events : [];
      if (!Array.isArray(events)) record.problem = `events is not an array: ${JSON.stringify(events)}`;
      for (const event of record.events) this.events.push({ ...event, request: record });
    }
    record.status = verdict.accepted ? 200 : 401;
    res.writeHead(record.status, { 'content-type': 'text/plain' });
    res.end(verdict.accepted ? 'ok' : verdict.reason);
  }

  get rejected() {
    return this.requests.filter((r) => r.status !== null && !r.accepted);
  }

  /** Accepted events about `channel` (of type `name` when given), in arrival order. */
  eventsFor(channel, name) {
    return this.events.filter((e) => e.channel === channel && (name === undefined || e.name === name));
  }

  /** The event as it was on the wire (without the receiver's `request` back-reference). */
  static bare(event) {
    const { request, ...rest } = event;
    return rest;
  }

  /** Waits until `count` accepted events of type `name` about `channel` arrived; returns them. */
  async waitFor(channel, name, count = 1, ms = STEP_TIMEOUT_MS) {
    return eventually(
      () => {
        const seen = this.eventsFor(channel, name);
        if (seen.length > count) {
          throw new AssertionError(`${name} for ${channel}: expected ${count}, got ${seen.length}: ${JSON.stringify(seen.map(WebhookReceiver.bare))}`);
        }
        return seen.length === count ? seen : null;
      },
      `${count} ${name} webhook event(s) for ${channel}`,
      ms,
    );
  }

  /** Fails unless every request so far was accepted by both SDKs and carried an events array. */
  assertNoRejections() {
    const rejected = this.rejected;
    if (rejected.length > 0) {
      throw new AssertionError(
        `${rejected.length} webhook request(s) rejected by the SDK validators, first: ${rejected[0].reason} ` +
          `(headers ${JSON.stringify(rejected[0].rawHeaders)}, body ${rejected[0].rawBody.slice(0, 300)})`,
      );
    }
    const malformed = this.requests.find((r) => r.problem);
    if (malformed) throw new AssertionError(`webhook request ${malformed.seq}: ${malformed.problem}`);
  }

  async close() {
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(() => resolve()));
    await this.python.close();
  }
}

/**
 * A receiver registered as a webhook endpoint of the target's app with the herald CLI
 * (`herald webhooks add --app ID --url URL --events ... --json`), active when this resolves:
 * fresh public channels are occupied until the receiver gets a `channel_occupied` for one of them
 * (the CLI change reaches the running server within 2 seconds; no fixed sleep decides it). The
 * endpoint is removed and the receiver closed after the scenario. Against a cluster
 * (`target.nodeCount` > 1) that holds for one probe connection per node. Returns the receiver, with
 * `registration` (the CLI's JSON).
 */
export async function webhookEndpoint(ctx, { events = WEBHOOK_EVENTS, headers = [] } = {}) {
  if (!events.includes('channel_occupied')) throw new Error('the activation probe needs channel_occupied');
  const receiver = await new WebhookReceiver(ctx.target, ctx.backend()).start();
  ctx.defer(() => receiver.close());
  const args = ['webhooks', 'add', '--app', ctx.target.appId, '--url', receiver.url, '--events', events.join(',')];
  for (const header of headers) args.push('--header', header);
  args.push('--json');
  receiver.registration = await ctx.target.cli(args);
  // Disposers run in reverse order: the endpoint is removed before the receiver closes.
  ctx.defer(() => ctx.target.cli(['webhooks', 'remove', '--app', ctx.target.appId, String(receiver.registration.id)]));

  // Behind a load balancer (the --cluster target) each node picks the change up on its own: one
  // probe connection per node, opened one after the other so round robin spreads them over the
  // nodes, and each must see its own probe channel reported.
  const probeConnections = [];
  for (let i = 0; i < (ctx.target.nodeCount ?? 1); i += 1) probeConnections.push(await ctx.connected());
  const probes = new Set();
  const pending = probeConnections.map((connection) => ({ connection, channels: new Set() }));
  let lastProbe = 0;
  const reported = (channels) =>
    receiver.events.some((e) => e.name === 'channel_occupied' && channels.has(e.channel));
  await eventually(
    async () => {
      // A request the SDKs refuse will not become an event: say why at once.
      receiver.assertNoRejections();
      if (pending.every((p) => reported(p.channels))) return true;
      if (Date.now() - lastProbe >= PROBE_INTERVAL_MS) {
        lastProbe = Date.now();
        for (const p of pending.filter((p) => !reported(p.channels))) {
          const name = unique('compat-wh-probe');
          probes.add(name);
          p.channels.add(name);
          await ctx.subscribed(p.connection, name);
        }
      }
      return pending.every((p) => reported(p.channels));
    },
    `the webhook endpoint to be active (a channel_occupied for a probe channel of each of ${pending.length} ` +
      `probe connection(s) at ${receiver.url})`,
    ACTIVATION_MS,
  );
  // Probe channels are not what the scenario is about; their later events are ignored by name.
  for (const connection of probeConnections) connection.disconnect();
  receiver.probeChannels = probes;
  return receiver;
}
