// pusher-js (Node build) and pusher-http-node: every channel type, cache channels, refused
// subscriptions and socket_id exclusion, observed only through the SDKs' public APIs.

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  collect,
  eventually,
  unique,
  rawFrames,
} from '../lib/harness.mjs';

// "Nothing else arrived" is asserted on raw frames (pusher-js drops frames for channels it does
// not know), after a positive control received what the server did and after `ctx.flush` on the
// socket that must have got nothing: no fixed sleep decides it.

/** Member ids as the SDK lists them, sorted. */
function memberIds(channel) {
  const ids = [];
  channel.members.each((member) => ids.push(member.id));
  return ids.sort();
}

scenario('node: public channel: every subscriber receives the event, an unsubscribed one does not', async (ctx) => {
  const name = unique('compat-public');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const seenA = collect(chA, 'news');
  const seenB = collect(chB, 'news');
  // After `unsubscribe` pusher-js forgets the channel, so B's raw frames are what can show a leak.
  const framesB = rawFrames(b.connection, (f) => f.channel === name && f.event === 'news');

  const payload = { text: 'héllo ☃', n: 1, list: [1, 2, 3], nested: { ok: true } };
  await ctx.backend().trigger(name, 'news', payload);
  await eventually(() => seenA.length === 1 && seenB.length === 1, 'both subscribers to get the event');
  assertDeepEqual(seenA[0], payload, 'data seen by subscriber A');
  assertDeepEqual(seenB[0], payload, 'data seen by subscriber B');

  // A string that is not JSON is relayed verbatim.
  await ctx.backend().trigger(name, 'news', 'just text, not JSON {');
  await eventually(() => seenA.length === 2 && seenB.length === 2, 'the string event');
  assertEqual(seenA[1], 'just text, not JSON {', 'string data');

  // The unsubscribe frame has no reply: the server has processed it once the REST count drops.
  b.unsubscribe(name);
  await eventually(async () => (await ctx.subscriptionCount(name)) === 1, 'subscription_count 1 once B unsubscribed');
  await ctx.backend().trigger(name, 'news', { n: 2 });
  await eventually(() => seenA.length === 3, 'A to get the event after B left');
  await ctx.flush(b);
  assertEqual(seenB.length, 2, 'events seen by B after it unsubscribed');
  assertEqual(framesB.length, 2, 'frames of the channel at B after it unsubscribed');
});

scenario('node: one trigger to a public, a private and a presence channel reaches each subscriber', async (ctx) => {
  const pub = unique('compat-multi');
  const priv = unique('private-compat-multi');
  const pres = unique('presence-compat-multi');
  const client = await ctx.connected({ presence: { user_id: unique('multi-user') } });
  const channels = [
    await ctx.subscribed(client, pub),
    await ctx.subscribed(client, priv),
    await ctx.subscribed(client, pres),
  ];
  const received = channels.map((channel) => once(channel, 'fan-out', `the event on ${channel.name}`));
  const response = await ctx.backend().trigger([pub, priv, pres], 'fan-out', { to: 'all' });
  assertEqual(response.status, 200, 'trigger status');
  for (const data of await Promise.all(received)) assertDeepEqual(data, { to: 'all' }, 'event data');
});

scenario('node: presence channel: members list, me, get, member_added and member_removed', async (ctx) => {
  const name = unique('presence-compat-room');
  const alice = { user_id: unique('alice'), user_info: { name: 'Alice', role: 'admin' } };
  const bob = { user_id: unique('bob'), user_info: { name: 'Bob' } };
  const carol = { user_id: unique('carol'), user_info: { name: 'Carol' } };

  const a = await ctx.connected({ presence: alice });
  const chA = await ctx.subscribed(a, name);
  assertEqual(chA.members.count, 1, 'count after the first member joined');
  assertDeepEqual(chA.members.me, { id: alice.user_id, info: alice.user_info }, 'members.me');
  assertDeepEqual(memberIds(chA), [alice.user_id], 'members listed to the first member');

  const addedBob = once(chA, 'pusher:member_added', 'member_added for Bob');
  const b = await ctx.connected({ presence: bob });
  const chB = await ctx.subscribed(b, name);
  assertDeepEqual(await addedBob, { id: bob.user_id, info: bob.user_info }, 'member_added data');
  assertEqual(chA.members.count, 2, 'count seen by Alice');
  assertDeepEqual(chA.members.get(bob.user_id), { id: bob.user_id, info: bob.user_info }, 'members.get(bob)');
  // Bob's own subscription lists everyone, himself included.
  assertEqual(chB.members.count, 2, 'count seen by Bob');
  assertDeepEqual(chB.members.me, { id: bob.user_id, info: bob.user_info }, "Bob's members.me");
  assertDeepEqual(chB.members.get(alice.user_id), { id: alice.user_id, info: alice.user_info }, 'Alice seen by Bob');
  assertDeepEqual(memberIds(chB), [alice.user_id, bob.user_id].sort(), 'members listed to Bob');
  assertEqual(chB.members.get('nobody-with-this-id'), null, 'members.get of an absent id');

  // A third member leaves by unsubscribing, Bob by disconnecting: both are announced.
  const addedCarol = once(chA, 'pusher:member_added', 'member_added for Carol');
  const c = await ctx.connected({ presence: carol });
  await ctx.subscribed(c, name);
  assertEqual((await addedCarol).id, carol.user_id, 'member_added id');
  await eventually(() => chB.members.count === 3, 'Bob to count 3 members');

  const removedCarol = once(chA, 'pusher:member_removed', 'member_removed for Carol (unsubscribe)');
  c.unsubscribe(name);
  assertDeepEqual(await removedCarol, { id: carol.user_id, info: carol.user_info }, 'member_removed after unsubscribe');

  const removedBob = once(chA, 'pusher:member_removed', 'member_removed for Bob (disconnect)');
  b.disconnect();
  assertDeepEqual(await removedBob, { id: bob.user_id, info: bob.user_info }, 'member_removed after disconnect');
  assertEqual(chA.members.count, 1, 'count after both left');
  assertDeepEqual(memberIds(chA), [alice.user_id], 'members after both left');
});

scenario('node: presence user on two sockets is added once and removed only when the last socket leaves', async (ctx) => {
  const name = unique('presence-compat-dup');
  const watcher = await ctx.connected({ presence: { user_id: unique('watcher'), user_info: {} } });
  const chW = await ctx.subscribed(watcher, name);
  const added = collect(chW, 'pusher:member_added');
  const removed = collect(chW, 'pusher:member_removed');

  const dup = { user_id: unique('dup'), user_info: { name: 'Twice' } };
  const first = await ctx.connected({ presence: dup });
  await ctx.subscribed(first, name);
  await eventually(() => added.length === 1, 'member_added for the first socket');
  assertDeepEqual(added[0], { id: dup.user_id, info: dup.user_info }, 'member_added data');

  const second = await ctx.connected({ presence: dup });
  const chSecond = await ctx.subscribed(second, name);
  assertEqual(chSecond.members.count, 2, 'members seen by the second socket (the user counts once)');
  await ctx.flush(watcher);
  assertEqual(added.length, 1, 'member_added events after the second socket joined');
  assertEqual(chW.members.count, 2, 'member count after the second socket joined');

  // Once the REST count drops, the server has processed the disconnect (a member_removed, if it
  // sent one, was queued then); the flush makes sure the watcher has read that far.
  first.disconnect();
  await eventually(async () => (await ctx.subscriptionCount(name)) === 2, 'subscription_count 2 once the first socket left');
  await ctx.flush(watcher);
  assertEqual(removed.length, 0, 'member_removed events while one socket is still there');
  assertEqual(chW.members.count, 2, 'member count while one socket is still there');

  second.unsubscribe(name);
  await eventually(() => removed.length === 1, 'member_removed once the last socket left');
  assertDeepEqual(removed[0], { id: dup.user_id, info: dup.user_info }, 'member_removed data');
  assertEqual(chW.members.count, 1, 'member count at the end');
});

scenario('node: private-encrypted channel: pusher-js decrypts what pusher-http-node encrypted', async (ctx) => {
  const name = unique('private-encrypted-compat');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const gotA = collect(chA, 'secret');
  const gotB = collect(chB, 'secret');

  const payload = { card: '4111 1111 1111 1111', note: 'ünïcödé' };
  await ctx.backend().trigger(name, 'secret', payload);
  await ctx.backend().trigger(name, 'secret', 'a plain string');
  await eventually(() => gotA.length === 2 && gotB.length === 2, 'both subscribers to decrypt both events');
  assertDeepEqual(gotA, [payload, 'a plain string'], 'plaintext seen by A');
  assertDeepEqual(gotB, [payload, 'a plain string'], 'plaintext seen by B');

  // pusher-js forbids client events on encrypted channels, before anything reaches the server.
  let threw = null;
  try {
    chA.trigger('client-nope', {});
  } catch (error) {
    threw = error;
  }
  assert(threw, 'pusher-js refuses client events on an encrypted channel');

  // Herald refuses them too, as Pusher does: a client event sent by hand gets a pusher:error
  // (code null) at the sender, whose socket stays open, and nothing reaches the other subscriber.
  const framesA = rawFrames(a.connection, (f) => f.channel === name && f.event === 'client-x');
  const framesB = rawFrames(b.connection, (f) => f.channel === name && f.event === 'client-x');
  const errorsA = collect(a.connection, 'error');
  a.send_event('client-x', { plain: 'not encrypted' }, name);
  await eventually(() => errorsA.length === 1, 'the sender to hear of the refusal');
  assertEqual(errorsA[0].type, 'PusherError', 'connection error type');
  assertEqual(errorsA[0].data?.code, null, 'pusher:error code');
  await ctx.flush(a);
  await ctx.flush(b);
  assertEqual(framesB.length, 0, 'client events relayed to B');
  assertEqual(framesA.length, 0, 'client events echoed to the sender');
  assertEqual(a.connection.state, 'connected', 'the sender stays connected');
  assertEqual(gotB.length, 2, 'events pusher-js at B delivered, and nothing else');
});

// ---------------------------------------------------------------- cache channels

const CACHE_KINDS = [
  { prefix: 'cache-', label: 'cache-' },
  { prefix: 'private-cache-', label: 'private-cache-' },
  { prefix: 'presence-cache-', label: 'presence-cache-' },
  { prefix: 'private-encrypted-cache-', label: 'private-encrypted-cache-' },
];

for (const { prefix, label } of CACHE_KINDS) {
  scenario(`node: ${label} channel: cache_miss when empty, the last event replayed to a late subscriber`, async (ctx) => {
    const name = unique(`${prefix}compat`);
    const presence = () => ({ user_id: unique('cache-user'), user_info: {} });

    // First subscriber: nothing cached yet.
    const a = await ctx.connected({ presence: presence() });
    const chA = a.subscribe(name);
    const missesA = collect(chA, 'pusher:cache_miss');
    await once(chA, 'pusher:subscription_succeeded', `subscription to ${name}`);
    await eventually(() => missesA.length === 1, 'pusher:cache_miss on the empty cache channel');

    const backend = ctx.backend();
    const secondSeen = once(chA, 'second', 'the second live event');
    await backend.trigger(name, 'first', { n: 1 });
    await backend.trigger(name, 'second', { n: 2, text: 'last one' });
    assertDeepEqual(await secondSeen, { n: 2, text: 'last one' }, 'live event data');

    // A late subscriber gets the last event, and neither the first one nor a cache_miss.
    const b = await ctx.connected({ presence: presence() });
    const chB = b.subscribe(name);
    const missesB = collect(chB, 'pusher:cache_miss');
    const firstB = collect(chB, 'first');
    const replay = once(chB, 'second', 'the cached event replayed to the late subscriber');
    assertDeepEqual(await replay, { n: 2, text: 'last one' }, 'replayed data');
    assert(chB.subscribed, 'the late subscriber is subscribed when the replay arrives');
    await ctx.flush(b);
    await ctx.flush(a);
    assertEqual(missesB.length, 0, 'cache_miss events seen by the late subscriber');
    assertEqual(firstB.length, 0, 'older events replayed to the late subscriber');
    assertEqual(missesA.length, 1, 'cache_miss events seen by the first subscriber');
  });
}

scenario('node: a client event is not cached on a private-cache- channel', async (ctx) => {
  const name = unique('private-cache-compat-client');
  const a = await ctx.connected();
  const chA = await ctx.subscribed(a, name);
  const b = await ctx.connected();
  const chB = await ctx.subscribed(b, name);
  // Listen before triggering: the event may reach the socket before the trigger's answer.
  const fromServer = once(chB, 'from-server');
  await ctx.backend().trigger(name, 'from-server', { n: 1 });
  await fromServer;
  const clientSeen = once(chB, 'client-typing', 'the client event');
  chA.trigger('client-typing', { who: 'a' });
  await clientSeen;

  // A late subscriber gets the server event back, never the client event.
  const c = await ctx.connected();
  const chC = c.subscribe(name);
  const clientC = collect(chC, 'client-typing');
  assertDeepEqual(await once(chC, 'from-server', 'the cached server event'), { n: 1 }, 'replayed data');
  await ctx.flush(c);
  assertEqual(clientC.length, 0, 'client events replayed');
});

// ---------------------------------------------------------------- refused subscriptions

scenario('node: a private subscription with a wrong signature, sent by hand: pusher:error, no events, socket stays open', async (ctx) => {
  const name = unique('private-compat-refused');
  const client = await ctx.connected();
  const errors = collect(client.connection, 'error');
  // Anything on that channel but the refusal itself would be a leak (a subscription_succeeded
  // included); pusher-js does not know the channel, so only raw frames can show it.
  const leaked = rawFrames(client.connection, (f) => f.channel === name && f.event !== 'pusher:subscription_error');

  // The frame pusher-js would send, with the app key and an all-zero HMAC: no auth endpoint involved.
  client.send_event('pusher:subscribe', { channel: name, auth: `${ctx.target.key}:${'0'.repeat(64)}` });
  await eventually(() => errors.length >= 1, 'a pusher:error for the refused subscription');
  assertEqual(errors[0].type, 'PusherError', 'connection error type');
  assertEqual(errors[0].data?.code, null, 'pusher:error code');
  assert(typeof errors[0].data?.message === 'string' && errors[0].data.message.length > 0, 'the error has a message');

  // Positive control: a properly authorized subscriber gets the event; the refused socket does not.
  const control = await ctx.connected();
  const delivered = once(await ctx.subscribed(control, name), 'news', 'the event at the authorized subscriber');
  await ctx.backend().trigger(name, 'news', { leaked: true });
  assertDeepEqual(await delivered, { leaked: true }, 'event data at the authorized subscriber');
  await ctx.flush(client);
  assertDeepEqual(leaked, [], 'frames of the refused channel at the refused socket');
  assertEqual(errors.length, 1, `connection errors: ${JSON.stringify(errors)}`);
  assertEqual(client.connection.state, 'connected', 'connection state');
});

scenario('node: bad private and presence signatures are refused by the server: subscription_error, socket stays open', async (ctx) => {
  const good = unique('private-compat-good');
  const badPrivate = unique('private-compat-forged');
  const badPresence = unique('presence-compat-forged');
  const honest = ctx.backend();
  const forger = ctx.backend({ secret: 'not-the-app-secret-at-all' });
  const client = await ctx.connected({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const signer = channelName === good ? honest : forger;
        const data = channelName.startsWith('presence-') ? { user_id: 'forger', user_info: {} } : undefined;
        callback(null, signer.authorizeChannel(socketId, channelName, data));
      },
    },
  });
  const connectionErrors = collect(client.connection, 'error');

  for (const name of [badPrivate, badPresence]) {
    const channel = client.subscribe(name);
    const error = await once(channel, 'pusher:subscription_error', `pusher:subscription_error on ${name}`);
    assertEqual(error.type, 'AuthError', `subscription_error type on ${name}`);
    assertEqual(error.status, 401, `subscription_error status on ${name}`);
    assert(!channel.subscribed, `${name} is not subscribed`);
  }
  await eventually(() => connectionErrors.length >= 2, 'a pusher:error per refused subscription');
  for (const error of connectionErrors) {
    assertEqual(error.type, 'PusherError', 'connection error type');
    assert(typeof error.data?.message === 'string' && error.data.message.length > 0, 'the error has a message');
  }

  // The socket is still usable: a properly signed subscription works, and nothing leaks.
  const leaked = rawFrames(client.connection, (f) => f.channel === badPrivate && f.event === 'news');
  const channel = await ctx.subscribed(client, good);
  const received = once(channel, 'news');
  await ctx.backend().trigger([badPrivate, good], 'news', { ok: 1 });
  assertDeepEqual(await received, { ok: 1 }, 'event on the good channel');
  await ctx.flush(client);
  assertEqual(leaked.length, 0, 'events delivered on the refused channel');
  assertEqual(client.connection.state, 'connected', 'connection state');
});

scenario('node: a presence subscription whose channel_data differs from what was signed is refused', async (ctx) => {
  const name = unique('presence-compat-tampered');
  const backend = ctx.backend();
  const client = await ctx.connected({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const auth = backend.authorizeChannel(socketId, channelName, { user_id: 'honest', user_info: {} });
        // Signed for "honest", but claims to be "admin".
        callback(null, { ...auth, channel_data: JSON.stringify({ user_id: 'admin', user_info: {} }) });
      },
    },
  });
  const channel = client.subscribe(name);
  const error = await once(channel, 'pusher:subscription_error', 'pusher:subscription_error');
  assertEqual(error.type, 'AuthError', 'subscription_error type');
  assert(!channel.subscribed, 'not subscribed');
  const users = await (await backend.get({ path: `/channels/${name}/users` })).json();
  assertDeepEqual(users, { users: [] }, 'presence users after the refusal');
  assertEqual(client.connection.state, 'connected', 'connection state');
});

// ---------------------------------------------------------------- socket_id exclusion

scenario('node: trigger with socket_id excludes that connection only', async (ctx) => {
  const name = unique('private-compat-exclude');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const chA = await ctx.subscribed(a, name);
  const chB = await ctx.subscribed(b, name);
  const seenA = collect(chA, 'update');
  const seenB = collect(chB, 'update');

  await ctx.backend().trigger(name, 'update', { n: 1 }, { socket_id: a.connection.socket_id });
  await eventually(() => seenB.length === 1, 'B to get the event');
  assertDeepEqual(seenB[0], { n: 1 }, 'data seen by B');

  // The same exclusion through triggerBatch.
  await ctx.backend().triggerBatch([
    { channel: name, name: 'update', data: { n: 2 }, socket_id: b.connection.socket_id },
  ]);
  await eventually(() => seenA.length === 1, 'A to get the batch event');
  assertDeepEqual(seenA[0], { n: 2 }, 'data seen by A');
  await ctx.flush(a);
  await ctx.flush(b);
  assertEqual(seenB.length, 1, 'events seen by B (the batch event excluded it)');
  assertEqual(seenA.length, 1, 'events seen by A (the first trigger excluded it)');
  assertEqual(a.connection.state, 'connected', 'connection state of A');
});
