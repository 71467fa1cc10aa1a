"""Janus (Debian's ``janus`` package, videoroom plugin) as a load-run target.

``janus_config(folder, port)`` writes a configuration for a benchmark: the HTTP API on 127.0.0.1,
the videoroom plugin and the HTTP transport only, ICE on the benchmark namespace's interface
(Janus never gathers on loopback; see benchmarks/netns.py). ``JanusTarget`` drives the
videoroom through the Janus HTTP API: a publisher joins and configures with its offer, a
subscriber joins the room's feeds and answers Janus's offer.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
from pathlib import Path

import aiohttp

from benchmarks import netns
from benchmarks.loadpeers import LoadPublisher, LoadSubscriber
from benchmarks.targets import SubscribeOnceAllPublished

LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGINS_KEPT = {"libjanus_videoroom.so"}
TRANSPORTS_KEPT = {"libjanus_http.so"}
ROOM_IDS = itertools.count(1000)  # unique across the targets of one run (one Janus)


def janus_binary() -> str | None:
    """The janus executable, or None when Janus is not installed."""
    return shutil.which("janus")


def install_janus() -> None:
    """Install Debian's janus package (root on Debian only); raise if that is not possible."""
    if janus_binary():
        return
    if not shutil.which("apt-get"):
        raise RuntimeError("janus is not installed and there is no apt-get to install it")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "janus"], check=True, env=env
    )


def _libdir() -> Path:
    found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"))
    return found[0].parent.parent if found else LIBDIR


def _disabled(folder: Path, kept: set[str]) -> str:
    names = sorted(p.name for p in folder.glob("*.so") if p.name not in kept)
    return ",".join(names)


def janus_config(folder: Path, port: int, rtp_ports: str = "40000-60000") -> Path:
    """Write Janus's configuration into ``folder``; returns the main file's path."""
    lib = _libdir()
    folder.mkdir(parents=True, exist_ok=True)
    main = folder / "janus.jcfg"
    main.write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{lib / "plugins"}"
    transports_folder = "{lib / "transports"}"
    events_folder = "{lib / "events"}"
    loggers_folder = "{lib / "loggers"}"
    debug_level = 3
    session_timeout = 3600
}}
certificates: {{
}}
media: {{
    rtp_port_range = "{rtp_ports}"
}}
nat: {{
    ice_enforce_list = "{netns.INTERFACE}"
    ignore_mdns = true
}}
plugins: {{
    disable = "{_disabled(lib / "plugins", PLUGINS_KEPT)}"
}}
transports: {{
    disable = "{_disabled(lib / "transports", TRANSPORTS_KEPT)}"
}}
loggers: {{
    disable = "{_disabled(lib / "loggers", set())}"
}}
events: {{
    broadcast = false
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return main


def janus_command(folder: Path, port: int) -> list[str]:
    """The command line starting Janus with the configuration written into ``folder``."""
    main = janus_config(folder, port)
    binary = janus_binary() or "janus"
    return [binary, "-F", str(folder), "-C", str(main), "-o"]


class JanusError(RuntimeError):
    """Janus answered a request with an error."""


class JanusTarget(SubscribeOnceAllPublished):
    """Janus's videoroom over its HTTP API: one Janus session, one plugin handle per peer, and
    one long poll for all their events."""

    name = "janus"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/janus"
        self.http: aiohttp.ClientSession | None = None
        self.transactions = itertools.count(1)
        self.rooms: dict[str, int] = {}  # room name -> Janus room id
        self.feeds: dict[str, list[int]] = {}  # room name -> publisher ids so far
        self.session: int | None = None
        self.poller: asyncio.Task | None = None
        self.events: dict[int, asyncio.Queue] = {}  # handle id -> plugin events
        super().__init__()
        self.errors: list[str] = []

    async def _post(self, path: str, body: dict) -> dict:
        if self.http is None:
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = {**body, "transaction": str(next(self.transactions))}
        async with self.http.post(self.url + path, json=body) as r:
            reply = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"janus: {reply['error']}")
        return reply

    async def _handle(self) -> int:
        """A new videoroom handle (a peer) in our session, created with its poller if needed."""
        if self.session is None:
            self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
            self.poller = asyncio.ensure_future(self._poll(self.session))
        handle = (
            await self._post(
                f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
            )
        )["data"]["id"]
        self.events[handle] = asyncio.Queue()
        return handle

    async def _poll(self, session: int) -> None:
        """Long-poll a session's events and route them to their handle's queue."""
        while True:
            try:
                async with self.http.get(f"{self.url}/{session}?maxev=100") as r:
                    events = await r.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.append(f"janus poll: {exc}")
                await asyncio.sleep(0.5)
                continue
            if not isinstance(events, list):  # an error (the session is gone) or a keepalive
                if isinstance(events, dict) and events.get("janus") == "error":
                    self.errors.append(f"janus poll: {events.get('error')}")
                    await asyncio.sleep(0.5)
                continue
            for event in events:
                queue = self.events.get(event.get("sender"))
                if queue is not None and event.get("janus") == "event":
                    queue.put_nowait(event)

    async def _message(
        self,
        handle: int,
        body: dict,
        jsep: dict | None = None,
        want_jsep: bool = False,
    ) -> dict:
        """Send a plugin request; return its plugin data: the synchronous reply, or the first
        event (with ``want_jsep``, the first carrying SDP: room notifications may come first)."""
        msg = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self._post(f"/{self.session}/{handle}", msg)
        if reply.get("janus") == "success":
            data = reply["plugindata"]["data"]
            if "error" in data:
                raise JanusError(f"videoroom: {data['error']}")
            return {"data": data}
        queue = self.events[handle]
        while True:
            event = await asyncio.wait_for(queue.get(), 30)
            data = event["plugindata"]["data"]
            if "error" in data:
                raise JanusError(f"videoroom: {data['error']}")
            if event.get("jsep") or not want_jsep:
                return {"data": data, "jsep": event.get("jsep")}

    async def _room(self, handle: int, room: str) -> int:
        if room not in self.rooms:
            room_id = next(ROOM_IDS)
            await self._message(
                handle,
                {
                    "request": "create",
                    "room": room_id,
                    "publishers": 1000,
                    "bitrate": 0,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": False,
                },
            )
            self.rooms[room] = room_id
            self.feeds[room] = []
        return self.rooms[room]

    async def _publish(self, room: str, name: str, publisher: LoadPublisher) -> int:
        handle = await self._handle()
        room_id = await self._room(handle, room)
        reply = await self._message(
            handle,
            {
                "request": "joinandconfigure",
                "ptype": "publisher",
                "room": room_id,
                "display": name,
            },
            {"type": "offer", "sdp": await publisher.offer(), "trickle": False},
            want_jsep=True,
        )
        await publisher.apply_answer(reply["jsep"]["sdp"])
        feed = reply["data"]["id"]
        self.feeds[room].append(feed)
        return feed

    async def _subscribe(self, room: str, subscriber: LoadSubscriber, own: object) -> None:
        feeds = [f for f in self.feeds.get(room, []) if f != own]
        if not feeds:
            return
        handle = await self._handle()
        body = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.rooms[room],
            "streams": [{"feed": f} for f in feeds],
        }
        # Janus lists a feed once its PeerConnection is up, a moment after ours is
        for attempt in range(100):
            try:
                reply = await self._message(handle, body, want_jsep=True)
                break
            except JanusError as exc:
                if "No such feed" not in str(exc) or attempt == 99:
                    raise
                await asyncio.sleep(0.1)
        sdp = await subscriber.answer(reply["jsep"]["sdp"])
        await self._message(handle, {"request": "start"}, {"type": "answer", "sdp": sdp})

    async def close(self) -> None:
        """Destroy the session (and with it every handle and PeerConnection); stop polling."""
        if self.poller is not None:
            self.poller.cancel()
        if self.http is not None:
            if self.session is not None:
                try:
                    await self._post(f"/{self.session}", {"janus": "destroy"})
                except Exception:
                    pass
            await self.http.close()
