// pusher.min.js in headless Chromium across a server restart: the server closes with 4200, and the
// page's clients must find their way back to `connected` on their own, resubscribe (re-authorizing
// private and presence channels with the new socket id through the page's endpoint, the presence
// members list rebuilt), and receive events again.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

const RECONNECT_MS = 30_000;

scenario(
  'browser: after a server restart (4200) the page reconnects, resubscribes (presence too) and receives events',
  async (ctx) => {
    const publicChannel = uniqueName('browser-restart');
    const privateChannel = uniqueName('private-browser-restart');
    const presenceChannel = uniqueName('presence-browser-restart');
    const alice = { user_id: 'alice', user_info: { name: 'Alice' } };
    const bob = { user_id: 'bob', user_info: { name: 'Bob' } };
    const page = await openPage(ctx);
    const before = await page.connected('a', { presence: alice });
    await page.subscribed('a', publicChannel);
    await page.subscribed('a', privateChannel);
    await page.subscribed('a', presenceChannel);
    // Another member of the presence channel: a second connection, in the same page.
    const beforeB = await page.connected('b', { presence: bob });
    await page.subscribed('b', presenceChannel);
    const bothMembers = {
      count: 2,
      me: { id: 'alice', info: { name: 'Alice' } },
      list: [
        { id: 'alice', info: { name: 'Alice' } },
        { id: 'bob', info: { name: 'Bob' } },
      ],
    };
    await page.until(
      async () => JSON.stringify(await page.call('members', 'a', presenceChannel)) === JSON.stringify(bothMembers),
      "alice's members list with bob",
    );

    await ctx.target.restart();

    const reconnected = async (client, previous) => {
      const id = await page.until(async () => {
        if ((await page.state(client)) !== 'connected') return null;
        const socketId = await page.call('socketId', client);
        return socketId !== previous ? socketId : null;
      }, `client ${client} to be connected again with a new socket id`, RECONNECT_MS);
      assert(/^\d+\.\d+$/.test(id), `socket_id ${id}`);
      return id;
    };
    const after = await reconnected('a', before);
    await reconnected('b', beforeB);

    const states = await page.call('statesOf', 'a');
    assertEqual(states.slice(0, 2), ['connecting', 'connected'], 'first states');
    assert(states.slice(2).includes('connecting'), `states after the restart: ${states.join(' ')}`);
    assertEqual(states[states.length - 1], 'connected', 'last state');

    // The close code the server went away with, as pusher-js reported it (a 'retry' close) and as
    // the page's own WebSocket saw it.
    for (const [client, socketId] of [['a', before], ['b', beforeB]]) {
      const errors = await page.call('errorsFor', client);
      assert(
        errors.some((e) => e.error && e.error.type === 'PusherError' && e.error.data && e.error.data.code === 4200),
        `a PusherError with code 4200 at ${client}: ${JSON.stringify(errors)}`,
      );
      const socket = (await page.socketLog()).find((s) => s.socketId === socketId);
      assert(socket && socket.closed, `the first WebSocket of ${client} closed: ${JSON.stringify(socket)}`);
      assertEqual(socket.closed.code, 4200, `close code of ${client}'s first WebSocket`);
    }

    for (const channel of [publicChannel, privateChannel, presenceChannel]) {
      await page.waitForEvents('a', channel, 'pusher:subscription_succeeded', { count: 2, ms: RECONNECT_MS });
    }
    await page.waitForEvents('b', presenceChannel, 'pusher:subscription_succeeded', { count: 2, ms: RECONNECT_MS });
    const auths = page.app.requestsFor(privateChannel).map((r) => [r.socketId, r.status]);
    // A cluster restarts its nodes one after the other: a client that moved to a node not yet
    // restarted is closed again when that node restarts, so it may authorize once per node in
    // between (each accepted). One node: exactly once before and once after.
    const between = auths.slice(1, -1);
    assert(between.length <= (ctx.target.nodeCount ?? 1) - 1, `auth requests in between: ${JSON.stringify(auths)}`);
    assert(between.every(([, status]) => status === 200), `auth requests in between: ${JSON.stringify(auths)}`);
    assertDeepEqual([auths[0], auths[auths.length - 1]], [[before, 200], [after, 200]], 'private channel auth requests (socket id, status)');
    const presenceAuths = page.app.requestsFor(presenceChannel).filter((r) => r.socketId === before || r.socketId === after);
    assertDeepEqual(presenceAuths.map((r) => [r.socketId, r.status]), [[before, 200], [after, 200]], "alice's presence auth requests");

    // The members list is back: both members, as each client sees it.
    await page.until(
      async () => JSON.stringify(await page.call('members', 'a', presenceChannel)) === JSON.stringify(bothMembers),
      "alice's members list after the restart",
      RECONNECT_MS,
    );
    await page.until(
      async () => (await page.call('members', 'b', presenceChannel)).count === 2,
      "bob's members list after the restart",
      RECONNECT_MS,
    );
    assertDeepEqual(
      await page.call('members', 'b', presenceChannel),
      { ...bothMembers, me: { id: 'bob', info: { name: 'Bob' } } },
      "bob's members list after the restart",
    );

    for (const channel of [publicChannel, privateChannel, presenceChannel]) {
      const response = await ctx.backend().trigger(channel, 'after-restart', { channel });
      assertEqual(response.status, 200, `trigger on ${channel}`);
      assertDeepEqual((await page.waitForEvent('a', channel, 'after-restart')).data, { channel }, `event on ${channel}`);
    }
    assertDeepEqual(
      (await page.waitForEvent('b', presenceChannel, 'after-restart')).data,
      { channel: presenceChannel },
      `event at bob on ${presenceChannel}`,
    );
  },
  // The restart and up to RECONNECT_MS of reconnecting on a busy machine: more than the default.
  { needs: ['restart'], timeoutMs: 90_000 },
);
