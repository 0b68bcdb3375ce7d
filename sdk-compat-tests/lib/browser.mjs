// The browser side of the suite: a small local web app that plays a customer's backend (it serves
// browser/index.html, the unmodified pusher-js / laravel-echo browser builds straight from
// node_modules, and the auth endpoints pusher-js calls, signed with pusher-http-node), and one
// headless Chromium (playwright-core) shared by every browser scenario of a run.
//
// Nothing here knows Herald: the pages reach the target only through pusher-js, the web app only
// through pusher-http-node.

import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { SUITE_DIR } from './clients.mjs';
import { AssertionError, STEP_TIMEOUT_MS, eventually, withTimeout } from './harness.mjs';

export const CHROMIUM = process.env.HERALD_COMPAT_CHROMIUM ?? '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The scripts the page may load, by the name it asks for: unmodified files from node_modules. */
const VENDOR = {
  'pusher.min.js': 'pusher-js/dist/web/pusher.min.js',
  'pusher-with-encryption.min.js': 'pusher-js/dist/web/pusher-with-encryption.min.js',
  'echo.iife.js': 'laravel-echo/dist/echo.iife.js',
};

/** Channel names containing this are refused by /pusher/auth with 403 (user ids: /pusher/user-auth). */
export const REFUSED = 'forbidden';
/** Channel names containing this are signed with a wrong secret: Herald must refuse the subscribe. */
export const BAD_SIGNATURE = 'badsig';

function parseJsonParam(value, what) {
  if (value === null || value === '') return undefined;
  try {
    return JSON.parse(value);
  } catch {
    throw new Error(`query parameter ${what} is not JSON: ${value}`);
  }
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

/**
 * The customer's backend, on 127.0.0.1 and a free port.
 *   GET  /                    browser/index.html (`?build=pusher.min.js|pusher-with-encryption.min.js&echo=1`)
 *   GET  /vendor/NAME         the unmodified builds listed in VENDOR
 *   POST /pusher/auth         form `socket_id`, `channel_name` -> authorizeChannel(...); presence
 *                             channel_data from the `presence` query parameter (JSON)
 *   POST /pusher/user-auth    form `socket_id` -> authenticateUser(socket_id, `user` query param)
 * Every auth request is logged in `requests` ({path, socketId, channel, userId, status, body}).
 */
export class WebApp {
  constructor(backend) {
    this.backend = backend;
    this.requests = [];
    this.server = http.createServer((request, response) => {
      this.handle(request, response).catch((error) => {
        if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
        response.end(String(error && error.message));
      });
    });
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.url = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
    this.server.closeAllConnections?.();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }

  /**
   * Auth requests seen for a channel, or `user-auth` requests when channel is null (only those
   * signing in `userId` when given: the web app serves every page of the run).
   */
  requestsFor(channel, userId) {
    return this.requests.filter((r) =>
      channel === null
        ? r.path === '/pusher/user-auth' && (userId === undefined || r.userId === userId)
        : r.channel === channel,
    );
  }

  async handle(request, response) {
    const url = new URL(request.url, 'http://localhost');
    const send = (status, type, body) => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      response.end(body);
    };
    const json = (status, value) => send(status, 'application/json', JSON.stringify(value));

    if (request.method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) {
      return send(200, 'text/html; charset=utf-8', await fs.readFile(path.join(SUITE_DIR, 'browser', 'index.html')));
    }
    if (request.method === 'GET' && url.pathname.startsWith('/vendor/')) {
      const file = VENDOR[url.pathname.slice('/vendor/'.length)];
      if (!file) return send(404, 'text/plain', 'no such vendor script');
      return send(200, 'application/javascript; charset=utf-8', await fs.readFile(path.join(SUITE_DIR, 'node_modules', file)));
    }
    if (request.method === 'GET' && url.pathname === '/favicon.ico') return send(204, 'image/x-icon', '');

    if (request.method === 'POST' && (url.pathname === '/pusher/auth' || url.pathname === '/pusher/user-auth')) {
      const form = new URLSearchParams(await readBody(request));
      const socketId = form.get('socket_id');
      const channel = form.get('channel_name');
      const entry = { path: url.pathname, socketId, channel, contentType: request.headers['content-type'] };
      if (url.pathname === '/pusher/user-auth') {
        try {
          entry.userId = parseJsonParam(url.searchParams.get('user'), 'user')?.id ?? null;
        } catch {
          entry.userId = null;
        }
      }
      this.requests.push(entry);
      const reply = (status, value) => {
        entry.status = status;
        entry.body = value;
        json(status, value);
      };
      try {
        if (url.pathname === '/pusher/auth') {
          if (channel.includes(REFUSED)) return reply(403, { error: 'this user may not join that channel' });
          const presence = channel.startsWith('presence-')
            ? parseJsonParam(url.searchParams.get('presence'), 'presence')
            : undefined;
          const backend = channel.includes(BAD_SIGNATURE)
            ? this.backend({ secret: 'not-the-app-secret-0123456789' })
            : this.backend();
          return reply(200, backend.authorizeChannel(socketId, channel, presence));
        }
        const user = parseJsonParam(url.searchParams.get('user'), 'user');
        if (!user || String(user.id).includes(REFUSED)) return reply(403, { error: 'not signed in' });
        return reply(200, this.backend().authenticateUser(socketId, user));
      } catch (error) {
        return reply(400, { error: error.message });
      }
    }
    return send(404, 'text/plain', 'not found');
  }
}

// One Chromium and one web app per suite run, started by the first browser scenario.
let shared = null;

async function launch(ctx) {
  const app = new WebApp((overrides) => ctx.backend(overrides));
  await app.start();
  let browser;
  try {
    browser = await withTimeout(
      chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        // Leave the suite's signal handling alone: playwright's handlers would keep node alive
        // on SIGTERM/SIGHUP (they only close the browser), e.g. under `timeout`.
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
      }),
      30_000,
      `Chromium (${CHROMIUM}) to start`,
    );
  } catch (error) {
    await app.stop();
    throw error;
  }
  // Chromium must never outlive the suite. run.mjs ends with process.exit(), after which nothing
  // asynchronous runs: playwright-core's own 'exit' hook then SIGKILLs the browser's process group
  // synchronously. When a signal kills node instead, Chromium quits by itself as its control pipe
  // to this process closes (checked with SIGTERM and SIGKILL: no browser process is left).
  return { app, browser };
}

/** Closes the shared Chromium and web app (the next browser scenario would start new ones). */
export async function closeBrowser() {
  if (!shared) return;
  const pending = shared;
  shared = null;
  const { app, browser } = await pending.catch(() => ({}));
  if (browser) await withTimeout(browser.close(), 10_000, 'Chromium to close').catch(() => {});
  if (app) await app.stop().catch(() => {});
}

async function sharedBrowser(ctx) {
  if (!shared) {
    shared = launch(ctx);
    shared.catch(() => {
      shared = null;
    });
  }
  const current = await shared;
  if (!current.browser.isConnected()) {
    shared = null;
    return sharedBrowser(ctx);
  }
  return current;
}

/**
 * Opens index.html in a fresh browser context (own cookies and storage), closed after the
 * scenario. `build` is the pusher-js build the page loads; `echo: true` also loads laravel-echo;
 * `blockWebSocket: true` removes window.WebSocket before pusher-js loads.
 *
 * The page's connections are recorded as `sockets` (URLs) and `wire` (frames): a WebSocket as
 * Chromium reports it, an HTTP fallback session (contract 7.2) as the page's XMLHttpRequest
 * listeners report it (see browser/index.html), one entry in `sockets` per session.
 */
export async function openPage(ctx, { build = 'pusher.min.js', echo = false, blockWebSocket = false } = {}) {
  const { app, browser } = await sharedBrowser(ctx);
  const context = await browser.newContext();
  ctx.defer(() => context.close());
  const page = await context.newPage();
  const log = [];
  page.on('console', (message) => log.push(`[console.${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => log.push(`[pageerror] ${error.message}`));
  page.on('requestfailed', (request) => log.push(`[requestfailed] ${request.url()} ${request.failure()?.errorText}`));
  const sockets = [];
  const websockets = [];
  const wire = [];
  const lines = [];
  page.on('websocket', (socket) => {
    websockets.push(socket.url());
    const index = sockets.push(socket.url()) - 1;
    socket.on('framereceived', ({ payload }) => wire.push({ socket: index, direction: 'in', payload: String(payload) }));
    socket.on('framesent', ({ payload }) => wire.push({ socket: index, direction: 'out', payload: String(payload) }));
  });
  // The fallback sessions, reported by the page in the order it saw them.
  const sessions = new Map();
  await page.exposeFunction('heraldWire', (entry) => {
    if (entry.type === 'open') {
      if (!sessions.has(entry.session)) sessions.set(entry.session, sockets.push(entry.url) - 1);
      return;
    }
    const socket = sessions.get(entry.session);
    if (socket === undefined) return;
    if (entry.type === 'frame') wire.push({ socket, direction: entry.direction, payload: entry.payload });
    else lines.push({ socket, direction: entry.direction, line: entry.line, error: entry.error });
  });
  const query = new URLSearchParams({ build });
  if (echo) query.set('echo', '1');
  if (blockWebSocket) query.set('websocket', 'blocked');
  await page.goto(`${app.url}/?${query}`, { waitUntil: 'load', timeout: STEP_TIMEOUT_MS });
  const loaded = await page.evaluate(() => (window.harness ? window.harness.loaded() : { error: 'no window.harness' }));
  if (loaded.error) throw new Error(`the page could not load ${build}: ${loaded.error}`);
  return new BrowserPage(page, app, ctx, log, { sockets, websockets, wire, lines });
}

/**
 * A blank tab in a fresh browser context (own cookies), closed after the scenario: for pages the
 * target serves itself (the dashboard). Returns the playwright `page` and what it reported:
 * `log` (console messages, page errors, failed requests) and `failures` (page errors and HTTP
 * answers of 400 or more, with their URL), for scenarios to assert on.
 */
export async function openTab(ctx, { viewport = { width: 1280, height: 800 } } = {}) {
  const { browser } = await sharedBrowser(ctx);
  const context = await browser.newContext({ viewport });
  ctx.defer(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const log = [];
  const failures = [];
  page.on('console', (message) => log.push(`[console.${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => {
    log.push(`[pageerror] ${error.message}`);
    failures.push(`JavaScript error on ${page.url()}: ${error.message}`);
  });
  page.on('requestfailed', (request) => log.push(`[requestfailed] ${request.url()} ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    if (response.status() >= 400) failures.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
  });
  return { page, log, failures };
}

/**
 * A page holding one or more pusher-js clients, each under a test-chosen id. Everything read back
 * is what pusher-js in the page observed (recorded by browser/index.html).
 */
export class BrowserPage {
  constructor(page, app, ctx, log, { sockets, websockets, wire, lines }) {
    this.page = page;
    this.app = app;
    this.ctx = ctx;
    this.target = ctx.target;
    this.log = log;
    /**
     * The transports this page's clients are limited to unless a scenario says otherwise: the
     * run's `--transport` (an HTTP fallback), else WebSocket.
     */
    this.transports = ctx.transport ? [ctx.transport] : ['ws'];
    /** The transport list each client was created with (null: pusher-js's own choice). */
    this.limits = new Map();
    /**
     * URLs of the connections the page opened, in order: each WebSocket (seen by Chromium, not by
     * pusher-js) and each HTTP fallback session (the URL of its first receive request).
     */
    this.sockets = sockets;
    /** URLs of the WebSockets alone. */
    this.websockets = websockets;
    /**
     * Pusher messages as they went over the page's connections, {socket, direction, payload}:
     * WebSocket frames, and the messages in a fallback session's `a[...]` lines and `xhr_send`
     * bodies.
     */
    this.wire = wire;
    /** A fallback session's other lines: `o`, `h`, `c[...]` received, `[]` heartbeats sent. */
    this.lines = lines;
  }

  /** Incoming WebSocket frames parsed as JSON (the Pusher envelope), optionally one socket's only. */
  received(socket) {
    return this.wire
      .filter((f) => f.direction === 'in' && (socket === undefined || f.socket === socket))
      .map((f) => JSON.parse(f.payload));
  }

  /**
   * The index (in `sockets` / `wire`) of the connection that carries client `id`'s current
   * connection, found by the socket id in its pusher:connection_established frame.
   */
  async socketOf(id) {
    const socketId = await this.call('socketId', id);
    const index = this.wire.findIndex((f) => {
      if (f.direction !== 'in' || !f.payload.includes('pusher:connection_established')) return false;
      const frame = JSON.parse(f.payload);
      const data = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
      return data.socket_id === socketId;
    });
    if (index < 0) throw new Error(`no frame on the page's connections established socket ${socketId} of client ${id}`);
    return this.wire[index].socket;
  }

  /**
   * How the page's connections opened and closed, as the page recorded them (close code, reason):
   * WebSockets, and fallback sessions (`transport`, closed by a `c[code,"reason"]` line).
   */
  socketLog() {
    return this.call('socketLog');
  }

  /**
   * A fence on client `id`'s connection: triggers a fresh event on `channel` with pusher-http-node
   * and waits until pusher-js in the page emitted it and Chromium recorded its frame. Whatever the
   * server sent that connection before (an echo, a stray event, a member_removed) has then
   * arrived too, so an absence can be asserted without a fixed wait. The event is named
   * `fence-...` (the name, unlike the data, stays readable on encrypted channels); returns it.
   */
  fence(id, channel, ms = STEP_TIMEOUT_MS) {
    return this.fenceWith(id, channel, (backend, event) => backend.trigger(channel, event, { fence: true }), ms);
  }

  /** The same through the server-to-user channel: sendToUser(userId, 'fence-...') to a signed-in client. */
  fenceUser(id, userId, ms = STEP_TIMEOUT_MS) {
    return this.fenceWith(id, '#user', (backend, event) => backend.sendToUser(userId, event, { fence: true }), ms);
  }

  async fenceWith(id, recordedOn, send, ms) {
    const marker = uniqueName('fence');
    const socket = await this.socketOf(id);
    const response = await send(this.ctx.backend(), marker);
    if (response.status !== 200) throw new Error(`fence for client ${id}: status ${response.status}`);
    await this.until(
      async () => (await this.events(id, recordedOn, marker)).length > 0,
      `client ${id} to receive the fence event on ${recordedOn}`,
      ms,
    );
    // Chromium reports frames to playwright on its own path (and the page its fallback lines):
    // wait for this one too, so that every earlier frame of the socket is in `wire`.
    await this.until(
      () => this.wire.some((f) => f.socket === socket && f.direction === 'in' && f.payload.includes(`"${marker}"`)),
      `the fence frame on connection ${socket}`,
      ms,
    );
    return marker;
  }

  /**
   * Checks `check` repeatedly for `ms` and fails as soon as it returns false: for what must stay
   * true over a while (a terminated connection that must not come back).
   */
  async holds(check, what, ms) {
    const deadline = Date.now() + ms;
    for (;;) {
      const ok = await check();
      if (!ok) throw this.withLog(new AssertionError(`${what} (after ${ms - (deadline - Date.now())} ms)`));
      if (Date.now() >= deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  /** `call('subscribe', 'a', 'my-channel')` runs `window.harness.subscribe('a', 'my-channel')`. */
  call(method, ...args) {
    return this.page.evaluate(({ method, args }) => window.harness[method](...args), { method, args });
  }

  /**
   * Creates a pusher-js client in the page. `presence` is the channel_data the web app signs for
   * presence channels, `user` the signin user_data; `options` are merged into pusher-js's options.
   * `transports` is pusher-js's `enabledTransports` (null: none given, pusher-js chooses); the
   * page also sets `httpHost`/`httpPort` to the target, as the README's snippet does.
   */
  client(id, { presence, user, transports = this.transports, key = this.target.key, options = {} } = {}) {
    this.limits.set(id, transports);
    return this.call('create', id, {
      key,
      host: this.target.host,
      port: this.target.port,
      tls: Boolean(this.target.tls),
      transports,
      presence,
      user,
      options,
    });
  }

  /** A client that has reached `connected`; returns its socket id. */
  async connected(id, settings) {
    await this.client(id, settings);
    await this.waitForState(id, 'connected');
    return this.call('socketId', id);
  }

  state(id) {
    return this.call('state', id);
  }

  async waitForState(id, state, ms = STEP_TIMEOUT_MS) {
    await this.until(async () => (await this.state(id)) === state, `client ${id} to be ${state}`, ms);
    // Limited to one transport, pusher-js has no other way in, but say it: a fallback run must
    // really run over the fallback. (Echo clients are created with the page's list.)
    const limit = this.limits.has(id) ? this.limits.get(id) : this.transports;
    if (state === 'connected' && limit && limit.length === 1) {
      const used = await this.call('transportOf', id);
      if (used !== limit[0]) throw new AssertionError(`client ${id} connected over ${used}, not ${limit[0]}`);
    }
  }

  /** The transport client `id` is connected with, as pusher-js reports it. */
  transportOf(id) {
    return this.call('transportOf', id);
  }

  subscribe(id, channel) {
    return this.call('subscribe', id, channel);
  }

  /** Subscribes and waits for pusher:subscription_succeeded (fails early on subscription_error). */
  async subscribed(id, channel, ms = STEP_TIMEOUT_MS) {
    const before = (await this.events(id, channel, 'pusher:subscription_succeeded')).length;
    await this.subscribe(id, channel);
    await this.until(
      async () => {
        const errors = await this.events(id, channel, 'pusher:subscription_error');
        if (errors.length > 0) {
          throw new AssertionError(`subscription to ${channel} failed in the page: ${JSON.stringify(errors[0].data)}`);
        }
        return (await this.events(id, channel, 'pusher:subscription_succeeded')).length > before;
      },
      `client ${id}'s subscription to ${channel}`,
      ms,
    );
  }

  /** Events recorded by pusher-js on a channel (`#user` for pusher.user, `#watchlist`). */
  events(id, channel, event) {
    return this.call('eventsFor', id, channel, event ?? null);
  }

  /** Raw frames received by the client's connection (`connection.bind('message')`). */
  frames(id, filter = {}) {
    return this.call('framesFor', id, filter);
  }

  /** Waits until `count` emissions of `event` were recorded on the channel; returns them all. */
  async waitForEvents(id, channel, event, { count = 1, ms = STEP_TIMEOUT_MS } = {}) {
    return this.until(
      async () => {
        const seen = await this.events(id, channel, event);
        return seen.length >= count ? seen : null;
      },
      `client ${id} to receive ${count} × ${event} on ${channel}`,
      ms,
    );
  }

  async waitForEvent(id, channel, event, ms) {
    return (await this.waitForEvents(id, channel, event, { ms }))[0];
  }

  /** Polls `check` in node (which may evaluate in the page); failures carry the page's log. */
  async until(check, what, ms = STEP_TIMEOUT_MS) {
    try {
      return await eventually(check, what, ms);
    } catch (error) {
      throw this.withLog(error);
    }
  }

  withLog(error) {
    const tail = this.log.slice(-5);
    if (tail.length > 0) error.message += ` [page log: ${tail.join(' | ')}]`;
    return error;
  }

  async close() {
    await this.page.close().catch(() => {});
  }
}

/**
 * GET /channels/NAME?info=subscription_count with pusher-http-node: how many connections the
 * server counts on the channel (0 when it is vacant).
 */
export async function subscriptionCount(ctx, channel) {
  const response = await ctx.backend().get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } });
  if (response.status !== 200) throw new Error(`GET /channels/${channel}: status ${response.status}`);
  const body = await response.json();
  return body.occupied === false ? 0 : body.subscription_count;
}

/** Polls the REST API until the server counts `count` connections on `channel`. */
export async function waitForSubscriptionCount(ctx, channel, count, ms = STEP_TIMEOUT_MS) {
  let last;
  try {
    await eventually(async () => {
      last = await subscriptionCount(ctx, channel);
      return last === count;
    }, 'the subscription count', ms);
  } catch {
    throw new Error(`timed out after ${ms / 1000} s waiting for the server to count ${count} subscriptions on ${channel} (REST; last: ${last})`);
  }
}

/** A channel or user name unique to this run (servers not started by the suite keep state). */
export function uniqueName(prefix) {
  uniqueName.counter = (uniqueName.counter ?? 0) + 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${uniqueName.counter}`;
}
