// Live captions, the "transcription on" indicator, starting and stopping transcription, and
// the meeting notes for hosts: downloaded as Markdown, WebVTT or JSON, or deleted
// (docs/notes.md, docs/protocol.md: caption, transcription_status, transcription_state,
// transcription, transcript, delete_transcript).
//
// setupCaptions(session) wires it to a Session (protocol.js); the elements are made here:
// the indicator in the top bar, the captions over the stage, three entries in the More menu,
// the meeting notes dialog.
import { lang, t } from './i18n.js';

const $ = (id) => document.getElementById(id);
const SHOWN = 3; // caption lines on screen at once
const LINGER = 7000; // ms a final line stays after its last word

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function menuButton(id, key, { role } = {}) {
  const button = el('button', { id, type: 'button', hidden: '' });
  if (role) { button.setAttribute('role', role); button.setAttribute('aria-checked', 'false'); }
  button.append(el('span', { class: 'icon i-speaking', 'aria-hidden': 'true' }), el('span', { class: 'text' }, t(key)));
  return button;
}

export class Captions {
  constructor(session) {
    this.session = session;
    this.lines = new Map(); // line id -> {node, timer}
    this.state = { active: false, available: false, can_control: false, can_download: false };
    this.wanted = localStorage.getItem('visio-captions') !== 'off';
    this.build();
    session.on('joined', () => this.refresh());
    session.on('resumed', () => this.refresh()); // what changed while the socket was down
    session.on('moved', () => this.refresh()); // a breakout room: its own transcription
    session.on('caption', (m) => this.onCaption(m));
    session.on('transcription_status', (m) => this.onStatus(m));
  }

  build() {
    // the indicator everyone sees while transcription runs
    this.indicator = el('span', { id: 'transcribing', class: 'live-note', role: 'status', hidden: '' });
    this.indicator.append(el('span', { class: 'dot', 'aria-hidden': 'true' }), el('span', {}, t('transcriptionOn')));
    const bar = document.querySelector('#room .bar');
    bar?.insertBefore(this.indicator, bar.querySelector('.spacer'));
    // the captions, at the bottom of the stage, below the tiles
    this.box = el('div', { id: 'captions', class: 'captions', 'aria-live': 'polite', hidden: '' });
    $('stage-area')?.append(this.box);
    // More menu: captions on/off (each person's own choice), start/stop, notes
    this.toggle = menuButton('captions-toggle', 'captions', { role: 'switch' });
    this.control = menuButton('transcription-button', 'startTranscription');
    this.download = menuButton('notes-button', 'meetingNotes');
    this.buildNotes();
    const menu = $('more-menu');
    for (const b of [this.toggle, this.control, this.download]) menu?.append(b);
    // Settings: the language I speak, when it is not the meeting's
    this.speech = el('select', { id: 'speech-language' });
    for (const [value, key] of [['', 'speechRoom'], ['fr', 'speechFr'], ['en', 'speechEn']]) {
      this.speech.append(el('option', { value }, t(key)));
    }
    this.speech.value = localStorage.getItem('visio-speech-language') || '';
    const label = el('label', { for: 'speech-language' }, t('speechLanguage'));
    const actions = document.querySelector('#settings-dialog .actions');
    actions?.before(label, this.speech);
    this.speech.addEventListener('change', () => this.setSpeech(this.speech.value));
    this.toggle.addEventListener('click', () => this.setWanted(!this.wanted));
    this.control.addEventListener('click', () => this.startStop());
    this.download.addEventListener('click', () => this.openNotes());
    this.render();
  }

  buildNotes() {
    // the meeting notes dialog (hosts): three downloads, deleting, how long the server keeps them
    this.notes = el('dialog', { id: 'notes-dialog', 'aria-labelledby': 'notes-title' });
    const form = el('form', { method: 'dialog', class: 'dialog-body' });
    form.append(el('h2', { id: 'notes-title' }, t('meetingNotes')));
    this.notesKept = el('p', { id: 'notes-kept', class: 'note' });
    form.append(this.notesKept);
    for (const [format, key] of [['md', 'notesMd'], ['vtt', 'notesVtt'], ['json', 'notesJson']]) {
      const b = el('button', { type: 'button', class: 'notes-download', 'data-format': format }, t(key));
      b.addEventListener('click', () => this.downloadNotes(format));
      form.append(b);
    }
    this.deleteButton = el('button', { type: 'button', id: 'notes-delete', class: 'danger' }, t('deleteNotes'));
    this.deleteButton.addEventListener('click', () => this.deleteNotes());
    this.notesStatus = el('p', { id: 'notes-status', role: 'status' });
    const actions = el('div', { class: 'actions' });
    actions.append(el('button', { value: 'close', class: 'primary' }, t('close')));
    form.append(this.deleteButton, this.notesStatus, actions);
    this.notes.append(form);
    document.body.append(this.notes);
  }

  openNotes() {
    $('more-menu').hidden = true;
    $('more-button')?.setAttribute('aria-expanded', 'false');
    const days = Math.round((this.state.retention || 0) / 86400);
    this.notesKept.textContent = this.state.retention
      ? t(days >= 1 ? 'notesKeptDays' : 'notesKeptHours', { n: days >= 1 ? days : Math.max(1, Math.round(this.state.retention / 3600)) })
      : '';
    this.confirmingDelete = false;
    this.deleteButton.textContent = t('deleteNotes');
    this.notesStatus.textContent = '';
    this.notes.showModal();
  }

  async deleteNotes() {
    if (!this.confirmingDelete) { // a second click deletes: nothing is lost by a slip
      this.confirmingDelete = true;
      this.deleteButton.textContent = t('confirmDeleteNotes');
      return;
    }
    this.confirmingDelete = false;
    this.deleteButton.textContent = t('deleteNotes');
    try {
      await this.session.signal.request({ type: 'delete_transcript' });
      this.state = { ...this.state, has_transcript: this.state.active };
      this.notesStatus.textContent = t('notesDeleted');
    } catch (err) {
      this.notesStatus.textContent = `${t('noTranscript')} ${err.message}`;
    }
    this.render();
  }

  async refresh() {
    const mine = localStorage.getItem('visio-speech-language');
    if (mine) this.setSpeech(mine);
    try {
      const state = await this.session.signal.request({ type: 'transcription_state' });
      this.state = state;
    } catch (err) {
      this.state = { active: false, available: false }; // a server without transcription
    }
    this.render();
  }

  setSpeech(language) {
    localStorage.setItem('visio-speech-language', language);
    // '': the meeting's language again
    this.session.signal.request({ type: 'speech_language', language }).catch(() => {});
  }

  setWanted(on) {
    this.wanted = on;
    localStorage.setItem('visio-captions', on ? 'on' : 'off');
    this.render();
  }

  render() {
    const { active, available, can_control: canControl, can_download: canDownload } = this.state;
    this.indicator.hidden = !active;
    // a band below the tiles while captions are on (app.js lays the tiles out above it), kept
    // between sentences so that the tiles do not move each time someone speaks
    this.box.hidden = !(active && this.wanted);
    this.toggle.hidden = !active && this.lines.size === 0;
    this.toggle.setAttribute('aria-checked', String(this.wanted));
    this.control.hidden = !(canControl && (available || active));
    this.control.querySelector('.text').textContent = t(active ? 'stopTranscription' : 'startTranscription');
    this.download.hidden = !(canDownload && (active || this.state.has_transcript));
  }

  onStatus(m) {
    const was = this.state.active;
    this.state = { ...this.state, active: m.active, language: m.language, has_transcript: this.state.has_transcript || m.active };
    if (m.active !== was) {
      const key = m.active ? 'transcriptionStarted' : 'transcriptionStopped';
      this.note(m.by ? t(`${key}By`, { name: m.by }) : t(key));
    }
    if (m.error) this.note(m.error);
    if (!m.active) setTimeout(() => this.clear(), LINGER);
    this.render();
  }

  onCaption(m) {
    let item = this.lines.get(m.id);
    if (m.replaces) this.remove(m.replaces);
    if (!m.text) { this.remove(m.id); return; } // a duplicate heard on another microphone
    if (!item) {
      const node = el('p', { class: 'caption', 'data-id': m.id, 'data-participant': m.participant });
      node.append(el('span', { class: 'who' }, m.name || m.identity), el('span', { class: 'text' }));
      this.box.append(node);
      item = { node, timer: null };
      this.lines.set(m.id, item);
    }
    item.node.dataset.final = String(m.final);
    item.node.querySelector('.text').textContent = m.text; // text, never markup
    clearTimeout(item.timer);
    item.timer = setTimeout(() => this.remove(m.id), m.final ? LINGER : 3 * LINGER);
    while (this.lines.size > SHOWN) this.remove(this.lines.keys().next().value);
    this.render();
  }

  remove(id) {
    const item = this.lines.get(id);
    if (!item) return;
    clearTimeout(item.timer);
    item.node.remove();
    this.lines.delete(id);
    this.render();
  }

  clear() { for (const id of [...this.lines.keys()]) this.remove(id); }

  async startStop() {
    $('more-menu').hidden = true;
    $('more-button')?.setAttribute('aria-expanded', 'false');
    try {
      const msg = { type: 'transcription', active: !this.state.active };
      if (!this.state.active) msg.language = lang; // the meeting's language: the starter's
      await this.session.signal.request(msg, 120000);
    } catch (err) {
      this.note(`${t('transcriptionFailed')} ${err.message}`);
    }
  }

  async downloadNotes(format = 'md') {
    this.notesStatus.textContent = '';
    try {
      const reply = await this.session.signal.request({ type: 'transcript', format }, 90000);
      const url = URL.createObjectURL(new Blob([reply.content], { type: `${reply.mime};charset=utf-8` }));
      const a = el('a', { href: url, download: reply.filename });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      this.notesStatus.textContent = `${t('noTranscript')} ${err.message}`;
    }
  }

  note(text) {
    const toasts = $('toasts');
    if (!toasts) return;
    const p = el('p', {}, text);
    toasts.append(p);
    setTimeout(() => p.remove(), 5000);
  }
}

export function setupCaptions(session) {
  const captions = new Captions(session);
  window.visio && (window.visio.captions = captions); // read-only hook for tests
  return captions;
}
