"""One peer connection per participant (Participant ``single_pc``, LiveKit's /rtc/v1): the
client makes every offer; the receiving side fills its receive-only sections with the tracks
to receive, asks for more sections (SectionsWanted) when they run out, releases a removed
track's section for one answer before reusing it (with its munger); and a real aiortc client's
offer, with Chromium's payload types below 96, is answered without a payload type given two
codecs, keeping the rid extensions."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.support.fake_transport import FakeSlot, FakeTransport
from visio_sfu.events import SectionsWanted
from visio_sfu.participant import Participant
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.sdp import TRANSPORT_CC_URI, keep_rid_extensions
from visio_sfu.subscribe import SubscribeConnection


def track(sid: str, kind: str = "video") -> Publisher:
    codec = Codec("video/VP8", 90000, 96) if kind == "video" else Codec("audio/opus", 48000, 111)
    return Publisher(sid, "PA_" + sid, kind, "camera", "0", codec, {}, lambda b: True, 1)


def sections(*kinds: str) -> list[FakeSlot]:
    """The m-sections of a client offer, mids 0, 1, ..."""
    out = []
    for i, kind in enumerate(kinds):
        slot = FakeSlot(kind, None)
        slot.mid = str(i)
        slot.direction = "recvonly"  # what aiortc leaves on a section the client receives on
        out.append(slot)
    return out


async def test_receive_sections_are_filled_asked_for_and_reused():
    events: list = []
    sub = SubscribeConnection("PA_me", events.append, lambda r: None, transport=FakeTransport())
    assert sub.client_offers
    a, b = track("A"), track("B", "audio")
    dt_a, dt_b = sub.add(a), sub.add(b)
    await asyncio.sleep(0)
    assert events == []  # before its first offer: that offer's answer places them

    offer = sections("audio", "video", "video")
    sub.fill(offer, {"0", "1", "2"})
    sub.answered("")
    assert sub.mid_to_track() == {"0": "B", "1": "A"}
    assert [s.direction for s in offer] == ["sendonly", "sendonly", "inactive"]
    assert offer[1].msid == ("PA_A", "A") and dt_a.bound and dt_b.bound
    assert events == []

    # two more cameras: one fits in the free section, the other needs one more
    dt_c, dt_d = sub.add(track("C")), sub.add(track("D"))
    await asyncio.sleep(0)
    assert events == [SectionsWanted(0, 1)]  # asked once, for what is missing
    sub.remove("A")  # its section is inactive in the next answer, not reused by it
    offer = sections("audio", "video", "video", "video")  # the client added mid 3
    sub.fill(offer, {"0", "1", "2", "3"})
    sub.answered("")
    assert sub.mid_to_track() == {"0": "B", "2": "C", "3": "D"}
    assert offer[1].direction == "inactive" and dt_c.bound and dt_d.bound

    # E takes A's section once that was answered inactive, with its munger (one stream)
    munger = dt_a.munger
    events.clear()
    dt_e = sub.add(track("E"))
    await asyncio.sleep(0)
    assert events == [SectionsWanted(0, 0)]  # no new section: just offer again
    offer = sections("audio", "video", "video", "video")
    sub.fill(offer, {"0", "1", "2", "3"})
    sub.answered("")
    assert sub.mid_to_track()["1"] == "E" and dt_e.bound and dt_e.munger is munger
    assert offer[1].msid == ("PA_E", "E")

    # a track removed alone: the client is asked to offer again, which frees its section
    events.clear()
    sub.remove("C")
    await asyncio.sleep(0)
    assert events == [SectionsWanted(0, 0)]
    offer = sections("audio", "video", "video", "video")
    sub.fill(offer, {"0", "1", "2", "3"})
    sub.answered("")
    assert offer[2].direction == "inactive" and "2" not in sub.mid_to_track()
    assert events == [SectionsWanted(0, 0)]  # nothing more to ask
    await sub.close()


async def test_a_client_offer_on_one_connection_publishes_and_receives():
    """A real aiortc client offers receive-only sections and sends a camera, with Chromium's
    low payload types in a receive section; the answer publishes the camera, carries the
    track to receive, gives each payload type one codec, keeps the rid extensions, and the
    client accepts it."""
    events: list = []
    p = Participant("me", emit=events.append, single_pc=True, data_channels=True)
    assert p.single is not None and p.subscriber is not None
    assert p.publishing.transport is p.single and p.subscriber.transport is p.single
    other = track("X")
    p.subscriber.add(other)

    from aiortc.mediastreams import VideoStreamTrack

    client = RTCPeerConnection()
    cam = VideoStreamTrack()
    client.addTrack(cam)  # (first: aiortc would send it on a receive-only section)
    client.addTransceiver("video", direction="recvonly")
    client.addTransceiver("audio", direction="recvonly")
    client.createDataChannel("_reliable")
    await client.setLocalDescription(await client.createOffer())
    # Chromium numbers newer formats below 96 (VP9 as 35 and 37: aiortc would answer both as
    # 103, its own number); it offers the rid extension in every video section
    lines = []
    for line in client.localDescription.sdp.splitlines():
        lines.append(line + (" 35 37" if line.startswith("m=video") else ""))
        if line.startswith("m=video"):
            lines += [
                "a=rtpmap:35 VP9/90000",
                "a=fmtp:35 profile-id=0",
                "a=rtpmap:37 VP9/90000",
                "a=fmtp:37 profile-id=0",
                "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                f"a=extmap:5 {TRANSPORT_CC_URI}",
            ]
    sdp = "\r\n".join(lines) + "\r\n"
    p.publishing.add_track(cam.id, "video", "camera")
    answer, mids = await p.single_offer(sdp)
    assert mids == {"1": "X"}
    assert list(p.tracks.values())[0].kind == "video"  # the camera is published
    received = answer.split("m=")[2]  # mid 1
    assert "a=sendonly" in received and "a=msid:PA_X X" in received
    assert "rtp-stream-id" in received  # kept: Chromium needs it for simulcast later
    assert "a=recvonly" in answer.split("m=")[1]  # mid 0: the camera
    # transport-cc where we send (our send-side estimate) and where the client sends (its
    # own, from our feedback: TwccResponder), under the one id of the bundle
    assert f"a=extmap:5 {TRANSPORT_CC_URI}" in received and "transport-cc" in received
    assert f"a=extmap:5 {TRANSPORT_CC_URI}" in answer.split("m=")[1]
    assert p.subscriber.stamper.ext_id == 5
    assert p.publishing.twcc is not None and p.publishing.twcc.ext_id == 5
    for section in answer.split("m=")[1:]:
        pts = [
            line.split()[0].split(":")[1]
            for line in section.splitlines()
            if line.startswith("a=rtpmap:")
        ]
        assert len(pts) == len(set(pts)), section  # one codec per payload type
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert "Duplicate" not in answer
    await client.close()
    await p.close()


def test_keep_rid_extensions_only_adds_what_was_offered():
    offer = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    )
    answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\nm=audio 9 X 111\r\na=mid:1\r\n"
    out = keep_rid_extensions(offer, answer)
    video, audio = out.split("m=")[1:]
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in video
    assert "extmap" not in audio and "repaired" not in video
    assert keep_rid_extensions(offer, out) == out  # not twice
