"""A publisher whose audio section is ``m=audio 0 … a=bundle-only`` (Firefox and GStreamer's
webrtcbin with max-bundle) is heard: the section is active (RFC 8843), its track published and
its RTP forwarded. Checked here with aiortc peers, so it runs wherever the suite runs; the
Firefox and GStreamer browser tests check the same with the real clients."""

from __future__ import annotations

import re

import pytest
from aiortc import RTCSessionDescription

from tests.support.inprocess import LocalServer
from tests.support.media import check_audio, check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.timeout(120)


def bundle_only(sdp: str) -> str:
    """Rewrite every m-section after the first as port 0 with a=bundle-only."""
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    out = [sections[0]]
    for section in sections[1:]:
        first, rest = section.split("\r\n", 1)
        kind, _port, proto = first.split(" ", 2)
        out.append(f"{kind} 0 {proto}\r\na=bundle-only\r\n{rest}")
    return head + "".join(out)


async def test_a_bundle_only_audio_section_is_published_and_forwarded():
    async with LocalServer() as server:
        alice = Client(server.url, server.token("bundle", "alice"))
        bob = Client(server.url, server.token("bundle", "bob"))
        await alice.connect()
        await bob.connect()
        video, audio = PatternVideoTrack(4), ToneAudioTrack(4)
        for track in (video, audio):
            await alice.request({"type": "add_track", "cid": track.id, "kind": track.kind})
            alice.publisher.addTransceiver(track, direction="sendonly")
        offer = await alice.publisher.createOffer()
        await alice.publisher.setLocalDescription(offer)
        sdp = bundle_only(alice.publisher.localDescription.sdp)
        assert re.search(r"^m=audio 0 .*\r\na=bundle-only", sdp, re.M), sdp
        reply = await alice.request({"type": "offer", "target": "publisher", "sdp": sdp})
        await alice.publisher.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        room = server.sfu.room("bundle")
        published = room.participants[alice.joined["participant"]["sid"]].tracks.values()
        assert sorted(t.kind for t in published) == ["audio", "video"]
        await until(lambda: len(bob.remote_tracks) == 2, what="bob receives both tracks")
        kinds = {r.kind: r for r in bob.remote_tracks}
        await check_video(kinds["video"], 4)
        await check_audio(kinds["audio"], 4)
        for c in (alice, bob):
            await c.close()
