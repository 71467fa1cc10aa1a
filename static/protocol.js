// Signaling and peer connections for visio-sfu (docs/protocol.md). No DOM here.
//
// Session: one WebSocket, a publisher RTCPeerConnection (we offer) and a subscriber
// RTCPeerConnection (the server offers). Emits events; reconnects after network failures.

// Camera simulcast: three layers, lowest first (the SFU picks one per subscriber).
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];

// Camera as VP9 with scalable video coding instead (videoCodec 'vp9'): one stream, three
// spatial and three temporal layers (L3T3_KEY); the SFU drops what a subscriber does not need.
export const VP9_SVC = [{ scalabilityMode: 'L3T3_KEY', maxBitrate: 1700000 }];

// Codec preferences with one codec first (by MIME type), the others after it: a server that
// cannot take it answers with the next one (VP8).
export function preferCodec(kind, mime) {
  const codecs = globalThis.RTCRtpSender?.getCapabilities?.(kind)?.codecs || [];
  const first = codecs.filter((c) => c.mimeType.toLowerCase() === mime.toLowerCase()
    && (!/vp9/i.test(mime) || !c.sdpFmtpLine || /profile-id=0/.test(c.sdpFmtpLine)));
  return first.length ? [...first, ...codecs.filter((c) => !first.includes(c))] : null;
}

export class Emitter {
  constructor() { this.handlers = new Map(); }
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }
  emit(type, detail) {
    for (const fn of this.handlers.get(type) || []) {
      try { fn(detail); } catch (err) { console.error(err); }
    }
  }
}

export class SignalClient extends Emitter {
  constructor(url) {
    super();
    this.url = url;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('signaling connection failed'));
      ws.onclose = (ev) => {
        for (const { reject: rej } of this.pending.values()) rej(new Error('connection closed'));
        this.pending.clear();
        this.emit('close', ev);
      };
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        const waiter = msg.id !== undefined && msg.type !== 'offer' ? this.pending.get(msg.id) : null;
        if (waiter) {
          this.pending.delete(msg.id);
          if (msg.type === 'error') waiter.reject(Object.assign(new Error(msg.message), { code: msg.code }));
          else waiter.resolve(msg);
          return;
        }
        this.emit('message', msg);
        this.emit(msg.type, msg);
      };
    });
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  request(msg, timeout = 15000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${msg.type}`));
      }, timeout);
      this.pending.set(id, {
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.send({ ...msg, id });
    });
  }

  close() {
    if (this.ws) { this.ws.onclose = null; this.ws.close(); }
    this.ws = null;
    // what waited for an answer will get none: said now, not at its timeout
    for (const { reject } of this.pending.values()) reject(new Error('connection closed'));
    this.pending.clear();
  }
}

// One participant's connection to a room. Events:
//   joined {room, participant, participants}   state 'connecting'|'connected'|'reconnecting'|'closed'
//   participant_joined / participant_left / track_muted / track_published / track_unpublished
//   data {from, topic, payload, ts}
//   track {track, stream, info: {track, participant, kind, source}}   track_removed {info}
//   host_muted {source, muted} / host_stopped {source, track}: a host muted or stopped ours
//   refused {code, message}: the room would not take us (room_locked); no reconnecting
// A reconnection resumes the same participant (the resume token of the last 'joined').
export class Session extends Emitter {
  constructor({ wsUrl, getToken, name, videoCodec = 'vp8', relayOnly = false }) {
    super();
    this.wsUrl = wsUrl;
    this.relayOnly = relayOnly; // only through the TURN relays the server names (?relay=1)
    this.iceServers = []; // the STUN and TURN servers of the last join
    this.videoCodec = videoCodec; // the camera's: 'vp8' (simulcast) or 'vp9' (SVC)
    this.getToken = getToken;
    this.name = name;
    this.local = new Map(); // source -> {track, stream, sid, transceiver}
    this.remote = new Map(); // mid -> info
    this.state = 'new';
    this.closedByUser = false;
    this.attempt = 0;
    this.publisher = null;
    this.subscriber = null;
    this.signal = null;
    this.me = null;
    this.subscriberQueue = Promise.resolve();
    this.publisherQueue = Promise.resolve();
    this.subscriberGen = 0; // bumped whenever the subscriber connection is replaced
    this.restarting = false; // waiting for the server's fresh subscriber connection
    this.iceRestarts = { publisher: 0, subscriber: 0 }; // when each last restarted ICE (ms)
    this.connectGen = 0; // bumped by each connect: an older one still running gives up
    this.iceTimers = {}; // target -> the timer of a restart waiting for a disconnection to last
    this.failures = []; // times of negotiation failures, to give up on a loop
    this.serverRestarted = 0; // when the server said it restarts (1012), until joined again
    // source -> muted, kept across reconnections: a track republished after a reconnect is
    // muted again at once, so the others never see it unmuted
    this.muted = new Map();
  }

  setState(state) {
    if (this.state !== state) { this.state = state; this.emit('state', state); }
  }

  // keep: only the socket dropped and our peer connections are up: ask the server to keep
  // them (docs/protocol.md, Resuming); if it does, nothing else is made again
  // joinedCb: called once the server answered the join (before republishing)
  async connect(keep = false, joinedCb = null) {
    const gen = ++this.connectGen; // a later connect (or a resume given up) supersedes this one
    this.setState(this.attempt || keep ? 'reconnecting' : 'connecting');
    const token = await this.getToken();
    if (gen !== this.connectGen) throw new Error('superseded');
    const signal = new SignalClient(`${this.wsUrl}?access_token=${encodeURIComponent(token)}`);
    this.signal = signal;
    signal.on('message', (msg) => { if (this.signal === signal) this.onMessage(msg); });
    // 1012 (service restart): the room's server stopped or died and the one we reach relays
    // for it (docs/cluster.md): come back at once, the room is placed again meanwhile
    signal.on('close', (ev) => {
      if (this.signal === signal) this.onSignalLost('socket closed', ev && ev.code === 1012);
    });
    await signal.open();
    let joined;
    try {
      // after an outage, the resume token takes back the same participant (same sid): the
      // others see no leave and no join (docs/protocol.md, Resuming)
      joined = await signal.request({
        type: 'join', name: this.name,
        ...(this.resumeToken ? { resume: this.resumeToken, ...(keep ? { keep: true } : {}) } : {}),
      });
    } catch (err) {
      if (err.code === 'room_locked') this.refused(err);
      throw err;
    }
    if (gen !== this.connectGen) throw new Error('superseded');
    this.resumeToken = joined.resume || null;
    joinedCb?.(joined);
    this.iceServers = joined.iceServers || [];
    this.me = joined.participant;
    if (keep && joined.kept) {
      // the same connections, tracks and subscriptions: the socket only. Its path may have
      // changed with the network: restart ICE on both (an offer sent meanwhile comes again)
      this.ping = setInterval(() => signal.send({ type: 'ping', ts: Date.now() }), 10000);
      this.attempt = 0;
      this.setState('connected');
      this.emit('resumed', joined);
      for (const target of ['publisher', 'subscriber']) {
        this.iceRestarts[target] = 0;
        this.restartIce(target, this[target]);
      }
      return joined;
    }
    if (keep) { // the server could not keep them: made again below
      this.closePeers();
      this.dropRemote();
    }
    this.publisher = this.newPeer('publisher');
    this.subscriber = this.newPeer('subscriber');
    this.subscriber.ontrack = (ev) => this.onTrack(ev);
    this.ping = setInterval(() => signal.send({ type: 'ping', ts: Date.now() }), 10000);
    this.attempt = 0;
    this.serverRestarted = 0;
    this.emit('joined', joined);
    // republish what we had before a reconnection
    const previous = [...this.local.values()];
    this.local.clear();
    for (const item of previous) await this.publish(item.track, item.source, item.stream);
    // a mute or unmute made while this was being republished
    for (const item of this.local.values()) {
      const muted = this.muted.get(item.source) || false;
      if (muted !== item.sentMuted) await this.setMutedNow(item, muted);
    }
    this.setState('connected');
    return joined;
  }

  newPeer(target) {
    const pc = new RTCPeerConnection({
      bundlePolicy: 'max-bundle',
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? 'relay' : 'all',
    });
    pc.onicecandidate = (ev) => {
      this.signal?.send({
        type: 'trickle', target,
        candidate: ev.candidate ? ev.candidate.toJSON() : null,
      });
    };
    pc.onconnectionstatechange = () => {
      this.emit('pcstate', { target, state: pc.connectionState });
      if (pc.connectionState !== 'failed') return;
      // the network changed under us: restart ICE on the same connection first (the session,
      // its tracks and subscriptions stay); reconnect only if that did not help
      if (!this.restartIce(target, pc)) this.onDisconnect(`${target} connection failed`);
    };
    pc.oniceconnectionstatechange = () => {
      clearTimeout(this.iceTimers[target]);
      if (pc.iceConnectionState !== 'disconnected') return;
      this.checkSignal(); // the network may have changed under the socket too
      // a path that stays down 3 s (not a lost burst): restart ICE before it fails (~30 s)
      this.iceTimers[target] = setTimeout(() => {
        if (pc.iceConnectionState === 'disconnected') this.restartIce(target, pc);
      }, 3000);
    };
    return pc;
  }

  // A ping the server must answer within 3 s, or the socket is taken for dead and made again
  // (keeping the peer connections): a network change leaves a TCP connection silent, not
  // closed, for minutes.
  checkSignal() {
    const signal = this.signal;
    if (!signal || this.state !== 'connected' || this.checkingSignal) return;
    this.checkingSignal = true;
    signal.request({ type: 'ping', ts: Date.now() }, 3000)
      .catch(() => {
        if (this.signal !== signal || this.closedByUser) return;
        signal.close();
        this.onSignalLost('signalling not answering');
      })
      .finally(() => { this.checkingSignal = false; });
  }

  // ICE restart (docs/protocol.md, ice_restart): new credentials and candidates on the same
  // connection; the publisher's by our own offer, the subscriber's by asking the server for
  // one. False if it cannot help: no signalling, or one tried in the last 15 s already.
  restartIce(target, pc) {
    if (this.closedByUser || !this.signal || this.state !== 'connected') return false;
    if (pc !== this[target] || pc.signalingState === 'closed') return false;
    // a connection never negotiated (nothing published, nothing to receive) has no path
    if (!pc.localDescription || !pc.remoteDescription) return false;
    const now = Date.now();
    if (now - this.iceRestarts[target] < 15000) return false;
    this.iceRestarts[target] = now;
    console.warn(`visio: restarting ICE (${target})`);
    this.emit('ice_restart', { target });
    const signal = this.signal;
    // no answer (a silent or closed socket): the socket is made again, keeping the
    // connections; a refusal: the restart did not happen, the connection is as it was
    const failed = (err) => {
      if (this.signal !== signal || this.closedByUser) return;
      if (err.code) { console.warn(`visio: ICE restart (${target}) refused:`, err.message); return; }
      signal.close();
      this.onSignalLost(`ICE restart unanswered: ${err.message}`);
    };
    if (target === 'publisher') {
      pc.restartIce();
      this.negotiatePublisher().catch(failed);
    } else {
      signal.request({ type: 'ice_restart', target }).catch(failed);
    }
    return true;
  }

  onMessage(msg) {
    if (msg.type === 'offer' && msg.target === 'subscriber') {
      if (this.restarting) return; // made for the connection being replaced
      const gen = this.subscriberGen;
      this.subscriberQueue = this.subscriberQueue
        .then(() => (gen === this.subscriberGen ? this.answerSubscriber(msg, gen) : null))
        .catch((err) => this.subscriberFailed(msg, err, gen));
      return;
    }
    if (msg.type === 'layers') {
      this.setActiveLayers(msg.track, msg.active).catch((err) => console.warn('layers', err));
      return;
    }
    if ((msg.type === 'track_muted' || msg.type === 'track_unpublished') && msg.participant === this.me?.sid) {
      this.onHostAction(msg);
      return;
    }
    if (msg.type === 'leave') {
      if (['replaced', 'removed', 'room_deleted'].includes(msg.reason)) this.closedByUser = true;
      this.emit('leave', msg);
      return;
    }
    this.emit(msg.type, msg);
  }

  async answerSubscriber(msg, gen) {
    const pc = this.subscriber;
    const active = new Set();
    const live = new Set();
    for (const info of msg.tracks || []) {
      if (info.mid == null) continue;
      this.remote.set(info.mid, info);
      active.add(info.mid);
      live.add(info.track);
    }
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (gen !== this.subscriberGen) return; // that connection was replaced meanwhile
    this.signal.send({ type: 'answer', target: 'subscriber', id: msg.id, sdp: answer.sdp });
    for (const [mid, info] of [...this.remote]) {
      if (active.has(mid)) continue;
      this.remote.delete(mid);
      // a track that moved to another m-section is still shown: only a gone track is removed
      if (!live.has(info.track)) this.emit('track_removed', { info });
    }
  }

  // The browser rejected a subscriber offer. Never stay silently broken: report it; the server
  // answers with a fresh subscriber connection (docs/protocol.md, negotiation_failed), ours is
  // replaced, and media comes back by itself. Offers that arrive before the server's answer are
  // for the old connection and are dropped; every offer after it is for the new one.
  async subscriberFailed(msg, err, gen) {
    console.error('visio: subscriber negotiation failed', err);
    if (this.closedByUser || !this.signal || this.restarting) return;
    if (gen !== this.subscriberGen) return; // a connection already replaced: nothing to do
    this.subscriberGen += 1;
    this.restarting = true;
    if (this.failingTooOften()) {
      this.restarting = false;
      this.giveUp('subscriber negotiation keeps failing');
      return;
    }
    try {
      await this.signal.request({
        type: 'negotiation_failed', target: 'subscriber', offer: msg.id,
        message: String(err?.message || err).slice(0, 500),
      });
    } catch (e) {
      this.restarting = false;
      this.onDisconnect(`subscriber recovery failed: ${e.message}`);
      return;
    }
    // this runs before the next message is handled: the server's next offer finds the new pc
    this.replaceSubscriber();
    this.restarting = false;
    this.emit('recovered', { target: 'subscriber' });
  }

  replaceSubscriber() {
    this.subscriber?.close();
    this.dropRemote();
    this.subscriber = this.newPeer('subscriber');
    this.subscriber.ontrack = (ev) => this.onTrack(ev);
  }

  // The browser rejected the server's publisher answer: report it, then reconnect (which
  // republishes every track on a new connection).
  publisherFailed(err) {
    console.error('visio: publisher negotiation failed', err);
    this.signal?.send({
      type: 'negotiation_failed', target: 'publisher',
      message: String(err?.message || err).slice(0, 500),
    });
    if (this.failingTooOften()) { this.giveUp('publisher negotiation keeps failing'); return; }
    this.onDisconnect('publisher negotiation failed');
  }

  // More than 3 negotiation failures in a minute: recovering does not help.
  failingTooOften() {
    const now = Date.now();
    this.failures = this.failures.filter((t) => now - t < 60000);
    this.failures.push(now);
    return this.failures.length > 3;
  }

  // Stop trying, say so (state 'failed', event 'failed'), instead of a reconnection loop that
  // others would see as the participant leaving and joining again and again.
  giveUp(reason) {
    console.error('visio: giving up:', reason);
    this.closedByUser = true;
    this.signal?.send({ type: 'leave' });
    this.teardown();
    this.dropRemote();
    this.setState('failed');
    this.emit('failed', { reason });
  }

  // The room would not take us (locked): say so, and do not try again.
  refused(err) {
    this.closedByUser = true;
    this.teardown();
    this.setState('closed');
    this.emit('refused', { code: err.code, message: err.message });
  }

  // A host (or an administrator) muted or stopped one of our tracks.
  onHostAction(msg) {
    const item = [...this.local.values()].find((x) => x.sid === msg.track);
    if (!item) return;
    if (msg.type === 'track_muted') {
      this.muted.set(item.source, msg.muted);
      item.track.enabled = !msg.muted;
      item.sentMuted = msg.muted;
      this.emit('host_muted', { source: item.source, muted: msg.muted });
      return;
    }
    // stopped: stop sending it too, or the next offer would publish it again
    this.local.delete(item.source);
    try {
      item.transceiver.sender.replaceTrack(null);
      item.transceiver.direction = 'inactive';
    } catch { /* closed */ }
    this.negotiatePublisher().catch((err) => console.warn('visio: renegotiation', err));
    this.emit('host_stopped', { source: item.source, track: item.track });
  }

  onTrack(ev) {
    const mid = ev.transceiver.mid;
    const info = this.remote.get(mid);
    if (!info) return;
    const stream = new MediaStream([ev.track]);
    this.emit('track', { track: ev.track, stream, info });
  }

  async publish(track, source, stream) {
    // a muted track is published muted: the others never see it unmuted, even for a moment
    const muted = this.muted.get(source) || false;
    const reply = await this.signal.request({
      type: 'add_track', cid: track.id, kind: track.kind, source, muted,
      width: track.getSettings?.().width || 0, height: track.getSettings?.().height || 0,
    });
    const init = { direction: 'sendonly', streams: stream ? [stream] : [] };
    const svc = track.kind === 'video' && source === 'camera' && this.videoCodec === 'vp9';
    if (track.kind === 'video' && source === 'camera') init.sendEncodings = svc ? VP9_SVC : SIMULCAST;
    if (track.kind === 'video' && source === 'screen_share') {
      init.sendEncodings = [{ maxBitrate: 2500000 }];
      track.contentHint = 'detail';
    }
    track.enabled = !muted;
    const transceiver = this.publisher.addTransceiver(track, init);
    const preferred = svc ? preferCodec('video', 'video/VP9') : null;
    if (preferred) transceiver.setCodecPreferences(preferred);
    this.local.set(source, { track, stream, source, sid: reply.track.sid, transceiver });
    await this.negotiatePublisher();
    const item = this.local.get(source);
    item.sentMuted = Boolean(reply.track.muted);
    if (muted && !item.sentMuted) await this.setMutedNow(item, true); // a server without add_track's muted
    return reply.track;
  }

  // Send another track from the same source (another camera, the blurred camera, another
  // microphone), or nothing (null: the camera is off), without renegotiating.
  async replaceTrack(source, track) {
    const item = this.local.get(source);
    if (!item) return false;
    if (track) {
      track.enabled = !(this.muted.get(source) || false);
      item.track = track;
    }
    await item.transceiver.sender.replaceTrack(track);
    return true;
  }

  async unpublish(source) {
    const item = this.local.get(source);
    if (!item) return;
    this.local.delete(source);
    try { await this.signal.request({ type: 'unpublish', track: item.sid }); } catch { /* gone */ }
    try {
      item.transceiver.sender.replaceTrack(null);
      item.transceiver.direction = 'inactive';
    } catch { /* closed */ }
    await this.negotiatePublisher();
  }

  negotiatePublisher() {
    // one negotiation at a time; a failed one does not block the next (after a reconnect)
    const run = this.publisherQueue.catch(() => {}).then(async () => {
      const pc = this.publisher;
      if (!pc || pc.signalingState === 'closed') return;
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const reply = await this.signal.request({ type: 'offer', target: 'publisher', sdp: offer.sdp });
      if (pc !== this.publisher) return; // reconnected meanwhile
      try {
        await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
      } catch (err) {
        this.publisherFailed(err);
        throw err;
      }
    });
    this.publisherQueue = run;
    return run;
  }

  // Dynacast: send only the simulcast layers somebody receives.
  async setActiveLayers(trackSid, active) {
    const item = [...this.local.values()].find((x) => x.sid === trackSid);
    if (!item) return;
    const sender = item.transceiver.sender;
    const params = sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    for (const enc of params.encodings) {
      const on = active.includes(enc.rid);
      if (enc.active !== on) { enc.active = on; changed = true; }
    }
    if (changed) await sender.setParameters(params);
  }

  // Adaptive stream: tell the server how a received video is shown.
  trackSettings(trackSid, settings) {
    this.signal?.send({ type: 'track_settings', track: trackSid, ...settings });
  }

  // Remembered even while disconnected: a reconnection applies it again (see publish).
  async setMuted(source, muted) {
    this.muted.set(source, muted);
    const item = this.local.get(source);
    if (!item) return;
    item.track.enabled = !muted;
    if (this.state !== 'connected' || !this.signal) return; // applied when republished
    try {
      await this.setMutedNow(item, muted);
    } catch (err) {
      if (this.state === 'connected') throw err; // else: the reconnection applies it
    }
  }

  async setMutedNow(item, muted) {
    await this.signal.request({ type: 'mute', track: item.sid, muted });
    item.sentMuted = muted;
  }

  sendData(topic, payload) {
    return this.signal.request({ type: 'data', topic, payload });
  }

  // The socket dropped (a network change, a proxy's timeout, a server restart). If our peer
  // connections are still up, only the signalling is made again, keeping them; else (or if
  // that does not work within the server's resume grace) a full reconnection.
  onSignalLost(reason, restart = false) {
    // (said during a resume attempt too: the retries that follow it are then quick)
    if (restart && !this.serverRestarted) this.serverRestarted = Date.now();
    if (this.closedByUser || this.reconnecting) return;
    if (restart || !this.resumeToken || !this.peersUp()) {
      this.onDisconnect(reason, restart);
      return;
    }
    this.reconnecting = true;
    console.warn('visio: signalling lost, keeping the media connections:', reason);
    clearInterval(this.ping);
    this.setState('reconnecting');
    this.resumeSignalling(reason, Date.now() + 15000, 0);
  }

  async resumeSignalling(reason, deadline, attempt) {
    if (this.closedByUser) { this.reconnecting = false; return; }
    let timer;
    try {
      // within the deadline, whatever hangs (the token, a connect whose SYN was lost)
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timed out')), Math.max(deadline - Date.now(), 1000));
      });
      // the deadline is for getting an answer: once joined (a new server refused the resume:
      // fresh connections, tracks published again), cutting that short would leave a
      // participant on the server whose connections we closed, and start it all again
      await Promise.race([this.connect(true, () => clearTimeout(timer)), late]);
      this.reconnecting = false;
      return;
    } catch (err) {
      console.warn('visio: signalling not back yet:', err.message || err);
      this.connectGen += 1; // the attempt still running, if any, gives up
      this.signal?.close();
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() < deadline && this.peersUp()) {
      setTimeout(() => this.resumeSignalling(reason, deadline, attempt + 1), Math.min(500 * 2 ** attempt, 4000));
      return;
    }
    this.reconnecting = false;
    this.onDisconnect(reason);
  }

  // Both peer connections still up (neither failed nor closed): worth keeping.
  peersUp() {
    const up = (pc) => pc && !['failed', 'closed'].includes(pc.connectionState);
    return up(this.publisher) && up(this.subscriber);
  }

  closePeers() {
    for (const timer of Object.values(this.iceTimers)) clearTimeout(timer);
    this.subscriberGen += 1; // queued offers were for the connections closed here
    // a browser may never settle an operation on a connection closed under it: queues that
    // waited on one would block every later negotiation, so they start afresh
    this.subscriberQueue = Promise.resolve();
    this.publisherQueue = Promise.resolve();
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = this.subscriber = null;
  }

  // What we received is gone (its tiles with it).
  dropRemote() {
    for (const info of this.remote.values()) this.emit('track_removed', { info });
    this.remote.clear();
  }

  onDisconnect(reason, restart = false) {
    if (this.closedByUser || this.reconnecting) return;
    this.reconnecting = true;
    console.warn('visio: disconnected:', reason);
    this.teardown();
    this.dropRemote();
    this.setState('reconnecting');
    // the server said it restarts (1012): it is back within seconds, and knows nobody then:
    // tried again every second for a minute (a new participant: no resume), not backing off
    if (restart && !this.serverRestarted) this.serverRestarted = Date.now();
    const restarting = this.serverRestarted && Date.now() - this.serverRestarted < 60000;
    const delay = restarting ? (this.attempt ? 1000 : 200) : Math.min(1000 * 2 ** this.attempt, 10000);
    this.attempt += 1;
    setTimeout(async () => {
      this.reconnecting = false;
      if (this.closedByUser) return;
      try { await this.connect(); } catch (err) { this.onDisconnect(err.message); }
    }, delay);
  }

  teardown() {
    clearInterval(this.ping);
    this.restarting = false;
    this.signal?.close();
    this.closePeers();
  }

  leave() {
    this.closedByUser = true;
    this.signal?.send({ type: 'leave' });
    this.teardown();
    for (const item of this.local.values()) item.track.stop();
    this.local.clear();
    this.setState('closed');
  }
}
