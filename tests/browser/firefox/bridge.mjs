// Drive one page of Debian's firefox-esr, headless, over WebDriver BiDi (puppeteer-core,
// no browser download), for the Python tests (tests/browser/firefox.py).
//
//   node bridge.mjs URL [--name NAME] [--profile DIR] [--firefox PATH] [--timeout MS]
//
// Opens URL in a fresh profile with fake camera and microphone, then reads one JSON command
// per line on stdin and answers one JSON line on stdout, with the same id:
//   {"id": 1, "op": "evaluate", "script": "async () => {...}"}  -> {"id": 1, "result": ...}
//   {"id": 2, "op": "screenshot", "path": "/tmp/x.png"}         -> {"id": 2, "result": "/tmp/x.png"}
//   {"id": 3, "op": "close"}                                    -> {"id": 3, "result": true}, exit
//   any failure                                                 -> {"id": N, "error": "..."}
// `script` is a function expression (called, its promise awaited) or any other expression (its
// value), as with Playwright's page.evaluate. An optional "timeout" (ms) bounds one command.
// The first line on stdout is {"ready": true, "pid": <firefox pid>, "version": "..."} once the
// page has loaded, or {"ready": false, "error": "..."} before exiting 1.
// Page console messages and page errors go to stderr as "[NAME] console.<level>: text" and
// "[NAME] pageerror: text". The bridge closes Firefox and exits when stdin closes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import puppeteer from 'puppeteer-core';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = process.argv[2];
const name = option('name', 'firefox');
const firefox = option('firefox', process.env.FIREFOX || '/usr/bin/firefox-esr');
const defaultTimeout = Number(option('timeout', '30000'));
let profile = option('profile', null);
const ownProfile = !profile;
if (ownProfile) profile = fs.mkdtempSync(path.join(os.tmpdir(), 'visio-firefox-'));

const PREFS = {
  // Fake camera and microphone, no permission prompt, media plays without a user gesture.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.autoplay.default': 0,
  // No ICE preference is changed: not media.peerconnection.ice.loopback either. In this
  // Firefox (ESR 153) it does not make Firefox gather 127.0.0.1 candidates (checked: with it
  // set, Firefox still offers only its eth0 addresses, and never pairs them with a remote
  // 127.0.0.1), so the test runs the server and both browsers in a network namespace with an
  // address of its own (tests/support/netns.py). mDNS host obfuscation and bundle policy stay
  // as users have them.
  // Stay off the network: none of these touch WebRTC. puppeteer-core already turns off
  // updates, safe browsing, Normandy and health reports; these cover what it leaves on.
  // Remote Settings: release builds ignore this override unless MOZ_REMOTE_SETTINGS_DEVTOOLS=1
  // is in the environment (set below; it is read by Remote Settings alone). This data: URL,
  // the one Mozilla's own test harness uses, answers locally, so no sync ever leaves Firefox.
  'services.settings.server': 'data:,#remote-settings-dummy/v1',
  'toolkit.telemetry.enabled': false,
  'toolkit.telemetry.unified': false,
  'toolkit.telemetry.archive.enabled': false,
  'toolkit.telemetry.server': '',
  'datareporting.usage.uploadEnabled': false,
  'app.update.auto': false,
  'app.update.enabled': false,
  'app.shield.optoutstudies.enabled': false,
  'app.normandy.enabled': false,
  'messaging-system.rsexperimentloader.enabled': false,
  'browser.ping-centre.telemetry': false,
  'browser.newtabpage.activity-stream.feeds.telemetry': false,
  'browser.newtabpage.activity-stream.telemetry': false,
  'browser.newtabpage.activity-stream.feeds.section.topstories': false,
  'browser.newtabpage.activity-stream.showSponsoredTopSites': false,
  'browser.topsites.contile.enabled': false,
  'browser.region.network.url': '',
  'browser.region.update.enabled': false,
  'browser.safebrowsing.provider.mozilla.updateURL': '',
  'browser.safebrowsing.provider.google4.updateURL': '',
  'browser.safebrowsing.provider.google.updateURL': '',
  'extensions.systemAddon.update.enabled': false,
  'extensions.blocklist.enabled': false,
  'captivedetect.canonicalURL': '',
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.trr.mode': 5, // no DNS over HTTPS
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'network.predictor.enabled': false,
  'dom.push.connection.enabled': false,
  'dom.push.serverURL': '',
  'identity.fxaccounts.enabled': false,
  'geo.provider.network.url': '',
};

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const log = (line) => process.stderr.write(`[${name}] ${line}\n`);

function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let browser = null;
let page = null;
let closing = null;

function close(code = 0) {
  if (!closing) {
    closing = (async () => {
      try {
        if (browser) await within(10000, browser.close(), 'closing firefox');
      } catch (err) {
        log(`bridge: ${err.message}; killing firefox`);
        try { browser.process()?.kill('SIGKILL'); } catch { /* gone */ }
      }
      if (ownProfile) {
        try {
          fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
        } catch (err) {
          log(`bridge: could not remove ${profile}: ${err.message}`);
        }
      }
      process.exit(code);
    })();
  }
  return closing;
}

process.on('SIGTERM', () => close(143));
process.on('SIGINT', () => close(130));

async function run(cmd) {
  const ms = Number(cmd.timeout) || defaultTimeout;
  switch (cmd.op) {
    case 'evaluate': {
      if (typeof cmd.script !== 'string') throw new Error('evaluate needs a "script" string');
      const expression = `(async () => {
        const __value = (${cmd.script}
        );
        return typeof __value === 'function' ? await __value() : __value;
      })()`;
      return within(ms, page.evaluate(expression), 'evaluate');
    }
    case 'screenshot':
      if (typeof cmd.path !== 'string') throw new Error('screenshot needs a "path" string');
      await within(ms, page.screenshot({ path: cmd.path }), 'screenshot');
      return cmd.path;
    case 'close':
      return true;
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

async function main() {
  if (!url) throw new Error('usage: node bridge.mjs URL [--name NAME] [--profile DIR]');
  browser = await puppeteer.launch({
    browser: 'firefox',
    protocol: 'webDriverBiDi',
    executablePath: firefox,
    headless: true,
    userDataDir: profile, // fresh: a new empty directory for every page
    extraPrefsFirefox: PREFS,
    timeout: 60000, // launch
    protocolTimeout: 60000,
    env: { ...process.env, MOZ_CRASHREPORTER_DISABLE: '1', MOZ_REMOTE_SETTINGS_DEVTOOLS: '1' },
  });
  const [first] = await browser.pages();
  page = first || (await browser.newPage());
  page.setDefaultTimeout(defaultTimeout);
  await page.setViewport({ width: 1280, height: 720 }); // as Playwright's Chromium pages
  page.on('console', (msg) => log(`console.${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => log(`pageerror: ${err?.stack || err}`));
  // WebDriver BiDi reports an Error passed to console.* without its message: show it as text.
  await page.evaluateOnNewDocument(() => {
    for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
      const original = console[level];
      console[level] = (...args) => original.apply(console, args.map(
        (x) => (x instanceof Error ? `${x.name}: ${x.message}` : x)));
    }
  });
  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  out({ ready: true, pid: browser.process()?.pid ?? null, version: await browser.version() });
}

async function handle(cmd) {
  try {
    const result = await run(cmd);
    out({ id: cmd.id, result: result === undefined ? null : result });
  } catch (err) {
    out({ id: cmd.id, error: String(err?.message || err) });
  }
  if (cmd.op === 'close') await close(0);
}

async function start() {
  try {
    await within(90000, main(), 'starting firefox');
  } catch (err) {
    out({ ready: false, error: String(err?.message || err) });
    await close(1);
  }
}

// One command at a time, in order, after the page has loaded.
let chain = start();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    out({ id: null, error: `bad command: ${err.message}` });
    return;
  }
  chain = chain.then(() => handle(cmd));
});
// stdin closed: close Firefox once the commands before have run
lines.on('close', () => {
  chain = chain.then(() => close(0));
});
