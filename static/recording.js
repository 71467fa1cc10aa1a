// Recording (docs/notes.md, docs/protocol.md: recording_state, start_recording,
// stop_recording, recording_started, recording_stopped): a "Recording" indicator everyone
// sees while the room is recorded, a notice when it starts ("Recording started by Alice") and
// stops, and a Record / Stop recording button for those whose token grants roomRecord.
//
// setupRecording(session, { toast }) wires it to a Session (protocol.js); the elements are made
// here: the indicator in the top bar, the button among the controls (before "More").
import { t } from './i18n.js';

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// who started or stopped it, for a notice ('' for an administrator)
export function byName(by) {
  return by ? (by.name || by.identity || '') : '';
}

// the notice for a recording_started / recording_stopped message
export function notice(m, tr = t) {
  if (m.type === 'recording_started') {
    if (m.ongoing) return tr('recordingOngoing');
    const name = byName(m.recording?.by);
    return name ? tr('recordingStartedBy', { name }) : tr('recordingStartedAdmin');
  }
  if (m.reason === 'error') return tr('recordingFailed', { why: m.message || '' });
  const name = byName(m.by);
  if (m.reason === 'stopped') return name ? tr('recordingStoppedBy', { name }) : tr('recordingStopped');
  return tr('recordingStopped');
}

export class Recording {
  constructor(session, { toast } = {}) {
    this.session = session;
    this.toast = toast || (() => {});
    this.recording = null; // {id, started_at, by} while the room is recorded
    this.stopped = new Set(); // ids of recordings told stopped
    this.canRecord = false;
    this.busy = false;
    this.build();
    session.on('joined', () => this.refresh());
    session.on('resumed', () => this.refresh()); // what changed while the socket was down
    session.on('recording_started', (m) => this.onStarted(m));
    session.on('recording_stopped', (m) => this.onStopped(m));
    session.on('moved', () => { this.recording = null; this.render(); this.refresh(); });
  }

  build() {
    // the indicator everyone sees while the room is recorded
    this.indicator = el('span', { id: 'recording-indicator', class: 'live-note recording', role: 'status', hidden: '' });
    this.indicator.append(el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', {}, t('recording')));
    const bar = document.querySelector('#room .bar');
    bar?.insertBefore(this.indicator, bar.querySelector('.spacer'));
    // Record / Stop recording, for the roomRecord grant
    this.button = el('button', { id: 'record-button', type: 'button', class: 'control', 'data-pressed': 'false', hidden: '' });
    this.button.append(el('span', { class: 'icon i-record', 'aria-hidden': 'true' }), el('span', { class: 'text' }, t('record')));
    const more = document.getElementById('more-button');
    more?.parentElement?.insertBefore(this.button, more);
    this.button.addEventListener('click', () => this.startStop());
    this.render();
  }

  async refresh() {
    try {
      const state = await this.session.signal.request({ type: 'recording_state' });
      this.recording = state.recording;
      this.canRecord = Boolean(state.can_record);
    } catch {
      this.canRecord = false; // a server without recording
    }
    this.render();
  }

  render() {
    const on = Boolean(this.recording);
    this.indicator.hidden = !on;
    this.button.hidden = !this.canRecord;
    this.button.dataset.pressed = String(on);
    this.button.disabled = this.busy;
    this.button.querySelector('.icon').className = `icon ${on ? 'i-record-stop' : 'i-record'}`;
    this.button.querySelector('.text').textContent = t(on ? 'stopRecording' : 'record');
  }

  onStarted(m) {
    this.recording = m.recording;
    this.toast(notice(m), 6000);
    this.render();
  }

  onStopped(m) {
    if (m.recording) this.stopped.add(m.recording);
    if (this.recording && m.recording && this.recording.id !== m.recording) return; // an old one
    this.recording = null;
    this.toast(notice(m), m.reason === 'error' ? 10000 : 5000);
    this.render();
  }

  async startStop() {
    if (this.busy) return;
    this.busy = true;
    this.render();
    const type = this.recording ? 'stop_recording' : 'start_recording';
    try {
      const state = await this.session.signal.request({ type });
      // a recording that a write error stopped at once was told stopped before this answer
      const gone = state.recording && this.stopped.has(state.recording.id);
      this.recording = gone ? null : state.recording;
    } catch (err) {
      // recording_failed: the room was told (recording_stopped) and shown it already
      if (err.code !== 'recording_failed') this.toast(`${t('recordingError')} ${err.message}`, 8000);
    } finally {
      this.busy = false;
      this.render();
      this.button.focus();
    }
  }
}

export function setupRecording(session, options) {
  return new Recording(session, options);
}
