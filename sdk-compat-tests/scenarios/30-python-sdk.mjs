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

// Names unique to this run (time plus a random suffix) and to each call, so neither leftovers of
// other scenarios nor another run against the same server ever count.
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
let serial = 0;
const fresh = (prefix) => `${prefix}py-${RUN}-${(serial += 1)}`;
/** A user id unique to this run and call: `py-LABEL-RUN-N`. */
const uid = (label) => `py-${label}-${RUN}-${(serial += 1)}`;

/** The close code carried by a pusher-js connection 'error' event, if any. */
const closeCode = (error) => error?.data?.code ?? error?.error?.data?.code;

/** Records every frame pusher-js decoded on a connection, including channels it does not know. */
function rawFrames(client) {
  const frames = [];
  client.connection.bind('message', (message) => frames.push(message));
  return frames;
}

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
  const ends = [];
  for (const name of names) {
    const channel = await ctx.subscribed(client, name);
    channel.bind('multi', (data) => seen.push([name, data]));
    channel.bind('end', () => ends.push(name));
  }
  await pyOk(ctx, 'trigger', { channels: names, event: 'multi', data: { all: true } });
  // Markers on the same connection, published after: once they are in, a duplicate of the first
  // trigger would have arrived before them.
  await pyOk(ctx, 'trigger', { channels: names, event: 'end', data: 'end' });
  await eventually(() => ends.length >= 3, 'the three markers');
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
  // A marker on the same connection, published after: once it is in, every batch event (and any
  // duplicate) has arrived.
  await pyOk(ctx, 'trigger', { channels: a, event: 'seq', data: 'end' });
  await eventually(() => order.some(([, data]) => data === 'end'), 'the marker');
  assertDeepEqual(order, [...expected, [a, 'end']], 'deliveries in batch order, then the marker');
});

scenario('python: trigger_batch with per-event info returns {"batch": [...]} aligned with the events', async (ctx) => {
  const pub = fresh('');
  const room = fresh('presence-');
  const nobody = fresh('');
  const [u1, u2] = [uid('batch-u1'), uid('batch-u2')];
  const listener = await ctx.connected();
  const pubChannel = await ctx.subscribed(listener, pub);
  await ctx.subscribed(await ctx.connected(), pub);
  const roomSeen = [];
  for (const user_id of [u1, u1, u2]) {
    const channel = await ctx.subscribed(await ctx.connected({ presence: { user_id } }), room);
    roomSeen.push(collect(channel, 'b'));
  }
  const pubSeen = collect(pubChannel, 'a');

  const batch = [
    { channel: pub, name: 'a', data: { n: 1 }, info: 'subscription_count' },
    { channel: room, name: 'b', data: 'no info asked' },
    { channel: room, name: 'b', data: 'both', info: 'user_count,subscription_count' },
    { channel: nobody, name: 'c', data: 'nobody', info: 'subscription_count' },
  ];
  // The SDK passes each event dict through as-is: `info` goes in the body next to the event.
  const request = await pyOk(ctx, 'describe_request', { call: 'trigger_batch', args: { batch } });
  assertEqual([request.method, request.path.replace(/^\/apps\/[^/]+/, '')], ['POST', '/batch_events'], 'SDK request line');
  assertDeepEqual(
    JSON.parse(request.body).batch.map((event) => event.info ?? null),
    ['subscription_count', null, 'user_count,subscription_count', 'subscription_count'],
    'info of each event in the SDK body',
  );

  assertDeepEqual(
    await pyOk(ctx, 'trigger_batch', { batch }),
    {
      batch: [
        { subscription_count: 2 },
        {},
        { user_count: 2, subscription_count: 3 },
        { subscription_count: 0 },
      ],
    },
    'trigger_batch result: one entry per event, index-aligned',
  );
  // Markers published after the batch: once each connection has its own, the batch is all in.
  await pyOk(ctx, 'trigger_batch', {
    batch: [{ channel: pub, name: 'a', data: 'end' }, { channel: room, name: 'b', data: 'end' }],
  });
  await eventually(() => [pubSeen, ...roomSeen].every((seen) => seen.includes('end')), 'the markers');
  assertDeepEqual(pubSeen, [{ n: 1 }, 'end'], 'public channel deliveries');
  for (const [i, seen] of roomSeen.entries()) {
    assertDeepEqual(seen, ['no info asked', 'both', 'end'], `presence deliveries on socket ${i + 1}`);
  }
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

/**
 * Asserts that a `describe_request` result is a GET of `/apps/{id}{path}` with an empty body, the
 * SDK's `body_md5` of that empty body among the signed query parameters, and `params`.
 */
function assertGetWithBodyMd5(request, path, params = {}) {
  assertEqual(request.method, 'GET', `${path}: method`);
  assert(/^\/apps\/[^/]+\//.test(request.path), `${path}: path under /apps/{id}: ${request.path}`);
  assertEqual(request.path.replace(/^\/apps\/[^/]+/, ''), path, 'path');
  assertEqual(request.body, '', `${path}: body`);
  assertEqual(request.query_params.body_md5, EMPTY_MD5, `${path}: the SDK signs body_md5 of the empty body on GET`);
  assert(request.query_params.auth_signature, `${path}: signed: ${JSON.stringify(request.query_params)}`);
  for (const [key, value] of Object.entries(params)) {
    assertEqual(request.query_params[key], value, `${path}: query ${key}`);
  }
}

scenario('python: channels_info with prefix filter and user_count (GET signed with body_md5)', async (ctx) => {
  // Prefixes only this scenario's channels have (the trailing '-' keeps `...-3-` from matching
  // `...-30-`): exact equality on the lists cannot be disturbed by other scenarios' channels.
  const scope = fresh('list-');
  const prefix = `presence-${scope}-`;
  const publicPrefix = `${scope}-`;
  const room = `${prefix}room`;
  const publicName = `${publicPrefix}pub`;
  const [aliceId, bobId] = [uid('list-alice'), uid('list-bob')];

  const request = await pyOk(ctx, 'describe_request', {
    call: 'channels_info',
    args: { prefix_filter: 'presence-', attributes: ['user_count'] },
  });
  assertGetWithBodyMd5(request, '/channels', { info: 'user_count', filter_by_prefix: 'presence-' });

  const alice = await ctx.connected({ presence: { user_id: aliceId, user_info: { name: 'Alice' } } });
  const bob = await ctx.connected({ presence: { user_id: bobId } });
  const alice2 = await ctx.connected({ presence: { user_id: aliceId, user_info: { name: 'Alice' } } });
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
  assertGetWithBodyMd5(
    await pyOk(ctx, 'describe_request', {
      call: 'channel_info',
      args: { channel: publicName, attributes: ['subscription_count'] },
    }),
    `/channels/${publicName}`,
    { info: 'subscription_count' },
  );
  const [u1, u2] = [uid('info-u1'), uid('info-u2')];
  const one = await ctx.connected({ presence: { user_id: u1 } });
  const two = await ctx.connected({ presence: { user_id: u2 } });
  const twoAgain = await ctx.connected({ presence: { user_id: u2 } });
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
  // Unoccupied: the attribute asked for is present, with the count 0.
  assertDeepEqual(
    await pyOk(ctx, 'channel_info', { channel: fresh(''), attributes: ['subscription_count'] }),
    { occupied: false, subscription_count: 0 },
    'unoccupied channel',
  );

  twoAgain.disconnect();
  two.disconnect();
  await eventually(async () => {
    const info = await pyOk(ctx, 'channel_info', { channel: room, attributes: ['user_count'] });
    return info.user_count === 1 ? info : null;
  }, 'user_count to drop to 1 after the second user left');
  await eventually(async () => {
    const info = await pyOk(ctx, 'channel_info', { channel: publicName, attributes: ['subscription_count'] });
    return info.subscription_count === 1 ? info : null;
  }, 'subscription_count to drop to 1');
});

scenario('python: users_info lists the presence user ids', async (ctx) => {
  const room = fresh('presence-');
  assertGetWithBodyMd5(
    await pyOk(ctx, 'describe_request', { call: 'users_info', args: { channel: room } }),
    `/channels/${room}/users`,
  );
  const [ann, ben, cy] = [uid('users-ann'), uid('users-ben'), uid('users-cy')];
  for (const id of [ann, ben, ann, cy]) {
    const client = await ctx.connected({ presence: { user_id: id, user_info: { id } } });
    await ctx.subscribed(client, room);
  }
  const result = await pyOk(ctx, 'users_info', { channel: room });
  assert(Array.isArray(result.users), `users: ${JSON.stringify(result)}`);
  assertDeepEqual(
    [...result.users].sort((a, b) => (a.id < b.id ? -1 : 1)),
    [{ id: ann }, { id: ben }, { id: cy }].sort((a, b) => (a.id < b.id ? -1 : 1)),
    'users (one entry per user, not per socket)',
  );
  assertDeepEqual(
    await pyOk(ctx, 'users_info', { channel: fresh('presence-') }),
    { users: [] },
    'empty presence channel',
  );
});

// --- users: signin, terminate, send_to_user --------------------------------------------------------

scenario('python: terminate_user_connections (path without /apps) disconnects only that signed-in user (4009, stays off)', async (ctx) => {
  const victim = uid('terminated');
  const bystander = uid('bystander');
  const request = await pyOk(ctx, 'describe_request', {
    call: 'terminate_user_connections',
    args: { user_id: victim },
  });
  assertEqual([request.method, request.path], ['POST', `/users/${victim}/terminate_connections`], 'SDK request line');

  const room = fresh('presence-');
  const target = await signedIn(ctx, { user: { id: victim } });
  const targetTwo = await signedIn(ctx, { user: { id: victim } });
  const other = await signedIn(ctx, { user: { id: bystander } });
  // Presence membership under the same id, but never signed in: not a "user connection".
  const presenceOnly = await ctx.connected({ presence: { user_id: victim } });
  await ctx.subscribed(presenceOnly, room);
  const anonymous = await ctx.connected();

  const terminated = [target, targetTwo].map((client) => ({
    client,
    states: collect(client.connection, 'state_change'),
    errors: collect(client.connection, 'error'),
  }));
  const survivors = [['other user', other], ['presence-only', presenceOnly], ['anonymous', anonymous]].map(
    ([label, client]) => ({ label, client, states: collect(client.connection, 'state_change') }),
  );
  const report = (t) => `states ${JSON.stringify(t.states.map((s) => s.current))}, errors ${JSON.stringify(t.errors)}`;

  assertDeepEqual(await pyOk(ctx, 'terminate_user_connections', { user_id: victim }), {}, 'terminate result');
  await eventually(
    () => terminated.every(({ client }) => client.connection.state === 'disconnected'),
    `both connections of ${victim} to end 'disconnected'`,
    20_000,
  );
  const closedAt = Date.now();
  for (const [i, t] of terminated.entries()) {
    assert(t.errors.some((e) => closeCode(e) === 4009), `terminated connection ${i + 1}: an error with close code 4009: ${report(t)}`);
  }

  // The survivors are still served (each REST round trip is also time for a wrongful reconnect).
  const received = once(other.user, 'still-there', 'send_to_user to the other user', 20_000);
  await pyOk(ctx, 'send_to_user', { user_id: bystander, event: 'still-there', data: { ok: 1 } });
  assertDeepEqual(await received, { ok: 1 }, 'event to the other user after terminate');
  assertDeepEqual(
    await pyOk(ctx, 'users_info', { channel: room }),
    { users: [{ id: victim }] },
    'presence-only member still present',
  );
  // Unknown user: nothing to do, still success.
  assertDeepEqual(await pyOk(ctx, 'terminate_user_connections', { user_id: uid('nobody') }), {}, 'unknown user');

  // "Stays off": 4009 is a refusal to pusher-js, which reconnects at once if it reconnects at all;
  // give it at least 1.5 s since the close (a slow machine only lengthens the window).
  await sleep(Math.max(0, 1500 - (Date.now() - closedAt)));
  for (const [i, t] of terminated.entries()) {
    assertEqual(t.client.connection.state, 'disconnected', `terminated connection ${i + 1} state (${report(t)})`);
    assert(
      !t.states.some((s) => s.previous === 'disconnected' && s.current === 'connecting'),
      `terminated connection ${i + 1} reconnected by itself: ${report(t)}`,
    );
  }
  for (const { label, client, states } of survivors) {
    assertEqual(client.connection.state, 'connected', `${label} connection state`);
    assertDeepEqual(states, [], `${label} state changes since the terminate`);
  }
});

scenario('python: send_to_user reaches client.user.bind on that user only (no frame to others)', async (ctx) => {
  const [aliceId, bobId] = [uid('s2u-alice'), uid('s2u-bob')];
  const alice = await signedIn(ctx, { user: { id: aliceId } });
  const bob = await signedIn(ctx, { user: { id: bobId } });
  const aliceSeen = collect(alice.user, 'direct');
  const bobSeen = collect(bob.user, 'direct');
  // pusher-js silently drops frames for channels it does not know, so `user.bind` alone cannot see
  // a message delivered to the wrong connection: record every decoded frame as well.
  const aliceFrames = rawFrames(alice);
  const bobFrames = rawFrames(bob);

  assertDeepEqual(
    await pyOk(ctx, 'send_to_user', { user_id: aliceId, event: 'direct', data: { to: 'alice' } }),
    {},
    'send_to_user result',
  );
  await pyOk(ctx, 'send_to_user', { user_id: aliceId, event: 'direct', data: 'plain' });
  await pyOk(ctx, 'send_to_user', { user_id: bobId, event: 'direct', data: 'for bob' });
  await pyOk(ctx, 'send_to_user', { user_id: aliceId, event: 'direct', data: 'after bob' });
  // Positive controls, published after the messages each one must not have received: a misrouted
  // frame would have been queued on that connection before them.
  await eventually(
    () => aliceSeen.includes('after bob') && bobSeen.includes('for bob'),
    'the last message of each user',
  );
  assertDeepEqual(aliceSeen, [{ to: 'alice' }, 'plain', 'after bob'], 'alice (user.bind)');
  assertDeepEqual(bobSeen, ['for bob'], 'bob (user.bind)');

  const framesOn = (frames, id) => frames.filter((f) => f.channel === `#server-to-user-${id}`);
  assertDeepEqual(
    framesOn(aliceFrames, aliceId).map((f) => [f.event, f.data]),
    [['direct', { to: 'alice' }], ['direct', 'plain'], ['direct', 'after bob']],
    `raw frames for #server-to-user-${aliceId} on alice's connection`,
  );
  assertDeepEqual(framesOn(bobFrames, aliceId), [], `raw frames for #server-to-user-${aliceId} on bob's connection`);
  assertDeepEqual(framesOn(aliceFrames, bobId), [], `raw frames for #server-to-user-${bobId} on alice's connection`);
  assertDeepEqual(
    framesOn(bobFrames, bobId).map((f) => [f.event, f.data]),
    [['direct', 'for bob']],
    `raw frames for #server-to-user-${bobId} on bob's connection`,
  );
});

scenario('python: signin signed by authenticate_user (json.dumps ", " separators) is accepted', async (ctx) => {
  const id = uid('signed');
  const userData = { id, user_info: { name: 'Zoë', roles: ['a', 'b'] }, watchlist: [] };
  const client = await signedIn(ctx, { userAuthentication: pythonUserAuth(ctx, userData) });
  assertDeepEqual(client.user.user_data, userData, 'user_data echoed in signin_success');
  const received = once(client.user, 'hi');
  await pyOk(ctx, 'send_to_user', { user_id: id, event: 'hi', data: { n: 1 } });
  assertDeepEqual(await received, { n: 1 }, 'send_to_user after a Python-signed signin');
});

// --- channel authorization by the Python SDK -------------------------------------------------------

scenario('python: presence auth from authenticate(custom_data) is accepted; members carry user_info ({} when absent)', async (ctx) => {
  const room = fresh('presence-');
  const [annId, bobId] = [uid('ann'), uid('bob')];
  const annInfo = { name: 'Ann Zoë', tags: ['x', 'y'], level: 3, nested: { a: null } };
  const ann = await ctx.connected({
    channelAuthorization: pythonChannelAuth(ctx, { user_id: annId, user_info: annInfo }),
  });
  const annChannel = await ctx.subscribed(ann, room);
  const annFrames = rawFrames(ann);
  const added = once(annChannel, 'pusher:member_added', `member_added for ${bobId}`);

  // custom_data without user_info.
  const bob = await ctx.connected({ channelAuthorization: pythonChannelAuth(ctx, { user_id: bobId }) });
  const bobChannel = await ctx.subscribed(bob, room);

  const member = await added;
  assertEqual(member.id, bobId, 'member_added id');
  // Herald's member list (subscription_succeeded's presence.hash) gives a member without
  // user_info the info `{}`, whoever asks.
  assertDeepEqual(
    memberList(bobChannel).map((m) => ({ id: m.id, info: m.info })),
    [{ id: annId, info: annInfo }, { id: bobId, info: {} }].sort((a, b) => (a.id < b.id ? -1 : 1)),
    "bob's member list (from subscription_succeeded)",
  );
  assertDeepEqual(bobChannel.members.me, { id: bobId, info: {} }, 'members.me without user_info');
  // member_added carries no user_info key when the member has none; pusher-js then stores
  // `undefined` for it, so the member learned that way has no info at all in ann's list.
  const addedFrames = annFrames.filter((f) => f.channel === room && f.event === 'pusher_internal:member_added');
  assertDeepEqual(addedFrames.map((f) => f.data), [{ user_id: bobId }], 'raw member_added data on ann\'s connection');
  assertDeepEqual(
    memberList(annChannel).map((m) => ({ id: m.id, info: m.info === undefined ? 'undefined' : m.info })),
    [{ id: annId, info: annInfo }, { id: bobId, info: 'undefined' }].sort((a, b) => (a.id < b.id ? -1 : 1)),
    "ann's member list (bob from member_added)",
  );
  assertEqual(annChannel.members.count, 2, "ann's member count");
  assertDeepEqual(
    (await pyOk(ctx, 'users_info', { channel: room })).users.map((u) => u.id).sort(),
    [annId, bobId].sort(),
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
  const mallory = uid('mallory');
  const handler = (tamper) => ({
    customHandler: ({ socketId, channelName }, callback) => {
      ctx
        .python('authenticate', {
          channel: channelName,
          socket_id: socketId,
          custom_data: { user_id: mallory, user_info: { admin: false } },
        })
        .then((out) => {
          if (!out.ok) return callback(new Error(JSON.stringify(out)), null);
          if (!tamper) return callback(null, out.result);
          const tampered = JSON.stringify({ user_id: mallory, user_info: { admin: true } });
          return callback(null, { auth: out.result.auth, channel_data: tampered });
        }, (error) => callback(error, null));
    },
  });
  const outcome = (channel) => withTimeout(
    new Promise((resolve) => {
      channel.bind('pusher:subscription_error', (error) => resolve(['subscription_error', error]));
      channel.bind('pusher:subscription_succeeded', () => resolve(['subscription_succeeded']));
    }),
    20_000,
    'subscription outcome',
  );

  // Positive control: the same signature with the channel_data it covers is accepted.
  const honest = await ctx.connected({ channelAuthorization: handler(false) });
  assertEqual((await outcome(honest.subscribe(room)))[0], 'subscription_succeeded', 'untampered outcome');

  const client = await ctx.connected({ channelAuthorization: handler(true) });
  const failure = await outcome(client.subscribe(room));
  assertEqual(failure[0], 'subscription_error', 'tampered outcome');
  assertEqual(client.connection.state, 'connected', 'the refused client stays connected');
});

// --- refusals surfaced as Python exceptions --------------------------------------------------------

scenario('python: wrong secret or unknown key → PusherBadAuth (401), also on GET and terminate; nothing delivered', async (ctx) => {
  const wrongSecret = { config_overrides: { secret: 'not-the-secret' } };
  const unknownKey = { config_overrides: { key: `unknown-key-${RUN}` } };
  const refused = { error: 'PusherBadAuth', status: 401, sent: true };
  // A live channel and a signed-in user, so a refused call that took effect anyway would show.
  const name = fresh('');
  const room = fresh('presence-');
  const userId = uid('refused');
  const client = await signedIn(ctx, { user: { id: userId }, presence: { user_id: userId } });
  const channel = await ctx.subscribed(client, name);
  await ctx.subscribed(client, room);
  const seen = collect(channel, 'e');
  const direct = collect(client.user, 'e');
  const states = collect(client.connection, 'state_change');

  await pyFails(ctx, 'trigger', { ...wrongSecret, channels: name, event: 'e', data: 'refused-1' }, refused);
  await pyFails(ctx, 'trigger_batch', { ...wrongSecret, batch: [{ channel: name, name: 'e', data: 'refused-2' }] }, refused);
  await pyFails(ctx, 'channels_info', { ...wrongSecret, prefix_filter: 'presence-', attributes: ['user_count'] }, refused);
  await pyFails(ctx, 'channel_info', { ...wrongSecret, channel: name }, refused);
  await pyFails(ctx, 'users_info', { ...wrongSecret, channel: room }, refused);
  await pyFails(ctx, 'terminate_user_connections', { ...wrongSecret, user_id: userId }, refused);
  await pyFails(ctx, 'send_to_user', { ...wrongSecret, user_id: userId, event: 'e', data: 'refused-3' }, refused);
  await pyFails(ctx, 'trigger', { ...unknownKey, channels: name, event: 'e', data: 'refused-4' }, refused);
  await pyFails(ctx, 'send_to_user', { ...unknownKey, user_id: userId, event: 'e', data: 'refused-5' }, refused);
  await pyFails(ctx, 'terminate_user_connections', { ...unknownKey, user_id: userId }, refused);

  // Positive controls with the right credentials, published after every refused call.
  await pyOk(ctx, 'trigger', { channels: name, event: 'e', data: 'accepted' });
  await pyOk(ctx, 'send_to_user', { user_id: userId, event: 'e', data: 'accepted' });
  await eventually(() => seen.includes('accepted') && direct.includes('accepted'), 'the accepted events');
  assertDeepEqual(seen, ['accepted'], 'channel deliveries');
  assertDeepEqual(direct, ['accepted'], 'user deliveries');
  assertDeepEqual(states, [], 'state changes (a refused terminate closes nothing)');
});

scenario('python: a wrong-secret terminate does not disconnect anyone', async (ctx) => {
  const guarded = uid('guarded');
  const victim = uid('control');
  const client = await signedIn(ctx, { user: { id: guarded } });
  const control = await signedIn(ctx, { user: { id: victim } });
  const states = collect(client.connection, 'state_change');
  const errors = collect(client.connection, 'error');
  const controlErrors = collect(control.connection, 'error');

  await pyFails(
    ctx,
    'terminate_user_connections',
    { config_overrides: { secret: 'not-the-secret' }, user_id: guarded },
    { error: 'PusherBadAuth', status: 401, sent: true },
  );
  // Positive control, sent after the refused call: the right secret terminates the other user,
  // so a terminate that took effect would have closed the guarded connection by then.
  assertDeepEqual(await pyOk(ctx, 'terminate_user_connections', { user_id: victim }), {}, 'control terminate');
  await eventually(() => control.connection.state === 'disconnected', 'the control user to be disconnected', 20_000);
  assert(controlErrors.some((e) => closeCode(e) === 4009), `control close code 4009: ${JSON.stringify(controlErrors)}`);
  // And the guarded user is still served on the same connection.
  const received = once(client.user, 'still-here', 'send_to_user to the guarded user', 20_000);
  await pyOk(ctx, 'send_to_user', { user_id: guarded, event: 'still-here', data: { ok: true } });
  assertDeepEqual(await received, { ok: true }, 'event to the guarded user');

  assertEqual(client.connection.state, 'connected', 'state after a refused terminate');
  assertDeepEqual(states, [], `state changes of the guarded connection (errors ${JSON.stringify(errors)})`);
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
