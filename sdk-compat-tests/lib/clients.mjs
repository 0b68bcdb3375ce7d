// The scenario context: official clients configured for the target, cleaned up after each
// scenario. pusher-js is the Node build (`pusher-js`), the backend is pusher-http-node (`pusher`);
// the auth callbacks sign with the SDK's own authorizeChannel / authenticateUser, as a customer's
// backend would.

import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

import { once, withTimeout, STEP_TIMEOUT_MS } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SUITE_DIR = path.resolve(here, '..');

/** A 32-byte master key for encrypted channels, base64 (any value works: only the SDK uses it). */
export const ENCRYPTION_MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

export function makeContext(target) {
  const clients = [];
  const disposers = [];

  const ctx = {
    target,

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
      });
      clients.push(client);
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

    /** Runs pusher-http-python (in the suite's venv): `python py/ops.py OP ARGS_JSON`. */
    python(op, args = {}) {
      const python = process.env.HERALD_COMPAT_PYTHON ?? path.join(SUITE_DIR, '.venv', 'bin', 'python');
      const config = {
        app_id: target.appId,
        key: target.key,
        secret: target.secret,
        host: target.host,
        port: target.port,
        ssl: Boolean(target.tls),
      };
      return withTimeout(
        new Promise((resolve, reject) => {
          execFile(
            python,
            [path.join(SUITE_DIR, 'py', 'ops.py'), op, JSON.stringify({ config, ...args })],
            { timeout: STEP_TIMEOUT_MS },
            (error, stdout, stderr) => {
              if (error) return reject(new Error(`python ${op} failed: ${stderr || error.message}`));
              try {
                resolve(JSON.parse(stdout));
              } catch {
                reject(new Error(`python ${op} printed no JSON: ${stdout} ${stderr}`));
              }
            },
          );
        }),
        STEP_TIMEOUT_MS,
        `python ${op}`,
      );
    },

    /** Registers something to undo after the scenario. */
    defer(dispose) {
      disposers.push(dispose);
    },

    async cleanup() {
      for (const client of clients.splice(0)) {
        try {
          client.disconnect();
        } catch {
          // Already gone.
        }
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
