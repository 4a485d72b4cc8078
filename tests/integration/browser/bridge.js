// Drives Debian's chromium with playwright-core for tests/integration/test_web_page.py: one JSON command per
// line on stdin, one JSON answer per line on stdout ({id, ok, value} or {id, ok: false, error}). The Python test
// says what to do step by step (web_driver.py); this side only knows Playwright.
//
// Locators are objects: {role, name}, {label}, {text}, {css}, each with optional exact (default true), nth, and
// within (another locator). Playwright's locators are strict: a locator that matches two elements is an error.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.TG_CHROMIUM || '/usr/bin/chromium';
// The flags the tests run chromium with: no background traffic of its own, nothing from a previous run.
const CHROMIUM_ARGS = [
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-gpu', '--disable-quic',
];
const DEFAULT_TIMEOUT_MS = 10000;

let context = null;
let page = null;
let userDataDir = null;
let origin = null;
let shotDir = null;
let problems = [];

function locator(spec) {
  if (!spec || typeof spec !== 'object') throw new Error('locator must be an object, got ' + JSON.stringify(spec));
  const base = spec.within ? locator(spec.within) : page;
  const exact = spec.exact !== undefined ? spec.exact : true;
  let loc;
  if (spec.role) loc = base.getByRole(spec.role, spec.name !== undefined ? { name: spec.name, exact } : {});
  else if (spec.label) loc = base.getByLabel(spec.label, { exact });
  else if (spec.text) loc = base.getByText(spec.text, { exact });
  else if (spec.css) loc = base.locator(spec.css);
  else throw new Error('unknown locator ' + JSON.stringify(spec));
  if (spec.nth !== undefined) loc = loc.nth(spec.nth);
  return loc;
}

async function closeContext() {
  if (context) await context.close().catch(() => {});
  context = null;
  page = null;
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  userDataDir = null;
}

const commands = {
  // A fresh browser: its own empty profile (cookies, storage), the clipboard allowed for `origin`.
  async launch({ base, shots, width = 1280, height = 800 }) {
    await closeContext();
    origin = new URL(base).origin;
    shotDir = shots;
    fs.mkdirSync(shotDir, { recursive: true });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-chromium-'));
    const args = [...CHROMIUM_ARGS];
    if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');  // chromium's sandbox refuses root
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args, viewport: { width, height }, deviceScaleFactor: 1,
      locale: 'en-US', timezoneId: 'UTC', reducedMotion: 'reduce',
    });
    context.setDefaultTimeout(DEFAULT_TIMEOUT_MS);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    problems = [];
    context.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin + '/') && !u.startsWith('data:')) problems.push({ kind: 'external request', text: u });
    });
    page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push({ kind: 'console ' + m.type(), text: m.text() });
    });
    page.on('pageerror', (e) => problems.push({ kind: 'page error', text: String(e && e.stack || e) }));
    return { version: context.browser() ? context.browser().version() : null };
  },
  async close() { await closeContext(); return null; },
  async goto({ url }) { await page.goto(url, { waitUntil: 'load' }); return page.url(); },
  async reload() { await page.reload({ waitUntil: 'load' }); return page.url(); },
  async url() { return page.url(); },
  async viewport({ width, height }) { await page.setViewportSize({ width, height }); return null; },
  async fill({ loc, value }) { await locator(loc).fill(value); return null; },
  async click({ loc }) { await locator(loc).click(); return null; },
  async check({ loc }) { await locator(loc).check(); return null; },
  async uncheck({ loc }) { await locator(loc).uncheck(); return null; },
  async checked({ loc }) { return await locator(loc).isChecked(); },
  async select({ loc, value }) { return await locator(loc).selectOption(value); },
  async press({ loc, key }) {
    if (loc) await locator(loc).press(key);
    else await page.keyboard.press(key);
    return null;
  },
  async type({ text }) { await page.keyboard.type(text); return null; },
  async text({ loc }) { return await locator(loc).innerText(); },
  async value({ loc }) { return await locator(loc).inputValue(); },
  async count({ loc }) { return await locator(loc).count(); },
  async visible({ loc }) { return await locator(loc).isVisible(); },
  async attr({ loc, name }) { return await locator(loc).getAttribute(name); },
  async wait({ loc, state = 'visible', timeout }) { await locator(loc).waitFor({ state, timeout }); return null; },
  // Waits until the locator's text contains `text` (or, with absent: true, no longer does).
  async wait_text({ loc, text, absent = false, timeout = DEFAULT_TIMEOUT_MS }) {
    const deadline = Date.now() + timeout;
    let last = null;
    for (;;) {
      try { last = await locator(loc).innerText({ timeout: 1000 }); } catch (e) { last = null; }
      if (last !== null && last.includes(text) !== absent) return last;
      if (Date.now() > deadline) {
        throw new Error('waited ' + timeout + ' ms for ' + JSON.stringify(loc) + (absent ? ' to lose ' : ' to contain ') +
          JSON.stringify(text) + '; its text: ' + JSON.stringify(last));
      }
      await page.waitForTimeout(100);
    }
  },
  // What has the keyboard focus, and whether it is drawn visibly.
  async focused() {
    return await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      const s = getComputedStyle(e);
      const labels = e.labels ? Array.from(e.labels).map((l) => l.innerText.trim()) : [];
      return {
        tag: e.tagName.toLowerCase(), id: e.id || null, type: e.getAttribute('type'),
        text: (e.innerText || '').trim().slice(0, 200), aria_label: e.getAttribute('aria-label'), labels,
        outline_style: s.outlineStyle, outline_width: s.outlineWidth, focus_visible: e.matches(':focus-visible'),
      };
    });
  },
  async clipboard() { return await page.evaluate(() => navigator.clipboard.readText()); },
  // Everything of the page a token could hide in: the DOM, form values, storage, the URL.
  async dump() {
    return await page.evaluate(() => {
      const values = Array.from(document.querySelectorAll('input, textarea')).map((e) => e.value);
      const store = (s) => Array.from({ length: s.length }, (_, i) => s.key(i) + '=' + s.getItem(s.key(i)));
      return { html: document.documentElement.outerHTML, values, local: store(localStorage),
        session: store(sessionStorage), url: location.href, title: document.title };
    });
  },
  async layout() {
    return await page.evaluate(() => ({
      scroll_width: document.documentElement.scrollWidth, client_width: document.documentElement.clientWidth,
    }));
  },
  async shot({ name, mask = [], full_page = false }) {
    const file = path.join(shotDir, name + '.png');
    await page.screenshot({ path: file, fullPage: full_page, animations: 'disabled', caret: 'hide',
      mask: mask.map(locator), maskColor: '#7a5cff' });
    return file;
  },
  // axe-core in the page (through the DevTools protocol, which the page's CSP does not govern), WCAG 2.1 A/AA.
  async axe() {
    const source = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
    await page.evaluate(source);
    return await page.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target, summary: n.failureSummary })) }));
    });
  },
  async problems() { const p = problems; problems = []; return p; },
};

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let msg;
    try { msg = JSON.parse(line); } catch (e) { process.stdout.write(JSON.stringify({ ok: false, error: 'bad JSON' }) + '\n'); continue; }
    const fn = commands[msg.cmd];
    let answer;
    try {
      if (!fn) throw new Error('unknown command ' + msg.cmd);
      if (msg.cmd !== 'launch' && msg.cmd !== 'close' && msg.cmd !== 'problems' && !page) throw new Error('no browser: launch first');
      answer = { id: msg.id, ok: true, value: await fn(msg.args || {}) };
    } catch (e) {
      answer = { id: msg.id, ok: false, error: String(e && e.message || e).slice(0, 4000) };
    }
    process.stdout.write(JSON.stringify(answer === undefined ? null : answer) + '\n');
  }
  await closeContext();
}

main().catch(async (e) => {
  process.stderr.write('bridge.js: ' + (e && e.stack || e) + '\n');
  await closeContext();
  process.exit(1);
});
