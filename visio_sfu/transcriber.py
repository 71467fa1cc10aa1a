"""Transcriber: one room's live transcription and captions.

It watches the room's tracks (``Room.watch_tracks``) and attaches an :class:`AudioTap` to every
audio track; every ``PUMP_INTERVAL`` it hands what the taps kept to the worker processes
(:class:`visio_sfu.asr.pool.WorkerPool`), which decode, voice-gate and recognise. What comes back
becomes :class:`Caption` events for everyone in the room (partial lines, then the final one with
the same ``line_id``) and final lines in its :class:`Transcript`, each labelled with the
participant whose microphone it came from. :class:`TranscriptionStatus` tells everyone when it
starts and stops (the "transcription on" indicator).

Nothing here decodes or recognises: the event loop only moves lists of packets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .asr.pool import WorkerPool
from .audiotap import AudioTap
from .events import Event
from .participant import Participant
from .publisher import Publisher
from .room import Room
from .transcript import Line, Transcript

logger = logging.getLogger(__name__)

PUMP_INTERVAL = 0.1  # seconds between two hand-overs of tapped audio to the workers
BACKLOG_LIMIT = 1500  # packets per track waiting for a full worker queue (30 s), then dropped


@dataclass(frozen=True, slots=True)
class Caption(Event):
    """A transcribed line for the room: partial (may still change) or final. A later caption
    with the same ``line_id`` replaces it; a final with empty text removes it (a duplicate of
    another speaker's line); ``replaces`` names another line this one supersedes."""

    line_id: str
    participant_sid: str
    identity: str
    name: str
    track_sid: str
    start: float  # seconds since transcription started
    end: float
    text: str
    final: bool
    language: str
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionStatus(Event):
    """Transcription on or off in the room (everyone sees it), and why it stopped if it
    failed."""

    active: bool
    language: str
    started_at: float  # epoch seconds; 0 when off
    by: str  # who turned it on or off ("" for the server or an administrator)
    error: str = ""


@dataclass
class _Track:
    tap: AudioTap
    publisher: Publisher
    participant: Participant
    language: str
    backlog: list[tuple[float, list]]
    backlog_packets: int = 0
    opened: bool = False
    closing: bool = False


class Transcriber:
    """Live transcription of one room."""

    def __init__(
        self,
        room: Room,
        pool: WorkerPool,
        language: str = "fr",
        languages: dict[str, str] | None = None,
        transcript: Transcript | None = None,
        on_line: Callable[[Line], None] | None = None,
        partials: bool = True,
        shared: Callable[[Participant], bool] | None = None,
    ) -> None:
        self.room = room
        self.pool = pool
        self.language = language
        #: identity -> language of their speech (shared with the caller: kept across restarts)
        self.languages = languages if languages is not None else {}
        self.partials = partials  # captions while people speak (else final lines only)
        #: whether a participant's microphone is a shared room microphone whose voices are told
        #: apart ("Room (speaker 2)", experimental: visio_sfu/asr/speakers.py)
        self.shared = shared
        self.transcript = transcript or Transcript(room.name)
        self.on_line = on_line
        self.tracks: dict[str, _Track] = {}  # track sid -> state
        self.active = False
        self.started_mono = 0.0
        self.dropped = 0  # packets lost to overload (tap or backlog full)
        self.errors = 0
        self.last_error = ""
        self._task: asyncio.Task | None = None
        self._closed = asyncio.Event()

    # -- control -------------------------------------------------------------------------------
    def start(self) -> None:
        """Attach to every audio track of the room, now and later."""
        if self.active:
            return
        self.active = True
        self.started_mono = time.monotonic()
        if not self.transcript.lines:
            self.transcript.started_at = time.time()
        self._closed.clear()
        self.room.watch_tracks(self._on_track)
        self._task = asyncio.ensure_future(self._pump())

    async def stop(self, drain: float = 15.0) -> None:
        """Stop listening; lines of utterances already heard still arrive (within ``drain``
        seconds) and are added to the transcript."""
        self.halt()
        await self.drained(drain)

    def halt(self) -> None:
        """Stop listening now (no more audio is taken); the workers finish what they hold."""
        if not self.active:
            return
        self.active = False
        try:
            self.room.track_watchers.remove(self._on_track)
        except ValueError:
            pass
        self._flush_taps()
        self._closed.clear()
        for sid, state in list(self.tracks.items()):
            state.publisher.detach(state.tap)
            self._close_track(sid, state)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def drained(self, timeout: float = 15.0) -> None:
        """Wait (at most ``timeout`` seconds) for the lines of what was heard before halt."""
        if self.tracks:
            try:
                await asyncio.wait_for(self._closed.wait(), timeout)
            except TimeoutError:
                logger.warning("room %s: transcription lines still pending at stop", self.room.name)
        if not self.active:
            self.tracks.clear()

    def set_language(self, language: str | None, identity: str | None = None) -> None:
        """The room's language (identity None) or one participant's (None: the room's again),
        from their next utterance on."""
        if identity is None:
            if language is not None:
                self.language = language
        elif language is None:
            self.languages.pop(identity, None)
        else:
            self.languages[identity] = language
        for sid, state in self.tracks.items():
            wanted = self.languages.get(state.participant.identity, self.language)
            if wanted != state.language and state.opened:
                state.language = wanted
                self.pool.set_language(sid, wanted)

    def status(self, by: str = "", error: str = "") -> TranscriptionStatus:
        """The status event for the room as it is now."""
        return TranscriptionStatus(
            self.active,
            self.language,
            self.transcript.started_at if self.active else 0.0,
            by,
            error,
        )

    # -- tracks ------------------------------------------------------------------------------
    def _on_track(self, participant: Participant, track: Publisher) -> None:
        if track.kind != "audio" or track.sid in self.tracks or not self.active:
            return
        language = self.languages.get(participant.identity, self.language)
        state = _Track(AudioTap(), track, participant, language, [])
        self.tracks[track.sid] = state
        state.opened = self.pool.open(
            track.sid,
            language,
            functools.partial(self._on_result, track.sid),
            self.partials,
            self.shared is not None and self.shared(participant),
        )
        if not state.opened:
            self.tracks.pop(track.sid, None)
            self._error("no transcription worker is running")
            return
        track.attach(state.tap)

    def _close_track(self, sid: str, state: _Track) -> None:
        if not state.closing:
            state.closing = True
            self._send(sid, state)
            self.pool.close_stream(sid)

    async def _pump(self) -> None:
        while self.active:
            await asyncio.sleep(PUMP_INTERVAL)
            try:
                self._flush_taps()
            except Exception:
                logger.exception("room %s: transcription pump failed", self.room.name)

    def _flush_taps(self) -> None:
        for sid, state in list(self.tracks.items()):
            if state.closing:
                continue
            self._send(sid, state)
            if state.tap.closed:  # unpublished, or its participant left
                self._close_track(sid, state)
            elif state.participant.sid not in self.room.participants:  # moved to another room
                state.publisher.detach(state.tap)
                self._close_track(sid, state)

    def _send(self, sid: str, state: _Track) -> None:
        batch = state.tap.take()
        if batch is not None:
            state.backlog.append(batch)
            state.backlog_packets += len(batch[1])
        while state.backlog:
            first, packets = state.backlog[0]
            if not self.pool.send_audio(sid, first, packets):
                break
            state.backlog.pop(0)
            state.backlog_packets -= len(packets)
        while state.backlog_packets > BACKLOG_LIMIT:  # far behind: drop the oldest audio
            _first, packets = state.backlog.pop(0)
            state.backlog_packets -= len(packets)
            self.dropped += len(packets)
        if state.tap.dropped:
            self.dropped += state.tap.dropped
            state.tap.dropped = 0

    # -- results -------------------------------------------------------------------------------
    def _on_result(self, sid: str, msg: tuple) -> None:
        kind = msg[0]
        state = self.tracks.get(sid)
        if kind == "closed":
            if state is not None:
                state.publisher.detach(state.tap)  # also when its worker died
            self.tracks.pop(sid, None)
            if not self.tracks:
                self._closed.set()
            return
        if kind == "error":
            self._error(str(msg[2]))
            return
        if kind != "line" or state is None:
            return
        _kind, _key, utterance, final, start, end, text, level, language, speaker = msg
        p = state.participant
        name = p.name or p.identity
        line = Line(
            id=f"{sid}-{utterance}",
            participant_sid=p.sid,
            identity=p.identity,
            speaker=f"{name} (speaker {speaker})" if speaker else name,
            start=round(max(start - self.started_mono, 0.0), 2),
            end=round(max(end - self.started_mono, 0.0), 2),
            text=text,
            language=language,
            final=final,
            level=round(level, 1),
        )
        replaces = None
        if final:
            kept, replaces = self.transcript.add(line)
            if not kept:  # another microphone heard this louder: remove its partial
                self._broadcast(line, "")
                return
            if self.on_line is not None:
                self.on_line(line)
        self._broadcast(line, line.text, replaces)

    def _broadcast(self, line: Line, text: str, replaces: str | None = None) -> None:
        sid = line.id.rsplit("-", 1)[0]
        self.room.broadcast(
            Caption(
                line.id,
                line.participant_sid,
                line.identity,
                line.speaker,
                sid,
                line.start,
                line.end,
                text,
                line.final,
                line.language,
                replaces,
            )
        )

    def _error(self, message: str) -> None:
        self.errors += 1
        if message != self.last_error:  # once per new problem: logged, and the room told
            logger.warning("room %s: transcription: %s", self.room.name, message)
            if self.active:
                self.room.broadcast(self.status(error=message))
        self.last_error = message
