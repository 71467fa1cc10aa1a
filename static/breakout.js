// Breakout rooms (docs/protocol.md, "Breakout rooms"): a host splits the meeting into rooms
// (a number of rooms, everyone spread at random or assigned one by one, by drag and drop or
// with the list next to each name), sets a timer, writes to every room, visits any room and
// brings everyone back. Nobody reconnects: the server moves people with their connections,
// and app.js shows the new room's people when 'moved' comes. Everyone sees where they are
// ("You are in Room 2", the time left) and, when the host allows it, a way back.
//
// setupBreakout(session, { toast }) wires it to a Session (protocol.js); the elements are made
// here: a section at the top of the People panel, a banner over the stage.
import { t } from './i18n.js';

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function button(text, attrs = {}, onClick = null) {
  const b = el('button', { type: 'button', class: 'secondary small', ...attrs }, text);
  if (onClick) b.addEventListener('click', onClick);
  return b;
}

// "12:05" (or "1:02:05") for a number of seconds
export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export class Breakout {
  constructor(session, { toast } = {}) {
    this.session = session;
    this.toast = toast || (() => {});
    this.state = { active: false }; // the server's 'breakout' / 'breakout_state'
    this.host = false;
    this.available = false; // the server answered breakout_state
    this.deadline = null; // performance.now() when the timer ends
    this.build();
    session.on('joined', () => this.refresh());
    session.on('resumed', () => this.refresh()); // what changed while the socket was down
    session.on('moved', (m) => this.onMoved(m));
    session.on('breakout', (m) => this.onState(m));
    session.on('breakout_message', (m) => this.onMessage(m));
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  // ---------------------------------------------------------------- elements ----------------
  build() {
    // folded until used: the list of people stays in view below it
    this.box = el('details', { id: 'breakout-box', class: 'breakout-box', hidden: '' });
    const heading = el('summary', { id: 'breakout-heading' }, t('breakoutRooms'));
    this.setup = this.buildSetup();
    this.rooms = el('div', { id: 'breakout-rooms', class: 'breakout-rooms' });
    this.tools = this.buildTools();
    this.box.append(heading, this.setup, this.rooms, this.tools);
    $('people-panel')?.prepend(this.box);
    // where you are, for everyone, over the stage
    this.banner = el('div', { id: 'breakout-banner', class: 'banner breakout', hidden: '' });
    this.where = el('span', { id: 'breakout-where', role: 'status' });
    this.back = button('', { id: 'breakout-back', class: 'small' }, () => this.goBack());
    this.banner.append(el('span', { class: 'icon i-people', 'aria-hidden': 'true' }), this.where, this.back);
    $('stage-area')?.append(this.banner);
  }

  buildSetup() {
    const form = el('form', { id: 'breakout-setup', class: 'breakout-setup', hidden: '' });
    const count = el('input', { id: 'breakout-count', type: 'number', min: '1', max: '20', value: '2' });
    const assign = el('select', { id: 'breakout-assign' });
    assign.append(new Option(t('breakoutRandom'), 'random'), new Option(t('breakoutManual'), 'manual'));
    const minutes = el('input', { id: 'breakout-minutes', type: 'number', min: '0', max: '1440', value: '10' });
    const allow = el('input', { id: 'breakout-allow', type: 'checkbox' });
    allow.checked = true;
    const label = (node, key) => {
      const l = el('label', { for: node.id }, t(key));
      return [l, node];
    };
    const allowLabel = el('label', { class: 'check', for: 'breakout-allow' });
    allowLabel.append(allow, document.createTextNode(` ${t('breakoutAllowReturn')}`));
    const open = el('button', { id: 'breakout-open', type: 'submit', class: 'primary small' }, t('breakoutOpen'));
    form.append(...label(count, 'breakoutCount'), ...label(assign, 'breakoutAssign'),
      ...label(minutes, 'breakoutMinutes'), allowLabel, open);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const n = Math.min(20, Math.max(1, Number(count.value) || 1));
      const names = Array.from({ length: n }, (_, i) => ({ name: t('breakoutRoomN', { n: i + 1 }), participants: [] }));
      this.request({
        type: 'breakout_start', rooms: names, assign: assign.value,
        duration: Math.max(0, Number(minutes.value) || 0) * 60, allow_return: allow.checked,
      });
    });
    return form;
  }

  buildTools() {
    const tools = el('div', { id: 'breakout-tools', class: 'breakout-tools', hidden: '' });
    const message = el('input', { id: 'breakout-text', maxlength: '1000', 'aria-label': t('breakoutMessage'), placeholder: t('breakoutMessage') });
    const send = button(t('breakoutSend'), { id: 'breakout-send' }, () => {
      const text = message.value.trim();
      if (!text) return;
      this.request({ type: 'breakout_broadcast', text }, t('breakoutSent'));
      message.value = '';
    });
    const minutes = el('input', { id: 'breakout-timer-minutes', type: 'number', min: '0', max: '1440', value: '5', 'aria-label': t('breakoutMinutes') });
    const timer = button(t('breakoutSetTimer'), { id: 'breakout-timer' }, () => {
      this.request({ type: 'breakout_timer', duration: Math.max(0, Number(minutes.value) || 0) * 60 });
    });
    const end = button(t('breakoutEnd'), { id: 'breakout-end', class: 'danger small' }, () => this.request({ type: 'breakout_end' }));
    const row = (...nodes) => { const d = el('div', { class: 'row' }); d.append(...nodes); return d; };
    tools.append(row(message, send), row(minutes, timer), row(end));
    return tools;
  }

  // ---------------------------------------------------------------- server ------------------
  async request(msg, done = null) {
    try {
      const reply = await this.session.signal.request(msg);
      if (done) this.toast(done);
      if (reply.type === 'breakout_started' || reply.type === 'breakout_state') this.onState(reply);
      return reply;
    } catch (err) {
      this.toast(`${t('error')}: ${err.message}`, 6000);
      return null;
    }
  }

  async refresh() {
    try {
      const m = await this.session.signal.request({ type: 'breakout_state' });
      this.available = true;
      this.host = Boolean(m.host);
      this.onState(m);
    } catch {
      this.available = false; // a server without breakout rooms: nothing shown
      this.render();
    }
  }

  onState(m) {
    const was = this.state;
    this.state = m;
    this.deadline = m.active && m.remaining != null ? performance.now() + m.remaining * 1000 : null;
    if (was.active && !m.active) this.toast(t(m.reason === 'timer' ? 'breakoutTimeUp' : 'breakoutClosed'), 6000);
    this.render();
  }

  onMoved(m) {
    // the room's name comes with the next 'breakout': said then (render), in the chat too,
    // whose scope changed with the room
    const main = !String(m.room?.name || '').includes('~breakout~');
    if (main) this.note(t('breakoutBackInMain'));
    else this.pendingNote = true;
  }

  note(text) {
    this.toast(text, 5000);
    $('chat-log')?.append(el('li', { class: 'system' }, text));
  }

  onMessage(m) {
    const text = t('breakoutFrom', { name: m.from?.name || m.from?.identity || '', text: m.text || '' });
    this.toast(text, 12000);
    $('chat-log')?.append(el('li', { class: 'system broadcast' }, text));
  }

  goBack() {
    const s = this.state;
    const to = s.room !== '' ? '' : s.assigned;
    this.request({ type: 'breakout_move', room: to });
  }

  // ---------------------------------------------------------------- view ----------------------
  nameOf(id) {
    if (id === '' || id == null) return id === '' ? t('breakoutMain') : '';
    return (this.state.rooms || []).find((r) => r.id === id)?.name || '';
  }

  tick() {
    if (!this.state.active) return;
    this.renderBanner();
  }

  render() {
    const s = this.state;
    const shown = this.available && (this.host || s.active);
    this.box.hidden = !shown;
    if (s.active && !this.wasActive) this.box.open = true; // the rooms just opened: show them
    this.wasActive = Boolean(s.active);
    this.setup.hidden = !(this.host && !s.active);
    this.tools.hidden = !(this.host && s.active);
    this.renderRooms();
    this.renderBanner();
    if (this.pendingNote && s.active && s.room !== '') {
      this.pendingNote = false;
      this.note(t('breakoutNowIn', { room: this.nameOf(s.room) }));
    }
  }

  renderBanner() {
    const s = this.state;
    if (!this.available || !s.active) { this.banner.hidden = true; return; }
    const left = this.deadline != null ? clock((this.deadline - performance.now()) / 1000) : null;
    const here = s.room === '' ? t('breakoutInMain') : t('breakoutYouAreIn', { room: this.nameOf(s.room) });
    const text = left != null ? `${here} \u00b7 ${t('breakoutLeft', { time: left })}` : here;
    if (this.where.textContent !== text) this.where.textContent = text;
    // the way back (allowed by the host), or to the room one was assigned
    let back = '';
    if (s.room !== '' && s.allow_return) back = t('breakoutReturn');
    else if (s.room === '' && s.assigned) back = t('breakoutGoTo', { room: this.nameOf(s.assigned) });
    this.back.hidden = !back || this.host; // a host moves with the room list
    this.back.textContent = back;
    this.banner.hidden = false;
    this.banner.dataset.room = s.room;
  }

  renderRooms() {
    const s = this.state;
    this.rooms.replaceChildren();
    if (!s.active) return;
    const me = this.session.me?.sid;
    const all = [{ id: '', name: t('breakoutMain'), participants: s.main?.participants || [] }, ...(s.rooms || [])];
    for (const room of all) {
      const section = el('section', { class: 'breakout-room', 'data-room': room.id });
      if (room.id === s.room) section.classList.add('here');
      const head = el('div', { class: 'head' });
      head.append(el('h4', {}, `${room.name} (${room.participants.length})`));
      if (this.host && room.id !== s.room) {
        const key = room.id === '' ? 'breakoutBackToMain' : 'breakoutVisit';
        head.append(button(t(key), { class: 'ghost small visit', 'aria-label': `${t(key)}: ${room.name}` },
          () => this.request({ type: 'breakout_move', room: room.id })));
      }
      const list = el('ul');
      for (const p of room.participants) {
        const li = el('li', { 'data-participant': p.sid });
        li.append(el('span', { class: 'name' }, p.sid === me ? `${p.name || p.identity} (${t('you')})` : (p.name || p.identity)));
        if (this.host && p.sid !== me) {
          li.draggable = true;
          li.addEventListener('dragstart', (ev) => ev.dataTransfer.setData('text/plain', p.sid));
          const select = el('select', { class: 'move', 'aria-label': t('breakoutMoveTo', { name: p.name || p.identity }) });
          for (const r of all) select.append(new Option(r.name, r.id, false, r.id === room.id));
          select.addEventListener('change', () => this.request({ type: 'breakout_move', participant: p.sid, room: select.value }));
          li.append(select);
        }
        list.append(li);
      }
      if (this.host) {
        section.addEventListener('dragover', (ev) => { ev.preventDefault(); section.classList.add('drop'); });
        section.addEventListener('dragleave', () => section.classList.remove('drop'));
        section.addEventListener('drop', (ev) => {
          ev.preventDefault();
          section.classList.remove('drop');
          const sid = ev.dataTransfer.getData('text/plain');
          if (sid) this.request({ type: 'breakout_move', participant: sid, room: room.id });
        });
      }
      section.append(head, list);
      this.rooms.append(section);
    }
  }
}

export function setupBreakout(session, ctx) {
  const breakout = new Breakout(session, ctx);
  window.visioBreakout = breakout; // read-only hook for tests and debugging
  return breakout;
}
