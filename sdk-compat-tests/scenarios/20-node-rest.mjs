// pusher-http-node REST calls against live channels: trigger/triggerBatch with `info`, channel
// queries, and the refusals the SDK surfaces as Pusher.RequestError (or throws itself).

import PusherServer from 'pusher';

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  unique,
  rejects,
  AssertionError,
} from '../lib/harness.mjs';

/** Asserts that `promise` rejects with a pusher-http-node RequestError of `status`. */
async function refusedWith(promise, status, what) {
  const error = await rejects(promise, what);
  assert(error instanceof PusherServer.RequestError, `${what}: expected a Pusher.RequestError, got ${error}`);
  assertEqual(error.status, status, `${what}: status (body ${JSON.stringify(error.body)})`);
  return error;
}

/** Runs `fn`, which must throw synchronously (a client-side SDK refusal); returns the error. */
function throwsSync(fn, what) {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new AssertionError(`${what}: expected the SDK to throw`);
}

async function json(responsePromise) {
  const response = await responsePromise;
  assertEqual(response.status, 200, 'status');
  return response.json();
}

/** Two subscribers on a public channel; two users, three sockets, on a presence channel. */
async function populate(ctx) {
  const pub = unique('compat-rest-pub');
  const pres = unique('presence-compat-rest');
  const u1 = unique('u1');
  const u2 = unique('u2');
  for (let i = 0; i < 2; i += 1) await ctx.subscribed(await ctx.connected(), pub);
  for (const user_id of [u1, u1, u2]) {
    await ctx.subscribed(await ctx.connected({ presence: { user_id, user_info: {} } }), pres);
  }
  return { pub, pres, u1, u2 };
}

scenario('node: trigger with info returns subscription_count and user_count', async (ctx) => {
  const { pub, pres } = await populate(ctx);
  const backend = ctx.backend();

  assertDeepEqual(await json(backend.trigger(pub, 'e', {})), {}, 'trigger body without info');
  assertDeepEqual(
    await json(backend.trigger(pub, 'e', {}, { info: 'subscription_count' })),
    { channels: { [pub]: { subscription_count: 2 } } },
    'public channel, info=subscription_count',
  );
  assertDeepEqual(
    await json(backend.trigger(pres, 'e', {}, { info: 'user_count' })),
    { channels: { [pres]: { user_count: 2 } } },
    'presence channel, info=user_count',
  );
  const both = await json(backend.trigger([pub, pres], 'e', {}, { info: 'user_count,subscription_count' }));
  assertEqual(both.channels?.[pres]?.user_count, 2, 'presence user_count (2 users on 3 sockets)');
  assertEqual(both.channels?.[pres]?.subscription_count, 3, 'presence subscription_count (3 sockets)');
  assertEqual(both.channels?.[pub]?.subscription_count, 2, 'public subscription_count');
  assert(!('user_count' in (both.channels?.[pub] ?? {})), 'no user_count for a public channel');

  const nobody = unique('compat-rest-empty');
  assertDeepEqual(
    await json(backend.trigger(nobody, 'e', {}, { info: 'subscription_count' })),
    { channels: { [nobody]: { subscription_count: 0 } } },
    'info for a channel nobody is subscribed to',
  );
});

scenario('node: triggerBatch with and without info', async (ctx) => {
  const { pub, pres } = await populate(ctx);
  const backend = ctx.backend();
  const listener = await ctx.connected();
  const channel = await ctx.subscribed(listener, pub);
  const got = once(channel, 'batch-2', 'the second batch event');

  assertDeepEqual(
    await json(backend.triggerBatch([
      { channel: pub, name: 'batch-1', data: { n: 1 } },
      { channel: pub, name: 'batch-2', data: { n: 2 } },
    ])),
    {},
    'batch body without info',
  );
  assertDeepEqual(await got, { n: 2 }, 'batch event data');

  const body = await json(backend.triggerBatch([
    { channel: pub, name: 'a', data: '1', info: 'subscription_count' },
    { channel: pres, name: 'b', data: '2' },
    { channel: pres, name: 'c', data: '3', info: 'user_count' },
  ]));
  assert(Array.isArray(body.batch) && body.batch.length === 3, `batch: an entry per event, got ${JSON.stringify(body)}`);
  assertDeepEqual(body.batch[0], { subscription_count: 3 }, 'batch[0] (public, 3 subscribers)');
  assertDeepEqual(body.batch[1], {}, 'batch[1] (no info asked)');
  assertDeepEqual(body.batch[2], { user_count: 2 }, 'batch[2] (presence user_count)');
});

scenario('node: GET /channels with filter_by_prefix and info', async (ctx) => {
  const { pub, pres } = await populate(ctx);
  const backend = ctx.backend();

  const all = await json(backend.get({ path: '/channels' }));
  assertDeepEqual(all.channels?.[pub], {}, 'a public channel in the full list (no attributes)');
  assertDeepEqual(all.channels?.[pres], {}, 'a presence channel in the full list (no attributes)');

  const prefix = pub.slice(0, pub.lastIndexOf('-'));
  assertDeepEqual(
    await json(backend.get({ path: '/channels', params: { filter_by_prefix: prefix } })),
    { channels: { [pub]: {} } },
    `filter_by_prefix=${prefix}`,
  );
  assertDeepEqual(
    await json(backend.get({ path: '/channels', params: { filter_by_prefix: 'compat-rest-nothing-here-' } })),
    { channels: {} },
    'a prefix nothing matches',
  );
  const presence = await json(backend.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } }));
  assertDeepEqual(presence.channels?.[pres], { user_count: 2 }, 'presence channel with info=user_count');
  for (const [name, attributes] of Object.entries(presence.channels ?? {})) {
    assert(name.startsWith('presence-'), `${name} listed under filter_by_prefix=presence-`);
    assert(Number.isInteger(attributes.user_count), `${name} has a user_count`);
  }
});

scenario('node: GET /channels/NAME with subscription_count, user_count and cache', async (ctx) => {
  const { pub, pres } = await populate(ctx);
  const backend = ctx.backend();

  assertDeepEqual(
    await json(backend.get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } })),
    { occupied: true, subscription_count: 2 },
    'public channel',
  );
  assertDeepEqual(await json(backend.get({ path: `/channels/${pub}` })), { occupied: true }, 'no info asked');
  const presence = await json(backend.get({ path: `/channels/${pres}`, params: { info: 'user_count' } }));
  assertEqual(presence.occupied, true, 'presence occupied');
  assertEqual(presence.user_count, 2, 'presence user_count');
  assertDeepEqual(
    await json(backend.get({ path: `/channels/${unique('compat-rest-vacant')}` })),
    { occupied: false },
    'a channel nobody is subscribed to',
  );

  // A cache channel: empty first, then the last event's data with a TTL of at most 30 minutes.
  const cache = unique('cache-compat-rest');
  const subscriber = await ctx.connected();
  await ctx.subscribed(subscriber, cache);
  assertDeepEqual(
    await json(backend.get({ path: `/channels/${cache}`, params: { info: 'cache' } })),
    { occupied: true, cache: null },
    'an occupied cache channel with nothing cached (cache: null, present)',
  );
  await backend.trigger(cache, 'first', { n: 1 });
  await backend.trigger(cache, 'last', { n: 2 });
  const filled = await json(backend.get({ path: `/channels/${cache}`, params: { info: 'cache,subscription_count' } }));
  assertEqual(filled.subscription_count, 1, 'cache channel subscription_count');
  assert(filled.cache && typeof filled.cache.data === 'string', `cache attribute: ${JSON.stringify(filled)}`);
  assertDeepEqual(JSON.parse(filled.cache.data), { n: 2 }, 'cached data (the last event)');
  assert(
    Number.isFinite(filled.cache.ttl) && filled.cache.ttl > 0 && filled.cache.ttl <= 1800,
    `cache ttl in (0, 1800]: ${filled.cache.ttl}`,
  );
});

scenario('node: GET /channels/presence-NAME/users lists the distinct user ids', async (ctx) => {
  const { pub, pres, u1, u2 } = await populate(ctx);
  const backend = ctx.backend();
  const body = await json(backend.get({ path: `/channels/${pres}/users` }));
  assert(Array.isArray(body.users), `users is an array: ${JSON.stringify(body)}`);
  assertDeepEqual(
    body.users.map((u) => u.id).sort(),
    [u1, u2].sort(),
    'user ids (one per user, not per socket)',
  );
  for (const user of body.users) assertDeepEqual(Object.keys(user), ['id'], 'fields of a user entry');
  assertDeepEqual(
    await json(backend.get({ path: `/channels/${unique('presence-compat-nobody')}/users` })),
    { users: [] },
    'users of an empty presence channel',
  );
  await refusedWith(backend.get({ path: `/channels/${pub}/users` }), 400, 'users of a public channel');
});

scenario('node: refusals surface as Pusher.RequestError with the right status', async (ctx) => {
  const name = unique('compat-rest-refusals');
  const backend = ctx.backend();
  const listener = await ctx.connected();
  const channel = await ctx.subscribed(listener, name);

  // Wrong secret: 401, on POST and GET, and on the user endpoints.
  const impostor = ctx.backend({ secret: 'definitely-not-the-secret' });
  await refusedWith(impostor.trigger(name, 'e', {}), 401, 'trigger signed with a wrong secret');
  await refusedWith(impostor.get({ path: '/channels' }), 401, 'GET signed with a wrong secret');
  await refusedWith(impostor.sendToUser(unique('user'), 'e', {}), 401, 'sendToUser signed with a wrong secret');
  await refusedWith(impostor.terminateUserConnections(unique('user')), 401, 'terminateUserConnections signed with a wrong secret');
  await refusedWith(ctx.backend({ key: 'not-a-key-of-this-app' }).trigger(name, 'e', {}), 401, 'trigger with an unknown key');

  // An app id the server does not know: 404.
  const elsewhere = ctx.backend({ appId: '999999' });
  await refusedWith(elsewhere.trigger(name, 'e', {}), 404, 'trigger to an unknown app id');
  await refusedWith(elsewhere.get({ path: '/channels' }), 404, 'GET /channels of an unknown app id');

  // Data: exactly 10 KB is accepted, one byte more is 413.
  const limit = 10 * 1024;
  const atLimit = once(channel, 'big', 'the 10 KB event');
  assertDeepEqual(await json(backend.trigger(name, 'big', 'x'.repeat(limit))), {}, '10 KB of data');
  assertEqual((await atLimit).length, limit, 'size of the 10 KB event received');
  await refusedWith(backend.trigger(name, 'big', 'x'.repeat(limit + 1)), 413, 'trigger with 10 KB + 1 byte');
  await refusedWith(
    backend.triggerBatch([{ channel: name, name: 'big', data: 'y'.repeat(limit + 1) }]),
    413,
    'batch event with 10 KB + 1 byte',
  );

  // Channels: 100 are accepted; pusher-http-node itself refuses 101.
  const hundred = Array.from({ length: 100 }, (_, i) => `${name}-${i}`);
  hundred[0] = name;
  const fanned = once(channel, 'wide', 'the 100-channel event');
  assertDeepEqual(await json(backend.trigger(hundred, 'wide', {})), {}, 'trigger to 100 channels');
  await fanned;
  const tooMany = throwsSync(() => backend.trigger([...hundred, `${name}-extra`], 'wide', {}), 'trigger to 101 channels');
  assert(/100 channels/.test(tooMany.message), `SDK error message: ${tooMany.message}`);

  // Batches: 10 events are accepted, 11 are 400.
  const events = (n) => Array.from({ length: n }, (_, i) => ({ channel: name, name: 'batched', data: String(i) }));
  assertDeepEqual(await json(backend.triggerBatch(events(10))), {}, 'batch of 10');
  await refusedWith(backend.triggerBatch(events(11)), 400, 'batch of 11');

  // Attributes that do not apply: user_count outside presence.
  await refusedWith(backend.get({ path: `/channels/${name}`, params: { info: 'user_count' } }), 400, 'user_count on a public channel');
  await refusedWith(backend.get({ path: '/channels', params: { info: 'user_count' } }), 400, 'user_count without the presence- prefix filter');
  // On trigger Herald accepts it (200) and reports only the attributes that apply.
  assertDeepEqual(
    await json(backend.trigger(name, 'e', {}, { info: 'user_count' })),
    { channels: { [name]: {} } },
    'trigger to a public channel with info=user_count',
  );
  assertDeepEqual(
    await json(backend.trigger(name, 'e', {}, { info: 'user_count,subscription_count' })),
    { channels: { [name]: { subscription_count: 1 } } },
    'trigger to a public channel with info=user_count,subscription_count',
  );
});

scenario('node: a channel leaves /channels, and a user leaves /users, once the last subscriber is gone', async (ctx) => {
  const pub = unique('compat-rest-vacate');
  const pres = unique('presence-compat-vacate');
  const stay = unique('stays');
  const go = unique('goes');
  const backend = ctx.backend();
  const leaver = await ctx.connected({ presence: { user_id: go, user_info: {} } });
  const stayer = await ctx.connected({ presence: { user_id: stay, user_info: {} } });
  await ctx.subscribed(leaver, pub);
  await ctx.subscribed(leaver, pres);
  await ctx.subscribed(stayer, pres);
  assertDeepEqual(await json(backend.get({ path: `/channels/${pub}` })), { occupied: true }, 'public channel while subscribed');

  leaver.disconnect();
  await ctx.vacated(pub);
  assertDeepEqual(
    await json(backend.get({ path: '/channels', params: { filter_by_prefix: pub } })),
    { channels: {} },
    'the vacated public channel in /channels',
  );
  assertDeepEqual(await json(backend.get({ path: `/channels/${pub}` })), { occupied: false }, 'public channel after the last subscriber left');
  assertDeepEqual(
    await json(backend.get({ path: `/channels/${pres}/users` })),
    { users: [{ id: stay }] },
    'presence users after one left',
  );
  const info = await json(backend.get({ path: `/channels/${pres}`, params: { info: 'user_count' } }));
  assertEqual(info.user_count, 1, 'presence user_count after one left');
});
