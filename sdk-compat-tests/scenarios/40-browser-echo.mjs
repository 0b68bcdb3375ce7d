// laravel-echo's browser build (echo.iife.js, unmodified) over pusher.min.js in headless Chromium,
// as a Laravel front end uses it: Echo.private(...).listen(...) and Echo.join(...) with its
// here / joining / leaving callbacks, authorized by the page's /pusher/auth endpoint.

import { scenario, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

function echoClient(page, id, settings = {}) {
  return page.call('echoCreate', id, {
    key: page.target.key,
    host: page.target.host,
    port: page.target.port,
    tls: Boolean(page.target.tls),
    transports: ['ws'],
    ...settings,
  });
}

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
