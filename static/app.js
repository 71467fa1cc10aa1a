// The visio-sfu web client: lobby, meeting room, controls, chat, settings.
// Protocol and peer connections live in protocol.js (no DOM); layout.js places the tiles,
// quality.js reads connection statistics, devices.js opens cameras and microphones,
// chat.js keeps the outbox, blur.js blurs the background.
import { Session } from './protocol.js';
import { t, translate } from './i18n.js';
import { avatarColour, chooseView, focusBoxes, gridBoxes, initials, newMeetingName } from './layout.js';
import { assess, snapshot } from './quality.js';
import { canChooseSpeaker, canShareScreen, errorKeys, listDevices, openMedia, openOne } from './devices.js';
import { Outbox, linkify } from './chat.js';
import { BlurProcessor, blurSupported } from './blur.js';
import { setupMeeting } from './meeting.js';
import { setupCaptions } from './captions.js';
import { setupRecording } from './recording.js';
import { setupBreakout } from './breakout.js';
import { admission, newOwnedMeeting, setupIdentity, setupLobbyHost, tr } from './identity.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const pathRoom = decodeURIComponent((location.pathname.match(/^\/r\/([^/]+)/) || [])[1] || '');

// Meeting features that need the server (issue 15): raise hand, reactions, host controls,
// room lock. meeting.js adds their buttons and menus and turns these on when the server
// answers its 'meeting' request; until then they are not shown.
export const FEATURES = { raiseHand: false, reactions: false, hostControls: false };
let meeting = null; // meeting.js, once in a room

const state = {
  session: null,
  room: '',
  preview: null, // MediaStream shown in the lobby
  meter: null,
  participants: new Map(), // sid -> {info, tile, video, audio, tracks, screen, quality, ...}
  order: [], // sids in the order they came
  mine: { mic: null, cam: null, screen: null }, // what is published (cam: the blurred track if blur is on)
  raw: { cam: null }, // the camera itself, when blur processes it
  blur: null, // BlurProcessor
  blurWanted: false,
  micMuted: false,
  camMuted: false,
  speaker: null, // active speaker now
  lastSpeaker: null, // shown large in the speaker view
  pinned: null,
  view: 'grid', // preferred: 'grid' or 'speaker' (a share or a pin override it)
  panel: null, // 'chat' | 'people' | null
  unread: 0,
  quality: 'unknown',
  devices: { camera: localStorage.getItem('visio-camera') || '', mic: localStorage.getItem('visio-mic') || '', speaker: localStorage.getItem('visio-speaker') || '' },
  singleKeys: localStorage.getItem('visio-single-keys') !== 'off',
  outbox: null,
  seenMessages: new Set(),
  lobbyErrors: { video: null, audio: null },
  captionBox: null, // the live captions' band (captions.js): the tiles are laid out above it
};
window.visio = state; // read-only hook for tests and debugging

// ---------------------------------------------------------------- small helpers ------------
function icon(name) {
  const span = document.createElement('span');
  span.className = `icon i-${name}`;
  span.setAttribute('aria-hidden', 'true');
  return span;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function setIcon(button, name) {
  const i = button.querySelector('.icon');
  i.className = `icon i-${name}`;
}

function toast(text, ms = 4000) {
  const p = el('p', '', text);
  const box = $('toasts');
  box.append(p);
  while (box.children.length > 3) box.firstElementChild.remove(); // the newest three
  setTimeout(() => p.remove(), ms);
  return p;
}

function nameOf(p) { return p.info.name || p.info.identity; }

function inviteUrl(room = state.room || $('room-input').value.trim()) {
  return `${location.origin}/r/${encodeURIComponent(room)}`;
}

async function copyInvite(button) {
  const url = inviteUrl();
  let ok = false;
  try {
    await navigator.clipboard.writeText(url);
    ok = true;
  } catch {
    const input = $('invite-link');
    input.value = url;
    input.select();
    try { ok = document.execCommand('copy'); } catch { ok = false; }
  }
  toast(ok ? t('copied') : `${t('copyFailed')}: ${url}`, ok ? 2500 : 8000);
  state.lastCopied = url;
  button?.focus();
}

// ---------------------------------------------------------------- lobby ---------------------
// Opening the camera takes a while: joining waits for it (state.previewing), so that someone
// quick on the join button still publishes their camera and microphone.
function startPreview() {
  state.previewAbandoned = false;
  state.previewing = openPreview();
  return state.previewing;
}

async function openPreview() {
  stopPreview();
  try {
    await acquirePreview();
  } finally {
    if (state.previewAbandoned) stopPreview(); // the join went on without it
  }
}

function lobbyWants() {
  return {
    video: $('lobby-cam').getAttribute('aria-checked') === 'true',
    audio: true, // the microphone opens even when joining muted: unmuting is then instant
  };
}

async function acquirePreview() {
  const wants = lobbyWants();
  const got = await openMedia({ ...wants, camera: state.devices.camera, mic: state.devices.mic });
  state.preview = new MediaStream([got.video, got.audio].filter(Boolean));
  state.lobbyErrors = got.errors;
  showLobbyErrors(got.errors, Boolean(got.audio));
  if (got.video && state.blurWanted) {
    try { await startBlur(got.video); } catch { /* shown by startBlur */ }
  }
  showPreview();
  startMeter(got.audio);
  await fillDeviceLists();
}

function previewVideoTrack() {
  return state.blur?.output || state.preview?.getVideoTracks()[0] || null;
}

function showPreview() {
  const video = previewVideoTrack();
  const camOn = Boolean(video) && $('lobby-cam').getAttribute('aria-checked') === 'true';
  $('preview').srcObject = camOn ? new MediaStream([video]) : null;
  $('preview').hidden = !camOn;
  const avatar = $('preview-avatar');
  avatar.hidden = camOn;
  $('preview-off').hidden = camOn;
  const name = $('name-input').value.trim() || '?';
  avatar.firstElementChild.textContent = initials(name);
  avatar.firstElementChild.style.setProperty('--c', avatarColour(name));
}

function showLobbyErrors(errors, haveAudio) {
  const box = $('lobby-error');
  // only the device paragraphs are replaced: a refused entry said there meanwhile (no meeting
  // at this address) stays, however late the camera answers
  box.querySelectorAll('.device-error').forEach((p) => p.remove());
  const keys = errorKeys(errors);
  for (const key of keys) {
    const device = key.endsWith('Mic') || errors.audio ? t('microphone') : t('camera');
    box.append(el('p', 'device-error', t(key, { device, why: errors.videoMessage || errors.audioMessage || '' })));
  }
  if (errors.video && haveAudio) box.append(el('p', 'note device-error', t('audioOnly')));
  $('retry-media').hidden = keys.length === 0 || keys[0] === 'errInsecure' || keys[0] === 'errUnsupported';
  // the switches follow what is possible
  if (errors.video) setLobbySwitch($('lobby-cam'), false, 'video', 'video-off');
  if (errors.audio) setLobbySwitch($('lobby-mic'), false, 'mic', 'mic-off');
}

function stopPreview() {
  state.meter?.close?.();
  state.meter = null;
  stopBlur();
  for (const track of state.preview?.getTracks() || []) track.stop();
  state.preview = null;
}

async function fillDeviceLists() {
  const devices = await listDevices();
  const fill = (select, kind, current) => {
    select.replaceChildren();
    const list = devices.filter((x) => x.kind === kind);
    if (kind === 'audiooutput' && !list.some((d) => d.deviceId === 'default')) {
      select.append(new Option(t('defaultDevice'), ''));
    }
    for (const d of list) select.append(new Option(d.label || `${kind} ${select.length + 1}`, d.deviceId));
    if (current && [...select.options].some((o) => o.value === current)) select.value = current;
  };
  const inUse = (track) => track?.getSettings?.().deviceId || '';
  const cam = inUse(state.raw.cam || state.mine.cam || state.preview?.getVideoTracks()[0]) || state.devices.camera;
  const mic = inUse(state.mine.mic || state.preview?.getAudioTracks()[0]) || state.devices.mic;
  for (const [select, kind, current] of [
    [$('camera-select'), 'videoinput', cam], [$('room-camera'), 'videoinput', cam],
    [$('mic-select'), 'audioinput', mic], [$('room-mic'), 'audioinput', mic],
    [$('speaker-select'), 'audiooutput', state.devices.speaker], [$('room-speaker'), 'audiooutput', state.devices.speaker],
  ]) fill(select, kind, current);
  return devices;
}

// The microphone level: in the lobby a meter; in the room it tells a muted speaker so.
function startMeter(track) {
  state.meter?.close?.();
  state.meter = null;
  if (!track || !window.AudioContext) return;
  // a clone stays enabled while the sent track is muted: we can tell someone talking muted
  const probe = track.clone();
  probe.enabled = true;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(new MediaStream([probe])).connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  // talking: well above the room's noise floor (which follows quiet moments at once and
  // noise slowly), at least twice in 1.5 s
  let floor = null;
  let loud = [];
  const tick = () => {
    if (ctx.state === 'closed') { probe.stop(); return; }
    analyser.getByteTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v - 128) / 128);
    $('mic-level').value = peak;
    state.micLevel = peak;
    floor = floor === null || peak < floor ? peak : floor + (peak - floor) * 0.01;
    const now = performance.now();
    if (peak > Math.max(0.02, 3 * floor)) loud.push(now);
    loud = loud.filter((x) => now - x < 1500);
    if (state.session && state.micMuted && loud.length >= 2) showMutedHint();
  };
  const timer = setInterval(tick, 100);
  state.meter = { close() { clearInterval(timer); probe.stop(); ctx.close().catch(() => {}); } };
}

function showMutedHint() {
  const hint = $('muted-hint');
  if (!hint.hidden) return;
  hint.hidden = false;
  toast(t('mutedHint'), 3000).classList.add('sr-only'); // said to screen readers, shown once
  clearTimeout(state.hintTimer);
  state.hintTimer = setTimeout(() => { hint.hidden = true; }, 4000);
}

function identity() {
  let id = sessionStorage.getItem('visio-identity');
  if (!id) {
    id = `guest-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
    sessionStorage.setItem('visio-identity', id);
  }
  return id;
}

function setLobbySwitch(button, on, iconOn, iconOff) {
  button.setAttribute('aria-checked', String(on));
  setIcon(button, on ? iconOn : iconOff);
}

async function lobbyToggleCam() {
  const button = $('lobby-cam');
  const on = button.getAttribute('aria-checked') !== 'true';
  setLobbySwitch(button, on, 'video', 'video-off');
  if (!on) {
    // preview off means the camera off: its light goes out
    stopBlur();
    for (const track of state.preview?.getVideoTracks() || []) { track.stop(); state.preview.removeTrack(track); }
    showPreview();
    return;
  }
  try {
    const track = await openOne('video', state.devices.camera);
    state.preview ||= new MediaStream();
    state.preview.addTrack(track);
    if (state.blurWanted) await startBlur(track).catch(() => {});
    showLobbyErrors({ ...state.lobbyErrors, video: null }, true);
  } catch (err) {
    setLobbySwitch(button, false, 'video', 'video-off');
    showLobbyErrors({ ...state.lobbyErrors, video: err.kind || 'other', videoMessage: err.message }, Boolean(state.preview?.getAudioTracks().length));
  }
  showPreview();
}

function lobbyToggleMic() {
  const button = $('lobby-mic');
  const on = button.getAttribute('aria-checked') !== 'true';
  setLobbySwitch(button, on, 'mic', 'mic-off');
}

function newMeeting() {
  if (newOwnedMeeting()) return; // meetings are created signed in, in My meetings (identity.js)
  const room = newMeetingName();
  $('room-input').value = room;
  showInvite();
  history.replaceState(null, '', `/r/${encodeURIComponent(room)}${location.search}`);
  ($('name-input').value.trim() ? $('join-button') : $('name-input')).focus();
}

function showInvite() {
  const room = $('room-input').value.trim();
  $('invite').hidden = !room;
  $('invite-link').value = room ? inviteUrl(room) : '';
}

// ---------------------------------------------------------------- room ----------------------
async function join(room, name, admitted = {}) {
  localStorage.setItem('visio-name', name);
  state.room = room;
  if (location.pathname !== `/r/${encodeURIComponent(room)}`) {
    history.replaceState(null, '', `/r/${encodeURIComponent(room)}${location.search}`);
  }
  document.title = `${room} – ${t('title')}`;
  state.micMuted = $('lobby-mic').getAttribute('aria-checked') !== 'true';
  state.camMuted = $('lobby-cam').getAttribute('aria-checked') !== 'true';
  $('lobby').hidden = true; // at once: a second click cannot start a second join
  $('room').hidden = false;
  $('room-title').textContent = admitted.meeting?.name || room;
  updateControls();
  // the camera the lobby is opening, if it comes within 5 s (a permission prompt left open
  // must not hold the meeting); later, it is closed
  await Promise.race([state.previewing, new Promise((r) => { setTimeout(r, 5000); })]).catch(() => {});
  state.previewAbandoned = true;
  const stream = state.preview;
  state.preview = null;
  state.meter?.close?.();
  state.meter = null;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const session = new Session({
    wsUrl: `${proto}//${location.host}/rtc`,
    name,
    videoCodec: params.get('codec') === 'vp9' ? 'vp9' : 'vp8', // ?codec=vp9: VP9 SVC camera
    relayOnly: params.get('relay') === '1', // ?relay=1: through the TURN server only
    getToken: async () => {
      if (params.get('token')) return params.get('token');
      if (admitted.token) return admitted.token; // an owned room's (identity.js)
      const q = new URLSearchParams({ room, name, identity: identity() });
      if (params.get('host') === '1') q.set('host', '1'); // development mode: a host's token
      const r = await fetch(`/dev/token?${q}`);
      if (r.status === 400) { // a meeting or name the server never accepts (too long, say): said once
        const why = (await r.json().catch(() => ({}))).message;
        throw Object.assign(new Error(why || t('error')), { permanent: true });
      }
      if (!r.ok) throw new Error('no token: open this page with ?token=');
      return (await r.json()).token;
    },
  });
  state.session = session;
  // closing or reloading the tab is leaving: the others see it at once, not a frozen tile for
  // the resume grace (only a dropped network, which may come back, is waited for)
  window.addEventListener('pagehide', () => { if (session.state !== 'closed') session.leave(); });
  state.outbox = new Outbox({
    send: (payload) => session.sendData('chat', payload),
    connected: () => session.state === 'connected',
    onChange: renderOutgoing,
  });
  wire(session);
  meeting = setupMeeting(session, {
    state, features: FEATURES, t, toast, nameOf, renderList, updateControls, addSelfTile, stopCamera, ended,
  });
  $('mic-button').focus(); // focus lands in the room, on its first control
  try {
    await session.connect();
  } catch (err) {
    if (err.permanent) { // trying again would only fail again: the reason, and no outage banner
      ended(`${t('error')}: ${err.message}`);
      return;
    }
    setStatus(`${t('error')}: ${err.message}`);
    session.onDisconnect(err.message);
    // the reconnection joins by itself: the camera and microphone are published once it has
    // (returning here left the person in the meeting sending nothing)
    const back = await new Promise((resolve) => {
      const off = session.on('state', (s) => {
        if (s === 'connected' || s === 'closed') { off(); resolve(s === 'connected'); }
      });
    });
    if (!back || state.session !== session) return;
  }
  const cam = state.camMuted ? null : (state.blur?.output || stream?.getVideoTracks()[0] || null);
  const mic = stream?.getAudioTracks()[0] || null;
  if (state.camMuted) {
    for (const track of stream?.getVideoTracks() || []) track.stop();
    stopBlur();
  }
  if (cam) {
    state.raw.cam = state.blur ? stream.getVideoTracks()[0] : null;
    state.mine.cam = cam;
    watchEnded(state.raw.cam || cam, 'camera');
    await session.publish(cam, 'camera', new MediaStream([cam]));
  }
  if (mic) {
    state.mine.mic = mic;
    watchEnded(mic, 'microphone');
    if (state.micMuted) await session.setMuted('microphone', true);
    await session.publish(mic, 'microphone', new MediaStream([mic]));
    startMeter(mic);
  }
  if (!state.camMuted && !cam) state.camMuted = true; // no camera could be opened
  if (!mic) state.micMuted = true; // nor a microphone: "Unmute" asks for it again
  addSelfTile();
  updateControls();
  layout();
}

function wire(session) {
  session.on('state', onSessionState);
  const captions = setupCaptions(session); // live captions, transcription, meeting notes (captions.js)
  state.captionBox = captions.box;
  new ResizeObserver(() => layout()).observe(captions.box); // shown, hidden, a line more or less
  setupRecording(session, { toast }); // the recording indicator and button (recording.js)
  setupLobbyHost(session, { toast }); // a host's waiting room: who waits, admit, deny (identity.js)
  setupBreakout(session, { toast }); // breakout rooms (breakout.js)
  const others = (list) => { // the people of the room we are in (joined, or moved: breakout rooms)
    for (const sid of [...state.participants.keys()]) if (sid !== 'self') removeParticipant(sid, { quiet: true });
    for (const p of list) addParticipant(p, { quiet: true });
  };
  session.on('moved', (m) => { others(m.participants || []); renderList(); layout(); });
  session.on('joined', (joined) => {
    // joined again after an outage (a server restart: everyone is a new participant there):
    // those who were here and come back within a minute are no news, no "joined" notice
    state.returning = new Map();
    for (const p of state.participants.values()) {
      if (p.info.sid !== 'self') state.returning.set(p.info.identity, Date.now() + 60000);
    }
    others([]);
    state.participants.get('self')?.tracks.clear();
    for (const p of joined.participants) {
      addParticipant(p, { quiet: true });
      state.returning.delete(p.identity); // here already: a later leave and return is news
    }
    // the name the others see: the token's (a signed-in user's is the provider's), which may
    // not be the one typed in the lobby
    session.name = joined.participant.name || session.name;
    const self = state.participants.get('self') || addSelfTile(); // listed even without media
    renameSelf(self, session.name);
    self.serverSid = joined.participant.sid; // info.sid stays 'self': isMuted and pins use it
    renderList();
    layout();
  });
  // back after the socket dropped, the same connections kept: tiles and media stay; only who
  // came, went or (un)published meanwhile changes
  session.on('resumed', (joined) => {
    const now = new Map(joined.participants.map((p) => [p.sid, p]));
    for (const sid of [...state.participants.keys()]) {
      if (sid !== 'self' && !now.has(sid)) removeParticipant(sid);
    }
    for (const info of now.values()) {
      const p = state.participants.get(info.sid) || addParticipant(info, { quiet: true });
      p.tracks = new Map((info.tracks || []).map((t) => [t.sid, t]));
      updateFlags(p);
    }
    renderList();
    layout();
  });
  session.on('participant_joined', (m) => { addParticipant(m.participant); renderList(); layout(); });
  session.on('participant_left', (m) => { removeParticipant(m.participant.sid); renderList(); layout(); });
  session.on('track_published', (m) => {
    const p = state.participants.get(m.participant);
    if (!p) return;
    p.tracks.set(m.track.sid, m.track);
    if (m.track.source === 'screen_share') toast(t('sharingNote', { name: nameOf(p) }));
    updateFlags(p);
  });
  session.on('track_unpublished', (m) => {
    const p = state.participants.get(m.participant);
    if (p) { p.tracks.delete(m.track); updateFlags(p); }
    // the next subscriber offer removes it too; this does not wait for that offer to succeed
    detachTrack({ participant: m.participant, track: m.track });
  });
  session.on('track_muted', (m) => {
    const p = state.participants.get(m.participant);
    const track = p?.tracks.get(m.track);
    if (track) { track.muted = m.muted; updateFlags(p); renderList(); }
  });
  session.on('track', ({ track, stream, info }) => attachTrack(track, stream, info));
  session.on('track_removed', ({ info }) => detachTrack(info));
  session.on('data', (m) => {
    if (m.topic !== 'chat') return;
    const id = m.payload?.id;
    if (id) {
      const key = `${m.from?.identity}:${id}`;
      if (state.seenMessages.has(key)) return; // resent after a lost acknowledgement
      state.seenMessages.add(key);
    }
    addChat(m.from?.name || m.from?.identity, m.payload?.text, m.ts);
  });
  session.on('leave', (m) => {
    if (m.reason === 'replaced') ended(t('replaced'));
    if (m.reason === 'room_deleted') ended(tr('meetingDeleted')); // its owner deleted it
  });
  session.on('failed', () => ended(t('mediaFailed')));
  session.on('active_speaker', (m) => {
    state.serverSpeaker = true;
    setSpeaker(m.participant);
  });
}

function onSessionState(s) {
  const outage = s === 'reconnecting';
  $('outage').hidden = !outage;
  setStatus(s === 'connected' || s === 'closed' ? '' : t(outage ? 'reconnecting' : 'connecting'));
  if (outage) {
    state.wasDown = true;
    state.reconnectedToast?.remove(); // an earlier outage's "Reconnected" is not true now
    state.lastStats = null;
    setQuality($('quality'), 'offline', 'outage');
    for (const p of state.participants.values()) if (p.net) setQuality(p.net, 'offline', 'outage', nameOf(p));
  }
  if (s === 'connected') {
    if (state.wasDown) { state.reconnectedToast = toast(t('reconnected')); state.wasDown = false; }
    setQuality($('quality'), 'unknown', 'measuring');
    state.outbox?.flush();
  }
}

function tileFor(info, { self = false } = {}) {
  const tile = el('div', 'tile');
  tile.setAttribute('role', 'group');
  tile.dataset.participant = info.sid;
  tile.dataset.identity = info.identity;
  const video = el('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound comes from the audio element
  const avatar = el('div', 'avatar');
  avatar.setAttribute('aria-hidden', 'true');
  const circle = el('span', '', initials(info.name || info.identity));
  circle.style.setProperty('--c', avatarColour(info.name || info.identity));
  avatar.append(circle);
  const label = el('p', 'label');
  const micOff = icon('mic-off');
  micOff.classList.add('mic-off-flag');
  const speaking = icon('speaking');
  speaking.classList.add('speaking-flag');
  const name = el('span', 'name', info.name || info.identity);
  const flags = el('span', 'flags sr-only');
  label.append(micOff, speaking, name, flags);
  const net = el('span', 'net');
  net.setAttribute('role', 'img');
  net.append(el('i'), el('i'), el('i'));
  tile.append(video, avatar, label, net);
  let pin = null;
  if (!self) {
    pin = el('button', 'pin');
    pin.type = 'button';
    pin.append(icon('pin'));
    pin.setAttribute('aria-pressed', 'false');
    tile.append(pin);
  }
  const audio = el('audio');
  audio.autoplay = true;
  tile.append(audio);
  return { tile, video, audio, avatar, nameEl: name, flags, net, pin };
}

function addParticipant(info, { quiet = false } = {}) {
  if (state.participants.has(info.sid)) return state.participants.get(info.sid);
  const self = info.sid === 'self';
  const parts = tileFor(info, { self });
  const p = { info, ...parts, tracks: new Map(), screen: null, quality: null, stats: null };
  if (!self) {
    parts.pin.addEventListener('click', () => togglePin(p));
    parts.tile.addEventListener('dblclick', () => togglePin(p));
  }
  $('grid').append(parts.tile);
  if (state.devices.speaker) parts.audio.setSinkId?.(state.devices.speaker).catch(() => {});
  for (const track of info.tracks || []) p.tracks.set(track.sid, track);
  state.participants.set(info.sid, p);
  state.order.push(info.sid);
  setQuality(p.net, 'unknown', 'measuring', nameOf(p));
  updateFlags(p);
  if (!self && !quiet) announceJoin(p);
  return p;
}

// Join and leave notices. Someone whose connection drops comes back within seconds with the
// same identity: a leave is announced only if they are not back 4 s later.
function announceJoin(p) {
  const pending = state.leaving?.get(p.info.identity);
  if (pending) { clearTimeout(pending); state.leaving.delete(p.info.identity); return; }
  const back = state.returning?.get(p.info.identity);
  if (back) { state.returning.delete(p.info.identity); if (back > Date.now()) return; }
  // several joining at once (the start of a meeting) make one notice
  state.joining ||= [];
  state.joining.push(nameOf(p));
  clearTimeout(state.joinTimer);
  state.joinTimer = setTimeout(() => {
    const names = state.joining;
    state.joining = [];
    const name = names.length <= 2 ? names.join(` ${t('and')} `)
      : `${names.slice(0, 2).join(', ')} ${t('andMore', { n: names.length - 2 })}`;
    toast(t(names.length > 1 ? 'joinedManyNote' : 'joinedNote', { name }));
  }, 700);
}

function announceLeave(p) {
  state.leaving ||= new Map();
  const name = nameOf(p);
  state.leaving.set(p.info.identity, setTimeout(() => {
    state.leaving.delete(p.info.identity);
    toast(t('leftNote', { name }));
  }, 4000));
}

function addSelfTile() {
  let p = state.participants.get('self');
  if (!p) {
    p = addParticipant({ sid: 'self', identity: 'self', name: `${state.session.name} (${t('you')})`, tracks: [] });
    p.tile.classList.add('self');
  }
  const cam = state.mine.cam;
  p.video.srcObject = cam && cam.readyState === 'live' ? new MediaStream([cam]) : null;
  updateFlags(p);
  renderList();
  return p;
}

function renameSelf(p, name) {
  const shown = `${name} (${t('you')})`;
  if (p.info.name === shown) return;
  p.info.name = shown;
  p.nameEl.textContent = shown;
  const circle = p.avatar.querySelector('span');
  circle.textContent = initials(shown);
  circle.style.setProperty('--c', avatarColour(shown));
  updateFlags(p);
}

function removeParticipant(sid, { quiet = false } = {}) {
  const p = state.participants.get(sid);
  if (!p) return;
  p.tile.remove();
  p.screen?.remove();
  state.participants.delete(sid);
  state.order = state.order.filter((x) => x !== sid);
  if (state.pinned === sid) state.pinned = null;
  if (state.lastSpeaker === sid) state.lastSpeaker = null;
  if (!quiet && sid !== 'self') announceLeave(p);
}

function attachTrack(track, stream, info) {
  const p = state.participants.get(info.participant) || addParticipant({ sid: info.participant, identity: info.participant, name: '', tracks: [] });
  if (info.source === 'screen_share') {
    p.screen?.remove();
    const tile = el('div', 'tile screen main');
    tile.setAttribute('role', 'group');
    tile.setAttribute('aria-label', t('screenOf', { name: nameOf(p) }));
    tile.dataset.participant = info.participant;
    tile.dataset.track = info.track;
    const video = el('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.srcObject = stream;
    video.dataset.track = info.track;
    const label = el('p', 'label');
    label.append(icon('share'), el('span', 'name', t('screenOf', { name: nameOf(p) })));
    tile.append(video, label);
    $('stage').append(tile);
    p.screen = tile;
    watchVideo(video);
    layout();
  } else if (track.kind === 'video') {
    p.video.srcObject = stream;
    p.video.dataset.track = info.track;
    watchVideo(p.video);
    track.addEventListener('mute', () => updateFlags(p));
    track.addEventListener('unmute', () => updateFlags(p));
    updateFlags(p);
  } else {
    p.audio.srcObject = stream;
    p.audio.dataset.track = info.track;
    p.audio.play?.().catch(() => {});
  }
}

function detachTrack(info) {
  const p = state.participants.get(info.participant);
  if (!p) return;
  if (p.screen && p.screen.dataset.track === info.track) { p.screen.remove(); p.screen = null; layout(); }
  if (p.video.dataset.track === info.track) { p.video.srcObject = null; delete p.video.dataset.track; updateFlags(p); }
  if (p.audio.dataset.track === info.track) { p.audio.srcObject = null; delete p.audio.dataset.track; }
}

function trackOf(p, source) {
  return [...p.tracks.values()].find((x) => x.source === source);
}

// A microphone muted or not published at all: either way they cannot be heard.
function isMuted(p, source) {
  if (p.info.sid === 'self') return source === 'microphone' ? state.micMuted : state.camMuted;
  const track = trackOf(p, source);
  return track ? track.muted : source === 'microphone';
}

// The camera shows only while it is on and sends: else the avatar (never a frozen frame).
function cameraOff(p) {
  if (p.info.sid === 'self') return state.camMuted || !state.mine.cam || state.mine.cam.readyState !== 'live';
  const published = trackOf(p, 'camera');
  if (!published || published.muted) return true;
  const live = p.video.srcObject?.getVideoTracks()[0];
  return !live || live.readyState !== 'live';
}

function updateFlags(p) {
  const mic = isMuted(p, 'microphone');
  const camOff = cameraOff(p);
  p.tile.dataset.micMuted = String(mic);
  p.tile.dataset.camMuted = String(isMuted(p, 'camera') || camOff);
  p.tile.dataset.camOff = String(camOff);
  const words = [];
  if (mic) words.push(t('muted'));
  if (camOff) words.push(t('cameraOff'));
  if (p.screen) words.push(t('presenting'));
  p.flags.textContent = words.length ? `, ${words.join(', ')}` : '';
  p.tile.setAttribute('aria-label', [nameOf(p), ...words].join(', '));
  if (p.pin) p.pin.setAttribute('aria-label', t('pin', { name: nameOf(p) }));
}

function renderList() {
  const list = $('participant-list');
  list.replaceChildren();
  const people = state.order.map((sid) => state.participants.get(sid)).filter(Boolean);
  for (const p of people) {
    const li = el('li');
    li.dataset.participant = p.info.sid;
    const mini = el('span', 'mini', initials(nameOf(p)));
    mini.setAttribute('aria-hidden', 'true');
    mini.style.setProperty('--c', avatarColour(nameOf(p)));
    const stateText = el('span', 'state');
    if (isMuted(p, 'microphone')) stateText.append(icon('mic-off'), el('span', 'sr-only', ` (${t('muted')})`));
    li.append(mini, el('span', 'name', nameOf(p)), stateText);
    list.append(li);
  }
  meeting?.renderPeople(list, people); // raised hands; a host's actions on each person
  const n = people.length;
  $('people-count').textContent = String(n);
  $('count').textContent = t('participantCount', { n });
  $('alone').hidden = !(n <= 1 && state.session);
}

function setSpeaker(sid) {
  if (sid === state.speaker) return;
  state.participants.get(state.speaker)?.tile.classList.remove('speaking');
  state.speaker = sid;
  const p = state.participants.get(sid);
  p?.tile.classList.add('speaking');
  if (sid && sid !== 'self' && p && sid !== state.lastSpeaker) {
    state.lastSpeaker = sid;
    if (state.view === 'speaker' && !state.pinned) layout();
  }
}

// ---------------------------------------------------------------- layout --------------------
function place(node, box) {
  node.hidden = false;
  node.style.left = `${box.x}px`;
  node.style.top = `${box.y}px`;
  node.style.width = `${box.w}px`;
  node.style.height = `${box.h}px`;
  node.classList.toggle('small', box.w < 200);
}

// The live captions' band at the bottom of the stage (captions.js), while it is shown: the
// tiles are laid out above it, so that captions never cover anyone's name label
function captionBand() {
  const band = state.captionBox;
  return band && !band.hidden ? band.offsetHeight + 8 : 0;
}

function layout() {
  const area = $('stage-area');
  const band = captionBand();
  document.documentElement.style.setProperty('--caption-band', `${band}px`); // toasts go above it
  const width = area.clientWidth;
  const height = area.clientHeight - band;
  if (!width || !height) return;
  const shares = [...$('stage').querySelectorAll('.tile.screen')];
  const people = state.order.map((sid) => state.participants.get(sid)).filter(Boolean);
  // others first, yourself last: what you came to see comes first
  people.sort((a, b) => (a.info.sid === 'self') - (b.info.sid === 'self'));
  const view = chooseView({ shares: shares.length, pinned: state.pinned, preferred: state.view, participants: people.length });
  state.currentView = view;
  $('grid').style.height = '';
  $('overflow').hidden = true;
  for (const p of people) p.tile.classList.remove('main');
  if (view === 'grid') {
    const { boxes, height: total } = gridBoxes(people.length, width, height, { minHeight: 90 });
    people.forEach((p, i) => place(p.tile, boxes[i]));
    if (total > height) $('grid').style.height = `${total}px`; // scrolls
  } else {
    let main;
    let strip;
    // on the filmstrip you come first: you always see yourself
    const selfFirst = [...people].sort((a, b) => (b.info.sid === 'self') - (a.info.sid === 'self'));
    if (view === 'share') {
      main = shares;
      strip = selfFirst.map((p) => p.tile);
    } else {
      const others = people.filter((p) => p.info.sid !== 'self');
      const focus = state.participants.get(state.pinned)
        || state.participants.get(state.lastSpeaker) || others[0] || people[0];
      focus.tile.classList.add('main');
      main = [focus.tile];
      strip = selfFirst.filter((p) => p !== focus).map((p) => p.tile);
    }
    const boxes = focusBoxes(main.length, strip.length, width, height);
    main.forEach((node, i) => place(node, boxes.main[i]));
    strip.forEach((node, i) => {
      if (i < boxes.strip.length) place(node, boxes.strip[i]);
      else node.hidden = true; // off the strip: its video is paused (reportSizes)
    });
    if (boxes.hidden > 0) {
      // the last strip place says how many more there are
      const last = boxes.strip[boxes.strip.length - 1];
      strip[boxes.strip.length - 1].hidden = true;
      const more = $('overflow');
      more.textContent = t('more_others', { n: boxes.hidden + 1 });
      more.setAttribute('aria-label', t('moreOthers', { n: boxes.hidden + 1 }));
      place(more, last);
    }
  }
  $('layout-button').hidden = people.length < 2 || shares.length > 0;
  reportSizes();
}

// Adaptive stream: report each received video's rendered height (0 = hidden) to the server.
const watched = new Map(); // video element -> last settings sent
const sizes = new ResizeObserver(() => reportSizes());
function watchVideo(video) { sizes.observe(video); reportSizes(); }
function reportSizes() {
  clearTimeout(state.sizeTimer);
  state.sizeTimer = setTimeout(() => {
    for (const video of document.querySelectorAll('#grid video[data-track], #stage video[data-track]')) {
      const tile = video.closest('.tile');
      const visible = video.isConnected && !tile.hidden && tile.dataset.camOff !== 'true' && video.clientHeight > 0;
      const height = Math.round(video.clientHeight * (window.devicePixelRatio || 1));
      const key = `${visible}:${height}`;
      if (watched.get(video) === key) continue;
      watched.set(video, key);
      state.session?.trackSettings(video.dataset.track, { visible, height });
    }
  }, 200);
}

// Pin a participant large (the pin button on its tile, or a double-click); again to unpin.
function togglePin(p) {
  if (p.info.sid === 'self') return;
  const pinning = state.pinned !== p.info.sid;
  for (const other of state.participants.values()) other.pin?.setAttribute('aria-pressed', 'false');
  state.pinned = pinning ? p.info.sid : null;
  p.pin.setAttribute('aria-pressed', String(pinning));
  setIcon(p.pin, pinning ? 'pin-off' : 'pin');
  layout();
}

function setStatus(text) { $('status').textContent = text; }

// ---------------------------------------------------------------- chat ----------------------
function chatItem(who, text, ts) {
  const li = el('li');
  const when = new Date(ts || Date.now());
  const time = el('time', '', when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = when.toISOString();
  const body = el('div', 'text');
  for (const part of linkify(text)) {
    if (part.link) {
      const a = el('a', '', part.text); // text, never markup from others
      a.href = part.link;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      body.append(a);
    } else {
      body.append(document.createTextNode(part.text));
    }
  }
  li.append(el('span', 'who', who || '?'), time, body);
  return li;
}

function addChat(who, text, ts) {
  if (typeof text !== 'string') return;
  const li = chatItem(who, text, ts);
  $('chat-log').append(li);
  li.scrollIntoView?.({ block: 'end' });
  if (state.panel !== 'chat') {
    state.unread += 1;
    updateUnread();
  }
}

function renderOutgoing(message) {
  let li = document.querySelector(`#chat-log li[data-message="${message.id}"]`);
  if (!li) {
    li = chatItem(`${state.session?.name || ''} (${t('you')})`, message.text, message.since);
    li.dataset.message = message.id;
    li.classList.add('mine');
    $('chat-log').append(li);
    li.scrollIntoView?.({ block: 'end' });
  }
  li.dataset.status = message.status;
  li.classList.toggle('pending', message.status === 'queued' || message.status === 'sending');
  li.classList.toggle('failed', message.status === 'failed');
  li.querySelector('.delivery')?.remove();
  if (message.status === 'sent') return;
  const delivery = el('div', 'delivery');
  if (message.status === 'failed') {
    delivery.append(icon('alert'), el('span', '', t('notSent')));
    const retry = el('button', 'small secondary', t('retry'));
    retry.type = 'button';
    retry.addEventListener('click', () => { state.outbox.retry(message.id); $('chat-input').focus(); });
    delivery.append(retry);
  } else {
    delivery.append(el('span', '', t(state.session?.state === 'connected' ? 'sending' : 'waiting')));
  }
  li.append(delivery);
}

function updateUnread() {
  const badge = $('unread');
  badge.hidden = state.unread === 0;
  badge.textContent = String(state.unread);
  badge.setAttribute('aria-label', t('unread', { n: state.unread }));
}

// ---------------------------------------------------------------- panels, menus, dialogs ----
function openPanel(which) {
  const panel = $('panel');
  const closing = state.panel === which || which === null;
  const opener = state.panel ? $(`${state.panel}-button`) : null;
  state.panel = closing ? null : which;
  panel.hidden = closing;
  $('sheet-backdrop').hidden = closing;
  $('chat-panel').hidden = state.panel !== 'chat';
  $('people-panel').hidden = state.panel !== 'people';
  $('chat-button').setAttribute('aria-expanded', String(state.panel === 'chat'));
  $('people-button').setAttribute('aria-expanded', String(state.panel === 'people'));
  if (state.panel === 'chat') {
    $('panel-title').textContent = t('chat');
    state.unread = 0;
    updateUnread();
    $('chat-input').focus();
    $('chat-log').lastElementChild?.scrollIntoView?.({ block: 'end' });
  } else if (state.panel === 'people') {
    $('panel-title').textContent = t('people');
    $('panel-close').focus();
  } else {
    (opener || $('mic-button')).focus(); // back where the person was
  }
  layout();
}

function toggleMenu(open = $('more-menu').hidden) {
  $('more-menu').hidden = !open;
  $('more-button').setAttribute('aria-expanded', String(open));
  if (open) $('more-menu').querySelector('button:not([hidden])').focus();
}

function openDialog(id) {
  toggleMenu(false);
  const dialog = $(id);
  state.dialogOpener = document.activeElement;
  if (id === 'settings-dialog') fillDeviceLists();
  dialog.showModal();
}

function onDialogClose() {
  const opener = state.dialogOpener;
  state.dialogOpener = null;
  (opener?.isConnected && !opener.closest('[hidden]') ? opener : $('more-button')).focus();
}

function toggleFullscreen() {
  toggleMenu(false);
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else $('room').requestFullscreen?.().catch(() => {});
}

function updateFullscreenButton() {
  const on = Boolean(document.fullscreenElement);
  const button = $('fullscreen-button');
  setIcon(button, on ? 'fullscreen-exit' : 'fullscreen');
  button.querySelector('.text').textContent = t(on ? 'exitFullscreen' : 'fullscreen');
}

// ---------------------------------------------------------------- controls ------------------
function setControl(button, { text, iconName, pressed }) {
  button.querySelector('.text').textContent = text;
  setIcon(button, iconName);
  button.dataset.pressed = String(pressed);
}

function updateControls() {
  setControl($('mic-button'), { text: t(state.micMuted ? 'unmute' : 'mute'), iconName: state.micMuted ? 'mic-off' : 'mic', pressed: state.micMuted });
  setControl($('cam-button'), { text: t(state.camMuted ? 'startVideo' : 'stopVideo'), iconName: state.camMuted ? 'video-off' : 'video', pressed: state.camMuted });
  const sharing = Boolean(state.mine.screen);
  setControl($('share-button'), { text: t(sharing ? 'stopShare' : 'share'), iconName: sharing ? 'share-off' : 'share', pressed: sharing });
  $('share-button').hidden = !canShareScreen();
  $('presenting').hidden = !sharing;
  const speakerView = state.view === 'speaker';
  setControl($('layout-button'), { text: t(speakerView ? 'layoutGrid' : 'layoutSpeaker'), iconName: speakerView ? 'grid' : 'speaker-view', pressed: false });
  const blurOn = Boolean(state.blur);
  $('blur-button').setAttribute('aria-checked', String(blurOn));
  $('blur-button').hidden = !blurSupported();
  $('lobby-blur').hidden = !blurSupported();
  if (state.micMuted === false) $('muted-hint').hidden = true;
  const self = state.participants.get('self');
  if (self) {
    updateFlags(self);
    renderList();
  }
}

async function toggleMic() {
  state.micMuted = !state.micMuted;
  updateControls();
  if (!state.mine.mic && !state.micMuted) {
    // no microphone yet (refused or missing in the lobby): ask again
    try {
      const track = await openOne('audio', state.devices.mic);
      state.mine.mic = track;
      watchEnded(track, 'microphone');
      await state.session?.publish(track, 'microphone', new MediaStream([track]));
      startMeter(track);
    } catch (err) {
      state.micMuted = true;
      updateControls();
      toast(t(errorKeys({ audio: err.kind || 'other' })[0], { device: t('microphone'), why: err.message }), 8000);
      return;
    }
  }
  await state.session?.setMuted('microphone', state.micMuted);
}

// Camera off stops the camera (its light goes out); on opens it again and sends it in place.
async function toggleCam() {
  const session = state.session;
  if (!session || state.camBusy) return;
  state.camBusy = true;
  try {
    if (!state.camMuted) {
      state.camMuted = true;
      updateControls();
      await session.setMuted('camera', true);
      await session.replaceTrack('camera', null);
      stopCamera();
      addSelfTile();
    } else {
      await startCamera();
    }
  } finally {
    state.camBusy = false;
    updateControls();
  }
}

function stopCamera() {
  stopBlur();
  state.raw.cam?.stop();
  state.mine.cam?.stop();
  state.raw.cam = null;
}

async function startCamera(deviceId = state.devices.camera) {
  const session = state.session;
  let raw;
  try {
    raw = await openOne('video', deviceId);
  } catch (err) {
    toast(t(errorKeys({ video: err.kind || 'other' })[0], { device: t('camera'), why: err.message }), 8000);
    return false;
  }
  const old = [state.raw.cam, state.mine.cam];
  stopBlur();
  let send = raw;
  state.raw.cam = null;
  if (state.blurWanted) {
    try { send = (await startBlur(raw)).output; state.raw.cam = raw; } catch { send = raw; }
  }
  state.mine.cam = send;
  watchEnded(raw, 'camera');
  state.camMuted = false;
  if (!(await session.replaceTrack('camera', send))) {
    await session.publish(send, 'camera', new MediaStream([send]));
  }
  await session.setMuted('camera', false);
  for (const track of old) if (track && track !== raw && track !== send) track.stop();
  addSelfTile();
  return true;
}

async function toggleShare() {
  const session = state.session;
  if (!session) return;
  if (state.mine.screen) {
    const track = state.mine.screen;
    state.mine.screen = null;
    track.stop();
    updateControls();
    await session.unpublish('screen_share');
    return;
  }
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  const track = stream.getVideoTracks()[0];
  state.mine.screen = track;
  // the browser's own "stop sharing" ends the track
  track.addEventListener('ended', () => { if (state.mine.screen === track) toggleShare(); });
  updateControls();
  await session.publish(track, 'screen_share', stream);
}

function toggleLayout() {
  state.view = state.view === 'speaker' ? 'grid' : 'speaker';
  localStorage.setItem('visio-view', state.view);
  updateControls();
  layout();
}

// ---------------------------------------------------------------- blur ----------------------
async function startBlur(track) {
  stopBlur();
  try {
    state.blur = await BlurProcessor.create(track);
    return state.blur;
  } catch (err) {
    state.blur = null;
    state.blurWanted = false;
    toast(t('blurFailed', { why: err.message }), 8000);
    throw err;
  } finally {
    updateBlurSwitches();
  }
}

function stopBlur() {
  state.blur?.stop();
  state.blur = null;
}

function updateBlurSwitches() {
  $('lobby-blur').setAttribute('aria-checked', String(state.blurWanted));
  $('blur-button').setAttribute('aria-checked', String(state.blurWanted));
}

async function toggleBlur() {
  state.blurWanted = !state.blurWanted;
  updateBlurSwitches();
  if (!state.session) {
    // lobby: the preview shows what will be sent
    const camera = state.preview?.getVideoTracks()[0];
    if (state.blurWanted && camera) await startBlur(camera).catch(() => {});
    else stopBlur();
    showPreview();
    return;
  }
  if (state.camMuted || !state.mine.cam) return; // applied when the camera comes on
  const raw = state.raw.cam || state.mine.cam;
  if (state.blurWanted) {
    try {
      const processor = await startBlur(raw);
      state.raw.cam = raw;
      state.mine.cam = processor.output;
    } catch { return; }
  } else {
    stopBlur();
    state.mine.cam = raw;
    state.raw.cam = null;
  }
  await state.session.replaceTrack('camera', state.mine.cam);
  addSelfTile();
}

// ---------------------------------------------------------------- devices -------------------
function watchEnded(track, source) {
  track?.addEventListener('ended', () => onDeviceLost(track, source));
}

// A device unplugged: a microphone falls back to the default one; a camera goes off.
async function onDeviceLost(track, source) {
  if (!state.session) return;
  if (source === 'microphone' && track === state.mine.mic) {
    try {
      const next = await openOne('audio', '');
      state.mine.mic = next;
      watchEnded(next, 'microphone');
      await state.session.replaceTrack('microphone', next);
      startMeter(next);
      toast(t('micLost', { name: next.label || t('defaultDevice') }), 6000);
    } catch { toast(t('errNotFoundMic'), 8000); }
  } else if (source === 'camera' && (track === state.raw.cam || track === state.mine.cam) && !state.camMuted) {
    toast(t('cameraLost'), 6000);
    state.camMuted = true;
    await state.session.setMuted('camera', true);
    await state.session.replaceTrack('camera', null);
    stopCamera();
    addSelfTile();
    updateControls();
  }
}

async function switchDevice(kind, deviceId) {
  if (kind === 'speaker') {
    state.devices.speaker = deviceId;
    localStorage.setItem('visio-speaker', deviceId);
    for (const audio of document.querySelectorAll('audio')) await audio.setSinkId?.(deviceId).catch(() => {});
    return;
  }
  state.devices[kind] = deviceId;
  localStorage.setItem(`visio-${kind}`, deviceId);
  if (!state.session) { startPreview(); return; }
  $('settings-error').textContent = '';
  if (kind === 'camera') {
    if (!state.camMuted) await startCamera(deviceId);
  } else {
    try {
      const next = await openOne('audio', deviceId);
      const old = state.mine.mic;
      state.mine.mic = next;
      watchEnded(next, 'microphone');
      if (!(await state.session.replaceTrack('microphone', next))) {
        await state.session.publish(next, 'microphone', new MediaStream([next]));
      }
      old?.stop();
      startMeter(next);
    } catch (err) {
      $('settings-error').textContent = t(errorKeys({ audio: err.kind || 'other' })[0], { device: t('microphone'), why: err.message });
    }
  }
}

// ---------------------------------------------------------------- leaving -------------------
function ended(text) {
  state.session?.leave();
  state.session = null;
  state.outbox?.close();
  state.meter?.close?.();
  stopCamera();
  state.mine.mic?.stop();
  state.mine.screen?.stop();
  for (const sid of [...state.participants.keys()]) removeParticipant(sid, { quiet: true });
  $('room').hidden = true;
  $('ended').hidden = false;
  $('ended-text').textContent = text || t('left');
  document.title = t('title');
  $('rejoin-button').focus();
}

// ---------------------------------------------------------------- stats ---------------------
function setQuality(node, level, reason, who = null, value = 0) {
  node.dataset.quality = level;
  node.dataset.reason = reason;
  const words = `${t('quality')}: ${t(level)} (${t(`reason${reason}`, { value })})`;
  node.setAttribute('aria-label', who ? `${who}: ${words}` : words);
  node.title = node.getAttribute('aria-label');
}

async function pollStats() {
  const session = state.session;
  if (!session?.subscriber || session.state !== 'connected') return;
  // the loudest received audio, while the server names no active speaker
  let best = null;
  let bestLevel = 0.02;
  const byParticipant = new Map();
  for (const tr of session.subscriber.getTransceivers()) {
    const info = tr.mid != null ? session.remote.get(tr.mid) : null;
    if (!info) continue;
    if (!byParticipant.has(info.participant)) byParticipant.set(info.participant, []);
    byParticipant.get(info.participant).push({ tr, info });
    if (info.kind !== 'audio') continue;
    const level = tr.receiver.getSynchronizationSources?.()[0]?.audioLevel || 0;
    if (level > bestLevel) { bestLevel = level; best = info.participant; }
  }
  if (!state.serverSpeaker) setSpeaker(best);
  if (state.micLevel > 0.1 && !state.micMuted && !state.serverSpeaker) setSpeaker('self');
  // our own connection: what we send and our round trip
  const now = performance.now();
  const mine = snapshot(await session.publisher.getStats(), now);
  const down = snapshot(await session.subscriber.getStats(), now);
  // the socket dropped meanwhile: 'offline' is shown, even if the media connections (kept
  // for the resume) still answer getStats
  if (session.state !== 'connected') return;
  const rtt = Math.max(mine.rtt, down.rtt);
  const own = assess(state.lastStats, mine, { rtt });
  state.lastStats = mine;
  const ownLevel = own.level === 'unknown' && state.lastStatsSeen ? state.quality : own.level;
  state.lastStatsSeen = true;
  state.quality = ownLevel;
  setQuality($('quality'), ownLevel, own.reason, null, own.value);
  const self = state.participants.get('self');
  if (self) setQuality(self.net, ownLevel, own.reason, nameOf(self), own.value);
  // each participant: what reaches us from them
  for (const [sid, items] of byParticipant) {
    const p = state.participants.get(sid);
    if (!p) continue;
    const reports = await Promise.all(items.map(({ tr }) => tr.receiver.getStats()));
    if (session.state !== 'connected') return; // (as above)
    const merged = { forEach: (fn) => reports.forEach((r) => r.forEach(fn)) };
    const snap = snapshot(merged, now);
    const expectMedia = items.some(({ info }) => {
      const published = p.tracks.get(info.track);
      if (published?.muted) return false;
      if (info.kind === 'audio') return true;
      const video = info.source === 'screen_share' ? p.screen : p.tile;
      return video && !video.hidden;
    });
    const q = assess(p.stats, snap, { rtt: down.rtt, expectMedia });
    p.stats = snap;
    if (q.level !== 'unknown') setQuality(p.net, q.level, q.reason, nameOf(p), q.value);
    p.quality = q;
  }
}

// ---------------------------------------------------------------- keyboard ------------------
const SHORTCUTS = {
  m: () => toggleMic(), v: () => toggleCam(), s: () => canShareScreen() && toggleShare().catch((e) => setStatus(e.message)),
  c: () => openPanel('chat'), p: () => openPanel('people'), l: () => toggleLayout(), f: () => toggleFullscreen(),
  b: () => blurSupported() && toggleBlur(), '?': () => openDialog('shortcuts-dialog'),
  h: () => meeting?.toggleHand(),
};

function onKey(ev) {
  if (ev.key === 'Escape') {
    if (!$('more-menu').hidden) { toggleMenu(false); $('more-button').focus(); return; }
    if (state.panel && !document.querySelector('dialog[open]')) { openPanel(null); return; }
    return;
  }
  if (!state.session || ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
  if (document.querySelector('dialog[open]')) return;
  const target = ev.target;
  if (target.closest?.('input, textarea, select, [contenteditable="true"]')) return;
  const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  // single characters, so they can be turned off (WCAG 2.1.4): Settings, or the ? dialog
  if (!state.singleKeys || !SHORTCUTS[key]) return;
  ev.preventDefault();
  SHORTCUTS[key]();
}

function setSingleKeys(on) {
  state.singleKeys = on;
  localStorage.setItem('visio-single-keys', on ? 'on' : 'off');
  $('single-keys').checked = on;
  $('single-keys-2').checked = on;
}

// ---------------------------------------------------------------- start ---------------------
// an owned room lets one in now, after the waiting room, or not (identity.js); others: join
let entering = false;
function enter(room, name) {
  if (entering) return;
  entering = true;
  admission(room, name).then((admitted) => { if (admitted) join(room, name, admitted); })
    .catch((err) => { $('lobby-error').textContent = err.message; })
    .finally(() => { entering = false; });
}

function main() {
  translate();
  state.view = localStorage.getItem('visio-view') === 'speaker' ? 'speaker' : 'grid';
  $('room-input').value = pathRoom || params.get('room') || '';
  $('name-input').value = params.get('name') || localStorage.getItem('visio-name') || '';
  if (pathRoom) document.title = `${pathRoom} – ${t('title')}`;
  showInvite();
  setSingleKeys(state.singleKeys);
  for (const node of document.querySelectorAll('.speaker-choice')) node.hidden = !canChooseSpeaker();
  $('speaker-note').hidden = canChooseSpeaker();
  $('lobby-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = $('room-input').value.trim();
    const name = $('name-input').value.trim();
    if (room && name) enter(room, name);
  });
  $('room-input').addEventListener('input', showInvite);
  $('name-input').addEventListener('input', showPreview);
  $('new-meeting').addEventListener('click', newMeeting);
  $('copy-link').addEventListener('click', (ev) => copyInvite(ev.currentTarget));
  $('retry-media').addEventListener('click', () => {
    setLobbySwitch($('lobby-cam'), true, 'video', 'video-off');
    startPreview();
  });
  $('lobby-cam').addEventListener('click', lobbyToggleCam);
  $('lobby-mic').addEventListener('click', lobbyToggleMic);
  $('lobby-blur').addEventListener('click', toggleBlur);
  $('camera-select').addEventListener('change', (ev) => switchDevice('camera', ev.target.value));
  $('mic-select').addEventListener('change', (ev) => switchDevice('mic', ev.target.value));
  $('speaker-select').addEventListener('change', (ev) => switchDevice('speaker', ev.target.value));
  $('room-camera').addEventListener('change', (ev) => switchDevice('camera', ev.target.value));
  $('room-mic').addEventListener('change', (ev) => switchDevice('mic', ev.target.value));
  $('room-speaker').addEventListener('change', (ev) => switchDevice('speaker', ev.target.value));
  $('mic-button').addEventListener('click', toggleMic);
  $('cam-button').addEventListener('click', toggleCam);
  $('share-button').addEventListener('click', () => toggleShare().catch((e) => setStatus(e.message)));
  $('banner-stop').addEventListener('click', () => toggleShare().then(() => $('share-button').focus()));
  $('layout-button').addEventListener('click', toggleLayout);
  $('leave-button').addEventListener('click', () => ended());
  // back into the same meeting (not the lobby): the page loads again, a clean client, and
  // joins at once with the microphone and camera as they were
  $('rejoin-button').addEventListener('click', () => {
    sessionStorage.setItem('visio-rejoin', JSON.stringify({
      room: state.room, mic: !state.micMuted, cam: !state.camMuted,
    }));
    location.reload();
  });
  $('chat-button').addEventListener('click', () => openPanel('chat'));
  $('people-button').addEventListener('click', () => openPanel('people'));
  $('panel-close').addEventListener('click', () => openPanel(null));
  $('overflow').addEventListener('click', () => openPanel('people'));
  $('sheet-backdrop').addEventListener('click', () => openPanel(null));
  $('more-button').addEventListener('click', () => toggleMenu());
  $('settings-button').addEventListener('click', () => openDialog('settings-dialog'));
  $('shortcuts-button').addEventListener('click', () => openDialog('shortcuts-dialog'));
  $('fullscreen-button').addEventListener('click', toggleFullscreen);
  $('blur-button').addEventListener('click', () => { toggleMenu(false); $('more-button').focus(); toggleBlur(); });
  for (const id of ['invite-button', 'alone-copy', 'people-copy', 'menu-copy']) {
    $(id).addEventListener('click', (ev) => { toggleMenu(false); copyInvite(ev.currentTarget.id === 'menu-copy' ? $('more-button') : ev.currentTarget); });
  }
  for (const id of ['settings-dialog', 'shortcuts-dialog']) $(id).addEventListener('close', onDialogClose);
  $('single-keys').addEventListener('change', (ev) => setSingleKeys(ev.target.checked));
  $('single-keys-2').addEventListener('change', (ev) => setSingleKeys(ev.target.checked));
  document.addEventListener('fullscreenchange', () => { updateFullscreenButton(); layout(); });
  document.addEventListener('keydown', onKey);
  document.addEventListener('click', (ev) => {
    if (!$('more-menu').hidden && !ev.target.closest('#more-menu, #more-button')) toggleMenu(false);
  });
  navigator.mediaDevices?.addEventListener?.('devicechange', () => fillDeviceLists());
  new ResizeObserver(() => layout()).observe($('stage-area'));
  $('chat-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim();
    if (!text || !state.outbox) return;
    input.value = '';
    state.outbox.add(text);
  });
  setInterval(() => pollStats().catch(() => {}), 1000);
  updateControls();
  setupIdentity(); // sign-in and My meetings, when the server has them
  let rejoin = null; // "Join again" clicked on the page this one replaces (see rejoin-button)
  try { rejoin = JSON.parse(sessionStorage.getItem('visio-rejoin') || 'null'); } catch { /* none */ }
  sessionStorage.removeItem('visio-rejoin');
  if (rejoin && rejoin.room === pathRoom) {
    setLobbySwitch($('lobby-mic'), Boolean(rejoin.mic), 'mic', 'mic-off');
    setLobbySwitch($('lobby-cam'), Boolean(rejoin.cam), 'video', 'video-off');
  } else rejoin = null;
  const autojoin = params.get('autojoin') === '1' || Boolean(rejoin);
  startPreview().then(() => {
    if (autojoin && pathRoom) enter(pathRoom, $('name-input').value || identity());
  });
  if (!autojoin) (pathRoom ? $('name-input') : $('room-input')).focus();
}

main();
