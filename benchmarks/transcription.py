"""What transcription costs: CPU per speaking participant, caption latency, and the forwarding
path with and without transcription running.

    python -m benchmarks.transcription [--seconds 40] [--speakers 1] [--packets 3000]
        [--rounds 5] [--rate 0] [--subscribers 10] [--skip-recognition]

1. Recognition: espeak-ng says English sentences (1.2 s pauses between them, as people
   speak); their Opus RTP is fed in real time to a real WorkerPool (one worker process, the
   Whisper base model, int8, one thread), exactly as the server's Transcriber feeds it. Reports
   the worker's CPU (from /proc) per speaking participant, with live captions (partial lines
   every second) and without (final lines only), and the latency from the end of each sentence
   to its final line (which includes the 0.5 s of silence that ends an utterance), and to the
   first partial from the start of speech.
2. Forwarding: real PeerTransports over DTLS-SRTP on 127.0.0.1, a speaking Opus track
   (espeak-ng sentences) forwarded to ``--subscribers`` subscribers (the whole path: datagram
   in, unprotect, Publisher, every DownTrack, protect, send) in a burst, or at ``--rate``
   packets a second (50: as one person speaks; paced rounds are far noisier), rounds in turn:
   nothing attached; an AudioTap alone; transcription running (a real Transcriber on a
   stand-in room: its tap, its hand-over every 100 ms on the event loop, the worker process
   recognising with live captions at the same moment); transcription and recording running
   (a real Recorder too: its sink, its feeder thread, its writer process writing the Ogg
   file). CPU of
   the event loop's thread per received packet while it forwards (``time.thread_time`` around
   each batch of five: the loop's other work and sleeps excluded), and of the whole server
   process (the hand-over, the result reader thread included); the worker's own CPU; and the
   hand-over (AudioTap.take) per packet alone. Compare figures within one run.
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
import threading
import time
import wave

import numpy as np

from benchmarks import callgrind
from benchmarks.callgrind import Marks

SENTENCES = [
    "The quarterly budget review will take place on Thursday morning.",
    "Please send the final report to the whole team before Friday.",
    "We need three more volunteers for the community garden project.",
    "The city council approved the new library last week.",
    "Thank you all for joining the meeting today.",
]
RATE = 48000


def pin_apart(pids: list[int]) -> None:
    """The event loop's thread on the first CPU; this process's other threads (the Recorder's
    feeder, result readers) and the given processes (the transcription worker, the recording
    writer) on the others: the arrangement of a server with cores to spare, where the
    forwarding path is not measured while it shares its core with them."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    main, others = {cpus[0]}, set(cpus[1:])
    own = threading.get_native_id()
    os.sched_setaffinity(own, main)
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != own:
            try:
                os.sched_setaffinity(int(tid), others)
            except OSError:
                pass  # a thread that ended meanwhile
    for pid in pids:  # every thread of theirs (the recogniser's threads came before)
        if pid:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), others)
                except OSError:
                    pass


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


class _Person:
    """What the Transcriber and the Recorder read of a participant."""

    class permissions:  # noqa: N801 - as a Participant has it
        hidden = False

    sid, identity, name = "PA_pub", "speaker", "Speaker"

    def ref(self):
        from visio_sfu.events import ParticipantRef

        return ParticipantRef(self.sid, self.identity, self.name)


class _Room:
    """What the Transcriber reads of a room: one participant and their microphone."""

    name, sid = "bench", "RM_bench"

    def __init__(self, track: object) -> None:
        self.person = _Person()
        self.participants = {self.person.sid: self.person}
        self.track = track
        self.track_watchers: list = []
        self.captions = 0

    def visible(self) -> list:
        return [self.person]

    def watch_tracks(self, watcher) -> None:
        self.track_watchers.append(watcher)
        watcher(self.person, self.track)

    def broadcast(self, event: object, exclude: object = None) -> None:
        self.captions += 1


def speech_packets(seconds: float) -> list[bytes]:
    """Opus packets (20 ms) of espeak-ng sentences with 1.2 s pauses, ``seconds`` long."""
    with tempfile.TemporaryDirectory() as tmp:
        clips = [espeak(text, tmp) for text in SENTENCES]
    gap = np.zeros(int(1.2 * RATE), np.int16)
    parts, total, i = [], 0, 0
    while total < seconds * RATE:
        parts += [clips[i % len(clips)], gap]
        total += len(clips[i % len(clips)]) + len(gap)
        i += 1
    return opus(np.concatenate(parts))


async def forwarding(
    subscribers: int,
    count: int,
    rounds: int = 9,
    rate: float = 0.0,
    transcribe: bool = True,
    pin: bool = False,
    marks: Marks | None = None,
) -> dict[str, float]:
    """The whole forwarding path per received Opus packet (speech), in turn: nothing attached;
    an AudioTap alone; transcription running (a real Transcriber: its tap, its hand-over every
    100 ms on the event loop, a worker process recognising with live captions); transcription
    and a recording (a real Recorder: its sink, feeder thread and writer process) running.
    With ``marks`` (under callgrind), the forwarding of each round is counted and dumped under
    the round's kind."""
    from benchmarks.peers import connected_pair
    from visio_sfu.asr.backends import BackendSpec
    from visio_sfu.asr.model import base_model_dir, default_cache_dir
    from visio_sfu.asr.pool import WorkerPool
    from visio_sfu.audiotap import AudioTap
    from visio_sfu.downtrack import DownTrack
    from visio_sfu.publisher import Codec, Publisher
    from visio_sfu.recording import Recorder
    from visio_sfu.rtp.header import build_rtp
    from visio_sfu.transcriber import Transcriber
    from visio_sfu.transport import set_ice_addresses

    set_ice_addresses(["127.0.0.1"])
    speech = speech_packets(max(count / 50, 10))
    publisher, server_in = await connected_pair("audio")
    pairs = [await connected_pair("audio") for _ in range(subscribers)]
    pool = None
    directory = tempfile.TemporaryDirectory(prefix="visio-bench-")
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
            dt = DownTrack(track, server_out.rtp_sender, f"PA_{i}")
            dt.bind(6000 + i, 111, {})
            track.attach(dt)
        server_in.on_rtp = track.on_rtp
        for _server_out, client in pairs:
            client.stop_receiving()
        tx = publisher.srtp_tx()
        feed = server_in.datagram_entry()
        modes = ["none", "tap"]
        room = _Room(track)
        transcriber = None
        worker_pid = 0
        if transcribe:
            spec = BackendSpec(
                "whisper", model_dir=str(base_model_dir(default_cache_dir())), threads=1
            )
            pool = WorkerPool(spec, workers=1)
            await pool.start()
            worker_pid = pool._workers[0].process.pid or 0
            transcriber = Transcriber(room, pool, "en")  # type: ignore[arg-type]
            modes += ["transcribing", "both"]
        if pin:
            pin_apart([worker_pid])
        seq = 0
        loop_runs: dict[str, list[float]] = {m: [] for m in modes}
        all_runs: dict[str, list[float]] = {m: [] for m in modes}
        takes: list[float] = []
        worker_cpu = worker_wall = 0.0
        for r in range(rounds * len(modes)):
            mode = modes[r % len(modes)]
            tap = recorder = None
            if mode == "tap":
                tap = AudioTap(limit=count + 10)
                track.attach(tap)
            elif mode in ("transcribing", "both"):
                assert transcriber is not None
                transcriber.start()  # attaches its own tap to the track
                if mode == "both":
                    recorder = Recorder(room, directory.name)  # type: ignore[arg-type]
                    recorder.start()
                    assert await recorder.wait_ready(30) is None
                if pin:
                    process = recorder.process if recorder is not None else None
                    pin_apart([worker_pid, process.pid if process is not None else 0])
                # 10 s of speech first (not counted): the worker is recognising when the
                # measured packets come
                for _ in range(500):
                    payload = speech[seq % len(speech)]
                    feed(tx.protect(build_rtp(111, seq & 0xFFFF, seq * 960, 4242, payload)))
                    seq += 1
                await asyncio.sleep(0.3)
            datagrams = []
            for _ in range(count):
                payload = speech[seq % len(speech)]
                datagrams.append(tx.protect(build_rtp(111, seq & 0xFFFF, seq * 960, 4242, payload)))
                seq += 1
            received = track.packets
            await asyncio.sleep(0.05)
            all0, wall0 = time.process_time(), time.monotonic()
            if mode in ("transcribing", "both"):
                cpu0 = process_cpu(worker_pid)
            loop_cpu = 0.0  # the loop thread's CPU while it forwards (not while it sleeps)
            for start in range(0, count, 5):  # five packets at a time, then the loop runs
                if rate:
                    delay = wall0 + start / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
                if marks is not None:
                    marks.toggle()
                t0 = time.thread_time()
                for d in datagrams[start : start + 5]:
                    feed(d)  # unprotect, Publisher, every DownTrack, every send: synchronous
                loop_cpu += time.thread_time() - t0
                if marks is not None:
                    marks.toggle()
            if marks is not None:
                marks.dump(mode)
            while track.packets < received + count and time.process_time() - all0 < 30:
                await asyncio.sleep(0)
            loop_runs[mode].append(loop_cpu / count * 1e6)
            all_runs[mode].append((time.process_time() - all0) / count * 1e6)
            if mode in ("transcribing", "both"):
                worker_cpu += process_cpu(worker_pid) - cpu0
                worker_wall += time.monotonic() - wall0
            if tap is not None:
                track.detach(tap)
                n, t = len(tap.packets), time.process_time()
                while tap.packets:  # the Transcriber's hand-over, 5 packets at a time
                    kept, tap.packets = tap.packets, tap.packets[5:]
                    tap.packets, rest = kept[:5], kept[5:]
                    tap.take()
                    tap.packets = rest
                takes.append((time.process_time() - t) / max(n, 1) * 1e6)
            if recorder is not None:
                recorder.stop()
                assert await recorder.wait_closed(30)
                assert recorder.manifest["tracks"][0]["status"] == "complete"
            if mode in ("transcribing", "both"):
                assert transcriber is not None
                # everything heard is recognised before the next round: the other rounds run
                # with an idle worker
                await transcriber.stop(drain=180)
        loop = {m: statistics.median(v) for m, v in loop_runs.items()}
        least = {m: min(v) for m, v in loop_runs.items()}  # the least disturbed round
        whole = {m: statistics.median(v) for m, v in all_runs.items()}
        base = loop["none"]
        out = {
            "forwarded to": float(subscribers),
            "packets a second": float(rate),
            "loop thread, nothing attached, µs": base,
            "loop thread, tap attached, µs": loop["tap"],
            "  change %": (loop["tap"] - base) / base * 100,
        }
        if transcriber is not None:
            out |= {
                "loop thread, transcription running, µs": loop["transcribing"],
                "  change % ": (loop["transcribing"] - base) / base * 100,
                "loop thread, transcription and recording, µs": loop["both"],
                "  change %   ": (loop["both"] - base) / base * 100,
                "whole process, nothing attached, µs": whole["none"],
                "whole process, transcription running, µs": whole["transcribing"],
                "  change %  ": (whole["transcribing"] - whole["none"]) / whole["none"] * 100,
                "whole process, transcription and recording, µs": whole["both"],
                "  change %    ": (whole["both"] - whole["none"]) / whole["none"] * 100,
                "worker process while measured, cores": worker_cpu / max(worker_wall, 1e-9),
                "lines recognised (all rounds)": float(len(transcriber.transcript.lines)),
                "captions sent (all rounds)": float(room.captions),
            }
        out["least disturbed round: nothing attached, µs"] = least["none"]
        out["least disturbed round: tap attached, µs"] = least["tap"]
        if transcriber is not None:
            out["least disturbed round: transcription running, µs"] = least["transcribing"]
            out["least disturbed round: transcription and recording, µs"] = least["both"]
        out["rounds' spread, nothing attached, %"] = (
            (max(loop_runs["none"]) - min(loop_runs["none"])) / base * 100
        )
        out["hand-over (take), µs per packet"] = statistics.median(takes)
        return out
    finally:
        if pool is not None:
            await pool.close()
        directory.cleanup()
        for a, b in [(publisher, server_in), *pairs]:
            await a.close()
            await b.close()


def instructions(args: argparse.Namespace) -> None:
    """The forwarding benchmark re-run under callgrind: the event loop thread's instructions
    per received packet while it forwards, each kind of round against nothing attached."""
    why = callgrind.available()
    if why is not None:
        raise SystemExit(f"--instructions: {why}")
    if args.rate or args.pin:
        raise SystemExit("--instructions counts a burst, unpinned: --rate and --pin do not apply")
    argv = ["-m", "benchmarks.transcription", "--skip-recognition", "--instructions"]
    argv += ["--subscribers", str(args.subscribers), "--packets", str(args.packets)]
    argv += ["--rounds", str(args.rounds)]
    counts = callgrind.run(argv, thread=1)
    if "none" not in counts:
        raise SystemExit(f"--instructions: no counts came back from callgrind (got {counts})")
    per_packet = {k: [n / args.packets for n in v] for k, v in counts.items()}
    base = statistics.median(per_packet["none"])
    print(
        f"forwarding path, a speaking Opus track to {args.subscribers} subscribers: "
        f"instructions of the event loop's thread per received packet (callgrind; medians of "
        f"{args.rounds} rounds of each kind, taken in turn; each round's figure in brackets):"
    )
    for kind in ("none", "tap", "transcribing", "both"):
        if kind not in per_packet:
            continue
        median = statistics.median(per_packet[kind])
        rounds = ", ".join(f"{v:.0f}" for v in per_packet[kind])
        change = "" if kind == "none" else f"  change {(median - base) / base * 100:+.2f} %"
        print(f"  {kind:14s} {median:10.1f}{change}   [{rounds}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="speech fed per run")
    parser.add_argument("--speakers", type=int, default=1, help="speaking at once, one worker")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=3000, help="per forwarding round")
    parser.add_argument("--rounds", type=int, default=9, help="forwarding rounds of each kind")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="packets a second (0: a burst; 50: one speaker)"
    )
    parser.add_argument("--skip-recognition", action="store_true")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the event loop's thread on one CPU, the workers and other threads on the others",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the loop thread's instructions per packet under callgrind (valgrind) "
        "instead of timing it: exact and repeatable on a shared machine; implies "
        "--skip-recognition",
    )
    args = parser.parse_args()
    if args.instructions and not os.environ.get(callgrind.ENV):
        instructions(args)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    marks = Marks() if os.environ.get(callgrind.ENV) else None
    figures = asyncio.run(
        forwarding(
            args.subscribers, args.packets, args.rounds, args.rate, pin=args.pin, marks=marks
        )
    )
    if marks is not None:
        return  # the counts are read from callgrind's dumps by the parent run
    print(
        f"forwarding path, a speaking Opus track to {args.subscribers} subscribers, "
        f"µs of CPU per received packet (medians of {args.rounds} rounds of each kind, "
        "taken in turn):"
    )
    for name, value in figures.items():
        print(f"  {name:44s} {value:9.2f}")
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
