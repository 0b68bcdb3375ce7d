// pusher-js's browser build (pusher.min.js, unmodified) in headless Chromium: connecting, public,
// private and presence channels through the page's own auth endpoint, refusals, client events,
// the four cache-channel kinds. Every assertion is on what pusher-js in the page observed.
//
// No fixed waits before asserting that something did not arrive: a fence (`page.fence`: a fresh
// event triggered afterwards that the same connection must receive) proves everything sent before
// it has arrived, and the server's REST view (`subscription_count`) shows that it processed an
// unsubscribe or a disconnect before the test relies on it.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName, waitForSubscriptionCount } from '../lib/browser.mjs';

async function trigger(ctx, channel, event, data, params) {
  const response = await ctx.backend().trigger(channel, event, data, params);
  assertEqual(response.status, 200, `trigger ${event} on ${channel}: status`);
}

/** Two pages, client 'a' in the first and 'b' in the second, both subscribed to `channel`. */
async function twoPagesOn(ctx, channel) {
  const pageA = await openPage(ctx);
  const pageB = await openPage(ctx);
  await pageA.connected('a');
  await pageB.connected('b');
  await pageA.subscribed('a', channel);
  await pageB.subscribed('b', channel);
  return [pageA, pageB];
}

scenario('browser: pusher.min.js 8.6.0 connects over its transport and gets a socket id of the form 123.456', async (ctx) => {
  const page = await openPage(ctx);
  const socketId = await page.connected('a');
  assert(/^\d+\.\d+$/.test(socketId), `socket_id ${socketId}`);
  const { host, port, key } = ctx.target;
  const transport = ctx.transport ?? 'ws';
  assertEqual(await page.transportOf('a'), transport, "pusher-js's transport");
  // The URL is pusher-js's own (contract §1.1, and §7.2 for a fallback), as the page opened it.
  if (transport === 'ws') {
    assertEqual(
      page.sockets,
      [`${ctx.target.tls ? 'wss' : 'ws'}://${host}:${port}/app/${key}?protocol=7&client=js&version=8.6.0&flash=false`],
      'WebSocket URLs opened by the page',
    );
  } else {
    const op = transport === 'xhr_polling' ? 'xhr' : 'xhr_streaming';
    const base = `${ctx.target.tls ? 'https' : 'http'}://${host}:${port}/pusher/app/${key}`;
    assertEqual(page.sockets.length, 1, `fallback sessions opened by the page: ${JSON.stringify(page.sockets)}`);
    assertEqual(page.websockets, [], 'WebSockets opened by the page');
    const url = new RegExp(`^${base.replace(/[.?]/g, '\\$&')}/\\d{1,3}/[0-9a-v]{8}/${op}\\?protocol=7&client=js&version=8\\.6\\.0&t=\\d+&n=\\d+$`);
    assert(url.test(page.sockets[0]), `the first ${op} request's URL ${page.sockets[0]}`);
    // The session opened with `o` before its first message (§7.2).
    assertEqual(page.lines.find((l) => l.direction === 'in')?.line, 'o', 'the first line received');
  }
  // pusher-js starts connecting in its constructor, before the page could bind state_change.
  assertEqual(await page.call('statesOf', 'a'), ['connecting', 'connected'], 'connection states');
  // The first message is pusher:connection_established with the same socket id (contract §1.3).
  const [first] = page.received(0);
  assertEqual(first.event, 'pusher:connection_established', 'first frame');
  const data = typeof first.data === 'string' ? JSON.parse(first.data) : first.data;
  assertEqual(data.socket_id, socketId, 'socket_id in connection_established');
  assert(Number.isInteger(data.activity_timeout) && data.activity_timeout > 0, `activity_timeout ${data.activity_timeout}`);
  assertEqual(await page.call('errorsFor', 'a'), [], 'connection errors');
});

scenario('browser: public channel receives an event triggered with pusher-http-node', async (ctx) => {
  const channel = uniqueName('browser-public');
  const page = await openPage(ctx);
  await page.connected('a');
  await page.subscribed('a', channel);
  await trigger(ctx, channel, 'greeting', { hello: 'browser', list: [1, 2, 3], nested: { ok: true } });
  const event = await page.waitForEvent('a', channel, 'greeting');
  assertDeepEqual(event.data, { hello: 'browser', list: [1, 2, 3], nested: { ok: true } }, 'event data');
  // A plain string is relayed verbatim and reaches the page as the same string.
  await trigger(ctx, channel, 'plain', 'just text');
  assertEqual((await page.waitForEvent('a', channel, 'plain')).data, 'just text', 'string event data');
});

scenario('browser: private channel is authorized through POST /pusher/auth and receives events', async (ctx) => {
  const channel = uniqueName('private-browser');
  const page = await openPage(ctx);
  const socketId = await page.connected('a');
  await page.subscribed('a', channel);
  const requests = page.app.requestsFor(channel);
  assertEqual(requests.length, 1, 'auth requests for the channel');
  assertEqual(requests[0].socketId, socketId, 'socket_id posted by pusher-js');
  assertEqual(requests[0].contentType, 'application/x-www-form-urlencoded', 'auth request content type');
  assertEqual(requests[0].status, 200, 'auth endpoint status');
  await trigger(ctx, channel, 'secret-news', { headline: 'private' });
  assertDeepEqual((await page.waitForEvent('a', channel, 'secret-news')).data, { headline: 'private' }, 'event data');
});

scenario('browser: a 403 from /pusher/auth gives pusher:subscription_error with status 403', async (ctx) => {
  const refused = uniqueName('private-browser-forbidden');
  const allowed = uniqueName('private-browser-allowed');
  const page = await openPage(ctx);
  await page.connected('a');
  await page.subscribe('a', refused);
  const error = await page.waitForEvent('a', refused, 'pusher:subscription_error');
  assertEqual(error.data.type, 'AuthError', 'subscription_error type');
  assertEqual(error.data.status, 403, 'subscription_error status');
  assert(/received status: 403/.test(error.data.error), `subscription_error message: ${error.data.error}`);
  assertEqual(page.app.requestsFor(refused).map((r) => r.status), [403], 'auth endpoint replies');
  // The connection is unharmed: a later subscription completes its round trip (and fences the
  // connection), and nothing was sent to the server for the refused channel.
  await page.subscribed('a', allowed);
  await page.fence('a', allowed);
  assertEqual(await page.call('isSubscribed', 'a', refused), false, 'refused channel subscribed');
  assertEqual(await page.frames('a', { channel: refused }), [], 'frames for the refused channel');
  assertEqual(page.wire.filter((f) => f.payload.includes(refused)), [], 'frames on the connection naming the refused channel');
  assertEqual(await page.state('a'), 'connected', 'connection state');
});

scenario('browser: a subscription signed with the wrong secret is refused by the server, connection stays up', async (ctx) => {
  const channel = uniqueName('private-browser-badsig');
  const page = await openPage(ctx);
  await page.connected('a');
  await page.subscribe('a', channel);
  // The page's endpoint answered 200 (with a wrong signature): the refusal must come from the
  // server, as a pusher:error frame (contract §2.5), which pusher-js emits as a connection error.
  const frames = await page.until(async () => {
    const seen = await page.frames('a', { event: 'pusher:error' });
    return seen.length > 0 ? seen : null;
  }, 'a pusher:error frame');
  assertEqual(page.app.requestsFor(channel).map((r) => r.status), [200], 'auth endpoint replies');
  assert(
    page.wire.some((f) => f.direction === 'out' && f.payload.includes('pusher:subscribe') && f.payload.includes(channel)),
    'the page sent pusher:subscribe for the channel',
  );
  assert(typeof frames[0].data.message === 'string' && frames[0].data.message.length > 0, `pusher:error ${JSON.stringify(frames[0].data)}`);
  const errors = await page.call('errorsFor', 'a');
  assert(
    errors.some((e) => e.error.type === 'PusherError' && e.error.data.message === frames[0].data.message),
    `connection error events: ${JSON.stringify(errors)}`,
  );
  // The connection stays up and serves another channel; once that one's event has arrived, a
  // late subscription_succeeded for the refused channel would have arrived too.
  const other = uniqueName('browser-after-refusal');
  await page.subscribed('a', other);
  await trigger(ctx, other, 'still-here', { ok: 1 });
  await page.waitForEvent('a', other, 'still-here');
  await page.fence('a', other);
  assertEqual(await page.events('a', channel, 'pusher:subscription_succeeded'), [], 'subscription_succeeded');
  assertEqual(await page.call('isSubscribed', 'a', channel), false, 'channel subscribed');
  assertEqual(await page.state('a'), 'connected', 'connection state');
});

scenario('browser: presence channel lists members; others see member_added and member_removed', async (ctx) => {
  const channel = uniqueName('presence-browser-room');
  const alice = { user_id: 'alice', user_info: { name: 'Alice' } };
  const bob = { user_id: 'bob', user_info: { name: 'Bob', role: 'guest' } };
  const pageA = await openPage(ctx);
  const pageB = await openPage(ctx);
  await pageA.connected('a', { presence: alice });
  await pageA.subscribed('a', channel);
  assertDeepEqual(
    await pageA.call('members', 'a', channel),
    { count: 1, me: { id: 'alice', info: { name: 'Alice' } }, list: [{ id: 'alice', info: { name: 'Alice' } }] },
    "alice's members after joining alone",
  );

  await pageB.connected('b', { presence: bob });
  await pageB.subscribed('b', channel);
  assertDeepEqual(
    await pageB.call('members', 'b', channel),
    {
      count: 2,
      me: { id: 'bob', info: { name: 'Bob', role: 'guest' } },
      list: [
        { id: 'alice', info: { name: 'Alice' } },
        { id: 'bob', info: { name: 'Bob', role: 'guest' } },
      ],
    },
    "bob's members after joining",
  );
  const added = await pageA.waitForEvent('a', channel, 'pusher:member_added');
  assertDeepEqual(added.data, { id: 'bob', info: { name: 'Bob', role: 'guest' } }, 'member_added seen by alice');
  assertEqual((await pageA.call('members', 'a', channel)).count, 2, "alice's member count after bob joined");
  assertEqual(await pageB.events('b', channel, 'pusher:member_added'), [], 'member_added seen by bob (himself)');

  await pageB.call('disconnect', 'b');
  const removed = await pageA.waitForEvent('a', channel, 'pusher:member_removed');
  assertDeepEqual(removed.data, { id: 'bob', info: { name: 'Bob', role: 'guest' } }, 'member_removed seen by alice');
  assertDeepEqual(
    (await pageA.call('members', 'a', channel)).list,
    [{ id: 'alice', info: { name: 'Alice' } }],
    "alice's members after bob left",
  );
});

scenario('browser: client events between two browser clients on a private channel, not echoed', async (ctx) => {
  const channel = uniqueName('private-browser-chat');
  const [pageA, pageB] = await twoPagesOn(ctx, channel);

  assertEqual(await pageA.call('trigger', 'a', channel, 'client-typing', { who: 'a', n: 1 }), true, 'a: trigger result');
  const atB = await pageB.waitForEvent('b', channel, 'client-typing');
  assertDeepEqual(atB.data, { who: 'a', n: 1 }, 'client event at b');

  assertEqual(await pageB.call('trigger', 'b', channel, 'client-reply', { who: 'b' }), true, 'b: trigger result');
  assertDeepEqual((await pageA.waitForEvent('a', channel, 'client-reply')).data, { who: 'b' }, 'client event at a');

  // An echo to a sender would precede these fences on its own connection.
  await pageA.fence('a', channel);
  await pageB.fence('b', channel);
  assertEqual(await pageA.frames('a', { event: 'client-typing' }), [], 'client-typing echoed to its sender');
  assertEqual(await pageB.frames('b', { event: 'client-reply' }), [], 'client-reply echoed to its sender');
  assertEqual((await pageB.events('b', channel, 'client-typing')).length, 1, 'client-typing deliveries at b');
});

scenario("browser: client events on a presence channel carry the sender's user_id as metadata", async (ctx) => {
  const channel = uniqueName('presence-browser-whisper');
  const pageA = await openPage(ctx);
  const pageB = await openPage(ctx);
  await pageA.connected('a', { presence: { user_id: 'writer-1', user_info: {} } });
  await pageB.connected('b', { presence: { user_id: 'reader-2', user_info: {} } });
  await pageA.subscribed('a', channel);
  await pageB.subscribed('b', channel);
  await pageB.call('bind', 'b', channel, 'client-whisper');
  assertEqual(await pageA.call('trigger', 'a', channel, 'client-whisper', { text: 'psst' }), true, 'trigger result');
  const [received] = await pageB.until(async () => {
    const seen = await pageB.call('eventsFor', 'b', channel, 'client-whisper', 'bind');
    return seen.length > 0 ? seen : null;
  }, 'client-whisper at b');
  assertDeepEqual(received.data, { text: 'psst' }, 'client event data');
  assertDeepEqual(received.metadata, { user_id: 'writer-1' }, 'client event metadata');
});

// ---------------------------------------------------------------- cache channels

const CACHE_KINDS = [
  { prefix: 'cache-', build: 'pusher.min.js' },
  { prefix: 'private-cache-', build: 'pusher.min.js' },
  { prefix: 'presence-cache-', build: 'pusher.min.js' },
  // pusher.min.js refuses encrypted channels; the page needs the encryption build for this one.
  { prefix: 'private-encrypted-cache-', build: 'pusher-with-encryption.min.js' },
];

for (const { prefix, build } of CACHE_KINDS) {
  scenario(`browser: ${prefix} channel: pusher:cache_miss when empty, the last event replayed to a late subscriber`, async (ctx) => {
    const channel = uniqueName(`${prefix}browser`);
    const vacant = uniqueName(`${prefix}browser-vacant`);
    const encrypted = prefix.startsWith('private-encrypted-');
    const presence = (id) => ({ user_id: id, user_info: { name: id } });

    // An event triggered while nobody is subscribed is cached all the same.
    await trigger(ctx, vacant, 'stored', { kept: true });

    // The first subscriber finds the cache empty.
    const pageA = await openPage(ctx, { build });
    await pageA.connected('first', { presence: presence('first') });
    await pageA.subscribed('first', channel);
    await pageA.waitForEvent('first', channel, 'pusher:cache_miss');
    await trigger(ctx, channel, 'goal', { n: 1 });
    await trigger(ctx, channel, 'final', { n: 2, text: 'last one' });
    assertDeepEqual((await pageA.waitForEvent('first', channel, 'final')).data, { n: 2, text: 'last one' }, 'live event data');

    // A late subscriber, in another page, gets the last event replayed right after subscribing.
    const pageB = await openPage(ctx, { build });
    await pageB.connected('late', { presence: presence('late') });
    await pageB.subscribed('late', channel);
    const replayed = await pageB.waitForEvent('late', channel, 'final');
    assertDeepEqual(replayed.data, { n: 2, text: 'last one' }, 'replayed event data (the last one)');
    if (prefix.startsWith('presence-')) {
      assertEqual((await pageB.call('members', 'late', channel)).count, 2, "the late subscriber's member count");
    }
    if (encrypted) {
      // Replayed as the ciphertext the server relayed, decrypted by pusher-js with the shared
      // secret of its own authorization (one auth request per client: no retry after a failure).
      const [frame] = await pageB.frames('late', { channel, event: 'final' });
      const wire = typeof frame.data === 'string' ? JSON.parse(frame.data) : frame.data;
      assert(typeof wire.nonce === 'string' && typeof wire.ciphertext === 'string', `replayed frame data ${JSON.stringify(frame.data)}`);
      assertEqual(pageB.app.requestsFor(channel).length, 2, 'auth requests for the channel (both clients)');
    }

    await pageB.subscribed('late', vacant);
    assertDeepEqual((await pageB.waitForEvent('late', vacant, 'stored')).data, { kept: true }, 'event cached on a vacant channel');

    // Nothing else: neither a cache_miss nor the older event for the late subscriber, one
    // cache_miss for the first. The fences prove every earlier frame has arrived.
    await pageB.fence('late', channel);
    await pageA.fence('first', channel);
    const lateEvents = (await pageB.events('late', channel)).map((e) => e.event).filter((e) => !e.startsWith('fence-'));
    assertEqual(lateEvents, ['pusher:subscription_succeeded', 'final'], "the late subscriber's events, in order");
    const vacantEvents = (await pageB.events('late', vacant)).map((e) => e.event);
    assertEqual(vacantEvents, ['pusher:subscription_succeeded', 'stored'], 'events on the channel cached while vacant');
    const firstEvents = (await pageA.events('first', channel))
      .map((e) => e.event)
      .filter((e) => !e.startsWith('fence-') && e !== 'pusher:member_added');
    assertEqual(
      firstEvents,
      ['pusher:subscription_succeeded', 'pusher:cache_miss', 'goal', 'final'],
      "the first subscriber's events, in order",
    );
  });
}

scenario('browser: after unsubscribe the page receives nothing more on that channel', async (ctx) => {
  const channel = uniqueName('browser-unsubscribe');
  const elsewhere = uniqueName('browser-unsubscribe-fence');
  const page = await openPage(ctx);
  await page.connected('a');
  // The positive control: another connection that stays subscribed and must get every event.
  await page.connected('control');
  await page.subscribed('a', channel);
  await page.subscribed('a', elsewhere);
  await page.subscribed('control', channel);
  await trigger(ctx, channel, 'tick', { n: 1 });
  await page.waitForEvent('a', channel, 'tick');
  await page.waitForEvent('control', channel, 'tick');

  await page.call('unsubscribe', 'a', channel);
  await page.until(
    () => page.wire.some((f) => f.direction === 'out' && f.payload.includes('pusher:unsubscribe') && f.payload.includes(channel)),
    'the page to send pusher:unsubscribe',
  );
  // The server has processed the unsubscribe once it counts only the control.
  await waitForSubscriptionCount(ctx, channel, 1);
  await trigger(ctx, channel, 'tick', { n: 2 });
  const control = await page.waitForEvents('control', channel, 'tick', { count: 2 });
  assertDeepEqual(control.map((e) => e.data), [{ n: 1 }, { n: 2 }], 'ticks at the control');
  // Anything sent to `a` before this fence (on its own connection) has arrived.
  await page.fence('a', elsewhere);
  assertEqual((await page.frames('a', { channel, event: 'tick' })).map((f) => f.data), [{ n: 1 }], 'tick frames received');
  const socket = await page.socketOf('a');
  const ticks = page.received(socket).filter((f) => f.channel === channel && f.event === 'tick');
  assertEqual(ticks.length, 1, "tick frames on a's connection");
});

scenario('browser: a user connected twice is one presence member (one member_added, one member_removed)', async (ctx) => {
  const channel = uniqueName('presence-browser-tabs');
  const watcher = await openPage(ctx);
  // Two pusher-js clients in one page: two connections of one user, as two tabs would be.
  const tab1 = await openPage(ctx);
  const tab2 = tab1;
  const dana = { user_id: 'dana', user_info: { name: 'Dana' } };
  await watcher.connected('w', { presence: { user_id: 'watcher', user_info: {} } });
  await watcher.subscribed('w', channel);
  await tab1.connected('t1', { presence: dana });
  await tab1.subscribed('t1', channel);
  await tab2.connected('t2', { presence: dana });
  await tab2.subscribed('t2', channel);
  assertEqual((await tab2.call('members', 't2', channel)).count, 2, 'members seen by the second tab');
  await watcher.waitForEvent('w', channel, 'pusher:member_added');
  await waitForSubscriptionCount(ctx, channel, 3);
  await watcher.fence('w', channel);
  assertEqual((await watcher.events('w', channel, 'pusher:member_added')).length, 1, 'member_added for two tabs of one user');
  assertEqual((await watcher.call('members', 'w', channel)).count, 2, "watcher's member count");

  await tab1.call('disconnect', 't1');
  // The server has processed the disconnect once it counts two connections on the channel; a
  // member_removed it sent the watcher then would precede the fence.
  await waitForSubscriptionCount(ctx, channel, 2);
  await watcher.fence('w', channel);
  assertEqual(await watcher.events('w', channel, 'pusher:member_removed'), [], 'member_removed while a tab is still open');
  assertEqual((await watcher.call('members', 'w', channel)).count, 2, "watcher's member count with one tab left");
  await tab2.call('disconnect', 't2');
  const removed = await watcher.waitForEvent('w', channel, 'pusher:member_removed');
  assertDeepEqual(removed.data, { id: 'dana', info: { name: 'Dana' } }, 'member_removed after the last tab');
  assertEqual((await watcher.call('members', 'w', channel)).count, 1, "watcher's member count at the end");
});

scenario('browser: a client event on a public channel is refused with pusher:error and not delivered', async (ctx) => {
  const channel = uniqueName('browser-public-chat');
  const [pageA, pageB] = await twoPagesOn(ctx, channel);
  // pusher-js sends it (it does not know the channel type rules); the server must refuse it.
  await pageA.call('trigger', 'a', channel, 'client-shout', { loud: true });
  const [error] = await pageA.until(async () => {
    const seen = await pageA.frames('a', { event: 'pusher:error' });
    return seen.length > 0 ? seen : null;
  }, 'a pusher:error frame at the sender');
  assert(typeof error.data.message === 'string', `pusher:error ${JSON.stringify(error.data)}`);
  // The server answered the client event; had it also relayed it, it would precede this fence.
  await pageB.fence('b', channel);
  assertEqual(await pageB.frames('b', { event: 'client-shout' }), [], 'client-shout frames at the other subscriber');
  assertEqual(await pageA.state('a'), 'connected', "sender's connection state");
});

scenario("browser: pusher-js's pusher:ping gets a pusher:pong and the connection stays up", async (ctx) => {
  const page = await openPage(ctx);
  // A short activityTimeout makes pusher-js ping after 1 s of silence; with no reply within
  // pongTimeout it would drop the connection and reconnect (contract §1.4).
  await page.connected('a', { options: { activityTimeout: 1000, pongTimeout: 2000 } });
  const exchange = await page.until(() => {
    const ping = page.wire.findIndex((f) => f.direction === 'out' && JSON.parse(f.payload).event === 'pusher:ping');
    if (ping < 0) return null;
    const pong = page.wire.findIndex((f, i) => i > ping && f.direction === 'in' && JSON.parse(f.payload).event === 'pusher:pong');
    return pong < 0 ? null : { ping, pong };
  }, 'a pusher:ping answered with pusher:pong');
  assert(exchange.pong > exchange.ping, 'pong after ping');
  // Three pings, each answered, on the one WebSocket, with no state change in between.
  const count = (event, direction) =>
    page.wire.filter((f) => f.direction === direction && JSON.parse(f.payload).event === event).length;
  await page.until(() => count('pusher:ping', 'out') >= 3 && count('pusher:pong', 'in') >= 3, 'three pings answered', 20_000);
  assertEqual(await page.call('statesOf', 'a'), ['connecting', 'connected'], 'connection states over several pings');
  assertEqual(page.sockets.length, 1, 'WebSockets opened');
  assertEqual(await page.call('errorsFor', 'a'), [], 'connection errors');
});
