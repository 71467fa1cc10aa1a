"""Load tool: real WebRTC sessions against a server, figures per server core.

    python -m benchmarks.load fanout --subscribers 20 --duration 10
    python -m benchmarks.load meeting --participants 6
    python -m benchmarks.load audio --participants 50 --speakers 3
    python -m benchmarks.load ramp --step 10 --max 100 --servers visio,naive

Each run starts the server(s) itself (``--servers visio,naive``), pinned to one core with
taskset, and pins the load to the other; or drives a running visio-sfu (``--url``, ``--key``,
``--secret``). Publishers replay VP8 and Opus encoded once before the run; subscribers count
packets, bytes, loss and forwarding delay (abs-send-time) without decoding. Results: a table on
the terminal, ``<out>/results.json`` and PNG plots. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from benchmarks import netns
from benchmarks.janus import JanusTarget, install_janus, janus_command
from benchmarks.loadpeers import LoadPublisher, LoadSubscriber, Stats, pace
from benchmarks.media import Clip, audio_clip, video_clip
from benchmarks.targets import NaiveTarget, VisioTarget
from tests.support.server import free_udp_ports
from visio_sfu.delay import quantile
from visio_sfu.transport import set_ice_addresses

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "bench", "bench-secret-0123456789-0123456789-0123"
TICK = os.sysconf("SC_CLK_TCK")


try:  # loaded here, not in the forked child (no dlopen between fork and exec)
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In a server's child process: be killed when the load tool dies, however it dies."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def udp_receive_drops() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (RcvbufErrors)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return 0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The environment of a visio-sfu server under load: the load's key, no rate limits."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VISIO_KEYS": f"{KEY}:{SECRET}",
        "VISIO_JOINS_PER_SECOND": "10000",
        "VISIO_MESSAGE_RATE": "10000",
        "VISIO_PING_TIMEOUT": "3600",
        "VISIO_MAX_TRACKS": "64",
        "VISIO_LOG_LEVEL": "warning",
    }
    env.pop("VISIO_API_KEY", None)
    return env


class Server:
    """A server process started for the run, pinned to ``core``; reads its CPU time."""

    def __init__(self, kind: str, core: int | None) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root = ROOT
        if kind.startswith("visio@"):  # the default server from another checkout (before/after)
            root = Path(kind.split("@", 1)[1]).resolve()
            if not (root / "visio_sfu").is_dir():
                raise ValueError(f"{kind!r}: no visio_sfu in {root}")
        if kind in ("visio", "visio-sendto", "visio-ports") or kind.startswith("visio@"):
            cmd = [
                sys.executable,
                "-m",
                "signaling.cli",
                "serve",
                "--workers",  # one process: the figures here are per core (benchmarks/workers.py
                "1",  # measures several)
                "--port",
                str(self.port),
                "--ice-address",
                "127.0.0.1",
                "--udp-port",  # one port for every peer, as by default; a free one
                "0" if kind == "visio-ports" else str(free_udp_ports()),
            ]
            health = "/healthz"
        elif kind == "naive":
            cmd = [sys.executable, "-m", "benchmarks.naive_relay", "--port", str(self.port)]
            health = "/healthz"
        elif kind == "janus":
            self.config = Path(tempfile.mkdtemp(prefix="bench-janus-"))
            cmd = janus_command(self.config, self.port)
            health = "/janus/info"
        else:
            raise ValueError(
                f"unknown server {kind!r} (visio, visio-sendto, visio-ports, naive or janus)"
            )
        if core is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core), *cmd]
        env = server_env()
        if kind == "visio-sendto":  # the same server sending each datagram with sendto
            env["VISIO_BATCH_SENDS"] = "0"
        name = kind.replace("/", "_")
        folder = Path(os.environ.get("TMPDIR", "/tmp"))
        self.log = open(folder / f"bench-{name}-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + health, timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{kind} server did not start; see {self.log.name}"
                    ) from None
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def target(self):
        """The signaling adapter for this server."""
        if self.kind.startswith("visio"):
            return VisioTarget(self.url, KEY, SECRET)
        if self.kind == "janus":
            return JanusTarget(self.url)
        return NaiveTarget(self.url)

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if self.kind == "janus":
            shutil.rmtree(self.config, ignore_errors=True)


class Run:
    """One server under one scenario: peers, the pacing task, and measurement windows."""

    def __init__(self, target, video: Clip, audio: Clip, cpu=None) -> None:
        self.target = target
        self.video, self.audio = video, audio
        self.cpu = cpu  # () -> server CPU seconds, or None
        self.stats = Stats()
        self.publishers: list[LoadPublisher] = []
        self.subscribers: list[LoadSubscriber] = []
        # who joined where: what each subscriber should receive is derived from it
        self.members: list[tuple[str, LoadPublisher | None, LoadSubscriber | None]] = []
        self.stop = asyncio.Event()
        self.pacer: asyncio.Task | None = None

    def start(self) -> None:
        """Start sending the clips of every publisher added so far."""
        self.pacer = asyncio.ensure_future(pace(self.publishers, self.stop, self.stats))

    async def publish(
        self, room: str, name: str, video: bool, audio: bool, subscribe: bool
    ) -> None:
        """Add a participant that publishes (and maybe subscribes)."""
        pub = LoadPublisher(self.video if video else None, self.audio if audio else None)
        sub = LoadSubscriber(self.stats) if subscribe else None
        await self.target.join(room, name, pub, sub)
        self.members.append((room, pub, sub))
        self.publishers.append(pub)
        if sub is not None:
            self.subscribers.append(sub)

    async def subscribe(self, room: str, name: str) -> None:
        """Add a participant that only receives."""
        sub = LoadSubscriber(self.stats)
        await self.target.join(room, name, None, sub)
        self.members.append((room, None, sub))
        self.subscribers.append(sub)

    def expected(self) -> tuple[int, float]:
        """(streams, frames per second) the subscribers should receive: every track of their
        room but their own."""
        streams, fps = 0, 0.0
        for room, own, sub in self.members:
            if sub is None:
                continue
            for other_room, pub, _ in self.members:
                if pub is not None and pub is not own and other_room == room:
                    streams += len(pub.cids)
                    fps += pub.frames_per_second
        return streams, fps

    async def wait_connected(self, timeout: float = 30) -> None:
        """Let the target finish its subscriptions, then wait until every peer connection is up."""
        settle = getattr(self.target, "settle", None)
        if settle is not None:
            await settle()
        deadline = time.monotonic() + timeout
        peers = [p.transport for p in self.publishers] + [s.transport for s in self.subscribers]
        while not all(t.ready for t in peers):
            if time.monotonic() > deadline:
                up = sum(t.ready for t in peers)
                raise RuntimeError(f"only {up} of {len(peers)} peer connections came up")
            await asyncio.sleep(0.1)
        for sub in self.subscribers:
            sub.enlarge_buffers()

    async def measure(self, seconds: float, label: str, bar: bool = True) -> dict:
        """Counters over ``seconds``: rates, loss, delay, server CPU and the server's /metrics."""
        metrics_url = getattr(self.target, "metrics_url", None)
        m_a = await timed_scrape(metrics_url) if metrics_url else None
        drops_a = udp_receive_drops()
        a, cpu_a, t_a = self.stats.snapshot(), self.cpu() if self.cpu else None, time.monotonic()
        steps = max(int(seconds * 4), 1)
        for _ in tqdm(range(steps), desc=label, leave=False, disable=not bar, unit="¼s"):
            await asyncio.sleep(seconds / steps)
        b, t_b = self.stats.snapshot(), time.monotonic()
        cpu_b = self.cpu() if self.cpu else None  # before anything else asks the server
        out = Stats.between(a, b, t_b - t_a)
        # datagrams the kernel dropped for a full socket buffer, any socket of this network
        # namespace (the server's or the load tool's): tells where loss comes from
        out["udp_receive_buffer_drops"] = udp_receive_drops() - drops_a
        if m_a is not None:
            m_b = await timed_scrape(metrics_url)
            out.update(metrics_between(m_a[0], m_b[0], m_b[1] - m_a[1]))
        out["publishers"] = len(self.publishers)
        out["subscribers"] = len(self.subscribers)
        out["sent_packets"] = sum(p.sent for p in self.publishers)
        out["streams"] = len(self.stats.streams)  # (subscriber, track) pairs that received
        expected, fps = self.expected()
        # a stream that never arrived is lost too (a relay that cannot set up its encoders)
        out["streams_missing_pct"] = (
            max(0.0, 100 * (1 - out["streams"] / expected)) if expected > 0 else 0.0
        )
        # frames received per second against frames the subscribers should receive: a relay
        # that falls behind queues frames without losing any (the naive relay does), and only
        # this shows it; window edges make it noisy by a percent or two
        received = (b["frames"] - a["frames"]) / (t_b - t_a)
        out["delivered_pct"] = 100 * received / fps if fps > 0 else None
        if self.cpu is not None:
            cpu = cpu_b - cpu_a
            out["server_cpu_pct"] = 100 * cpu / (t_b - t_a)
            forwarded = out["packets_per_s"] * (t_b - t_a)
            out["cpu_us_per_packet"] = cpu / forwarded * 1e6 if forwarded else None
        return out

    async def close(self) -> None:
        """Stop sending, close every peer and the signaling."""
        self.stop.set()
        if self.pacer is not None:
            await self.pacer
        await self.target.close()
        for peer in [*self.publishers, *self.subscribers]:
            await peer.close()


async def timed_scrape(url: str) -> tuple[dict, float]:
    """A /metrics scrape and the time it was taken (the middle of the request)."""
    start = time.monotonic()
    metrics = await read_metrics(url)
    return metrics, (start + time.monotonic()) / 2


async def read_metrics(url: str) -> dict[tuple[str, str | None], float]:
    """One scrape of a visio-sfu /metrics: {(sample name, bucket bound or None): value}."""
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        text = await r.text()
    return {
        (s.name, s.labels.get("le")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metrics_between(a: dict, b: dict, seconds: float) -> dict:
    """What the server itself reports between two scrapes: forwarded packets/s, drops, NACKs,
    and its forwarding delay (time it holds a packet, p50/p99 as bucket bounds, and mean)."""

    def delta(name: str, le: str | None = None) -> float:
        return b.get((name, le), 0.0) - a.get((name, le), 0.0)

    name = "visio_forwarding_delay_seconds"
    buckets = sorted(
        (float(le), delta(f"{name}_bucket", le)) for (sample, le) in b if sample == f"{name}_bucket"
    )
    count = delta(f"{name}_count")

    def us(value: float | None) -> float | None:  # None also above the top bucket (100 ms)
        return None if value is None or value == float("inf") else round(value * 1e6, 1)

    return {
        "server_packets_out_per_s": delta("visio_packets_out_total") / seconds,
        "server_dropped": delta("visio_dropped_total"),
        "server_nacks": delta("visio_nacks_total"),
        "server_delay_p50_us": us(quantile(buckets, 0.5)),
        "server_delay_p99_us": us(quantile(buckets, 0.99)),
        "server_delay_mean_us": us(delta(f"{name}_sum") / count) if count else None,
    }


def loss(point: dict) -> float:
    """A point's loss: of packets (sequence numbers), of whole frames, or of whole streams
    that never arrived, the largest."""
    return max(
        point["loss_pct"], point.get("frames_lost_pct", 0.0), point.get("streams_missing_pct", 0.0)
    )


def sustained(point: dict, max_loss: float = 1.0, max_delay: float = 200.0) -> bool:
    """The server carried this load: loss and p99 delay within limits, at least 95 % of the
    frames delivered in time, its core not full."""
    delay = point.get("delay_p99_ms")
    delivered = point.get("delivered_pct")
    return (
        loss(point) < max_loss
        and (delay is None or delay <= max_delay)
        and (delivered is None or delivered >= 95)
        and point.get("server_cpu_pct", 0) < 98
    )


def _stop_ramp(args: argparse.Namespace, point: dict) -> bool:
    """A ramp stops at the first load the server did not sustain."""
    return not sustained(point, args.max_loss, args.max_delay)


async def scenario(
    args: argparse.Namespace, make_target, cpu, video: Clip, audio: Clip
) -> list[dict]:
    """Run the chosen scenario against one server; returns measurement points."""
    if args.scenario == "ramp" and args.of == "meeting":
        return await meeting_ramp(args, make_target, cpu, video, audio)
    target = make_target()
    run = Run(target, video, audio, cpu)
    points = []
    try:
        if args.scenario == "fanout":
            await run.publish("fanout", "publisher", True, True, False)
            for i in range(args.subscribers):
                await run.subscribe("fanout", f"sub{i}")
        elif args.scenario == "meeting":
            for i in range(args.participants):
                await run.publish("meeting", f"p{i}", True, True, True)
        elif args.scenario == "audio":
            for i in range(args.speakers):
                await run.publish("audio", f"speaker{i}", False, True, False)
            for i in range(args.participants - args.speakers):
                await run.subscribe("audio", f"listener{i}")
        if args.scenario != "ramp":
            await run.wait_connected()
            run.start()
            await asyncio.sleep(args.warmup)
            point = await run.measure(args.duration, f"{target.name} {args.scenario}")
            points.append(point)
            return points
        # fan-out ramp: grows by --step subscribers until loss or delay crosses a limit
        await run.publish("ramp", "publisher", True, True, False)
        await run.wait_connected()
        run.start()
        count = 0
        while count < args.max:
            for i in range(args.step):
                await run.subscribe("ramp", f"sub{count + i}")
            count += args.step
            await run.wait_connected()
            await asyncio.sleep(args.warmup)
            point = await run.measure(args.duration, f"{target.name} ramp {count}")
            points.append(point)
            print(f"  {target.name}: {count} subscribers, {_row(point)}", flush=True)
            if _stop_ramp(args, point):
                break
        return points
    finally:
        errors = getattr(target, "errors", [])
        await run.close()
        if errors:
            print(f"  {target.name}: {len(errors)} signaling errors, first: {errors[0]}")


async def meeting_ramp(
    args: argparse.Namespace, make_target, cpu, video: Clip, audio: Clip
) -> list[dict]:
    """Meetings of --step, 2 --step, ... --max participants, one after the other, each in a
    fresh room where everyone publishes audio+video and receives all the others."""
    points = []
    size = max(args.step, 2)
    while size <= args.max:
        target = make_target()
        run = Run(target, video, audio, cpu)
        try:
            for i in range(size):
                await run.publish(f"meeting{size}", f"p{i}", True, True, True)
            await run.wait_connected()
            run.start()
            await asyncio.sleep(args.warmup)
            point = await run.measure(args.duration, f"{target.name} meeting of {size}")
        finally:
            await run.close()
        point["participants"] = size
        points.append(point)
        print(f"  {target.name}: meeting of {size}, {_row(point)}", flush=True)
        if _stop_ramp(args, point):
            break
        size += args.step
        await asyncio.sleep(1)  # let the server drop the previous meeting
    return points


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(p: dict) -> str:
    row = (
        f"{p['packets_per_s']:9.0f} pkt/s  {p['mbit_per_s']:7.1f} Mbit/s  "
        f"loss {p['loss_pct']:5.2f} % (frames {p.get('frames_lost_pct', 0):5.2f} %)  "
        f"delivered {_fmt(p.get('delivered_pct'), '5.1f')} %  "
        f"delay p50 {_fmt(p.get('delay_p50_ms'), '6.2f')} ms  "
        f"p99 {_fmt(p.get('delay_p99_ms'), '6.2f')} ms  "
        f"server CPU {_fmt(p.get('server_cpu_pct'), '5.1f')} %  "
        f"{_fmt(p.get('cpu_us_per_packet'), '6.1f')} µs/pkt"
    )
    if p.get("server_delay_mean_us") is not None:
        row += (
            f"  held p50 {_fmt(p.get('server_delay_p50_us'), '.0f')} "
            f"p99 {_fmt(p.get('server_delay_p99_us'), '.0f')} µs"
        )
    return row


def x_axis(results: dict[str, list[dict]]) -> str:
    """What the points grow in: participants (meeting ramp) or subscribers."""
    points = [p for ps in results.values() for p in ps]
    return "participants" if points and all("participants" in p for p in points) else "subscribers"


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per server: CPU per forwarded packet at the largest size its core carried unsaturated
    (under 95 %); the largest fan-out (or meeting) it sustained (under 1 % loss, p99 delay
    under 200 ms, core under 98 %) and the delay there; and visio-sfu's CPU per packet against
    each other server's, at the largest size both measured unsaturated."""
    x = x_axis(results)

    def unsaturated(points: list[dict]) -> list[dict]:
        # a saturated core drops work: its CPU per packet is not comparable
        return [p for p in points if p.get("server_cpu_pct", 0) < 95]

    summary: dict = {}
    for server, points in results.items():
        free = unsaturated(points)
        ok = [p for p in points if sustained(p)]
        widest = max(free, key=lambda p: p[x], default={})
        best = max(ok, key=lambda p: p[x], default={})
        summary[server] = {
            "cpu_us_per_packet": widest.get("cpu_us_per_packet"),
            f"cpu_measured_at_{x}": widest.get(x),
            f"largest_ok_{x}": best.get(x, 0),
            "delay_p50_ms": best.get("delay_p50_ms"),
            "delay_p99_ms": best.get("delay_p99_ms"),
        }
        if best.get("server_delay_mean_us") is not None:
            for key in ("server_delay_p50_us", "server_delay_p99_us", "server_delay_mean_us"):
                summary[server][key] = best[key]
    mine = {p[x]: p.get("cpu_us_per_packet") for p in unsaturated(results.get("visio", []))}
    for other, points in results.items():
        if other == "visio":
            continue
        theirs = {p[x]: p.get("cpu_us_per_packet") for p in unsaturated(points)}
        common = [n for n in mine if mine[n] and theirs.get(n)]
        if common:
            n = max(common)
            summary[f"visio / {other} (CPU per packet at {n} {x})"] = round(mine[n] / theirs[n], 3)
    return summary


def plot(results: dict[str, list[dict]], out: Path) -> list[Path]:
    """PNG plots of each measured figure against subscribers, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [
        ("server_cpu_pct", "server CPU (% of one core)"),
        ("packets_per_s", "forwarded packets/s"),
        ("loss_pct", "loss (%)"),
        ("delay_p50_ms", "delay p50 (ms)"),
        ("delay_p99_ms", "delay p99 (ms)"),
        ("server_delay_p99_us", "time the server holds a packet, p99 (µs, its /metrics)"),
    ]
    paths = []
    x = x_axis(results)
    for key, title in figures:
        fig, ax = plt.subplots(figsize=(6, 4))
        for server, points in results.items():
            xs = [p[x] for p in points if p.get(key) is not None]
            ys = [p[key] for p in points if p.get(key) is not None]
            if xs:
                ax.plot(xs, ys, marker="o", label=server)
        ax.set_xlabel(x)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
        path = out / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


async def main_async(args: argparse.Namespace) -> dict:
    """Run the scenario against every server asked for; write results and plots."""
    video = video_clip(args.video_bitrate, fps=30, size=tuple(args.size))
    audio = audio_clip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    servers = [s for s in args.servers.split(",") if s] if not args.url else ["external"]
    for kind in servers:
        # Janus gathers no loopback candidates: its peers use the namespace's address
        set_ice_addresses([netns.ADDRESS] if kind == "janus" else ["127.0.0.1"])
        if kind == "external":
            target = lambda: VisioTarget(args.url, args.key, args.secret)  # noqa: E731
            cpu, server = None, None
        else:
            server = Server(kind, args.server_core)
            target, cpu = server.target, server.cpu_seconds
        try:
            key, n = kind, 1
            while key in results:  # a server named again: a round of its own (alternating)
                n += 1
                key = f"{kind}#{n}"
            results[key] = await scenario(args, target, cpu, video, audio)
        finally:
            if server is not None:
                server.stop()
    summary = summarise(results)
    report = {
        "scenario": args.scenario,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "media": {
            "video_packets_per_s": video.packets_per_second,
            "video_bitrate": video.bitrate,
            "audio_packets_per_s": audio.packets_per_second,
        },
        "args": {k: v for k, v in vars(args).items() if k not in ("secret",)},
        "results": results,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    report["plots"] = [str(p) for p in plot(results, out)]
    print(
        f"\n{args.scenario}: video {video.packets_per_second:.0f} pkt/s "
        f"({video.bitrate / 1e6:.1f} Mbit/s) + audio {audio.packets_per_second:.0f} pkt/s"
        " per publisher"
    )
    for server, points in results.items():
        for p in points:
            print(f"  {server:8s} {p['publishers']:3d} pub {p['subscribers']:4d} sub  {_row(p)}")
    print(json.dumps(summary, indent=2))
    print(f"results: {out / 'results.json'}; plots: {', '.join(report['plots'])}")
    return report


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.splitlines()[0]
    )
    p.add_argument("scenario", choices=["fanout", "meeting", "audio", "ramp"])
    p.add_argument(
        "--servers",
        default="visio",
        help="comma-separated: visio, visio-sendto (no sendmmsg batching), visio-ports (a UDP "
        "port per connection, no batching), visio@DIR (the default server run from the checkout "
        "in DIR, its extension built there: before and after a change in one run), naive, janus",
    )
    p.add_argument("--url", help="drive a running visio-sfu instead of starting servers")
    p.add_argument("--key", default=KEY)
    p.add_argument("--secret", default=SECRET)
    p.add_argument("--subscribers", type=int, default=10, help="fanout: subscribers")
    p.add_argument("--participants", type=int, default=4, help="meeting and audio: room size")
    p.add_argument("--speakers", type=int, default=3, help="audio: how many publish")
    p.add_argument("--of", choices=["fanout", "meeting"], default="fanout", help="ramp: what grows")
    p.add_argument("--step", type=int, default=10, help="ramp: subscribers (participants) per step")
    p.add_argument("--max", type=int, default=100, help="ramp: most subscribers (participants)")
    p.add_argument("--max-loss", type=float, default=1.0, help="ramp: stop above this loss (%%)")
    p.add_argument("--max-delay", type=float, default=200.0, help="ramp: stop above this p99 (ms)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--video-bitrate", type=int, default=1_500_000)
    p.add_argument("--size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"))
    p.add_argument("--server-core", type=int, default=0, help="core the server is pinned to")
    p.add_argument("--load-core", type=int, default=1, help="core the load tool is pinned to")
    p.add_argument("--out", default="bench-results", help="directory for results.json and plots")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if "janus" in args.servers.split(",") and not args.url and not netns.inside():
        install_janus()
        sys.exit(netns.run_inside("benchmarks.load", argv))
    # SIGTERM unwinds like Ctrl-C, so that the servers started are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.load_core is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.load_core})
        except OSError:
            pass  # fewer cores than asked: run unpinned
    import uvloop

    uvloop.install()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
