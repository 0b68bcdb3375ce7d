// Volume through one browser connection: a burst of events larger than pusher-js's 256 KiB
// streaming buffer. Over xhr_streaming pusher-js aborts its stream once it has read more than
// 256 Ki characters and reopens it for the same session (contract 7.2): nothing may be lost or
// reordered across that reopen, and the session (one connection) goes on.

import { scenario, assert, assertEqual } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';

const EVENTS = 60;
const PER_BATCH = 10;
const FILLER = 'x'.repeat(9_000);

scenario('browser: a 540 KB burst of events arrives whole and in order (over xhr_streaming: across the stream reopen)', async (ctx) => {
  const channel = uniqueName('browser-volume');
  const page = await openPage(ctx);
  await page.connected('a');
  await page.subscribed('a', channel);
  const backend = ctx.backend();
  // Concurrent batches: the server writes while pusher-js is still reading (and reopening).
  const batches = [];
  for (let first = 0; first < EVENTS; first += PER_BATCH) {
    const batch = [];
    for (let n = first; n < first + PER_BATCH; n += 1) batch.push({ channel, name: 'bulk', data: JSON.stringify({ n, filler: FILLER }) });
    batches.push(backend.triggerBatch(batch));
  }
  for (const response of await Promise.all(batches)) assertEqual(response.status, 200, 'triggerBatch status');
  let received;
  try {
    received = await page.waitForEvents('a', channel, 'bulk', { count: EVENTS, ms: 20_000 });
  } catch (error) {
    const got = (await page.events('a', channel, 'bulk')).map((e) => e.data.n);
    const missing = [...Array(EVENTS).keys()].filter((n) => !got.includes(n));
    const log = await page.socketLog();
    error.message = `${got.length} of ${EVENTS} events arrived (missing: ${missing.join(' ')}; receive requests: ${log.map((s) => s.requests).join(' ')}): ${error.message}`;
    throw error;
  }
  const order = received.map((e) => e.data.n);
  // Batches may interleave, but each batch keeps its order and nothing is missing or doubled.
  assertEqual([...order].sort((x, y) => x - y), [...Array(EVENTS).keys()], 'events received (sorted)');
  for (let first = 0; first < EVENTS; first += PER_BATCH) {
    const ofBatch = order.filter((n) => n >= first && n < first + PER_BATCH);
    assertEqual(ofBatch, [...Array(PER_BATCH).keys()].map((i) => first + i), `order within batch ${first / PER_BATCH}`);
  }
  assertEqual(await page.call('statesOf', 'a'), ['connecting', 'connected'], 'connection states');
  assertEqual(page.sockets.length, 1, 'connections opened');
  if (ctx.transport === 'xhr_streaming') {
    const [session] = await page.socketLog();
    assert(session.requests >= 2, `pusher-js reopened its stream (receive requests: ${session.requests})`);
  }
});
