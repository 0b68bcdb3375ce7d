// Herald's Mercure hub driven as a customer without any SDK drives one: Chromium's own
// EventSource subscribes (draft-07, the token in the `authorization` query parameter), updates are
// published from Node with a JWT minted by `jose`, and the stream survives two kinds of drop: the
// network cutting it (a proxy between page and hub) and the hub ending it itself (a resume past
// its 256-update replay cap). Both times the browser reconnects on its own with `Last-Event-ID`,
// and what it received is every update once, in order. Then a REST trigger from pusher-http-node
// reaches a pusher-js page and an EventSource page alike. With --cluster both run behind the
// balancer's round robin: publishes and reconnects land on either node, so a resume is often
// served by a node that never saw the updates it replays (the history lives in Redis).

import { scenario, assert, assertEqual, assertDeepEqual, eventually } from '../lib/harness.mjs';
import { openPage, uniqueName } from '../lib/browser.mjs';
import { CuttingProxy, hubUrl, installEventSource, mintToken, publish, untilLog } from '../lib/mercure.mjs';

/** Updates published while the page is away: more than one subscribe replays (256). */
const BACKLOG = 300;

scenario(
  'browser: Mercure EventSource receives jose-signed publishes and resumes by itself after a network cut and a server-ended replay, no gap, no duplicate',
  async (ctx) => {
    const target = ctx.target;
    const topic = `https://example.com/books/${uniqueName('mercure')}`;
    const publisher = await mintToken(target, { publish: [topic] });
    const subscriber = await mintToken(target, { subscribe: [topic] });
    const proxy = await new CuttingProxy(target).start();
    ctx.defer(() => proxy.stop());
    const page = await openPage(ctx);
    await installEventSource(page);
    const url = `${hubUrl(target, proxy.origin)}?${new URLSearchParams({ topic, authorization: subscriber })}`;
    await page.evaluate(({ url }) => window.mercure.open('books', url, []), { url });
    await untilLog(page, 'books', (log) => log.opens === 1, 'the EventSource to open');

    const sent = [];
    const send = async (fields = {}) => {
      const data = `update ${sent.length + 1}`;
      const id = await publish(target, publisher, { topic, data, ...fields });
      sent.push({ type: 'message', id, data });
    };
    const receivedAll = (what) =>
      untilLog(page, 'books', (log) => log.messages.length >= sent.length, what, 20_000);

    // A short reconnection delay, set the Mercure way: the `retry` field of an update.
    await send({ retry: 200 });
    await send();
    await send();
    let log = await receivedAll('the first 3 updates');
    assertDeepEqual(log.messages, sent, 'the first updates as EventSource reported them');

    // 1. The network drops the stream. EventSource notices, reconnects by itself with the id of
    // the last update it got; the proxy holds that request while 3 more updates are published.
    proxy.cut();
    await eventually(() => proxy.held.length === 1, "the EventSource's own reconnect attempt");
    const resume = proxy.requests[1];
    assertEqual(resume.lastEventId, sent[2].id, 'Last-Event-ID of the reconnect');
    assertEqual(resume.url, proxy.requests[0].url, 'the reconnect URL');
    await send();
    await send();
    await send();
    proxy.release();
    log = await receivedAll('the 3 updates published during the cut');
    assertEqual(resume.status, 200, 'status of the resumed subscribe');
    assertEqual(resume.answeredLastEventId, sent[2].id, "the hub's Last-Event-ID answer (not earliest)");
    // A live update after the replay fences it: a duplicate of anything earlier would precede it.
    await send();
    log = await receivedAll('a live update after the resume');
    assertDeepEqual(log.messages, sent, 'updates after the network cut');
    assertEqual(log.opens, 2, 'EventSource opens');

    // 2. The hub ends the stream itself: a resume owed more than 256 updates gets 256, then the
    // stream closes and EventSource resumes again from the last one, with no help from the page.
    proxy.cut();
    await eventually(() => proxy.held.length === 1, "the EventSource's second reconnect attempt");
    const before = proxy.requests.length;
    for (let i = 0; i < BACKLOG; i += 1) await send();
    proxy.release();
    log = await receivedAll(`the ${BACKLOG} updates published during the second cut`);
    await send();
    log = await receivedAll('a live update after the long replay');
    assertEqual(log.messages.length, sent.length, 'number of updates received');
    assertDeepEqual(log.messages, sent, 'updates after the long replay');
    const resumes = proxy.requests.slice(before - 1);
    assertEqual(resumes.length, 2, `subscribes after the second cut: ${JSON.stringify(resumes.map((r) => r.lastEventId))}`);
    const lastBeforeCut = sent.length - BACKLOG - 2;
    assertEqual(resumes[0].lastEventId, sent[lastBeforeCut].id, 'Last-Event-ID after the second cut');
    assertEqual(
      resumes[1].lastEventId,
      sent[lastBeforeCut + 256].id,
      'Last-Event-ID after the hub ended the replay (the 256th replayed update)',
    );
    assertEqual(log.opens, 4, 'EventSource opens');
  },
  { timeoutMs: 90_000 },
);

scenario(
  'browser: a pusher-http-node trigger reaches a pusher-js page and an EventSource page alike, and a Mercure publish reaches pusher-js',
  async (ctx) => {
    const target = ctx.target;
    const channel = uniqueName('mercure-bridge');
    const pusherPage = await openPage(ctx);
    await pusherPage.connected('a');
    await pusherPage.subscribed('a', channel);
    const esPage = await openPage(ctx);
    await installEventSource(esPage);
    const subscriber = await mintToken(target, { subscribe: [channel] });
    const url = `${hubUrl(target)}?${new URLSearchParams({ topic: channel, authorization: subscriber })}`;
    await esPage.evaluate(({ url }) => window.mercure.open('bridge', url, ['book-added']), { url });
    await untilLog(esPage, 'bridge', (log) => log.opens === 1, 'the EventSource to open');

    const payload = { title: 'Dune', year: 1965 };
    const response = await ctx.backend().trigger(channel, 'book-added', payload);
    assertEqual(response.status, 200, 'trigger status');
    const viaPusher = await pusherPage.waitForEvent('a', channel, 'book-added');
    assertDeepEqual(viaPusher.data, payload, 'what pusher-js received');
    const log = await untilLog(esPage, 'bridge', (l) => l.messages.length >= 1, 'the trigger at the EventSource');
    assertEqual(log.messages.length, 1, 'EventSource messages');
    const [message] = log.messages;
    assertEqual(message.type, 'book-added', 'SSE event type (the Pusher event name)');
    assertDeepEqual(JSON.parse(message.data), payload, 'what EventSource received');
    assert(message.id.length > 0, 'the update has an id');

    // The other way: a public Mercure update on the channel's topic reaches pusher-js.
    const publisher = await mintToken(target, { publish: [channel] });
    await publish(target, publisher, { topic: channel, type: 'book-removed', data: JSON.stringify({ title: 'Dune' }) });
    const removed = await pusherPage.waitForEvent('a', channel, 'book-removed');
    assertDeepEqual(removed.data, { title: 'Dune' }, 'the Mercure update as pusher-js received it');
  },
);
