// A pusher-js (Node build) client with `forceTLS: true`, in a process of its own so that it
// trusts the scenario's test CA the way a customer's Node process would: through
// NODE_EXTRA_CA_CERTS, read at start-up (pusher-js takes no CA option).
//
//   NODE_EXTRA_CA_CERTS=ca.pem node tls-client.mjs HOST PORT KEY
//
// JSON lines out: {"state": S, "socket_id": ID} on every connection state change, {"subscribed":
// CHANNEL}, {"event": NAME, "channel": CHANNEL, "data": DATA}. JSON lines in: {"subscribe":
// CHANNEL}. Ends when its standard input closes.

import readline from 'node:readline';

import Pusher from 'pusher-js';

const [host, port, key] = process.argv.slice(2);
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

const client = new Pusher(key, {
  cluster: 'unused',
  wsHost: host,
  wssPort: Number(port),
  forceTLS: true,
  disableStats: true,
});
client.connection.bind('state_change', ({ current }) =>
  print({
    state: current,
    socket_id: client.connection.socket_id ?? null,
    transport: client.connection.connection?.transport?.name ?? null,
  }),
);
client.bind_global((event, data) => {
  if (!event.startsWith('pusher')) print({ event, data });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  if (command.subscribe) {
    const channel = client.subscribe(command.subscribe);
    channel.bind('pusher:subscription_succeeded', () => print({ subscribed: command.subscribe }));
    channel.bind_global((event, data) => {
      if (!event.startsWith('pusher')) print({ event, channel: command.subscribe, data });
    });
  }
}).on('close', () => {
  client.disconnect();
  process.exit(0);
});
