// The scenario context: official clients configured for the target, cleaned up after each
// scenario. pusher-js is the Node build (`pusher-js`), the backend is pusher-http-node (`pusher`);
// the auth callbacks sign with the SDK's own authorizeChannel / authenticateUser, as a customer's
// backend would.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

import { once, eventually, unique, runSdkDriver, withTimeout, STEP_TIMEOUT_MS } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SUITE_DIR = path.resolve(here, '..');

/** A 32-byte master key for encrypted channels, base64 (any value works: only the SDK uses it). */
export const ENCRYPTION_MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

/** How long cleanup waits for the scenario's clients to report `disconnected`. */
const CLEANUP_WAIT_MS = 3_000;

/** The suite's Python (the venv with pusher-http-python), or $HERALD_COMPAT_PYTHON. */
export function pythonBinary() {
  return process.env.HERALD_COMPAT_PYTHON ?? path.join(SUITE_DIR, '.venv', 'bin', 'python');
}

/** `py/ops.py`'s `config`: pusher-http-python configured for the target. */
export function pythonConfig(target) {
  return {
    app_id: target.appId,
    key: target.key,
    secret: target.secret,
    host: target.host,
    port: target.port,
    ssl: Boolean(target.tls),
  };
}

/**
 * `transport`: one of pusher-js's HTTP fallbacks (`xhr_streaming`, `xhr_polling`) to limit every
 * client to, with `httpHost` / `httpPort` pointing at the target; unset: WebSocket only.
 */
export function makeContext(target, { transport } = {}) {
  const fallback = transport
    ? {
        httpHost: target.host,
        httpPort: target.port,
        httpsPort: target.port,
        enabledTransports: [transport],
      }
    : {};
  const clients = [];
  const disposers = [];
  // The public channel each client uses for `ctx.flush`, subscribed on first use.
  const flushChannels = new WeakMap();

  const ctx = {
    target,

    /** The HTTP fallback every client is limited to, or null (WebSocket). */
    transport: transport ?? null,

    /** pusher-http-node configured for the target. */
    backend(overrides = {}) {
      return new PusherServer({
        appId: target.appId,
        key: target.key,
        secret: target.secret,
        host: target.host,
        port: String(target.port),
        useTLS: Boolean(target.tls),
        encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY,
        ...overrides,
      });
    },

    /**
     * A pusher-js (Node build) client. `presence` ({user_id, user_info}) is what the auth
     * callback puts in presence channel_data; `user` ({id, ...}) is the signin user_data.
     */
    client({ presence, user, authorize = true, key = target.key, ...options } = {}) {
      const backend = ctx.backend();
      const client = new PusherClient(key, {
        cluster: 'mt1',
        wsHost: target.host,
        wsPort: target.port,
        wssPort: target.port,
        forceTLS: Boolean(target.tls),
        enabledTransports: ['ws', 'wss'],
        channelAuthorization: {
          customHandler: ({ socketId, channelName }, callback) => {
            if (!authorize) return callback(new Error('refused by the test backend'), null);
            try {
              const data = channelName.startsWith('presence-') ? presence : undefined;
              callback(null, backend.authorizeChannel(socketId, channelName, data));
            } catch (error) {
              callback(error, null);
            }
          },
        },
        userAuthentication: {
          customHandler: ({ socketId }, callback) => {
            try {
              callback(null, backend.authenticateUser(socketId, user));
            } catch (error) {
              callback(error, null);
            }
          },
        },
        ...options,
        ...fallback,
      });
      clients.push(client);
      return client;
    },

    /**
     * Registers a pusher-js instance the suite did not create (laravel-echo building its own) so
     * that cleanup disconnects it and waits for it like the others. Returns it.
     */
    adopt(client) {
      if (!clients.includes(client)) clients.push(client);
      return client;
    },

    /** A client that has reached the `connected` state. */
    async connected(options) {
      const client = ctx.client(options);
      if (client.connection.state !== 'connected') {
        await once(client.connection, 'connected', 'pusher-js to connect');
      }
      return client;
    },

    /** Subscribes and waits for pusher:subscription_succeeded; returns the channel. */
    async subscribed(client, name) {
      const channel = client.subscribe(name);
      if (!channel.subscribed) {
        await once(channel, 'pusher:subscription_succeeded', `subscription to ${name}`);
      }
      return channel;
    },

    /** GET /channels/NAME?info=subscription_count through pusher-http-node: the count. */
    async subscriptionCount(name) {
      const response = await ctx.backend().get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
      const body = await response.json();
      if (!Number.isInteger(body.subscription_count)) {
        throw new Error(`no subscription_count for ${name}: ${JSON.stringify(body)}`);
      }
      return body.subscription_count;
    },

    /**
     * Waits until GET /channels/NAME reports `occupied: false` for every name: for a scenario that
     * depends on earlier subscribers (disconnected, unsubscribed) being gone from the server.
     */
    async vacated(names, ms = STEP_TIMEOUT_MS) {
      const backend = ctx.backend();
      for (const name of [names].flat()) {
        await eventually(async () => {
          const body = await (await backend.get({ path: `/channels/${name}` })).json();
          return body.occupied === false;
        }, `${name} to be vacated (GET /channels/${name} occupied: false)`, ms);
      }
    },

    /**
     * Returns once every frame the server queued for `client`'s socket before this call has been
     * received: the client is subscribed (on first use) to a public channel of its own, an event
     * carrying a fresh marker is triggered there with pusher-http-node, and the call resolves when
     * that frame arrives. Frames on one WebSocket arrive in the order the server sent them, so a
     * "nothing else arrived" assertion made after this, about something the server did before
     * the trigger, needs no fixed sleep.
     */
    async flush(client, what = 'the marker event') {
      let name = flushChannels.get(client);
      if (!name) {
        name = unique('compat-flush');
        flushChannels.set(client, name);
        await ctx.subscribed(client, name);
      }
      const marker = unique('marker');
      let handler;
      const arrived = new Promise((resolve) => {
        handler = (frame) => {
          if (frame.channel === name && frame.event === 'flush' && frame.data?.marker === marker) resolve();
        };
        client.connection.bind('message', handler);
      });
      try {
        await ctx.backend().trigger(name, 'flush', { marker });
        await withTimeout(arrived, STEP_TIMEOUT_MS, `${what} on ${name}`);
      } finally {
        client.connection.unbind('message', handler);
      }
    },

    /** Runs pusher-http-python (in the suite's venv): `python py/ops.py OP ARGS_JSON`. */
    python(op, args = {}) {
      const python = pythonBinary();
      const config = pythonConfig(target);
      return runSdkDriver(python, path.join(SUITE_DIR, 'py', 'ops.py'), op, { config, ...args });
    },

    /** Registers something to undo after the scenario. */
    defer(dispose) {
      disposers.push(dispose);
    },

    async cleanup() {
      const closing = clients.splice(0);
      for (const client of closing) {
        try {
          client.disconnect();
        } catch {
          // Already gone.
        }
      }
      // pusher-js reports `disconnected` once it has closed its socket; wait (bounded) for every
      // client so that none is still talking to the server when the next scenario starts.
      try {
        await eventually(
          () => closing.every((client) => client.connection.state === 'disconnected'),
          'the clients to be disconnected',
          CLEANUP_WAIT_MS,
        );
      } catch (error) {
        const states = closing.map((client) => client.connection.state).filter((s) => s !== 'disconnected');
        console.error(`# cleanup: ${error.message}; states still open: ${JSON.stringify(states)}`);
      }
      for (const dispose of disposers.splice(0).reverse()) {
        try {
          await dispose();
        } catch {
          // Best effort.
        }
      }
    },
  };
  return ctx;
}
