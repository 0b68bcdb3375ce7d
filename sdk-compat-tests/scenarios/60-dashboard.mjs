// The admin dashboard (/dashboard) in headless Chromium, used the way a customer would on their
// first day: sign in as the operator (keyboard only), create an app from the "Create an app" form,
// copy its id, key, host and port from the getting-started page and its secret from the Keys page,
// connect pusher-js (the unmodified browser build, in a second page) with exactly what was shown,
// trigger with pusher-http-node using the shown credentials, and watch the event arrive in the
// Live debug console (channel filter, pause and resume) and in today's message count (Usage page
// and the app list). Every dashboard page visited is saved as a full-page PNG in
// artifacts/dashboard/ (or $HERALD_COMPAT_ARTIFACTS/dashboard/), replaced on every run.
//
// Black box as the rest of the suite: the dashboard is driven only through its HTML (form fields,
// buttons, `data-testid` attributes, the console's rows), the server only through pusher-js and
// pusher-http-node. It needs the operator's password, which only a server the suite started has
// (HERALD_ADMIN_PASSWORD in its environment): against --url it is skipped.
//
// No fixed waits: a row that must NOT be in the console yet (paused) is checked once the console
// has provably received its event (the status line counts the held events).

import fs from 'node:fs/promises';
import path from 'node:path';

import PusherServer from 'pusher';

import { scenario, assert, assertEqual, assertDeepEqual } from '../lib/harness.mjs';
import { openPage, openTab, uniqueName } from '../lib/browser.mjs';
import { SUITE_DIR } from '../lib/clients.mjs';

/** Where the screenshots go: `artifacts/dashboard/` in the suite, or under $HERALD_COMPAT_ARTIFACTS. */
export const SCREENSHOT_DIR = path.join(
  process.env.HERALD_COMPAT_ARTIFACTS ? path.resolve(process.env.HERALD_COMPAT_ARTIFACTS) : path.join(SUITE_DIR, 'artifacts'),
  'dashboard',
);

/** Saves full-page screenshots as NN-name.png, in the order taken. */
class Screenshots {
  constructor(dir) {
    this.dir = dir;
    this.files = [];
  }

  async reset() {
    await fs.rm(this.dir, { recursive: true, force: true });
    await fs.mkdir(this.dir, { recursive: true });
  }

  async take(page, name) {
    const file = path.join(this.dir, `${String(this.files.length + 1).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    this.files.push(file);
    return file;
  }
}

/** The trimmed text of the one element matching `selector` (fails when there is none or several). */
async function text(page, selector) {
  return (await page.locator(selector).textContent()).trim();
}

/** `1,234 of 200,000` or `1,234` -> 1234: the first number of a dashboard cell. */
function firstNumber(value, what) {
  const match = /^\s*([\d,]+)/.exec(value);
  assert(match, `${what}: no number in ${JSON.stringify(value)}`);
  return Number(match[1].replace(/,/g, ''));
}

/** What has the keyboard focus: tag, id, type and text of document.activeElement. */
function focused(page) {
  return page.evaluate(() => {
    const e = document.activeElement;
    return { tag: e.tagName.toLowerCase(), id: e.id, type: e.getAttribute('type'), text: e.textContent.trim() };
  });
}

/** The debug console's rows, newest first: kind (class), channel, the cells' text, hidden. */
function consoleRows(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll('#events tr')).map((tr) => ({
      className: tr.className,
      channel: tr.dataset.channel,
      cells: Array.from(tr.cells).map((td) => td.textContent),
      hidden: tr.hidden,
    })),
  );
}

/** Waits for a `kind-publish` row of `event` on `channel` in the console; returns it. */
async function publishRow(page, channel, event) {
  const handle = await page.waitForFunction(
    ({ channel, event }) => {
      const row = Array.from(document.querySelectorAll('#events tr.kind-publish')).find(
        (tr) => tr.cells[2].textContent === channel && tr.cells[4].textContent.includes(event),
      );
      return row ? { cells: Array.from(row.cells).map((td) => td.textContent), hidden: row.hidden } : null;
    },
    { channel, event },
  );
  return handle.jsonValue();
}

async function goto(page, url) {
  const response = await page.goto(url, { waitUntil: 'load' });
  assertEqual(response.status(), 200, `GET ${url}: status`);
  return response;
}

scenario(
  'dashboard: sign in, create an app, connect pusher-js with the shown credentials, see its events in the live console and usage',
  async (ctx) => {
    const { target } = ctx;
    const base = `http://${target.host}:${target.port}`;
    const shots = new Screenshots(SCREENSHOT_DIR);
    await shots.reset();
    const { page, log, failures } = await openTab(ctx);
    const withLog = (error) => {
      const tail = log.slice(-5);
      if (tail.length > 0) error.message += ` [dashboard page log: ${tail.join(' | ')}]`;
      return error;
    };

    try {
      // --- Sign in: every page needs a session, so /dashboard leads to the sign-in form. ---
      await goto(page, `${base}/dashboard`);
      assertEqual(new URL(page.url()).pathname, '/dashboard/login', 'where /dashboard leads without a session');
      await shots.take(page, 'login');

      // Keyboard only: the email field has the focus (autofocus), Tab reaches the password, then
      // the Sign in button, and Enter on it signs in.
      assertDeepEqual(await focused(page), { tag: 'input', id: 'email', type: 'email', text: '' }, 'focus on the sign-in page');
      await page.keyboard.type(target.operator.email);
      await page.keyboard.press('Tab');
      assertDeepEqual(await focused(page), { tag: 'input', id: 'password', type: 'password', text: '' }, 'focus after Tab from the email field');
      await page.keyboard.type(target.operator.password);
      await page.keyboard.press('Tab');
      assertDeepEqual(await focused(page), { tag: 'button', id: '', type: 'submit', text: 'Sign in' }, 'focus after a second Tab');
      await Promise.all([page.waitForURL(`${base}/dashboard/apps`), page.keyboard.press('Enter')]);
      assert(
        (await page.locator('header.top nav').textContent()).includes(target.operator.email),
        'the signed-in operator is named in the header',
      );
      await shots.take(page, 'apps');

      // --- Create an app (sandbox plan): it lands on its getting-started page. ---
      const appName = `Compat dashboard ${process.pid}-${Date.now().toString(36)}`;
      await page.fill('#app-name', appName);
      await page.selectOption('#app-plan', 'sandbox');
      await Promise.all([
        page.waitForURL(/\/dashboard\/apps\/[^/]+\/getting-started(\?|$)/),
        page.getByRole('button', { name: 'Create app' }).click(),
      ]);
      const appId = decodeURIComponent(/\/dashboard\/apps\/([^/]+)\/getting-started/.exec(new URL(page.url()).pathname)[1]);
      assertEqual(await text(page, '.flash.notice'), `App ${appName} created.`, 'notice after creating the app');
      const shown = {
        appId: await text(page, '[data-testid="app-id"]'),
        key: await text(page, '[data-testid="app-key"]'),
        host: await text(page, '[data-testid="host"]'),
        port: await text(page, '[data-testid="port"]'),
      };
      assertEqual(shown.appId, appId, 'app id shown on the getting-started page');
      // The page is reached at the server's own address: that is what it must tell clients.
      assertEqual(shown.host, target.host, 'host shown on the getting-started page');
      assertEqual(shown.port, String(target.port), 'port shown on the getting-started page');
      assert(shown.key.length > 0 && shown.key !== target.key, `a new key is shown: ${JSON.stringify(shown.key)}`);
      assert(
        (await page.locator('pre').first().textContent()).includes(`new Pusher("${shown.key}"`),
        'the pusher-js snippet is filled in with the key',
      );
      await shots.take(page, 'getting-started');

      // --- Keys: the secret is hidden until "Reveal secrets" posts the form. ---
      await goto(page, `${base}/dashboard/apps/${encodeURIComponent(appId)}/keys`);
      assertEqual(await page.locator('[data-testid="secret"]').count(), 0, 'secrets shown before revealing');
      assertEqual(await text(page, 'table tbody tr:first-child [data-testid="key"]'), shown.key, 'key of the first pair on the Keys page');
      await shots.take(page, 'keys');
      const [revealed] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/keys/reveal') && r.request().method() === 'POST'),
        page.getByRole('button', { name: 'Reveal secrets' }).click(),
      ]);
      assertEqual(revealed.status(), 200, 'POST .../keys/reveal: status');
      assertEqual(revealed.headers()['cache-control'], 'no-store', 'POST .../keys/reveal: Cache-Control');
      await page.waitForLoadState('load');
      const firstPair = page.locator('table tbody tr').first();
      assertEqual((await firstPair.locator('[data-testid="key"]').textContent()).trim(), shown.key, 'key of the revealed first pair');
      assert((await firstPair.locator('td').nth(3).textContent()).includes('current'), 'the first pair is the current one');
      const secret = (await firstPair.locator('[data-testid="secret"]').textContent()).trim();
      assert(secret.length > 0, 'a secret is revealed');
      await shots.take(page, 'keys-revealed');

      // --- pusher-js (browser build) in a second page, configured with what the dashboard showed. ---
      const channel = uniqueName('dashboard-public');
      const other = uniqueName('elsewhere');
      const subscriber = await openPage(ctx);
      await subscriber.client('a', {
        key: shown.key,
        options: {
          cluster: 'herald',
          wsHost: shown.host,
          wsPort: Number(shown.port),
          forceTLS: false,
          enabledTransports: ['ws'],
        },
      });
      await subscriber.waitForState('a', 'connected');
      assert(
        subscriber.sockets[0].startsWith(`ws://${shown.host}:${shown.port}/app/${shown.key}?`),
        `pusher-js connected to ${subscriber.sockets[0]}`,
      );
      await subscriber.subscribed('a', channel);

      // pusher-http-node with the shown app id, key, secret, host and port.
      const backend = new PusherServer({
        appId: shown.appId,
        key: shown.key,
        secret,
        host: shown.host,
        port: shown.port,
        useTLS: false,
      });
      // Herald counts a trigger as one message per target channel plus one per copy delivered.
      let expectedMessages = 0;
      const trigger = async (on, event, data, subscribers) => {
        const response = await backend.trigger(on, event, data);
        assertEqual(response.status, 200, `trigger ${event} on ${on}: status`);
        expectedMessages += 1 + subscribers;
      };

      // --- Live: occupied channels, then the debug console. ---
      await goto(page, `${base}/dashboard/apps/${encodeURIComponent(appId)}/live`);
      const occupied = await page.evaluate(() =>
        Array.from(document.querySelectorAll('table:not(.console) tbody tr')).map((tr) =>
          Array.from(tr.cells).map((td) => td.textContent.trim()),
        ),
      );
      assertDeepEqual(occupied, [[channel, '1', '–']], 'occupied channels on the Live page');
      await page.waitForFunction(() => document.getElementById('status').textContent === 'live');

      await trigger(channel, 'dashboard-greeting', { hello: 'dashboard', n: 1 }, 1);
      const greeting = await subscriber.waitForEvent('a', channel, 'dashboard-greeting');
      assertDeepEqual(greeting.data, { hello: 'dashboard', n: 1 }, 'data pusher-js received');
      const row = await publishRow(page, channel, 'dashboard-greeting');
      assertEqual(row.cells[1], 'publish', 'kind column of the console row');
      assert(row.cells[4].includes('(to 1)'), `console row detail names the one delivery: ${row.cells[4]}`);
      assert(!row.hidden, 'the console row is visible');
      await shots.take(page, 'live');

      // The channel filter hides rows of other channels (an event on a channel nobody listens to).
      await trigger(other, 'elsewhere-event', { n: 0 }, 0);
      assert(!(await publishRow(page, other, 'elsewhere-event')).hidden, 'the other channel row is visible before filtering');
      await page.fill('#filter', channel);
      const filtered = await consoleRows(page);
      assert(
        filtered.every((r) => r.hidden === !r.channel.includes(channel)),
        `with the filter ${channel}, exactly the rows of other channels are hidden: ${JSON.stringify(filtered)}`,
      );
      assert(filtered.some((r) => r.channel === other && r.hidden), 'the other channel row is hidden');
      assert(filtered.some((r) => r.channel === channel && !r.hidden), 'the filtered channel row is visible');
      await shots.take(page, 'live-filtered');
      await page.fill('#filter', '');
      assert((await consoleRows(page)).every((r) => !r.hidden), 'every row is visible again with an empty filter');

      // Pause holds new rows (the status counts them) until Resume.
      await page.click('#pause');
      assertEqual(await page.getAttribute('#pause', 'aria-pressed'), 'true', 'Pause button aria-pressed while paused');
      assertEqual(await text(page, '#pause'), 'Resume', 'Pause button label while paused');
      await trigger(channel, 'dashboard-second', { hello: 'again', n: 2 }, 1);
      assertDeepEqual((await subscriber.waitForEvent('a', channel, 'dashboard-second')).data, { hello: 'again', n: 2 }, 'second event data in pusher-js');
      // The console has received the event (nothing else happens on this new app) and holds it.
      await page.waitForFunction(() => document.getElementById('status').textContent === 'paused (1 waiting)');
      const whilePaused = await consoleRows(page);
      assert(
        !whilePaused.some((r) => r.cells.some((c) => c.includes('dashboard-second'))),
        `no row for the event sent while paused: ${JSON.stringify(whilePaused)}`,
      );
      await shots.take(page, 'live-paused');
      await page.click('#pause');
      const resumed = await publishRow(page, channel, 'dashboard-second');
      assert(!resumed.hidden, 'the held row is visible after Resume');
      assertEqual(await text(page, '#status'), 'live', 'console status after Resume');
      assertEqual(await page.getAttribute('#pause', 'aria-pressed'), 'false', 'Pause button aria-pressed after Resume');
      assertEqual(await text(page, '#pause'), 'Pause', 'Pause button label after Resume');
      await shots.take(page, 'live-resumed');

      // --- Usage: today's count (live), and the charts drawn as inline SVG. ---
      // 2 triggers on the channel with its one subscriber (1 + 1 each), 1 on a channel without
      // subscribers (1 + 0): the count is exact, since nothing else runs on this new app.
      assertEqual(expectedMessages, 5, 'messages the scenario sent');
      await goto(page, `${base}/dashboard/apps/${encodeURIComponent(appId)}/usage`);
      assertEqual(firstNumber(await text(page, '[data-testid="messages-today"]'), 'messages today'), expectedMessages, "today's messages on the Usage page");
      const svgs = ((await page.content()).match(/<svg/g) ?? []).length;
      assert(svgs >= 2, `inline <svg> charts on the Usage page: ${svgs}`);
      const drawn = await page.evaluate(() =>
        Array.from(document.querySelectorAll('main svg')).map((svg) => {
          const box = svg.getBoundingClientRect();
          return box.width > 0 && box.height > 0;
        }),
      );
      assert(drawn.length >= 2 && drawn.every(Boolean), `charts with a size on the Usage page: ${JSON.stringify(drawn)}`);
      await shots.take(page, 'usage');

      await goto(page, `${base}/dashboard/apps`);
      assertEqual(
        firstNumber(await text(page, `[data-testid="messages-${appId}"]`), 'messages cell'),
        expectedMessages,
        "today's messages of the app in the app list",
      );
      await shots.take(page, 'apps-after');

      // --- The remaining pages: each must render (status 200) and is saved. ---
      await goto(page, `${base}/dashboard/apps/${encodeURIComponent(appId)}`);
      assertEqual(await page.inputValue('#name'), appName, 'name field on the settings page');
      assert((await page.locator('.cards').textContent()).includes('sandbox'), 'the plan is shown on the settings page');
      await shots.take(page, 'settings');

      await goto(page, `${base}/dashboard/apps/${encodeURIComponent(appId)}/webhooks`);
      assertEqual(await text(page, 'h1'), 'Webhooks', 'heading of the webhooks page');
      await shots.take(page, 'webhooks');

      await goto(page, `${base}/dashboard/tenants`);
      assertEqual(await text(page, 'h1'), 'Tenants', 'heading of the tenants page');
      assert((await page.locator('table tbody tr').count()) >= 1, 'the tenants page lists a tenant');
      await shots.take(page, 'tenants');

      await goto(page, `${base}/dashboard/users`);
      assert(
        (await page.locator('table tbody tr').allTextContents()).some((r) => r.includes(target.operator.email)),
        'the users page lists the operator',
      );
      await shots.take(page, 'users');

      await goto(page, `${base}/dashboard/account`);
      assert(
        (await page.locator('main p').first().textContent()).includes(`Signed in as ${target.operator.email}, platform operator`),
        'the account page names the operator',
      );
      await shots.take(page, 'account');

      const problems = failures.filter((f) => !f.includes('/favicon.ico'));
      assertDeepEqual(problems, [], 'JavaScript errors and HTTP errors in the dashboard');
    } catch (error) {
      await shots.take(page, 'failure').catch(() => {});
      throw withLog(error);
    } finally {
      console.log(`# dashboard screenshots (${shots.files.length}): ${path.relative(process.cwd(), shots.dir) || '.'}/`);
    }
  },
  { needs: ['dashboard'], timeoutMs: 90_000 },
);

/**
 * The emailed link to `path` (`/dashboard/verify`) for `email`, from the server's log (the server
 * has no HERALD_SMTP_URL, so each message is logged at info level), among the log lines from
 * index `since` on. Polls the log for up to 10 s.
 */
async function loggedLink(target, email, path, since) {
  const pattern = new RegExp(`(https?://[^\\s"\\\\]+${path.replace(/\//g, '\\/')}\\?token=[0-9a-f]{64})`);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const line of target.log.slice(since)) {
      if (!line.includes(email)) continue;
      const match = pattern.exec(line);
      if (match) return match[1];
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no ${path} link for ${email} in the server log within 10 s`);
}

scenario(
  'dashboard: a new customer signs up, follows the emailed link, creates an app, connects pusher-js with the shown key and invites a developer who sees the keys but cannot delete the app',
  async (ctx) => {
    const { target } = ctx;
    const base = `http://${target.host}:${target.port}`;
    const { page, log, failures } = await openTab(ctx);
    const email = `founder-${process.pid}-${Date.now().toString(36)}@signup.test`;
    const password = 'a new customer password';
    try {
      // --- From the sign-in page to the sign-up form. ---
      await goto(page, `${base}/dashboard/login`);
      await Promise.all([
        page.waitForURL(`${base}/dashboard/signup`),
        page.getByRole('link', { name: 'Create an account' }).click(),
      ]);
      await page.fill('#email', email);
      await page.fill('#password', password);
      await page.fill('#confirm', password);
      const since = target.log.length;
      await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Sign up' }).click()]);
      assertEqual(await text(page, 'h2'), 'Check your email', 'heading after signing up');
      assert((await text(page, '.flash.notice')).includes(email), 'the notice names the address');

      // --- Not confirmed yet: signing in answers as a wrong password would, with a hint. ---
      await goto(page, `${base}/dashboard/login`);
      await page.fill('#email', email);
      await page.fill('#password', password);
      await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Sign in' }).click()]);
      assert((await text(page, '.flash.error')).includes('Follow the link we emailed you first'), 'sign-in before confirming');

      // --- The emailed link (from the log): its page asks for the sign-up's password (another
      // is refused and spends nothing), then its button signs in. ---
      const link = await loggedLink(target, email, '/dashboard/verify', since);
      assert(link.startsWith(`${base}/dashboard/verify?token=`), `the link is under the server's URL: ${link}`);
      await goto(page, link);
      await page.fill('#password', 'not the password chosen at sign-up');
      await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Confirm my email' }).click()]);
      assert((await text(page, '.flash.error')).includes('not the password chosen'), 'a wrong password on the link');
      await page.fill('#password', password);
      await Promise.all([
        page.waitForURL(/\/dashboard\/apps(\?|$)/),
        page.getByRole('button', { name: 'Confirm my email' }).click(),
      ]);
      assert((await page.locator('header.top nav').textContent()).includes(email), 'the new customer is named in the header');
      assert((await text(page, '.flash.notice')).includes('Your email is confirmed'), 'notice after confirming');

      // --- The first app, in the customer's own tenant. ---
      const appName = `First app ${process.pid}`;
      await page.fill('#app-name', appName);
      await Promise.all([
        page.waitForURL(/\/dashboard\/apps\/[^/]+\/getting-started(\?|$)/),
        page.getByRole('button', { name: 'Create app' }).click(),
      ]);
      assertEqual(await text(page, '.flash.notice'), `App ${appName} created.`, 'notice after creating the app');
      const shown = {
        key: await text(page, '[data-testid="app-key"]'),
        host: await text(page, '[data-testid="host"]'),
        port: await text(page, '[data-testid="port"]'),
      };
      assert(shown.key.length > 0 && shown.key !== target.key, `a new key is shown: ${JSON.stringify(shown.key)}`);

      // --- pusher-js (browser build) with the shown key connects and subscribes. ---
      const subscriber = await openPage(ctx);
      await subscriber.client('a', {
        key: shown.key,
        options: { cluster: 'herald', wsHost: shown.host, wsPort: Number(shown.port), forceTLS: false, enabledTransports: ['ws'] },
      });
      await subscriber.waitForState('a', 'connected');
      assert(
        subscriber.sockets[0].startsWith(`ws://${shown.host}:${shown.port}/app/${shown.key}?`),
        `pusher-js connected to ${subscriber.sockets[0]}`,
      );
      const channel = uniqueName('first-app');
      await subscriber.subscribed('a', channel);
      const appId = decodeURIComponent(/\/dashboard\/apps\/([^/]+)\/getting-started/.exec(new URL(page.url()).pathname)[1]);
      const appPath = `${base}/dashboard/apps/${encodeURIComponent(appId)}`;

      // --- The owner invites a developer; the emailed link (from the log) lets them join. ---
      const developer = `developer-${process.pid}-${Date.now().toString(36)}@signup.test`;
      const developerPassword = 'a developer password';
      await goto(page, `${base}/dashboard/members`);
      await page.fill('#invite-email', developer);
      await page.selectOption('#invite-role', 'developer');
      const invitedSince = target.log.length;
      await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Send invitation' }).click()]);
      assert(
        (await page.locator('[data-testid="invitation"]').allTextContents()).some((r) => r.includes(developer) && r.includes('developer')),
        'the invitation is pending on the members page',
      );
      const invitation = await loggedLink(target, developer, '/dashboard/join', invitedSince);
      assert(invitation.startsWith(`${base}/dashboard/join?token=`), `the invitation link is under the server's URL: ${invitation}`);
      const dev = await openTab(ctx);
      await goto(dev.page, invitation);
      assertEqual(await text(dev.page, '[data-testid="role"]'), 'developer', 'the join page names the invited role');
      await dev.page.fill('#password', developerPassword);
      await dev.page.fill('#confirm', developerPassword);
      await Promise.all([dev.page.waitForURL(/\/dashboard\/apps(\?|$)/), dev.page.getByRole('button', { name: 'Join' }).click()]);
      assert((await dev.page.locator('header.top nav').textContent()).includes(developer), 'the developer is signed in after joining');

      // --- The developer signs in again (a browser of their own) and sees the app's keys. ---
      const { page: devPage, failures: devFailures } = await openTab(ctx);
      await goto(devPage, `${base}/dashboard/login`);
      await devPage.fill('#email', developer);
      await devPage.fill('#password', developerPassword);
      await Promise.all([devPage.waitForURL(/\/dashboard\/apps(\?|$)/), devPage.getByRole('button', { name: 'Sign in' }).click()]);
      assert((await devPage.locator('main').textContent()).includes(appName), "the developer's app list has the owner's app");
      await goto(devPage, `${appPath}/keys`);
      assertEqual(await text(devPage, '[data-testid="key"]'), shown.key, 'the developer sees the key');
      await Promise.all([devPage.waitForLoadState('load'), devPage.getByRole('button', { name: 'Reveal secrets' }).click()]);
      const secret = await text(devPage, '[data-testid="secret"]');
      assert(secret.length > 0, 'the developer sees the secret');
      // The shown credentials work: pusher-http-node triggers with them, pusher-js receives it.
      const backend = new PusherServer({ appId, key: shown.key, secret, host: shown.host, port: shown.port, useTLS: false });
      const response = await backend.trigger(channel, 'seen-by-developer', { ok: true });
      assertEqual(response.status, 200, 'trigger with the key and secret the developer saw');
      await subscriber.waitForEvent('a', channel, 'seen-by-developer');

      // --- No delete button for a developer, and a forged delete is refused. ---
      await goto(devPage, appPath);
      assertEqual(await devPage.getByRole('link', { name: /Delete this app/ }).count(), 0, 'no delete button for a developer');
      const forged = await devPage.evaluate(async ({ url, name }) => {
        const csrf = document.querySelector('input[name="csrf"]').value;
        const body = new URLSearchParams({ csrf, confirm: name });
        const answer = await fetch(url, { method: 'POST', body, redirect: 'manual' });
        return answer.status;
      }, { url: `${appPath}/delete`, name: appName });
      assertEqual(forged, 403, "a developer's forged delete POST");
      await goto(page, appPath);
      assertEqual(await text(page, '.crumbs strong'), appName, 'the app is still there for its owner');
      const devProblems = devFailures.filter((f) => !f.includes('/favicon.ico') && !f.includes('/delete'));
      assertDeepEqual(devProblems, [], "HTTP and JavaScript errors in the developer's dashboard");

      // --- The link worked once. ---
      const again = await page.goto(link, { waitUntil: 'load' });
      assertEqual(again.status(), 200, 'the link page still renders');
      await page.fill('#password', password);
      await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Confirm my email' }).click()]);
      assert((await text(page, '.flash.error')).includes('expired or was already used'), 'a used link');

      const problems = failures.filter((f) => !f.includes('/favicon.ico') && !f.includes('/dashboard/login') && !f.includes('/dashboard/verify'));
      assertDeepEqual(problems, [], 'JavaScript errors and HTTP errors in the dashboard');
    } catch (error) {
      const tail = log.slice(-5);
      if (tail.length > 0) error.message += ` [dashboard page log: ${tail.join(' | ')}]`;
      throw error;
    }
  },
  { needs: ['signup'], timeoutMs: 90_000 },
);
