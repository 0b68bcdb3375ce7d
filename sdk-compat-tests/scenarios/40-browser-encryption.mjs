// pusher-with-encryption.min.js (unmodified) in headless Chromium: end-to-end encrypted channels.
// The page's /pusher/auth endpoint answers with pusher-http-node's authorizeChannel, which adds the
// shared_secret derived from the master key; the server only ever relays ciphertext.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

scenario('browser: pusher-with-encryption.min.js decrypts an event on a private-encrypted- channel', async (ctx) => {
  const channel = uniqueName('private-encrypted-browser-vault');
  const page = await openPage(ctx, { build: 'pusher-with-encryption.min.js' });
  await page.connected('a');
  assert(/[?&]version=8\.6\.0&/.test(page.sockets[0]), `connection URL ${page.sockets[0]}`);
  await page.subscribed('a', channel);
  const [auth] = page.app.requestsFor(channel);
  assert(auth && auth.status === 200 && typeof auth.body.shared_secret === 'string', `auth reply ${JSON.stringify(auth)}`);

  const secret = { card: '4111 1111 1111 1111', note: 'only the browser can read this' };
  const response = await ctx.backend().trigger(channel, 'vault-update', secret);
  assertEqual(response.status, 200, 'trigger status');
  const event = await page.waitForEvent('a', channel, 'vault-update');
  assertDeepEqual(event.data, secret, 'decrypted event data');

  // On the wire (as the connection saw it) the data was ciphertext, never the plaintext.
  const [frame] = await page.frames('a', { channel, event: 'vault-update' });
  assert(frame, 'the raw frame was recorded');
  const wire = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
  assert(typeof wire.nonce === 'string' && typeof wire.ciphertext === 'string', `wire data ${JSON.stringify(frame.data)}`);
  assert(!JSON.stringify(frame.data).includes('4111'), 'plaintext visible in the frame');
  // pusher-js re-fetches the shared secret when decryption fails: one auth request means it did not.
  assertEqual(page.app.requestsFor(channel).length, 1, 'auth requests for the channel');
});
