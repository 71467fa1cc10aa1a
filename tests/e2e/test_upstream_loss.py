"""Loss between a publisher and the server is repaired (issue 13): the server notices the gaps
in what it receives, NACKs the publisher (which answers in RTX, unwrapped here), and forwards the
repaired packets; a subscriber is left with almost none of the publisher's loss. 5 % of the
publisher's RTP datagrams are dropped at the server's socket (this kernel has no netem)."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from tests.support.seqtap import SeqTap
from visio_client import Client
from visio_client.media import PatternVideoTrack
from visio_sfu.stats import DropReason

pytestmark = pytest.mark.timeout(120)


async def metric(server: LocalServer, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


async def test_five_percent_loss_from_the_publisher_is_repaired():
    rng = random.Random(11)
    async with LocalServer() as server:
        alice = Client(server.url, server.token("loss", "alice"))
        bob = Client(server.url, server.token("loss", "bob"))
        await alice.connect()
        await bob.connect()
        # a camera-like stream: several packets a frame, as loss repair has to deal with
        await alice.publish(PatternVideoTrack(5, width=640, height=480, fps=30, grain=40))
        room = server.sfu.room("loss")
        publisher = room.participants[alice.joined["participant"]["sid"]]
        transport = publisher.publishing.transport
        deliver = transport._deliver_rtp
        dropped = 0

        def lossy(data: bytes, now: float | None = None) -> None:
            nonlocal dropped
            if rng.random() < 0.05:
                dropped += 1
                return
            deliver(data, now)

        transport._deliver_rtp = lossy  # RTP only: RTCP (the server's NACKs) goes through
        # bob counts the packets it receives twice (its SRTP would drop a replay, so count
        # before: at the server's send)
        seen: set[int] = set()
        bob_duplicates = 0
        bob_p = room.participants[bob.joined["participant"]["sid"]]

        def watch_sends() -> None:
            send = bob_p.subscriber.transport.send_rtp

            def counting(data: bytes | bytearray) -> bool:
                nonlocal bob_duplicates
                key = int.from_bytes(data[2:4], "big") | int.from_bytes(data[8:12], "big") << 16
                if key in seen:
                    bob_duplicates += 1
                seen.add(key)
                return send(data)

            for dt in bob_p.subscriber.downtracks.values():
                dt._send = counting

        await until(lambda: len(bob.remote_tracks) == 1, what="bob receives the video")
        watch_sends()
        tap = SeqTap(bob)  # bob's media sequence numbers, direct or in RTX (not getStats)
        await check_video(bob.remote_tracks[0], 5)
        start = time.monotonic()
        dropped_at_start = dropped
        await until(lambda: dropped - dropped_at_start >= 40, timeout=40, what="40 packets dropped")
        end = time.monotonic()
        dropped_here = dropped - dropped_at_start
        await asyncio.sleep(1.5)  # the last repairs arrive
        expected, lost = tap.loss(start, end, grace=1.5)
        received = expected - lost
        residual = lost / max(expected, 1)
        print(
            f"dropped upstream {dropped_here}, bob received {received} of {expected} media "
            f"packets, lost {lost}: {residual:.2%}"
        )
        assert dropped_here >= 0.02 * received, "the loss was applied"
        # 5 % dropped: about 20 media packets reached bob for each one dropped (getStats, whose
        # RTX counters overwrite the media's, read 19 received in all)
        assert received >= 8 * dropped_here, (received, dropped_here)
        assert residual < 0.005, (received, lost, dropped_here)
        assert await metric(server, "visio_nacks_out_total") > 0
        repaired = await metric(server, "visio_repaired_total")
        assert repaired >= 0.8 * dropped_here, (repaired, dropped)
        # the publisher answered in RTX (aiortc does when it is negotiated): unwrapped; and a
        # packet went to bob twice only when bob asked (a redundant retransmission from the
        # publisher is not forwarded again)
        video = next(iter(publisher.tracks.values()))
        assert video.rtx_payload_type is not None
        assert video.drops[DropReason.PADDING] == 0
        answers = sum(dt.retransmits for dt in bob_p.subscriber.downtracks.values())
        # (an answer may resend a packet sent before the counting began: <=, not ==)
        assert bob_duplicates <= answers, (bob_duplicates, answers)  # only bob's own NACKs
        await check_video(bob.remote_tracks[0], 5)  # and it still decodes
        for c in (alice, bob):
            await c.close()
