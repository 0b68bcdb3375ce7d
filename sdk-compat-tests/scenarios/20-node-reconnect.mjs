// pusher-js (Node build) across a Herald restart: the server closes with 4200 on SIGTERM, pusher-js
// reconnects by itself, resubscribes, and events flow again.
//
// This takes about 15 s: pusher-js retries at once on 4200, and when that attempt hits the moment
// the server is down, the Node build does not notice the refused TCP connection and only gives up
// on it after its 15 s transport timeout (the same happens against any server). On a loaded
// machine that can take longer, so the reconnect is given 30 s and the scenario 90 s.

import { scenario, assert, assertEqual, assertDeepEqual, once, collect, unique, reachState } from '../lib/harness.mjs';

/** How long pusher-js may take to be connected again once the server is back. */
const RECONNECT_MS = 30_000;

scenario(
  'node: after the server restarts, pusher-js reconnects and resubscribes by itself',
  async (ctx) => {
    const pub = unique('compat-restart');
    const priv = unique('private-compat-restart');
    const pres = unique('presence-compat-restart');
    const me = unique('restarter');
    const client = await ctx.connected({
      presence: { user_id: me, user_info: { name: 'Me' } },
      // Only the scheme the target speaks: a wss attempt on a plain port just adds noise.
      enabledTransports: [ctx.target.tls ? 'wss' : 'ws'],
    });
    const channels = [pub, priv, pres].map((name) => client.subscribe(name));
    await Promise.all(channels.map((c) => once(c, 'pusher:subscription_succeeded', `subscription to ${c.name}`)));
    const socketBefore = client.connection.socket_id;

    const states = collect(client.connection, 'state_change');
    const errors = collect(client.connection, 'error');
    const resubscribed = channels.map((c) =>
      once(c, 'pusher:subscription_succeeded', `resubscription to ${c.name}`, 45_000),
    );

    await ctx.target.restart();
    await reachState(client.connection, 'connected', RECONNECT_MS);
    await Promise.all(resubscribed);

    assert(states.some((s) => s.current === 'connecting'), `went through connecting: ${JSON.stringify(states)}`);
    assertEqual(states.at(-1).current, 'connected', 'last state');
    assert(
      errors.some((e) => e.data?.code === 4200),
      `a close with 4200 reported to the app: ${JSON.stringify(errors)}`,
    );
    assert(client.connection.socket_id !== socketBefore, 'a new socket id after the restart');
    assertDeepEqual(channels[2].members.me, { id: me, info: { name: 'Me' } }, 'presence members.me after resubscribing');
    assertEqual(channels[2].members.count, 1, 'presence member count after resubscribing');

    const received = channels.map((c) => once(c, 'after-restart', `the event on ${c.name}`));
    await ctx.backend().trigger([pub, priv, pres], 'after-restart', { alive: true });
    for (const data of await Promise.all(received)) assertDeepEqual(data, { alive: true }, 'event data');
  },
  { needs: ['restart'], timeoutMs: 90_000 },
);
