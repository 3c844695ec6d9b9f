// The console in a real browser, driven by tests/suite/browser.rs, which starts the
// server (with smtp-sink as the primary) and passes what this needs as JSON in argv[2]:
// base URL, ports, the admin's TOTP secret, the screenshot directory. Prints one
// "ok <step>" line per step; any failure exits non-zero with the reason.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { launch, context, screenshot, totp, eventually } = require('./lib/chromium');

const cfg = JSON.parse(process.argv[2]);
const BASE = cfg.base;

function python(script, ...args) {
  return execFileSync('python3', ['-c', script, ...args.map(String)], { encoding: 'utf8', timeout: 60000 });
}

async function adminLogin(ctx, name, password, secret) {
  const page = await ctx.newPage();
  await page.goto(`${BASE}/login`);
  await page.fill('input[name=name]', name);
  await page.fill('input[name=password]', password);
  if (secret) await page.fill('input[name=code]', totp(secret));
  await page.click('button[type=submit]');
  return page;
}

async function main() {
  const browser = await launch();
  try {
    const ctx = await context(browser);
    // 1. The first admin logs in with TOTP (a wrong code first: refused).
    let page = await ctx.newPage();
    await page.goto(`${BASE}/login`);
    await page.fill('input[name=name]', 'root');
    await page.fill('input[name=password]', cfg.password);
    await page.fill('input[name=code]', '000000');
    await page.click('button[type=submit]');
    assert.match(await page.textContent('body'), /Login failed/);
    await page.close();
    page = await adminLogin(ctx, 'root', cfg.password, cfg.totp);
    await page.waitForSelector('table#domains');
    console.log('ok admin logged in with TOTP');

    // 2. Starts an outage on example.com.
    await page.goto(`${BASE}/domains/example.com`);
    await page.fill('input[name=reason]', 'browser test');
    await page.click('button[value=start]');
    assert.match(await page.textContent('p.flash'), /example\.com: outage/);
    console.log('ok outage started');

    // 3. Mail to the MX port shows up as queue depth on the dashboard.
    const messageId = `<browser-${Date.now()}@elsewhere.example>`;
    python(
      `import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("bob@elsewhere.example", ["anna@example.com"], "From: bob@elsewhere.example\\r\\nTo: anna@example.com\\r\\nSubject: during the outage\\r\\nMessage-ID: " + sys.argv[2] + "\\r\\n\\r\\nhello\\r\\n")
s.quit()`,
      cfg.smtp,
      messageId,
    );
    await eventually('queue depth 1 on the dashboard', async () => {
      await page.goto(`${BASE}/`);
      const depth = await page.textContent('tr[data-domain="example.com"] td.depth');
      return depth.trim() === '1';
    });
    await screenshot(page, cfg.screenshots, 'dashboard');
    console.log('ok queue depth on the dashboard');

    // 4. Holds and releases the queue entry.
    await page.goto(`${BASE}/queue?domain=example.com`);
    await page.check('table#queue input[name=id]');
    await page.click('button[value=hold]');
    assert.match(await page.textContent('p.flash'), /1 entries held/);
    await page.goto(`${BASE}/queue?domain=example.com`);
    assert.equal((await page.textContent('table#queue td.state')).trim(), 'held');
    await screenshot(page, cfg.screenshots, 'queue');
    await page.check('table#queue input[name=id]');
    await page.click('button[value=release]');
    assert.match(await page.textContent('p.flash'), /1 entries released/);
    console.log('ok held and released');

    // 5. Recovery: the outage stops, the primary takes the message, and tracking by
    // Message-ID shows the primary's reply.
    await page.goto(`${BASE}/domains/example.com`);
    await page.click('button[value=stop]');
    await eventually('the primary reply in tracking', async () => {
      await page.goto(`${BASE}/tracking?message_id=${encodeURIComponent(messageId)}`);
      const text = await page.textContent('main');
      return /delivered/.test(text) && /250/.test(text);
    }, 60000);
    console.log('ok tracking shows the primary reply');

    // 5b. Bulk actions with a confirmation step: example.com's mail is held and four
    // messages queue up; the one ticked is purged, the three the filter then matches
    // are bounced to their sender, each only after its confirmation page.
    await page.goto(`${BASE}/queue?domain=example.com`);
    await page.click('button[value=hold-domain]');
    assert.match(await page.textContent('p.flash'), /entries of example\.com held/);
    const bulkIds = [1, 2, 3, 4].map((n) => `<bulk-${n}-${Date.now()}@elsewhere.example>`);
    python(
      `import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
for mid in sys.argv[2:]:
    s.sendmail("bob@elsewhere.example", ["anna@example.com"], "From: bob@elsewhere.example\\r\\nTo: anna@example.com\\r\\nSubject: bulk\\r\\nMessage-ID: " + mid + "\\r\\n\\r\\nhello\\r\\n")
s.quit()`,
      cfg.smtp,
      ...bulkIds,
    );
    const relayQueue = `${BASE}/queue?domain=example.com&kind=relay`;
    await eventually('four held entries', async () => {
      await page.goto(relayQueue);
      return (await page.textContent('#queue-count')).trim() === '4 entries';
    });
    await page.check('table#queue input[name=id] >> nth=0');
    await page.click('button[value=purge]');
    assert.match(await page.textContent('#confirm-question'), /Purge 1 entries\?/);
    assert.equal((await page.$$('#confirm-entries td.id')).length, 1);
    // Nothing happened before the confirmation.
    await page.goto(relayQueue);
    assert.equal((await page.textContent('#queue-count')).trim(), '4 entries');
    await page.check('table#queue input[name=id] >> nth=0');
    await page.click('button[value=purge]');
    await page.click('#confirm');
    assert.match(await page.textContent('p.flash'), /^\s*1 entries purged\s*$/);
    await page.goto(relayQueue);
    assert.equal((await page.textContent('#queue-count')).trim(), '3 entries');
    await page.check('input[name=scope][value=filter]');
    await page.click('button[value=bounce]');
    assert.match(await page.textContent('#confirm-question'), /Bounce 3 entries\?/);
    assert.equal((await page.$$('#confirm-entries td.id')).length, 3);
    await screenshot(page, cfg.screenshots, 'queue-confirm');
    await page.click('#confirm');
    assert.match(await page.textContent('p.flash'), /^\s*3 entries bounced\s*$/);
    await page.goto(relayQueue);
    assert.equal((await page.textContent('#queue-count')).trim(), '0 entries');
    const fates = [];
    for (const mid of bulkIds) {
      await page.goto(`${BASE}/tracking?message_id=${encodeURIComponent(mid)}`);
      const text = await page.textContent('main');
      fates.push(/returned to the sender by an administrator/.test(text) ? 'bounced' : /purged/.test(text) ? 'purged' : 'neither');
    }
    assert.deepEqual(fates.sort(), ['bounced', 'bounced', 'bounced', 'purged']);
    // Each sender was told: a delivery status notification per bounced message.
    await page.goto(`${BASE}/tracking?address=bob%40elsewhere.example`);
    const notices = (await page.textContent('main')).match(/delivery status notification for queue/g) || [];
    assert.equal(notices.length, 3, await page.textContent('main'));
    await page.goto(`${BASE}/queue?domain=example.com`);
    await page.click('button[value=release-domain]');
    console.log('ok bulk purge and bounce after their confirmation');

    // 5c. The failover drill on the domain page: the documented test run by the console
    // against the primary that is up, step by step, until it says it passed; it logs in
    // over IMAP as the user typed on the form (dora, so that anna stays a user who never
    // logged in for the readiness check below) and finds its message in her INBOX.
    await page.goto(`${BASE}/domains/example.com`);
    await page.fill('input[name=address]', 'dora@example.com');
    await page.fill('input[name=password]', cfg.password);
    await page.click('#drill');
    await eventually('the drill finished', async () => {
      try {
        return (await page.$('#drill-summary')) !== null;
      } catch (e) {
        return false; // the page was reloading
      }
    }, 150000);
    const drillSteps = await page.$$eval('#drill-steps tr[class^=step-]', (rows) =>
      rows.map((r) => `${r.className.replace('step-', '')}: ${r.cells[0].textContent.trim()}: ${r.cells[2].textContent.trim()}`),
    );
    console.log(drillSteps.join('\n'));
    assert.match(await page.textContent('#drill-summary'), /Drill passed/, drillSteps.join('\n'));
    assert.equal(drillSteps.length, 9);
    assert.ok(drillSteps.every((s) => s.startsWith('passed: ')), drillSteps.join('\n'));
    assert.match(drillSteps[1], /250 /);
    assert.match(drillSteps[3], /^passed: Log in over IMAP as dora@example\.com: logged in as dora@example\.com \(imaps /);
    assert.match(drillSteps[4], /INBOX UID \d+, "Failover drill of example\.com"/);
    assert.match(drillSteps[7], /the primary said: .*250/);
    assert.match(drillSteps[8], /lost: delivered, spooling: delivered, restored: delivered, released: delivered/);
    assert.ok(!(await page.content()).includes(cfg.password), 'the drill page shows the password');
    await screenshot(page, cfg.screenshots, 'drill');
    // The domain is back to normal, and a second drill cannot be started on a domain
    // in an outage (it would not be a drill).
    await page.goto(`${BASE}/`);
    assert.equal((await page.textContent('tr[data-domain="example.com"] td[class^=phase-]')).trim(), 'normal');
    console.log('ok failover drill passed');

    // 6. A 500-row CSV with three bad rows: they are reported by row.
    const rows = ['address,name,password,aliases,status'];
    for (let i = 1; i <= 500; i++) {
      if (i === 100) rows.push('not-an-address,Bad One,,,');
      else if (i === 250) rows.push(`user${i}@example.com,Weak,short,,`);
      else if (i === 400) rows.push(`user${i}@example.com,Bad status,,,sometimes`);
      else rows.push(`user${i}@example.com,User ${i},,,active`);
    }
    await page.goto(`${BASE}/users`);
    await page.setInputFiles('input[name=file]', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(rows.join('\n') + '\n') });
    // The real import: each new user gets a generated password (argon2id, optimised
    // in test builds too), shown once on the report.
    await page.click('form[action="/users/import"] button');
    // The import runs in the background; its page shows progress until the report.
    const started = Date.now();
    await eventually('the import report', async () => {
      try {
        if ((await page.title()).startsWith('Error')) {
          throw new Error(`the upload was refused: ${await page.textContent('main')}`);
        }
        return (await page.$('#import-summary')) !== null;
      } catch (e) {
        if (/refused/.test(e.message)) throw e;
        return false; // the progress page was reloading
      }
    }, 120000);
    console.log(`import of 500 rows (497 new users, each with a generated argon2id password) took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const summary = await page.textContent('#import-summary');
    assert.match(summary, /^\s*Import: 497 created, 0 updated, 0 unchanged, 3 with errors\.\s*$/);
    const reported = await page.$$eval('#import-report tr', (rows) => rows.length - 1);
    assert.equal(reported, 500);
    const bad = await page.$$eval('#import-report tr.row-error td.line', (cells) => cells.map((c) => c.textContent.trim()));
    assert.deepEqual(bad, ['101', '251', '401']);
    const secrets = (await page.textContent('#secrets')).trim().split('\n');
    assert.equal(secrets.length, 497);
    assert.ok(secrets.every((l) => /^user\d+@example\.com,\S{8,}$/.test(l)), secrets[0]);
    // The rows were applied: the last user is there, a bad row's address is not.
    await page.goto(`${BASE}/users?q=user500%40example.com`);
    assert.match(await page.textContent('main'), /user500@example\.com/);
    await page.goto(`${BASE}/users?q=user250%40example.com`);
    assert.doesNotMatch(await page.textContent('main'), /user250@example\.com/);
    console.log(`ok CSV import reported rows ${bad.join(', ')}`);

    await page.goto(`${BASE}/readiness`);
    await page.waitForSelector('table#readiness');
    // anna has a password but has not logged in anywhere yet.
    assert.match(await page.textContent('table#readiness'), /anna@example\.com\s*never logged in/);
    await screenshot(page, cfg.screenshots, 'readiness');
    console.log('ok readiness');

    // 7. A domain admin cannot see or change another domain, by URL or replayed form.
    const msp = await context(browser);
    const mpage = await adminLogin(msp, 'msp', cfg.password, null);
    const domains = await mpage.$$eval('tr[data-domain]', (rows) => rows.map((r) => r.dataset.domain));
    assert.deepEqual(domains, ['example.com']);
    const other = await mpage.goto(`${BASE}/domains/other.org`);
    assert.equal(other.status(), 404);
    const otherQueue = await mpage.goto(`${BASE}/queue?domain=other.org`);
    assert.equal(otherQueue.status(), 404);
    // Root's form for other.org, replayed with the domain admin's own session token.
    await mpage.goto(`${BASE}/domains/example.com`);
    const token = await mpage.getAttribute('input[name=csrf]', 'value');
    const replay = await mpage.request.post(`${BASE}/domains/other.org/outage`, { form: { action: 'start', reason: 'x', csrf: token } });
    assert.equal(replay.status(), 404);
    const rootToken = await page.getAttribute('input[name=csrf]', 'value');
    const stolen = await mpage.request.post(`${BASE}/domains/example.com/outage`, { form: { action: 'start', reason: 'x', csrf: rootToken } });
    assert.equal(stolen.status(), 403);
    console.log('ok domain admin kept to their domain');

    // 8. A user changes their password on the self-service page and logs in over IMAP.
    const user = await context(browser);
    const upage = await user.newPage();
    await upage.goto(`${BASE}/me/login`);
    await upage.fill('input[name=address]', 'anna@example.com');
    await upage.fill('input[name=password]', cfg.password);
    await upage.click('button[type=submit]');
    await upage.waitForSelector('#client-settings');
    // The settings for an iPhone: the profile downloaded from the page, and the QR code
    // read off the screen as a phone's camera would (zbarimg on a screenshot of it).
    const download = upage.waitForEvent('download');
    await upage.click('a[href="/me/apple.mobileconfig"]');
    const profile = `${cfg.screenshots}/anna.mobileconfig`;
    await (await download).saveAs(profile);
    const qrPng = `${cfg.screenshots}/qr.png`;
    await upage.locator('.qr svg').screenshot({ path: qrPng });
    const scanned = execFileSync('zbarimg', ['--raw', '-q', qrPng], { encoding: 'utf8', timeout: 60000 }).trim();
    assert.equal(scanned, `https://localhost:${cfg.autoconfig}/apple.mobileconfig?email=anna@example.com`);
    const checked = python(
      `import plistlib, ssl, sys, urllib.request
path, url, ca, imaps, submissions, password = sys.argv[1:7]
def check(data, where):
    assert password.encode() not in data, where + ": the password is in the profile"
    p = plistlib.loads(data)
    assert p["PayloadType"] == "Configuration", p
    (a,) = p["PayloadContent"]
    assert a["PayloadType"] == "com.apple.mail.managed", a
    assert a["EmailAddress"] == "anna@example.com", a
    assert (a["IncomingMailServerHostName"], a["IncomingMailServerPortNumber"], a["IncomingMailServerUseSSL"]) == ("localhost", int(imaps), True), a
    assert (a["OutgoingMailServerHostName"], a["OutgoingMailServerPortNumber"], a["OutgoingMailServerUseSSL"]) == ("localhost", int(submissions), True), a
    assert a["IncomingMailServerUsername"] == a["OutgoingMailServerUsername"] == "anna@example.com", a
    keys = [k for k in a if "password" in k.lower() and k != "OutgoingPasswordSameAsIncomingPassword"]
    assert not keys, keys
    return a
downloaded = check(open(path, "rb").read(), "download")
# The address in the QR code serves the same profile, without a login.
r = urllib.request.urlopen(url, context=ssl.create_default_context(cafile=ca), timeout=30)
assert r.headers.get_content_type() == "application/x-apple-aspen-config", r.headers
assert check(r.read(), "qr") == downloaded
print("profile ok")`,
      profile,
      scanned,
      cfg.ca,
      cfg.imaps,
      cfg.submissions,
      cfg.password,
    );
    assert.equal(checked.trim(), 'profile ok');
    console.log('ok iPhone profile downloaded and QR code scanned');
    await upage.fill('input[name=current]', cfg.password);
    await upage.fill('input[name=new]', 'weak');
    await upage.fill('input[name=repeat]', 'weak');
    await upage.click('form[action="/me/password"] button');
    assert.match(await upage.textContent('p.error'), /Not changed/);
    await upage.fill('input[name=current]', cfg.password);
    await upage.fill('input[name=new]', 'Browser2Horse');
    await upage.fill('input[name=repeat]', 'Browser2Horse');
    await upage.click('form[action="/me/password"] button');
    assert.match(await upage.textContent('p.flash'), /Password changed/);
    const imap = python(
      `import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ssl.create_default_context(cafile=sys.argv[2]), timeout=30)
print(m.login("anna@example.com", "Browser2Horse")[0])
m.logout()`,
      cfg.imaps,
      cfg.ca,
    );
    assert.equal(imap.trim(), 'OK');
    console.log('ok self-service password works over IMAP');
  } finally {
    await browser.close();
  }
}

main().then(
  () => console.log('browser tests passed'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
