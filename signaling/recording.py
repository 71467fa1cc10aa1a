"""Recording (issue 14), the server's side: who may start and stop it, the wire form of its
events, the admin API and where the files go. The recording itself is visio_sfu.recording.

- A participant whose token grants ``roomRecord`` sends ``start_recording`` /
  ``stop_recording`` (docs/protocol.md); ``recording_state`` tells anyone whether the room is
  being recorded and whether they may start or stop it.
- Everyone in the room receives ``recording_started`` and ``recording_stopped`` (who, and why);
  someone who joins a room being recorded receives ``recording_started`` with ``ongoing``.
- Administrators (``roomAdmin``): ``POST /api/rooms/{room}/recording`` starts or stops it,
  ``GET /api/recordings``, ``GET /api/recordings/{id}`` (the manifest),
  ``GET /api/recordings/{id}/files/{name}``, ``DELETE /api/recordings/{id}`` (docs/api.md).
- Files go to ``recordings_dir`` (default ``$XDG_DATA_HOME/visio-sfu/recordings``, that is
  ``~/.local/share/visio-sfu/recordings``), one directory per recording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from visio_sfu import SFU, Room
from visio_sfu.events import (
    LifecycleEvent,
    ParticipantEntered,
    ParticipantExited,
    ParticipantRef,
    RoomFinished,
)
from visio_sfu.recording import (
    ID_PATTERN,
    Recorder,
    RecordingStarted,
    RecordingStopped,
    delete_recording,
    list_recordings,
    read_manifest,
    recording_file,
)

from . import protocol as proto
from . import session as sessions
from .api import AdminAPI, _denied, _error, in_scope
from .auth import printable
from .protocol import ProtocolError
from .titles import TitleLookup, meeting_title

logger = logging.getLogger(__name__)

READY_TIMEOUT = 5.0  # seconds to wait for a recording's directory to be made


def default_recordings_dir(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where recordings go when ``recordings_dir`` is not set: the XDG data directory."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "visio-sfu" / "recordings"


def recordings_dir(config: Any) -> Path:
    """The configured recordings directory (``recordings_dir``), or the default one."""
    configured = getattr(config, "recordings_dir", None)
    return Path(configured).expanduser() if configured else default_recordings_dir()


class RecordingError(Exception):
    """A start or stop the server refuses: ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RecordingService:
    """The recordings of one server: at most one per room at a time."""

    def __init__(self, sfu: SFU, directory: Path) -> None:
        self.sfu = sfu
        self.directory = directory
        self.active: dict[str, Recorder] = {}  # room name -> its recorder
        self.closing: set[Recorder] = set()  # stopped, their files being finished
        #: room name -> the meeting's name, for the manifest (set by signaling/identity.py)
        self.titles: TitleLookup | None = None

    def recorder(self, room_name: str) -> Recorder | None:
        """The recorder of this room, while it records."""
        recorder = self.active.get(room_name)
        return recorder if recorder is not None and not recorder.stopped else None

    async def start(
        self, room: Room, by: ParticipantRef | None = None, requested_by: str = ""
    ) -> Recorder:
        """Start recording ``room``; RecordingError if it is already recorded or the
        directory cannot be written (the room is told in that case too)."""
        title = await meeting_title(self.titles, room.name)
        if room.closed:
            raise RecordingError("not_found", f"room {printable(room.name)!r} is closing")
        current = self.recorder(room.name)
        if current is not None:
            raise RecordingError("already_recording", f"room is being recorded ({current.id})")
        recorder = Recorder(
            room,
            self.directory,
            by,
            requested_by=requested_by,
            on_stopped=self._stopped,
            title=title,
        )
        self.active[room.name] = recorder
        recorder.start()
        error = await recorder.wait_ready(READY_TIMEOUT)
        if error is not None:
            raise RecordingError("recording_failed", f"the recording could not start: {error}")
        return recorder

    def stop(
        self, room_name: str, by: ParticipantRef | None = None, reason: str = "stopped"
    ) -> Recorder:
        """Stop recording a room; RecordingError if it is not being recorded."""
        recorder = self.recorder(room_name)
        if recorder is None:
            raise RecordingError("not_recording", "this room is not being recorded")
        recorder.stop(by, reason)
        return recorder

    def _stopped(self, recorder: Recorder) -> None:
        if self.active.get(recorder.room.name) is recorder:
            del self.active[recorder.room.name]
        self.closing.add(recorder)
        task = asyncio.ensure_future(recorder.wait_closed())
        task.add_done_callback(lambda _t: self.closing.discard(recorder))

    def busy(self, recording_id: str) -> bool:
        """Whether a recording is still being written (not to be deleted)."""
        return any(r.id == recording_id for r in (*self.active.values(), *self.closing))

    def on_event(self, event: LifecycleEvent) -> None:
        """SFU listener: who comes and goes (the manifest), newcomers told, rooms closing."""
        if isinstance(event, ParticipantEntered | ParticipantExited):
            recorder = self.recorder(event.room.name)
            if recorder is None or recorder.room.sid != event.room.sid:
                return
            entered = isinstance(event, ParticipantEntered)
            room = recorder.room
            p = room.participants.get(event.participant.sid)
            if p is not None and p.permissions.hidden:
                return
            recorder.note_participant(event.participant, entered)
            if entered:
                # after the joined answer, which the session sends once room.join returns
                asyncio.get_running_loop().call_soon(self._tell_newcomer, recorder, p)
        elif isinstance(event, RoomFinished):
            recorder = self.recorder(event.room.name)
            if recorder is not None and recorder.room.sid == event.room.sid:
                recorder.stop(None, "room_closed")

    @staticmethod
    def _tell_newcomer(recorder: Recorder, p: Any) -> None:
        if p is not None and not recorder.stopped and recorder.room.participants.get(p.sid) is p:
            p.emit(
                RecordingStarted(recorder.id, int(recorder.started_at * 1000), recorder.by, True)
            )

    async def close(self) -> None:
        """Stop every recording (server shutdown) and wait for their files."""
        for recorder in list(self.active.values()):
            recorder.stop(None, "server_shutdown")
        for recorder in list(self.closing):
            await recorder.wait_closed(10)


# -- the wire ---------------------------------------------------------------------------------


def recording_info(recorder: Recorder) -> dict:
    """A recording under way, as clients see it."""
    return {
        "id": recorder.id,
        "started_at": int(recorder.started_at * 1000),
        "by": proto.participant_ref(recorder.by) if recorder.by is not None else None,
    }


def started_wire(event: RecordingStarted) -> dict:
    return {
        "type": "recording_started",
        "recording": {
            "id": event.recording_id,
            "started_at": event.started_at_ms,
            "by": proto.participant_ref(event.by) if event.by is not None else None,
        },
        "ongoing": event.ongoing,
    }


def stopped_wire(event: RecordingStopped) -> dict:
    return {
        "type": "recording_stopped",
        "recording": event.recording_id,
        "by": proto.participant_ref(event.by) if event.by is not None else None,
        "reason": event.reason,
        "message": event.message,
    }


@dataclass(frozen=True)
class StartRecording:
    """start_recording: record the room (roomRecord)."""

    @classmethod
    def parse(cls, msg: dict) -> StartRecording:
        return cls()


@dataclass(frozen=True)
class StopRecording:
    """stop_recording: stop recording the room (roomRecord)."""

    @classmethod
    def parse(cls, msg: dict) -> StopRecording:
        return cls()


@dataclass(frozen=True)
class RecordingStateRequest:
    """recording_state: is the room recorded, may I start or stop it?"""

    @classmethod
    def parse(cls, msg: dict) -> RecordingStateRequest:
        return cls()


SERVICES: weakref.WeakKeyDictionary[SFU, RecordingService] = weakref.WeakKeyDictionary()


def _service(session: Any) -> RecordingService:
    service = SERVICES.get(session.sfu)
    if service is None:
        raise ProtocolError("unavailable", "recording is not set up on this server")
    return service


def _may_record(session: Any) -> bool:
    return bool(session.identity.grant.room_record)


def _state(service: RecordingService, room: Room, session: Any) -> proto.Reply:
    recorder = service.recorder(room.name)
    return proto.Reply(
        "recording_state",
        {
            "recording": recording_info(recorder) if recorder is not None else None,
            "can_record": _may_record(session),
        },
    )


async def on_start_recording(session: Any, req: StartRecording) -> proto.Reply:
    service = _service(session)
    p = session._joined()
    if not _may_record(session):
        raise sessions.PermissionDenied("the token does not grant roomRecord")
    room = session._room()
    try:
        recorder = await service.start(room, p.ref())
    except RecordingError as exc:
        raise ProtocolError(exc.code, str(exc)) from None
    # the recording started, even if a write already stopped it (a full disk can, before this
    # answer goes out): the answer names it; recording_stopped tells the rest
    return proto.Reply(
        "recording_state",
        {"recording": recording_info(recorder), "can_record": _may_record(session)},
    )


async def on_stop_recording(session: Any, req: StopRecording) -> proto.Reply:
    service = _service(session)
    p = session._joined()
    if not _may_record(session):
        raise sessions.PermissionDenied("the token does not grant roomRecord")
    room = session._room()
    try:
        service.stop(room.name, p.ref())
    except RecordingError as exc:
        raise ProtocolError(exc.code, str(exc)) from None
    return _state(service, room, session)


async def on_recording_state(session: Any, req: RecordingStateRequest) -> proto.Reply:
    service = _service(session)
    return _state(service, session._room(), session)


# -- admin API --------------------------------------------------------------------------------


class RecordingAPI:
    """Recording under /api (roomAdmin on the room recorded)."""

    def __init__(self, api: AdminAPI, service: RecordingService | None) -> None:
        self.api = api
        self.service = service

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/rooms/{room}/recording", self.control),
            web.get("/api/recordings", self.list),
            web.get("/api/recordings/{id}", self.show),
            web.get("/api/recordings/{id}/files/{name}", self.download),
            web.delete("/api/recordings/{id}", self.delete),
        ]

    def _svc(self) -> RecordingService:
        assert self.service is not None
        return self.service

    async def control(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/recording {action: start|stop}"""
        ident, room = await self.api._admin(request)
        body = await self.api._body(request)
        action = self.api._field(body, "action", str, None, limit=8)
        if action not in ("start", "stop"):
            raise _error(400, "bad_request", "field 'action' must be 'start' or 'stop'")
        service = self._svc()
        try:
            if action == "start":
                who = f"admin API ({printable(ident.identity, 64)})"
                recorder = await service.start(room, None, requested_by=who)
            else:
                recorder = service.stop(room.name)
        except RecordingError as exc:
            if exc.code == "recording_failed":
                return web.json_response({"code": exc.code, "message": str(exc)}, status=507)
            raise _error(409 if exc.code != "not_found" else 404, exc.code, str(exc)) from None
        return web.json_response(
            {"room": room.name, "recording": recording_info(recorder), "active": action == "start"}
        )

    async def _manifest(self, request: web.Request) -> tuple[str, dict]:
        """The recording named in the path, if the token administers its room."""
        ident = await self.api._auth(request)
        recording_id = request.match_info["id"]
        if not ident.grant.room_admin:
            raise _error(403, "permission_denied", "the token does not grant roomAdmin")
        if not ID_PATTERN.fullmatch(recording_id):
            raise _error(404, "not_found", "no such recording")
        manifest = await asyncio.to_thread(read_manifest, self._svc().directory, recording_id)
        if manifest is None:
            raise _error(404, "not_found", "no such recording")
        room = str(manifest.get("room", ""))
        if not in_scope(ident.grant, room):
            raise _denied("roomAdmin", room)
        return recording_id, manifest

    async def list(self, request: web.Request) -> web.Response:
        """GET /api/recordings: those of the rooms the token administers"""
        ident = await self.api._auth(request)
        grant = ident.grant
        if not grant.room_admin or not grant.room:
            raise _error(
                403,
                "permission_denied",
                "the token does not grant roomAdmin (on its room, or on every room with '*')",
            )
        service = self._svc()
        items = await asyncio.to_thread(list_recordings, service.directory)
        out = [r for r in items if in_scope(grant, str(r.get("room", "")))]
        for r in out:
            r["active"] = service.busy(str(r["id"]))
        return web.json_response({"recordings": out})

    async def show(self, request: web.Request) -> web.Response:
        """GET /api/recordings/{id}: the manifest"""
        _id, manifest = await self._manifest(request)
        return web.json_response(manifest)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """GET /api/recordings/{id}/files/{name}: one file of the recording"""
        recording_id, _manifest = await self._manifest(request)
        name = request.match_info["name"]
        path = await asyncio.to_thread(recording_file, self._svc().directory, recording_id, name)
        if path is None:
            raise _error(404, "not_found", f"no file '{printable(name, 64)}' in this recording")
        return web.FileResponse(
            path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'}
        )

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/recordings/{id}"""
        recording_id, _manifest = await self._manifest(request)
        if self._svc().busy(recording_id):
            raise _error(409, "recording", "this recording is under way: stop it first")
        if not await asyncio.to_thread(delete_recording, self._svc().directory, recording_id):
            raise _error(404, "not_found", "no such recording")
        return web.json_response({"deleted": recording_id})


def api_routes() -> list[web.RouteDef]:
    """The routes this feature adds to the admin API (for docs/openapi.json's test)."""
    return RecordingAPI(AdminAPI(None, None, None), None).routes()


# -- set-up -----------------------------------------------------------------------------------

RECORDINGS = web.AppKey("recordings", RecordingService)


def setup(app: web.Application) -> None:
    """Add recording to the server (signaling/features.py)."""
    from .app import CONFIG, SFU_KEY, VERIFIER

    sfu = app[SFU_KEY]
    service = RecordingService(sfu, recordings_dir(app[CONFIG]))
    app[RECORDINGS] = service
    SERVICES[sfu] = service
    sfu.listeners.append(service.on_event)
    proto.register_event(RecordingStarted, started_wire)
    proto.register_event(RecordingStopped, stopped_wire)
    sessions.register_handler("start_recording", on_start_recording, StartRecording)
    sessions.register_handler("stop_recording", on_stop_recording, StopRecording)
    sessions.register_handler("recording_state", on_recording_state, RecordingStateRequest)
    api = AdminAPI(sfu, app[VERIFIER], app[CONFIG])
    app.router.add_routes(RecordingAPI(api, service).routes())

    async def stopping(app: web.Application) -> None:
        await service.close()

    app.on_shutdown.insert(0, stopping)
