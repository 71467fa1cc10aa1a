"""How LiveKitSession.handle() tells bad input from a server bug (on fake transports): a
request it refuses (unknown track, unparsable candidate, one track too many) is logged at
INFO and dropped; any other exception in a handler, KeyError and ValueError included, is a
bug, logged at ERROR with its traceback, and the session goes on serving the client."""

from __future__ import annotations

import logging

from livekit.protocol import models, rtc

from signaling.auth import Identity, VideoGrant
from signaling.config import Config
from signaling.livekit import session as lk
from tests.support.fake_transport import FakeTransport
from visio_sfu import SFU


class _NoSocket:
    closed = False

    async def close(self) -> None:
        self.closed = True


def _frame(**message: object) -> bytes:
    return rtc.SignalRequest(**message).SerializeToString()  # type: ignore[arg-type]


async def test_refusals_are_info_and_bugs_are_errors(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="signaling.livekit.session")
    sfu = SFU(transport_factory=FakeTransport)
    sfu.get_or_create_room("r")
    who = Identity(
        "eve",
        "",
        "",
        "key",
        VideoGrant(room="r", room_join=True, can_update_own_metadata=True),
        0.0,
    )
    s = lk.LiveKitSession(_NoSocket(), who, sfu, Config())  # type: ignore[arg-type]
    await s.join()
    assert s.participant is not None
    s.participant.publishing.max_tracks = 1
    refused = [
        _frame(mute=rtc.MuteTrackRequest(sid="TR_nope", muted=True)),
        _frame(trickle=rtc.TrickleRequest(candidateInit="{not json")),
        _frame(trickle=rtc.TrickleRequest(candidateInit="[" * 5000)),
        _frame(trickle=rtc.TrickleRequest(candidateInit="[]")),
        _frame(add_track=rtc.AddTrackRequest(cid="a", type=models.TrackType.AUDIO)),
        _frame(add_track=rtc.AddTrackRequest(cid="b", type=models.TrackType.AUDIO)),
        _frame(subscription=rtc.UpdateSubscription(track_sids=["TR_nope"], subscribe=True)),
        _frame(track_setting=rtc.UpdateTrackSettings(track_sids=["TR_nope"], disabled=True)),
    ]
    for data in refused:
        await s.handle(data)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    infos = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("mute refused: no track 'TR_nope'" in m for m in infos), infos
    assert sum("trickle refused: candidateInit is not" in m for m in infos) == 3, infos
    assert any("add_track refused: at most 1 tracks" in m for m in infos), infos

    for exc in (ValueError("operands could not be broadcast"), KeyError("TR_x")):

        def broken(*args: object, exc: Exception = exc, **kwargs: object) -> None:
            raise exc

        caplog.clear()
        monkeypatch.setattr(type(s.participant), "update", broken)
        meta = rtc.UpdateParticipantMetadata(metadata="m")
        assert await s.handle(_frame(update_metadata=meta)) == "update_metadata"
        (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "update_metadata failed" in error.getMessage() and error.exc_info is not None
        assert error.exc_info[1] is exc
    monkeypatch.undo()
    assert await s.handle(_frame(ping=1)) == "ping"  # still served
    await s.close("left")
    await sfu.close()
