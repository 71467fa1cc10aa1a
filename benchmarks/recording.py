"""The forwarding path's CPU per packet without and with a recording running.

    python -m benchmarks.recording [--subscribers 10] [--packets 3000] [--rounds 5] [--rate 0]

Real PeerTransports over DTLS-SRTP on 127.0.0.1 (as benchmarks/hotpath.py): a VP8 camera
(frames encoded here, 640x480, packetized at about 1100 bytes) and its packets fed as SRTP
datagrams to the server's UDP protocol object, forwarded through Publisher -> DownTrack ->
PeerTransport to every subscriber's socket, ``--rate`` packets a second (0: as fast as
possible, a burst). Rounds take turns: no recording; a RecordingSink attached and nothing else
(its queue is emptied after the round); a Recorder, whose sink is attached, whose feeder thread
hands the packets to its writer process every 20 ms, and whose writer process writes the WebM
file to a temporary directory meanwhile. Prints, per received packet, the CPU of the event
loop's thread while it forwards the datagrams (``time.thread_time`` around each batch of ten:
the forwarding path itself, the feeder thread and the loop's sleeps excluded), of the whole
server process (the feeder thread included) and of the writer process, medians of the rounds;
and RecordingSink.write alone. Compare figures within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from benchmarks.hotpath import per_call
from benchmarks.peers import connected_pair
from tests.support.recorded_media import encode_video, vp8_payloads
from visio_sfu.downtrack import DownTrack
from visio_sfu.events import ParticipantRef
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.recording import Recorder, RecordingSink
from visio_sfu.rtp.header import build_rtp
from visio_sfu.transport import set_ice_addresses


class _Person:
    """What the Recorder reads of a participant."""

    class permissions:  # noqa: N801 - as a Participant has it
        hidden = False

    sid, identity, name = "PA_pub", "publisher", "Publisher"

    def __init__(self, track: Publisher) -> None:
        self.tracks = {track.sid: track}

    def ref(self) -> ParticipantRef:
        return ParticipantRef(self.sid, self.identity, self.name)


class _Room:
    """What the Recorder reads of a room: one publisher and its camera."""

    name, sid = "bench", "RM_bench"

    def __init__(self, person: _Person) -> None:
        self.person = person
        self.track_watchers: list = []

    def visible(self) -> list:
        return [self.person]

    def broadcast(self, event: object, exclude: object = None) -> None:
        pass

    def watch_tracks(self, watcher) -> None:
        self.track_watchers.append(watcher)
        for track in self.person.tracks.values():
            watcher(self.person, track)


def camera_payloads(frames: int = 300) -> list[tuple[bytes, int, bool]]:
    """(VP8 payload, 90 kHz timestamp offset, marker) of a 640x480 camera at 30 fps (nobody
    answers the writer's keyframe requests here: a keyframe comes every second)."""
    out = []
    encoded = encode_video("vp8", frames, 640, 480, gop=30, noise=True)  # a keyframe a second
    for i, (data, pts, _key) in enumerate(encoded):
        parts = vp8_payloads(data, i & 0x7FFF, mtu=1100)
        out += [(p, pts, j == len(parts) - 1) for j, p in enumerate(parts)]
    return out


async def measure(
    subscribers: int, count: int, rounds: int = 5, rate: float = 0.0
) -> dict[str, float]:
    """Run the benchmark; returns figures by name (µs per received packet unless said)."""
    set_ice_addresses(["127.0.0.1"])
    publisher, server_in = await connected_pair()
    pairs = [await connected_pair() for _ in range(subscribers)]
    payloads = camera_payloads()
    directory = tempfile.TemporaryDirectory(prefix="visio-bench-")
    try:
        track = Publisher(
            "TR_cam",
            "PA_pub",
            "video",
            "camera",
            "0",
            Codec("video/VP8", 90000, 96),
            {},
            server_in.send_rtcp,
            1,
        )
        for i, (server_out, _client) in enumerate(pairs):
            dt = DownTrack(track, server_out.rtp_sender, f"PA_{i}")
            dt.bind(5000 + i, 96, {})
            track.attach(dt)
        server_in.on_rtp = track.on_rtp
        for _server_out, client in pairs:
            client.stop_receiving()  # the receivers' own work is not the server's
        tx = publisher.srtp_tx()
        feed = server_in.datagram_entry()
        room = _Room(_Person(track))
        seq, loops = 0, 0
        modes = ("none", "sink", "recorder")
        loop_runs: dict[str, list[float]] = {m: [] for m in modes}
        all_runs: dict[str, list[float]] = {m: [] for m in modes}
        writer_runs: list[float] = []
        recorders = []
        for r in range(rounds * len(modes)):
            mode = modes[r % len(modes)]
            recorder = sink_only = None
            if mode == "recorder":
                recorder = Recorder(room, directory.name, room.person.ref())
                recorder.start()
                recorders.append(recorder)
            elif mode == "sink":
                sink_only = RecordingSink(limit=count + 10)
                track.attach(sink_only)
            datagrams = []
            for _ in range(count):
                payload, pts, marker = payloads[seq % len(payloads)]
                ts = (loops * 10 * 90000 + pts) & 0xFFFFFFFF
                packet = build_rtp(96, seq & 0xFFFF, ts, 4242, payload, marker=marker)
                datagrams.append(tx.protect(packet))
                seq += 1
                if seq % len(payloads) == 0:
                    loops += 1
            received = track.packets
            await asyncio.sleep(0.05)
            all0, wall0 = time.process_time(), time.monotonic()
            loop_cpu = 0.0  # the loop thread's CPU while it forwards (not while it sleeps)
            for start in range(0, count, 10):  # ten packets at a time, as a camera sends them
                if rate:
                    delay = wall0 + start / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t0 = time.thread_time()
                for d in datagrams[start : start + 10]:
                    feed(d)  # unprotect, Publisher, every DownTrack, every send: synchronous
                loop_cpu += time.thread_time() - t0
            while track.packets < received + count and time.process_time() - all0 < 30:
                await asyncio.sleep(0)
            if recorder is not None:
                assert await recorder.wait_ready(30) is None  # its writer process runs
                recorder.stop()
                await recorder.wait_closed(30)  # the feeder's work on these packets, counted
                writer = recorder.writer_cpu - recorder.writer_startup_cpu
                writer_runs.append(writer / count * 1e6)
            all_cpu = time.process_time() - all0
            if sink_only is not None:
                track.detach(sink_only)
                assert len(sink_only.queue) == count and not sink_only.dropped
            loop_runs[mode].append(loop_cpu / count * 1e6)
            all_runs[mode].append(all_cpu / count * 1e6)
        loop = {m: statistics.median(v) for m, v in loop_runs.items()}
        whole = {m: statistics.median(v) for m, v in all_runs.items()}
        sink = RecordingSink(limit=count * 4)
        data = build_rtp(96, 1, 1, 4242, payloads[0][0])
        sink_write = per_call(lambda i: sink.write(data, 4242, i, i, False, 0.0, 0), count)
        frames = sum(t.get("frames", 0) for rec in recorders for t in rec.manifest["tracks"])
        base = loop["none"]
        return {
            "subscribers": float(subscribers),
            "rate (packets/s, 0: burst)": float(rate),
            "forwarding (loop thread), no recording": base,
            "forwarding (loop thread), sink attached": loop["sink"],
            "  change %": (loop["sink"] - base) / base * 100,
            "forwarding (loop thread), recording": loop["recorder"],
            "  change % ": (loop["recorder"] - base) / base * 100,
            "rounds' spread without recording, %": (
                (max(loop_runs["none"]) - min(loop_runs["none"])) / base * 100
            ),
            "whole process, recording (feeder incl.)": whole["recorder"],
            "feeder thread, per packet": whole["recorder"] - loop["recorder"],
            "writer process, per packet (start-up excl.)": statistics.median(writer_runs),
            "RecordingSink.write alone": sink_write,
            "frames written (all rounds)": float(frames),
        }
    finally:
        for a, b in [(publisher, server_in), *pairs]:
            await a.close()
            await b.close()
        directory.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="packets a second fed (default 0: a burst)"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    figures = asyncio.run(measure(args.subscribers, args.packets, args.rounds, args.rate))
    pace = f"{args.rate:.0f} packets/s" if args.rate else "a burst"
    print(
        f"forwarding path, a VP8 camera to {args.subscribers} subscribers, "
        f"{args.packets} packets a round ({pace}), µs of CPU per received packet (medians):"
    )
    for name, value in figures.items():
        print(f"  {name:44s} {value:9.2f}")


if __name__ == "__main__":
    main()
