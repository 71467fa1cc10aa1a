"""WHIP and WHEP from a plain browser page (no web client: only ``fetch`` and
``RTCPeerConnection``, as docs/whip.md shows a player), for Chromium and Firefox alike
(tests/browser/test_whip_browser.py, tests/browser/test_whip_firefox.py).

Each script is a function expression of one object argument (Playwright's ``page.evaluate(script,
arg)``; a Firefox page takes ``with_arg(script, arg)``). The session made is ``window.http``
(``{pc, location, token}``), a WHEP player's elements ``window.whep`` (``{video, audio}``).
Timeouts are arguments: ``gatherMs``, how long ICE gathering may take before the offer goes
(default 20 s), ``statsMs``, how long ``getStats`` may take (default 5 s: Firefox's may never
answer on a connection being torn down).
"""

from __future__ import annotations

import json

# The offer in pc.localDescription once ICE gathering is complete, POSTed to ``url`` with the
# token; the answer applied. What happened goes to window.http and back (with both SDPs).
_EXCHANGE = """async (pc, url, token, gatherMs) => {
  const log = window.pcLog = [];
  const t0 = performance.now();
  const note = (what) => log.push(`${((performance.now() - t0) / 1000).toFixed(2)} s ${what}`);
  pc.addEventListener('icegatheringstatechange', () => note(`gathering ${pc.iceGatheringState}`));
  pc.addEventListener('iceconnectionstatechange', () => note(`ice ${pc.iceConnectionState}`));
  pc.addEventListener('connectionstatechange', () => note(`connection ${pc.connectionState}`));
  await pc.setLocalDescription(await pc.createOffer());
  const gathered = await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(true);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve(true);
    });
    setTimeout(() => resolve(false), gatherMs);
  });
  const gatherSeconds = (performance.now() - t0) / 1000;
  const offer = pc.localDescription.sdp;
  const count = (sdp) => (sdp.match(/^a=candidate:/mg) || []).length;
  const out = {gathered, gatherSeconds, offer, answer: '', status: 0, location: null,
               type: null, applied: false, error: null, log,
               offer_candidates: count(offer), answer_candidates: 0};
  if (!gathered) return out;
  const r = await fetch(url, {method: 'POST', body: offer,
    headers: {'Content-Type': 'application/sdp', 'Authorization': `Bearer ${token}`}});
  Object.assign(out, {status: r.status, location: r.headers.get('Location'),
                      type: r.headers.get('Content-Type'), answer: await r.text()});
  out.answer_candidates = count(out.answer);
  if (r.status !== 201) return out;
  try {
    await pc.setRemoteDescription({type: 'answer', sdp: out.answer});
    out.applied = true;
  } catch (err) {
    out.error = `${err.name}: ${err.message}`;
  }
  window.http = {pc, location: out.location, token};
  return out;
}"""

# A WHEP player: recvonly video and audio; what it receives plays in a <video> and an <audio>.
WHEP_PLAY = (
    """async ({room, token, gatherMs = 20000}) => {
  const exchange = ("""
    + _EXCHANGE
    + """);
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.autoplay = true; video.playsInline = true; video.muted = true; video.id = 'whep-video';
  video.width = 640; video.height = 480;
  const audio = document.createElement('audio');
  audio.autoplay = true; audio.id = 'whep-audio';
  document.body.replaceChildren(video, audio);
  const tracks = [];
  window.ontracks = [];
  pc.ontrack = (e) => {
    window.ontracks.push(`${e.track.kind} mid ${e.transceiver.mid} streams ${e.streams.length}`);
    tracks.push(e.track);
    video.srcObject = new MediaStream(tracks);  // the received stream: its video plays here
    if (e.track.kind === 'audio') audio.srcObject = new MediaStream([e.track]);
  };
  window.whep = {video, audio};
  const out = await exchange(pc, `/whep/${room}`, token, gatherMs);
  out.ontracks = window.ontracks;
  return out;
}"""
)

# A WHIP encoder: the browser's (fake) camera and microphone, sendonly, previewed in a <video>.
WHIP_PUBLISH = (
    """async ({room, token, gatherMs = 20000}) => {
  const exchange = ("""
    + _EXCHANGE
    + """);
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const preview = document.createElement('video');
  preview.autoplay = true; preview.muted = true; preview.srcObject = stream;
  preview.width = 640; preview.height = 480;
  document.body.replaceChildren(preview);
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
  }
  const out = await exchange(pc, `/whip/${room}`, token, gatherMs);
  const settings = stream.getVideoTracks()[0].getSettings();
  out.camera = {width: settings.width, height: settings.height,
                tracks: stream.getTracks().map(t => `${t.kind}: ${t.label}`)};
  return out;
}"""
)

# The state of window.http's connection: in and out RTP, the selected candidate pair (from the
# transport's selectedCandidatePairId, Chromium; else the pair selected or nominated and
# succeeded, Firefox, which has no transport stats); a WHEP player's <video> and <audio>.
HTTP_STATE = """async (opts) => {
  const statsMs = (opts && opts.statsMs) || 5000;  // (Playwright passes null for no argument)
  const {pc} = window.http;
  const out = {connection: pc.connectionState, ice: pc.iceConnectionState, log: window.pcLog,
               frames: 0, video_packets: 0, audio_packets: 0, audio_bytes: 0,
               sent: {video: 0, audio: 0}, pair: null};
  if (window.whep) {
    const {video, audio} = window.whep;
    Object.assign(out, {w: video.videoWidth, h: video.videoHeight, t: video.currentTime,
      ready: video.readyState, paused: video.paused,
      video_tracks: video.srcObject ? video.srcObject.getVideoTracks().length : 0,
      audio_live: !!(audio.srcObject && audio.srcObject.getAudioTracks()
                     .some(x => x.readyState === 'live'))});
  }
  const stats = await Promise.race(
    [pc.getStats(), new Promise(r => setTimeout(() => r(new Map()), statsMs))]);
  const pairOf = (x) => {
    const local = stats.get(x.localCandidateId), remote = stats.get(x.remoteCandidateId);
    return {local: local && local.address, local_port: local && local.port,
            local_type: local && local.candidateType,
            remote: remote && remote.address, remote_port: remote && remote.port,
            remote_type: remote && remote.candidateType, protocol: local && local.protocol};
  };
  stats.forEach(x => {
    if (x.type === 'transport' && stats.has(x.selectedCandidatePairId)) {
      out.pair = pairOf(stats.get(x.selectedCandidatePairId));
    }
    if (x.type === 'candidate-pair' && (x.selected || x.nominated) && x.state === 'succeeded'
        && !out.pair) {
      out.pair = pairOf(x);
    }
    if (x.type === 'outbound-rtp') out.sent[x.kind] += x.bytesSent || 0;
    if (x.type !== 'inbound-rtp') return;
    if (x.kind === 'video') {
      out.frames += x.framesDecoded || 0; out.video_packets += x.packetsReceived || 0;
    } else {
      out.audio_packets += x.packetsReceived || 0; out.audio_bytes += x.bytesReceived || 0;
    }
  });
  return out;
}"""

# An ICE restart of window.http's session (RFC 9725 section 4.4.1): restartIce, an offer with
# new credentials (gathered whole), PATCHed as an sdpfrag with If-Match: *; the server's new
# credentials from the 200 applied as the answer's.
HTTP_ICE_RESTART = """async ({gatherMs = 20000} = {}) => {
  const {pc, location, token} = window.http;
  const before = pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1];
  pc.restartIce();
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, gatherMs);
  });
  const sdp = pc.localDescription.sdp;
  const first = sdp.split('\\r\\nm=')[1];
  const ufrag = sdp.match(/a=ice-ufrag:(\\S+)/)[1], pwd = sdp.match(/a=ice-pwd:(\\S+)/)[1];
  const mid = first.match(/a=mid:(\\S+)/)[1];
  const kind = first.split(' ')[0];
  const candidates = first.match(/^a=candidate:.*$/mg) || [];
  const frag = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, `m=${kind} 9 UDP/TLS/RTP/SAVPF 0`,
                `a=mid:${mid}`, ...candidates, ''].join('\\r\\n');
  const r = await fetch(location, {method: 'PATCH', body: frag, headers: {
    'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*',
    'Authorization': `Bearer ${token}`}});
  const out = {status: r.status, etag: r.headers.get('ETag'), body: await r.text(),
               before, after: ufrag, candidates: candidates.length, applied: false, error: null};
  if (r.status !== 200) return out;
  const theirs = out.body.match(/a=ice-ufrag:(\\S+)/)[1];
  const theirPwd = out.body.match(/a=ice-pwd:(\\S+)/)[1];
  const answer = pc.remoteDescription.sdp
    .replace(/a=ice-ufrag:\\S+/g, `a=ice-ufrag:${theirs}`)
    .replace(/a=ice-pwd:\\S+/g, `a=ice-pwd:${theirPwd}`);
  try {
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    out.applied = true;
  } catch (err) {
    out.error = `${err.name}: ${err.message}`;
  }
  return out;
}"""

# DELETE the session twice: 200, then 404.
HTTP_DELETE = """async () => {
  const {location, token} = window.http;
  const del = async () => (await fetch(location, {method: 'DELETE',
    headers: {'Authorization': `Bearer ${token}`}})).status;
  const first = await del();
  const second = await del();
  return {first, second, location};
}"""


def with_arg(script: str, arg: object) -> str:
    """``script`` called with ``arg``, as a function of no argument (a Firefox page's
    ``evaluate`` takes none)."""
    return f"() => ({script})({json.dumps(arg)})"
