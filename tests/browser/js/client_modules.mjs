// Run by tests/browser/test_client_modules.py (node, no browser): the web client's pure modules.
import assert from 'node:assert/strict';
import { solveGrid, gridBoxes, focusBoxes, newMeetingName, initials, avatarColour, AVATAR_COLOURS }
  from '../../../static/layout.js';
import { Outbox, linkify } from '../../../static/chat.js';
import { assess } from '../../../static/quality.js';
import { openOne, openMedia } from '../../../static/devices.js';

// the grid fills a desktop stage from 3 people on, and never spills out of it
for (const [w, h] of [[1264, 658], [1904, 938], [1000, 600]]) {
  for (let n = 1; n <= 16; n++) {
    const g = solveGrid(w, h, n);
    assert.ok(g.cols * g.w + (g.cols - 1) * 8 <= w + 1 && g.rows * g.h + (g.rows - 1) * 8 <= h + 1,
      `${n} in ${w}x${h}: ${JSON.stringify(g)}`);
    if (n >= 3) assert.ok(n * g.w * g.h >= 0.6 * w * h, `${n} in ${w}x${h} uses too little`);
    const { boxes } = gridBoxes(n, w, h);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
      const a = boxes[i], b = boxes[j];
      const apart = a.x + a.w <= b.x + 1 || b.x + b.w <= a.x + 1 || a.y + a.h <= b.y + 1 || b.y + b.h <= a.y + 1;
      assert.ok(apart, `tiles ${i} and ${j} overlap for ${n} in ${w}x${h}`);
    }
  }
}
// a phone: portrait tiles allowed; too many for the stage scroll instead of shrinking to nothing
const phone = solveGrid(382, 700, 13, { minHeight: 90 });
assert.ok(phone.h >= 90 && phone.cols <= 3, JSON.stringify(phone));
// a share and a filmstrip that cannot hold everyone: the rest is counted
const f = focusBoxes(1, 12, 1264, 658);
assert.equal(f.main.length, 1);
assert.equal(f.strip.length + f.hidden, 12);
assert.ok(f.main[0].w * f.main[0].h > 0.5 * 1264 * 658);
assert.ok(focusBoxes(1, 5, 382, 700).strip.every((b) => b.y > 500), 'portrait: strip at the bottom');

// meeting names: readable, unguessable, distinct
const names = new Set(Array.from({ length: 2000 }, () => newMeetingName()));
assert.equal(names.size, 2000);
for (const n of names) assert.match(n, /^[a-hj-km-np-z]{4}-[a-hj-km-np-z]{4}-[a-hj-km-np-z]{4}$/);

assert.equal(initials('Jean-Luc Picard'), 'JP');
assert.equal(initials('zoé'), 'Z');
assert.equal(initials('Alice (you)'), 'A');
assert.equal(initials(''), '?');
assert.equal(avatarColour('Alice (you)'), avatarColour('Alice'));
assert.ok(AVATAR_COLOURS.includes(avatarColour('Bob')));

// links: http(s) only, trailing punctuation left to the sentence, the rest stays text
assert.deepEqual(linkify('see https://example.org/a?b=1, then javascript:alert(1) <b>x</b>'), [
  { text: 'see ' }, { link: 'https://example.org/a?b=1', text: 'https://example.org/a?b=1' },
  { text: ', then javascript:alert(1) <b>x</b>' }]);
assert.deepEqual(linkify('no link'), [{ text: 'no link' }]);

// the outbox: typed while disconnected waits, expires as failed, goes once reconnected
let online = false;
const sent = [];
const box = new Outbox({ send: async (p) => { sent.push(p.text); }, connected: () => online, timeout: 1000 });
const late = box.add('late');
const kept = box.add('kept');
box.expire(Date.now() + 500);
assert.equal(late.status, 'queued');
late.since -= 2000;
box.expire();
assert.equal(late.status, 'failed');
online = true;
box.flush();
await new Promise((r) => setTimeout(r, 10));
assert.deepEqual(sent, ['kept']);
assert.equal(kept.status, 'sent');
box.retry(late.id);
await new Promise((r) => setTimeout(r, 10));
assert.deepEqual(sent, ['kept', 'late']);
// a send that fails (the connection dropped before the answer) is queued again
online = true;
const flaky = new Outbox({ send: async () => { online = false; throw new Error('closed'); }, connected: () => online });
const m = flaky.add('again');
await new Promise((r) => setTimeout(r, 10));
assert.equal(m.status, 'queued');
box.close(); flaky.close();

// quality verdicts and their reasons
const snap = (o) => ({ ts: 0, lost: 0, received: 0, bytes: 0, frames: 0, freezes: 0, jitter: 0, rtt: 0.02,
  sent: 0, remoteLost: 0, remoteFraction: 0, limitation: 'none', fps: 0, video: false, ...o });
assert.equal(assess(null, snap({})).level, 'unknown');
assert.deepEqual(assess(snap({ received: 100 }), snap({ received: 200 }), { expectMedia: true }),
  { level: 'good', reason: 'ok', value: 20 });
assert.deepEqual(assess(snap({ received: 100 }), snap({ received: 180, lost: 20 })),
  { level: 'poor', reason: 'loss', value: 20 });
assert.equal(assess(snap({ received: 100 }), snap({ received: 200, rtt: 0.3 })).reason, 'delay');
assert.deepEqual(assess(snap({ received: 100, bytes: 9 }), snap({ received: 100, bytes: 9 }), { expectMedia: true }),
  { level: 'lost', reason: 'nodata', value: 0 });
assert.equal(assess(snap({ sent: 10 }), snap({ sent: 20, limitation: 'cpu' })).reason, 'cpu');
// a busy camera ('Could not start video source') is tried once more; a refusal is not
{
  globalThis.window = { isSecureContext: true };
  let calls = 0;
  let failures = [];
  const fakeTrack = { kind: 'video' };
  Object.defineProperty(globalThis, 'navigator', { configurable: true, value: { mediaDevices: {
    getUserMedia: async () => {
      calls += 1;
      const err = failures.shift();
      if (err) throw Object.assign(new Error(err[1]), { name: err[0] });
      return { getTracks: () => [fakeTrack], getVideoTracks: () => [fakeTrack], getAudioTracks: () => [] };
    },
  } } });
  const quiet = console.warn;
  console.warn = () => {};
  try {
    failures = [['NotReadableError', 'Could not start video source']];
    assert.equal(await openOne('video', ''), fakeTrack);
    assert.equal(calls, 2);
    calls = 0;
    failures = [['AbortError', 'Timeout starting video source'], ['AbortError', 'again']];
    await assert.rejects(openOne('video', ''), (e) => e.kind === 'busy');
    assert.equal(calls, 2); // once more, not forever
    calls = 0;
    failures = [['NotAllowedError', 'Permission denied']];
    await assert.rejects(openOne('video', ''), (e) => e.kind === 'denied');
    assert.equal(calls, 1);
    calls = 0; // both at once fail (busy camera): each alone, the camera on its second try
    failures = [['NotReadableError', 'x'], ['NotReadableError', 'x']];
    const media = await openMedia({ video: true, audio: false });
    assert.equal(media.video, null); // one kind asked: no "both" attempt, two tries of it
    assert.equal(media.errors.video, 'busy');
  } finally {
    console.warn = quiet;
  }
}
console.log('client modules: ok');
