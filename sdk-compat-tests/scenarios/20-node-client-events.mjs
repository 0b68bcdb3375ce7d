// Client events between pusher-js (Node build) clients: delivery, no echo, refusals and the rate
// limit, as an application sees them (channel events and connection `error` events).

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  onceWithMetadata,
  collect,
  eventually,
  sleep,
  unique,
} from '../lib/harness.mjs';

const QUIET_MS = 400;

scenario('node: client event on a private channel reaches the other subscribers, not the sender', async (ctx) => {
  const name = unique('private-compat-chat');
  const [a, b, c] = [await ctx.connected(), await ctx.connected(), await ctx.connected()];
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const chC = await ctx.subscribed(c, name);
  const seen = [chA, chB, chC].map((channel) => collect(channel, 'client-typing'));
  const errors = collect(a.connection, 'error');

  const accepted = chA.trigger('client-typing', { who: 'a', text: 'héllo' });
  assertEqual(accepted, true, 'channel.trigger return value');
  await eventually(() => seen[1].length === 1 && seen[2].length === 1, 'B and C to get the client event');
  assertDeepEqual(seen[1][0], { who: 'a', text: 'héllo' }, 'data seen by B');
  assertDeepEqual(seen[2][0], { who: 'a', text: 'héllo' }, 'data seen by C');

  // The other direction works too, and nobody gets their own event back.
  chB.trigger('client-typing', { who: 'b' });
  await eventually(() => seen[0].length === 1 && seen[2].length === 2, 'A and C to get B\'s event');
  await sleep(QUIET_MS);
  assertDeepEqual(seen[0], [{ who: 'b' }], 'events seen by A');
  assertEqual(seen[1].length, 1, 'events seen by B (its own is not echoed)');
  assertEqual(errors.length, 0, `connection errors on the sender: ${JSON.stringify(errors)}`);
});

scenario('node: client event on a presence channel carries metadata.user_id and is not echoed', async (ctx) => {
  const name = unique('presence-compat-chat');
  const alice = unique('alice');
  const bob = unique('bob');
  const a = await ctx.connected({ presence: { user_id: alice, user_info: { name: 'Alice' } } });
  const b = await ctx.connected({ presence: { user_id: bob, user_info: { name: 'Bob' } } });
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const echoed = collect(chA, 'client-move');

  const atB = onceWithMetadata(chB, 'client-move', 'the client event at B');
  chA.trigger('client-move', { x: 1, y: 2 });
  const { data, metadata } = await atB;
  assertDeepEqual(data, { x: 1, y: 2 }, 'data');
  assertEqual(metadata?.user_id, alice, 'metadata.user_id');

  const atA = onceWithMetadata(chA, 'client-move', 'the reply at A');
  chB.trigger('client-move', { x: 3 });
  assertEqual((await atA).metadata?.user_id, bob, 'metadata.user_id of the reply');
  await sleep(QUIET_MS);
  assertEqual(echoed.length, 1, 'events seen by A (its own not echoed)');
});

scenario('node: refused client events surface as connection errors and the socket stays connected', async (ctx) => {
  const pub = unique('compat-public-client');
  const priv = unique('private-compat-not-subscribed');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, pub);
  const chB = await ctx.subscribed(b, pub);
  const privB = await ctx.subscribed(b, priv);
  const seenPublic = collect(chB, 'client-hello');
  const seenPrivate = collect(privB, 'client-hello');
  const errors = collect(a.connection, 'error');

  // Client events are not allowed on public channels.
  chA.trigger('client-hello', { from: 'a' });
  await eventually(() => errors.length === 1, 'an error for the client event on a public channel');
  // Nor on a channel the sender has not subscribed to.
  a.send_event('client-hello', { from: 'a' }, priv);
  await eventually(() => errors.length === 2, 'an error for the client event on a channel not subscribed');

  for (const error of errors) {
    assertEqual(error.type, 'PusherError', 'error type');
    assert(typeof error.data?.message === 'string' && error.data.message.length > 0, 'error message');
    assert(error.data.code === null || error.data.code === undefined || error.data.code < 4000 || error.data.code >= 4300,
      `error code ${error.data.code} must not be a closing code`);
  }
  await sleep(QUIET_MS);
  assertEqual(seenPublic.length, 0, 'client events delivered on the public channel');
  assertEqual(seenPrivate.length, 0, 'client events delivered on the channel A did not subscribe to');
  assertEqual(a.connection.state, 'connected', 'sender connection state');
});

scenario('node: 11 client events at once: 10 delivered, then error 4301, connection stays up', async (ctx) => {
  const name = unique('private-compat-flood');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const seen = collect(chB, 'client-flood');
  const errors = collect(a.connection, 'error');
  const states = collect(a.connection, 'state_change');

  for (let i = 0; i < 11; i += 1) chA.trigger('client-flood', { i });
  await eventually(() => errors.some((e) => e.data?.code === 4301), 'a pusher:error with code 4301');
  await eventually(() => seen.length >= 10, 'the first 10 events at B');
  await sleep(QUIET_MS);
  assertEqual(seen.length, 10, 'events delivered to B');
  assertDeepEqual(seen.map((d) => d.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'delivered events, in order');
  const flood = errors.find((e) => e.data?.code === 4301);
  assertEqual(flood.type, 'PusherError', 'error type');
  assertEqual(a.connection.state, 'connected', 'sender state after the rate limit');
  assertEqual(states.length, 0, `sender state changes: ${JSON.stringify(states)}`);

  // After a second the budget is back.
  await sleep(1100);
  chA.trigger('client-flood', { i: 'later' });
  await eventually(() => seen.length === 11, 'the event sent after the pause');
  assertDeepEqual(seen[10], { i: 'later' }, 'data of the event sent after the pause');
});
