// The visio-sfu web client: lobby, meeting room, controls, chat. Protocol lives in protocol.js.
import { Session } from './protocol.js';
import { t, translate } from './i18n.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const pathRoom = decodeURIComponent((location.pathname.match(/^\/r\/([^/]+)/) || [])[1] || '');

const state = {
  session: null,
  preview: null, // MediaStream shown in the lobby
  meter: null,
  participants: new Map(), // sid -> {info, tile, video, audio, flags, tracks}
  mine: { mic: null, cam: null, screen: null },
  micMuted: false,
  camMuted: false,
  speaker: null,
  quality: 'unknown',
  lastStats: null,
};
window.visio = state; // read-only hook for tests and debugging

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

async function acquirePreview() {
  const camera = $('camera-select').value;
  const mic = $('mic-select').value;
  try {
    state.preview = await navigator.mediaDevices.getUserMedia({
      video: camera ? { deviceId: { exact: camera }, width: 1280, height: 720 } : { width: 1280, height: 720 },
      audio: mic ? { deviceId: { exact: mic } } : true,
    });
  } catch (err) {
    try {
      state.preview = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch {
      $('lobby-error').textContent = t('noDevice');
      state.preview = new MediaStream();
      return;
    }
  }
  $('preview').srcObject = state.preview;
  startMeter(state.preview);
  await listDevices();
}

function stopPreview() {
  state.meter?.close?.();
  state.meter = null;
  for (const track of state.preview?.getTracks() || []) track.stop();
  state.preview = null;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [['videoinput', $('camera-select')], ['audioinput', $('mic-select')]]) {
    const current = select.value;
    select.replaceChildren();
    for (const d of devices.filter((x) => x.kind === kind)) {
      const option = document.createElement('option');
      option.value = d.deviceId;
      option.textContent = d.label || d.deviceId.slice(0, 8) || kind;
      select.append(option);
    }
    if (current) select.value = current;
  }
}

function startMeter(stream) {
  const track = stream.getAudioTracks()[0];
  if (!track || !window.AudioContext) return;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  const tick = () => {
    if (ctx.state === 'closed') return;
    analyser.getByteTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v - 128) / 128);
    $('mic-level').value = peak;
    requestAnimationFrame(tick);
  };
  tick();
  state.meter = ctx;
}

function identity() {
  let id = sessionStorage.getItem('visio-identity');
  if (!id) {
    id = `guest-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
    sessionStorage.setItem('visio-identity', id);
  }
  return id;
}

// ---------------------------------------------------------------- room ----------------------
async function join(room, name) {
  localStorage.setItem('visio-name', name);
  if (location.pathname !== `/r/${encodeURIComponent(room)}`) {
    history.replaceState(null, '', `/r/${encodeURIComponent(room)}${location.search}`);
  }
  state.camMuted = !$('camera-on').checked;
  state.micMuted = !$('mic-on').checked;
  $('lobby').hidden = true; // at once: a second click cannot start a second join
  $('ended').hidden = true;
  $('room').hidden = false;
  // the camera the lobby is opening, if it comes within a few seconds (a permission prompt
  // left unanswered must not hold the join forever)
  setStatus(t('connecting'));
  const ready = await Promise.race([
    (state.previewing || Promise.resolve()).then(() => true, () => true),
    new Promise((resolve) => setTimeout(() => resolve(false), 5000)),
  ]);
  if (!ready) state.previewAbandoned = true; // openPreview closes it when it comes
  const stream = state.preview && state.preview.getTracks().length ? state.preview : null;
  state.preview = null;
  state.meter?.close?.();
  $('room-title').textContent = room;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const session = new Session({
    wsUrl: `${proto}//${location.host}/rtc`,
    name,
    getToken: async () => {
      if (params.get('token')) return params.get('token');
      const q = new URLSearchParams({ room, name, identity: identity() });
      const r = await fetch(`/dev/token?${q}`);
      if (!r.ok) throw new Error('no token: open this page with ?token=');
      return (await r.json()).token;
    },
  });
  state.session = session;
  wire(session);
  try {
    await session.connect();
  } catch (err) {
    setStatus(`${t('error')}: ${err.message}`);
    session.onDisconnect(err.message);
    return;
  }
  if (stream) {
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    if (video) { state.mine.cam = video; await session.publish(video, 'camera', stream); }
    if (audio) { state.mine.mic = audio; await session.publish(audio, 'microphone', stream); }
    addSelfTile(stream);
    if (state.camMuted) await session.setMuted('camera', true);
    if (state.micMuted) await session.setMuted('microphone', true);
  }
  updateControls();
}

function wire(session) {
  session.on('state', (s) => setStatus(s === 'connected' ? '' : t(s === 'reconnecting' ? 'reconnecting' : 'connecting')));
  session.on('joined', (joined) => {
    for (const sid of [...state.participants.keys()]) if (sid !== 'self') removeParticipant(sid);
    state.participants.get('self')?.tracks.clear();
    for (const p of joined.participants) addParticipant(p);
    const self = state.participants.get('self') || addSelfTile(null); // listed even without media
    self.serverSid = joined.participant.sid; // info.sid stays 'self': isMuted and pins use it
    renderList();
  });
  session.on('participant_joined', (m) => { addParticipant(m.participant); renderList(); });
  session.on('participant_left', (m) => { removeParticipant(m.participant.sid); renderList(); });
  session.on('track_published', (m) => {
    const p = state.participants.get(m.participant);
    if (p) { p.tracks.set(m.track.sid, m.track); updateFlags(p); }
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
  session.on('data', (m) => { if (m.topic === 'chat') addChat(m.from?.name || m.from?.identity, m.payload?.text, m.ts); });
  session.on('leave', (m) => { if (m.reason === 'replaced') ended(t('replaced')); });
  session.on('failed', () => ended(t('mediaFailed')));
  session.on('active_speaker', (m) => {
    state.serverSpeaker = true;
    setSpeaker(m.participant);
  });
}

function addParticipant(info) {
  if (state.participants.has(info.sid)) return state.participants.get(info.sid);
  const tile = document.createElement('figure');
  tile.className = 'tile';
  tile.dataset.participant = info.sid;
  tile.dataset.identity = info.identity;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound comes from the audio element
  const label = document.createElement('figcaption');
  label.className = 'label';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = info.name || info.identity;
  const flags = document.createElement('span');
  flags.className = 'flags';
  label.append(name, flags);
  const audio = document.createElement('audio');
  audio.autoplay = true;
  tile.append(video, label, audio);
  $('grid').append(tile);
  const p = { info, tile, video, audio, flags, tracks: new Map(), screen: null };
  if (info.sid !== 'self') {
    tile.tabIndex = 0;
    tile.setAttribute('role', 'button');
    tile.setAttribute('aria-pressed', 'false');
    tile.addEventListener('dblclick', () => togglePin(p));
    tile.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') togglePin(p); });
  }
  for (const track of info.tracks || []) p.tracks.set(track.sid, track);
  state.participants.set(info.sid, p);
  updateFlags(p);
  return p;
}

function addSelfTile(stream) {
  const p = addParticipant({ sid: 'self', identity: 'self', name: `${state.session.name} (${t('you')})`, tracks: [] });
  p.tile.classList.add('self');
  if (stream) p.video.srcObject = new MediaStream(stream.getVideoTracks());
  updateFlags(p);
  renderList();
  return p;
}

function removeParticipant(sid) {
  const p = state.participants.get(sid);
  if (!p) return;
  p.tile.remove();
  p.screen?.remove();
  state.participants.delete(sid);
}

function attachTrack(track, stream, info) {
  const p = state.participants.get(info.participant) || addParticipant({ sid: info.participant, identity: info.participant, name: '', tracks: [] });
  if (info.source === 'screen_share') {
    p.screen?.remove();
    const tile = document.createElement('figure');
    tile.className = 'tile screen';
    tile.dataset.participant = info.participant;
    tile.dataset.track = info.track;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.srcObject = stream;
    const label = document.createElement('figcaption');
    label.className = 'label';
    label.textContent = t('screenOf', { name: p.info.name || p.info.identity });
    video.dataset.track = info.track;
    tile.append(video, label);
    $('stage').append(tile);
    p.screen = tile;
    watchVideo(video);
  } else if (track.kind === 'video') {
    p.video.srcObject = stream;
    p.video.dataset.track = info.track;
    watchVideo(p.video);
  } else {
    p.audio.srcObject = stream;
    p.audio.dataset.track = info.track;
    p.audio.play?.().catch(() => {});
  }
}

function detachTrack(info) {
  const p = state.participants.get(info.participant);
  if (!p) return;
  if (p.screen && p.screen.dataset.track === info.track) { p.screen.remove(); p.screen = null; }
  if (p.video.dataset.track === info.track) { p.video.srcObject = null; delete p.video.dataset.track; }
  if (p.audio.dataset.track === info.track) { p.audio.srcObject = null; delete p.audio.dataset.track; }
}

function isMuted(p, source) {
  if (p.info.sid === 'self') return source === 'microphone' ? state.micMuted : state.camMuted;
  const track = [...p.tracks.values()].find((x) => x.source === source);
  return track ? track.muted : false;
}

function updateFlags(p) {
  const mic = isMuted(p, 'microphone');
  const cam = isMuted(p, 'camera');
  p.tile.dataset.micMuted = String(mic);
  p.tile.dataset.camMuted = String(cam);
  const words = [];
  if (mic) words.push(t('muted'));
  if (cam) words.push(t('cameraOff'));
  p.flags.textContent = words.join(' · ');
  p.tile.setAttribute('aria-label', [p.info.name || p.info.identity, ...words].join(', '));
}

function renderList() {
  const list = $('participant-list');
  list.replaceChildren();
  for (const p of state.participants.values()) {
    const li = document.createElement('li');
    li.dataset.participant = p.info.sid;
    li.textContent = (p.info.name || p.info.identity) + (isMuted(p, 'microphone') ? ` (${t('muted')})` : '');
    list.append(li);
  }
}

function setSpeaker(sid) {
  if (sid === state.speaker) return;
  state.participants.get(state.speaker)?.tile.classList.remove('speaking');
  state.speaker = sid;
  state.participants.get(sid)?.tile.classList.add('speaking');
}

// Adaptive stream: report each received video's rendered height (0 = hidden) to the server.
const watched = new Map(); // video element -> last settings sent
const sizes = new ResizeObserver(() => reportSizes());
function watchVideo(video) { sizes.observe(video); reportSizes(); }
function reportSizes() {
  clearTimeout(state.sizeTimer);
  state.sizeTimer = setTimeout(() => {
    for (const video of document.querySelectorAll('#grid video[data-track], #stage video[data-track]')) {
      const visible = video.isConnected && video.offsetParent !== null && video.clientHeight > 0;
      const height = Math.round(video.clientHeight * (window.devicePixelRatio || 1));
      const key = `${visible}:${height}`;
      if (watched.get(video) === key) continue;
      watched.set(video, key);
      state.session?.trackSettings(video.dataset.track, { visible, height });
    }
  }, 200);
}

// Pin a participant's video to the stage (double-click or Enter on its tile).
function togglePin(p) {
  if (p.info.sid === 'self') return;
  const pinned = p.tile.parentElement === $('stage');
  (pinned ? $('grid') : $('stage')).append(p.tile);
  p.tile.classList.toggle('pinned', !pinned);
  p.tile.setAttribute('aria-pressed', String(!pinned));
  reportSizes();
}

function setStatus(text) { $('status').textContent = text; }

function addChat(who, text, ts) {
  if (typeof text !== 'string') return;
  const li = document.createElement('li');
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = who || '?';
  const time = document.createElement('time');
  const when = new Date(ts || Date.now());
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text; // always text: never markup from others
  li.append(name, time, body);
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'end' });
}

// ---------------------------------------------------------------- controls ------------------
function updateControls() {
  const mic = $('mic-button');
  mic.setAttribute('aria-pressed', String(state.micMuted));
  mic.setAttribute('aria-label', t(state.micMuted ? 'unmuteMic' : 'muteMic'));
  const cam = $('cam-button');
  cam.setAttribute('aria-pressed', String(state.camMuted));
  cam.setAttribute('aria-label', t(state.camMuted ? 'unmuteCam' : 'muteCam'));
  const share = $('share-button');
  share.setAttribute('aria-pressed', String(Boolean(state.mine.screen)));
  share.setAttribute('aria-label', t(state.mine.screen ? 'stopShare' : 'share'));
  const self = state.participants.get('self');
  if (self) {
    updateFlags(self);
    renderList();
  }
}

async function toggleMic() {
  state.micMuted = !state.micMuted;
  updateControls();
  await state.session?.setMuted('microphone', state.micMuted);
}

async function toggleCam() {
  state.camMuted = !state.camMuted;
  updateControls();
  await state.session?.setMuted('camera', state.camMuted);
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

function ended(text) {
  state.session?.leave();
  state.session = null;
  for (const sid of [...state.participants.keys()]) removeParticipant(sid);
  $('room').hidden = true;
  $('ended').hidden = false;
  $('ended-text').textContent = text || t('left');
  $('rejoin-button').focus();
}

// ---------------------------------------------------------------- stats ---------------------
async function pollStats() {
  const session = state.session;
  if (!session?.subscriber) return;
  let best = null;
  let bestLevel = 0.02;
  for (const tr of session.subscriber.getTransceivers()) {
    const info = session.remote.get(tr.mid);
    if (!info || info.kind !== 'audio') continue;
    const level = tr.receiver.getSynchronizationSources?.()[0]?.audioLevel || 0;
    if (level > bestLevel) { bestLevel = level; best = info.participant; }
  }
  if (!state.serverSpeaker) setSpeaker(best);
  let lost = 0; let received = 0; let rtt = 0;
  const report = await session.subscriber.getStats();
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') { lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime) rtt = s.currentRoundTripTime;
  });
  const prev = state.lastStats;
  state.lastStats = { lost, received };
  if (prev && received > prev.received) {
    const loss = (lost - prev.lost) / Math.max(received - prev.received + lost - prev.lost, 1);
    state.quality = loss < 0.02 && rtt < 0.3 ? 'good' : loss < 0.08 ? 'fair' : 'poor';
  }
  const q = $('quality');
  q.dataset.quality = state.quality;
  q.setAttribute('aria-label', `${t('quality')}: ${t(state.quality)}`);
  q.title = q.getAttribute('aria-label');
}

// ---------------------------------------------------------------- start ---------------------
function main() {
  translate();
  $('room-input').value = pathRoom || params.get('room') || '';
  $('name-input').value = params.get('name') || localStorage.getItem('visio-name') || '';
  $('lobby-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = $('room-input').value.trim();
    const name = $('name-input').value.trim();
    if (room && name) join(room, name);
  });
  $('camera-select').addEventListener('change', startPreview);
  $('mic-select').addEventListener('change', startPreview);
  $('mic-button').addEventListener('click', toggleMic);
  $('cam-button').addEventListener('click', toggleCam);
  $('share-button').addEventListener('click', () => toggleShare().catch((e) => setStatus(e.message)));
  $('leave-button').addEventListener('click', () => ended());
  $('rejoin-button').addEventListener('click', () => location.reload());
  $('chat-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim();
    if (!text || !state.session) return;
    input.value = '';
    addChat(`${state.session.name} (${t('you')})`, text, Date.now());
    try { await state.session.sendData('chat', { text }); } catch (err) { setStatus(err.message); }
  });
  setInterval(() => pollStats().catch(() => {}), 1000);
  const autojoin = params.get('autojoin') === '1';
  startPreview().then(() => {
    if (autojoin && pathRoom) join(pathRoom, $('name-input').value || identity());
  });
  if (!autojoin) (pathRoom ? $('name-input') : $('room-input')).focus();
}

main();
