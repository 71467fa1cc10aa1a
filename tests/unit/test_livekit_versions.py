"""ParticipantInfo versions across LiveKit resumes (signaling/livekit/session.py), on fake
transports: livekit-client ignores an update whose version is below the one it holds, so the
versions a client receives for a participant must keep increasing when it resumes on a new
WebSocket (a new session) and when that participant resumes."""

from __future__ import annotations

import asyncio

from livekit.protocol import models, rtc

from signaling.auth import Identity, VideoGrant
from signaling.config import Config
from signaling.livekit.session import _VERSIONS, GONE_VERSION, LiveKitSession
from tests.support.fake_transport import FakeTransport
from visio_sfu import SFU

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s mic\r\n"
)


class _NoSocket:
    closed = False

    async def close(self) -> None:
        self.closed = True


def _session(sfu: SFU, name: str) -> LiveKitSession:
    grant = VideoGrant(room="r", room_join=True, can_update_own_metadata=True)
    who = Identity(name, "", "", "key", grant, 0.0)
    return LiveKitSession(_NoSocket(), who, sfu, Config())  # type: ignore[arg-type]


def _written(session: LiveKitSession) -> list[rtc.SignalResponse]:
    """What the session would write to its socket now."""
    out: list[rtc.SignalResponse] = []
    while not session._outbox.empty():
        item = session._outbox.get_nowait()
        out += session._convert(item)
    return out


def _infos(messages: list[rtc.SignalResponse], identity: str) -> list[models.ParticipantInfo]:
    out: list[models.ParticipantInfo] = []
    for m in messages:
        kind = m.WhichOneof("message")
        if kind == "join":
            out += [p for p in m.join.other_participants if p.identity == identity]
            if m.join.participant.identity == identity:
                out.append(m.join.participant)
        elif kind == "update":
            out += [p for p in m.update.participants if p.identity == identity]
    return out


def _versions(messages: list[rtc.SignalResponse], identity: str) -> list[int]:
    return [p.version for p in _infos(messages, identity)]


async def _request(session: LiveKitSession, **message: object) -> None:
    await session.handle(rtc.SignalRequest(**message).SerializeToString())  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)


async def test_versions_keep_increasing_when_a_client_resumes():
    """Bob's socket drops and he resumes on a new session: the versions he gets for alice and
    for himself continue above those he got before; alice's metadata and mute after the resume
    reach him with higher versions still. Then alice resumes: bob's versions of her go on
    increasing, and so do hers of him. A departure gets the last version."""
    sfu = SFU(transport_factory=FakeTransport)
    sfu.get_or_create_room("r")
    bob = _session(sfu, "bob")
    await bob.join()
    alice = _session(sfu, "alice")
    await alice.join()
    await _request(
        alice,
        add_track=rtc.AddTrackRequest(cid="mic", type=models.TrackType.AUDIO, name="mic"),
    )
    await _request(alice, offer=rtc.SessionDescription(type="offer", sdp=OFFER, id=1))
    for i in range(3):
        await _request(alice, update_metadata=rtc.UpdateParticipantMetadata(metadata=f"m{i}"))
    before = _written(bob)
    alice_before, bob_before = _versions(before, "alice"), _versions(before, "bob")
    assert len(alice_before) >= 4 and alice_before == sorted(alice_before), alice_before
    assert alice_before[-1] > 3
    (track_sid,) = alice.participant.tracks  # type: ignore[union-attr]

    # bob's WebSocket drops; his client resumes on a new one
    bob_p = bob.participant
    assert bob_p is not None
    await bob.close("disconnected")
    bob = _session(sfu, "bob")
    bob.resume(sfu.room("r"), bob_p)  # type: ignore[arg-type]
    await _request(alice, update_metadata=rtc.UpdateParticipantMetadata(metadata="after"))
    await _request(alice, mute=rtc.MuteTrackRequest(sid=track_sid, muted=True))
    after = _written(bob)
    alice_after, bob_after = _versions(after, "alice"), _versions(after, "bob")
    assert alice_after and min(alice_after) > max(alice_before), (alice_before, alice_after)
    assert bob_after and min(bob_after) > max(bob_before), (bob_before, bob_after)
    last = _infos(after, "alice")[-1]
    assert last.metadata == "after" and [t.muted for t in last.tracks] == [True]
    assert alice_after == sorted(alice_after)

    # now alice's WebSocket drops and she resumes: versions go on increasing on both sides
    alice_seen = _written(alice)
    alice_p = alice.participant
    assert alice_p is not None
    await alice.close("disconnected")
    alice = _session(sfu, "alice")
    alice.resume(sfu.room("r"), alice_p)  # type: ignore[arg-type]
    await _request(alice, mute=rtc.MuteTrackRequest(sid=track_sid, muted=False))
    resumed = _written(alice)
    for identity in ("alice", "bob"):
        old, new = _versions(alice_seen, identity), _versions(resumed, identity)
        assert new and min(new) > max(old), (identity, old, new)
    unmuted = _written(bob)
    assert min(_versions(unmuted, "alice")) > max(alice_after)
    assert [t.muted for t in _infos(unmuted, "alice")[-1].tracks] == [False]

    # alice leaves: bob gets her departure with the last version (nothing follows it)
    await alice.close("left")
    (gone,) = _infos(_written(bob), "alice")
    assert gone.state == models.ParticipantInfo.State.DISCONNECTED
    assert gone.version == GONE_VERSION
    await bob.close("left")
    await sfu.close()


async def test_versions_stop_below_the_departure_version():
    """The shared counter is a uint32 whose last value is a departure's: a participant whose
    counter reached it gets GONE_VERSION - 1 again, never the departure's nor beyond."""
    sfu = SFU(transport_factory=FakeTransport)
    sfu.get_or_create_room("r")
    bob = _session(sfu, "bob")
    await bob.join()
    p = bob.participant
    assert p is not None
    _VERSIONS[p] = GONE_VERSION - 2
    assert [bob._version(p.sid, p) for _ in range(3)] == [GONE_VERSION - 1] * 3
    bob._versions["PA_gone"] = GONE_VERSION + 5  # (one counted before the bound)
    assert bob._version("PA_gone") == GONE_VERSION - 1
    await bob.close("left")
    await sfu.close()
