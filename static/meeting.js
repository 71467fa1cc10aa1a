// Meeting features that need the server (docs/protocol.md, "Meeting"): raised hands, reactions,
// host controls (mute someone, mute everyone, stop a video or a screen share, remove someone,
// lock the meeting), and what a host's action means for the person it concerns. app.js calls
// setupMeeting once per session and renderPeople whenever it rebuilds the participant list.
// The features show only when the server answers the 'meeting' request (FEATURES in app.js).

// reaction names (the protocol's) and the emoji shown for them
export const REACTIONS = {
  thumbs_up: '\u{1F44D}', clap: '\u{1F44F}', heart: '\u2764\uFE0F',
  laugh: '\u{1F602}', surprised: '\u{1F62E}', party: '\u{1F389}',
};
const REACTION_MS = 4000; // how long a reaction stays on a tile

const meeting = {
  ctx: null, // what app.js lends: state, features, t, toast, ...
  session: null,
  ready: false, // the server answered 'meeting'
  host: false,
  locked: false,
  hands: [], // participant sids, in the order hands were raised
  confirming: null, // sid whose removal waits for a second click
};
window.visioMeeting = meeting; // read-only hook for tests and debugging

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function icon(name) {
  const span = el('span', `icon i-${name}`);
  span.setAttribute('aria-hidden', 'true');
  return span;
}

const $ = (id) => document.getElementById(id);
const t = (key, vars) => meeting.ctx.t(key, vars);

// the web client's entry for a server sid (yourself: 'self')
function entry(sid) {
  const { state } = meeting.ctx;
  const self = state.participants.get('self');
  if (self && (sid === self.serverSid || sid === meeting.session?.me?.sid)) return self;
  return state.participants.get(sid) || null;
}

function mySid() { return meeting.session?.me?.sid; }
function nameOf(sid) { const p = entry(sid); return p ? meeting.ctx.nameOf(p) : '?'; }

// ---------------------------------------------------------------- controls --------------------
function controlButton(id, iconName, text) {
  const button = el('button', 'control');
  button.id = id;
  button.type = 'button';
  button.dataset.pressed = 'false';
  button.append(icon(iconName), el('span', 'text', text));
  return button;
}

function buildControls() {
  if ($('hand-button')) return;
  const before = $('layout-button');
  const hand = controlButton('hand-button', 'hand', t('raiseHand'));
  hand.hidden = true;
  hand.addEventListener('click', () => toggleHand());
  const reactButton = controlButton('react-button', 'smile-plus', t('react'));
  reactButton.classList.add('optional'); // not on a phone's narrow bar
  reactButton.hidden = true;
  reactButton.setAttribute('aria-haspopup', 'true');
  reactButton.setAttribute('aria-expanded', 'false');
  reactButton.setAttribute('aria-controls', 'react-menu');
  reactButton.addEventListener('click', () => toggleReactions());
  before.before(hand, reactButton);
  const menu = el('div', 'menu reactions');
  menu.id = 'react-menu';
  menu.hidden = true;
  menu.setAttribute('role', 'group');
  menu.setAttribute('aria-label', t('reactions'));
  for (const [name, emoji] of Object.entries(REACTIONS)) {
    const b = el('button', 'reaction-choice', emoji);
    b.type = 'button';
    b.dataset.reaction = name;
    b.setAttribute('aria-label', t(`r_${name}`));
    b.title = t(`r_${name}`);
    b.addEventListener('click', () => react(name));
    menu.append(b);
  }
  $('controls').append(menu);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !menu.hidden) { ev.stopPropagation(); toggleReactions(false); reactButton.focus(); }
  }, true);
  document.addEventListener('click', (ev) => {
    if (!menu.hidden && !ev.target.closest('#react-menu, #react-button')) toggleReactions(false);
  });
  // the People panel: raised hands in order, then the host's tools
  const people = $('people-panel');
  const handsBox = el('section', 'hands-box');
  handsBox.id = 'hands-box';
  handsBox.hidden = true;
  const heading = el('h3', '', t('raisedHands'));
  heading.id = 'hands-heading';
  const list = el('ol');
  list.id = 'hands-list';
  list.setAttribute('aria-labelledby', 'hands-heading');
  handsBox.append(heading, list);
  const tools = el('div', 'host-tools');
  tools.id = 'host-tools';
  tools.hidden = true;
  const muteAll = el('button', 'secondary small');
  muteAll.id = 'mute-all';
  muteAll.type = 'button';
  muteAll.append(icon('mic-off'), el('span', '', t('muteAll')));
  muteAll.addEventListener('click', () => hostRequest({ type: 'mute_all' }, t('allMutedNote')));
  const lock = el('button', 'secondary small');
  lock.id = 'lock-switch';
  lock.type = 'button';
  lock.setAttribute('role', 'switch');
  lock.setAttribute('aria-checked', 'false');
  lock.append(icon('lock'), el('span', '', t('lockMeeting')));
  lock.addEventListener('click', () => hostRequest({ type: 'lock_room', locked: !meeting.locked }));
  tools.append(muteAll, lock);
  people.prepend(tools, handsBox);
  // everyone sees that the meeting is locked
  const badge = el('span', 'lock-badge');
  badge.id = 'lock-badge';
  badge.hidden = true;
  badge.append(icon('lock'), el('span', '', t('locked')));
  $('count').after(badge);
  const live = el('div', 'sr-only');
  live.id = 'meeting-live';
  live.setAttribute('aria-live', 'polite');
  document.body.append(live);
}

function toggleReactions(open = $('react-menu').hidden) {
  $('react-menu').hidden = !open;
  $('react-button').setAttribute('aria-expanded', String(open));
  if (open) $('react-menu').querySelector('button').focus();
}

function say(text) {
  const live = $('meeting-live');
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 50);
}

function showFeatures() {
  const { features } = meeting.ctx;
  features.raiseHand = features.reactions = meeting.ready;
  features.hostControls = meeting.ready && meeting.host;
  $('hand-button').hidden = !features.raiseHand;
  $('react-button').hidden = !features.reactions;
  $('host-tools').hidden = !features.hostControls;
  if (!features.reactions) toggleReactions(false);
}

// ---------------------------------------------------------------- hands -----------------------
export async function toggleHand() {
  if (!meeting.ready || meeting.session?.state !== 'connected') return;
  const raised = meeting.hands.includes(mySid());
  try {
    await meeting.session.signal.request({ type: raised ? 'lower_hand' : 'raise_hand' });
  } catch (err) { meeting.ctx.toast(`${t('error')}: ${err.message}`); }
}

function setHands(hands) {
  meeting.hands = hands.map((h) => h.participant);
  renderHands();
}

function renderHands() {
  const { state } = meeting.ctx;
  const mine = meeting.hands.includes(mySid());
  const button = $('hand-button');
  button.querySelector('.text').textContent = t(mine ? 'lowerHand' : 'raiseHand');
  button.dataset.pressed = String(mine);
  // the order on every tile: everyone sees who asked first
  for (const p of state.participants.values()) {
    const sid = p.info.sid === 'self' ? mySid() : p.info.sid;
    const position = meeting.hands.indexOf(sid) + 1;
    let flag = p.tile.querySelector('.hand-flag');
    if (!position) { flag?.remove(); delete p.tile.dataset.hand; continue; }
    if (!flag) {
      flag = el('span', 'hand-flag');
      flag.setAttribute('role', 'img');
      flag.append(icon('hand'), el('span', 'n'));
      p.tile.append(flag);
    }
    flag.querySelector('.n').textContent = String(position);
    flag.setAttribute('aria-label', t('handFlag', { n: position }));
    p.tile.dataset.hand = String(position);
  }
  const box = $('hands-box');
  const list = $('hands-list');
  list.replaceChildren();
  for (const sid of meeting.hands) {
    const li = el('li');
    li.dataset.participant = sid;
    li.append(icon('hand'), el('span', 'name', nameOf(sid)));
    if (meeting.host && sid !== mySid()) {
      const lower = el('button', 'secondary small lower', t('lowerHand'));
      lower.type = 'button';
      lower.setAttribute('aria-label', t('lowerHandOf', { name: nameOf(sid) }));
      lower.addEventListener('click', () => hostRequest({ type: 'lower_hand', participant: sid }));
      li.append(lower);
    }
    list.append(li);
  }
  box.hidden = meeting.hands.length === 0;
  meeting.ctx.renderList(); // the positions in the list of people
}

function onHands(m) {
  const before = meeting.hands;
  setHands(m.hands || []);
  if (m.raised && m.participant !== mySid() && !before.includes(m.participant)) {
    meeting.ctx.toast(t('handRaisedNote', { name: nameOf(m.participant) }));
  }
  if (!m.raised && m.participant === mySid() && m.by && m.by !== mySid()) meeting.ctx.toast(t('hostLoweredHand'));
}

// ---------------------------------------------------------------- reactions -------------------
async function react(name) {
  try {
    await meeting.session.signal.request({ type: 'reaction', reaction: name });
  } catch (err) {
    meeting.ctx.toast(err.code === 'rate_limited' ? t('tooManyReactions') : `${t('error')}: ${err.message}`, 2500);
  }
}

function onReaction(m) {
  const p = entry(m.participant);
  const emoji = REACTIONS[m.reaction];
  if (!p || !emoji) return;
  const burst = el('span', 'reaction-burst', emoji);
  burst.setAttribute('aria-hidden', 'true');
  burst.dataset.reaction = m.reaction;
  burst.style.setProperty('--x', `${20 + Math.random() * 60}%`);
  p.tile.append(burst);
  setTimeout(() => burst.remove(), REACTION_MS);
  say(t('reactedNote', { name: meeting.ctx.nameOf(p), reaction: t(`r_${m.reaction}`) }));
}

// ---------------------------------------------------------------- host ------------------------
async function hostRequest(msg, done = null) {
  try {
    await meeting.session.signal.request(msg);
    if (done) meeting.ctx.toast(done);
  } catch (err) {
    meeting.ctx.toast(`${t('error')}: ${err.message}`, 6000);
  }
}

function actionButton(iconName, label, onClick, className = 'ghost round small action') {
  const b = el('button', className);
  b.type = 'button';
  b.append(icon(iconName), el('span', 'sr-only', label));
  b.title = label;
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

// The list of people: each one's raised hand, and for a host what may be done to them.
export function renderPeople(list, people) {
  if (!meeting.ready) return;
  for (const p of people) {
    const li = list.querySelector(`li[data-participant="${CSS.escape(p.info.sid)}"]`);
    if (!li) continue;
    const sid = p.info.sid === 'self' ? mySid() : p.info.sid;
    const position = meeting.hands.indexOf(sid) + 1;
    if (position) {
      const hand = el('span', 'hand-pos');
      hand.append(icon('hand'), el('span', '', String(position)));
      hand.setAttribute('role', 'img');
      hand.setAttribute('aria-label', t('handFlag', { n: position }));
      li.querySelector('.state').prepend(hand);
    }
    if (!meeting.host || p.info.sid === 'self') continue;
    const name = meeting.ctx.nameOf(p);
    const actions = el('span', 'actions');
    const source = (s) => [...p.tracks.values()].find((x) => x.source === s);
    const mic = source('microphone');
    if (mic && !mic.muted) {
      actions.append(actionButton('mic-off', t('mutePerson', { name }), () => hostRequest({ type: 'mute_participant', participant: sid })));
    }
    const cam = source('camera');
    if (cam && !cam.muted) {
      actions.append(actionButton('video-off', t('stopVideoOf', { name }), () => hostRequest({ type: 'stop_track', participant: sid, track: cam.sid })));
    }
    const share = source('screen_share');
    if (share) {
      actions.append(actionButton('share-off', t('stopShareOf', { name }), () => hostRequest({ type: 'stop_track', participant: sid, track: share.sid })));
    }
    const confirming = meeting.confirming === sid;
    const remove = confirming
      ? el('button', 'danger small action confirm', t('confirmRemove', { name }))
      : actionButton('user-x', t('removePerson', { name }), null);
    remove.type = 'button';
    remove.addEventListener('click', () => {
      if (meeting.confirming !== sid) { // a second click removes: no one is removed by a slip
        meeting.confirming = sid;
        meeting.ctx.renderList();
        list.querySelector(`li[data-participant="${CSS.escape(p.info.sid)}"] .confirm`)?.focus();
        clearTimeout(meeting.confirmTimer);
        meeting.confirmTimer = setTimeout(() => { meeting.confirming = null; meeting.ctx.renderList(); }, 5000);
        return;
      }
      meeting.confirming = null;
      hostRequest({ type: 'remove_participant', participant: sid });
    });
    actions.append(remove);
    li.append(actions);
  }
}

function setLocked(locked, announce) {
  const changed = locked !== meeting.locked;
  meeting.locked = locked;
  $('lock-badge').hidden = !locked;
  const lock = $('lock-switch');
  lock.setAttribute('aria-checked', String(locked));
  lock.querySelector('.icon').className = `icon i-${locked ? 'lock' : 'lock-open'}`;
  if (announce && changed) meeting.ctx.toast(t(locked ? 'lockedNote' : 'unlockedNote'));
}

// A host acted on one of our own tracks (protocol.js tells): the controls say so.
function onHostMuted({ source, muted }) {
  const { state } = meeting.ctx;
  if (!muted) return;
  if (source === 'microphone') {
    state.micMuted = true;
    meeting.ctx.toast(t('hostMutedYou'), 6000);
  } else if (source === 'camera') {
    state.camMuted = true;
    meeting.session.replaceTrack('camera', null).catch(() => {});
    meeting.ctx.stopCamera();
    meeting.ctx.addSelfTile();
    meeting.ctx.toast(t('hostStoppedCamera'), 6000);
  }
  meeting.ctx.updateControls();
}

function onHostStopped({ source, track }) {
  const { state } = meeting.ctx;
  if (source === 'screen_share') {
    state.mine.screen = null; // first: its 'ended' must not stop the share a second time
    track.stop();
    meeting.ctx.toast(t('hostStoppedShare'), 6000);
  } else if (source === 'camera') {
    state.camMuted = true;
    meeting.ctx.stopCamera();
    meeting.ctx.addSelfTile();
    meeting.ctx.toast(t('hostStoppedCamera'), 6000);
  } else if (source === 'microphone') {
    state.micMuted = true;
    state.mine.mic = null;
    track.stop();
    meeting.ctx.toast(t('hostMutedYou'), 6000);
  }
  meeting.ctx.updateControls();
}

// ---------------------------------------------------------------- wiring ----------------------
async function refreshMeeting(session) {
  const m = await session.signal.request({ type: 'meeting' });
  meeting.ready = true;
  meeting.host = Boolean(m.host);
  setLocked(Boolean(m.locked), false);
  showFeatures();
  setHands(m.hands || []);
}

export function setupMeeting(session, ctx) {
  meeting.ctx = ctx;
  meeting.session = session;
  meeting.ready = false;
  meeting.hands = [];
  buildControls();
  showFeatures();
  // joined, or back with the same connections after the socket dropped (what changed meanwhile)
  const onJoined = async (joined) => {
    setLocked(Boolean(joined.room?.locked), false);
    try {
      await refreshMeeting(session);
    } catch (err) {
      meeting.ready = false; // a server without these features: they stay hidden
      showFeatures();
      console.info('visio: no meeting features on this server', err.message);
    }
  };
  session.on('joined', onJoined);
  session.on('resumed', onJoined);
  // moved to a breakout room (or back): that room's hands and lock
  session.on('moved', () => { if (meeting.ready) refreshMeeting(session).catch(() => {}); });
  session.on('participant_joined', () => renderHands());
  // what a host may do to someone follows what they publish
  session.on('track_published', () => ctx.renderList());
  session.on('track_unpublished', () => ctx.renderList());
  session.on('hands', onHands);
  session.on('reaction', onReaction);
  session.on('room_updated', (m) => setLocked(Boolean(m.room?.locked), true));
  session.on('host_muted', onHostMuted);
  session.on('host_stopped', onHostStopped);
  session.on('leave', (m) => { if (m.reason === 'removed') ctx.ended(t('removedByHost')); });
  session.on('refused', (m) => { if (m.code === 'room_locked') ctx.ended(t('roomLocked')); });
  return { toggleHand, renderPeople };
}
