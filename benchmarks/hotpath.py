"""Micro-benchmark of the per-packet forwarding path, whole and in parts.

    python -m benchmarks.hotpath [--subscribers 20] [--packets 3000] [--one-port]

Real PeerTransports connected over DTLS-SRTP on 127.0.0.1: a publisher, the server's publish
connection, and ``--subscribers`` server-side subscribe connections each with a client. A
batch of SRTP packets (1200 bytes, VP8) protected by the publisher is fed to the server's UDP
protocol object (what the event loop calls for each datagram) and forwarded through the real
Publisher -> DownTrack -> PeerTransport path to every subscriber's socket. Prints microseconds
of CPU per forwarded packet, and the cost of each part alone: unprotect, fan-out bookkeeping
and rewrite (DownTrack.write with no I/O), SRTP protect, UDP send. Compare figures within one
run: the machine is shared. ``--one-port``: the server's connections share one UDP socket
(visio_sfu/udpmux.py, the server's default), the clients' have their own; the datagrams are
fed to the shared socket's protocol, which finds the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable

from benchmarks import callgrind
from benchmarks.callgrind import Marks
from benchmarks.peers import connected_pair
from visio_sfu import downtrack, transport
from visio_sfu.bwe import SendSideEstimator, TransportStamper
from visio_sfu.downtrack import DownTrack, extension_table
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.extensions import ABS_SEND_TIME as ABS
from visio_sfu.rtp.extensions import SDES_MID as MID
from visio_sfu.rtp.header import build_rtp
from visio_sfu.transport import set_ice_addresses
from visio_sfu.twcc_responder import TwccResponder
from visio_sfu.udpmux import UdpMux


def per_call(fn: Callable[[int], None], n: int) -> float:
    """Microseconds of CPU per call of fn(k) over n calls (best of three batches; k counts
    on across batches, 0 to 3n - 1, so that each call can use a fresh packet)."""
    best = float("inf")
    for batch in range(3):
        start = time.process_time()
        for i in range(batch * n, batch * n + n):
            fn(i)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


#: what aiortc (the load tool's publisher) writes in each video packet: mid and abs-send-time
AIORTC_EXTENSIONS = {1: b"0", 3: b"\x01\x02\x03"}


def packets(
    n: int, start: int = 0, ssrc: int = 1234, extensions: dict[int, bytes] | None = None
) -> list[bytes]:
    """n plain VP8 RTP packets of 1200 bytes (header extensions included), the first a
    keyframe."""
    out = []
    size = 1200 - 12 - (4 + 8 if extensions else 0)
    for i in range(start, start + n):
        first = bytes([0x90, 0x80, 0x00, 0x00 if i == start else 0x01])
        payload = first + bytes(size - 4)
        out.append(build_rtp(96, i & 0xFFFF, (i // 4) * 3000, ssrc, payload, False, extensions))
    return out


async def measure(
    subscribers: int,
    count: int,
    one_port: bool = False,
    batch: bool = True,
    marks: Marks | None = None,
    extensions: bool = False,
) -> dict[str, float]:
    """Run the benchmark; returns microseconds per operation by name. With ``marks`` (under
    callgrind), each round of the whole path is counted and dumped as "round". With
    ``extensions``, the whole path's packets carry aiortc's mid and abs-send-time, and each
    subscriber's ids differ (mid dropped, abs-send-time renumbered): the load tool's case."""
    set_ice_addresses(["127.0.0.1"])
    mux = None
    if one_port:
        mux = await UdpMux(0, host="127.0.0.1", batch=batch).start()
        transport.set_udp_mux(mux)
    publisher, server_in = await connected_pair(on_mux=(False, one_port))
    pairs = [await connected_pair(on_mux=(one_port, False)) for _ in range(subscribers)]
    try:
        track = Publisher(
            "TR_bench",
            "PA_pub",
            "video",
            "camera",
            "0",
            Codec("video/VP8", 90000, 96),
            {MID: 1, ABS: 3} if extensions else {},
            server_in.send_rtcp,
            1,
        )
        for i, (server_out, _client) in enumerate(pairs):
            dt = DownTrack(track, server_out.rtp_sender, f"PA_{i}")
            dt.bind(5000 + i, 96, {ABS: 2} if extensions else {})
            track.attach(dt)
        server_in.on_rtp = track.on_rtp
        for _server_out, client in pairs:
            client.stop_receiving()  # the receivers' own work is not the server's
        figures: dict[str, float] = {}

        tx = publisher.srtp_tx()
        rx = server_in.srtp_rx()
        plain = packets(count * 3 + 10)
        protected = [tx.protect(p) for p in plain]
        other = packets(count * 3, ssrc=4321)  # each SSRC is its own SRTP stream
        figures["srtp protect (1200 B)"] = per_call(lambda i: tx.protect(other[i]), count)
        rx_batch = iter(protected)
        figures["srtp unprotect (1200 B)"] = per_call(lambda i: rx.unprotect(next(rx_batch)), count)

        sock = pairs[0][0].socket_sender()
        data = protected[0]
        figures["udp send (1200 B)"] = per_call(lambda i: sock(data), count)

        quiet = DownTrack(track, lambda b: True, "PA_quiet")
        quiet.bind(9999, 96, {})
        figures["DownTrack.write, no I/O"] = per_call(
            lambda i: quiet.write(plain[i], 1234, i, (i // 4) * 3000, i == 0, 0.0), count
        )
        # the same with transport-cc: a transport-wide number written into each packet
        # (the element appended to its extension block) and its send time recorded
        stamped = DownTrack(track, lambda b: True, "PA_twcc")
        stamped.bind(9998, 96, {})
        stamper = TransportStamper(SendSideEstimator(), ext_id=5)
        stamped.stamp = stamper.stamp
        figures["DownTrack.write + transport-cc, no I/O"] = per_call(
            lambda i: stamped.write(plain[i], 1234, i, (i // 4) * 3000, i == 0, 0.0), count
        )
        bufs = [bytearray(p) for p in plain[: count * 3]]
        figures["TransportStamper.stamp, no ext block"] = per_call(
            lambda i: stamper.stamp(bufs[i], 1.0), count
        )
        # as from Chromium: mid and abs-send-time, both dropped for a transport-cc subscriber,
        # so that the number takes their place without the packet growing
        chrome_like = [
            build_rtp(
                96, i & 0xFFFF, (i // 4) * 3000, 1234, bytes(1150), i % 4 == 3, {1: b"0", 3: b"abc"}
            )
            for i in range(count * 3)
        ]
        plain_dt = DownTrack(track, lambda b: True, "PA_plain2")
        plain_dt.bind(9997, 96, {})
        plain_dt.ext_table = extension_table({MID: 1, ABS: 3}, {MID: 1, ABS: 3})  # mid dropped
        figures["DownTrack.write, Chromium-like, no I/O"] = per_call(
            lambda i: plain_dt.write(chrome_like[i], 1234, i, (i // 4) * 3000, i == 0, 0.0), count
        )
        # the same through the Python write (as without the compiled one)
        figures["DownTrack._write (Python), Chromium-like, no I/O"] = per_call(
            lambda i: plain_dt._write(
                chrome_like[i], 1234, count * 3 + i, (i // 4) * 3000, i == 0, 0.0
            ),
            count,
        )
        # the same in Python (as without the compiled rewrite)
        if getattr(downtrack, "_rewrite_rtp", None) is not None:
            py_dt = DownTrack(track, lambda b: True, "PA_plain3")
            py_dt.bind(9995, 96, {})
            py_dt.ext_table = plain_dt.ext_table
            downtrack.rewrite = downtrack.rewrite_packet
            try:
                figures["DownTrack.write, Chromium-like, Python rewrite"] = per_call(
                    lambda i: py_dt._write(chrome_like[i], 1234, i, (i // 4) * 3000, i == 0, 0.0),
                    count,
                )
            finally:
                downtrack.rewrite = downtrack._rewrite_rtp
        twcc_dt = DownTrack(track, lambda b: True, "PA_twcc2")
        twcc_dt.bind(9996, 96, {})
        twcc_dt.ext_table = extension_table({MID: 1, ABS: 3}, {MID: 1})  # abs-send-time too
        twcc_dt.stamp = TransportStamper(SendSideEstimator(), ext_id=8).stamp
        figures["DownTrack.write + transport-cc, Chromium-like"] = per_call(
            lambda i: twcc_dt.write(chrome_like[i], 1234, i, (i // 4) * 3000, i == 0, 0.0), count
        )
        # a publisher that negotiated transport-cc: each packet it sends kept on arrival (the
        # receive path's append), then read and reported every 100 ms (40 packets of a
        # 4 Mbit/s camera here): TwccResponder's whole cost, per received packet
        numbered = [
            build_rtp(
                96, i & 0xFFFF, 0, 1234, bytes(1150), False, {1: b"0", 5: (i & 0xFFFF).to_bytes(2)}
            )
            for i in range(count * 3)
        ]
        responder = TwccResponder(5, 1)

        def respond(i: int) -> None:
            responder.record(numbered[i], i * 0.0025)
            if i % 40 == 39:
                responder.feedback()

        figures["TwccResponder, record + feedback"] = per_call(respond, count)
        out = pairs[0][0]
        own = [bytearray(p) for p in packets(count * 3, ssrc=777)]  # a stream of its own
        figures["PeerTransport.send_rtp"] = per_call(lambda i: out.send_rtp(own[i]), count)

        # the whole path: datagram in -> unprotect -> Publisher -> every DownTrack -> sockets;
        # three rounds of ``count`` fresh packets, the best and the median (a shared machine)
        feed = server_in.datagram_entry()
        rounds = []
        for r in range(3):
            first = count * (3 + r) + 10
            ext = AIORTC_EXTENSIONS if extensions else None
            fresh = [tx.protect(p) for p in packets(count, start=first, extensions=ext)]
            received = track.packets
            before = sum(dt.packets for dt in track.downtracks)
            if marks is not None:
                marks.toggle()
            start = time.process_time()
            for datagram in fresh:
                feed(datagram)
                if not transport.FAST_RECEIVE:
                    await asyncio.sleep(0)  # aiortc's own path: a queue and a task per datagram
            while track.packets < received + count and time.process_time() - start < 30:
                await asyncio.sleep(0)
            elapsed = time.process_time() - start
            if marks is not None:
                marks.toggle()
                marks.dump("round")
            forwarded = sum(dt.packets for dt in track.downtracks) - before
            rounds.append((elapsed / max(forwarded, 1) * 1e6, elapsed / count * 1e6, forwarded))
        rounds.sort()
        figures["forwarded packets (a round)"] = rounds[1][2]
        figures["whole path, per received packet"] = rounds[1][1]
        figures["whole path, per forwarded packet, median"] = rounds[1][0]
        figures["whole path, per forwarded packet, best"] = rounds[0][0]
        return figures
    finally:
        for a, b in [(publisher, server_in), *pairs]:
            await a.close()
            await b.close()
        if mux is not None:
            transport.set_udp_mux(None)
            mux.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument(
        "--aiortc-receive", action="store_true", help="receive through aiortc's queue and task"
    )
    parser.add_argument(
        "--one-port", action="store_true", help="the server's connections on one UDP socket"
    )
    parser.add_argument(
        "--no-batch", action="store_true", help="with --one-port: sendto, not sendmmsg"
    )
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="the whole path's packets carry mid and abs-send-time, renumbered per subscriber",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions of the whole path under callgrind (valgrind): user space "
        "only (not the kernel's send), exact where CPU time on a shared machine is not",
    )
    args = parser.parse_args()
    if args.instructions and not os.environ.get(callgrind.ENV):
        instructions(args)
        return
    marks = Marks() if os.environ.get(callgrind.ENV) else None
    transport.FAST_RECEIVE = not args.aiortc_receive
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    figures = asyncio.run(
        measure(
            args.subscribers, args.packets, args.one_port, not args.no_batch, marks, args.extensions
        )
    )
    where = "one UDP port for the server" if args.one_port else "a UDP port per connection"
    if args.one_port:
        where += ", sendto per datagram" if args.no_batch else ", sendmmsg per fan-out"
    print(
        f"per-packet path, {args.subscribers} subscribers, {args.packets} packets of 1200 B, "
        f"{where}"
    )
    for name, value in figures.items():
        unit = "" if name.startswith("forwarded packets") else " µs"
        print(f"  {name:36s} {value:8.2f}{unit}")


def instructions(args: argparse.Namespace) -> None:
    """The benchmark re-run under callgrind: the main thread's instructions in each round of
    the whole path (datagram in, unprotect, Publisher, every DownTrack, protect, the send's
    system call made but not counted inside the kernel), per forwarded packet."""
    why = callgrind.available()
    if why:
        raise SystemExit(f"--instructions: {why}")
    argv = ["-m", "benchmarks.hotpath", "--subscribers", str(args.subscribers)]
    argv += ["--packets", str(args.packets)]
    argv += ["--one-port"] if args.one_port else []
    argv += ["--no-batch"] if args.no_batch else []
    argv += ["--extensions"] if args.extensions else []
    counts = callgrind.run(argv, thread=1).get("round", [])
    if not counts:
        raise SystemExit("--instructions: no counts came back from callgrind")
    forwarded = args.packets * args.subscribers
    per = sorted(c / forwarded for c in counts)
    print(
        f"instructions per forwarded packet (callgrind, user space, {args.subscribers} "
        f"subscribers, rounds of {args.packets} packets): median {per[len(per) // 2]:.0f}, "
        f"rounds {', '.join(f'{c:.0f}' for c in per)}"
    )


if __name__ == "__main__":
    main()
