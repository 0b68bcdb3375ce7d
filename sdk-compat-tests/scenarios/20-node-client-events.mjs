// Client events between pusher-js (Node build) clients: delivery, no echo, refusals and the rate
// limit, as an application sees them (channel events and connection `error` events).

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  onceWithMetadata,
  collect,
  eventually,
  sleep,
  unique,
  rawFrames,
} from '../lib/harness.mjs';

// Herald's refusals of a client event are a `pusher:error` with `code: null` (pusher-js emits a
// connection `error` event `{type: 'PusherError', data: {code: null, message}}`), except the rate
// limit, which is code 4301. Neither closes the socket.
//
// Not covered here: the refusal when client events are disabled for the app. The default app has
// them enabled, and turning them off needs Herald's admin API, which this suite does not drive.

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
  await ctx.flush(a);
  await ctx.flush(b);
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
  await ctx.flush(a);
  assertEqual(echoed.length, 1, 'events seen by A (its own not echoed)');
});

scenario('node: refused client events surface as pusher:error with code null and the socket stays connected', async (ctx) => {
  const pub = unique('compat-public-client');
  const priv = unique('private-compat-not-subscribed');
  const shared = unique('private-compat-shared');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, pub);
  await ctx.subscribed(b, pub);
  await ctx.subscribed(b, priv);
  const sharedA = await ctx.subscribed(a, shared);
  const sharedB = await ctx.subscribed(b, shared);
  // Anything client-sent that reaches B: pusher-js would drop some of it (it never relays a
  // frame for a channel it does not know), the raw frames do not.
  const leaked = rawFrames(b.connection, (f) => f.event === 'client-hello' || f.event === 'client-big');
  const errors = collect(a.connection, 'error');

  // Client events are not allowed on public channels.
  chA.trigger('client-hello', { from: 'a' });
  await eventually(() => errors.length === 1, 'an error for the client event on a public channel');
  // Nor on a channel the sender has not subscribed to.
  a.send_event('client-hello', { from: 'a' }, priv);
  await eventually(() => errors.length === 2, 'an error for the client event on a channel not subscribed');
  // Nor with more than 10 KB of data (pusher-js does not check the size itself).
  a.send_event('client-big', 'x'.repeat(11 * 1024), shared);
  await eventually(() => errors.length === 3, 'an error for the client event over 10 KB');

  for (const [i, what] of ['public channel', 'channel not subscribed', 'data over 10 KB'].entries()) {
    assertEqual(errors[i].type, 'PusherError', `error type (${what})`);
    assertEqual(errors[i].data?.code, null, `error code (${what})`);
    assert(typeof errors[i].data?.message === 'string' && errors[i].data.message.length > 0, `error message (${what})`);
  }

  // Positive control: a client event A may send reaches B after all of the refused ones did not.
  const accepted = once(sharedB, 'client-ok', 'the accepted client event at B');
  sharedA.trigger('client-ok', { after: 'refusals' });
  assertDeepEqual(await accepted, { after: 'refusals' }, 'data of the accepted client event');
  await ctx.flush(b);
  assertDeepEqual(leaked, [], 'refused client events delivered to B');
  assertEqual(errors.length, 3, `connection errors at A: ${JSON.stringify(errors)}`);
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
  await eventually(() => errors.length >= 1, 'a pusher:error for the 11th event');
  await eventually(() => seen.length >= 10, 'the first 10 events at B');
  assertEqual(errors[0].type, 'PusherError', 'error type');
  assertEqual(errors[0].data?.code, 4301, 'error code');
  assertEqual(a.connection.state, 'connected', 'sender state after the rate limit');

  // After a second the budget is back (counted from the refusal, which the server sent after
  // the 11th event). The event sent then is the positive control: once B has it, the 11th
  // would have arrived before it had it been relayed.
  await sleep(1100);
  chA.trigger('client-flood', { i: 'later' });
  await eventually(() => seen.length >= 11, 'the event sent after the pause');
  assertDeepEqual(seen.map((d) => d.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 'later'], 'events delivered to B, in order');
  assertEqual(errors.length, 1, `errors at the sender: ${JSON.stringify(errors)}`);
  assertEqual(states.length, 0, `sender state changes: ${JSON.stringify(states)}`);
});
