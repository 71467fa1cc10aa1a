// Connection quality from RTCPeerConnection.getStats(), per participant, with its reason.
// No DOM: snapshot() reads a stats report into plain numbers, assess() compares two snapshots.
//
// A remote participant's quality is what reaches us from them (their upstream and our
// downstream together): loss, jitter and frame rate of their inbound-rtp streams, our round
// trip. Ours is what leaves us: the remote-inbound-rtp loss and round trip the server reports,
// and the encoder's limitation (bandwidth or CPU).

export const LEVELS = ['good', 'fair', 'poor', 'lost'];

// Sum the inbound (or outbound) statistics of one set of streams. `report` is an RTCStatsReport
// or anything with forEach.
export function snapshot(report, now = performance.now()) {
  const s = { ts: now, lost: 0, received: 0, bytes: 0, frames: 0, freezes: 0, jitter: 0, rtt: 0,
    sent: 0, remoteLost: 0, remoteFraction: 0, limitation: 'none', fps: 0, video: false };
  report.forEach((x) => {
    if (x.type === 'inbound-rtp') {
      s.lost += Math.max(0, x.packetsLost || 0);
      s.received += x.packetsReceived || 0;
      s.bytes += x.bytesReceived || 0;
      s.frames += x.framesDecoded || 0;
      s.freezes += x.freezeCount || 0;
      s.jitter = Math.max(s.jitter, x.jitter || 0);
      if (x.kind === 'video') { s.video = true; s.fps = Math.max(s.fps, x.framesPerSecond || 0); }
    } else if (x.type === 'outbound-rtp') {
      s.sent += x.packetsSent || 0;
      s.bytes += x.bytesSent || 0;
      if (x.qualityLimitationReason && x.qualityLimitationReason !== 'none') s.limitation = x.qualityLimitationReason;
    } else if (x.type === 'remote-inbound-rtp') {
      s.remoteLost += Math.max(0, x.packetsLost || 0);
      s.remoteFraction = Math.max(s.remoteFraction, x.fractionLost || 0);
      if (x.roundTripTime) s.rtt = Math.max(s.rtt, x.roundTripTime);
    } else if (x.type === 'candidate-pair' && x.nominated && x.currentRoundTripTime) {
      s.rtt = Math.max(s.rtt, x.currentRoundTripTime);
    }
  });
  return s;
}

// {level, reason, value}: reason is one of 'ok', 'loss' (value: %), 'delay' (ms), 'jitter' (ms),
// 'framerate' (fps), 'bandwidth', 'cpu', 'nodata'; the worst finding wins.
// expectMedia: the participant sends media we should be receiving (unmuted, subscribed).
export function assess(prev, now, { expectMedia = false, rtt = now.rtt } = {}) {
  if (!prev) return { level: 'unknown', reason: 'measuring', value: 0 };
  const found = [];
  const add = (level, reason, value) => found.push({ level, reason, value });
  const gotPackets = now.received - prev.received;
  const lostPackets = now.lost - prev.lost;
  if (expectMedia && gotPackets <= 0 && now.bytes <= prev.bytes) add('lost', 'nodata', 0);
  if (now.received || prev.received) {
    const loss = lostPackets > 0 ? lostPackets / Math.max(gotPackets + lostPackets, 1) : 0;
    if (loss >= 0.1) add('poor', 'loss', Math.round(loss * 100));
    else if (loss >= 0.02) add('fair', 'loss', Math.round(loss * 100));
    const jitter = now.jitter * 1000;
    if (jitter >= 100) add('poor', 'jitter', Math.round(jitter));
    else if (jitter >= 40) add('fair', 'jitter', Math.round(jitter));
    if (now.video && now.frames > prev.frames && now.fps > 0 && now.fps < 8) add('fair', 'framerate', Math.round(now.fps));
    if (now.freezes > prev.freezes) add('fair', 'framerate', Math.round(now.fps));
  }
  if (now.sent || now.limitation !== 'none') {
    const fraction = now.remoteFraction;
    if (fraction >= 0.1) add('poor', 'loss', Math.round(fraction * 100));
    else if (fraction >= 0.02) add('fair', 'loss', Math.round(fraction * 100));
    if (now.limitation === 'bandwidth') add('fair', 'bandwidth', 0);
    if (now.limitation === 'cpu') add('fair', 'cpu', 0);
  }
  if (rtt >= 0.5) add('poor', 'delay', Math.round(rtt * 1000));
  else if (rtt >= 0.25) add('fair', 'delay', Math.round(rtt * 1000));
  if (!found.length) return { level: 'good', reason: 'ok', value: Math.round(rtt * 1000) };
  found.sort((a, b) => LEVELS.indexOf(b.level) - LEVELS.indexOf(a.level));
  return found[0];
}
