"""The naive relay: what a Python developer writes without an SFU, for comparison only.

    python -m benchmarks.naive_relay --port 7890

aiortc's MediaRelay: each published track is decoded once, and every subscriber's sender
encodes the decoded frames again for that subscriber. HTTP signaling: POST /offer with
{room, name, role: publish|subscribe, sdp}; GET /rooms/{room} lists the published tracks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

logger = logging.getLogger("naive_relay")


class Relay:
    """Rooms of published tracks and the peer connections that carry them."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.rooms: dict[str, list[tuple[str, object]]] = {}  # room -> [(owner, track)]
        self.pcs: set[RTCPeerConnection] = set()

    def _pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pcs.add(pc)

        @pc.on("connectionstatechange")
        async def changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.pcs.discard(pc)
                await pc.close()

        return pc

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        room, name, role = body["room"], body["name"], body["role"]
        pc = self._pc()
        tracks = self.rooms.setdefault(room, [])
        if role == "publish":

            @pc.on("track")
            def on_track(track: object) -> None:
                tracks.append((name, track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        if role == "subscribe":
            others = [t for owner, t in tracks if owner != name]
            for transceiver in pc.getTransceivers():
                match = next((t for t in others if t.kind == transceiver.kind), None)
                if match is None:
                    continue
                others.remove(match)
                transceiver.direction = "sendonly"
                transceiver.sender.replaceTrack(self.relay.subscribe(match))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def room(self, request: web.Request) -> web.Response:
        tracks = self.rooms.get(request.match_info["room"], [])
        return web.json_response(
            {"tracks": [{"owner": owner, "kind": t.kind} for owner, t in tracks]}
        )

    async def close(self, app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.pcs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7890)
    args = parser.parse_args()
    from visio_sfu.transport import set_ice_addresses

    set_ice_addresses(["127.0.0.1"])  # loopback only, as the load tool
    relay = Relay()
    app = web.Application()
    app.router.add_post("/offer", relay.offer)
    app.router.add_get("/rooms/{room}", relay.room)
    app.router.add_get("/healthz", lambda r: web.json_response({"ok": True}))
    app.on_shutdown.append(relay.close)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
