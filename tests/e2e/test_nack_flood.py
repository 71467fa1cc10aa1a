"""A subscriber that floods NACKs naming recent packets again and again (issue 13: ~1 000
resends per 690-byte datagram, 114x in bytes, the event loop lagging and another room losing
frames) gets a bounded copy: each packet at most once a round trip, within a budget of half the
track's rate (4 KB/s at least, and one second of it saved up). Retransmitted bytes stay within
the track's own bytes, the server's event loop never lags 100 ms, and a canary meeting in
another room keeps its rate."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.media import check_video, until
from tests.support.server import ServerProcess
from visio_client import Client
from visio_client.media import PatternVideoTrack
from visio_sfu.rtp import rtcp

pytestmark = pytest.mark.timeout(150)


def metrics(server: ServerProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(server._fetch("/metrics").decode()):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            out[key] = sample.value
    return out


def room_stats(server: ServerProcess, room: str) -> dict:
    """The server's counters for one room (development mode's /dev/stats)."""
    return next(r for r in server.get("/dev/stats")["per_room"] if r["name"] == room)


def nack_flood(sender: int, media: int, last_seq: int) -> bytes:
    """One datagram of NACKs naming the last 250 packets, over and over (~700 bytes)."""
    fci = b"".join(
        struct.pack("!HH", (last_seq - 250 + 17 * i) & 0xFFFF, 0xFFFF) for i in range(15)
    )
    one = struct.pack("!BBH", 0x80 | rtcp.NACK, rtcp.RTPFB, 2 + len(fci) // 4)
    one += struct.pack("!II", sender, media) + fci
    return one * 10


async def video_frames(client: Client) -> int:
    total = 0
    for stats in (await client.subscriber.getStats()).values():
        if stats.type == "inbound-rtp" and stats.kind == "video":
            total += stats.packetsReceived
    return total


async def test_a_nack_flood_is_bounded_and_harms_no_one_else():
    server = ServerProcess()
    clients: list[Client] = []
    try:

        async def join(room: str, who: str, video: int | None = None) -> Client:
            c = Client(server.url, server.token(room, who, who))
            await c.connect()
            if video is not None:  # camera-like: a few hundred kbit/s, several packets a frame
                await c.publish(PatternVideoTrack(video, width=320, height=240, fps=15, grain=40))
            clients.append(c)
            return c

        await join("attacked", "pub", video=1)
        attacker = await join("attacked", "eve")
        await join("canary", "carol", video=2)
        dave = await join("canary", "dave")
        for c in (attacker, dave):
            await until(lambda c=c: len(c.remote_tracks) == 1, what="video received")
        await check_video(dave.remote_tracks[0], 2)
        # the attacker learns the SSRC and sequence numbers it receives
        seen = {"ssrc": 0, "seq": 0, "own_bytes": 0}
        seqs: set[int] = set()
        dtls = attacker.subscriber.getTransceivers()[0].receiver.transport
        handle = dtls._handle_rtp_data

        async def spy(data: bytes, arrival_time_ms: int) -> None:
            if len(data) >= 12:
                seq, ssrc = (
                    struct.unpack_from("!H", data, 2)[0],
                    struct.unpack_from("!I", data, 8)[0],
                )
                seen["seq"], seen["ssrc"] = seq, ssrc
                if seq not in seqs:
                    seen["own_bytes"] += len(data)
                    seqs.add(seq)
            await handle(data, arrival_time_ms)

        dtls._handle_rtp_data = spy
        await until(lambda: seen["ssrc"], what="the attacker sees packets")
        quiet = await video_frames(dave)
        await asyncio.sleep(3)
        canary_before = await video_frames(dave)
        canary_quiet_rate = (canary_before - quiet) / 3
        before = metrics(server)
        room_before = room_stats(server, "attacked")
        seqs.clear()
        seen["own_bytes"] = 0
        start = time.monotonic()
        sent = 0
        while sent < 400:  # 80 datagrams a second for 5 s, paced by the clock
            await dtls._send_rtp(nack_flood(1, seen["ssrc"], seen["seq"]))
            sent += 1
            await asyncio.sleep(max(start + sent / 80 - time.monotonic(), 0))
        elapsed = time.monotonic() - start
        after = metrics(server)
        room_after = room_stats(server, "attacked")
        canary_after = await video_frames(dave)
        resent = after["visio_retransmits_total"] - before["visio_retransmits_total"]
        own = len(seqs)  # the track's own packets the attacker got in the window
        refused = sum(
            after[f"visio_dropped_total[{r}]"] - before[f"visio_dropped_total[{r}]"]
            for r in ("nack_duplicate", "nack_budget")
        )
        print(
            f"{sent} NACK datagrams: {resent:.0f} resent, {refused:.0f} refused, "
            f"{own:.0f} own packets; {seen}; canary {canary_after - canary_before} packets"
        )
        assert refused > 10 * resent, "most of the flood is refused"
        # the budget: half the track's bytes, or 4 KB/s for a quiet track, plus one second of
        # it. The server's own figures for the attacked room (the attacker's SRTP drops what is
        # resent as replays, and a busy test process reads slowly)
        own_bytes = room_after["bytes_out"] - room_before["bytes_out"]
        own_packets = room_after["packets_out"] - room_before["packets_out"]
        room_resent = room_after["retransmits"] - room_before["retransmits"]
        assert own_bytes / elapsed > 2 * 4000, "the track is above the floor"
        # the stated bound: at most the track's own bytes (the budget aims at half of them,
        # from a smoothed bitrate estimate), plus the second saved up
        allowed = own_bytes * (1 + 1 / elapsed)
        resent_bytes = room_resent * own_bytes / max(own_packets, 1)
        assert resent_bytes <= allowed, (resent_bytes, allowed)
        slow = (
            after["visio_event_loop_lag_seconds_count"]
            - after["visio_event_loop_lag_seconds_bucket[0.1]"]
        ) - (
            before["visio_event_loop_lag_seconds_count"]
            - before["visio_event_loop_lag_seconds_bucket[0.1]"]
        )
        assert slow == 0, f"{slow} event-loop samples lagged over 100 ms"
        canary_rate = (canary_after - canary_before) / elapsed
        assert canary_rate > 0.8 * canary_quiet_rate, (canary_rate, canary_quiet_rate)
        await check_video(dave.remote_tracks[0], 2)
    finally:
        for c in clients:
            await c.close()
        server.stop()
