// ironscale's headless-Chromium login driver for OIDC tests (part of the ironscale project, under
// its license). It drives Debian's /usr/bin/chromium through npm `playwright-core` 1.64.1
// (Apache-2.0, Microsoft; driver only, no browser download), installed from npm at test time
// (`npm ci` from package.json/package-lock.json beside this file, by .ci/run or
// ironscale-testkit) and never vendored. ironscale-testkit's `chromium_login` runs it:
//
//   node login.mjs ARGS.json
//
// ARGS: {"chromium", "user_data_dir", "start_url", "username", "password", "stop_at_prefix",
// "timeout_ms"}. Opens start_url, fills the provider's <form id="login"> (#username, #password,
// #submit), approves <form id="consent"> (#allow), and prints one JSON line: {"url", "status",
// "title", "text", "hops", "stopped"} or {"error", "url", "hops"}. With stop_at_prefix, a
// redirect to a URL starting with it is answered here (not followed) and ends the run.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const a = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const timeout = a.timeout_ms ?? 20000;
const hops = [];
let stopped = null;
let status = null;
let page = null;
const out = (v) => process.stdout.write(`${JSON.stringify(v)}\n`);

const ctx = await chromium.launchPersistentContext(a.user_data_dir, {
  executablePath: a.chromium,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  ctx.setDefaultTimeout(timeout);
  page = ctx.pages()[0] ?? (await ctx.newPage());
  if (a.stop_at_prefix) {
    // Playwright's routes do not see redirect follow-ups, so the stop is made with the DevTools
    // protocol: every response pauses, and a redirect to the prefix is answered here instead.
    const cdp = await ctx.newCDPSession(page);
    cdp.on('Fetch.requestPaused', async (e) => {
      try {
        const code = e.responseStatusCode ?? 0;
        const loc = (e.responseHeaders ?? []).find((h) => h.name.toLowerCase() === 'location')?.value;
        const next = code >= 300 && code < 400 && loc ? new URL(loc, e.request.url).href : null;
        if (next && next.startsWith(a.stop_at_prefix)) {
          stopped = next;
          await cdp.send('Fetch.fulfillRequest', {
            requestId: e.requestId,
            responseCode: 200,
            responseHeaders: [{ name: 'content-type', value: 'text/plain' }],
            body: Buffer.from('stopped by ironscale-testkit').toString('base64'),
          });
        } else {
          await cdp.send('Fetch.continueRequest', { requestId: e.requestId });
        }
      } catch (err) {
        console.error('Fetch.requestPaused:', err);
      }
    });
    await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*', requestStage: 'Response' }] });
  }
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) hops.push(r.url());
  });
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) status = r.status();
  });
  await page.goto(a.start_url, { waitUntil: 'load' });
  let postedLogin = false;
  for (let i = 0; i < 4 && !stopped; i += 1) {
    if (await page.locator('form#login').count()) {
      if (postedLogin) break; // rejected: the form again
      postedLogin = true;
      await page.fill('#username', a.username);
      await page.fill('#password', a.password);
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#submit')]);
    } else if (await page.locator('form#consent').count()) {
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#allow')]);
    } else {
      break;
    }
  }
  const text = await page.evaluate(() => (document.body ? document.body.innerText : ''));
  out({ url: stopped ?? page.url(), status, title: await page.title(), text, hops, stopped: Boolean(stopped) });
} catch (err) {
  out({ error: String(err?.message ?? err), url: page ? page.url() : null, hops });
} finally {
  await ctx.close();
}
