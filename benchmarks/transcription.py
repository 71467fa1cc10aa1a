"""What transcription costs: CPU per speaking participant, caption latency, and the forwarding
path with an audio tap attached.

    python -m benchmarks.transcription [--seconds 40] [--speakers 1] [--packets 3000]

1. Recognition: espeak-ng says English sentences (1.2 s pauses between them, as people
   speak); their Opus RTP is fed in real time to a real WorkerPool (one worker process, the
   Whisper base model, int8, one thread), exactly as the server's Transcriber feeds it. Reports
   the worker's CPU (from /proc) per speaking participant, with live captions (partial lines
   every second) and without (final lines only), and the latency from the end of each sentence
   to its final line (which includes the 0.5 s of silence that ends an utterance), and to the
   first partial from the start of speech.
2. Forwarding: real PeerTransports over DTLS-SRTP on 127.0.0.1, an Opus track forwarded to
   ``--subscribers`` subscribers (the whole path: datagram in, unprotect, Publisher, every
   DownTrack, protect, send), CPU per received packet without and with an AudioTap attached,
   alternating runs; and the transcriber's hand-over (AudioTap.take, every 100 ms) per packet,
   which runs on the event loop but off the per-packet path.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import wave

import numpy as np

SENTENCES = [
    "The quarterly budget review will take place on Thursday morning.",
    "Please send the final report to the whole team before Friday.",
    "We need three more volunteers for the community garden project.",
    "The city council approved the new library last week.",
    "Thank you all for joining the meeting today.",
]
RATE = 48000


def espeak(text: str, directory: str) -> np.ndarray:
    """48 kHz int16 samples of espeak-ng saying ``text``."""
    path = os.path.join(directory, f"{abs(hash(text))}.wav")
    subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "-w", path, text], check=True)
    with wave.open(path) as w:
        source = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
    n = int(len(x) * RATE / source)
    return np.interp(np.arange(n) * source / RATE, np.arange(len(x)), x).astype(np.int16)


def opus(samples: np.ndarray) -> list[bytes]:
    """20 ms Opus packets of 48 kHz mono samples."""
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = 32000
    encoder.time_base = fractions.Fraction(1, RATE)
    out = []
    samples = samples[: len(samples) - len(samples) % 960]
    for i in range(0, len(samples), 960):
        frame = av.AudioFrame.from_ndarray(
            np.repeat(samples[i : i + 960], 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = RATE
        frame.pts = i
        out += [bytes(p) for p in encoder.encode(frame)]
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def recognition(seconds: float, speakers: int, captions: bool) -> dict[str, float]:
    """Feed ``speakers`` participants' speech for ``seconds`` in real time to one worker."""
    from visio_sfu.asr.backends import BackendSpec
    from visio_sfu.asr.model import base_model_dir, default_cache_dir
    from visio_sfu.asr.pool import WorkerPool

    with tempfile.TemporaryDirectory() as tmp:
        clips = [espeak(text, tmp) for text in SENTENCES]
    gap = np.zeros(int(1.2 * RATE), np.int16)
    timeline, ends, starts, at = [], [], [], 0.5
    track = [np.zeros(int(0.5 * RATE), np.int16)]
    while at < seconds - 5:
        clip = clips[len(starts) % len(clips)]
        starts.append(at)
        at += len(clip) / RATE
        ends.append(at)
        track += [clip, gap]
        at += len(gap) / RATE
        timeline.append(len(starts))
    audio = np.concatenate(track + [np.zeros(int(3 * RATE), np.int16)])
    packets = opus(audio)
    spec = BackendSpec("whisper", model_dir=str(base_model_dir(default_cache_dir())), threads=1)
    pool = WorkerPool(spec, workers=1)
    await pool.start()
    pid = pool._workers[0].process.pid
    assert pid is not None
    finals: dict[str, list[tuple[int, float]]] = {}
    partials: dict[str, list[tuple[int, float]]] = {}
    closed = asyncio.Event()
    left = speakers

    def handler(key: str, msg: tuple) -> None:
        nonlocal left
        now = time.monotonic()
        if msg[0] == "line":
            (finals if msg[3] else partials).setdefault(key, []).append((msg[2], now))
        elif msg[0] == "closed":
            left -= 1
            if not left:
                closed.set()

    keys = [f"speaker{i}" for i in range(speakers)]
    for key in keys:
        pool.open(key, "en", lambda msg, key=key: handler(key, msg), captions)
    cpu0 = process_cpu(pid)
    t0 = time.monotonic()
    batch = 5  # packets per 100 ms hand-over, as the Transcriber does
    for i in range(0, len(packets), batch):
        due = t0 + i * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = [
            ((j) & 0xFFFF, (j * 960) & 0xFFFFFFFF, packets[j])
            for j in range(i, i + batch)
            if j < len(packets)
        ]
        for key in keys:
            while not pool.send_audio(key, t0, chunk):
                await asyncio.sleep(0.01)
    wall = time.monotonic() - t0
    for key in keys:
        pool.close_stream(key)
    await asyncio.wait_for(closed.wait(), 120)
    cpu = process_cpu(pid) - cpu0
    await pool.close()
    speech = sum(ends[i] - starts[i] for i in range(len(starts)))
    final_latency = [
        now - t0 - ends[utt] for key in keys for utt, now in finals.get(key, []) if utt < len(ends)
    ]
    first_partial = []
    for key in keys:
        seen: dict[int, float] = {}
        for utt, now in partials.get(key, []):
            seen.setdefault(utt, now - t0 - starts[utt] if utt < len(starts) else 0.0)
        first_partial += list(seen.values())
    return {
        "seconds": wall,
        "speech seconds": speech * speakers,
        "cores": cpu / wall,
        "cores per speaking participant": cpu / wall / speakers,
        "cpu s per speech s": cpu / (speech * speakers),
        "finals": sum(len(v) for v in finals.values()),
        "partials": sum(len(v) for v in partials.values()),
        "final latency p50": statistics.median(final_latency) if final_latency else float("nan"),
        "final latency max": max(final_latency) if final_latency else float("nan"),
        "first partial p50": statistics.median(first_partial) if first_partial else float("nan"),
    }


async def forwarding(subscribers: int, count: int, rounds: int = 5) -> dict[str, float]:
    """Whole forwarding path per received Opus packet, without and with an AudioTap."""
    from benchmarks.peers import connected_pair
    from visio_sfu.audiotap import AudioTap
    from visio_sfu.downtrack import DownTrack
    from visio_sfu.publisher import Codec, Publisher
    from visio_sfu.rtp.header import build_rtp
    from visio_sfu.transport import set_ice_addresses

    set_ice_addresses(["127.0.0.1"])
    publisher, server_in = await connected_pair("audio")
    pairs = [await connected_pair("audio") for _ in range(subscribers)]
    try:
        track = Publisher(
            "TR_audio",
            "PA_pub",
            "audio",
            "microphone",
            "0",
            Codec("audio/opus", 48000, 111, 2),
            {},
            server_in.send_rtcp,
            1,
        )
        for i, (server_out, _client) in enumerate(pairs):
            dt = DownTrack(track, server_out.send_rtp, f"PA_{i}")
            dt.bind(6000 + i, 111, {})
            track.attach(dt)
        server_in.on_rtp = track.on_rtp
        for _server_out, client in pairs:
            client.stop_receiving()
        tx = publisher.srtp_tx()
        feed = server_in.datagram_entry()
        payload = bytes(range(90))  # a typical 20 ms Opus frame at ~32 kbit/s
        seq = 0
        runs: dict[str, list[float]] = {"without tap": [], "with tap": []}
        tap = AudioTap(limit=count + 10)
        takes = []
        for r in range(rounds * 2):
            with_tap = r % 2 == 1
            if with_tap:
                track.attach(tap)
            else:
                track.detach(tap)
            datagrams = []
            for _ in range(count):
                datagrams.append(tx.protect(build_rtp(111, seq & 0xFFFF, seq * 960, 4242, payload)))
                seq += 1
            received = track.packets
            start = time.process_time()
            for d in datagrams:
                feed(d)
            while track.packets < received + count and time.process_time() - start < 30:
                await asyncio.sleep(0)
            runs["with tap" if with_tap else "without tap"].append(
                (time.process_time() - start) / count * 1e6
            )
            if with_tap:
                n = len(tap.packets)
                t = time.process_time()
                while tap.packets:  # the Transcriber's hand-over, 5 packets at a time
                    kept, tap.packets = tap.packets, tap.packets[5:]
                    tap.packets, rest = kept[:5], kept[5:]
                    tap.take()
                    tap.packets = rest
                takes.append((time.process_time() - t) / max(n, 1) * 1e6)
        without = statistics.median(runs["without tap"])
        with_ = statistics.median(runs["with tap"])
        return {
            "forwarded per packet": float(subscribers),
            "without tap, µs per received packet": without,
            "with tap, µs per received packet": with_,
            "change %": (with_ - without) / without * 100,
            "hand-over (take), µs per packet": statistics.median(takes),
        }
    finally:
        for a, b in [(publisher, server_in), *pairs]:
            await a.close()
            await b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="speech fed per run")
    parser.add_argument("--speakers", type=int, default=1, help="speaking at once, one worker")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--skip-recognition", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    figures = asyncio.run(forwarding(args.subscribers, args.packets))
    print(f"forwarding path, an Opus track to {args.subscribers} subscribers:")
    for name, value in figures.items():
        print(f"  {name:40s} {value:8.2f}")
    if args.skip_recognition:
        return
    for captions in (False, True):
        figures = asyncio.run(recognition(args.seconds, args.speakers, captions))
        label = "with live captions" if captions else "transcription alone (final lines)"
        print(f"recognition, {args.speakers} speaking participant(s), {label}:")
        for name, value in figures.items():
            print(f"  {name:40s} {value:8.2f}")


if __name__ == "__main__":
    main()
