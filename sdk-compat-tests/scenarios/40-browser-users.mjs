// pusher.min.js in headless Chromium: user signin through the page's /pusher/user-auth endpoint,
// server-to-user messages (pusher-http-node's sendToUser), watchlist events, and
// terminateUserConnections (close code 4009, no reconnect).
//
// pusher-js silently drops frames for channels it does not know, so "the other user got nothing"
// is asserted on the WebSocket frames Chromium recorded for that page, after a fence (a message
// to its own user that must arrive) proves every earlier frame has arrived.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

async function signedIn(page, client) {
  return page.until(async () => {
    const user = await page.call('userData', client);
    return user.serverToUserSubscribed ? user : null;
  }, `client ${client} to be signed in (signin_success and the #server-to-user subscription)`);
}

scenario('browser: signin through POST /pusher/user-auth, then pusher.user.bind receives sendToUser', async (ctx) => {
  const id = uniqueName('browser-user');
  const page = await openPage(ctx);
  const socketId = await page.connected('a', { user: { id, user_info: { name: 'Carol' } } });
  await page.call('userBind', 'a', 'notice');
  await page.call('signin', 'a');

  const user = await signedIn(page, 'a');
  assertDeepEqual(user.user_data, { id, user_info: { name: 'Carol' } }, 'user_data after signin');
  assertEqual(user.serverToUserChannel, `#server-to-user-${id}`, 'server-to-user channel');
  const requests = page.app.requestsFor(null, id);
  assertEqual(requests.length, 1, 'user-auth requests');
  assertEqual(requests[0].socketId, socketId, 'socket_id posted to /pusher/user-auth');
  const [success] = await page.frames('a', { event: 'pusher:signin_success' });
  assert(success, 'a pusher:signin_success frame');

  const response = await ctx.backend().sendToUser(id, 'notice', { text: 'your order shipped' });
  assertEqual(response.status, 200, 'sendToUser status');
  const [received] = await page.until(async () => {
    const seen = await page.call('eventsFor', 'a', '#user', 'notice', 'bind');
    return seen.length > 0 ? seen : null;
  }, 'pusher.user.bind("notice") to fire');
  assertDeepEqual(received.data, { text: 'your order shipped' }, 'server-to-user event data');
  assertEqual(await page.call('errorsFor', 'a'), [], 'connection errors');
});

scenario('browser: sendToUser reaches only the signed-in user, on every one of its connections', async (ctx) => {
  const id = uniqueName('browser-multi');
  const other = uniqueName('browser-other');
  // Two connections of one user in one page (two tabs), another user in another page.
  const page = await openPage(ctx);
  const otherPage = await openPage(ctx);
  const clients = [[page, 'tab1', id], [page, 'tab2', id], [otherPage, 'stranger', other]];
  for (const [p, client, user] of clients) {
    await p.connected(client, { user: { id: user } });
    await p.call('userBind', client, 'ping');
    await p.call('signin', client);
  }
  for (const [p, client] of clients) await signedIn(p, client);

  const response = await ctx.backend().sendToUser(id, 'ping', { n: 1 });
  assertEqual(response.status, 200, 'sendToUser status');
  for (const client of ['tab1', 'tab2']) {
    const [ping] = await page.until(async () => {
      const seen = await page.call('eventsFor', client, '#user', 'ping', 'bind');
      return seen.length > 0 ? seen : null;
    }, `${client} to get the ping`);
    assertDeepEqual(ping.data, { n: 1 }, `ping data at ${client}`);
  }
  // Once per connection: a later message to the same user arrives after any duplicate would have.
  await page.fenceUser('tab1', id);
  await page.fenceUser('tab2', id);
  for (const client of ['tab1', 'tab2']) {
    const socket = await page.socketOf(client);
    const pings = page.received(socket).filter((f) => f.channel === `#server-to-user-${id}` && f.event === 'ping');
    assertEqual(pings.length, 1, `ping frames on ${client}'s WebSocket`);
  }

  // The other user: its own server-to-user messages reach its page (the positive control, and a
  // fence on its connection), and no frame for the first user's channel ever did, whatever
  // pusher-js would have made of it.
  const fence = await otherPage.fenceUser('stranger', other);
  const strangerSocket = await otherPage.socketOf('stranger');
  assert(
    otherPage.received(strangerSocket).some((f) => f.channel === `#server-to-user-${other}` && f.event === fence),
    "the other page recorded its own user's server-to-user frame",
  );
  const leaked = otherPage.received().filter((f) => f.channel === `#server-to-user-${id}` || f.event === 'ping');
  assertEqual(leaked, [], "frames for the first user's #server-to-user channel at the other page");
  assertEqual(await otherPage.call('eventsFor', 'stranger', '#user', 'ping', 'bind'), [], "the other user's ping deliveries");
});

scenario('browser: terminateUserConnections closes the user\'s connections with 4009, no reconnect; another user stays', async (ctx) => {
  const victim = uniqueName('browser-terminated');
  const bystander = uniqueName('browser-bystander');
  const channel = uniqueName('browser-after-terminate');
  const page = await openPage(ctx); // the victim, in two tabs
  const otherPage = await openPage(ctx); // another user
  const socketIds = {};
  for (const client of ['v1', 'v2']) {
    socketIds[client] = await page.connected(client, { user: { id: victim } });
    await page.call('signin', client);
  }
  await otherPage.connected('b', { user: { id: bystander } });
  await otherPage.call('signin', 'b');
  for (const client of ['v1', 'v2']) await signedIn(page, client);
  await signedIn(otherPage, 'b');
  await otherPage.subscribed('b', channel);
  assertDeepEqual(
    page.app.requestsFor(null, victim).map((r) => [r.socketId, r.status]).sort(),
    [[socketIds.v1, 200], [socketIds.v2, 200]].sort(),
    "the victim's user-auth requests (socket id, status)",
  );
  const socketsOpened = page.sockets.length;

  const response = await ctx.backend().terminateUserConnections(victim);
  assertEqual(response.status, 200, 'terminate status');
  assertDeepEqual(await response.json(), {}, 'terminate body');

  for (const client of ['v1', 'v2']) {
    await page.waitForState(client, 'disconnected');
    const errors = await page.call('errorsFor', client);
    assert(
      errors.some((e) => e.error && e.error.type === 'PusherError' && e.error.data && e.error.data.code === 4009),
      `a PusherError with code 4009 at ${client}: ${JSON.stringify(errors)}`,
    );
  }
  // The page itself saw its WebSockets closed with 4009.
  const log = await page.socketLog();
  for (const client of ['v1', 'v2']) {
    const socket = log.find((s) => s.socketId === socketIds[client]);
    assert(socket && socket.closed, `the WebSocket of ${client} closed: ${JSON.stringify(log)}`);
    assertEqual(socket.closed.code, 4009, `close code of ${client}'s WebSocket`);
  }

  // pusher-js does not come back by itself (4009 means "do not reconnect"): no state change and
  // no new WebSocket for a few seconds (a retry would start within one).
  await page.holds(
    async () =>
      (await page.state('v1')) === 'disconnected' &&
      (await page.state('v2')) === 'disconnected' &&
      page.sockets.length === socketsOpened,
    'the terminated clients stay disconnected and open no WebSocket',
    4000,
  );
  for (const client of ['v1', 'v2']) {
    assertEqual(await page.call('statesOf', client), ['connecting', 'connected', 'disconnected'], `states of ${client}`);
  }

  // The other user is untouched: still connected, still receiving channel and user messages.
  assertEqual(await otherPage.state('b'), 'connected', "the other user's connection state");
  const trigger = await ctx.backend().trigger(channel, 'still-here', { ok: true });
  assertEqual(trigger.status, 200, 'trigger status');
  assertDeepEqual((await otherPage.waitForEvent('b', channel, 'still-here')).data, { ok: true }, 'event at the other user');
  await otherPage.fenceUser('b', bystander);
  assertEqual(await otherPage.call('statesOf', 'b'), ['connecting', 'connected'], "the other user's states");
  assertEqual(await otherPage.call('errorsFor', 'b'), [], "the other user's connection errors");

  // The user is not banned: when the application connects again, pusher-js signs in again itself.
  await page.call('connect', 'v1');
  await page.waitForState('v1', 'connected');
  await signedIn(page, 'v1');
  assertEqual(page.app.requestsFor(null, victim).length, 3, "the victim's user-auth requests after reconnecting");
});

scenario('browser: the watchlist reports a watched user going online and offline', async (ctx) => {
  const watcher = uniqueName('browser-watcher');
  const friend = uniqueName('browser-friend');
  const pageA = await openPage(ctx);
  const pageB = await openPage(ctx);
  await pageA.connected('a', { user: { id: watcher, watchlist: [friend] } });
  await pageA.call('signin', 'a');
  await signedIn(pageA, 'a');

  await pageB.connected('b', { user: { id: friend } });
  await pageB.call('signin', 'b');
  const online = await pageA.until(async () => {
    const seen = await pageA.events('a', '#watchlist', 'online');
    return seen.find((e) => e.data.user_ids.includes(friend));
  }, 'an online watchlist event for the friend');
  assertDeepEqual(online.data, { name: 'online', user_ids: [friend] }, 'online event');

  await pageB.call('disconnect', 'b');
  const offline = await pageA.until(async () => {
    const seen = await pageA.events('a', '#watchlist', 'offline');
    return seen.find((e) => e.data.user_ids.includes(friend));
  }, 'an offline watchlist event for the friend');
  assertDeepEqual(offline.data, { name: 'offline', user_ids: [friend] }, 'offline event');
});
