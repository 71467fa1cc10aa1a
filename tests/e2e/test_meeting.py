"""Three real aiortc participants through a real visio-sfu server over DTLS-SRTP on 127.0.0.1.

Each publishes a video of its own colour and an audio tone of its own frequency; each decodes
what it receives and checks it came from the right publisher. The server runs under the codec
guard: it must never construct a decoder or an encoder.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.media import check_audio, check_video, join, until
from tests.support.server import ServerProcess
from visio_client import Client

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def guarded_server(tmp_path: Path):
    guard = tmp_path / "codecs.log"
    server = ServerProcess(guard_file=str(guard))
    yield server, guard
    server.stop()


def check_metrics(server: ServerProcess) -> None:
    """/metrics: the packet counters and the forwarding-delay histogram of a live meeting."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("visio_participants", None)] == 3
    assert samples[("visio_tracks", None)] == 6
    packets_in = samples[("visio_packets_in_total", None)]
    assert samples[("visio_packets_out_total", None)] > packets_in > 0
    count = samples[("visio_forwarding_delay_seconds_count", None)]
    # one observation per packet received and forwarded (packets arrive while we scrape)
    assert 0.8 * packets_in < count <= samples[("visio_packets_in_total", None)] + 200
    buckets = sorted(
        (float(le), v)
        for (name, le), v in samples.items()
        if name == "visio_forwarding_delay_seconds_bucket"
    )
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False))
    mean = samples[("visio_forwarding_delay_seconds_sum", None)] / count
    assert 0 < mean < 0.05, f"mean forwarding delay {mean * 1e6:.0f} µs"
    assert samples[("visio_event_loop_lag_seconds_count", None)] > 0


async def test_three_participants_exchange_media_without_server_codecs(guarded_server):
    server, guard = guarded_server
    clients = []
    try:
        for i in range(3):
            clients.append(await join(server, "meeting", i))
        index_of = {c.joined["participant"]["sid"]: i for i, c in enumerate(clients)}

        for c in clients:
            await until(lambda c=c: len(c.remote_tracks) >= 4, what="4 remote tracks")
        for i, c in enumerate(clients):
            publishers = {index_of[r.participant_sid] for r in c.remote_tracks}
            assert publishers == {0, 1, 2} - {i}
            for r in c.remote_tracks:
                if r.kind == "video":
                    await check_video(r, index_of[r.participant_sid])
                else:
                    await check_audio(r, index_of[r.participant_sid])

        check_metrics(server)

        # one leaves mid-call: the others are told and renegotiate, nothing of it is left
        stats_before = server.get("/dev/stats")
        leaver = clients.pop()
        leaver_sid = leaver.joined["participant"]["sid"]
        await leaver.leave()
        for c in clients:
            left = await c.wait_for(
                lambda m: (
                    m.get("type") == "participant_left" and m["participant"]["sid"] == leaver_sid
                )
            )
            assert left["reason"] == "left"
            await c.wait_for(
                lambda m: (
                    m.get("type") == "offer"
                    and m.get("target") == "subscriber"
                    and all(t["participant"] != leaver_sid for t in m["tracks"])
                )
            )
        stats = await until(
            lambda: (s := server.get("/dev/stats"))["participants"] == 2 and s, what="2 left"
        )
        assert stats["tracks"] == 4 and stats["downtracks"] == 4
        assert stats["transports"] == 4  # publish + subscribe for each of the two
        assert stats_before["transports"] == 6
        # totals count the leaver's closed tracks too: Prometheus counters never go down
        for counter in ("packets_in", "bytes_in", "packets_out", "bytes_out"):
            assert stats[counter] >= stats_before[counter], counter
        await until(
            lambda: server.get("/dev/stats")["participant_objects"] == 2,
            timeout=5,
            what="the leaver's Participant object to be freed",
        )
        # the two remaining still receive each other
        for c in clients:
            for r in c.remote_tracks:
                if (
                    r.kind == "video"
                    and r.participant_sid in index_of
                    and (r.participant_sid != leaver_sid)
                ):
                    await check_video(r, index_of[r.participant_sid], frames=3)
    finally:
        for c in clients:
            await c.close()
    guard_log = guard.read_text() if guard.exists() else ""
    assert guard_log == "", f"the server built a codec:\n{guard_log[:2000]}"


async def test_nack_is_answered_from_the_cache():
    server = ServerProcess()
    pub = sub = None
    try:
        pub = await join(server, "nack", 0)
        sub = Client(server.url, server.token("nack", "sub"))
        await sub.connect()
        await until(lambda: any(r.kind == "video" for r in sub.remote_tracks), what="video")
        video = next(r for r in sub.remote_tracks if r.kind == "video")
        await check_video(video, 0, frames=3)

        # drop 1 of every 7 incoming video packets at the subscriber, once each, before
        # decryption as a real loss would (SRTP leaves the RTP header in clear); the server
        # resends them on the RTX stream the subscriber negotiated (RFC 4588: its own payload
        # type and SSRC, the original sequence number inside the encrypted payload)
        video_transceiver = next(t for t in sub.subscriber.getTransceivers() if t.kind == "video")
        video_pt = video_transceiver._codecs[0].payloadType
        rtx_pt = next(c.payloadType for c in video_transceiver._codecs if c.name == "rtx")
        ice = video_transceiver.receiver.transport.transport._connection
        original = ice.data_received
        dropped: set[int] = set()
        received_again: list[int] = []

        def lossy(data: bytes, component: int) -> None:
            if len(data) >= 12 and 128 <= data[0] < 192 and (data[1] & 0x7F) == video_pt:
                seq = int.from_bytes(data[2:4], "big")
                if seq % 7 == 0 and seq not in dropped and len(dropped) < 30:
                    dropped.add(seq)
                    return
            if len(data) >= 12 and 128 <= data[0] < 192 and (data[1] & 0x7F) == rtx_pt:
                received_again.append(int.from_bytes(data[2:4], "big"))
            original(data, component)

        ice.data_received = lossy
        try:
            await until(lambda: len(received_again) >= 5, timeout=20, what="retransmissions")
        except AssertionError:
            print("dropped", sorted(dropped), "again", received_again, server.get("/dev/stats"))
            raise
        # the RTX stream has its own numbering, one after the other
        assert received_again == sorted(received_again), received_again
        assert len(received_again) <= len(dropped)  # only what was lost (and asked for)
        stats = server.get("/dev/stats")
        assert stats["retransmits"] >= 5
        assert stats["nacks"] >= 1
        await check_video(video, 0, frames=3)
    finally:
        for c in (pub, sub):
            if c is not None:
                await c.close()
        server.stop()
