// The one place that finds and launches Debian's chromium for the browser tests (the
// console's now, the webmail's later): playwright-core, no browser download, the
// package's binary and the flags every test uses.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { chromium } = require('playwright-core');

const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
];

/** Launches chromium; a missing binary is a clear failure, not a download. */
async function launch() {
  if (!fs.existsSync(EXECUTABLE)) {
    throw new Error(`${EXECUTABLE} not found: install Debian's chromium package`);
  }
  return chromium.launch({ executablePath: EXECUTABLE, args: FLAGS, headless: true, timeout: 60000 });
}

/** A fresh browser context (its own cookies) that trusts the dev certificates. */
async function context(browser) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(20000);
  return ctx;
}

/** Saves a full-page screenshot as DIR/NAME.png and says where. */
async function screenshot(page, dir, name) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
  return file;
}

/** RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret at `now` (seconds). */
function totp(base32, now = Date.now() / 1000) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of base32.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 30)));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return code.toString().padStart(6, '0');
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
async function eventually(what, check, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

module.exports = { EXECUTABLE, FLAGS, launch, context, screenshot, totp, eventually };
