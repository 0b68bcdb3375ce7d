// pusher.min.js in headless Chromium across a server restart: the page's client must find its way
// back to `connected` on its own, resubscribe (re-authorizing private channels with the new socket
// id through the page's endpoint), and receive events again.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

scenario(
  'browser: after a server restart the page reconnects, resubscribes and receives events',
  async (ctx) => {
    const publicChannel = uniqueName('browser-restart');
    const privateChannel = uniqueName('private-browser-restart');
    const page = await openPage(ctx);
    const before = await page.connected('a');
    await page.subscribed('a', publicChannel);
    await page.subscribed('a', privateChannel);

    await ctx.target.restart();

    const after = await page.until(async () => {
      if ((await page.state('a')) !== 'connected') return null;
      const id = await page.call('socketId', 'a');
      return id !== before ? id : null;
    }, 'the page to be connected again with a new socket id', 30_000);
    assert(/^\d+\.\d+$/.test(after), `socket_id ${after}`);
    const states = await page.call('statesOf', 'a');
    assertEqual(states.slice(0, 2), ['connecting', 'connected'], 'first states');
    assert(states.slice(2).includes('connecting'), `states after the restart: ${states.join(' ')}`);
    assertEqual(states[states.length - 1], 'connected', 'last state');

    for (const channel of [publicChannel, privateChannel]) {
      await page.waitForEvents('a', channel, 'pusher:subscription_succeeded', { count: 2 });
    }
    const auths = page.app.requestsFor(privateChannel).map((r) => [r.socketId, r.status]);
    assertDeepEqual(auths, [[before, 200], [after, 200]], 'private channel auth requests (socket id, status)');

    for (const channel of [publicChannel, privateChannel]) {
      const response = await ctx.backend().trigger(channel, 'after-restart', { channel });
      assertEqual(response.status, 200, `trigger on ${channel}`);
      assertDeepEqual((await page.waitForEvent('a', channel, 'after-restart')).data, { channel }, `event on ${channel}`);
    }
  },
  { needs: ['restart'] },
);
