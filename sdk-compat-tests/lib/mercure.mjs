// The Mercure side of the suite: a publisher as a customer's backend would write one (a JWT minted
// with `jose`, a form POSTed with Node's fetch), the browser's own EventSource recorded in a page,
// and a TCP-level proxy that can cut the page's streams and hold its reconnects.
//
// Nothing here knows Herald's code: only the Mercure protocol (hub URL, form fields, the JWT's
// `mercure` claim) and what EventSource observed.

import http from 'node:http';

import { SignJWT } from 'jose';

import { STEP_TIMEOUT_MS, eventually } from './harness.mjs';

/** The app's hub URL, as Herald documents it (`/apps/{app_id}/.well-known/mercure`). */
export function hubUrl(target, base = null) {
  const origin = base ?? `${target.tls ? 'https' : 'http'}://${target.host}:${target.port}`;
  return `${origin}/apps/${target.appId}/.well-known/mercure`;
}

/** A draft-07 Mercure JWT (HS256 with the app's secret) granting `rights` ({publish, subscribe}). */
export function mintToken(target, rights, { expiresIn = '10m' } = {}) {
  return new SignJWT({ mercure: rights })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(target.secret));
}

/** POSTs one update; resolves with the id the hub answers. `fields`: topic, data, id, type, retry, private. */
export async function publish(target, token, fields) {
  const form = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) {
    for (const one of Array.isArray(value) ? value : [value]) form.append(name, String(one));
  }
  const response = await fetch(hubUrl(target), {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: form,
  });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`publish ${JSON.stringify(fields)}: HTTP ${response.status} ${body}`);
  return body;
}

/**
 * Installs `window.mercure` in a page: `open(name, url, types)` makes the browser's own EventSource
 * (no library), recording every message (`type`, `lastEventId`, `data`), `open` and `error` (with
 * the readyState then) under `name`; `close(name)`; `log(name)`.
 */
export async function installEventSource(page) {
  await page.evaluate(() => {
    if (window.mercure) return;
    const sources = {};
    window.mercure = {
      open(name, url, types) {
        const source = new EventSource(url);
        const log = { messages: [], opens: 0, errors: [] };
        sources[name] = { source, log };
        const record = (event) => log.messages.push({ type: event.type, id: event.lastEventId, data: event.data });
        source.addEventListener('message', record);
        for (const type of types ?? []) source.addEventListener(type, record);
        source.addEventListener('open', () => { log.opens += 1; });
        source.addEventListener('error', () => log.errors.push(source.readyState));
      },
      close(name) {
        sources[name].source.close();
      },
      log(name) {
        const { source, log } = sources[name];
        return { ...log, readyState: source.readyState };
      },
    };
  });
}

/** What the page's EventSource `name` recorded (see installEventSource). */
export function eventSourceLog(page, name) {
  return page.evaluate((n) => window.mercure.log(n), name);
}

/** Polls the page until `check(log)` holds for EventSource `name`; resolves with that log. */
export async function untilLog(page, name, check, what, ms = STEP_TIMEOUT_MS) {
  let last;
  try {
    await eventually(async () => {
      last = await eventSourceLog(page, name);
      return check(last);
    }, what, ms);
  } catch {
    throw page.withLog(new Error(`timed out after ${ms / 1000} s waiting for ${what}; EventSource ${name}: ${JSON.stringify(last)}`));
  }
  return last;
}

/**
 * An HTTP proxy in front of the target, on 127.0.0.1 and a free port, for the page's streams.
 * `cut()` destroys every connection it carries (the browser sees the network drop, as behind a
 * flaky link) and holds the requests that arrive next until `release()`. It records each request's
 * URL and `Last-Event-ID` header, and the status and `Last-Event-ID` of each response.
 */
export class CuttingProxy {
  constructor(target) {
    this.target = target;
    this.requests = [];
    this.held = [];
    this.holding = false;
    this.sockets = new Set();
    this.server = http.createServer((request, response) => {
      const entry = { url: request.url, lastEventId: request.headers['last-event-id'] ?? null, status: null, answeredLastEventId: null };
      this.requests.push(entry);
      const forward = () => this.forward(request, response, entry);
      if (this.holding) this.held.push(forward);
      else forward();
    });
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  forward(request, response, entry) {
    const upstream = http.request(
      { host: this.target.host, port: this.target.port, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        entry.status = answer.statusCode;
        entry.answeredLastEventId = answer.headers['last-event-id'] ?? null;
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.on('error', () => response.destroy());
    response.on('close', () => upstream.destroy());
    request.pipe(upstream);
  }

  /** Drops every connection now and holds new requests until release(). */
  cut() {
    this.holding = true;
    for (const socket of this.sockets) socket.destroy();
  }

  release() {
    this.holding = false;
    for (const forward of this.held.splice(0)) forward();
  }

  async stop() {
    this.holding = false;
    this.held = [];
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}
