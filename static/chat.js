// Chat without the DOM: an outbox that survives reconnections, and links found in text.
//
// A message typed while the connection is down waits in the outbox and goes out once the
// session is connected again; one that could not go out within `timeout` ms is marked failed
// (the user may retry it). Each message carries an id so that a message resent after a lost
// acknowledgement is shown once (receivers drop ids they have seen).

export class Outbox {
  constructor({ send, connected, onChange = () => {}, timeout = 60000 }) {
    this.send = send; // (payload) => Promise, resolved once the server acknowledged it
    this.connected = connected; // () => boolean
    this.onChange = onChange; // (message) => void, whenever a message's status changes
    this.timeout = timeout;
    this.messages = new Map(); // id -> {id, text, status: queued|sending|sent|failed, since}
    this.timer = setInterval(() => this.expire(), 1000);
  }

  add(text) {
    const id = `${Date.now().toString(36)}-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
    const message = { id, text, status: 'queued', since: Date.now() };
    this.messages.set(id, message);
    this.onChange(message);
    this.flush();
    return message;
  }

  retry(id) {
    const message = this.messages.get(id);
    if (!message || message.status !== 'failed') return;
    message.status = 'queued';
    message.since = Date.now();
    this.onChange(message);
    this.flush();
  }

  flush() {
    if (!this.connected()) return;
    for (const message of this.messages.values()) {
      if (message.status !== 'queued') continue;
      message.status = 'sending';
      this.onChange(message);
      this.send({ text: message.text, id: message.id }).then(
        () => { message.status = 'sent'; this.messages.delete(message.id); this.onChange(message); },
        () => {
          // connection lost before the acknowledgement: queue it again (or it expires)
          if (message.status !== 'sending') return;
          message.status = 'queued';
          this.onChange(message);
          if (this.connected()) setTimeout(() => this.flush(), 1000);
        },
      );
    }
  }

  expire(now = Date.now()) {
    for (const message of this.messages.values()) {
      if (message.status === 'queued' && now - message.since > this.timeout) {
        message.status = 'failed';
        this.onChange(message);
      }
    }
  }

  close() { clearInterval(this.timer); }
}

// Split text into [{text}|{link}] parts: http(s) addresses become links, nothing else does.
const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
export function linkify(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0].replace(/[.,;:!?)\]]+$/, ''); // trailing punctuation is the sentence's
    const start = match.index;
    if (start > last) parts.push({ text: text.slice(last, start) });
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('scheme');
      parts.push({ link: parsed.href, text: url });
    } catch {
      parts.push({ text: url });
    }
    last = start + url.length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}
