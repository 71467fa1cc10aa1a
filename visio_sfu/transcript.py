"""A meeting's transcript: lines labelled by speaker, and the notes made from them.

Pure: no I/O, no event loop. Every line carries its speaker (each participant's microphone is
its own track, so no diarization guesses who spoke), its start and end (seconds since
transcription started) and its text.

- De-duplication: without echo cancellation a microphone re-captures another participant's
  voice, so one sentence can come from two tracks. A final line whose words match (ratio >=
  ``DUPLICATE_SIMILARITY``) a line of another speaker overlapping it in time is one sentence
  heard twice: the louder track keeps it (:meth:`Transcript.add`).
- Exports: WebVTT (captions for a recording), Markdown (speaker, time, text) and JSON.
- Notes, extractive and offline (:func:`key_points`, :func:`action_items`): simple, documented
  heuristics, no language model (docs/notes.md).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher

DUPLICATE_SIMILARITY = 0.75
DUPLICATE_SLACK = 1.0  # seconds: lines this close count as overlapping


@dataclass(frozen=True, slots=True)
class Line:
    """One transcribed utterance."""

    id: str
    participant_sid: str
    identity: str
    speaker: str  # the participant's name when it was said
    start: float  # seconds since transcription started
    end: float
    text: str
    language: str
    final: bool = True
    level: float = -100.0  # dBFS of the utterance: which microphone heard it best

    def public(self) -> dict:
        """The line as exports and the API show it (no level)."""
        out = asdict(self)
        out.pop("level")
        return out


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (for comparisons)."""
    return re.findall(r"\w+", text.lower())


def similarity(a: str, b: str) -> float:
    """How alike two sentences are, 0..1, by their words."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 0.0
    return SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def overlaps(a: Line, b: Line, slack: float = DUPLICATE_SLACK) -> bool:
    """Whether two lines were said at about the same time."""
    return a.start <= b.end + slack and b.start <= a.end + slack


@dataclass
class Transcript:
    """The final lines of one meeting, in order of their start."""

    room: str
    started_at: float = field(default_factory=time.time)  # epoch seconds
    lines: list[Line] = field(default_factory=list)
    id: str = ""
    languages: set[str] = field(default_factory=set)
    title: str = ""  # the meeting's name when it has one ("Weekly review"); else the room's

    def add(self, line: Line) -> tuple[bool, str | None]:
        """Add a final line. Returns (kept, replaced): ``kept`` is False when the line is a
        quieter copy of another speaker's line (dropped); ``replaced`` is the id of a line it
        replaces (a quieter copy said first)."""
        for i in range(len(self.lines) - 1, -1, -1):
            other = self.lines[i]
            if other.end < line.start - 30:
                break
            if other.participant_sid == line.participant_sid or not overlaps(line, other):
                continue
            if similarity(line.text, other.text) >= DUPLICATE_SIMILARITY:
                if line.level <= other.level:
                    return False, None
                del self.lines[i]
                self._insert(line)
                return True, other.id
        self._insert(line)
        return True, None

    def _insert(self, line: Line) -> None:
        self.languages.add(line.language)
        i = len(self.lines)
        while i > 0 and self.lines[i - 1].start > line.start:
            i -= 1
        self.lines.insert(i, line)

    def speakers(self) -> list[str]:
        """Who spoke, in order of first words."""
        seen: dict[str, None] = {}
        for line in self.lines:
            seen.setdefault(line.speaker, None)
        return list(seen)

    def to_json(self) -> dict:
        """The whole transcript as a JSON-ready value."""
        return {
            "id": self.id,
            "room": self.room,
            "title": self.title,
            "started_at": self.started_at,
            "languages": sorted(self.languages),
            "speakers": self.speakers(),
            "lines": [line.public() for line in self.lines],
        }

    @classmethod
    def from_json(cls, data: dict) -> Transcript:
        """Read back what to_json wrote."""
        out = cls(
            room=str(data.get("room", "")),
            started_at=float(data.get("started_at", 0.0)),
            id=str(data.get("id", "")),
            languages=set(data.get("languages", [])),
            title=str(data.get("title", "")),
        )
        for item in data.get("lines", []):
            out.lines.append(Line(**{k: v for k, v in item.items() if k in Line.__slots__}))
        return out


# -- exports -------------------------------------------------------------------------------------


def clock(seconds: float, vtt: bool = False) -> str:
    """hh:mm:ss (vtt: hh:mm:ss.mmm)."""
    ms = max(int(round(seconds * 1000)), 0)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}" if vtt else f"{h:02d}:{m:02d}:{s:02d}"


def _vtt_text(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("-->", "->")


def to_webvtt(transcript: Transcript) -> str:
    """WebVTT captions, each cue with its speaker as a voice span."""
    out = ["WEBVTT", ""]
    for i, line in enumerate(transcript.lines, 1):
        end = max(line.end, line.start + 0.5)
        out += [
            str(i),
            f"{clock(line.start, True)} --> {clock(end, True)}",
            f"<v {_vtt_text(line.speaker)}>{_vtt_text(line.text)}",
            "",
        ]
    return "\n".join(out)


def _md(text: str) -> str:
    """Text safe in Markdown: no markup, no links, no HTML from a speaker's words."""
    return re.sub(r"([\\`*_{}\[\]<>()#+|!~])", r"\\\1", text)


def to_markdown(transcript: Transcript, notes: Notes | None = None) -> str:
    """Markdown meeting notes: summary (if any), key points, action items, then the
    transcript (speaker, time, text)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(transcript.started_at))
    out = [f"# Meeting notes: {_md(transcript.title or transcript.room)}", "", f"{when}"]
    speakers = transcript.speakers()
    if speakers:
        out.append(f"Participants who spoke: {', '.join(_md(s) for s in speakers)}")
    out.append("")
    if notes is not None:
        if notes.summary:
            out += ["## Summary", "", _md(notes.summary), ""]
        out += ["## Key points", ""]
        out += [f"- {_md(p.text)} ({_md(p.speaker)}, {clock(p.start)})" for p in notes.key_points]
        out += ["" if notes.key_points else "(none found)", ""]
        out += ["## Action items", ""]
        out += [
            f"- [ ] {_md(p.text)} ({_md(p.speaker)}, {clock(p.start)})" for p in notes.action_items
        ]
        out += ["" if notes.action_items else "(none found)", ""]
    out += ["## Transcript", ""]
    for line in transcript.lines:
        out.append(f"**{_md(line.speaker)}** [{clock(line.start)}]: {_md(line.text)}  ")
    out.append("")
    return "\n".join(out)


# -- notes: extractive, offline ------------------------------------------------------------------

#: words that say nothing on their own (English and French), left out of the word counts
STOPWORDS = set(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our out over own same she should so some
    such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yes
    okay ok well so going get got go like really think know thing things
    au aux avec ce ces cet cette dans de des du elle elles en est et eux il ils je la le les leur
    lui ma mais me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son
    sur ta te tes toi ton tu un une vos votre vous y a ai as avons avez ont ete etre fait faire
    oui non alors donc bien tres tout tous toute toutes plus moins aussi comme si cela ca ici la
    bon voila c est d l j n s t""".split()
)

#: phrases that announce something to do: commitments, requests, deadlines (English, French)
ACTION_PATTERNS = [
    r"\b(i|we|you|he|she|they)('ll| will| shall| need to| have to| must| should)\b",
    r"\b(let's|let us|please|action item|to do|todo|follow up|make sure|don't forget)\b",
    r"\b(by|before|until) (monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|"
    r"next week|the end of)\b",
    r"\b(je vais|nous allons|on va|il faut|il faudra|tu dois|vous devez|nous devons|"
    r"je dois|merci de|pensez à|n'oubliez pas|à faire|d'ici|avant (lundi|mardi|mercredi|"
    r"jeudi|vendredi|demain|la fin))\b",
    r"\b(je m'en occupe|je me charge|je m'engage|on se charge)\b",
]
_ACTION = re.compile("|".join(ACTION_PATTERNS), re.IGNORECASE)


@dataclass(frozen=True)
class Notes:
    """What the notes say beyond the transcript."""

    key_points: list[Line]
    action_items: list[Line]
    summary: str = ""

    def to_json(self) -> dict:
        return {
            "summary": self.summary,
            "key_points": [p.public() for p in self.key_points],
            "action_items": [p.public() for p in self.action_items],
        }


def _content(text: str) -> list[str]:
    from unicodedata import normalize

    plain = normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return [w for w in re.findall(r"[a-z0-9']+", plain) if len(w) > 2 and w not in STOPWORDS]


def key_points(transcript: Transcript, limit: int = 5) -> list[Line]:
    """The lines that say most of what the meeting was about (extractive, offline).

    Each word's weight is how often it comes in the whole meeting (stopwords of English and
    French left out); a line scores the mean weight of its content words, times a small bonus
    for length (up to 12 content words) — so a line that gathers the meeting's recurring topics
    wins over small talk. Lines of fewer than 4 content words, and near-repeats of a point
    already chosen, are skipped. The best ``limit`` lines are returned in meeting order."""
    lines = transcript.lines
    freq = Counter(w for line in lines for w in set(_content(line.text)))
    scored = []
    for line in lines:
        content = _content(line.text)
        if len(content) < 4:
            continue
        score = sum(freq[w] for w in content) / len(content) * min(len(content), 12) ** 0.5
        scored.append((score, line))
    chosen: list[Line] = []
    for _score, line in sorted(scored, key=lambda item: -item[0]):
        if any(similarity(line.text, c.text) > 0.6 for c in chosen):
            continue
        chosen.append(line)
        if len(chosen) >= limit:
            break
    return sorted(chosen, key=lambda line: line.start)


def action_items(transcript: Transcript, limit: int = 20) -> list[Line]:
    """Lines that announce something to do: a commitment ("I will", "je vais"), a request
    ("please", "merci de", "il faut"), or a deadline ("by Friday", "avant lundi") — see
    ACTION_PATTERNS. Questions are skipped; meeting order."""
    out = []
    for line in transcript.lines:
        if line.text.rstrip().endswith("?"):
            continue
        if _ACTION.search(line.text.replace("\u2019", "'")):
            out.append(line)
            if len(out) >= limit:
                break
    return out


def make_notes(transcript: Transcript, summary: str = "") -> Notes:
    """Key points and action items of a transcript, with an optional summary."""
    return Notes(key_points(transcript), action_items(transcript), summary)
