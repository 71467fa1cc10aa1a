"""PublishConnection on a fake transport: announced tracks matched by msid then kind, limits and
grants, a section that stops sending unpublishes its track, bundle-only sections are sending."""

from __future__ import annotations

import pytest

from tests.support.fake_transport import FakeTransport
from visio_sfu.errors import PermissionDenied, TransportError
from visio_sfu.publish import PublishConnection
from visio_sfu.stats import Stats

HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def section(kind: str, mid: str, direction: str = "sendonly", msid: str = "", port: int = 9) -> str:
    pt = 96 if kind == "video" else 111
    lines = [f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}", f"a=mid:{mid}", f"a={direction}"]
    if msid:
        lines.append(f"a=msid:s {msid}")
    return "\r\n".join(lines) + "\r\n"


def connection(allowed=lambda source: True, max_tracks: int = 4):
    events: list[tuple[str, str]] = []
    conn = PublishConnection(
        "PA_me",
        allowed,
        Stats(),
        max_tracks,
        on_published=lambda t: events.append(("published", t.sid)),
        on_unpublished=lambda t: events.append(("unpublished", t.sid)),
        on_failed=lambda reason: events.append(("failed", reason)),
        transport_factory=FakeTransport,
    )
    return conn, events


async def test_announced_tracks_are_matched_and_unpublished_when_they_stop():
    conn, events = connection()
    cam = conn.add_track("cam-1", "video", "camera", "Cam", 640, 480)
    share = conn.add_track("scr-1", "video", "screen_share")
    await conn.offer(
        HEAD + section("video", "0", msid="scr-1") + section("video", "1", msid="cam-1")
    )
    by_mid = {t.mid: t for t in conn.tracks.values()}
    assert by_mid["0"].sid == share.sid and by_mid["0"].source == "screen_share"
    assert by_mid["1"].sid == cam.sid and by_mid["1"].name == "Cam"
    assert [e[0] for e in events] == ["published", "published"]
    await conn.offer(HEAD + section("video", "0", "inactive") + section("video", "1", msid="cam-1"))
    assert events[-1] == ("unpublished", share.sid) and list(conn.tracks) == [cam.sid]
    assert by_mid["0"].closed
    await conn.close()
    assert conn.transport.closed


async def test_a_bundle_only_section_is_sending_and_a_rejected_one_is_not():
    conn, events = connection()
    offer = (
        HEAD
        + section("video", "0")
        + section("audio", "1", port=0).replace("a=sendonly", "a=sendonly\r\na=bundle-only")
        + section("audio", "2", port=0)
    )
    await conn.offer(offer)
    assert sorted(t.kind for t in conn.tracks.values()) == ["audio", "video"]
    assert {t.mid for t in conn.tracks.values()} == {"0", "1"}


async def test_limits_and_grants():
    conn, _ = connection(allowed=lambda source: source in (None, "microphone"), max_tracks=2)
    with pytest.raises(PermissionDenied):
        conn.add_track("c", "video", "camera")
    with pytest.raises(ValueError):
        conn.add_track("x", "text", "")
    with pytest.raises(ValueError):
        conn.add_track("x", "audio", "hologram")
    conn.add_track("m1", "audio")
    conn.add_track("m2", "audio")
    with pytest.raises(ValueError):
        conn.add_track("m3", "audio")
    with pytest.raises(TransportError):  # more sections than tracks allowed
        await conn.offer(HEAD + "".join(section("audio", str(i)) for i in range(3)))
    # an unannounced camera of someone allowed only a microphone is never published
    await conn.offer(HEAD + section("video", "0") + section("audio", "1", msid="m1"))
    assert [t.kind for t in conn.tracks.values()] == ["audio"]


async def test_an_offer_after_leaving_is_refused_and_leaks_nothing():
    conn, _ = connection()
    await conn.close()
    FakeTransport.instances.clear()
    with pytest.raises(TransportError):
        await conn.offer(HEAD + section("audio", "0"))
    assert FakeTransport.instances == []
