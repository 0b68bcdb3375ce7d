// A browser whose WebSocket is blocked (a WebSocket-hostile proxy or policy): the page removes
// window.WebSocket before pusher.min.js loads and configures pusher-js as the README's snippet
// does (wsHost/wsPort and httpHost/httpPort, no enabledTransports). pusher-js must find its HTTP
// fallback by itself (contract 7.1: with no WebSocket it goes straight to xhr_streaming, with
// xhr_polling 4 s later) and work over it: connect, authorize, subscribe, receive.

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

scenario('browser: with window.WebSocket removed, pusher.min.js falls back to HTTP by itself and receives events', async (ctx) => {
  const publicChannel = uniqueName('browser-blocked-ws');
  const privateChannel = uniqueName('private-browser-blocked-ws');
  const page = await openPage(ctx, { blockWebSocket: true });
  assertEqual(await page.evaluate(() => typeof window.WebSocket), 'undefined', 'window.WebSocket in the page');

  // No transport list: pusher-js's own strategy.
  await page.client('a', { transports: null });
  await page.waitForState('a', 'connected', 20_000);
  const transport = await page.transportOf('a');
  assert(transport === 'xhr_streaming' || transport === 'xhr_polling', `pusher-js's transport: ${transport}`);
  // Streaming starts first and works: pusher-js has no reason to go on to polling.
  assertEqual(transport, 'xhr_streaming', "pusher-js's transport");
  assertEqual(page.websockets, [], 'WebSockets opened by the page');
  assert(
    page.sockets.length >= 1 && page.sockets.every((url) => /\/pusher\/app\/[^/]+\/\d+\/[0-9a-v]+\/xhr_streaming\?/.test(url)),
    `the page's connections: ${JSON.stringify(page.sockets)}`,
  );
  const socketId = await page.call('socketId', 'a');
  assert(/^\d+\.\d+$/.test(socketId), `socket_id ${socketId}`);
  const log = await page.socketLog();
  assert(
    log.some((s) => s.transport === 'xhr_streaming' && s.socketId === socketId && s.opened !== null),
    `a fallback session established ${socketId}: ${JSON.stringify(log)}`,
  );

  await page.subscribed('a', publicChannel);
  await page.subscribed('a', privateChannel);
  const [auth] = page.app.requestsFor(privateChannel);
  assert(auth && auth.status === 200 && auth.socketId === socketId, `auth request ${JSON.stringify(auth)}`);
  const backend = ctx.backend();
  assertEqual((await backend.trigger(publicChannel, 'news', { over: 'http' })).status, 200, 'trigger status');
  assertDeepEqual((await page.waitForEvent('a', publicChannel, 'news')).data, { over: 'http' }, 'public event data');
  assertEqual((await backend.trigger(privateChannel, 'secret', { n: 1 })).status, 200, 'trigger status');
  assertDeepEqual((await page.waitForEvent('a', privateChannel, 'secret')).data, { n: 1 }, 'private event data');
  // Over that session: the subscribe went out in an xhr_send body, the event came in its stream.
  const session = await page.socketOf('a');
  assert(
    page.wire.some((f) => f.socket === session && f.direction === 'out' && f.payload.includes('pusher:subscribe') && f.payload.includes(privateChannel)),
    'the subscribe was sent over the fallback session',
  );
  assertEqual(await page.call('statesOf', 'a'), ['connecting', 'connected'], 'connection states');
  assertEqual(await page.call('errorsFor', 'a'), [], 'connection errors');
});
