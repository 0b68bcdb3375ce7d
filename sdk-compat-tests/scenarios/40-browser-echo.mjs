// laravel-echo's browser build (echo.iife.js, unmodified) over pusher.min.js in headless Chromium,
// as a Laravel front end uses it: Echo.channel(...) and Echo.private(...).listen(...), whisper /
// listenForWhisper between two pages, and Echo.join(...) with its here / joining / leaving
// callbacks, authorized by the page's /pusher/auth endpoint.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

function echoClient(page, id, settings = {}) {
  return page.call('echoCreate', id, {
    key: page.target.key,
    host: page.target.host,
    port: page.target.port,
    tls: Boolean(page.target.tls),
    transports: page.transports,
    ...settings,
  });
}

scenario('browser: laravel-echo public channel listen() receives broadcast events (.name and namespaced)', async (ctx) => {
  const name = uniqueName('news');
  const page = await openPage(ctx, { echo: true });
  await echoClient(page, 'e');
  await page.waitForState('e', 'connected');
  // A leading dot means "this exact event name"; without it Echo prefixes App\Events\.
  await page.call('echoListen', 'e', 'public', name, '.headline');
  await page.call('echoListen', 'e', 'public', name, 'ArticlePublished');
  await page.waitForEvent('e', name, 'pusher:subscription_succeeded');
  assertEqual(page.app.requestsFor(name).length, 0, 'auth requests for a public channel');
  const backend = ctx.backend();
  assertEqual((await backend.trigger(name, 'headline', { title: 'Herald ships' })).status, 200, 'trigger status');
  assertDeepEqual((await page.waitForEvent('e', `echo:${name}`, '.headline')).data, { title: 'Herald ships' }, '.headline data');
  assertEqual(
    (await backend.trigger(name, 'App\\Events\\ArticlePublished', { id: 12 })).status,
    200,
    'trigger status (namespaced event)',
  );
  assertDeepEqual((await page.waitForEvent('e', `echo:${name}`, 'ArticlePublished')).data, { id: 12 }, 'ArticlePublished data');
});

scenario('browser: laravel-echo private channel listen() receives a broadcast event', async (ctx) => {
  const name = uniqueName('orders');
  const page = await openPage(ctx, { echo: true });
  await echoClient(page, 'e');
  await page.waitForState('e', 'connected');
  await page.call('echoListen', 'e', 'private', name, '.OrderShipped');
  await page.waitForEvent('e', `private-${name}`, 'pusher:subscription_succeeded');
  assertEqual(page.app.requestsFor(`private-${name}`).length, 1, 'auth requests');
  const response = await ctx.backend().trigger(`private-${name}`, 'OrderShipped', { order: { id: 7 } });
  assertEqual(response.status, 200, 'trigger status');
  const event = await page.waitForEvent('e', `echo:${name}`, '.OrderShipped');
  assertDeepEqual(event.data, { order: { id: 7 } }, 'event data at the listener');
});

scenario('browser: laravel-echo join() gets here / joining / leaving', async (ctx) => {
  const room = uniqueName('chat');
  const pageA = await openPage(ctx, { echo: true });
  const pageB = await openPage(ctx, { echo: true });
  const ann = { user_id: 'ann', user_info: { id: 'ann', name: 'Ann' } };
  const ben = { user_id: 'ben', user_info: { id: 'ben', name: 'Ben' } };
  await echoClient(pageA, 'a', { presence: ann });
  await pageA.waitForState('a', 'connected');
  await pageA.call('echoJoin', 'a', room);
  const hereA = await pageA.waitForEvent('a', `echo:${room}`, 'here');
  assertDeepEqual(hereA.data, [{ id: 'ann', name: 'Ann' }], "here() for ann");

  await echoClient(pageB, 'b', { presence: ben });
  await pageB.waitForState('b', 'connected');
  await pageB.call('echoJoin', 'b', room);
  const hereB = await pageB.waitForEvent('b', `echo:${room}`, 'here');
  const sorted = [...hereB.data].sort((x, y) => x.id.localeCompare(y.id));
  assertDeepEqual(sorted, [{ id: 'ann', name: 'Ann' }, { id: 'ben', name: 'Ben' }], 'here() for ben');
  assertDeepEqual((await pageA.waitForEvent('a', `echo:${room}`, 'joining')).data, { id: 'ben', name: 'Ben' }, 'joining() at ann');

  await pageB.call('echoLeave', 'b', room);
  assertDeepEqual((await pageA.waitForEvent('a', `echo:${room}`, 'leaving')).data, { id: 'ben', name: 'Ben' }, 'leaving() at ann');
  assertEqual(await pageA.events('a', `echo:${room}`, 'error'), [], 'error() callbacks');
});

scenario('browser: laravel-echo whisper / listenForWhisper between two pages on a private channel, not echoed', async (ctx) => {
  const name = uniqueName('editing');
  const channel = `private-${name}`;
  const pageA = await openPage(ctx, { echo: true });
  const pageB = await openPage(ctx, { echo: true });
  for (const [page, id] of [[pageA, 'a'], [pageB, 'b']]) {
    await echoClient(page, id);
    await page.waitForState(id, 'connected');
    await page.call('echoListenForWhisper', id, 'private', name, 'typing');
    await page.waitForEvent(id, channel, 'pusher:subscription_succeeded');
  }

  await pageA.call('echoWhisper', 'a', 'private', name, 'typing', { name: 'Alice', typing: true });
  const atB = await pageB.waitForEvent('b', `echo:${name}`, 'whisper:typing');
  assertDeepEqual(atB.data, { name: 'Alice', typing: true }, 'whisper from a at b');
  assert(
    pageA.wire.some((f) => f.direction === 'out' && JSON.parse(f.payload).event === 'client-typing'),
    'a sent a client-typing frame',
  );

  await pageB.call('echoWhisper', 'b', 'private', name, 'typing', { name: 'Bob', typing: false });
  const atA = await pageA.waitForEvent('a', `echo:${name}`, 'whisper:typing');
  assertDeepEqual(atA.data, { name: 'Bob', typing: false }, 'whisper from b at a');

  // Not echoed to the sender: after a fence on each connection, each page got exactly the other's
  // whisper, on the wire and at listenForWhisper.
  await pageA.fence('a', channel);
  await pageB.fence('b', channel);
  for (const [page, id, from] of [[pageA, 'a', 'Bob'], [pageB, 'b', 'Alice']]) {
    const whispers = (await page.events(id, `echo:${name}`, 'whisper:typing')).map((e) => e.data.name);
    assertDeepEqual(whispers, [from], `whispers heard by ${id}`);
    const frames = (await page.frames(id, { channel, event: 'client-typing' })).map((f) => f.data.name);
    assertDeepEqual(frames, [from], `client-typing frames received by ${id}`);
  }
});
