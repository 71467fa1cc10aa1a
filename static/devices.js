// Cameras, microphones and speakers: opening them with fallbacks, and saying precisely why one
// could not be opened (and how to fix it). No DOM here apart from the media APIs.

// What went wrong with one device, from a getUserMedia error: 'denied', 'notfound', 'busy',
// 'insecure', 'unsupported' or 'other'.
export function classify(err) {
  if (!window.isSecureContext) return 'insecure';
  switch (err?.name) {
    case 'NotAllowedError': case 'PermissionDeniedError': case 'SecurityError': return 'denied';
    case 'NotFoundError': case 'DevicesNotFoundError': case 'OverconstrainedError': return 'notfound';
    case 'NotReadableError': case 'TrackStartError': case 'AbortError': return 'busy';
    case 'TypeError': return 'unsupported';
    default: return 'other';
  }
}

export const CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

function constraints(kind, deviceId) {
  if (kind === 'video') return deviceId ? { ...CAMERA, deviceId: { exact: deviceId } } : CAMERA;
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  return deviceId ? { ...audio, deviceId: { exact: deviceId } } : audio;
}

// One device kind ('video' or 'audio'); a device that went away falls back to the default one,
// and a busy one ('Could not start video source', 'Timeout starting video source': another
// application letting go of it, a slow driver) is tried once more after a moment.
export async function openOne(kind, deviceId, retried = false) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw Object.assign(new Error('no mediaDevices'), { kind: window.isSecureContext ? 'unsupported' : 'insecure' });
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints(kind, deviceId) });
    return stream.getTracks()[0];
  } catch (err) {
    if (deviceId && (err.name === 'OverconstrainedError' || err.name === 'NotFoundError')) return openOne(kind, '', retried);
    err.kind = classify(err); // (not 'code': DOMException has a read-only one)
    console.warn(`visio: ${kind} device: ${err.name}: ${err.message}${retried ? '' : err.kind === 'busy' ? ' (trying again)' : ''}`);
    if (err.kind === 'busy' && !retried) {
      await new Promise((resolve) => setTimeout(resolve, 700));
      return openOne(kind, deviceId, true);
    }
    throw err;
  }
}

// Camera and microphone as wanted. Asking for both at once shows a single permission prompt;
// when that fails, each is tried alone, so refusing the camera keeps the microphone (and the
// other way round). Returns {video, audio, errors: {video, audio}} (tracks or null, codes).
export async function openMedia({ video = true, audio = true, camera = '', mic = '' } = {}) {
  const out = { video: null, audio: null, errors: { video: null, audio: null } };
  if (!video && !audio) return out;
  if (!navigator.mediaDevices?.getUserMedia) {
    const code = window.isSecureContext ? 'unsupported' : 'insecure';
    if (video) out.errors.video = code;
    if (audio) out.errors.audio = code;
    return out;
  }
  if (video && audio) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        video: constraints('video', camera), audio: constraints('audio', mic),
      });
      out.video = stream.getVideoTracks()[0] || null;
      out.audio = stream.getAudioTracks()[0] || null;
      return out;
    } catch (err) { // try each alone: one of the two may still work
      console.warn(`visio: camera and microphone together: ${err.name}: ${err.message}`);
    }
  }
  for (const kind of ['audio', 'video']) {
    if (!(kind === 'video' ? video : audio)) continue;
    try {
      out[kind] = await openOne(kind, kind === 'video' ? camera : mic);
    } catch (err) {
      out.errors[kind] = err.kind || classify(err);
      out.errors[`${kind}Message`] = err.message;
    }
  }
  return out;
}

// The i18n key of the message for what failed: both devices denied read as one sentence.
export function errorKeys(errors) {
  const keys = [];
  const { video, audio } = errors;
  if (video === 'insecure' || audio === 'insecure') return ['errInsecure'];
  if (video === 'unsupported' || audio === 'unsupported') return ['errUnsupported'];
  if (video === 'denied' && audio === 'denied') return ['errDeniedBoth'];
  const names = { denied: 'errDenied', notfound: 'errNotFound', busy: 'errBusy' };
  if (video) keys.push(names[video] ? `${names[video]}Camera` : 'errOther');
  if (audio) keys.push(names[audio] ? `${names[audio]}Mic` : 'errOther');
  return keys;
}

export async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  try { return await navigator.mediaDevices.enumerateDevices(); } catch { return []; }
}

export const canChooseSpeaker = () => typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
export const canShareScreen = () => Boolean(navigator.mediaDevices?.getDisplayMedia);
