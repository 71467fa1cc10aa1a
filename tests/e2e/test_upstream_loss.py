"""Loss between a publisher and the server is repaired (issue 13): the server notices the gaps
in what it receives, NACKs the publisher (which answers in RTX, unwrapped here), and forwards the
repaired packets; a subscriber is left with almost none of the publisher's loss. 5 % of the
publisher's RTP datagrams are dropped at the server's socket (this kernel has no netem)."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import LocalServer
from tests.support.media import check_video, until
from visio_client import Client
from visio_client.media import PatternVideoTrack

pytestmark = pytest.mark.timeout(120)


async def received_and_lost(client: Client) -> tuple[int, int]:
    """(packets received, packets lost) of the video the client receives."""
    received = lost = 0
    for stats in (await client.subscriber.getStats()).values():
        if stats.type == "inbound-rtp" and stats.kind == "video":
            received += stats.packetsReceived
            lost += stats.packetsLost
    return received, lost


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
        await alice.publish(PatternVideoTrack(5, width=640, height=480, fps=30))
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
        await until(lambda: len(bob.remote_tracks) == 1, what="bob receives the video")
        await check_video(bob.remote_tracks[0], 5)
        start = await received_and_lost(bob)
        await asyncio.sleep(8)
        end = await received_and_lost(bob)
        received, lost = end[0] - start[0], end[1] - start[1]
        residual = lost / max(received + lost, 1)
        print(f"dropped upstream {dropped}, bob received {received}, lost {lost}: {residual:.2%}")
        assert dropped > 10, "the loss was applied"
        assert residual < 0.005, (received, lost, dropped)
        assert await metric(server, "visio_nacks_out_total") > 0
        assert await metric(server, "visio_repaired_total") >= dropped * 0.8
        await check_video(bob.remote_tracks[0], 5)  # and it still decodes
        for c in (alice, bob):
            await c.close()
