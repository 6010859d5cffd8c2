// qiflow CI: the live dashboard (/qiflow/) in a real browser, against a running example service.
//
//   node .ci/browser/dashboard.mjs --base http://127.0.0.1:PORT --token-file DIR/data/admin-token \
//        --name axum --screenshot OUT.png
//
// Drives Debian's Chromium ($CHROMIUM, default /usr/bin/chromium) with playwright-core:
//   1. without a token: only the login form, no data, no overview answered;
//   2. sends traffic (Node's fetch), opens /qiflow/#token=…: the token leaves the address bar for
//      sessionStorage and the page shows the requests, the error groups, the /slow route, the slow
//      requests, the alerts, the jobs and the permission denials within 5 s;
//   3. throughout: no console error or warning, no page error, no request to another origin;
//   4. a reload stays signed in; ?kiosk=1 has the kiosk class and no controls;
//   5. a full-page screenshot (light), and the dark scheme renders differently;
//   6. one summary line. Exit 0 when all hold, 1 (with what failed) otherwise; never more than 60 s.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const GLOBAL_TIMEOUT_MS = 60_000;
const DATA_TIMEOUT_MS = 5_000;
const TOKEN_KEY = 'qiflow.token';

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    'token-file': { type: 'string' },
    name: { type: 'string', default: 'service' },
    screenshot: { type: 'string' },
  },
});
const NAME = opts.name;

class Failure extends Error {}
const fail = (msg) => {
  throw new Failure(msg);
};
const log = (msg) => console.log(`dashboard (${NAME}): ${msg}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Never hang: whatever is stuck, the process ends (Playwright kills its browser on exit).
const watchdog = setTimeout(() => {
  console.error(`dashboard (${NAME}): FAILED: still running after ${GLOBAL_TIMEOUT_MS / 1000} s; giving up`);
  process.exit(1);
}, GLOBAL_TIMEOUT_MS);

// In the page: what is missing for the dashboard to count as showing the service's data (an
// empty list when everything is there), or with `list` false whether nothing is. A function, not
// a string: the page's CSP forbids eval, which string predicates need.
function dataMissing({ minRequests, list }) {
  const q = (sel) => document.querySelector(sel);
  const visible = (el) => Boolean(el && el.checkVisibility());
  const missing = [];
  if (visible(q('#login'))) missing.push('the login form is shown');
  const total = q('[data-metric="requests-total"]');
  const text = total ? total.textContent.trim() : null;
  if (text === null || !/^\d+$/.test(text) || Number(text) < minRequests) {
    missing.push(`[data-metric="requests-total"] is ${JSON.stringify(text)}, want an integer >= ${minRequests}`);
  }
  if (!q('#errors [data-fingerprint]')) missing.push('no error group in #errors ([data-fingerprint])');
  else if (!/\/fail|panic/i.test(q('#errors').textContent)) missing.push('#errors mentions neither /fail nor the panic');
  if (!q('#routes tr[data-route="/slow"]')) missing.push('no #routes tr[data-route="/slow"]');
  if (!q('#slow [data-request-id]')) missing.push('no slow request in #slow ([data-request-id])');
  if (!q('#alerts [data-alert]')) missing.push('no active alert in #alerts ([data-alert])');
  if (!q('#audit [data-seq]')) missing.push('no audit record in #audit ([data-seq]): the logins are audited');
  if (!q('#jobs [data-job="pg-dump"][data-state="up"]')) missing.push('no job pg-dump in state up in #jobs ([data-job])');
  if (!q('#denials [data-denial="demo"]')) missing.push('no denial of demo in #denials ([data-denial]): POST /orders as demo is refused');
  return list ? missing : missing.length === 0;
}

// Waits (DATA_TIMEOUT_MS) until the page shows the data; fails listing what is still missing.
async function waitForData(page, what, minRequests) {
  try {
    await page.waitForFunction(dataMissing, { minRequests, list: false }, { timeout: DATA_TIMEOUT_MS, polling: 100 });
  } catch (e) {
    let missing;
    try {
      missing = await page.evaluate(dataMissing, { minRequests, list: true });
    } catch (inner) {
      missing = [inner.message];
    }
    const status = await page.locator('#status').textContent().catch(() => '?');
    fail(`${what}: not shown within ${DATA_TIMEOUT_MS / 1000} s: ${missing.join('; ') || e.message} (status line: ${JSON.stringify(status)})`);
  }
}

// Every console error or warning, page error and request to another origin, on every page.
function recorder(base) {
  const origin = new URL(base).origin;
  const problems = [];
  const foreign = [];
  const overviewOk = [];
  const attach = (page) => {
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()} (${page.url()})`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message} (${page.url()})`));
    page.on('request', (r) => {
      const url = new URL(r.url());
      // data:, blob: and about: never leave the browser; anything else must stay on the service.
      if (['data:', 'blob:', 'about:'].includes(url.protocol)) return;
      if (url.origin !== origin) foreign.push(`${r.method()} ${r.url()}`);
    });
    page.on('response', (r) => {
      if (new URL(r.url()).pathname === '/qiflow/api/overview' && r.status() === 200) overviewOk.push(r.url());
    });
  };
  const check = (when) => {
    if (problems.length) fail(`${when}: the browser reported:\n  ${problems.join('\n  ')}`);
    if (foreign.length) fail(`${when}: requests to other origins than ${origin}:\n  ${foreign.join('\n  ')}`);
  };
  return { attach, check, overviewOk };
}

// Step 2's traffic, from Node (not the browser). Every request must get an HTTP answer.
async function sendTraffic(base) {
  const get = async (path) => {
    try {
      const res = await fetch(base + path, { signal: AbortSignal.timeout(15_000) });
      await res.arrayBuffer();
      return { path, status: res.status };
    } catch (e) {
      return { path, error: e.message };
    }
  };
  const paths = [
    ...Array(20).fill('/hello'),
    ...Array(3).fill('/fail'),
    '/panic',
    ...Array(3).fill('/slow?ms=1500'),
  ];
  // Two logins (one refused): audited by every example, so the audit card has records.
  const login = async (password) => {
    const path = `POST /login (${password})`;
    try {
      const res = await fetch(`${base}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'demo', password }),
        signal: AbortSignal.timeout(15_000),
      });
      await res.arrayBuffer();
      return { path, status: res.status };
    } catch (e) {
      return { path, error: e.message };
    }
  };
  // A permission denied (the demo user is a viewer; writing orders needs orders:write): audited,
  // and listed in the denials card.
  const denied = async () => {
    const path = 'POST /orders (demo)';
    try {
      const res = await fetch(`${base}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-demo-user': 'demo' },
        body: '{"item":"book"}',
        signal: AbortSignal.timeout(15_000),
      });
      await res.arrayBuffer();
      if (res.status !== 403) return { path, error: `answered ${res.status}, want 403` };
      return { path, status: res.status };
    } catch (e) {
      return { path, error: e.message };
    }
  };
  const results = await Promise.all([...paths.map(get), login('demo'), login('wrong'), denied()]);
  const broken = results.filter((r) => r.error);
  if (broken.length) fail(`traffic: no answer for ${broken.map((r) => `${r.path} (${r.error})`).join(', ')}`);
  const hello = results.filter((r) => r.path === '/hello' && r.status !== 200);
  if (hello.length) fail(`traffic: GET /hello answered ${hello.map((r) => r.status).join(', ')}, want 200`);
  return results.length;
}

// A job outside the service checks in over HTTP, as a crontab line would (start, then success
// with the backup's size): the jobs card must show it.
async function checkIn(base, token) {
  for (const [kind, body] of [['start', ''], ['success', '{"size": 48213004, "message": "dumped 3 tables"}']]) {
    const res = await fetch(`${base}/qiflow/api/jobs/pg-dump/${kind}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    if (res.status !== 200) fail(`POST /qiflow/api/jobs/pg-dump/${kind} answered ${res.status}, want 200`);
  }
}

// The caller's scope as the API reports it for this token (decides whether controls are due).
async function callerScope(base, token) {
  const res = await fetch(`${base}/qiflow/api/overview`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 200) fail(`GET /qiflow/api/overview with the token answered ${res.status}, want 200`);
  const body = await res.json();
  if (!body.caller || typeof body.caller !== 'object') fail('GET /qiflow/api/overview: no "caller" object');
  return body.caller.scope;
}

async function main() {
  if (!opts.base || !opts['token-file'] || !opts.screenshot) {
    fail('usage: node dashboard.mjs --base URL --token-file FILE --name NAME --screenshot OUT.png');
  }
  const base = opts.base.replace(/\/+$/, '');
  const token = (await readFile(opts['token-file'], 'utf8')).trim();
  if (!token) fail(`${opts['token-file']} is empty`);
  const rec = recorder(base);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const light = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
    light.on('page', rec.attach);

    // 1. No token: the login form only.
    let page = await light.newPage();
    const doc = await page.goto(`${base}/qiflow/`);
    if (!doc || doc.status() !== 200) fail(`GET /qiflow/ answered ${doc ? doc.status() : 'nothing'}, want 200`);
    const csp = doc.headers()['content-security-policy'] || '';
    if (!/script-src 'self'/.test(csp) || !/default-src 'none'/.test(csp)) {
      fail(`GET /qiflow/ has no strict Content-Security-Policy (got ${JSON.stringify(csp)})`);
    }
    await page.locator('#login').waitFor({ state: 'visible', timeout: DATA_TIMEOUT_MS })
      .catch(() => fail('without a token, the login form #login is not visible'));
    await sleep(2500); // longer than a poll: nothing may arrive meanwhile
    const leaked = await page.evaluate(() => {
      const shown = [];
      const dash = document.querySelector('#dashboard');
      if (dash && dash.checkVisibility()) shown.push('#dashboard is visible');
      const marked = document.querySelectorAll('[data-metric], [data-route], [data-fingerprint], [data-alert], [data-request-id], [data-pipeline], [data-check]');
      if (marked.length) shown.push(`${marked.length} data elements`);
      for (const c of document.querySelectorAll('#dashboard .content')) {
        if (c.textContent.trim()) shown.push(`${c.parentElement.id} has text ${JSON.stringify(c.textContent.trim().slice(0, 60))}`);
      }
      return shown;
    });
    if (leaked.length) fail(`without a token the page shows data: ${leaked.join('; ')}`);
    if (rec.overviewOk.length) fail(`without a token, ${rec.overviewOk.length} overview request(s) answered 200`);
    rec.check('without a token');
    await page.close();

    // 2. Traffic, then the page with the token in its fragment.
    const sent = await sendTraffic(base);
    log(`sent ${sent} requests`);
    await checkIn(base, token);
    const scope = await callerScope(base, token);
    page = await light.newPage();
    await page.goto(`${base}/qiflow/#token=${encodeURIComponent(token)}`);
    const url = page.url();
    if (url.includes('#token=') || url.includes(token)) fail(`the token is still in the address bar: ${url}`);
    const stored = await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY);
    if (stored !== token) fail(`sessionStorage['${TOKEN_KEY}'] is ${JSON.stringify(stored)}, want the token`);
    await waitForData(page, 'with the token', sent);
    // Write-capable callers (scope "write", or null on the operator listener) get the controls.
    const writable = scope === 'write' || scope === null || scope === undefined;
    const controls = await page.locator('#silence-form:not([hidden]), #alerts button[data-action="silence"]').count();
    if (writable && controls < 2) fail(`scope ${JSON.stringify(scope)}: the silence form and "silence 1h" buttons are missing`);
    if (!writable && controls > 0) fail(`scope ${JSON.stringify(scope)}: silence controls shown to a read-only caller`);
    rec.check('with the token');

    // 4. Reload: still signed in. Kiosk: class, no controls.
    await page.reload();
    await waitForData(page, 'after a reload', sent);
    await page.goto(`${base}/qiflow/?kiosk=1`);
    await waitForData(page, 'kiosk mode', sent);
    if (!(await page.evaluate(() => document.body.classList.contains('kiosk')))) fail('?kiosk=1: the body has no class "kiosk"');
    const kioskControls = await page.locator('#silence-form, #signout, button[data-action], #alerts form, #alerts button').count();
    if (kioskControls) fail(`?kiosk=1: ${kioskControls} control(s) present (silence form/buttons or sign-out)`);
    rec.check('reload and kiosk');

    // 5. Screenshot (light) once the sparklines have points; then the dark scheme.
    await page.goto(`${base}/qiflow/`);
    await waitForData(page, 'before the screenshot', sent);
    await sleep(2500);
    const lines = await page.locator('#traffic svg polyline').count();
    if (!lines) fail('#traffic has no sparkline (no <polyline> in its SVGs)');
    const summary = await page.evaluate(() => ({
      requests: Number(document.querySelector('[data-metric="requests-total"]').textContent.trim()),
      groups: document.querySelectorAll('#errors [data-fingerprint]').length,
      alerts: document.querySelectorAll('#alerts [data-alert]').length,
      background: getComputedStyle(document.body).backgroundColor,
    }));
    await page.screenshot({ path: opts.screenshot, fullPage: true });

    const dark = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'dark' });
    dark.on('page', rec.attach);
    const darkPage = await dark.newPage();
    await darkPage.goto(`${base}/qiflow/#token=${encodeURIComponent(token)}`);
    await waitForData(darkPage, 'dark scheme', sent);
    const darkBackground = await darkPage.evaluate(() => getComputedStyle(document.body).backgroundColor);
    if (darkBackground === summary.background) {
      fail(`the dark scheme has the light scheme's background (${darkBackground})`);
    }
    rec.check('screenshot and dark scheme');
    await dark.close();
    await light.close();

    // 6.
    log(`ok — ${summary.requests} requests seen, ${summary.groups} error groups, ${summary.alerts} alerts`);
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (e) => {
    clearTimeout(watchdog);
    console.error(`dashboard (${NAME}): FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
    process.exit(1);
  },
);
