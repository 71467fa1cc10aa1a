"""Workers and nodes: the fan-out and meeting scenarios with 1 worker, 2 workers
(``--workers 2``) and 2 nodes (two ``visio-sfu serve --redis`` processes and a redis-server),
each ramped step by step until it saturates: total forwarded packets/s there, the scaling
factor against one worker, the CPU of every server process (so packets/s per worker core) and
the load tool's own CPU.

``python -m benchmarks.workers fanout|meeting [--setups 1-worker,2-workers,2-nodes]``

Fan-out: ``--rooms`` rooms (2 by default: a room lives on one worker, so one room could never
use two), each with one publisher (camera 640x360 1.5 Mbit/s + microphone) and ``--start``
subscribers, grown by ``--step`` subscribers per room. Meeting: ``--start`` rooms of ``--size``
participants who all publish and receive everyone else, grown by ``--step`` rooms. Peers stay
connected from one step to the next; each step adds its peers, waits until they are connected,
lets them run ``--warmup`` seconds and measures ``--duration`` seconds.

A load is **carried** when the subscribers received at least ``--min-delivered`` % (95) of the
frames the publishers sent them and lost under ``--max-loss`` % (1) of the packets. The ramp
stops at the first load not carried (measured up to ``--retry`` (2) times more first: this
machine is shared) or when forwarded packets/s grew less than 3 % over the previous step:
that is saturation. Meeting sizes default to 4 (12 streams, about 2 200 packets/s a room) so
that the steps are fine enough to find it on a small machine; ``--size 8`` for larger ones.

The load tool (benchmarks/loadpeers.py: real DTLS-SRTP peers, subscribers that count without
decrypting) runs in ``--load-procs`` processes (one per core by default, unpinned) so that it
is not limited to one Python core; on a 2-core machine it competes with the servers for the
cores, which is why packets/s per worker core is reported beside the total, and the load
tool's CPU beside the servers'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.load import KEY, SECRET, TICK, Run, free_port, server_env, udp_receive_drops
from benchmarks.loadpeers import Stats
from benchmarks.media import Clip, audio_clip, video_clip
from benchmarks.targets import VisioTarget
from signaling.auth import VideoGrant, mint_token
from tests.support.server import free_udp_ports
from visio_sfu.transport import set_ice_addresses

ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("1-worker", "2-workers", "2-nodes")
PLATEAU = 1.03  # a step whose forwarded packets/s grew less than this factor: saturated


def _children(pid: int) -> list[int]:
    """``pid`` and its descendants (the front's worker processes)."""
    found, todo = [], [pid]
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far: the sum of its threads' run time from schedstat
    (nanoseconds, so a short smoke run still sees it), else utime + stime in ticks."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Deployment:
    """The servers of one setup, started as ``visio-sfu serve`` processes."""

    def __init__(self, setup: str) -> None:
        self.setup = setup
        self.procs: list[subprocess.Popen] = []
        self.redis: subprocess.Popen | None = None
        self.tmp = tempfile.mkdtemp(prefix="bench-workers-")
        env = {**server_env(), "VISIO_TRANSCRIPTION_ENABLED": "0"}
        base = [sys.executable, "-m", "signaling.cli", "serve", "--ice-address", "127.0.0.1"]
        if setup == "2-nodes":
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("2-nodes needs redis-server (apt-get install redis-server)")
            port = free_port()
            self.redis = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                + ["--dir", self.tmp],
                stdout=subprocess.DEVNULL,
            )
            commands = [
                [*base, "--workers", "1", "--redis", f"redis://127.0.0.1:{port}", "--node-id", n]
                for n in ("n1", "n2")
            ]
        else:
            commands = [[*base, "--workers", "1" if setup == "1-worker" else "2"]]
        self.ports = []
        for command in commands:
            port = free_port()
            log = open(Path(self.tmp) / f"server-{port}.log", "w")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [*command, "--port", str(port), "--udp-port", str(free_udp_ports(3))],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
            self.ports.append(port)
            self._wait(port)
        self.url = f"http://127.0.0.1:{self.ports[0]}"

    def _wait(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(
                        f"{self.setup}: a server did not start ({self.tmp})"
                    ) from None
                time.sleep(0.2)

    def placement(self) -> dict[str, int]:
        """Rooms per worker or node, from the admin API (``GET /api/rooms``, cluster-wide)."""
        token = mint_token(KEY, SECRET, "bench", "*", grant=VideoGrant(room="*", room_list=True))
        request = urllib.request.Request(
            self.url + "/api/rooms", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                rooms = json.loads(r.read())["rooms"]
        except (OSError, ValueError, KeyError):
            return {}
        count: dict[str, int] = {}
        for room in rooms:
            where = " ".join(
                f"{k} {room[k]}" for k in ("node", "worker") if room.get(k) is not None
            )
            count[where or "worker 0"] = count.get(where or "worker 0", 0) + 1
        return dict(sorted(count.items()))

    def processes(self) -> dict[str, tuple[str, int]]:
        """Every server process: label -> (role, pid). Role ``worker`` forwards media (a
        ``--workers 2`` front's spawned children; a node or a single process with ``--workers
        1`` is its own worker), ``front`` relays signaling only, ``other`` is a helper process
        (multiprocessing's resource tracker)."""
        out: dict[str, tuple[str, int]] = {}
        for n, proc in enumerate(self.procs):
            if self.setup == "2-workers":
                out["front"] = ("front", proc.pid)
                workers = [p for p in _children(proc.pid)[1:] if "spawn_main" in _cmdline(p)]
                for i, pid in enumerate(sorted(workers)):
                    out[f"worker {i}"] = ("worker", pid)
                for pid in _children(proc.pid)[1:]:
                    if pid not in workers:
                        out[f"other {pid}"] = ("other", pid)
            else:
                label = f"node {n + 1}" if self.setup == "2-nodes" else "worker 0"
                out[label] = ("worker", proc.pid)
        return out

    def stop(self, keep_logs: bool = False) -> None:
        """Stop everything started (its servers' logs kept if asked)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(5)
        if keep_logs:
            print(f"  servers' logs: {self.tmp}", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- the load tool's processes ---------------------------------------------------------------


def _load_main(conn, video: Clip, audio: Clip) -> None:  # type: ignore[no-untyped-def]
    """A load process: serves the commands of the benchmark's process on ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (Ctrl-C reaches all)
    set_ice_addresses(["127.0.0.1"])
    import uvloop

    uvloop.install()
    asyncio.run(_serve_load(conn, video, audio))


async def _serve_load(conn, video: Clip, audio: Clip) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    run: Run | None = None
    paced = 0  # publishers the pacer was started with
    while True:
        command, arg = await inbox.get()
        result: object = None
        try:
            if command == "open":
                run, paced = Run(VisioTarget(arg, KEY, SECRET), video, audio), 0
            elif command == "join":
                assert run is not None
                await _join(run, arg)
            elif command == "ready":  # wait until every peer is up; pace new publishers too
                assert run is not None
                await run.wait_connected(arg)
                if len(run.publishers) != paced:
                    if run.pacer is not None:
                        run.stop.set()
                        await run.pacer
                        run.stop.clear()
                    run.start()
                    paced = len(run.publishers)
            elif command == "snapshot":
                assert run is not None
                result = (run.stats.snapshot(), time.monotonic())
            elif command == "close":
                if run is not None:
                    await run.close()
                run = None
            elif command == "exit":
                conn.send(None)
                return
        except Exception as exc:  # reported to the parent: the point is not carried
            result = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        conn.send(result)


async def _join(run: Run, members: list[tuple[str, str, bool, bool]]) -> None:
    """Join ``(room, name, publishes, subscribes)`` members, a few at a time; publishers
    first, so that subscribers find their tracks."""
    for group in (
        [m for m in members if m[2]],
        [m for m in members if not m[2]],
    ):
        for i in range(0, len(group), 4):
            await asyncio.gather(
                *[
                    run.publish(room, name, True, True, sub) if pub else run.subscribe(room, name)
                    for room, name, pub, sub in group[i : i + 4]
                ]
            )


class LoadTool:
    """``count`` load processes driven through pipes; peers spread over them."""

    def __init__(self, count: int, video: Clip, audio: Clip) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns = []
        self.procs = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_load_main, args=(child, video, audio), name=f"bench-load-{i}", daemon=True
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.video, self.audio = video, audio
        self.next = 0

    def call(self, command: str, args: list | None = None, timeout: float = 120) -> list:
        """Send ``command`` (with ``args[i]`` to process i) to every process; their answers.
        An answer ``{"error": ...}`` raises RuntimeError."""
        for i, conn in enumerate(self.conns):
            conn.send((command, None if args is None else args[i]))
        answers = []
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                raise RuntimeError(f"the load tool did not answer {command!r}")
            answers.append(conn.recv())
        errors = [a["error"] for a in answers if isinstance(a, dict) and "error" in a]
        if errors:
            raise RuntimeError(errors[0])
        return answers

    def join(self, members: list[tuple[str, str, bool, bool]]) -> None:
        """Join members, round robin over the processes (a meeting's rooms spread too)."""
        shares: list[list] = [[] for _ in self.conns]
        for member in members:
            shares[self.next % len(shares)].append(member)
            self.next += 1
        self.call("join", shares)

    def cpu_seconds(self) -> float:
        """CPU time of every load process so far."""
        return sum(cpu_seconds(p.pid) for p in self.procs if p.pid is not None)

    def stop(self) -> None:
        """Stop the processes."""
        for conn in self.conns:
            try:
                conn.send(("exit", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- the ramp --------------------------------------------------------------------------------


def _offered(members: list[tuple[str, str, bool, bool]], video: Clip, audio: Clip) -> tuple:
    """(frames/s, packets/s) the subscribers should receive: every publisher of their room
    but themselves."""
    fps = 1 / video.interval + 1 / audio.interval
    pps = video.packets_per_second + audio.packets_per_second
    publishers: dict[str, int] = {}
    for room, _, pub, _ in members:
        publishers[room] = publishers.get(room, 0) + pub
    streams = sum(publishers[room] - pub for room, _, pub, sub in members if sub)
    return streams * fps, streams * pps


def _sum_snapshots(snaps: list[dict]) -> dict:
    total = {k: sum(s[k] for s in snaps) for k in snaps[0] if k != "delays"}
    total["delays"] = [sum(column) for column in zip(*(s["delays"] for s in snaps), strict=True)]
    return total


def measure(
    args: argparse.Namespace, dep: Deployment, load: LoadTool, members: list, label: str
) -> dict:
    """One measurement window over the peers joined so far."""
    procs = dep.processes()
    first = load.call("snapshot")
    cpu_a = {name: cpu_seconds(pid) for name, (_, pid) in procs.items()}
    load_a, t_a, drops_a = load.cpu_seconds(), time.monotonic(), udp_receive_drops()
    time.sleep(args.duration)
    second = load.call("snapshot")
    cpu_b = {name: cpu_seconds(pid) for name, (_, pid) in procs.items()}
    load_b, t_b = load.cpu_seconds(), time.monotonic()
    seconds = t_b - t_a
    drops = udp_receive_drops() - drops_a
    out = Stats.between(
        _sum_snapshots([s for s, _ in first]), _sum_snapshots([s for s, _ in second]), seconds
    )
    # rates per load process over its own window (a busy one answers late), then summed
    windows = [tb - ta for (_, ta), (_, tb) in zip(first, second, strict=True)]
    out["packets_per_s"] = sum(
        (b["packets"] - a["packets"]) / w
        for (a, _), (b, _), w in zip(first, second, windows, strict=True)
    )
    frames_per_s = sum(
        (b["frames"] - a["frames"]) / w
        for (a, _), (b, _), w in zip(first, second, windows, strict=True)
    )
    offered_fps, offered_pps = _offered(members, load.video, load.audio)
    out["offered_packets_per_s"] = offered_pps
    out["delivered_pct"] = 100 * frames_per_s / offered_fps if offered_fps else None
    cores = {name: (cpu_b[name] - cpu_a[name]) / seconds for name in procs}
    workers = sum(c for name, c in cores.items() if procs[name][0] == "worker")
    out["server_cores"] = {name: round(c, 3) for name, c in cores.items()}
    out["worker_cores"] = round(workers, 3)
    out["all_server_cores"] = round(sum(cores.values()), 3)
    out["load_cores"] = round((load_b - load_a) / seconds, 3)
    out["pps_per_worker_core"] = out["packets_per_s"] / workers if workers else None
    out["pps_per_server_core"] = (
        out["packets_per_s"] / out["all_server_cores"] if out["all_server_cores"] else None
    )
    out["carried"] = (
        max(out["loss_pct"], out["frames_lost_pct"]) < args.max_loss
        and (out["delivered_pct"] or 0) >= args.min_delivered
    )
    # datagrams the kernel dropped for a full socket buffer (any socket of the machine: the
    # servers' or the load tool's): loss there means a process was not scheduled in time
    out["udp_receive_buffer_drops"] = drops
    out["rooms_placed"] = dep.placement()
    out["label"] = label
    return out


def _new_members(args: argparse.Namespace, level: int, before: int) -> list:
    """Members to add to go from ``before`` to ``level`` (subscribers per room for fan-out,
    rooms for meetings)."""
    s = args.scenario
    if s == "fanout":
        new = []
        for r in range(args.rooms):
            if before == 0:
                new.append((f"{s}-{r}", f"pub{r}", True, False))
            new += [(f"{s}-{r}", f"sub{r}-{i}", False, True) for i in range(before, level)]
        return new
    return [
        (f"{s}-{r}", f"p{r}-{i}", True, True)
        for r in range(before, level)
        for i in range(args.size)
    ]


def _describe(args: argparse.Namespace, level: int) -> str:
    if args.scenario == "fanout":
        return f"{args.rooms} rooms x {level} subscribers"
    return f"{level} meetings of {args.size}"


def _print(setup: str, what: str, p: dict) -> None:
    if "error" in p:
        print(f"  {setup:9s} {what}: not carried: {p['error']}", flush=True)
        return
    procs = " ".join(f"{k} {v:.2f}" for k, v in p["server_cores"].items() if v or "other" not in k)
    print(
        f"  {setup:9s} {what}: {p['packets_per_s']:7.0f} pkt/s "
        f"(offered {p['offered_packets_per_s']:7.0f})  loss {p['loss_pct']:5.2f} %  "
        f"delivered {p['delivered_pct'] or 0:5.1f} %  cores: {procs}, load {p['load_cores']:.2f}  "
        f"{p['pps_per_worker_core'] or 0:6.0f} pkt/s per worker core  "
        f"kernel drops {p['udp_receive_buffer_drops']}, pacer skips {p['pacer_skips']}  "
        f"rooms {p['rooms_placed']}"
        f"{'' if p['carried'] else '  (not carried)'}",
        flush=True,
    )


def ramp(args: argparse.Namespace, setup: str, load: LoadTool) -> dict:
    """Grow the load until the setup saturates; every point and the figures at saturation."""
    dep = Deployment(setup)
    load.next = 0
    points: list[dict] = []
    members: list = []
    stopped = "reached --max"
    try:
        load.call("open", [dep.url] * len(load.conns))
        level, before, retried = args.start, 0, 0
        while level <= args.max:
            what = _describe(args, level)
            try:
                joining = None
                if level != before:
                    new = _new_members(args, level, before)
                    procs = dep.processes()
                    cpu_a = {name: cpu_seconds(pid) for name, (_, pid) in procs.items()}
                    load.join(new)
                    members += new
                    before = level
                    load.call("ready", [60.0] * len(load.conns))
                    # what signaling costs each process: joins, offers, DTLS handshakes
                    joining = {
                        name: round((cpu_seconds(pid) - cpu_a[name]) / len(new) * 1000, 2)
                        for name, (_, pid) in procs.items()
                    }
                time.sleep(args.warmup)
                p = measure(args, dep, load, members, what)
                p["join_cpu_ms_per_participant"] = joining
            except RuntimeError as exc:  # a refused join, a peer that never connected
                p = {"label": what, "carried": False, "error": str(exc)[:200]}
            p["level"] = level
            points.append(p)
            _print(setup, what, p)
            if "error" in p:
                stopped = f"error at {what}"
                break
            if not p["carried"] and retried < args.retry:
                retried += 1  # a shared machine stalls now and then: measure it again
                continue
            if not p["carried"]:
                stopped = f"not carried at {what}"
                break
            best = max((q["packets_per_s"] for q in points[:-1] if q.get("carried")), default=0)
            if best and p["packets_per_s"] < best * PLATEAU:
                stopped = f"forwarded packets/s stopped growing at {what}"
                break
            level, retried = level + args.step, 0
    finally:
        try:
            load.call("close")
        finally:
            dep.stop(keep_logs=stopped.startswith("error"))
    measured = [p for p in points if "error" not in p]
    carried = [p for p in measured if p["carried"]]
    top = max(measured, key=lambda p: p["packets_per_s"], default=None)
    best = max(carried, key=lambda p: p["packets_per_s"], default=None)
    busiest = max(carried or measured, key=lambda p: p["worker_cores"], default=None)
    return {
        "points": points,
        "stopped": stopped,
        # saturation: the most forwarded at a load carried (the most forwarded at all when
        # not even the first load was carried); beyond it quality breaks down
        "saturation_pps": (best or top or {}).get("packets_per_s", 0.0),
        "saturation_at": (best or top or {}).get("label"),
        "carried_at_saturation": best is not None,
        "most_forwarded_pps": top["packets_per_s"] if top else 0.0,
        "most_forwarded_at": top["label"] if top else None,
        # the per-core figure where the workers were busiest at a load carried (the most
        # representative of a full core: fixed costs such as timers and RTCP weigh least there)
        "pps_per_worker_core": busiest["pps_per_worker_core"] if busiest else None,
        "worker_cores_there": busiest["worker_cores"] if busiest else None,
        "server_cores_there": busiest["server_cores"] if busiest else None,
        "load_cores_there": busiest["load_cores"] if busiest else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value)


def main_sync(args: argparse.Namespace) -> dict:
    """Every setup asked for, one after the other; the summary."""
    setups = [s for s in args.setups.split(",") if s]
    for setup in setups:
        if setup not in SETUPS:
            raise SystemExit(f"unknown setup {setup!r} ({', '.join(SETUPS)})")
    video = video_clip(args.video_bitrate, fps=30, size=tuple(args.video_size))
    audio = audio_clip()
    load = LoadTool(args.load_procs, video, audio)
    results = {}
    try:
        for setup in setups:
            results[setup] = ramp(args, setup, load)
    finally:
        load.stop()
    one = results.get("1-worker", {}).get("saturation_pps")
    summary: dict = {}
    for setup, r in results.items():
        summary[setup] = {
            "saturation_pps": _round(r["saturation_pps"]),
            "saturation_at": r["saturation_at"],
            "carried": r["carried_at_saturation"],
            "most_forwarded_pps": _round(r["most_forwarded_pps"]),
            "scaling_vs_1_worker": round(r["saturation_pps"] / one, 2) if one else None,
            "pps_per_worker_core": _round(r["pps_per_worker_core"]),
            "worker_cores": r["worker_cores_there"],
            "load_cores": r["load_cores_there"],
            "stopped": r["stopped"],
        }
    per_core = [s["pps_per_worker_core"] for s in summary.values() if s["pps_per_worker_core"]]
    summary["projection_16_cores"] = {
        "workers": 15,
        "pps": round(min(per_core) * 15) if per_core else None,
        "note": "15 workers (one core left to the front and the kernel) at the lowest "
        "packets/s per worker core measured; no load tool on the machine",
    }
    report = {
        "scenario": args.scenario,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "args": vars(args),
        "summary": summary,
        "results": results,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"workers-{args.scenario}.json").write_text(json.dumps(report, indent=2))
    return report


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    p.add_argument("scenario", choices=["fanout", "meeting"])
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--rooms", type=int, default=2, help="fanout: rooms (one publisher each)")
    p.add_argument("--size", type=int, default=4, help="meeting: participants per meeting")
    p.add_argument(
        "--start", type=int, default=None, help="subscribers per room (fanout, 10) or meetings (2)"
    )
    p.add_argument("--step", type=int, default=None, help="added each step (fanout 10, meeting 2)")
    p.add_argument("--max", type=int, default=None, help="largest load (fanout 300, meeting 60)")
    p.add_argument("--max-loss", type=float, default=1.0, help="carried: packet loss under (%%)")
    p.add_argument(
        "--min-delivered", type=float, default=95.0, help="carried: frames delivered (%%)"
    )
    p.add_argument(
        "--retry", type=int, default=2, help="measure a load not carried again, up to N times"
    )
    p.add_argument("--load-procs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--video-bitrate", type=int, default=1_500_000)
    p.add_argument("--video-size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"))
    p.add_argument("--out", default="bench-results")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the scenario's defaults filled in."""
    args = parser().parse_args(argv)
    defaults = {"fanout": (10, 10, 300), "meeting": (2, 2, 60)}[args.scenario]
    for name, value in zip(("start", "step", "max"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main_sync(args)


if __name__ == "__main__":
    main()
