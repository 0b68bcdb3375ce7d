// laravel-echo 2.x with the `pusher` broadcaster, in Node: Echo needs no `window` when it is given
// either the pusher-js class (`Pusher:`) or a ready pusher-js instance (`client:`). Events are
// triggered with pusher-http-node, as a Laravel app's broadcaster would.
//
// Echo's conventions: `listen('OrderShipped')` binds `App\Events\OrderShipped` (the default
// namespace, dots turned into backslashes); a leading dot means "this exact name".
// `private('x')` is `private-x`, `join('x')` is `presence-x`, `encryptedPrivate('x')` is
// `private-encrypted-x`; `whisper('typing')` sends `client-typing`.

import Echo from 'laravel-echo';
import PusherClient from 'pusher-js';

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  collect,
  eventually,
  unique,
  reachState,
  rawFrames,
  withTimeout,
  STEP_TIMEOUT_MS,
} from '../lib/harness.mjs';

// "Nothing arrived" is asserted after a positive control (another listener got the event) and
// after `ctx.flush` on the pusher-js instance under Echo, on raw frames where pusher-js could have
// dropped a leak itself (a channel it left or never subscribed to).

/** Echo building its own pusher-js from the class, with an auth handler signing as a backend would. */
async function echoFromClass(ctx, { presence } = {}) {
  const backend = ctx.backend();
  const { target } = ctx;
  const echo = new Echo({
    broadcaster: 'pusher',
    key: target.key,
    cluster: 'mt1',
    wsHost: target.host,
    wsPort: target.port,
    wssPort: target.port,
    forceTLS: Boolean(target.tls),
    enabledTransports: ['ws', 'wss'],
    Pusher: PusherClient,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          const data = channelName.startsWith('presence-') ? presence : undefined;
          callback(null, backend.authorizeChannel(socketId, channelName, data));
        } catch (error) {
          callback(error, null);
        }
      },
    },
  });
  ctx.defer(() => echo.disconnect());
  ctx.adopt(echo.connector.pusher);
  await reachState(echo.connector.pusher.connection, 'connected');
  return echo;
}

/** Echo wrapping a pusher-js instance from the suite (`client:` option). */
async function echoFromClient(ctx, options = {}) {
  const client = ctx.client(options);
  const echo = new Echo({ broadcaster: 'pusher', client });
  ctx.defer(() => echo.disconnect());
  assert(echo.connector.pusher === client, 'Echo uses the pusher-js instance it was given');
  await reachState(client.connection, 'connected');
  return echo;
}

/** Resolves when an Echo channel reports `subscribed` (call right after creating the channel). */
function subscribed(channel) {
  return withTimeout(new Promise((resolve) => channel.subscribed(resolve)), STEP_TIMEOUT_MS, `Echo subscription to ${channel.name}`);
}

/** Resolves with the first payload an Echo channel's `listen`-style method delivers. */
function first(register, what) {
  return withTimeout(new Promise((resolve) => register(resolve)), STEP_TIMEOUT_MS, what);
}

scenario('echo: public channel: listen with the App.Events namespace and with a leading dot', async (ctx) => {
  const name = unique('orders');
  assert(typeof globalThis.window === 'undefined', 'this runs without a window global');
  const echo = await echoFromClass(ctx);
  assert(/^\d+\.\d+$/.test(echo.socketId()), `Echo.socketId(): ${echo.socketId()}`);
  assertEqual(echo.connectionStatus(), 'connected', 'Echo.connectionStatus()');

  const channel = echo.channel(name);
  const ready = subscribed(channel);
  const shipped = first((cb) => channel.listen('OrderShipped', cb), 'App\\Events\\OrderShipped');
  const nested = first((cb) => channel.listen('Orders.Refunded', cb), 'App\\Events\\Orders\\Refunded');
  const exact = first((cb) => channel.listen('.order.created', cb), 'order.created');
  await ready;

  const backend = ctx.backend();
  await backend.trigger(name, 'App\\Events\\OrderShipped', { order: { id: 1 } });
  await backend.trigger(name, 'App\\Events\\Orders\\Refunded', { order: { id: 2 } });
  await backend.trigger(name, 'order.created', { order: { id: 3 } });
  assertDeepEqual(await shipped, { order: { id: 1 } }, 'OrderShipped payload');
  assertDeepEqual(await nested, { order: { id: 2 } }, 'Orders.Refunded payload');
  assertDeepEqual(await exact, { order: { id: 3 } }, '.order.created payload');
});

scenario('echo: listenToAll reports names without the namespace; stopListening stops one listener', async (ctx) => {
  const name = unique('feed');
  const echo = await echoFromClient(ctx);
  const channel = echo.channel(name);
  await subscribed(channel);
  const all = [];
  channel.listenToAll((event, data) => all.push([event, data]));
  const shipped = [];
  const onShipped = (data) => shipped.push(data);
  channel.listen('OrderShipped', onShipped);

  const backend = ctx.backend();
  await backend.trigger(name, 'App\\Events\\OrderShipped', { n: 1 });
  await backend.trigger(name, 'raw-name', { n: 2 });
  await eventually(() => all.length === 2 && shipped.length === 1, 'both events');
  assertDeepEqual(all, [['OrderShipped', { n: 1 }], ['.raw-name', { n: 2 }]], 'listenToAll');

  channel.stopListening('OrderShipped', onShipped);
  await backend.trigger(name, 'App\\Events\\OrderShipped', { n: 3 });
  // listenToAll and listen are bound to the same pusher-js channel: by the time the first saw the
  // third event, the second would have too.
  await eventually(() => all.length === 3, 'the third event through listenToAll');
  assertEqual(shipped.length, 1, 'events after stopListening');
});

scenario('echo: private channel (Echo adds private-) and a notification, through client:', async (ctx) => {
  const userId = unique('7');
  const echo = await echoFromClient(ctx);
  const channel = echo.private(`App.Models.User.${userId}`);
  assertEqual(channel.name, `private-App.Models.User.${userId}`, 'channel name');
  await subscribed(channel);

  const updated = first((cb) => channel.listen('ProfileUpdated', cb), 'ProfileUpdated');
  const notified = first((cb) => channel.notification(cb), 'the notification');
  const backend = ctx.backend();
  await backend.trigger(`private-App.Models.User.${userId}`, 'App\\Events\\ProfileUpdated', { name: 'New' });
  await backend.trigger(
    `private-App.Models.User.${userId}`,
    'Illuminate\\Notifications\\Events\\BroadcastNotificationCreated',
    { id: 'n-1', type: 'App\\Notifications\\InvoicePaid', amount: 42 },
  );
  assertDeepEqual(await updated, { name: 'New' }, 'ProfileUpdated payload');
  assertDeepEqual(await notified, { id: 'n-1', type: 'App\\Notifications\\InvoicePaid', amount: 42 }, 'notification');
});

scenario('echo: presence join: here, joining and leaving', async (ctx) => {
  const room = unique('chat');
  const alice = { id: unique('alice'), name: 'Alice' };
  const bob = { id: unique('bob'), name: 'Bob' };
  const echoA = await echoFromClass(ctx, { presence: { user_id: alice.id, user_info: alice } });
  const joinedA = echoA.join(room);
  assertEqual(joinedA.name, `presence-${room}`, 'channel name');
  const hereA = await first((cb) => joinedA.here(cb), 'here() for Alice');
  assertDeepEqual(hereA, [alice], 'here() when alone');

  const joining = first((cb) => joinedA.joining(cb), 'joining() for Bob');
  const echoB = await echoFromClient(ctx, { presence: { user_id: bob.id, user_info: bob } });
  const joinedB = echoB.join(room);
  const hereB = await first((cb) => joinedB.here(cb), 'here() for Bob');
  assertDeepEqual(hereB.sort((x, y) => x.id.localeCompare(y.id)), [alice, bob].sort((x, y) => x.id.localeCompare(y.id)), 'here() for Bob');
  assertDeepEqual(await joining, bob, 'joining() payload');

  const leaving = first((cb) => joinedA.leaving(cb), 'leaving() for Bob');
  echoB.leave(room);
  assertDeepEqual(await leaving, bob, 'leaving() payload');
});

scenario('echo: whisper and listenForWhisper between two Echo instances, private and presence', async (ctx) => {
  const room = unique('room');
  const alice = { id: unique('alice'), name: 'Alice' };
  const bob = { id: unique('bob'), name: 'Bob' };
  const echoA = await echoFromClass(ctx, { presence: { user_id: alice.id, user_info: alice } });
  const echoB = await echoFromClient(ctx, { presence: { user_id: bob.id, user_info: bob } });

  for (const [label, open] of [
    ['private', (echo) => echo.private(room)],
    ['presence', (echo) => echo.join(room)],
  ]) {
    const chA = open(echoA);
    const chB = open(echoB);
    await Promise.all([subscribed(chA), subscribed(chB)]);
    const atA = [];
    chA.listenForWhisper('typing', (data) => atA.push(data));
    const atB = first((cb) => chB.listenForWhisper('typing', cb), `the ${label} whisper at B`);
    chA.whisper('typing', { name: 'Alice', typing: true });
    assertDeepEqual(await atB, { name: 'Alice', typing: true }, `${label} whisper payload`);
    chB.whisper('typing', { name: 'Bob', typing: false });
    await eventually(() => atA.length === 1, `the ${label} reply at A`);
    await ctx.flush(echoA.connector.pusher);
    assertDeepEqual(atA, [{ name: 'Bob', typing: false }], `${label} whispers seen by A (its own not echoed)`);
  }
});

scenario('echo: encryptedPrivate channel receives the decrypted payload', async (ctx) => {
  const name = unique('vault');
  const echo = await echoFromClient(ctx);
  const channel = echo.encryptedPrivate(name);
  assertEqual(channel.name, `private-encrypted-${name}`, 'channel name');
  await subscribed(channel);
  const got = first((cb) => channel.listen('SecretRotated', cb), 'the encrypted event');
  await ctx.backend().trigger(`private-encrypted-${name}`, 'App\\Events\\SecretRotated', { secret: 's3cr3t' });
  assertDeepEqual(await got, { secret: 's3cr3t' }, 'decrypted payload');
});

scenario('echo: a private channel refused by the server calls error()', async (ctx) => {
  const name = unique('forbidden');
  const forger = ctx.backend({ secret: 'not-the-app-secret' });
  const echo = await echoFromClient(ctx, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, forger.authorizeChannel(socketId, channelName)),
    },
  });
  const channel = echo.private(name);
  const error = await first((cb) => channel.error(cb), 'error() on the refused channel');
  assertEqual(error?.type, 'AuthError', 'error type');
  const seen = [];
  channel.listen('.leak', (data) => seen.push(data));
  const leaked = rawFrames(echo.connector.pusher.connection, (f) => f.channel === `private-${name}` && f.event === 'leak');

  // Positive control: an Echo whose backend signs honestly joins the same channel and gets it.
  const honest = await echoFromClient(ctx);
  const control = honest.private(name);
  await subscribed(control);
  const atControl = first((cb) => control.listen('.leak', cb), 'the event at the authorized Echo');
  await ctx.backend().trigger(`private-${name}`, 'leak', { n: 1 });
  assertDeepEqual(await atControl, { n: 1 }, 'payload at the authorized Echo');
  await ctx.flush(echo.connector.pusher);
  assertEqual(seen.length, 0, 'events on the refused channel');
  assertEqual(leaked.length, 0, 'frames of the refused channel');
  assertEqual(echo.connectionStatus(), 'connected', 'connection status');
});

scenario('echo: toOthers: trigger with socket_id = Echo.socketId() skips that Echo only', async (ctx) => {
  const name = unique('doc');
  const author = await echoFromClass(ctx);
  const reader = await echoFromClient(ctx);
  const chAuthor = author.private(name);
  const chReader = reader.private(name);
  await Promise.all([subscribed(chAuthor), subscribed(chReader)]);
  const atAuthor = collect(author.connector.pusher.channel(`private-${name}`), 'App\\Events\\DocSaved');
  const atReader = first((cb) => chReader.listen('DocSaved', cb), 'DocSaved at the reader');

  await ctx.backend().trigger(`private-${name}`, 'App\\Events\\DocSaved', { v: 2 }, { socket_id: author.socketId() });
  assertDeepEqual(await atReader, { v: 2 }, 'payload at the reader');
  await ctx.flush(author.connector.pusher);
  assertEqual(atAuthor.length, 0, 'events at the author');
});

scenario('echo: leave() unsubscribes: no more events on that channel', async (ctx) => {
  const name = unique('ticker');
  const echo = await echoFromClient(ctx);
  const channel = echo.channel(name);
  await subscribed(channel);
  const seen = [];
  channel.listen('.tick', (data) => seen.push(data));
  // pusher-js forgets the channel on leave(), so a leak would only show in the raw frames.
  const ticks = rawFrames(echo.connector.pusher.connection, (f) => f.channel === name && f.event === 'tick');
  // Positive control: a second Echo that stays on the channel.
  const stayer = await echoFromClient(ctx);
  const kept = stayer.channel(name);
  await subscribed(kept);
  const atStayer = [];
  kept.listen('.tick', (data) => atStayer.push(data));

  await ctx.backend().trigger(name, 'tick', 1);
  await eventually(() => seen.length === 1 && atStayer.length === 1, 'the first tick at both');

  echo.leave(name);
  await eventually(async () => (await ctx.subscriptionCount(name)) === 1, 'subscription_count 1 once leave() is processed');
  await ctx.backend().trigger(name, 'tick', 2);
  await eventually(() => atStayer.length === 2, 'the second tick at the Echo that stayed');
  await ctx.flush(echo.connector.pusher);
  assertDeepEqual(seen, [1], 'ticks seen after leave()');
  assertDeepEqual(ticks.map((f) => f.data), [1], 'tick frames received after leave()');

  // Once the other one leaves too, the channel is vacated.
  stayer.leave(name);
  await ctx.vacated(name);
});
