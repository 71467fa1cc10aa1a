"""Simulcast end to end: three real VP8 layers from an aiortc publisher; subscribers get the
layer their bandwidth (REMB) and display size allow, switched at keyframes; dynacast."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import until
from visio_client import Client
from visio_client.simulcast import SimulcastPublisher
from visio_sfu.rtp import rtcp

pytestmark = pytest.mark.timeout(180)


class CappedSubscriber:
    """A subscriber whose bandwidth estimate we set: aiortc's own REMBs are replaced by ours."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cap = 0
        self.widths: list[int] = []
        self.errors = 0

    def install(self) -> None:
        t = self.client.subscriber.getTransceivers()[0]
        dtls = t.receiver.transport
        send = dtls._send_rtp

        async def without_remb(data: bytes) -> None:
            if any(pt == rtcp.PSFB and fmt == rtcp.REMB for pt, fmt, _ in rtcp.iter_rtcp(data)):
                return
            await send(data)

        dtls._send_rtp = without_remb
        self._send = send
        self._task = asyncio.ensure_future(self._remb_loop())

    async def _remb_loop(self) -> None:
        while True:
            if self.cap:
                await self._send(rtcp.build_remb(1, self.cap, []))
            await asyncio.sleep(0.25)

    async def watch(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.widths.append(frame.width)

    def stop(self) -> None:
        self._task.cancel()


def room_layers(server: LocalServer) -> list[str]:
    """The rids the server wants the simulcast track's publisher to send now."""
    room = server.sfu.room("sc")
    return [rid for t in room.tracks() if t.simulcast for rid in t.active_rids]


async def test_layers_follow_bandwidth_and_size_with_dynacast():
    async with LocalServer() as server:
        pub_client = Client(server.url, server.token("sc", "pub"))
        await pub_client.connect()
        publisher = SimulcastPublisher(pub_client)
        track = await publisher.start()
        assert track["source"] == "camera"
        await until(lambda: all(publisher.sent.values()), what="all layers sent")

        # A: bandwidth-limited subscriber
        a = Client(server.url, server.token("sc", "a"))
        await a.connect()
        await until(lambda: a.remote_tracks, what="A gets the track")
        capped = CappedSubscriber(a)
        capped.cap = 150_000  # below h's rate even with the 10 % hysteresis band
        capped.install()
        watch_a = asyncio.ensure_future(capped.watch(a.remote_tracks[0].track))
        # B: shows the video small (height 90 asks for the 160x90 layer at most)
        b = Client(server.url, server.token("sc", "b"))
        await b.connect()
        await until(lambda: b.remote_tracks, what="B gets the track")
        reply = await b.request({"type": "track_settings", "track": track["sid"], "height": 180})
        assert reply["type"] == "track_settings_updated"
        b_view = CappedSubscriber(b)
        watch_b = asyncio.ensure_future(b_view.watch(b.remote_tracks[0].track))

        # capped: only the low layer is decoded
        await until(lambda: len(capped.widths) >= 20, timeout=20, what="A decodes frames")
        assert set(capped.widths[-10:]) == {160}, capped.widths[-20:]
        # dynacast: nobody wants the 640x360 layer, so the publisher is told to stop it
        # (told now: an earlier message may have stopped it before A and B subscribed)
        await until(
            lambda: "f" not in publisher.active and "f" not in room_layers(server),
            timeout=15,
            what="f switched off",
        )
        layers = [m for m in pub_client.events if m.get("type") == "layers"][-1]
        assert layers["active"][0] == "q" and "f" not in layers["active"]
        sent_f = publisher.sent["f"]
        await asyncio.sleep(1.5)
        assert publisher.sent["f"] == sent_f, "the publisher kept sending a layer nobody wants"

        # lifting the cap moves A up, at a keyframe, without decode errors
        capped.cap = 20_000_000
        before = len(capped.widths)
        await until(lambda: 640 in capped.widths[before:], timeout=20, what="A switches to f")
        switched_at = capped.widths.index(640, before)
        await until(lambda: len(capped.widths) > switched_at + 15, what="frames after switch")
        assert set(capped.widths[switched_at:]) == {640}, "no glitch back after the switch"
        assert "f" in publisher.active, "dynacast switched the layer back on"

        # B asked for 180 lines at most: once its request took effect (the next keyframe of
        # the layer it needs), it no longer gets the 640x360 layer
        await until(lambda: len(b_view.widths) >= 40, what="B decodes frames")
        assert set(b_view.widths[-20:]) == {320}, b_view.widths

        room = server.sfu.room("sc")
        dts = [
            dt
            for p in room.participants.values()
            if p.subscriber
            for dt in p.subscriber.downtracks.values()
        ]
        assert sum(dt.switches for dt in dts) >= 1  # A went up to f (starts are not switches)
        # /metrics shows which layer each subscriber gets and how often it switched
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
            text = await r.text()
        a_sid = a.joined["participant"]["sid"]
        b_sid = b.joined["participant"]["sid"]

        def series(name: str, sid: str) -> float:
            pattern = rf'^{name}{{room="sc",subscriber="{sid}",track="{track["sid"]}"}} (\S+)$'
            found = re.search(pattern, text, re.M)
            assert found, (name, sid, text)
            return float(found.group(1))

        assert series("visio_downtrack_layer", a_sid) == 2  # A gets f since the cap went
        assert series("visio_downtrack_layer", b_sid) <= 1  # B's small view: q or h
        assert series("visio_downtrack_layer_switches_total", a_sid) >= 1
        assert re.search(r'^visio_downtracks_by_layer{layer="2"} 1\.0$', text, re.M), text
        assert float(re.search(r"^visio_layer_switches_total (\S+)$", text, re.M)[1]) >= 1
        for task in (watch_a, watch_b):
            task.cancel()
        capped.stop()
        await publisher.stop()
        for c in (pub_client, a, b):
            await c.close()
        await asyncio.sleep(0)
    assert time.time()
