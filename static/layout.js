// Where each tile goes on the stage. Pure functions of sizes and counts (no DOM): app.js
// measures the stage, asks for boxes here, and places the tiles.
//
// Three views, as in the meeting apps people know:
//   grid     every participant, tiles as large as the stage allows (solveGrid);
//   speaker  one participant large (the pinned one, else the active speaker), a filmstrip;
//   share    the screen shares large, a filmstrip of the participants.

export const GAP = 8;

// Tile shapes allowed: from square-ish to wide on a landscape stage, down to portrait on a phone.
export function aspectRange(width, height) {
  return width < height ? [9 / 16, 16 / 9] : [4 / 3, 16 / 9];
}

// The grid of `count` equal tiles that covers most of a width x height stage: for every number
// of columns, the largest tile of an allowed shape that fits its cell; the best total area wins
// (fewer columns on a tie: larger tiles). Returns {cols, rows, w, h}.
export function solveGrid(width, height, count, { gap = GAP, range = aspectRange(width, height), minHeight = 0 } = {}) {
  if (count <= 0 || width <= 0 || height <= 0) return { cols: 0, rows: 0, w: 0, h: 0 };
  const [minAspect, maxAspect] = range;
  let best = null;
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const cw = (width - gap * (cols - 1)) / cols;
    let ch = (height - gap * (rows - 1)) / rows;
    if (cw <= 0) break;
    if (ch < minHeight) ch = minHeight; // too many for the stage: it scrolls
    let w = cw;
    let h = ch;
    if (cw / ch > maxAspect) w = ch * maxAspect;
    else if (cw / ch < minAspect) h = cw / minAspect;
    const area = w * h * count;
    if (!best || area > best.area + 1) best = { cols, rows, w, h, area };
  }
  return { cols: best.cols, rows: best.rows, w: Math.floor(best.w), h: Math.floor(best.h) };
}

// Boxes {x, y, w, h} for `count` tiles in a grid inside the rectangle (x0, y0, width, height):
// rows centred vertically (when they fit), each row centred, the last one too.
export function gridBoxes(count, width, height, { x0 = 0, y0 = 0, gap = GAP, minHeight = 0, range } = {}) {
  const g = solveGrid(width, height, count, { gap, minHeight, range: range || aspectRange(width, height) });
  const boxes = [];
  const total = g.rows * g.h + (g.rows - 1) * gap;
  const top = y0 + Math.max(0, (height - total) / 2);
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / g.cols);
    const inRow = row === g.rows - 1 ? count - row * g.cols : g.cols;
    const col = i - row * g.cols;
    const rowWidth = inRow * g.w + (inRow - 1) * gap;
    const left = x0 + (width - rowWidth) / 2;
    boxes.push({ x: Math.round(left + col * (g.w + gap)), y: Math.round(top + row * (g.h + gap)), w: g.w, h: g.h });
  }
  return { boxes, height: total, grid: g };
}

// A main area and a filmstrip: the strip on the right of a landscape stage, along the bottom of
// a portrait one. Returns {main: [boxes for the main tiles], strip: [boxes], hidden: n} where
// `hidden` strip tiles did not fit (the last ones).
export function focusBoxes(mainCount, stripCount, width, height, { gap = GAP } = {}) {
  const landscape = width >= height * 1.1;
  let main = { x: 0, y: 0, w: width, h: height };
  const strip = [];
  let hidden = 0;
  if (stripCount > 0) {
    if (landscape) {
      const sw = Math.round(Math.min(Math.max(width * 0.18, 160), 280));
      const th = Math.round(sw * 9 / 16);
      const fit = Math.max(1, Math.floor((height + gap) / (th + gap)));
      const shown = Math.min(stripCount, fit);
      hidden = stripCount - shown;
      const total = shown * th + (shown - 1) * gap;
      const top = Math.max(0, (height - total) / 2);
      for (let i = 0; i < shown; i++) strip.push({ x: width - sw, y: Math.round(top + i * (th + gap)), w: sw, h: th });
      main = { x: 0, y: 0, w: width - sw - gap, h: height };
    } else {
      const sh = Math.round(Math.min(Math.max(height * 0.16, 72), 140));
      const tw = Math.round(sh * (width < height ? 3 / 4 : 16 / 9));
      const fit = Math.max(1, Math.floor((width + gap) / (tw + gap)));
      const shown = Math.min(stripCount, fit);
      hidden = stripCount - shown;
      const total = shown * tw + (shown - 1) * gap;
      const left = Math.max(0, (width - total) / 2);
      for (let i = 0; i < shown; i++) strip.push({ x: Math.round(left + i * (tw + gap)), y: height - sh, w: tw, h: sh });
      main = { x: 0, y: 0, w: width, h: height - sh - gap };
    }
  }
  // main tiles fill their area (a share is shown whole: any shape)
  const { boxes } = gridBoxes(mainCount, main.w, main.h, { x0: main.x, y0: main.y, gap, range: [0.3, 4] });
  return { main: boxes, strip, hidden };
}

// Which view: shares first, then a pinned participant or the speaker view, else the grid.
export function chooseView({ shares, pinned, preferred, participants }) {
  if (shares > 0) return 'share';
  if (pinned) return 'speaker';
  if (preferred === 'speaker' && participants > 1) return 'speaker';
  return 'grid';
}

// An unguessable meeting name people can still read aloud: xxxx-xxxx-xxxx from 23 letters
// (no i, l, o, which look like digits): 23^12, about 54 bits.
const LETTERS = 'abcdefghjkmnpqrstuvwxyz';
export function newMeetingName(random = (n) => crypto.getRandomValues(new Uint32Array(n))) {
  const words = [];
  const values = random(12);
  for (let w = 0; w < 3; w++) {
    let word = '';
    for (let i = 0; i < 4; i++) word += LETTERS[values[w * 4 + i] % LETTERS.length];
    words.push(word);
  }
  return words.join('-');
}

// Initials for an avatar: the first letters of the first and last words ("Jean-Luc Picard"
// -> "JP", "Zoé" -> "Z"); "(you)" and the like are left out.
export function initials(name) {
  const words = String(name || '').replace(/\(.*?\)/g, '').trim().split(/\s+/).filter(Boolean);
  if (!words.length) return '?';
  const first = [...words[0]][0];
  const last = words.length > 1 ? [...words[words.length - 1]][0] : '';
  return (first + last).toUpperCase();
}

// A colour per name (white initials on it have at least 4.5:1 contrast).
export const AVATAR_COLOURS = ['#1e5aa8', '#7b3fa0', '#a33b5b', '#2e6b3a', '#8a4b12', '#0f6a73', '#5046a8', '#8c2f2f'];
export function avatarColour(name) {
  let h = 0;
  // "Alice (you)" is Alice: the same colour on every page
  h = 2166136261; // FNV-1a: neighbouring names spread over the colours
  for (const ch of String(name || '').replace(/\s*\(.*?\)\s*$/, '')) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  return AVATAR_COLOURS[h % AVATAR_COLOURS.length];
}
