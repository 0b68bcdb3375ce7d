// pusher.min.js in headless Chromium: user signin through the page's /pusher/user-auth endpoint,
// server-to-user messages (pusher-http-node's sendToUser) and watchlist events.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

scenario('browser: signin through POST /pusher/user-auth, then pusher.user.bind receives sendToUser', async (ctx) => {
  const id = uniqueName('browser-user');
  const page = await openPage(ctx);
  const socketId = await page.connected('a', { user: { id, user_info: { name: 'Carol' } } });
  await page.call('userBind', 'a', 'notice');
  await page.call('signin', 'a');

  const signedIn = await page.until(async () => {
    const user = await page.call('userData', 'a');
    return user.serverToUserSubscribed ? user : null;
  }, 'signin_success and the #server-to-user channel subscription');
  assertDeepEqual(signedIn.user_data, { id, user_info: { name: 'Carol' } }, 'user_data after signin');
  assertEqual(signedIn.serverToUserChannel, `#server-to-user-${id}`, 'server-to-user channel');
  const requests = page.app.requestsFor(null);
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
  const page = await openPage(ctx);
  for (const [client, user] of [['tab1', id], ['tab2', id], ['stranger', other]]) {
    await page.connected(client, { user: { id: user } });
    await page.call('userBind', client, 'ping');
    await page.call('signin', client);
  }
  for (const client of ['tab1', 'tab2', 'stranger']) {
    await page.until(async () => (await page.call('userData', client)).serverToUserSubscribed, `${client} signed in`);
  }
  await ctx.backend().sendToUser(id, 'ping', { n: 1 });
  for (const client of ['tab1', 'tab2']) {
    await page.until(async () => (await page.call('eventsFor', client, '#user', 'ping', 'bind')).length === 1, `${client} to get the ping`);
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  assertEqual(await page.call('eventsFor', 'stranger', '#user', 'ping', 'bind'), [], "another user's deliveries");
});

scenario('browser: the watchlist reports a watched user going online and offline', async (ctx) => {
  const watcher = uniqueName('browser-watcher');
  const friend = uniqueName('browser-friend');
  const pageA = await openPage(ctx);
  const pageB = await openPage(ctx);
  await pageA.connected('a', { user: { id: watcher, watchlist: [friend] } });
  await pageA.call('signin', 'a');
  await pageA.until(async () => (await pageA.call('userData', 'a')).serverToUserSubscribed, 'the watcher signed in');

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
