// Sign-in, "My meetings", the waiting room (docs/identity.md, docs/protocol.md "Waiting room").
// Active only when the server has sign-in ([oidc]): GET /auth/me says enabled; otherwise nothing
// here shows and the page works with tokens as before.
//
// setupIdentity()                  the account bar and the "My meetings" panel in the lobby
// admission(room, name)            before joining an owned room: a token now, or after waiting
//                                  in the lobby until a host admits ({ token, meeting }); null
//                                  if denied or cancelled; {} for a room the server does not own
// setupLobbyHost(session, { toast }) a host's list of people waiting, with a sound and a card
import { lang } from './i18n.js';

const STRINGS = {
  en: {
    signIn: 'Sign in', signOut: 'Sign out', signedInAs: 'Signed in as {name}', myMeetings: 'My meetings',
    create: 'Create', meetingName: 'Name of the meeting', access: 'Who may enter',
    public: 'Anyone with the link', trusted: 'Signed-in users; guests wait', restricted: 'Invited people only; others wait',
    hosts: 'Other hosts (e-mail addresses)', invited: 'Invited (e-mail addresses)', open: 'Open', remove: 'Delete',
    confirmRemove: 'Delete for good?', noMeetings: 'No meetings yet.', saved: 'Saved', failed: 'Could not save: {why}',
    copy: 'Copy link', copied: 'Link copied',
    waiting: 'Waiting for a host to let you in\u2026', waitingNoHost: 'Nobody is hosting yet: you will get in when a host arrives and lets you in.',
    cancel: 'Cancel', denied: 'A host declined your request to join.', deniedRetry: 'A host declined your request to join. You may ask again in {n} s.',
    timeout: 'Nobody let you in. Try again later.', lobbyError: 'The waiting room failed: {why}',
    lobbyTitle: 'Waiting to join', admit: 'Admit', deny: 'Deny', admitAll: 'Admit all', denyAll: 'Deny all',
    knocked: '{name} is waiting to join', guest: 'guest', signedIn: 'signed in',
    meetingDeleted: 'This meeting was deleted by its owner.',
    noMeeting: 'There is no meeting at this address. Check the link, or create a meeting in My meetings.',
    noMeetingSignIn: 'There is no meeting at this address. Check the link, or sign in to create a meeting.',
  },
  fr: {
    signIn: 'Se connecter', signOut: 'Se d\u00e9connecter', signedInAs: 'Connect\u00e9 : {name}', myMeetings: 'Mes r\u00e9unions',
    create: 'Cr\u00e9er', meetingName: 'Nom de la r\u00e9union', access: 'Qui peut entrer',
    public: 'Toute personne ayant le lien', trusted: 'Les personnes connect\u00e9es ; les invit\u00e9s attendent', restricted: 'Les personnes invit\u00e9es seulement ; les autres attendent',
    hosts: 'Autres organisateurs (adresses e-mail)', invited: 'Invit\u00e9s (adresses e-mail)', open: 'Ouvrir', remove: 'Supprimer',
    confirmRemove: 'Supprimer d\u00e9finitivement ?', noMeetings: 'Aucune r\u00e9union pour l\u2019instant.', saved: 'Enregistr\u00e9', failed: '\u00c9chec de l\u2019enregistrement : {why}',
    copy: 'Copier le lien', copied: 'Lien copi\u00e9',
    waiting: 'En attente qu\u2019un organisateur vous fasse entrer\u2026', waitingNoHost: 'Aucun organisateur pour l\u2019instant : vous entrerez quand l\u2019un d\u2019eux arrivera et vous admettra.',
    cancel: 'Annuler', denied: 'Un organisateur a refus\u00e9 votre demande.', deniedRetry: 'Un organisateur a refus\u00e9 votre demande. Vous pourrez redemander dans {n} s.',
    timeout: 'Personne ne vous a fait entrer. R\u00e9essayez plus tard.', lobbyError: 'La salle d\u2019attente a \u00e9chou\u00e9 : {why}',
    lobbyTitle: 'En attente', admit: 'Admettre', deny: 'Refuser', admitAll: 'Tout admettre', denyAll: 'Tout refuser',
    knocked: '{name} attend pour entrer', guest: 'invit\u00e9', signedIn: 'connect\u00e9',
    meetingDeleted: 'Cette r\u00e9union a \u00e9t\u00e9 supprim\u00e9e par son organisateur.',
    noMeeting: 'Aucune r\u00e9union \u00e0 cette adresse. V\u00e9rifiez le lien, ou cr\u00e9ez une r\u00e9union dans Mes r\u00e9unions.',
    noMeetingSignIn: 'Aucune r\u00e9union \u00e0 cette adresse. V\u00e9rifiez le lien, ou connectez-vous pour cr\u00e9er une r\u00e9union.',
  },
};

export function tr(key, vars = {}) {
  const text = (STRINGS[lang] || STRINGS.en)[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  return { status: r.status, data };
}

// devTokens: the server gives a token for any room (development mode); otherwise only its
// meetings (and links carrying a token) can be entered
export const account = { enabled: false, user: null, devTokens: true };
let ready = Promise.resolve(account); // setupIdentity's answer, awaited by admission

// -- the lobby page: account bar and "My meetings" ----------------------------------------------
export function setupIdentity(options = {}) {
  ready = start(options);
  return ready;
}

async function start() {
  const link = el('link', { rel: 'stylesheet', href: '/static/identity.css' });
  document.head.append(link);
  let me;
  try {
    const r = await fetch('/auth/me', { credentials: 'same-origin' });
    if (!r.ok) return account; // no sign-in on this server
    me = await r.json();
  } catch {
    return account;
  }
  if (!me || !me.enabled) return account; // no sign-in on this server
  account.enabled = true;
  account.user = me.user;
  account.devTokens = Boolean(me.dev_tokens);
  const lobby = document.getElementById('lobby');
  const slug = decodeURIComponent((location.pathname.match(/^\/r\/([^/]+)/) || [])[1] || '');
  if (slug) { // an owned meeting's name as the lobby's heading
    api('GET', `/api/meetings/${encodeURIComponent(slug)}/info`).then(({ status, data }) => {
      if (status !== 200) return;
      document.getElementById('lobby-heading').textContent = data.name;
      // the meeting is the one of this address: no "Meeting name" field showing its code
      // (changing it would lead elsewhere); the invite link still shows the address
      const input = document.getElementById('room-input');
      if (input?.value === slug) {
        input.hidden = true;
        document.querySelector('label[for="room-input"]')?.setAttribute('hidden', '');
      }
    });
  }
  const bar = el('div', { id: 'account', class: 'account' });
  lobby.prepend(bar);
  if (!me.user) {
    const signIn = el('a', { id: 'sign-in', class: 'button primary', href: `/auth/login?next=${encodeURIComponent(location.pathname + location.search)}` }, tr('signIn'));
    bar.append(signIn);
    return account;
  }
  const who = el('span', { id: 'signed-in', class: 'who' }, tr('signedInAs', { name: me.user.name || me.user.email || me.user.subject }));
  const out = el('button', { id: 'sign-out', type: 'button', class: 'secondary' }, tr('signOut'));
  out.addEventListener('click', async () => {
    const { data } = await api('POST', '/auth/logout');
    location.href = data.redirect || '/';
  });
  bar.append(who, out);
  const nameInput = document.getElementById('name-input');
  if (nameInput && !nameInput.value) nameInput.value = me.user.name || '';
  lobby.querySelector('form')?.after(meetingsPanel());
  return account;
}

function accessSelect(value) {
  const select = el('select', { class: 'access' });
  for (const level of ['public', 'trusted', 'restricted']) {
    const option = el('option', { value: level }, tr(level));
    if (level === value) option.selected = true;
    select.append(option);
  }
  return select;
}

function meetingsPanel() {
  const panel = el('details', { id: 'meetings', class: 'meetings' });
  if (!location.pathname.startsWith('/r/')) panel.open = true;
  panel.append(el('summary', {}, tr('myMeetings')));
  const form = el('form', { id: 'create-meeting', class: 'create' });
  const name = el('input', { id: 'meeting-name', required: '', maxlength: '128', placeholder: tr('meetingName'), 'aria-label': tr('meetingName') });
  const access = accessSelect('trusted');
  access.id = 'meeting-access';
  access.setAttribute('aria-label', tr('access'));
  form.append(name, access, el('button', { type: 'submit', class: 'primary' }, tr('create')));
  const list = el('ul', { id: 'meeting-list' });
  panel.append(form, list);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { status, data } = await api('POST', '/api/meetings', { name: name.value.trim(), access: access.value });
    if (status !== 201) { form.dataset.error = tr('failed', { why: data.message || status }); name.setCustomValidity(form.dataset.error); name.reportValidity(); return; }
    location.href = `/r/${encodeURIComponent(data.slug)}`;
  });
  const refresh = async () => {
    const { status, data } = await api('GET', '/api/meetings');
    list.replaceChildren();
    if (status !== 200) return;
    if (!data.meetings.length) list.append(el('li', { class: 'empty' }, tr('noMeetings')));
    for (const m of data.meetings) list.append(meetingItem(m, refresh));
  };
  refresh();
  return panel;
}

function meetingItem(m, refresh) {
  const li = el('li', { class: 'meeting', 'data-slug': m.slug });
  const url = `${location.origin}/r/${encodeURIComponent(m.slug)}`;
  const name = el('input', { class: 'name', value: m.name, maxlength: '128', 'aria-label': tr('meetingName') });
  const access = accessSelect(m.access);
  access.setAttribute('aria-label', tr('access'));
  const hosts = el('input', { class: 'hosts', value: m.hosts.join(', '), placeholder: tr('hosts'), 'aria-label': tr('hosts') });
  const invited = el('input', { class: 'invited', value: m.invited.join(', '), placeholder: tr('invited'), 'aria-label': tr('invited') });
  const open = el('a', { class: 'button primary open', href: `/r/${encodeURIComponent(m.slug)}` }, tr('open'));
  const copy = el('button', { type: 'button', class: 'secondary copy' }, tr('copy'));
  const del = el('button', { type: 'button', class: 'danger delete' }, tr('remove'));
  const note = el('span', { class: 'note', role: 'status' });
  const save = async (change) => {
    const { status, data } = await api('PATCH', `/api/meetings/${encodeURIComponent(m.slug)}`, change);
    li.dataset.saved = status === 200 ? 'yes' : 'no';
    note.textContent = status === 200 ? tr('saved') : tr('failed', { why: data.message || status });
  };
  name.addEventListener('change', () => save({ name: name.value }));
  access.addEventListener('change', () => save({ access: access.value }));
  hosts.addEventListener('change', () => save({ hosts: hosts.value }));
  invited.addEventListener('change', () => save({ invited: invited.value }));
  copy.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(url); note.textContent = tr('copied'); } catch { note.textContent = url; }
  });
  del.addEventListener('click', async () => {
    if (!del.classList.contains('confirm')) { del.classList.add('confirm'); del.textContent = tr('confirmRemove'); return; }
    await api('DELETE', `/api/meetings/${encodeURIComponent(m.slug)}`);
    refresh();
  });
  const row = el('div', { class: 'row' });
  row.append(name, access, open, copy, del);
  const people = el('div', { class: 'row people' });
  for (const [input, label] of [[hosts, tr('hosts')], [invited, tr('invited')]]) {
    const field = el('label', { class: 'field' });
    field.append(el('span', {}, label), input);
    people.append(field);
  }
  li.append(row, el('code', { class: 'slug' }, m.slug), people, note);
  return li;
}

// "New meeting" in the lobby, on a server where meetings are created by signing in: the form of
// My meetings (signed in), or the sign-in. False: a made-up room name will do (tokens as before).
export function newOwnedMeeting() {
  if (!account.enabled || account.devTokens) return false;
  const panel = document.getElementById('meetings');
  if (account.user && panel) {
    panel.open = true;
    document.getElementById('meeting-name')?.focus();
  } else {
    location.href = `/auth/login?next=${encodeURIComponent('/')}`;
  }
  return true;
}

// -- entering an owned room: directly, or through the waiting room -----------------------------
export async function admission(room, name, { onWaiting = () => {} } = {}) {
  await ready;
  if (!account.enabled) return {};
  const { status, data } = await api('POST', `/api/meetings/${encodeURIComponent(room)}/token`, { name });
  if (status === 404) { // not a room this server owns: tokens as before, if there are any
    if (account.devTokens || new URLSearchParams(location.search).get('token')) return {};
    throw new Error(tr(account.user ? 'noMeeting' : 'noMeetingSignIn'));
  }
  if (status === 200) return { token: data.token, meeting: data.meeting, host: data.host };
  if (status !== 403 || data.code !== 'must_wait') throw new Error(data.message || `HTTP ${status}`);
  return waitInLobby(room, name, onWaiting);
}

function waitInLobby(room, name, onWaiting) {
  const error = document.getElementById('lobby-error');
  const join = document.getElementById('join-button');
  const box = el('div', { id: 'waiting', class: 'waiting', role: 'status' });
  const text = el('p', {}, tr('waiting'));
  const cancel = el('button', { type: 'button', class: 'secondary' }, tr('cancel'));
  box.append(el('span', { class: 'spinner', 'aria-hidden': 'true' }), text, cancel);
  (join.closest('.actions') || join).after(box);
  join.disabled = true;
  error.textContent = '';
  onWaiting(true);
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/lobby/${encodeURIComponent(room)}`);
  return new Promise((resolve) => {
    let done = false;
    const finish = (result, message = '') => {
      if (done) return;
      done = true;
      box.remove();
      join.disabled = false;
      error.textContent = message;
      onWaiting(false);
      try { ws.close(); } catch { /* closed */ }
      resolve(result);
    };
    cancel.addEventListener('click', () => finish(null));
    ws.addEventListener('open', () => ws.send(JSON.stringify({ type: 'knock', name })));
    ws.addEventListener('message', (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === 'waiting') {
        box.dataset.id = m.id;
        if (!m.hosts_present) text.textContent = `${tr('waiting')} ${tr('waitingNoHost')}`;
      } else if (m.type === 'admitted') {
        finish({ token: m.token, meeting: m.meeting, host: false });
      } else if (m.type === 'denied') {
        finish(null, m.retry_after ? tr('deniedRetry', { n: m.retry_after }) : tr('denied'));
      } else if (m.type === 'timeout') {
        finish(null, tr('timeout'));
      } else if (m.type === 'error') {
        finish(null, m.code === 'rate_limited' ? tr('deniedRetry', { n: m.retry_after || 0 }) : tr('lobbyError', { why: m.message }));
      }
    });
    ws.addEventListener('close', () => finish(null, done ? '' : tr('lobbyError', { why: 'closed' })));
  });
}

// -- a host's side: who waits, admit or deny -----------------------------------------------------
function chime() {
  try {
    const ctx = new AudioContext();
    const now = ctx.currentTime;
    for (const [i, freq] of [[0, 660], [1, 880]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.3);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + i * 0.18);
      osc.stop(now + i * 0.18 + 0.32);
    }
    setTimeout(() => ctx.close(), 1000);
    return true;
  } catch {
    return false;
  }
}

export function setupLobbyHost(session, { toast = () => {} } = {}) {
  const card = el('section', { id: 'lobby-card', class: 'lobby-card', role: 'region', 'aria-live': 'polite', hidden: '' });
  card.dataset.chimes = '0';
  const title = el('h2', {}, tr('lobbyTitle'));
  const list = el('ul');
  const all = el('div', { class: 'all' });
  const admitAll = el('button', { type: 'button', class: 'primary', id: 'admit-all' }, tr('admitAll'));
  const denyAll = el('button', { type: 'button', class: 'secondary', id: 'deny-all' }, tr('denyAll'));
  all.append(admitAll, denyAll);
  card.append(title, list, all);
  document.querySelector('#room .room-body')?.append(card);
  const decide = (type, body) => session.signal.request({ type, ...body }).catch((e) => toast(e.message));
  admitAll.addEventListener('click', () => decide('lobby_admit', { all: true }));
  denyAll.addEventListener('click', () => decide('lobby_deny', { all: true }));
  const render = (waiting) => {
    list.replaceChildren();
    for (const w of waiting) {
      const li = el('li', { 'data-id': w.id });
      const who = el('span', { class: 'who' }, w.name);
      who.append(el('small', {}, ` \u00b7 ${w.signed_in ? tr('signedIn') : tr('guest')}`));
      const admit = el('button', { type: 'button', class: 'primary small admit' }, tr('admit'));
      const deny = el('button', { type: 'button', class: 'secondary small deny' }, tr('deny'));
      admit.setAttribute('aria-label', `${tr('admit')} ${w.name}`);
      deny.setAttribute('aria-label', `${tr('deny')} ${w.name}`);
      admit.addEventListener('click', () => decide('lobby_admit', { waiting: w.id }));
      deny.addEventListener('click', () => decide('lobby_deny', { waiting: w.id }));
      li.append(who, admit, deny);
      list.append(li);
    }
    all.hidden = waiting.length < 2;
    card.hidden = waiting.length === 0;
  };
  const lobby = () => {
    session.signal.request({ type: 'lobby' }).then((m) => render(m.waiting || [])).catch(() => {});
  };
  session.on('joined', lobby);
  session.on('resumed', lobby); // who knocked while the socket was down
  session.on('lobby', (m) => {
    if (m.id !== undefined) return; // the answer to our own request: rendered above
    render(m.waiting || []);
    if (m.knock) {
      if (chime()) card.dataset.chimes = String(Number(card.dataset.chimes) + 1);
      toast(tr('knocked', { name: m.knock.name }));
    }
  });
}
