// pusher-js (Node build) and pusher-http-node: connecting, public and private channels.

import { scenario, assert, assertEqual, once, unique } from '../lib/harness.mjs';

scenario('node: pusher-js connects and gets a socket id of the form 123.456', async (ctx) => {
  const client = await ctx.connected();
  assert(/^\d+\.\d+$/.test(client.connection.socket_id), `socket_id ${client.connection.socket_id}`);
});

scenario('node: public channel receives an event triggered with pusher-http-node', async (ctx) => {
  const name = unique('compat-public');
  const client = await ctx.connected();
  const channel = await ctx.subscribed(client, name);
  const received = once(channel, 'greeting');
  const response = await ctx.backend().trigger(name, 'greeting', { hello: 'world' });
  assertEqual(response.status, 200, 'trigger status');
  assertEqual(await response.json(), {}, 'trigger body');
  assertEqual(await received, { hello: 'world' }, 'event data');
});

scenario('node: private channel authorized by the SDK receives events', async (ctx) => {
  const name = unique('private-compat');
  const client = await ctx.connected();
  const channel = await ctx.subscribed(client, name);
  const received = once(channel, 'secret-news');
  await ctx.backend().trigger(name, 'secret-news', 'plain string');
  assertEqual(await received, 'plain string', 'event data');
});
