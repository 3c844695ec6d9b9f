// Roundcube on Understudy in Debian's chromium (run by tests/suite/webmail.rs, which
// starts Understudy, Roundcube under `php -S`, the sinks, and checks the server side
// afterwards). One JSON argument: { base, password, screenshots }. Each browser context
// is one client: its X-Forwarded-For names its address to Roundcube (a proxy in front),
// which names it to Understudy (IMAP ID x-originating-ip).
'use strict';
const { launch, context, screenshot, eventually } = require('./lib/chromium');

const cfg = JSON.parse(process.argv[2]);
const ANNA = 'anna@example.com';

function step(what) {
  console.log(`step: ${what}`);
}

/** A browser context playing a client at `ip`. */
async function client(browser, ip) {
  const ctx = await context(browser);
  await ctx.setExtraHTTPHeaders({ 'X-Forwarded-For': ip });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  return { ctx, page };
}

/** Submits the login form; resolves once Roundcube answered (mail view or error). */
async function login(page, user, password) {
  if (!(await page.locator('#rcmloginuser').isVisible().catch(() => false))) {
    await page.goto(cfg.base);
  }
  await page.fill('#rcmloginuser', user);
  await page.fill('#rcmloginpwd', password);
  await Promise.all([page.waitForLoadState('load'), page.waitForNavigation(), page.click('#rcmloginsubmit')]);
  return page.url().includes('_task=mail');
}

async function expectLoginError(page, user, password) {
  const ok = await login(page, user, password);
  if (ok) throw new Error(`${user} logged in with a wrong password`);
  await page.locator('#messagestack', { hasText: 'Login failed' }).waitFor();
}

/** The message list's subjects, top to bottom (visible rows only). */
async function listSubjects(page) {
  return page.$$eval('#messagelist tbody tr', (rows) =>
    rows
      .filter((r) => r.offsetParent !== null)
      .map((r) => (r.querySelector('span.subject a, td.subject a') || r).textContent.trim())
  );
}

/** Waits for Roundcube's list request (after a sort, search, folder switch). */
async function afterList(page, action, pattern = /_action=(list|search)/) {
  const response = page.waitForResponse((r) => pattern.test(r.url()) && r.status() === 200);
  await action();
  await response;
  await page.waitForFunction(() => !window.rcmail.busy);
}

function order(subjects, wanted) {
  return subjects.filter((s) => wanted.includes(s));
}

function assertOrder(what, subjects, wanted) {
  const got = order(subjects, wanted);
  if (JSON.stringify(got) !== JSON.stringify(wanted)) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(wanted)} (list ${JSON.stringify(subjects)})`);
  }
}

/** Opens the list options dialog, sets the sort column / mode, saves. */
async function listOptions(page, { sortCol, sortOrd, mode }) {
  await page.click('#messagelist-header a.options');
  const dialog = page.locator('.ui-dialog', { hasText: 'List options' });
  await dialog.waitFor();
  if (sortCol !== undefined) await dialog.locator('select[name="sort_col"]').selectOption(sortCol);
  if (sortOrd !== undefined) await dialog.locator('select[name="sort_ord"]').selectOption(sortOrd);
  if (mode !== undefined) await dialog.locator('select[name="mode"]').selectOption(mode);
  await afterList(page, () => dialog.getByRole('button', { name: 'Save' }).click());
}

/** Clicks a row by subject and waits for the preview to load; returns the preview frame. */
async function openMessage(page, subject) {
  const row = page.locator('#messagelist tbody tr', { hasText: subject }).first();
  await row.click();
  const frame = page.frameLocator('#messagecontframe');
  // This message's preview, not the one shown before (after a move or delete Roundcube
  // shows the next one), with the toolbar enabled for it.
  await frame.locator('h2.subject', { hasText: subject }).waitFor();
  await frame.locator('#messagebody').waitFor();
  await page.waitForFunction(() => !window.rcmail.busy);
  return frame;
}

/** Types a recipient into the compose form's recipient widget. */
async function fillRecipient(page, address) {
  const input = page.locator('#compose_to input, #_to').first();
  await input.fill(address);
  await input.press('Enter').catch(() => {});
}

/** Clicks a toolbar command once Roundcube has enabled it (after the preview loads). */
async function command(page, selector) {
  const button = page.locator(`${selector}:not(.disabled)`).first();
  await button.waitFor();
  await button.click();
}

async function send(page) {
  await page.locator('#compose-content button.send, .formbuttons button.send, a.send').first().click();
}

/** Sends the message being composed and waits for Roundcube's mail view to be back and
 * ready (it leaves the compose page once the message is sent and saved in Sent). */
async function sendAndWait(page) {
  await Promise.all([page.waitForURL(/_task=mail(?!.*_action=compose)/, { waitUntil: 'load' }), send(page)]);
  // The list widget exists once Roundcube's page script has initialised.
  await page.waitForFunction(() => window.rcmail && window.rcmail.message_list && !window.rcmail.busy);
}

/** Opens the compose page from the mail view's Compose button. */
async function compose(page) {
  await Promise.all([page.waitForURL(/_action=compose/), page.locator('a.compose:visible').first().click()]);
  await page.locator('#composebody').waitFor();
}

async function main() {
  const browser = await launch();
  try {
    // A wrong password shows the login error.
    const anna = await client(browser, '198.51.100.7');
    await anna.page.goto(cfg.base);
    await anna.page.locator('#understudy-login-hint', { hasText: 'company email address' }).waitFor();
    step('login page with the hint');
    await expectLoginError(anna.page, ANNA, 'not the password');
    step('wrong password: login error');

    // A guesser behind the same webmail host: twenty failed logins of one user, then
    // twenty guessed addresses, all from one client address. Understudy counts them
    // against that address (x-originating-ip), not against the webmail host.
    const guesser = await client(browser, '198.51.100.66');
    if (!cfg.skipGuesser) {
      await guesser.page.goto(cfg.base);
      for (let i = 0; i < 20; i++) await expectLoginError(guesser.page, 'bob@example.com', `guess${i}`);
      // Bob's own lock-out stops the count at max_failures (3): twelve more guessed
      // addresses make fifteen, five times max_failures, the per-address limit.
      for (let i = 0; i < 12; i++) await expectLoginError(guesser.page, `guess${i}@example.com`, 'guess');
      step('guesser: twenty failed logins of bob, twelve guessed addresses');
      // The guesser's own address is locked out now, even with a right password...
      await expectLoginError(guesser.page, ANNA, cfg.password);
      step("guesser's client address locked out");
    }

    // ...while another user of the same webmail host logs in and sees the spooled mail.
    if (!(await login(anna.page, ANNA, cfg.password))) throw new Error('anna cannot log in');
    await anna.page.locator('#messagelist tbody tr').first().waitFor();
    const page = anna.page;
    const inbox = await eventually('the spooled mail in the list', async () => {
      const s = await listSubjects(page);
      return s.length >= 11 ? s : null;
    });
    for (const want of ['Quarterly report', 'Fwd: the contract', 'Invoice 4711', 'Lunch plans']) {
      if (!inbox.includes(want)) throw new Error(`no ${want} in the inbox: ${JSON.stringify(inbox)}`);
    }
    await screenshot(page, cfg.screenshots, 'inbox');
    step('another user logs in and sees the spooled mail');

    // An attachment and an attached message.
    let frame = await openMessage(page, 'Quarterly report');
    await frame.locator('#messagebody', { hasText: 'The report is attached.' }).waitFor();
    await frame.locator('#attachment-list li', { hasText: 'report-q3.pdf' }).waitFor();
    await screenshot(page, cfg.screenshots, 'message');
    frame = await openMessage(page, 'Fwd: the contract');
    await frame.locator('#messagebody', { hasText: 'See the attached message.' }).waitFor();
    await frame.locator('#messagebody', { hasText: 'The contract, signed' }).waitFor();
    await frame.locator('#messagebody', { hasText: 'Signed by both parties on page 7.' }).waitFor();
    await screenshot(page, cfg.screenshots, 'attached-message');
    step('attachment and attached message shown');

    // Sorting by date, sender and subject; then the thread view.
    const trio = { date: ['Zebra crossing', 'Mango season', 'Apple harvest'],
      from: ['Mango season', 'Zebra crossing', 'Apple harvest'],
      subject: ['Apple harvest', 'Mango season', 'Zebra crossing'] };
    for (const col of ['date', 'from', 'subject']) {
      await listOptions(page, { sortCol: col, sortOrd: 'ASC' });
      assertOrder(`sorted by ${col}`, await listSubjects(page), trio[col]);
      step(`sorted by ${col}`);
    }
    await listOptions(page, { sortCol: 'date', sortOrd: 'DESC', mode: 'threads' });
    const threads = await page.evaluate(() => {
      const rows = Object.values(window.rcmail.message_list.rows);
      return rows.map((r) => ({ depth: r.depth, children: !!r.has_children, subject: r.obj.textContent }));
    });
    const lunch = threads.filter((r) => r.subject.includes('Lunch plans'));
    if (!lunch.some((r) => r.depth === 0 && r.children) || lunch.filter((r) => r.depth > 0).length !== 2) {
      throw new Error(`no Lunch plans thread: ${JSON.stringify(threads)}`);
    }
    // Expand the thread: its replies appear indented under it.
    await page.locator('#messagelist tbody tr.thread', { hasText: 'Lunch plans' }).first()
      .locator('td.threads div[id^="rcmexpando"]').click();
    await page.locator('#messagelist tbody tr', { hasText: 'Frank' }).first().waitFor({ state: 'visible' });
    await screenshot(page, cfg.screenshots, 'threads');
    await listOptions(page, { mode: 'list' });
    step('thread view');

    // Search.
    const search = page.locator('input#mailsearchform');
    await search.fill('4711');
    await afterList(page, () => search.press('Enter'));
    const found = await listSubjects(page);
    if (JSON.stringify(found) !== JSON.stringify(['Invoice 4711'])) throw new Error(`search found ${JSON.stringify(found)}`);
    await search.fill('');
    await afterList(page, () => search.press('Enter'));
    step('search');

    // Move to Archive, delete one.
    await openMessage(page, 'Keep for the records');
    await command(page, '#toolbar-menu a.more');
    await page.locator('#message-menu a.move').click();
    await afterList(page, () => page.locator('#folder-selector a', { hasText: 'Archive' }).click(), /_action=move/);
    await eventually('the moved message to leave the list', async () =>
      !(await listSubjects(page)).includes('Keep for the records'));
    step('moved to Archive');
    await openMessage(page, 'Unwanted offer');
    await afterList(page, () => command(page, '#toolbar-menu a.delete'), /_action=(move|delete)/);
    await eventually('the deleted message to leave the list', async () =>
      !(await listSubjects(page)).includes('Unwanted offer'));
    step('deleted');

    // Reply (to a remote sender) and a new mail to a remote address.
    await openMessage(page, 'Quarterly report');
    await Promise.all([page.waitForURL(/_action=compose/), command(page, '#toolbar-menu a.reply')]);
    await page.locator('#composebody').waitFor();
    await page.locator('#composebody').press('Control+Home');
    await page.locator('#composebody').type('Thanks, Carol.\n');
    await sendAndWait(page);
    step('replied');
    await compose(page);
    await fillRecipient(page, 'ops@remote.test');
    await page.fill('#compose-subject', 'Hello from the webmail');
    await page.fill('#composebody', 'Written during the outage.');
    await sendAndWait(page);
    step('new mail sent');

    // A draft: saved, reopened from Drafts, sent.
    await compose(page);
    await fillRecipient(page, 'later@remote.test');
    await page.fill('#compose-subject', 'Draft for later');
    await page.fill('#composebody', 'First words.');
    await page.locator('a.save.draft:visible').first().click();
    await page.locator('#messagestack', { hasText: /saved/i }).waitFor();
    await page.goto(`${cfg.base}?_task=mail&_mbox=Drafts`);
    await page.locator('#messagelist tbody tr', { hasText: 'Draft for later' }).dblclick();
    await page.waitForURL(/_action=compose/);
    await page.locator('#compose-subject').waitFor();
    const body = await page.inputValue('#composebody');
    if (!body.includes('First words.')) throw new Error(`the reopened draft holds ${JSON.stringify(body)}`);
    await page.locator('#composebody').press('Control+End');
    await page.locator('#composebody').type(' And more.');
    await sendAndWait(page);
    step('draft saved, reopened, sent');
    await anna.ctx.close();

    // The read-only user reads, but cannot send.
    const reader = await client(browser, '198.51.100.8');
    if (!(await login(reader.page, 'reader@example.com', cfg.password))) throw new Error('reader cannot log in');
    await reader.page.locator('#messagelist tbody tr', { hasText: 'For the read-only user' }).waitFor();
    const rframe = await openMessage(reader.page, 'For the read-only user');
    await rframe.locator('#messagebody', { hasText: 'You can read this.' }).waitFor();
    await compose(reader.page);
    await fillRecipient(reader.page, 'ops@remote.test');
    await reader.page.fill('#compose-subject', 'From the read-only user');
    await reader.page.fill('#composebody', 'This must not go out.');
    await send(reader.page);
    await reader.page.locator('#messagestack .error, #messagestack', { hasText: /SMTP|error/i }).first().waitFor();
    const error = await reader.page.locator('#messagestack').innerText();
    console.log(`read-only user sees: ${error.trim()}`);
    step('read-only user cannot send');
    await reader.ctx.close();
    await guesser.ctx.close();
  } finally {
    await browser.close();
  }
  console.log('webmail tests passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
