// User authentication with pusher-js (Node build): signin, server-to-user messages, the
// watchlist, presence from the signed-in user, and terminate_connections from pusher-http-node.

import {
  scenario,
  assert,
  assertEqual,
  assertDeepEqual,
  once,
  collect,
  eventually,
  sleep,
  unique,
  reachState,
  rawFrames,
} from '../lib/harness.mjs';

// pusher-js ignores frames for channels it does not know, so whether a message for a user reached
// another connection is asserted on raw frames, after the right recipient got it (positive
// control) and after `ctx.flush` on the connection that must have got nothing.

/** Raw frames of `#server-to-user-ID` at a connection. */
function userFrames(client, id) {
  return rawFrames(client.connection, (f) => f.channel === `#server-to-user-${id}`);
}

/** `client.signin()`, then waits until pusher-js has the user and its #server-to-user channel. */
async function signIn(client) {
  client.signin();
  await eventually(
    () => client.user.user_data && client.user.serverToUserChannel?.subscribed,
    `signin of ${client.user.user_data?.id ?? 'the user'}`,
  );
  return client;
}

scenario('node: signin, then sendToUser from pusher-http-node reaches that user only', async (ctx) => {
  const alice = { id: unique('alice'), user_info: { name: 'Alice' } };
  const bob = { id: unique('bob') };
  const a = await signIn(await ctx.connected({ user: alice }));
  const b = await signIn(await ctx.connected({ user: bob }));
  assertDeepEqual(a.user.user_data, alice, 'user_data pusher-js holds after signin');

  const seenA = collect(a.user, 'notice');
  const aliceAtB = userFrames(b, alice.id);
  const noticesAtB = rawFrames(b.connection, (f) => f.event === 'notice');
  const response = await ctx.backend().sendToUser(alice.id, 'notice', { text: 'for Alice' });
  assertEqual(response.status, 200, 'sendToUser status');
  await eventually(() => seenA.length === 1, 'Alice to get the message');
  assertDeepEqual(seenA[0], { text: 'for Alice' }, 'data');
  await ctx.flush(b);
  assertDeepEqual(aliceAtB, [], "frames of Alice's #server-to-user channel at Bob");
  assertDeepEqual(noticesAtB, [], 'the notice at Bob, on any channel');
  await ctx.flush(a);
  assertEqual(seenA.length, 1, 'messages seen by Alice');
});

scenario('node: sendToUser reaches every signed-in connection of the user, not an unsigned one', async (ctx) => {
  const user = { id: unique('multi-device') };
  const phone = await signIn(await ctx.connected({ user }));
  const laptop = await signIn(await ctx.connected({ user }));
  // Same user, but never signed in: it has no server-to-user channel and must get nothing.
  const anonymous = await ctx.connected({ user });
  const seenAnon = [];
  anonymous.connection.bind('message', (m) => {
    if (m.event === 'ping-user') seenAnon.push(m);
  });

  const atPhone = once(phone.user, 'ping-user', 'the message on the phone');
  const atLaptop = once(laptop.user, 'ping-user', 'the message on the laptop');
  await ctx.backend().sendToUser(user.id, 'ping-user', 'hi');
  assertEqual(await atPhone, 'hi', 'data on the phone');
  assertEqual(await atLaptop, 'hi', 'data on the laptop');
  await ctx.flush(anonymous);
  assertEqual(seenAnon.length, 0, 'frames for the user on a connection that did not sign in');
});

scenario('node: a user can subscribe to a presence channel without channel_data once signed in', async (ctx) => {
  const name = unique('presence-compat-signed');
  const watcher = await ctx.connected({ presence: { user_id: unique('watcher'), user_info: {} } });
  const chW = await ctx.subscribed(watcher, name);
  const user = { id: unique('signed'), user_info: { name: 'From signin' } };
  // No `presence` option: the auth callback returns no channel_data, so pusher-js and the server
  // take the member from the signin.
  const client = await signIn(await ctx.connected({ user }));
  const added = once(chW, 'pusher:member_added', 'member_added for the signed-in user');
  const channel = await ctx.subscribed(client, name);
  assertDeepEqual(channel.members.me, { id: user.id, info: user.user_info }, 'members.me');
  assertDeepEqual(await added, { id: user.id, info: user.user_info }, 'member_added data');
});

scenario('node: watchlist: online when a watched user signs in, offline when it disconnects', async (ctx) => {
  const watched = unique('watched');
  const other = unique('not-watched');
  const watcher = await ctx.connected({ user: { id: unique('watcher'), watchlist: [watched] } });
  const online = collect(watcher.user.watchlist, 'online');
  const offline = collect(watcher.user.watchlist, 'offline');
  await signIn(watcher);
  const includes = (events, id) => events.some((e) => Array.isArray(e.user_ids) && e.user_ids.includes(id));
  await ctx.flush(watcher);
  assert(!includes(online, watched), `the watched user is reported online before signing in: ${JSON.stringify(online)}`);

  // Someone not on the watchlist signs in: no event about them.
  await signIn(await ctx.connected({ user: { id: other } }));
  const target = await signIn(await ctx.connected({ user: { id: watched } }));
  await eventually(() => includes(online, watched), 'an online event for the watched user');
  const onlineEvent = online.find((e) => e.user_ids.includes(watched));
  assertEqual(onlineEvent.name, 'online', 'event name');
  assertDeepEqual(onlineEvent.user_ids, [watched], 'online user_ids');

  const offlineBefore = offline.filter((e) => e.user_ids?.includes(watched)).length;
  target.disconnect();
  await eventually(
    () => offline.filter((e) => e.user_ids?.includes(watched)).length > offlineBefore,
    'an offline event for the watched user',
  );
  await ctx.flush(watcher);
  assert(!includes(online, other) && !includes(offline, other), 'events about a user not on the watchlist');
});

scenario('node: watchlist: a user stays online until its last connection disconnects', async (ctx) => {
  const watched = unique('watched-twice');
  const watcher = await ctx.connected({ user: { id: unique('watcher'), watchlist: [watched] } });
  const online = collect(watcher.user.watchlist, 'online');
  const offline = collect(watcher.user.watchlist, 'offline');
  await signIn(watcher);
  const about = (events) => events.filter((e) => e.user_ids?.includes(watched)).length;
  const offlineAtStart = about(offline);

  const first = await signIn(await ctx.connected({ user: { id: watched } }));
  // A channel only the first connection is on: once the server reports it vacated, it has
  // processed that connection's disconnect, signin and watchlist included.
  const firstOnly = unique('compat-first-only');
  await ctx.subscribed(first, firstOnly);
  await eventually(() => about(online) === 1, 'online after the first connection signed in');
  const second = await signIn(await ctx.connected({ user: { id: watched } }));
  await ctx.flush(watcher);
  assertEqual(about(online), 1, 'online events after the second connection signed in');

  first.disconnect();
  await ctx.vacated(firstOnly);
  await ctx.flush(watcher);
  assertEqual(about(offline), offlineAtStart, 'offline events while a connection remains');
  second.disconnect();
  await eventually(() => about(offline) === offlineAtStart + 1, 'offline after the last connection left');
});

scenario('node: terminateUserConnections disconnects that user (4009, no auto-reconnect), not others', async (ctx) => {
  const victim = unique('terminated');
  const bystander = unique('bystander');
  const a = await signIn(await ctx.connected({ user: { id: victim } }));
  const a2 = await signIn(await ctx.connected({ user: { id: victim } }));
  const b = await signIn(await ctx.connected({ user: { id: bystander } }));
  const name = unique('compat-after-terminate');
  const chB = await ctx.subscribed(b, name);
  const errorsA = collect(a.connection, 'error');
  const errorsA2 = collect(a2.connection, 'error');
  const statesA = collect(a.connection, 'state_change');

  const response = await ctx.backend().terminateUserConnections(victim);
  assertEqual(response.status, 200, 'terminate status');
  assertDeepEqual(await response.json(), {}, 'terminate body');
  await reachState(a.connection, 'disconnected');
  await reachState(a2.connection, 'disconnected');
  // pusher-js reports the close code as a connection error {type: 'PusherError', data: {code}}.
  for (const [label, errors] of [['first', errorsA], ['second', errorsA2]]) {
    assert(
      errors.some((e) => e.type === 'PusherError' && e.data?.code === 4009),
      `an error with code 4009 on the ${label} terminated connection: ${JSON.stringify(errors)}`,
    );
  }

  // pusher-js does not come back by itself, and the other user is untouched.
  await sleep(1500);
  assertEqual(a.connection.state, 'disconnected', 'terminated connection state 1.5 s later');
  assert(!statesA.some((s) => s.current === 'connecting' && s.previous === 'disconnected'),
    `the terminated client reconnected by itself: ${JSON.stringify(statesA)}`);
  assertEqual(b.connection.state, 'connected', 'the other user\'s connection state');
  const received = once(chB, 'still-here');
  await ctx.backend().trigger(name, 'still-here', {});
  await received;

  // The user is not banned: the application may reconnect it.
  a.connect();
  await reachState(a.connection, 'connected');
  await signIn(a);
});

scenario('node: terminateUserConnections leaves a presence-only member of that id connected', async (ctx) => {
  const id = unique('presence-only');
  const name = unique('presence-compat-terminate');
  // Never signed in: it is in the presence channel under that id, but not an authenticated user.
  const member = await ctx.connected({ presence: { user_id: id, user_info: {} } });
  const channel = await ctx.subscribed(member, name);
  const signedIn = await signIn(await ctx.connected({ user: { id } }));

  await ctx.backend().terminateUserConnections(id);
  await reachState(signedIn.connection, 'disconnected');
  // Had the server closed this one too, its close would have come before this event.
  const received = once(channel, 'still-here');
  await ctx.backend().trigger(name, 'still-here', {});
  await received;
  assertEqual(member.connection.state, 'connected', 'the presence-only connection state');
});

scenario('node: a signin with a forged signature is refused: no user, no server-to-user messages', async (ctx) => {
  const id = unique('forged-user');
  const forger = ctx.backend({ secret: 'not-the-app-secret-at-all' });
  const client = await ctx.connected({
    userAuthentication: {
      customHandler: ({ socketId }, callback) => callback(null, forger.authenticateUser(socketId, { id })),
    },
  });
  const errors = collect(client.connection, 'error');
  const leaked = userFrames(client, id);
  const notes = rawFrames(client.connection, (f) => f.event === 'secret-note');
  client.signin();
  await eventually(() => errors.length > 0, 'an error for the forged signin');
  assertEqual(errors[0].type, 'PusherError', 'error type');
  assertEqual(errors[0].data?.code, null, 'pusher:error code');
  assertEqual(client.user.user_data, null, 'user_data after a refused signin');

  // Positive control: the same id, honestly signed in elsewhere, does get the message.
  const honest = await signIn(await ctx.connected({ user: { id } }));
  const delivered = once(honest.user, 'secret-note', 'the message at the honestly signed-in connection');
  await ctx.backend().sendToUser(id, 'secret-note', { leaked: true });
  assertDeepEqual(await delivered, { leaked: true }, 'data at the honest connection');
  await ctx.flush(client);
  assertDeepEqual(leaked, [], `frames of #server-to-user-${id} at the refused connection`);
  assertDeepEqual(notes, [], 'the message at the refused connection, on any channel');
  assertEqual(client.connection.state, 'connected', 'connection state');
});

scenario('node: another connection cannot subscribe to #server-to-user-ID and read that user\'s messages', async (ctx) => {
  const victim = { id: unique('victim') };
  const target = await signIn(await ctx.connected({ user: victim }));
  const spy = await signIn(await ctx.connected({ user: { id: unique('spy') } }));
  const anonymous = await ctx.connected();
  const intercepted = [];
  const spyErrors = [];
  for (const client of [spy, anonymous]) {
    client.connection.bind('message', (m) => {
      if (m.channel === `#server-to-user-${victim.id}`) intercepted.push(m);
    });
    client.connection.bind('error', (e) => spyErrors.push(e));
    // pusher-js refuses `#` channels itself, so the frame is sent by hand.
    client.send_event('pusher:subscribe', { auth: '', channel: `#server-to-user-${victim.id}` });
  }
  await eventually(() => spyErrors.length >= 2, 'a refusal for each forged #server-to-user subscription');
  const delivered = once(target.user, 'private-note', 'the message at the real user');
  await ctx.backend().sendToUser(victim.id, 'private-note', { for: 'victim' });
  assertDeepEqual(await delivered, { for: 'victim' }, 'data at the real user');
  await ctx.flush(spy);
  await ctx.flush(anonymous);
  assertDeepEqual(
    intercepted.filter((m) => m.event !== 'pusher:subscription_error'),
    [],
    'frames of the victim\'s channel at other connections',
  );
});

scenario('node: a watchlist over 100 ids: signin succeeds, then error 4302, connection stays up', async (ctx) => {
  const watchlist = Array.from({ length: 101 }, (_, i) => `wl-${i}-${unique('u')}`);
  const client = await ctx.connected({ user: { id: unique('big-watcher'), watchlist } });
  const errors = collect(client.connection, 'error');
  await signIn(client);
  await eventually(() => errors.some((e) => e.data?.code === 4302), 'a pusher:error with code 4302');
  await ctx.flush(client);
  assertEqual(client.connection.state, 'connected', 'connection state');
  assert(client.user.user_data, 'still signed in');
});

scenario('node: watchlist: a user already online is reported online right after signin', async (ctx) => {
  const present = unique('already-online');
  const absent = unique('never-online');
  await signIn(await ctx.connected({ user: { id: present } }));
  const watcher = await ctx.connected({ user: { id: unique('late-watcher'), watchlist: [present, absent] } });
  const online = collect(watcher.user.watchlist, 'online');
  const offline = collect(watcher.user.watchlist, 'offline');
  await signIn(watcher);
  await eventually(() => online.some((e) => e.user_ids?.includes(present)), 'the initial online event');
  await ctx.flush(watcher);
  assert(!online.some((e) => e.user_ids?.includes(absent)), `online events: ${JSON.stringify(online)}`);
  assert(!offline.some((e) => e.user_ids?.includes(present)), `offline events: ${JSON.stringify(offline)}`);
});
