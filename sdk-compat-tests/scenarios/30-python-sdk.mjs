// pusher-http-python 3.3.4 (in the suite's venv, through py/ops.py) against Herald, observed with
// pusher-js (Node build) clients. Every REST call here goes through the Python SDK's own request
// code, so its quirks are exercised as-is: `body_md5` of the empty body on every GET, and
// `terminate_user_connections` posting to `/users/{id}/terminate_connections` (no `/apps/{id}`).

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  collect,
  eventually,
  sleep,
  withTimeout,
  STEP_TIMEOUT_MS,
} from '../lib/harness.mjs';
import { ENCRYPTION_MASTER_KEY } from '../lib/clients.mjs';

const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e';

// Channel names unique to this run, so leftovers of other scenarios never count.
const RUN = Date.now().toString(36);
let serial = 0;
const fresh = (prefix) => `${prefix}py-${RUN}-${(serial += 1)}`;

/** Runs a Python op that must succeed; returns its result. */
async function pyOk(ctx, op, args) {
  const out = await ctx.python(op, args);
  assert(out.ok === true, `python ${op} ${JSON.stringify(args)}: expected success, got ${JSON.stringify(out)}`);
  return out.result;
}

/** Runs a Python op that must fail with `error` (class name), `status` and `sent`; returns the output. */
async function pyFails(ctx, op, args, { error, status, sent }) {
  const out = await ctx.python(op, args);
  const what = `python ${op}`;
  assert(out.ok === false, `${what}: expected ${error}, got success ${JSON.stringify(out.result)}`);
  const got = { error: out.error, status: out.status, sent: out.sent };
  const want = { error, status, sent };
  assertEqual(got, want, `${what} outcome (message: ${out.message})`);
  return out;
}

/** A client signed in (pusher:signin) with `user` (by default signed with pusher-http-node). */
async function signedIn(ctx, options) {
  const client = await ctx.connected(options);
  client.signin();
  await withTimeout(client.user.signinDonePromise, STEP_TIMEOUT_MS, 'pusher-js signin');
  assert(client.user.user_data, 'signin did not succeed (user_data is null)');
  // pusher-js subscribes to #server-to-user-{id} right after signin_success.
  await eventually(
    () => client.user.serverToUserChannel && client.user.serverToUserChannel.subscribed,
    `#server-to-user-${client.user.user_data.id} subscription`,
  );
  return client;
}

/** channelAuthorization customHandler signing with pusher-http-python's authenticate helper. */
function pythonChannelAuth(ctx, customData, configOverrides) {
  return {
    customHandler: ({ socketId, channelName }, callback) => {
      const args = { channel: channelName, socket_id: socketId };
      if (customData) args.custom_data = customData;
      if (configOverrides) args.config_overrides = configOverrides;
      ctx.python('authenticate', args).then(
        (out) => (out.ok ? callback(null, out.result) : callback(new Error(JSON.stringify(out)), null)),
        (error) => callback(error, null),
      );
    },
  };
}

/** userAuthentication customHandler signing with pusher-http-python's authenticate_user helper. */
function pythonUserAuth(ctx, userData) {
  return {
    customHandler: ({ socketId }, callback) => {
      ctx.python('authenticate_user', { socket_id: socketId, user_data: userData }).then(
        (out) => (out.ok ? callback(null, out.result) : callback(new Error(JSON.stringify(out)), null)),
        (error) => callback(error, null),
      );
    },
  };
}

function memberList(channel) {
  const members = [];
  channel.members.each((member) => members.push(member));
  return members.sort((a, b) => (a.id < b.id ? -1 : 1));
}

// --- events -------------------------------------------------------------------------------------

scenario('python: trigger reaches pusher-js on a public channel (dict arrives as object, str as string)', async (ctx) => {
  const name = fresh('');
  const client = await ctx.connected();
  const channel = await ctx.subscribed(client, name);
  const seen = collect(channel, 'py-event');

  // The SDK's request body is json.dumps with ensure_ascii: non-ASCII text travels as \uXXXX
  // escapes (surrogate pairs beyond the BMP) and must arrive as the original characters.
  const payload = { hello: 'world', n: 42, nested: { list: [1, 'two', null], yes: true }, text: 'Zoë ✓ 😀' };
  assertDeepEqual(await pyOk(ctx, 'trigger', { channels: name, event: 'py-event', data: payload }), {}, 'trigger result');
  assertDeepEqual(await pyOk(ctx, 'trigger', { channels: [name], event: 'py-event', data: 'just a string' }), {}, 'trigger result');
  await pyOk(ctx, 'trigger', { channels: name, event: 'py-event', data: 'Zoë ✓ 😀' });

  await eventually(() => seen.length >= 3, 'three events');
  assertDeepEqual(seen[0], payload, 'dict data');
  assertEqual(seen[1], 'just a string', 'str data');
  assertEqual(seen[2], 'Zoë ✓ 😀', 'non-ASCII str data');
});

scenario('python: trigger reaches pusher-js on a private channel', async (ctx) => {
  const name = fresh('private-');
  const client = await ctx.connected();
  const channel = await ctx.subscribed(client, name);
  const seen = collect(channel, 'secret');
  await pyOk(ctx, 'trigger', { channels: name, event: 'secret', data: { id: 7, tags: ['a', 'b'] } });
  await pyOk(ctx, 'trigger', { channels: name, event: 'secret', data: 'private text' });
  await eventually(() => seen.length >= 2, 'two events');
  assertDeepEqual(seen, [{ id: 7, tags: ['a', 'b'] }, 'private text'], 'private deliveries');
});

scenario('python: one trigger to several channels reaches each of them once', async (ctx) => {
  const names = [fresh(''), fresh('private-'), fresh('')];
  const client = await ctx.connected();
  const seen = [];
  for (const name of names) {
    const channel = await ctx.subscribed(client, name);
    channel.bind('multi', (data) => seen.push([name, data]));
  }
  await pyOk(ctx, 'trigger', { channels: names, event: 'multi', data: { all: true } });
  await eventually(() => seen.length >= 3, 'three deliveries');
  await sleep(300);
  assertDeepEqual(
    seen.map(([name]) => name).sort(),
    [...names].sort(),
    'one delivery per channel',
  );
  for (const [, data] of seen) assertDeepEqual(data, { all: true }, 'data');
});

scenario('python: socket_id excludes the sender connection (trigger and trigger_batch)', async (ctx) => {
  const name = fresh('');
  const sender = await ctx.connected();
  const other = await ctx.connected();
  const senderSeen = collect(await ctx.subscribed(sender, name), 'news');
  const otherSeen = collect(await ctx.subscribed(other, name), 'news');

  await pyOk(ctx, 'trigger', { channels: name, event: 'news', data: 'excluded-1', socket_id: sender.connection.socket_id });
  await pyOk(ctx, 'trigger_batch', {
    batch: [{ channel: name, name: 'news', data: 'excluded-2', socket_id: sender.connection.socket_id }],
  });
  // A marker everybody gets: once the sender has it, anything excluded would have arrived before.
  await pyOk(ctx, 'trigger', { channels: name, event: 'news', data: 'for-all' });

  await eventually(() => senderSeen.includes('for-all') && otherSeen.includes('for-all'), 'the marker on both');
  assertDeepEqual(otherSeen, ['excluded-1', 'excluded-2', 'for-all'], 'other connection');
  assertDeepEqual(senderSeen, ['for-all'], 'excluded connection');
});

scenario('python: trigger_batch of 10 events reaches clients in order', async (ctx) => {
  const a = fresh('');
  const b = fresh('private-');
  const client = await ctx.connected();
  const order = [];
  (await ctx.subscribed(client, a)).bind('seq', (data) => order.push([a, data]));
  (await ctx.subscribed(client, b)).bind('seq', (data) => order.push([b, data]));

  const batch = [];
  for (let i = 0; i < 10; i += 1) {
    const channel = i % 3 === 2 ? b : a;
    batch.push({ channel, name: 'seq', data: i % 2 ? { i } : `s${i}` });
  }
  const expected = batch.map((event) => [event.channel, event.data]);
  assertDeepEqual(await pyOk(ctx, 'trigger_batch', { batch }), {}, 'trigger_batch result');
  await eventually(() => order.length >= 10, 'ten events');
  await sleep(200);
  assertDeepEqual(order, expected, 'deliveries in batch order');
});

scenario('python: encrypted channel: SDK-encrypted trigger is decrypted by pusher-js', async (ctx) => {
  const name = fresh('private-encrypted-');
  const overrides = { encryption_master_key_base64: ENCRYPTION_MASTER_KEY };
  const client = await ctx.connected({ channelAuthorization: pythonChannelAuth(ctx, null, overrides) });
  const channel = await ctx.subscribed(client, name);
  const received = once(channel, 'sealed');
  await pyOk(ctx, 'trigger', { config_overrides: overrides, channels: name, event: 'sealed', data: { top: 'secret' } });
  assertDeepEqual(await received, { top: 'secret' }, 'decrypted data');
});

// --- queries (GET with body_md5 of the empty body) -------------------------------------------------

scenario('python: channels_info with prefix filter and user_count (GET signed with body_md5)', async (ctx) => {
  const room = fresh('presence-');
  const prefix = room.slice(0, room.lastIndexOf('-') + 1); // presence-py-RUN-
  const publicName = fresh('');

  const request = await pyOk(ctx, 'describe_request', {
    call: 'channels_info',
    args: { prefix_filter: 'presence-', attributes: ['user_count'] },
  });
  assertEqual(request.method, 'GET', 'method');
  assertEqual(request.query_params.body_md5, EMPTY_MD5, 'the SDK signs body_md5 of the empty body on GET');

  const alice = await ctx.connected({ presence: { user_id: 'alice', user_info: { name: 'Alice' } } });
  const bob = await ctx.connected({ presence: { user_id: 'bob' } });
  const alice2 = await ctx.connected({ presence: { user_id: 'alice', user_info: { name: 'Alice' } } });
  for (const client of [alice, bob, alice2]) await ctx.subscribed(client, room);
  await ctx.subscribed(alice, publicName);

  assertDeepEqual(
    await pyOk(ctx, 'channels_info', { prefix_filter: prefix, attributes: ['user_count'] }),
    { channels: { [room]: { user_count: 2 } } },
    'presence channels with user_count (unique users)',
  );
  assertDeepEqual(
    await pyOk(ctx, 'channels_info', { prefix_filter: prefix }),
    { channels: { [room]: {} } },
    'presence channels without info',
  );
  const publicPrefix = publicName.slice(0, publicName.lastIndexOf('-') + 1); // py-RUN-
  assertDeepEqual(
    await pyOk(ctx, 'channels_info', { prefix_filter: publicPrefix }),
    { channels: { [publicName]: {} } },
    'public channels by prefix (each value an empty object)',
  );
  assertDeepEqual(
    await pyOk(ctx, 'channels_info', { prefix_filter: `nothing-${RUN}-` }),
    { channels: {} },
    'no match is an empty object',
  );
  const all = await pyOk(ctx, 'channels_info', {});
  assert(all.channels && room in all.channels && publicName in all.channels, `unfiltered list: ${JSON.stringify(all)}`);
});

scenario('python: channel_info reports occupied, subscription_count and user_count', async (ctx) => {
  const publicName = fresh('');
  const room = fresh('presence-');
  const one = await ctx.connected({ presence: { user_id: 'u1' } });
  const two = await ctx.connected({ presence: { user_id: 'u2' } });
  const twoAgain = await ctx.connected({ presence: { user_id: 'u2' } });
  for (const client of [one, two]) await ctx.subscribed(client, publicName);
  for (const client of [one, two, twoAgain]) await ctx.subscribed(client, room);

  assertDeepEqual(
    await pyOk(ctx, 'channel_info', { channel: publicName, attributes: ['subscription_count'] }),
    { occupied: true, subscription_count: 2 },
    'public channel',
  );
  assertDeepEqual(await pyOk(ctx, 'channel_info', { channel: publicName }), { occupied: true }, 'no attributes');
  assertDeepEqual(
    await pyOk(ctx, 'channel_info', { channel: room, attributes: ['user_count'] }),
    { occupied: true, user_count: 2 },
    'presence channel',
  );
  const empty = await pyOk(ctx, 'channel_info', { channel: fresh(''), attributes: ['subscription_count'] });
  assertEqual(empty.occupied, false, `unoccupied channel ${JSON.stringify(empty)}`);
  assert(!empty.subscription_count, `unoccupied channel subscription_count: ${JSON.stringify(empty)}`);

  twoAgain.disconnect();
  two.disconnect();
  await eventually(async () => {
    const info = await pyOk(ctx, 'channel_info', { channel: room, attributes: ['user_count'] });
    return info.user_count === 1 ? info : null;
  }, 'user_count to drop to 1 after u2 left');
  await eventually(async () => {
    const info = await pyOk(ctx, 'channel_info', { channel: publicName, attributes: ['subscription_count'] });
    return info.subscription_count === 1 ? info : null;
  }, 'subscription_count to drop to 1');
});

scenario('python: users_info lists the presence user ids', async (ctx) => {
  const room = fresh('presence-');
  const clients = [];
  for (const id of ['ann', 'ben', 'ann', 'cy']) {
    const client = await ctx.connected({ presence: { user_id: id, user_info: { id } } });
    await ctx.subscribed(client, room);
    clients.push(client);
  }
  const result = await pyOk(ctx, 'users_info', { channel: room });
  assert(Array.isArray(result.users), `users: ${JSON.stringify(result)}`);
  assertDeepEqual(
    [...result.users].sort((a, b) => (a.id < b.id ? -1 : 1)),
    [{ id: 'ann' }, { id: 'ben' }, { id: 'cy' }],
    'users',
  );
  assertDeepEqual(
    await pyOk(ctx, 'users_info', { channel: fresh('presence-') }),
    { users: [] },
    'empty presence channel',
  );
});

// --- users: signin, terminate, send_to_user --------------------------------------------------------

scenario('python: terminate_user_connections (path without /apps) disconnects only that signed-in user', async (ctx) => {
  const request = await pyOk(ctx, 'describe_request', {
    call: 'terminate_user_connections',
    args: { user_id: 'py-user' },
  });
  assertEqual([request.method, request.path], ['POST', '/users/py-user/terminate_connections'], 'SDK request line');

  const room = fresh('presence-');
  const target = await signedIn(ctx, { user: { id: 'py-user' } });
  const targetTwo = await signedIn(ctx, { user: { id: 'py-user' } });
  const other = await signedIn(ctx, { user: { id: 'py-other' } });
  // Presence membership under the same id, but never signed in: not a "user connection".
  const presenceOnly = await ctx.connected({ presence: { user_id: 'py-user' } });
  await ctx.subscribed(presenceOnly, room);
  const anonymous = await ctx.connected();

  const states = [];
  target.connection.bind('state_change', ({ current }) => states.push(current));
  const errors = [];
  target.connection.bind('error', (error) => errors.push(error));

  assertDeepEqual(await pyOk(ctx, 'terminate_user_connections', { user_id: 'py-user' }), {}, 'terminate result');
  await eventually(
    () => target.connection.state !== 'connected' && targetTwo.connection.state !== 'connected',
    'both py-user connections to be closed',
  );
  // "Stays off": give pusher-js time to reconnect if the close told it to.
  await sleep(3000);
  assert(
    target.connection.state !== 'connected',
    `terminated client reconnected: states ${JSON.stringify(states)}, errors ${JSON.stringify(errors)}`,
  );
  assert(targetTwo.connection.state !== 'connected', `second terminated client: ${targetTwo.connection.state}`);

  for (const [label, client] of [['other user', other], ['presence-only', presenceOnly], ['anonymous', anonymous]]) {
    assertEqual(client.connection.state, 'connected', `${label} connection state`);
  }
  // The survivors are still served.
  const received = once(other.user, 'still-there');
  await pyOk(ctx, 'send_to_user', { user_id: 'py-other', event: 'still-there', data: { ok: 1 } });
  assertDeepEqual(await received, { ok: 1 }, 'event to the other user after terminate');
  assertDeepEqual(
    await pyOk(ctx, 'users_info', { channel: room }),
    { users: [{ id: 'py-user' }] },
    'presence-only member still present',
  );
  // Unknown user: nothing to do, still success.
  assertDeepEqual(await pyOk(ctx, 'terminate_user_connections', { user_id: `nobody-${RUN}` }), {}, 'unknown user');
});

scenario('python: send_to_user reaches client.user.bind on that user only', async (ctx) => {
  const alice = await signedIn(ctx, { user: { id: 'py-s2u-alice' } });
  const bob = await signedIn(ctx, { user: { id: 'py-s2u-bob' } });
  const aliceSeen = collect(alice.user, 'direct');
  const bobSeen = collect(bob.user, 'direct');

  assertDeepEqual(
    await pyOk(ctx, 'send_to_user', { user_id: 'py-s2u-alice', event: 'direct', data: { to: 'alice' } }),
    {},
    'send_to_user result',
  );
  await pyOk(ctx, 'send_to_user', { user_id: 'py-s2u-alice', event: 'direct', data: 'plain' });
  await pyOk(ctx, 'send_to_user', { user_id: 'py-s2u-bob', event: 'direct', data: 'for bob' });
  await eventually(() => aliceSeen.length >= 2 && bobSeen.length >= 1, 'direct messages');
  await sleep(200);
  assertDeepEqual(aliceSeen, [{ to: 'alice' }, 'plain'], 'alice');
  assertDeepEqual(bobSeen, ['for bob'], 'bob');
});

scenario('python: signin signed by authenticate_user (json.dumps ", " separators) is accepted', async (ctx) => {
  const userData = { id: 'py-signed', user_info: { name: 'Zoë', roles: ['a', 'b'] }, watchlist: [] };
  const client = await signedIn(ctx, { userAuthentication: pythonUserAuth(ctx, userData) });
  assertDeepEqual(client.user.user_data, userData, 'user_data echoed in signin_success');
  const received = once(client.user, 'hi');
  await pyOk(ctx, 'send_to_user', { user_id: 'py-signed', event: 'hi', data: { n: 1 } });
  assertDeepEqual(await received, { n: 1 }, 'send_to_user after a Python-signed signin');
});

// --- channel authorization by the Python SDK -------------------------------------------------------

scenario('python: presence auth from authenticate(custom_data) is accepted; members carry user_info', async (ctx) => {
  const room = fresh('presence-');
  const annInfo = { name: 'Ann Zoë', tags: ['x', 'y'], level: 3, nested: { a: null } };
  const ann = await ctx.connected({
    channelAuthorization: pythonChannelAuth(ctx, { user_id: 'py-ann', user_info: annInfo }),
  });
  const annChannel = await ctx.subscribed(ann, room);
  const added = once(annChannel, 'pusher:member_added', 'member_added for py-bob');

  const bob = await ctx.connected({ channelAuthorization: pythonChannelAuth(ctx, { user_id: 'py-bob' }) });
  const bobChannel = await ctx.subscribed(bob, room);

  const member = await added;
  assertEqual(member.id, 'py-bob', 'member_added id');
  // A member without user_info: the contract's example hash shows `{}` (absent/null also fine).
  const noInfo = (info) => (info && Object.keys(info).length === 0 ? null : info ?? null);
  assertDeepEqual(
    memberList(bobChannel).map((m) => ({ id: m.id, info: noInfo(m.info) })),
    [{ id: 'py-ann', info: annInfo }, { id: 'py-bob', info: null }],
    "bob's member list",
  );
  assertDeepEqual(
    memberList(annChannel).map((m) => ({ id: m.id, info: noInfo(m.info) })),
    [{ id: 'py-ann', info: annInfo }, { id: 'py-bob', info: null }],
    "ann's member list",
  );
  assertEqual(bobChannel.members.me.id, 'py-bob', 'members.me');
  assertEqual(annChannel.members.count, 2, "ann's member count");
  assertDeepEqual(
    (await pyOk(ctx, 'users_info', { channel: room })).users.map((u) => u.id).sort(),
    ['py-ann', 'py-bob'],
    'users_info',
  );
});

scenario('python: private channel auth from authenticate (no custom_data) is accepted', async (ctx) => {
  const name = fresh('private-');
  const client = await ctx.connected({ channelAuthorization: pythonChannelAuth(ctx, null) });
  const channel = await ctx.subscribed(client, name);
  const received = once(channel, 'ping');
  await pyOk(ctx, 'trigger', { channels: name, event: 'ping', data: { pong: true } });
  assertDeepEqual(await received, { pong: true }, 'event on a Python-authorized private channel');
});

scenario('python: a presence signature over other channel_data is refused', async (ctx) => {
  // The Python signature covers json.dumps' exact text; a client sending a re-serialized
  // channel_data (no spaces) must not pass.
  const room = fresh('presence-');
  const client = await ctx.connected({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        ctx
          .python('authenticate', {
            channel: channelName,
            socket_id: socketId,
            custom_data: { user_id: 'py-mallory', user_info: { admin: false } },
          })
          .then((out) => {
            const tampered = JSON.stringify({ user_id: 'py-mallory', user_info: { admin: true } });
            callback(null, { auth: out.result.auth, channel_data: tampered });
          }, (error) => callback(error, null));
      },
    },
  });
  const channel = client.subscribe(room);
  const failure = await withTimeout(
    new Promise((resolve) => {
      channel.bind('pusher:subscription_error', (error) => resolve(['subscription_error', error]));
      channel.bind('pusher:subscription_succeeded', () => resolve(['subscription_succeeded']));
    }),
    STEP_TIMEOUT_MS,
    'subscription outcome',
  );
  assertEqual(failure[0], 'subscription_error', 'outcome');
});

// --- refusals surfaced as Python exceptions --------------------------------------------------------

scenario('python: wrong secret or unknown key → PusherBadAuth (401), also on GET and terminate', async (ctx) => {
  const wrongSecret = { config_overrides: { secret: 'not-the-secret' } };
  const unknownKey = { config_overrides: { key: `unknown-key-${RUN}` } };
  const refused = { error: 'PusherBadAuth', status: 401, sent: true };
  await pyFails(ctx, 'trigger', { ...wrongSecret, channels: 'py-x', event: 'e', data: 'd' }, refused);
  await pyFails(ctx, 'trigger_batch', { ...wrongSecret, batch: [{ channel: 'py-x', name: 'e', data: 'd' }] }, refused);
  await pyFails(ctx, 'channels_info', { ...wrongSecret, prefix_filter: 'presence-', attributes: ['user_count'] }, refused);
  await pyFails(ctx, 'channel_info', { ...wrongSecret, channel: 'py-x' }, refused);
  await pyFails(ctx, 'users_info', { ...wrongSecret, channel: 'presence-x' }, refused);
  await pyFails(ctx, 'terminate_user_connections', { ...wrongSecret, user_id: 'py-user' }, refused);
  await pyFails(ctx, 'send_to_user', { ...wrongSecret, user_id: 'py-user', event: 'e', data: 'd' }, refused);
  await pyFails(ctx, 'trigger', { ...unknownKey, channels: 'py-x', event: 'e', data: 'd' }, refused);
  await pyFails(ctx, 'terminate_user_connections', { ...unknownKey, user_id: 'py-user' }, refused);
});

scenario('python: a wrong-secret terminate does not disconnect anyone', async (ctx) => {
  const client = await signedIn(ctx, { user: { id: 'py-guarded' } });
  await pyFails(
    ctx,
    'terminate_user_connections',
    { config_overrides: { secret: 'not-the-secret' }, user_id: 'py-guarded' },
    { error: 'PusherBadAuth', status: 401, sent: true },
  );
  await sleep(500);
  assertEqual(client.connection.state, 'connected', 'state after a refused terminate');
});

scenario('python: unknown app id → 404 as PusherBadStatus', async (ctx) => {
  const unknownApp = { config_overrides: { app_id: '987654321' } };
  const missing = { error: 'PusherBadStatus', status: 404, sent: true };
  await pyFails(ctx, 'trigger', { ...unknownApp, channels: 'py-x', event: 'e', data: 'd' }, missing);
  await pyFails(ctx, 'channels_info', { ...unknownApp }, missing);
  await pyFails(ctx, 'channel_info', { ...unknownApp, channel: 'py-x' }, missing);
});

scenario('python: event data over 10 KB (10240 bytes) → 413 PusherBadStatus; the SDK refuses > 30 KB (trigger) / > 10 KB (batch) itself', async (ctx) => {
  const name = fresh('');
  const client = await ctx.connected();
  const seen = collect(await ctx.subscribed(client, name), 'big');

  // Up to 10 KB (10240 bytes): delivered.
  const under = 'u'.repeat(10 * 1024);
  await pyOk(ctx, 'trigger', { channels: name, event: 'big', data: under });
  await pyOk(ctx, 'trigger_batch', { batch: [{ channel: name, name: 'big', data: 'b'.repeat(10_000) }] });
  // 8000 UTF-8 bytes, but 24000 characters of \u00e9 escapes in the SDK's ensure_ascii body:
  // the limit is on the event data, not on its JSON escaping.
  const escaped = 'é'.repeat(4000);
  await pyOk(ctx, 'trigger', { channels: name, event: 'big', data: escaped });
  // Over 10 KB: the SDK's own trigger check is sys.getsizeof(data) > 30720, so these reach the server.
  for (const data of ['o'.repeat(10 * 1024 + 1), 'o'.repeat(11 * 1024), 'é'.repeat(5121) /* 10242 bytes */]) {
    await pyFails(ctx, 'trigger', { channels: name, event: 'big', data },
      { error: 'PusherBadStatus', status: 413, sent: true });
  }
  // Over 30 KB for trigger, over 10 KB for trigger_batch: ValueError("Too much data") before sending.
  const tooMuch = await pyFails(ctx, 'trigger', { channels: name, event: 'big', data: 'x'.repeat(31 * 1024) },
    { error: 'ValueError', status: null, sent: false });
  assert(/Too much data/.test(tooMuch.message), `message: ${tooMuch.message}`);
  await pyFails(ctx, 'trigger_batch', { batch: [{ channel: name, name: 'big', data: 'y'.repeat(11 * 1024) }] },
    { error: 'ValueError', status: null, sent: false });

  await pyOk(ctx, 'trigger', { channels: name, event: 'big', data: 'end' });
  await eventually(() => seen.includes('end'), 'the closing event');
  assertEqual(seen[2], escaped, 'escaped non-ASCII data arrives intact');
  assertDeepEqual(
    seen.map((d) => `${d[0]}${d.length}`),
    [`u${under.length}`, 'b10000', 'é4000', 'e3'],
    'only the accepted events were delivered',
  );
});

scenario('python: trigger_batch of 11 events → 400 PusherBadRequest, nothing delivered', async (ctx) => {
  const name = fresh('');
  const client = await ctx.connected();
  const seen = collect(await ctx.subscribed(client, name), 'n');
  const batch = Array.from({ length: 11 }, (_, i) => ({ channel: name, name: 'n', data: String(i) }));
  await pyFails(ctx, 'trigger_batch', { batch }, { error: 'PusherBadRequest', status: 400, sent: true });
  await pyOk(ctx, 'trigger', { channels: name, event: 'n', data: 'after' });
  await eventually(() => seen.includes('after'), 'the closing event');
  assertDeepEqual(seen, ['after'], 'deliveries');
});

scenario('python: attributes invalid for the channel type → 400 PusherBadRequest', async (ctx) => {
  const publicName = fresh('');
  const client = await ctx.connected();
  await ctx.subscribed(client, publicName);
  const bad = { error: 'PusherBadRequest', status: 400, sent: true };
  // user_count needs a presence- prefix filter.
  await pyFails(ctx, 'channels_info', { prefix_filter: 'py-', attributes: ['user_count'] }, bad);
  await pyFails(ctx, 'channels_info', { attributes: ['user_count'] }, bad);
  // user_count on a public channel, users of a non-presence channel.
  await pyFails(ctx, 'channel_info', { channel: publicName, attributes: ['user_count'] }, bad);
  await pyFails(ctx, 'users_info', { channel: publicName }, bad);
  await pyFails(ctx, 'users_info', { channel: fresh('private-') }, bad);
});

scenario('python: the SDK\'s client-side validation errors surface without a request', async (ctx) => {
  const local = (error) => ({ error, status: null, sent: false });
  await pyFails(ctx, 'trigger', { channels: 'bad channel', event: 'e', data: 'd' }, local('ValueError'));
  await pyFails(ctx, 'trigger', { channels: 'py-x', event: 'e'.repeat(201), data: 'd' }, local('ValueError'));
  await pyFails(
    ctx,
    'trigger',
    { channels: Array.from({ length: 101 }, (_, i) => `py-${i}`), event: 'e', data: 'd' },
    local('ValueError'),
  );
  await pyFails(ctx, 'trigger', { channels: 'py-x', event: 'e', data: 'd', socket_id: 'not-a-socket' }, local('ValueError'));
  await pyFails(ctx, 'trigger', { channels: { 'py-x': 1 }, event: 'e', data: 'd' }, local('TypeError'));
  await pyFails(ctx, 'send_to_user', { user_id: 'bad user', event: 'e', data: 'd' }, local('ValueError'));
  await pyFails(ctx, 'terminate_user_connections', { user_id: '' }, local('ValueError'));
  await pyFails(ctx, 'authenticate_user', { socket_id: '1.2', user_data: { name: 'no id' } }, local('ValueError'));
  await pyFails(ctx, 'authenticate', { channel: 'presence-x', socket_id: 'nope' }, local('ValueError'));
});
