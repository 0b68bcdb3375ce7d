// pusher-http-php (the unmodified official SDK, `pusher/pusher-php-server` 7.2.6, loaded as
// lib/php.mjs says) against Herald, observed with pusher-js (Node build) clients. Every REST call
// goes through `php/ops.php` (one PHP process per call, as one request of a PHP application),
// so the SDK's own request code runs as-is: Guzzle's percent-encoded query, `ksort`ed auth
// parameters, `channel` for one channel, `json_encode` bodies. The pusher-js clients subscribe
// and sign in through a PHP backend (`php -S` with `php/endpoint.php`) that answers with
// authorizeChannel / authorizePresenceChannel / authenticateUser, and that backend validates the
// webhooks Herald really sends with `webhook()`.
//
// Results are what PHP holds, JSON-encoded by ops.php: the SDK's objects stay objects (`{}` when
// empty); `channels` is an associative array after the SDK's get_object_vars, so an empty one is
// `[]` (a PHP empty array), a filled one an object.

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  collect,
  eventually,
  rawFrames,
  withTimeout,
  STEP_TIMEOUT_MS,
} from '../lib/harness.mjs';
import { ENCRYPTION_MASTER_KEY } from '../lib/clients.mjs';
import { PhpEndpoint, PrefixProxy, runPhp } from '../lib/php.mjs';
import { WEBHOOK_EVENTS } from '../lib/webhooks.mjs';

const PHP = { requires: ['php'] };
const LIBRARY = 'pusher-http-php 7.2.6';

// Names unique to this run and call (valid for PHP's channel and user id checks).
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
let serial = 0;
const fresh = (prefix) => `${prefix}php-${RUN}-${(serial += 1)}`;
const uid = (label) => `php-${label}-${RUN}-${(serial += 1)}`;

/** The close code carried by a pusher-js connection 'error' event, if any. */
const closeCode = (error) => error?.data?.code ?? error?.error?.data?.code;

/**
 * Runs an SDK call that must succeed; returns `{result, requests}`. Each request it sent must
 * have been answered 200 and carry the SDK's X-Pusher-Library header.
 */
async function phpOk(ctx, op, args) {
  const out = await runPhp(ctx.target, op, args);
  assert(out.ok === true, `php ${op} ${JSON.stringify(args).slice(0, 300)}: expected success, got ${JSON.stringify(out)}`);
  for (const request of out.requests) {
    assertEqual(request.status, 200, `php ${op}: status of ${request.method} ${request.url}`);
    assertEqual(request.library, LIBRARY, `php ${op}: X-Pusher-Library`);
  }
  return out;
}

/** Runs an SDK call that must throw `error` (class) with `code`, after `sent` requests; returns the output. */
async function phpFails(ctx, op, args, { error, code, sent }) {
  const out = await runPhp(ctx.target, op, args);
  assert(out.ok === false, `php ${op}: expected ${error}, got success ${JSON.stringify(out.result)}`);
  assertDeepEqual(
    { error: out.error, code: out.code, sent: out.requests.length },
    { error, code, sent },
    `php ${op} outcome (message: ${out.message})`,
  );
  return out;
}

/** The PHP backend for this scenario (auth endpoints with the master key, webhook receiver). */
async function phpBackend(ctx) {
  const endpoint = await new PhpEndpoint(ctx.target, { masterKey: ENCRYPTION_MASTER_KEY }).start();
  ctx.defer(() => endpoint.dispose());
  return endpoint;
}

/** A pusher-js client whose channel authorization goes to the PHP backend as `user`. */
function phpClient(ctx, backend, user = {}, options = {}) {
  return ctx.connected({ channelAuthorization: backend.channelAuthorization(user), ...options });
}

/** A pusher-js client signed in through the PHP backend's authenticateUser as `user`. */
async function phpSignedIn(ctx, backend, user) {
  const client = await ctx.connected({
    channelAuthorization: backend.channelAuthorization(user),
    userAuthentication: backend.userAuthentication(user),
  });
  client.signin();
  await withTimeout(client.user.signinDonePromise, STEP_TIMEOUT_MS, 'pusher-js signin');
  assert(client.user.user_data, 'signin did not succeed (user_data is null)');
  assertEqual(client.user.user_data.id, user.user_id, 'signed-in user id');
  await eventually(
    () => client.user.serverToUserChannel && client.user.serverToUserChannel.subscribed,
    `#server-to-user-${user.user_id} subscription`,
  );
  return client;
}

const byId = (a, b) => (a.id < b.id ? -1 : 1);

function memberList(channel) {
  const members = [];
  channel.members.each((member) => members.push(member));
  return members.sort(byId);
}

// --- events ---------------------------------------------------------------------------------------

scenario('php: trigger reaches pusher-js (one channel and several); the result is {}; json_encode\'s escapes arrive decoded', async (ctx) => {
  const [one, two] = [fresh(''), fresh('')];
  const client = await ctx.connected();
  const seenOne = collect(await ctx.subscribed(client, one), 'php-event');
  const seenTwo = collect(await ctx.subscribed(client, two), 'php-event');

  // json_encode escapes "/" as "\/" and non-ASCII as \uXXXX (surrogate pairs beyond the BMP).
  const payload = { url: 'https://example.com/a/b', text: 'Zoë ✓ 😀', n: 42, list: [1, 'two', null], yes: true };
  const first = await phpOk(ctx, 'trigger', { channels: one, event: 'php-event', data: payload });
  assertDeepEqual(first.result, {}, 'trigger result (an empty object)');
  assertEqual(first.requests.length, 1, 'requests sent');
  const url = new URL(first.requests[0].url);
  assertEqual([first.requests[0].method, url.pathname], ['POST', `/apps/${ctx.target.appId}/events`], 'request line');
  assert(/^[0-9a-f]{32}$/.test(url.searchParams.get('body_md5')), `body_md5 in the query: ${url.search}`);

  const several = await phpOk(ctx, 'trigger', { channels: [one, two], event: 'php-event', data: 'just a string' });
  assertDeepEqual(several.result, {}, 'trigger result for two channels');

  await eventually(() => seenOne.length >= 2 && seenTwo.length >= 1, 'the events');
  assertDeepEqual(seenOne, [payload, 'just a string'], 'deliveries on the first channel');
  assertDeepEqual(seenTwo, ['just a string'], 'deliveries on the second channel');
}, PHP);

scenario('php: trigger with socket_id excludes that connection; with info returns channels.NAME.subscription_count / user_count', async (ctx) => {
  const backend = await phpBackend(ctx);
  const pub = fresh('');
  const room = fresh('presence-');
  const [u1, u2] = [uid('u1'), uid('u2')];
  const a = await ctx.connected();
  const b = await ctx.connected();
  const seenA = collect(await ctx.subscribed(a, pub), 'x');
  const seenB = collect(await ctx.subscribed(b, pub), 'x');
  for (const user of [{ user_id: u1 }, { user_id: u2 }, { user_id: u2 }]) {
    await ctx.subscribed(await phpClient(ctx, backend, user), room);
  }

  const excluded = await phpOk(ctx, 'trigger', {
    channels: pub,
    event: 'x',
    data: 'not for A',
    params: { socket_id: a.connection.socket_id },
  });
  assertDeepEqual(excluded.result, {}, 'trigger with socket_id result');
  assert(JSON.stringify(excluded.requests).includes('/events?'), 'the trigger was sent');

  assertDeepEqual(
    (await phpOk(ctx, 'trigger', { channels: pub, event: 'x', data: 'for both', params: { info: 'subscription_count' } })).result,
    { channels: { [pub]: { subscription_count: 2 } } },
    'trigger with info=subscription_count',
  );
  assertDeepEqual(
    (await phpOk(ctx, 'trigger', { channels: room, event: 'y', data: 'room', params: { info: 'user_count,subscription_count' } })).result,
    { channels: { [room]: { user_count: 2, subscription_count: 3 } } },
    'trigger on a presence channel with info=user_count,subscription_count',
  );
  const nobody = fresh('');
  assertDeepEqual(
    (await phpOk(ctx, 'trigger', { channels: nobody, event: 'x', data: 'nobody', params: { info: 'subscription_count' } })).result,
    { channels: { [nobody]: { subscription_count: 0 } } },
    'trigger with info on an empty channel',
  );

  await eventually(() => seenA.includes('for both') && seenB.includes('for both'), 'the event for both');
  assertDeepEqual(seenA, ['for both'], 'deliveries at the excluded connection');
  assertDeepEqual(seenB, ['not for A', 'for both'], 'deliveries at the other connection');
}, PHP);

scenario('php: triggerBatch delivers in order, honours per-event socket_id, and returns {"batch": [...]} aligned with info', async (ctx) => {
  const backend = await phpBackend(ctx);
  const pub = fresh('');
  const room = fresh('presence-');
  const a = await ctx.connected();
  const b = await ctx.connected();
  const seenA = collect(await ctx.subscribed(a, pub), 'n');
  const seenB = collect(await ctx.subscribed(b, pub), 'n');
  const member = await phpClient(ctx, backend, { user_id: uid('member') });
  const seenRoom = collect(await ctx.subscribed(member, room), 'r');

  const plain = await phpOk(ctx, 'triggerBatch', {
    batch: [
      { channel: pub, name: 'n', data: 1 },
      { channel: pub, name: 'n', data: { two: 2 } },
      { channel: pub, name: 'n', data: 'three', socket_id: a.connection.socket_id },
    ],
  });
  assertDeepEqual(plain.result, {}, 'triggerBatch result without info');
  assertEqual(new URL(plain.requests[0].url).pathname, `/apps/${ctx.target.appId}/batch_events`, 'batch path');

  assertDeepEqual(
    (await phpOk(ctx, 'triggerBatch', {
      batch: [
        { channel: pub, name: 'n', data: 'four', info: 'subscription_count' },
        { channel: room, name: 'r', data: 'no info asked' },
        { channel: room, name: 'r', data: 'both', info: 'user_count,subscription_count' },
      ],
    })).result,
    { batch: [{ subscription_count: 2 }, {}, { user_count: 1, subscription_count: 1 }] },
    'triggerBatch result with info: index-aligned, {} where no info was asked',
  );

  await eventually(() => seenA.includes('four') && seenB.includes('four') && seenRoom.includes('both'), 'the last events');
  assertDeepEqual(seenA, [1, { two: 2 }, 'four'], 'deliveries at A (excluded from the third)');
  assertDeepEqual(seenB, [1, { two: 2 }, 'three', 'four'], 'deliveries at B, in batch order');
  assertDeepEqual(seenRoom, ['no info asked', 'both'], 'deliveries on the presence channel');
}, PHP);

// --- queries --------------------------------------------------------------------------------------

scenario('php: getChannels with filter_by_prefix and info, getChannelInfo, getPresenceUsers', async (ctx) => {
  const backend = await phpBackend(ctx);
  const scope = fresh('q-');
  const prefix = `presence-${scope}-`;
  const room = `${prefix}room`;
  const publicName = `${scope}-pub`;
  const [alice, bob] = [
    { user_id: uid('alice'), user_info: { name: 'Alice' } },
    { user_id: uid('bob') },
  ];
  for (const user of [alice, bob, alice]) {
    await ctx.subscribed(await phpClient(ctx, backend, user), room);
  }
  const watcher = await ctx.connected();
  await ctx.subscribed(watcher, publicName);

  const listed = await phpOk(ctx, 'getChannels', { params: { filter_by_prefix: prefix, info: 'user_count' } });
  assertDeepEqual(listed.result, { channels: { [room]: { user_count: 2 } } }, 'getChannels with prefix and user_count');
  // Guzzle percent-encodes the query; the signature covers the decoded values.
  const query = new URL(listed.requests[0].url).searchParams;
  assertDeepEqual([query.get('filter_by_prefix'), query.get('info')], [prefix, 'user_count'], 'query as sent');
  assertDeepEqual(
    (await phpOk(ctx, 'getChannels', { params: { filter_by_prefix: prefix } })).result,
    { channels: { [room]: {} } },
    'getChannels by prefix without info (each value an empty object)',
  );
  assertDeepEqual(
    (await phpOk(ctx, 'getChannels', { params: { filter_by_prefix: `${scope}-` } })).result,
    { channels: { [publicName]: {} } },
    'getChannels of public channels by prefix',
  );
  // No match: `channels` must be a JSON object for get_object_vars; PHP then holds an empty array.
  assertDeepEqual(
    (await phpOk(ctx, 'getChannels', { params: { filter_by_prefix: `nothing-${RUN}-` } })).result,
    { channels: [] },
    'getChannels with no match (an empty PHP array)',
  );
  const all = (await phpOk(ctx, 'getChannels', {})).result;
  assert(room in all.channels && publicName in all.channels, `unfiltered getChannels: ${JSON.stringify(all).slice(0, 300)}`);

  assertDeepEqual(
    (await phpOk(ctx, 'getChannelInfo', { channel: room, params: { info: 'user_count,subscription_count' } })).result,
    { occupied: true, user_count: 2, subscription_count: 3 },
    'getChannelInfo of the presence channel',
  );
  assertDeepEqual(
    (await phpOk(ctx, 'getChannelInfo', { channel: publicName, params: { info: 'subscription_count' } })).result,
    { occupied: true, subscription_count: 1 },
    'getChannelInfo of the public channel',
  );
  assertDeepEqual(
    (await phpOk(ctx, 'getChannelInfo', { channel: fresh('') })).result,
    { occupied: false },
    'getChannelInfo of an empty channel',
  );

  assertDeepEqual(
    [...(await phpOk(ctx, 'getPresenceUsers', { channel: room })).result.users].sort(byId),
    [{ id: alice.user_id }, { id: bob.user_id }].sort(byId),
    'getPresenceUsers: one entry per user, not per socket',
  );
  assertDeepEqual(
    (await phpOk(ctx, 'getPresenceUsers', { channel: fresh('presence-') })).result,
    { users: [] },
    'getPresenceUsers of an empty presence channel',
  );

  watcher.disconnect();
  await eventually(
    async () => (await phpOk(ctx, 'getChannelInfo', { channel: publicName })).result.occupied === false,
    'the public channel to be vacated',
  );
}, PHP);

// --- the PHP backend as pusher-js's auth endpoint -------------------------------------------------

scenario('php: pusher-js subscribes through a PHP auth endpoint: authorizeChannel, authorizePresenceChannel (members carry user_info), a 403 refusal', async (ctx) => {
  const backend = await phpBackend(ctx);
  const priv = fresh('private-');
  const room = fresh('presence-');
  const denied = fresh('private-');
  const ann = { user_id: uid('ann'), user_info: { name: 'Ann', roles: ['admin'] } };
  const ben = { user_id: uid('ben') };

  const a = await phpClient(ctx, backend, ann);
  const privChannel = await ctx.subscribed(a, priv);
  const roomA = await ctx.subscribed(a, room);
  const b = await phpClient(ctx, backend, ben);
  const roomB = await ctx.subscribed(b, room);

  assertDeepEqual(
    memberList(roomB).map((m) => ({ id: m.id, info: m.info })),
    [
      { id: ann.user_id, info: ann.user_info },
      { id: ben.user_id, info: {} },
    ].sort(byId),
    'members as B sees them (user_info from authorizePresenceChannel; {} when not given)',
  );
  assertEqual(roomA.members.me.id, ann.user_id, 'members.me at A');

  // The private channel works: an event reaches it.
  const received = once(privChannel, 'p');
  await phpOk(ctx, 'trigger', { channels: priv, event: 'p', data: { ok: true } });
  assertDeepEqual(await received, { ok: true }, 'event on the private channel');

  // The backend refuses: pusher-js reports the endpoint's 403, and the server never sees a subscribe.
  const refused = (await phpClient(ctx, backend, {}, { channelAuthorization: backend.channelAuthorization({}, { deny: '1' }) }));
  const error = await once(refused.subscribe(denied), 'pusher:subscription_error', 'the refused subscription');
  assertEqual(error.status, 403, `subscription_error status: ${JSON.stringify(error)}`);
  assertDeepEqual(
    (await phpOk(ctx, 'getChannelInfo', { channel: denied })).result,
    { occupied: false },
    'the refused channel is not occupied',
  );

  const log = (await backend.log()).filter((entry) => entry.path === '/pusher/auth');
  const calls = log.map((entry) => [entry.call ?? null, entry.form.channel_name, entry.status]);
  assertDeepEqual(
    calls,
    [
      ['authorizeChannel', priv, 200],
      ['authorizePresenceChannel', room, 200],
      ['authorizePresenceChannel', room, 200],
      [null, denied, 403],
    ],
    'auth requests the PHP backend answered',
  );
  const presenceAuth = log[1].response;
  assertDeepEqual(JSON.parse(presenceAuth.channel_data), ann, 'channel_data signed by authorizePresenceChannel');
  assert(presenceAuth.auth.startsWith(`${ctx.target.key}:`), `auth is KEY:SIGNATURE: ${presenceAuth.auth}`);
}, PHP);

// --- users ----------------------------------------------------------------------------------------

scenario('php: signin through authenticateUser; sendToUser reaches that user only; terminateUserConnections closes that user (4009), not others', async (ctx) => {
  const backend = await phpBackend(ctx);
  const carol = { user_id: uid('carol'), user_info: { name: 'Carol' } };
  const dave = { user_id: uid('dave') };
  const carol1 = await phpSignedIn(ctx, backend, carol);
  const carol2 = await phpSignedIn(ctx, backend, carol);
  const daveClient = await phpSignedIn(ctx, backend, dave);
  assertDeepEqual(carol1.user.user_data, { id: carol.user_id, user_info: carol.user_info }, 'user_data from authenticateUser');
  const signins = (await backend.log()).filter((entry) => entry.path === '/pusher/user-auth');
  assertDeepEqual(signins.map((entry) => [entry.call, entry.status]), Array(3).fill(['authenticateUser', 200]), 'signin requests');

  const atDave = collect(daveClient.user, 'note');
  const atCarol = [once(carol1.user, 'note', 'sendToUser at Carol 1'), once(carol2.user, 'note', 'sendToUser at Carol 2')];
  const sent = await phpOk(ctx, 'sendToUser', { user_id: carol.user_id, event: 'note', data: { hi: 'Carol' } });
  assertDeepEqual(sent.result, {}, 'sendToUser result');
  assertEqual(new URL(sent.requests[0].url).pathname, `/apps/${ctx.target.appId}/events`, 'sendToUser is a trigger');
  for (const delivery of await Promise.all(atCarol)) assertDeepEqual(delivery, { hi: 'Carol' }, 'event at Carol');
  await ctx.flush(daveClient);
  assertDeepEqual(atDave, [], 'events at Dave');

  const errors = [collect(carol1.connection, 'error'), collect(carol2.connection, 'error')];
  const daveStates = collect(daveClient.connection, 'state_change');
  const terminated = await phpOk(ctx, 'terminateUserConnections', { user_id: carol.user_id });
  assertDeepEqual(terminated.result, {}, 'terminateUserConnections result');
  assertEqual(
    new URL(terminated.requests[0].url).pathname,
    `/apps/${ctx.target.appId}/users/${carol.user_id}/terminate_connections`,
    'terminate path',
  );
  await eventually(
    () => [carol1, carol2].every((client) => client.connection.state === 'disconnected'),
    "both of Carol's connections to end disconnected",
    20_000,
  );
  for (const [i, seen] of errors.entries()) {
    assert(seen.some((e) => closeCode(e) === 4009), `Carol ${i + 1}: close code 4009: ${JSON.stringify(seen)}`);
  }
  const still = once(daveClient.user, 'still', 'sendToUser at Dave after the terminate');
  await phpOk(ctx, 'sendToUser', { user_id: dave.user_id, event: 'still', data: 'here' });
  assertEqual(await still, 'here', 'Dave is still served');
  assertDeepEqual(daveStates, [], "Dave's state changes");
  assertDeepEqual(
    (await phpOk(ctx, 'terminateUserConnections', { user_id: uid('nobody') })).result,
    {},
    'terminateUserConnections of an unknown user',
  );
}, PHP);

// --- webhooks -------------------------------------------------------------------------------------

scenario('php: webhook() in the PHP backend accepts the webhooks Herald sends (occupied, member_added, client_event, member_removed, vacated) and refuses a tampered copy', async (ctx) => {
  const backend = await phpBackend(ctx);
  const url = `${backend.url}/pusher/webhook`;
  const registration = await ctx.target.cli([
    'webhooks', 'add', '--app', ctx.target.appId, '--url', url, '--events', WEBHOOK_EVENTS.join(','), '--json',
  ]);
  ctx.defer(() => ctx.target.cli(['webhooks', 'remove', '--app', ctx.target.appId, String(registration.id)]));
  const hooks = async () => (await backend.log()).filter((entry) => entry.path === '/pusher/webhook');
  const events = async () => (await hooks()).filter((h) => h.status === 200).flatMap((h) => h.webhook.events);
  const noRefusals = async () => {
    const refused = (await hooks()).filter((h) => h.status !== 200);
    assert(refused.length === 0, `webhook() refused: ${JSON.stringify(refused[0])}`);
  };

  // Active once a probe channel's channel_occupied got through (the CLI's change takes up to 2 s).
  // Behind a load balancer (the --cluster target) each node picks the change up on its own: one
  // probe connection per node (opened one after the other, so round robin spreads them), and each
  // must see its own probe channel reported; else the room's events on a node still behind are
  // never reported (its interest in them was not loaded yet).
  const probeConnections = [];
  for (let i = 0; i < (ctx.target.nodeCount ?? 1); i += 1) probeConnections.push(await ctx.connected());
  const pending = probeConnections.map((connection) => ({ connection, channels: [] }));
  await eventually(async () => {
    await noRefusals();
    const seen = await events();
    const reported = (p) => seen.some((e) => e.name === 'channel_occupied' && p.channels.includes(e.channel));
    const behind = pending.filter((p) => !reported(p));
    if (behind.length === 0) return true;
    for (const p of behind) {
      const name = fresh('probe-');
      p.channels.push(name);
      await ctx.subscribed(p.connection, name);
    }
    return false;
  }, `the PHP webhook endpoint to get a channel_occupied from each of ${pending.length} probe connection(s)`, 15_000);
  for (const connection of probeConnections) connection.disconnect();

  const room = fresh('presence-');
  const erin = { user_id: uid('erin'), user_info: { name: 'Erin' } };
  const frank = { user_id: uid('frank') };
  const e = await phpClient(ctx, backend, erin);
  const f = await phpClient(ctx, backend, frank);
  const roomE = await ctx.subscribed(e, room);
  const roomF = await ctx.subscribed(f, room);
  const whisper = once(roomF, 'client-typing', 'the client event at Frank');
  roomE.trigger('client-typing', { typing: true });
  assertDeepEqual(await whisper, { typing: true }, 'client event between the pusher-js clients');
  const socketId = e.connection.socket_id;
  e.disconnect();
  f.disconnect();

  const about = async () => (await events()).filter((event) => event.channel === room);
  // Both members removed and the channel vacated (about 3 s after the leave). Behind a cluster
  // the two members' removals come from their own nodes, so no order across them is asserted.
  // On a timeout the message lists what did arrive for the room (and every request's path and
  // status), so a failure in CI says which webhook was missing.
  let lastSeen = [];
  const story = await eventually(async () => {
    await noRefusals();
    const seen = await about();
    lastSeen = seen.map((event) => `${event.name}${event.user_id ? `:${event.user_id}` : ''}`);
    const removed = seen.filter((event) => event.name === 'member_removed').length;
    return removed >= 2 && seen.some((event) => event.name === 'channel_vacated') ? seen : null;
  }, `member_removed twice and channel_vacated for ${room} through webhook()`, 20_000).catch((error) => {
    throw new Error(`${error.message}; seen for the room: [${lastSeen.join(', ')}]`);
  });
  const clientEvent = story.find((event) => event.name === 'client_event');
  assertDeepEqual(
    clientEvent && { ...clientEvent, data: JSON.parse(clientEvent.data) },
    { name: 'client_event', channel: room, event: 'client-typing', data: { typing: true }, socket_id: socketId, user_id: erin.user_id },
    'client_event as webhook() returns it',
  );
  const ordered = (list) => list.sort((x, y) => (x.user_id < y.user_id ? -1 : 1));
  const named = (name) => story.filter((event) => event.name === name).map(({ name: n, channel, user_id: id }) => ({ name: n, channel, user_id: id }));
  assertDeepEqual(named('channel_occupied'), [{ name: 'channel_occupied', channel: room, user_id: undefined }], 'channel_occupied');
  assertDeepEqual(
    ordered(named('member_added')),
    ordered([erin, frank].map((u) => ({ name: 'member_added', channel: room, user_id: u.user_id }))),
    'member_added',
  );
  assertDeepEqual(
    ordered(named('member_removed')),
    ordered([erin, frank].map((u) => ({ name: 'member_removed', channel: room, user_id: u.user_id }))),
    'member_removed',
  );
  assertDeepEqual(named('channel_vacated'), [{ name: 'channel_vacated', channel: room, user_id: undefined }], 'channel_vacated');

  // Each accepted request: time_ms from get_time_ms() within the last minute, exact-case headers.
  const accepted = await hooks();
  for (const hook of accepted) {
    assert(Math.abs(hook.webhook.time_ms - hook.time_ms) < 60_000, `time_ms ${hook.webhook.time_ms} vs received ${hook.time_ms}`);
    assert('X-Pusher-Key' in hook.headers && 'X-Pusher-Signature' in hook.headers, `headers ${JSON.stringify(Object.keys(hook.headers))}`);
  }

  // The same SDK call outside the server: the request as received passes; a tampered body does not.
  const sample = accepted[accepted.length - 1];
  const again = await phpOk(ctx, 'webhook', { headers: sample.headers, body: sample.body });
  assertDeepEqual(again.result, sample.webhook, 'webhook() on the recorded request');
  assertEqual(again.requests.length, 0, 'webhook() sends nothing');
  const tampered = sample.body.replace(room, `${room}x`);
  assert(tampered !== sample.body, 'the tampered copy differs');
  const refused = await phpFails(ctx, 'webhook', { headers: sample.headers, body: tampered }, { error: 'Pusher\\PusherException', code: 0, sent: 0 });
  assert(/invalid signature/.test(refused.message), `message: ${refused.message}`);
  await phpFails(
    ctx,
    'webhook',
    { headers: sample.headers, body: sample.body, config_overrides: { secret: 'not-the-secret' } },
    { error: 'Pusher\\PusherException', code: 0, sent: 0 },
  );
}, { ...PHP, needs: ['cli'], timeoutMs: 60_000 });

// --- the path option ------------------------------------------------------------------------------

// The SDK hands Guzzle `scheme://host:port` + `path` as base_uri and `apps/...` as a relative
// reference, resolved by RFC 3986: a `path` without a trailing slash loses its last segment
// (`/realtime/pusher-api` + `apps/1/events` is `/realtime/apps/1/events`). So the option works as
// `/realtime/pusher-api/`; the scenario shows both.
scenario('php: the path option: Herald behind a reverse proxy under a prefix (stripped, and passed on)', async (ctx) => {
  const prefix = '/realtime/pusher-api';
  const backend = await phpBackend(ctx);
  for (const strip of [true, false]) {
    const proxy = await new PrefixProxy(ctx.target, { prefix, strip }).start();
    ctx.defer(() => proxy.close());
    const via = { config_overrides: { host: '127.0.0.1', port: proxy.port, path: `${prefix}/` } };
    const mode = strip ? 'stripping proxy' : 'passing proxy';
    const name = fresh('');
    const room = fresh('presence-');
    const user = { user_id: uid('path') };
    const client = await phpSignedIn(ctx, backend, user);
    const seen = collect(await ctx.subscribed(client, name), 'e');
    await ctx.subscribed(client, room);
    const direct = collect(client.user, 'direct');

    assertDeepEqual((await phpOk(ctx, 'trigger', { ...via, channels: name, event: 'e', data: 'one' })).result, {}, `${mode}: trigger`);
    assertDeepEqual(
      (await phpOk(ctx, 'triggerBatch', { ...via, batch: [{ channel: name, name: 'e', data: 'two', info: 'subscription_count' }] })).result,
      { batch: [{ subscription_count: 1 }] },
      `${mode}: triggerBatch`,
    );
    assertDeepEqual(
      (await phpOk(ctx, 'getChannels', { ...via, params: { filter_by_prefix: room, info: 'user_count' } })).result,
      { channels: { [room]: { user_count: 1 } } },
      `${mode}: getChannels`,
    );
    assertDeepEqual(
      (await phpOk(ctx, 'getChannelInfo', { ...via, channel: name, params: { info: 'subscription_count' } })).result,
      { occupied: true, subscription_count: 1 },
      `${mode}: getChannelInfo`,
    );
    assertDeepEqual((await phpOk(ctx, 'getPresenceUsers', { ...via, channel: room })).result, { users: [{ id: user.user_id }] }, `${mode}: getPresenceUsers`);
    assertDeepEqual((await phpOk(ctx, 'sendToUser', { ...via, user_id: user.user_id, event: 'direct', data: 'three' })).result, {}, `${mode}: sendToUser`);
    await eventually(() => seen.length === 2 && direct.length === 1, `${mode}: the deliveries`);
    assertDeepEqual([seen, direct], [['one', 'two'], ['three']], `${mode}: deliveries`);
    const terminated = await phpOk(ctx, 'terminateUserConnections', { ...via, user_id: user.user_id });
    assertDeepEqual(terminated.result, {}, `${mode}: terminateUserConnections`);
    await eventually(() => client.connection.state === 'disconnected', `${mode}: the terminated user to be disconnected`, 20_000);

    assertEqual(proxy.seen.length, 7, `${mode}: requests through the proxy`);
    for (const { url } of proxy.seen) {
      assert(url.startsWith(`${prefix}/apps/${ctx.target.appId}/`), `${mode}: request under the prefix: ${url}`);
    }
    // Controls: without the path option, or with it but no trailing slash, the SDK misses the
    // mount (the proxy's 404, as ApiErrorException).
    const misses = [
      [{ port: proxy.port }, `/apps/${ctx.target.appId}/channels`],
      [{ port: proxy.port, path: prefix }, `/realtime/apps/${ctx.target.appId}/channels`],
    ];
    for (const [overrides, path] of misses) {
      const missed = await phpFails(ctx, 'getChannels', { config_overrides: overrides }, { error: 'Pusher\\ApiErrorException', code: 404, sent: 1 });
      assertEqual(new URL(missed.requests[0].url).pathname, path, `${mode}: the path requested with ${JSON.stringify(overrides)}`);
    }
  }
}, { ...PHP, timeoutMs: 60_000 });

// --- encrypted channels ---------------------------------------------------------------------------

scenario('php: encrypted channel: trigger and triggerBatch encrypted by the SDK are decrypted by pusher-js; the server relays ciphertext', async (ctx) => {
  const backend = await phpBackend(ctx);
  const name = fresh('private-encrypted-');
  const key = { config_overrides: { encryption_master_key_base64: ENCRYPTION_MASTER_KEY } };
  const client = await phpClient(ctx, backend, {});
  const frames = rawFrames(client.connection, (frame) => frame.channel === name && frame.event === 'sealed');
  const channel = await ctx.subscribed(client, name);
  const seen = collect(channel, 'sealed');
  const [auth] = (await backend.log()).filter((entry) => entry.path === '/pusher/auth');
  assertEqual(auth.call, 'authorizeChannel', 'the encrypted channel was authorized by authorizeChannel');
  assert(typeof auth.response.shared_secret === 'string' && auth.response.shared_secret.length > 0, `shared_secret: ${JSON.stringify(auth.response)}`);

  const secret = { card: '4111 1111 1111 1111', note: 'only pusher-js can read this' };
  assertDeepEqual((await phpOk(ctx, 'trigger', { ...key, channels: name, event: 'sealed', data: secret })).result, {}, 'encrypted trigger result');
  assertDeepEqual(
    (await phpOk(ctx, 'triggerBatch', { ...key, batch: [{ channel: name, name: 'sealed', data: 'batched secret' }] })).result,
    {},
    'encrypted triggerBatch result',
  );
  await eventually(() => seen.length === 2, 'the two decrypted events');
  assertDeepEqual(seen, [secret, 'batched secret'], 'decrypted by pusher-js');
  for (const frame of frames) {
    const wire = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
    assert(typeof wire.nonce === 'string' && typeof wire.ciphertext === 'string', `wire data ${JSON.stringify(frame.data)}`);
    assert(!JSON.stringify(frame.data).includes('4111') && !JSON.stringify(frame.data).includes('batched'), 'plaintext on the wire');
  }
  assertEqual(frames.length, 2, 'frames on the encrypted channel');

  // The SDK's own refusal: encrypted and plain channels in one trigger, no request sent.
  const mixed = await phpFails(ctx, 'trigger', { ...key, channels: [name, fresh('')], event: 'sealed', data: 'x' }, { error: 'Pusher\\PusherException', code: 0, sent: 0 });
  assert(/encrypted and non-encrypted/.test(mixed.message), `message: ${mixed.message}`);
}, PHP);

// --- refusals -------------------------------------------------------------------------------------

scenario('php: refusals surface as ApiErrorException with the status (401, 404, 413, 400); the SDK\'s own checks send nothing', async (ctx) => {
  const name = fresh('');
  const client = await ctx.connected();
  const seen = collect(await ctx.subscribed(client, name), 'e');
  const api = (code) => ({ error: 'Pusher\\ApiErrorException', code, sent: 1 });
  const local = { error: 'Pusher\\PusherException', code: 0, sent: 0 };
  const wrongSecret = { config_overrides: { secret: 'not-the-secret' } };
  const unknownApp = { config_overrides: { app_id: '987654321' } };

  await phpFails(ctx, 'trigger', { ...wrongSecret, channels: name, event: 'e', data: 'refused' }, api(401));
  await phpFails(ctx, 'getChannels', { ...wrongSecret }, api(401));
  await phpFails(ctx, 'terminateUserConnections', { ...wrongSecret, user_id: uid('x') }, api(401));
  await phpFails(ctx, 'trigger', { ...unknownApp, channels: name, event: 'e', data: 'refused' }, api(404));
  await phpFails(ctx, 'getChannelInfo', { ...unknownApp, channel: name }, api(404));
  await phpFails(ctx, 'trigger', { channels: name, event: 'e', data: 'x'.repeat(10 * 1024 + 1) }, api(413));
  const batch = Array.from({ length: 11 }, (_, i) => ({ channel: name, name: 'e', data: String(i) }));
  await phpFails(ctx, 'triggerBatch', { batch }, api(400));
  await phpFails(ctx, 'getChannels', { params: { info: 'user_count' } }, api(400));

  await phpFails(ctx, 'trigger', { channels: 'bad channel', event: 'e', data: 'd' }, local);
  await phpFails(ctx, 'trigger', { channels: name, event: 'e', data: 'd', params: { socket_id: 'not-a-socket' } }, local);
  await phpFails(ctx, 'trigger', { channels: Array.from({ length: 101 }, (_, i) => `php-${i}`), event: 'e', data: 'd' }, local);
  await phpFails(ctx, 'terminateUserConnections', { user_id: '' }, local);
  await phpFails(ctx, 'authenticateUser', { socket_id: '1.2', user_data: { name: 'no id' } }, local);
  await phpFails(ctx, 'authorizeChannel', { channel: fresh('private-encrypted-'), socket_id: '1.2' }, local);

  await phpOk(ctx, 'trigger', { channels: name, event: 'e', data: 'accepted' });
  await eventually(() => seen.includes('accepted'), 'the accepted event');
  assertDeepEqual(seen, ['accepted'], 'only the accepted event was delivered');
}, PHP);
