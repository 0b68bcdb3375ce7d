// Webhooks, received the way a customer's backend receives them: a local HTTP endpoint that
// accepts a request only when both pusher-http-node (`webhook().isValid()`) and
// pusher-http-python (`validate_webhook`) accept it, and reads the events with the SDK's
// `getEvents()` (lib/webhooks.mjs). The endpoint is registered with `herald webhooks add` on the
// store of the server the suite started, so against an external server these scenarios skip.
// Every event type is driven by real pusher-js activity.
//
// "Nothing was sent" is never judged after a fixed sleep. Herald delivers one channel's events in
// order, so a later event about the same channel that must arrive (a client event, the final
// vacate) fences everything the server did on that channel before it; the 3-second delay of
// channel_vacated / member_removed is checked against a control channel or member that left at
// the same moment and must be reported.

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  onceWithMetadata,
  collect,
  eventually,
  unique,
  rawFrames,
} from '../lib/harness.mjs';
import { WebhookReceiver, webhookEndpoint } from '../lib/webhooks.mjs';

const bare = WebhookReceiver.bare;

/** Delayed events (channel_vacated, member_removed) are waited for this long. */
const DELAYED_MS = 15_000;

/** "About 3 s": not before 2.5 s (Herald holds them 3 s), and not lost or stuck past 10 s. */
const DELAY_MIN_MS = 2_500;
const DELAY_MAX_MS = 10_000;

/** A "came back within 3 s" check is only conclusive if the return took less than this. */
const RETURN_WITHIN_MS = 2_000;

const OPTIONS = { needs: ['cli'], timeoutMs: 60_000 };

/** `leftAt` was taken just before the leave was sent, so the server acted on it after that. */
function assertDelayed(event, leftAt, what) {
  const delay = event.request.receivedAt - leftAt;
  assert(
    delay >= DELAY_MIN_MS && delay <= DELAY_MAX_MS,
    `${what} arrived ${delay} ms after the leave; expected about 3 s (${DELAY_MIN_MS}-${DELAY_MAX_MS} ms)`,
  );
}

function assertReturnedInTime(leftAt, what) {
  const took = Date.now() - leftAt;
  assert(took < RETURN_WITHIN_MS, `inconclusive: ${what} came back only ${took} ms after leaving (must be well within 3 s)`);
}

/** Presence user ids in GET /channels/NAME/users, sorted. */
async function presenceUserIds(ctx, channel) {
  const body = await (await ctx.backend().get({ path: `/channels/${channel}/users` })).json();
  return body.users.map((u) => u.id).sort();
}

scenario(
  'webhooks: channel_occupied at the first subscriber, channel_vacated about 3 s after the last leaves; headers and body as the SDKs expect',
  async (ctx) => {
    const token = unique('token');
    const hook = await webhookEndpoint(ctx, { headers: [`X-Compat-Token: ${token}`] });
    const pub = unique('compat-wh-public');
    const priv = unique('private-compat-wh');
    const a = await ctx.connected();
    const b = await ctx.connected();
    await ctx.subscribed(a, pub);
    await ctx.subscribed(a, priv);
    const [occupiedPub] = await hook.waitFor(pub, 'channel_occupied');
    const [occupiedPriv] = await hook.waitFor(priv, 'channel_occupied');
    assertDeepEqual(bare(occupiedPub), { name: 'channel_occupied', channel: pub }, 'channel_occupied (public)');
    assertDeepEqual(bare(occupiedPriv), { name: 'channel_occupied', channel: priv }, 'channel_occupied (private)');

    // The request as the SDKs (and PHP's exact-case header lookup) need it.
    const request = occupiedPub.request;
    const names = request.rawHeaders.map(([name]) => name);
    for (const name of ['X-Pusher-Key', 'X-Pusher-Signature', 'Content-Type']) {
      assert(names.includes(name), `header ${name} with this exact casing; headers sent: ${JSON.stringify(names)}`);
    }
    assertEqual(request.method, 'POST', 'method');
    assertEqual(request.headers['content-type'], 'application/json', 'Content-Type');
    assertEqual(request.headers['x-pusher-key'], ctx.target.key, 'X-Pusher-Key');
    assert(/^[0-9a-f]{64}$/.test(request.headers['x-pusher-signature']), `X-Pusher-Signature is hex SHA-256: ${request.headers['x-pusher-signature']}`);
    assertEqual(request.headers['x-compat-token'], token, 'the extra header registered with --header');
    const body = JSON.parse(request.rawBody);
    assertDeepEqual(Object.keys(body).sort(), ['events', 'time_ms'], 'body keys');
    assert(Number.isInteger(body.time_ms), `time_ms is an integer: ${body.time_ms}`);
    assert(Math.abs(body.time_ms - request.receivedAt) < 10_000, `time_ms ${body.time_ms} is the time of sending (received at ${request.receivedAt})`);

    // A second subscriber does not occupy the channel again; the first one leaving does not vacate it.
    await ctx.subscribed(b, pub);
    a.unsubscribe(pub);
    await eventually(async () => (await ctx.subscriptionCount(pub)) === 1, 'subscription_count 1 once A left the public channel');

    const privLeftAt = Date.now();
    a.unsubscribe(priv);
    const [vacatedPriv] = await hook.waitFor(priv, 'channel_vacated', 1, DELAYED_MS);
    assertDeepEqual(bare(vacatedPriv), { name: 'channel_vacated', channel: priv }, 'channel_vacated (private)');
    assertDelayed(vacatedPriv, privLeftAt, 'channel_vacated (private, unsubscribe)');

    // The last subscriber disconnects: vacated about 3 s later, once. Anything Herald sent about
    // the public channel earlier (a vacate when A left) arrived before this.
    const pubLeftAt = Date.now();
    b.disconnect();
    const [vacatedPub] = await hook.waitFor(pub, 'channel_vacated', 1, DELAYED_MS);
    assertDeepEqual(bare(vacatedPub), { name: 'channel_vacated', channel: pub }, 'channel_vacated (public)');
    assertDelayed(vacatedPub, pubLeftAt, 'channel_vacated (public, disconnect)');
    assertEqual(hook.eventsFor(pub, 'channel_occupied').length, 1, 'channel_occupied events for the public channel');
    assertEqual(hook.eventsFor(pub, 'channel_vacated').length, 1, 'channel_vacated events for the public channel');
    assertEqual(hook.eventsFor(priv, 'channel_occupied').length, 1, 'channel_occupied events for the private channel');

    for (const r of hook.requests) {
      const sent = r.rawHeaders.map(([name]) => name);
      assert(sent.includes('X-Pusher-Key') && sent.includes('X-Pusher-Signature'), `request ${r.seq} headers ${JSON.stringify(sent)}`);
    }
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: a channel occupied again within 3 s sends neither channel_vacated nor a second channel_occupied',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const back = unique('compat-wh-back');
    const gone = unique('compat-wh-gone');
    const a = await ctx.connected();
    const b = await ctx.connected();
    await ctx.subscribed(a, back);
    await ctx.subscribed(a, gone);
    await hook.waitFor(back, 'channel_occupied');
    await hook.waitFor(gone, 'channel_occupied');

    // Both channels are left at the same moment; only `back` is occupied again, by B, at once.
    const leftAt = Date.now();
    a.unsubscribe(back);
    a.unsubscribe(gone);
    await ctx.vacated([back, gone]);
    await ctx.subscribed(b, back);
    assertReturnedInTime(leftAt, `${back}`);

    // Positive control: the channel that stayed empty is reported vacated about 3 s later.
    const [vacatedGone] = await hook.waitFor(gone, 'channel_vacated', 1, DELAYED_MS);
    assertDelayed(vacatedGone, leftAt, 'channel_vacated of the control channel');

    // Fence on `back` itself: leaving it for good is reported about 3 s after that leave, and it
    // is the only vacate (one sent for the first leave would have arrived first, and early).
    const finalAt = Date.now();
    b.unsubscribe(back);
    const [vacatedBack] = await hook.waitFor(back, 'channel_vacated', 1, DELAYED_MS);
    assertDelayed(vacatedBack, finalAt, 'the only channel_vacated of the returning channel');
    assertEqual(hook.eventsFor(back, 'channel_vacated').length, 1, 'channel_vacated events for the returning channel');
    assertEqual(
      hook.eventsFor(back, 'channel_occupied').length,
      1,
      'channel_occupied events for the returning channel (coming back within 3 s is not a new occupation)',
    );
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: member_added and member_removed with user_id, removal about 3 s late, a user on two sockets counted once, no subscription_count on presence',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const name = unique('presence-compat-wh');
    const alice = { user_id: unique('alice'), user_info: { name: 'Alice' } };
    const bob = { user_id: unique('bob'), user_info: { name: 'Bob' } };
    const carol = { user_id: unique('carol'), user_info: { name: 'Carol' } };
    const added = () => hook.eventsFor(name, 'member_added');
    const removed = () => hook.eventsFor(name, 'member_removed');

    const a = await ctx.connected({ presence: alice });
    await ctx.subscribed(a, name);
    const [addedAlice] = await hook.waitFor(name, 'member_added');
    assertDeepEqual(bare(addedAlice), { name: 'member_added', channel: name, user_id: alice.user_id }, 'member_added');

    // Bob on two sockets, then Carol: Carol's member_added fences Bob's second socket.
    const bob1 = await ctx.connected({ presence: bob });
    await ctx.subscribed(bob1, name);
    const bob2 = await ctx.connected({ presence: bob });
    await ctx.subscribed(bob2, name);
    const c = await ctx.connected({ presence: carol });
    await ctx.subscribed(c, name);
    await eventually(() => added().some((e) => e.user_id === carol.user_id), 'member_added for Carol');
    assertDeepEqual(
      added().map(bare),
      [alice, bob, carol].map((u) => ({ name: 'member_added', channel: name, user_id: u.user_id })),
      'member_added events (Bob once for two sockets)',
    );

    // Bob's first socket and Carol leave together: Carol is removed about 3 s later, Bob is not.
    const leftAt = Date.now();
    bob1.disconnect();
    c.unsubscribe(name);
    await eventually(async () => (await ctx.subscriptionCount(name)) === 2, 'subscription_count 2 once both left');
    const [removedCarol] = await hook.waitFor(name, 'member_removed', 1, DELAYED_MS);
    assertDeepEqual(bare(removedCarol), { name: 'member_removed', channel: name, user_id: carol.user_id }, 'member_removed');
    assertDelayed(removedCarol, leftAt, 'member_removed of Carol');

    // Bob's last socket leaves: now he is removed, about 3 s after that.
    const bobLeftAt = Date.now();
    bob2.unsubscribe(name);
    await eventually(() => removed().length >= 2, 'member_removed for Bob', DELAYED_MS);
    assertDeepEqual(bare(removed()[1]), { name: 'member_removed', channel: name, user_id: bob.user_id }, 'member_removed for Bob');
    assertDelayed(removed()[1], bobLeftAt, 'member_removed of Bob (his last socket)');

    // Alice leaves last: her removal and the vacate end the channel's story, and fence it.
    const aliceLeftAt = Date.now();
    a.disconnect();
    const [vacated] = await hook.waitFor(name, 'channel_vacated', 1, DELAYED_MS);
    assertDelayed(vacated, aliceLeftAt, 'channel_vacated of the presence channel');
    assertDeepEqual(
      removed().map(bare),
      [carol, bob, alice].map((u) => ({ name: 'member_removed', channel: name, user_id: u.user_id })),
      'member_removed events',
    );
    assertEqual(added().length, 3, 'member_added events at the end');
    assertEqual(hook.eventsFor(name, 'channel_occupied').length, 1, 'channel_occupied events');
    assertEqual(
      hook.eventsFor(name, 'subscription_count').length,
      0,
      'subscription_count events for a presence channel (every channel type except presence)',
    );
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: a member who comes back within 3 s sends neither member_removed nor a second member_added',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const name = unique('presence-compat-wh-back');
    const alice = { user_id: unique('alice'), user_info: {} };
    const bob = { user_id: unique('bob'), user_info: {} };
    const carol = { user_id: unique('carol'), user_info: {} };
    const removed = () => hook.eventsFor(name, 'member_removed');

    const a = await ctx.connected({ presence: alice });
    await ctx.subscribed(a, name);
    const bob1 = await ctx.connected({ presence: bob });
    await ctx.subscribed(bob1, name);
    const c = await ctx.connected({ presence: carol });
    await ctx.subscribed(c, name);
    await hook.waitFor(name, 'member_added', 3);
    // Bob's new connection is ready before he leaves, so that he is back as fast as possible.
    const bob2 = await ctx.connected({ presence: bob });

    // Bob disconnects and Carol unsubscribes together; once the server has removed both, Bob
    // comes back on his new connection.
    const leftAt = Date.now();
    bob1.disconnect();
    c.unsubscribe(name);
    await eventually(
      async () => JSON.stringify(await presenceUserIds(ctx, name)) === JSON.stringify([alice.user_id]),
      'the server to list only Alice',
    );
    await ctx.subscribed(bob2, name);
    assertReturnedInTime(leftAt, 'Bob');

    // Positive control: Carol, who stayed away, is removed about 3 s later.
    const [removedCarol] = await hook.waitFor(name, 'member_removed', 1, DELAYED_MS);
    assertEqual(removedCarol.user_id, carol.user_id, 'the first member_removed is for Carol');
    assertDelayed(removedCarol, leftAt, 'member_removed of Carol');

    // Fence on Bob: leaving for good is reported about 3 s after that leave, and only once.
    const finalAt = Date.now();
    bob2.unsubscribe(name);
    await eventually(() => removed().length >= 2, 'member_removed for Bob', DELAYED_MS);
    assertDeepEqual(
      removed().map(bare),
      [carol, bob].map((u) => ({ name: 'member_removed', channel: name, user_id: u.user_id })),
      'member_removed events',
    );
    assertDelayed(removed()[1], finalAt, "Bob's only member_removed");
    assertEqual(
      hook.eventsFor(name, 'member_added').filter((e) => e.user_id === bob.user_id).length,
      1,
      'member_added events for Bob (coming back within 3 s is not a new arrival)',
    );
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: client_event has event, data, socket_id, and user_id on presence channels only',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const priv = unique('private-compat-wh-client');
    const pres = unique('presence-compat-wh-client');
    const alice = unique('alice');
    const a = await ctx.connected({ presence: { user_id: alice, user_info: { name: 'Alice' } } });
    const b = await ctx.connected({ presence: { user_id: unique('bob'), user_info: {} } });
    const chAPriv = await ctx.subscribed(a, priv);
    const chAPres = await ctx.subscribed(a, pres);
    const chBPriv = await ctx.subscribed(b, priv);
    const chBPres = await ctx.subscribed(b, pres);

    const payload = { text: 'héllo ☃', n: 1, list: [1, 2, 3], nested: { ok: true } };
    const atBPriv = once(chBPriv, 'client-typing', 'the client event at B (private)');
    const atBPres = onceWithMetadata(chBPres, 'client-typing', 'the client event at B (presence)');
    chAPriv.trigger('client-typing', payload);
    chAPres.trigger('client-typing', { x: 1 });
    // Positive control: the other subscriber got both.
    assertDeepEqual(await atBPriv, payload, 'client event data at B');
    assertEqual((await atBPres).metadata?.user_id, alice, 'metadata.user_id at B');

    const socketId = a.connection.socket_id;
    const [onPriv] = await hook.waitFor(priv, 'client_event');
    const [onPres] = await hook.waitFor(pres, 'client_event');
    const shapePriv = bare(onPriv);
    assertDeepEqual(Object.keys(shapePriv).sort(), ['channel', 'data', 'event', 'name', 'socket_id'], 'client_event fields (private)');
    assertEqual(shapePriv.name, 'client_event', 'name');
    assertEqual(shapePriv.channel, priv, 'channel');
    assertEqual(shapePriv.event, 'client-typing', 'event');
    assertEqual(shapePriv.socket_id, socketId, 'socket_id (the sender)');
    // Pusher's documented shape: data is the event's data as a string (the JSON text pusher-js sent).
    assertEqual(typeof shapePriv.data, 'string', `type of data: ${JSON.stringify(shapePriv.data)}`);
    assertDeepEqual(JSON.parse(shapePriv.data), payload, 'data, JSON-decoded');

    const shapePres = bare(onPres);
    assertDeepEqual(
      Object.keys(shapePres).sort(),
      ['channel', 'data', 'event', 'name', 'socket_id', 'user_id'],
      'client_event fields (presence)',
    );
    assertDeepEqual(
      { ...shapePres, data: JSON.parse(shapePres.data) },
      { name: 'client_event', channel: pres, event: 'client-typing', data: { x: 1 }, socket_id: socketId, user_id: alice },
      'client_event (presence)',
    );

    // A string payload is carried as that string, not re-encoded.
    const stringAtB = once(chBPriv, 'client-note', 'the string client event at B');
    chAPriv.trigger('client-note', 'just text, not JSON {');
    assertEqual(await stringAtB, 'just text, not JSON {', 'string client event at B');
    await hook.waitFor(priv, 'client_event', 2);
    assertEqual(hook.eventsFor(priv, 'client_event')[1].data, 'just text, not JSON {', 'data of a string client event');
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: cache_miss once when two clients hit the same empty cache channel, none on a cache hit',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const name = unique('private-cache-compat-wh');

    // Two clients miss the empty cache; pusher-js tells each of them.
    const missed = [];
    for (const _ of [1, 2]) {
      const client = await ctx.connected();
      const channel = client.subscribe(name);
      const misses = collect(channel, 'pusher:cache_miss');
      await once(channel, 'pusher:subscription_succeeded', `subscription to ${name}`);
      await eventually(() => misses.length === 1, 'pusher:cache_miss at the client');
      missed.push(channel);
    }
    const [miss] = await hook.waitFor(name, 'cache_miss');
    assertDeepEqual(bare(miss), { name: 'cache_miss', channel: name }, 'cache_miss');

    // Fence: a client event on the channel is reported after anything earlier about it.
    missed[1].trigger('client-fence', { n: 1 });
    await hook.waitFor(name, 'client_event', 1);
    assertEqual(hook.eventsFor(name, 'cache_miss').length, 1, 'cache_miss events for two misses of the same empty cache');

    // Once something is cached, a late subscriber gets it replayed: no miss, no webhook.
    await ctx.backend().trigger(name, 'news', { n: 2 });
    const late = await ctx.connected();
    const lateChannel = late.subscribe(name);
    const lateMisses = collect(lateChannel, 'pusher:cache_miss');
    assertDeepEqual(await once(lateChannel, 'news', 'the cached event replayed'), { n: 2 }, 'replayed data');
    if (!lateChannel.subscribed) await once(lateChannel, 'pusher:subscription_succeeded', 'the late subscription');
    lateChannel.trigger('client-fence', { n: 2 });
    await hook.waitFor(name, 'client_event', 2);
    assertEqual(lateMisses.length, 0, 'pusher:cache_miss at the late subscriber');
    assertEqual(hook.eventsFor(name, 'cache_miss').length, 1, 'cache_miss events after a cache hit');
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: subscription_count carries the integer count on every subscribe and unsubscribe, with only webhook interest',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const name = unique('private-compat-wh-count');
    const counts = () => hook.eventsFor(name, 'subscription_count').map((e) => e.subscription_count);
    const clients = [await ctx.connected(), await ctx.connected(), await ctx.connected()];
    // The app's own subscription_count setting is off: clients get no count frames, so what the
    // webhook reports comes from the endpoint's interest alone.
    const countFrames = clients.map((client) =>
      rawFrames(client.connection, (f) => f.event === 'pusher_internal:subscription_count'),
    );

    const channels = [];
    const expected = [];
    // One count per change, in order; each step waits for its own before the next change.
    const reported = () => {
      assert(counts().length <= expected.length, `subscription_count values ${JSON.stringify(counts())}, expected ${JSON.stringify(expected)}`);
      return counts().length === expected.length;
    };
    for (const client of clients) {
      channels.push(await ctx.subscribed(client, name));
      expected.push(channels.length);
      await eventually(reported, `subscription_count ${channels.length}`);
    }
    for (const client of [clients[2], clients[1]]) {
      client.unsubscribe(name);
      expected.push(expected.at(-1) - 1);
      await eventually(reported, `subscription_count ${expected.at(-1)}`);
    }
    // Fence: a client event from the remaining subscriber comes after anything earlier.
    channels[0].trigger('client-fence', {});
    await hook.waitFor(name, 'client_event');
    assertDeepEqual(counts(), [1, 2, 3, 2, 1], 'subscription_count values in order');
    for (const event of hook.eventsFor(name, 'subscription_count')) {
      assertDeepEqual(Object.keys(bare(event)).sort(), ['channel', 'name', 'subscription_count'], 'subscription_count fields');
      assert(Number.isInteger(event.subscription_count), `subscription_count is an integer: ${JSON.stringify(event.subscription_count)}`);
    }
    for (const client of clients) await ctx.flush(client);
    assertDeepEqual(countFrames.map((frames) => frames.length), [0, 0, 0], 'pusher_internal:subscription_count frames at the clients');
    hook.assertNoRejections();
  },
  OPTIONS,
);

scenario(
  'webhooks: the receiver rejects a tampered copy of a recorded request in both SDKs, and a wrong Content-Type in pusher-http-node',
  async (ctx) => {
    const hook = await webhookEndpoint(ctx);
    const recorded = hook.requests.find((r) => r.accepted);
    assert(recorded, 'a request accepted by both SDKs (the activation probe)');
    const post = (body, contentType = recorded.headers['content-type']) =>
      fetch(hook.url, {
        method: 'POST',
        headers: {
          'Content-Type': contentType,
          'X-Pusher-Key': recorded.headers['x-pusher-key'],
          'X-Pusher-Signature': recorded.headers['x-pusher-signature'],
        },
        body,
      });

    // Control: the untouched copy is accepted again (both SDKs, within Python's 5-minute window).
    const copy = await post(recorded.rawBody);
    assertEqual(copy.status, 200, `status of the untouched copy (${await copy.text()})`);

    // One byte of the body changed, inside a channel name: still JSON, no longer what was signed.
    const at = recorded.rawBody.indexOf('"channel":"') + '"channel":"'.length;
    assert(at >= '"channel":"'.length, `a channel in the recorded body: ${recorded.rawBody}`);
    const replacement = recorded.rawBody[at] === 'x' ? 'y' : 'x';
    const tampered = recorded.rawBody.slice(0, at) + replacement + recorded.rawBody.slice(at + 1);
    assertEqual(Buffer.byteLength(tampered), Buffer.byteLength(recorded.rawBody), 'length of the tampered body');
    JSON.parse(tampered);
    const forged = await post(tampered);
    assertEqual(forged.status, 401, 'status of the tampered copy');
    const [rejected] = hook.rejected;
    assertEqual(hook.rejected.length, 1, 'rejections after the tampered copy');
    assertEqual(rejected.rawBody, tampered, 'the rejected body');
    assertDeepEqual({ node: rejected.node, python: rejected.python }, { node: false, python: false }, 'SDK verdicts on the tampered copy');
    assert(/pusher-http-node/.test(rejected.reason) && /pusher-http-python/.test(rejected.reason), `reason names both: ${rejected.reason}`);

    // Both must accept: a correct signature with `; charset` in Content-Type is refused by
    // pusher-http-node only, and that is enough for a 401.
    const charset = await post(recorded.rawBody, 'application/json; charset=utf-8');
    assertEqual(charset.status, 401, 'status with Content-Type application/json; charset=utf-8');
    assertEqual(hook.rejected.length, 2, 'rejections after the wrong Content-Type');
    assertDeepEqual(
      { node: hook.rejected[1].node, python: hook.rejected[1].python },
      { node: false, python: true },
      'SDK verdicts with a charset in Content-Type',
    );
    // The two rejections are the two forgeries above: nothing Herald sent was rejected.
    assertDeepEqual(
      hook.rejected.map((r) => [r.headers['content-type'], r.rawBody === tampered]),
      [['application/json', true], ['application/json; charset=utf-8', false]],
      'the rejected requests',
    );
  },
  OPTIONS,
);
