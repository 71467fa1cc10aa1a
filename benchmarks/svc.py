"""Micro-benchmark: what VP9 SVC costs per packet on the forwarding path, against VP8.

    python -m benchmarks.svc [--subscribers 10] [--packets 3000]

No sockets: a Publisher fans packets out to ``--subscribers`` DownTracks whose send is a no-op,
so what is measured is the SFU's own per-packet work (Publisher.on_rtp: statistics, cache,
keyframe test, the VP9 descriptor read once; DownTrack.write per subscriber: the layer
decision, header rewrite, and for SVC the marker and the sequence-number ring). Streams:

- VP8, one stream, every subscriber gets it (the reference);
- VP9 L3T3-like pictures (3 spatial layers, 2 packets each), every subscriber at the top layer
  (every packet forwarded);
- the same, every subscriber at spatial layer 0 (two packets in three dropped, leaving no gap);
- the same, every subscriber at spatial layer 0 and temporal layer 0 (a quarter of the frame
  rate: eleven packets in twelve dropped);
- the publisher alone, no subscriber (statistics, cache, the descriptor read and the per
  spatial and temporal layer counting).

Prints microseconds of CPU per publisher packet, in total and per subscriber, and the ratios to
VP8 within the run (the machine is shared: compare figures of one run only), plus the descriptor
read alone.
"""

from __future__ import annotations

import argparse

from benchmarks.hotpath import per_call
from visio_sfu.downtrack import DownTrack
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.header import build_rtp
from visio_sfu.rtp.vp9 import vp9_layers

SIZE = 1200


def vp8_packets(n: int) -> list[bytes]:
    """n VP8 packets of SIZE bytes, a keyframe first, one frame every 4 packets."""
    out = []
    for i in range(n):
        head = bytes([0x90, 0x80, 0x00, 0x00 if i == 0 else 0x01])
        out.append(build_rtp(96, i & 0xFFFF, (i // 4) * 3000, 1234, head + bytes(SIZE - 16)))
    return out


def vp9_packets(n: int) -> list[bytes]:
    """n VP9 packets of SIZE bytes: pictures of 3 spatial layers, 2 packets each, temporal
    layers 0, 2, 1, 2; a keyframe first; the marker on each picture's last packet."""
    out = []
    for i in range(n):
        picture, k = divmod(i, 6)
        sid, part = divmod(k, 2)
        key = picture == 0
        first = 0xA0 | (0x08 if part == 0 else 0x04) | (0 if key else 0x40)
        tid = (0, 2, 1, 2)[picture % 4]
        layer = (tid << 5) | (sid << 1) | (1 if key and sid else 0)
        head = bytes([first, 0x80 | (picture >> 8 & 0x7F), picture & 0xFF, layer, 0])
        data = build_rtp(98, i & 0xFFFF, picture * 3000, 4321, head + bytes(SIZE - 17))
        if k == 5:
            data = bytes([data[0], data[1] | 0x80]) + data[2:]
        out.append(data)
    return out


def track_with(mime: str, pt: int, subscribers: int, level: int) -> tuple[Publisher, list]:
    """A publisher with ``subscribers`` bound DownTracks at the allocator's ``level`` (the
    layer for VP8; for VP9 SVC 0 = spatial 0 at T0, 2 = spatial 0, 4 = spatial 2)."""
    track = Publisher(
        "TR", "PA", "video", "camera", "0", Codec(mime, 90000, pt), {}, lambda b: True, 1,
        height=720,
    )  # fmt: skip
    downtracks = []
    for i in range(subscribers):
        dt = DownTrack(track, lambda b: True, f"PS{i}")
        track.attach(dt)
        dt.bind(1000 + i, 100, {})
        dt.set_level(level)
        downtracks.append(dt)
    return track, downtracks


def measure(subscribers: int, count: int) -> dict[str, float]:
    """Microseconds of CPU per publisher packet, by case."""
    results: dict[str, float] = {}
    cases = [
        ("vp8", "video/VP8", 96, vp8_packets(count * 3), 0),
        ("vp9 svc, top layer", "video/VP9", 98, vp9_packets(count * 3), 4),
        ("vp9 svc, layer 0", "video/VP9", 98, vp9_packets(count * 3), 2),
        ("vp9 svc, layer 0 at T0", "video/VP9", 98, vp9_packets(count * 3), 0),
    ]
    for name, mime, pt, data, level in cases:
        track, downtracks = track_with(mime, pt, subscribers, level)
        # time in packets: 1 ms apart, so that rates and keyframe throttles behave
        feed = track.on_rtp
        results[name] = per_call(lambda k, feed=feed, data=data: feed(data[k], k / 1000), count)
        sent = downtracks[0].packets
        results[f"{name}: forwarded share"] = sent / (3 * count)
    track, _ = track_with("video/VP9", 98, 0, 0)
    data = vp9_packets(count * 3)
    feed = track.on_rtp
    results["vp9 publisher alone"] = per_call(lambda k: feed(data[k], k / 1000), count)
    sample = vp9_packets(6)[3][12:]
    results["vp9_layers (descriptor read)"] = per_call(lambda k: vp9_layers(sample), count)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=3000)
    args = parser.parse_args()
    results = measure(args.subscribers, args.packets)
    vp8 = results["vp8"]
    print(f"per publisher packet, {args.subscribers} subscribers (µs of CPU, best of 3):")
    for name, value in results.items():
        if name.endswith("forwarded share"):
            print(f"  {name:34s} {value:8.2f}")
        elif name.startswith("vp9_layers"):
            print(f"  {name:34s} {value:8.2f} µs")
        else:
            per_sub = value / max(args.subscribers, 1)
            print(
                f"  {name:34s} {value:8.2f} µs  ({per_sub:.2f} per subscriber, "
                f"x{value / vp8:.2f} VP8)"
            )


if __name__ == "__main__":
    main()
