"""Issue 19: a cluster of visio-sfu nodes coordinated through a real redis-server, and
``--workers``. Nodes are ``visio-sfu serve`` processes on 127.0.0.1 (ServerProcess); the
participants are aiortc clients whose decoded frames are checked (colour of the publisher).

The module's three nodes are shared and the tests run in order: the outage test needs them
all, then the drain test removes one node and the kill test another."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from signaling.auth import VideoGrant, mint_token
from signaling.cluster import internal
from signaling.config import DEV_API_KEY, DEV_API_SECRET, load_config
from signaling.webhooks import verify
from tests.support.balancer import Balancer
from tests.support.media import until
from tests.support.redis import RedisServer
from tests.support.server import ROOT, ServerProcess, free_port
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack, colour_index
from visio_client.protocol import SignalingConnection

TTL = "3"  # seconds without a heartbeat before a node is dead (default 5)


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(redis_server):
    started = []
    try:
        for name in ("a", "b", "c"):
            extra = ["--redis", redis_server.url, "--node-id", name, "--heartbeat-ttl", TTL]
            if name == "c":  # a node with workers: the cluster routes to it, it to a worker
                extra += ["--workers", "2"]
            started.append(ServerProcess(extra=[*extra, "--drain-timeout", "1"], start_timeout=90))
        yield {name: node for name, node in zip("abc", started, strict=True)}
    finally:
        for node in started:
            node.stop()


def admin_token(node: ServerProcess) -> str:
    key, secret = node.dev_credentials()
    grant = VideoGrant(room="*", room_list=True, room_admin=True, room_create=True)
    return mint_token(key, secret, "admin", "*", grant=grant)


async def api(url: str, token: str, method: str, path: str, body: object = None):
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


class Frames:
    """Every video frame a client decodes, with its colour and time, across reconnections."""

    def __init__(self, client: Client) -> None:
        self.seen: list[tuple[float, int]] = []
        self.tasks: list[asyncio.Task] = []
        client.on_track = self._on_track
        for remote in client.remote_tracks:
            self._on_track(remote)

    def _on_track(self, remote) -> None:
        if remote.kind == "video":
            self.tasks.append(asyncio.ensure_future(self._read(remote.track)))

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.seen.append((time.monotonic(), colour_index(frame)))

    def since(self, t: float, colour: int) -> int:
        """Frames of publisher ``colour``'s colour decoded after ``t`` (6 colours)."""
        return sum(1 for when, c in self.seen if when > t and c == colour % 6)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a frame between ``start`` and ``end``."""
        times = [start] + [w for w, _c in self.seen if start < w < end] + [end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


async def participant(url: str, node: ServerProcess, room: str, index: int) -> tuple:
    client = Client(url, node.token(room, f"user{index}", f"User {index}"), reconnect=True)
    frames = Frames(client)
    await client.connect()
    await client.publish(PatternVideoTrack(index), ToneAudioTrack(index))
    return client, frames


async def flowing(pairs, since: float, timeout: float, what: str) -> float:
    """Wait until each (frames, colour) decodes 5 frames after ``since``; the time taken."""
    await until(
        lambda: all(f.since(since, colour) >= 5 for f, colour in pairs),
        timeout=timeout,
        what=what,
    )
    return time.monotonic() - since


def health_status(node: ServerProcess) -> int | None:
    """/healthz's HTTP status (None: nothing answers)."""
    try:
        with urllib.request.urlopen(f"{node.url}/healthz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def owner_of(redis_server: RedisServer, room: str) -> str | None:
    return redis_server.get(f"visio:room:{room}")


async def test_unreachable_redis_is_a_clear_error():
    with pytest.raises(RuntimeError) as failed:
        ServerProcess(extra=["--redis", f"redis://127.0.0.1:{free_port()}"])
    assert "cannot use Redis at redis://127.0.0.1" in str(failed.value)


async def test_one_room_through_two_nodes(nodes, redis_server):
    """Alice reaches node a, Bob node b: one room, each decodes the other's camera; the admin
    API of either node lists it once, with its owner."""
    a, b = nodes["a"], nodes["b"]
    alice, alice_frames = await participant(a.url, a, "cross", 1)
    bob, bob_frames = await participant(b.url, b, "cross", 2)
    try:
        start = time.monotonic() - 30
        await flowing([(alice_frames, 2), (bob_frames, 1)], start, 20, "media both ways")
        owner = owner_of(redis_server, "cross")
        assert owner in ("a", "b")
        for node in (a, b, nodes["c"]):
            status, body = await api(node.url, admin_token(node), "GET", "/api/rooms")
            assert status == 200, body
            rooms = [r for r in body["rooms"] if r["name"] == "cross"]
            assert len(rooms) == 1 and rooms[0]["participants"] == 2, body
            assert rooms[0]["node"] == owner
        # a room a node makes by itself (as breakout rooms are) is claimed in Redis
        config = load_config(env={}, overrides={"dev": True})
        made_here = internal.headers(internal.cluster_key(config), internal.WORKER)
        made_here["Authorization"] = f"Bearer {admin_token(a)}"
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{a.url}/api/rooms", json={"name": "made-on-a"}, headers=made_here) as r,
        ):
            assert r.status == 201
        await until(lambda: owner_of(redis_server, "made-on-a") == "a", 5, what="claimed")
        # acting on the room from a node that does not hold it reaches its owner
        other = b if owner == "a" else a
        path = "/api/rooms/cross/participants"
        status, body = await api(other.url, admin_token(other), "GET", path)
        assert status == 200 and {p["identity"] for p in body["participants"]} == {
            "user1",
            "user2",
        }, body
    finally:
        alice_frames.stop()
        bob_frames.stop()
        await alice.leave()
        await bob.leave()


async def test_whip_reaches_the_rooms_node(nodes, redis_server):
    """An encoder POSTs its WHIP offer to node c, wherever the room is (relayed to its owner,
    or through c's front to one of its workers): Alice decodes it; its DELETE, sent to a node
    that does not hold the room, ends it there."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    alice, alice_frames = await participant(a.url, a, "whip-x", 5)
    encoder = RTCPeerConnection()
    encoder.addTransceiver(PatternVideoTrack(1), direction="sendonly")
    try:
        await encoder.setLocalDescription(await encoder.createOffer())
        token = c.token("whip-x", "encoder", "Encoder")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{c.url}/whip/whip-x", data=encoder.localDescription.sdp, headers=headers
            ) as r,
        ):
            assert r.status == 201, await r.text()
            answer, location = await r.text(), r.headers["Location"]
        owner = owner_of(redis_server, "whip-x")
        await encoder.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await flowing([(alice_frames, 1)], time.monotonic(), 20, "the WHIP video at alice")
        async with (
            aiohttp.ClientSession() as http,
            http.delete(
                (b if owner != "b" else a).url + location,
                headers={"Authorization": f"Bearer {token}"},
            ) as r,
        ):
            assert r.status == 200
    finally:
        alice_frames.stop()
        await encoder.close()
        await alice.leave()


async def test_redis_outage_keeps_meetings(nodes, redis_server):
    """Redis stops while a meeting runs: the meeting never stops; a room asked for during
    the outage is placed once Redis is back; the nodes register again."""
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    alice, alice_frames = await participant(a.url, a, "outage", 3)
    bob, bob_frames = await participant(b.url, b, "outage", 4)
    late = None
    try:
        await flowing([(alice_frames, 4), (bob_frames, 3)], time.monotonic() - 30, 20, "media")
        down = time.monotonic()
        redis_server.stop()
        token = c.token("during-outage", "carol", "Carol")
        late = Client(c.url, token)
        joining = asyncio.ensure_future(late.connect())
        await asyncio.sleep(4)
        assert not joining.done(), "a room was placed without Redis"
        assert a.get("/healthz")["redis"] == "unreachable"
        redis_server.start()
        joined = await asyncio.wait_for(joining, 20)
        assert joined["room"]["name"] == "during-outage"
        up = time.monotonic()
        await flowing([(alice_frames, 4), (bob_frames, 3)], up, 10, "media after the outage")
        for frames in (alice_frames, bob_frames):
            gap = frames.longest_gap(down, time.monotonic())
            assert gap < 2.0, f"the meeting stopped for {gap:.1f} s"
        await until(lambda: owner_of(redis_server, "outage") is not None, 10, what="reclaimed")
        assert owner_of(redis_server, "during-outage") in ("a", "b", "c")
        assert {"visio:node:a", "visio:node:b", "visio:node:c"} <= set(redis_server.keys())
    finally:
        alice_frames.stop()
        bob_frames.stop()
        if late is not None:
            await late.leave()
        await alice.leave()
        await bob.leave()


async def test_drain_moves_meetings(nodes, redis_server):
    """``visio-sfu drain`` on the node holding a meeting: it takes no new room, then gives the
    meeting to another node and exits; the participants (reaching it through the other nodes)
    reconnect by themselves and media flows again."""
    a = nodes["a"]
    # a places the room (on any node); the participants reach it through the two others
    status, _ = await api(a.url, admin_token(a), "POST", "/api/rooms", {"name": "drained"})
    assert status == 201
    owner = owner_of(redis_server, "drained")
    holder = nodes[owner]
    others = [n for name, n in nodes.items() if name != owner and n.proc.poll() is None]
    alice, alice_frames = await participant(others[0].url, others[0], "drained", 5)
    bob, bob_frames = await participant(others[1].url, others[1], "drained", 6)
    try:
        await flowing([(alice_frames, 6), (bob_frames, 5)], time.monotonic() - 30, 20, "media")
        cmd = [sys.executable, "-m", "signaling.cli", "drain", "--url", holder.url]
        done = subprocess.run(
            [*cmd, "--timeout", "1"], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        asked = time.monotonic()
        assert holder.proc.wait(20) == 0
        await flowing([(alice_frames, 6), (bob_frames, 5)], asked, 15, "media after the drain")
        assert owner_of(redis_server, "drained") not in (None, owner)
        assert alice.reconnects >= 1 and bob.reconnects >= 1
        assert f"visio:node:{owner}" not in redis_server.keys()
    finally:
        alice_frames.stop()
        bob_frames.stop()
        await alice.leave()
        await bob.leave()


async def test_node_killed(nodes, redis_server):
    """kill -9 the node holding a meeting (its participants behind one address, as behind a
    load balancer): they reconnect to a survivor within 10 s and media flows again."""
    alive = {name: n for name, n in nodes.items() if n.proc.poll() is None}
    assert len(alive) >= 2, "the drain test should have left two nodes"
    balancer = await Balancer([n.port for n in alive.values()]).start()
    any_node = next(iter(alive.values()))
    alice, alice_frames = await participant(balancer.url, any_node, "killed", 7)
    bob, bob_frames = await participant(balancer.url, any_node, "killed", 8)
    try:
        await flowing([(alice_frames, 8), (bob_frames, 7)], time.monotonic() - 30, 20, "media")
        owner = owner_of(redis_server, "killed")
        events = aioredis.Redis(port=redis_server.port, decode_responses=True).pubsub()
        await events.subscribe("visio:events")
        killed = time.monotonic()
        alive[owner].proc.kill()
        took = await flowing(
            [(alice_frames, 8), (bob_frames, 7)], killed, 10, "media within 10 s of the kill"
        )
        print(f"media again {took:.1f} s after kill -9")
        new_owner = owner_of(redis_server, "killed")
        assert new_owner in alive and new_owner != owner
        # the survivors said so on the events channel (docs/cluster.md)
        notices = []
        for _ in range(50):  # what arrived meanwhile (the first read is the subscription)
            msg = await events.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None:
                notices.append(json.loads(msg["data"]))
        await events.aclose()
        assert any(n["event"] == "node_dead" and n["dead"] == owner for n in notices), notices
        # placed again by the reaper, or before it by the first survivor a participant reached
        assert any(
            "killed" in n.get("rooms", [])
            if n["event"] == "node_dead"
            else n.get("room") == "killed"
            for n in notices
            if n["event"] in ("node_dead", "room_moved")
        ), notices
    finally:
        alice_frames.stop()
        bob_frames.stop()
        await alice.leave()
        await bob.leave()
        await balancer.stop()


async def many_sockets_through_the_front(server: ServerProcess, count: int = 110) -> None:
    """More participants than aiohttp's default connection pool (100) join one room through
    the front, which relays each socket on a connection of its own: all are in the room (the
    101st used to wait for a free connection, then get 503)."""
    key, secret = server.dev_credentials()
    sockets: list[SignalingConnection] = []

    async def join(i: int) -> None:
        grant = VideoGrant(room="w-many", room_join=True)
        token = mint_token(key, secret, f"many{i}", "w-many", grant=grant)
        signal_ = SignalingConnection(server.url, token, session=http)
        sockets.append(signal_)
        await signal_.connect()
        await signal_.request({"type": "join", "name": f"many{i}"}, timeout=40)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            await asyncio.gather(*(join(i) for i in range(count)))
            status, body = await api(
                server.url, admin_token(server), "GET", "/api/rooms/w-many/participants"
            )
            assert status == 200 and len(body["participants"]) == count, (status, body)
        finally:
            for signal_ in sockets:
                await signal_.close()


async def test_two_workers():
    """``--workers 2``: two rooms land on two workers, and both forward; /metrics says so per
    worker, the admin API lists both rooms and reaches each, webhooks come from both; 110
    participants join a third room through the front."""
    hooks: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        hooks.append(verify(body, request.headers["Authorization"], {DEV_API_KEY: DEV_API_SECRET}))
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    hook_env = {
        "VISIO_WEBHOOK_URLS": f"http://127.0.0.1:{hook_port}/hook",
        "VISIO_JOINS_PER_SECOND": "1000",  # many_sockets_through_the_front joins 110 at once
    }
    server = ServerProcess(
        extra=["--workers", "2", "--drain-timeout", "2"], env=hook_env, start_timeout=90
    )
    clients = []
    try:
        pairs = []
        for room, (i, j) in (("w-one", (11, 12)), ("w-two", (13, 14))):
            first = await participant(server.url, server, room, i)
            second = await participant(server.url, server, room, j)
            clients += [first, second]
            pairs += [(first[1], j), (second[1], i)]
        await flowing(pairs, time.monotonic() - 30, 30, "media in both rooms")
        # each worker reports its rooms every second
        await until(
            lambda: sorted(w["rooms"] for w in server.get("/healthz")["workers"]) == [1, 1],
            10,
            what=f"one room per worker; log: {server.output(1500)}",
        )
        metrics = server._fetch("/metrics").decode()
        for worker in ("0", "1"):
            line = next(
                x for x in metrics.splitlines()
                if x.startswith(f'visio_packets_out_total{{worker="{worker}"}}')
            )  # fmt: skip
            assert float(line.split()[-1]) > 0, line
        status, body = await api(server.url, admin_token(server), "GET", "/api/rooms")
        assert status == 200
        body_rooms = body["rooms"]
        assert {(r["name"], r["worker"]) for r in body["rooms"]} in (
            {("w-one", 0), ("w-two", 1)},
            {("w-one", 1), ("w-two", 0)},
        ), body
        for room, users in (("w-one", {"user11", "user12"}), ("w-two", {"user13", "user14"})):
            path = f"/api/rooms/{room}/participants"
            status, body = await api(server.url, admin_token(server), "GET", path)
            assert status == 200 and {p["identity"] for p in body["participants"]} == users
        started = {h["room"]["name"] for h in hooks if h["event"] == "room_started"}
        assert started == {"w-one", "w-two"}, hooks
        await many_sockets_through_the_front(server)
        # kill -9 the worker holding w-one: started again, its participants reconnect by
        # themselves and w-one's media flows again; w-two's never stopped
        worker = next(r["worker"] for r in body_rooms if r["name"] == "w-one")
        pid = next(w["pid"] for w in server.get("/healthz")["workers"] if w["worker"] == worker)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await flowing(pairs, killed, 15, "media in both rooms after a worker died")
        assert clients[0][0].reconnects >= 1 and clients[1][0].reconnects >= 1
        assert clients[2][0].reconnects == 0  # the other room's people saw nothing
        await until(
            lambda: (
                {w["worker"]: w["restarts"] for w in server.get("/healthz")["workers"]}
                == {worker: 1, 1 - worker: 0}
            ),
            10,
            what="the killed worker started again",
        )
        # SIGTERM drains: /healthz says so (503) while meetings may end, then everything stops
        server.proc.send_signal(signal.SIGTERM)
        await until(lambda: health_status(server) == 503, 5, what="draining")
        await until(lambda: server.proc.poll() is not None, 30, what="the server exits")
        assert server.proc.returncode == 0
        assert server.output(None).count(" exited (") == 1  # the kill; the rest stopped
    finally:
        for client, frames in clients:
            frames.stop()
            await client.leave()
        server.stop()
        await runner.cleanup()


async def test_stopping_a_server_with_workers_ends_meetings_at_once():
    """SIGINT to the front of two workers with a meeting on: its participants are told
    (server_shutdown, not left suspended) and the server is gone within seconds; the front
    used to wait for the sockets it relays to end (10 s with one participant)."""
    server = ServerProcess(extra=["--workers", "2"], start_timeout=90)
    client = None
    try:
        client = Client(server.url, server.token("closing", "ann"))
        await client.connect()
        await client.publish(ToneAudioTrack(1))
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        while server.proc.poll() is None and time.monotonic() - started < 30:
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        log = server.output(None)
        assert server.proc.returncode == 0, log[-2000:]
        assert took < 5, f"the server took {took:.1f} s to stop"
        assert "left (server_shutdown)" in log and "suspended" not in log, log[-2000:]
    finally:
        if client is not None:
            await client.close()
        server.stop()
