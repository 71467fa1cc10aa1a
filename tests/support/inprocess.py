"""An in-process visio-sfu server for tests that configure it (grants, webhooks, limits)."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp import web

from signaling.app import SFU_KEY, create_app
from signaling.auth import VideoGrant, mint_token
from signaling.config import Config, load_config
from tests.support.server import free_udp_ports
from visio_sfu.transport import ice_addresses, set_ice_addresses

KEY, SECRET = "testkey", "testsecret-0123456789-0123456789-abcdef"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """create_app() served on 127.0.0.1 inside the test's event loop."""

    def __init__(self, host: str = "127.0.0.1", **settings: object) -> None:
        """``host``: the address it serves and gathers ICE candidates on (another than
        127.0.0.1 in a network namespace the test made: tests/support/impair.py)."""
        settings.setdefault("api_keys", {KEY: SECRET})
        settings.setdefault("ice_addresses", [host])
        settings.setdefault("udp_port", free_udp_ports())  # not the shared default, 7882
        self.host = host
        self.config: Config = load_config(env={}, overrides={"port": free_port(), **settings})
        self.url = f"http://{host}:{self.config.port}"
        # create_app sets the process's ICE addresses; put back the test session's (127.0.0.1)
        # on exit, or the next test's aiortc peers gather on an address that is gone (servers
        # that overlap must exit in the reverse order of their making)
        self._ice_before = ice_addresses()
        self.app = create_app(self.config)
        self.runner = web.AppRunner(self.app)

    async def __aenter__(self) -> LocalServer:
        try:
            await self.runner.setup()
            await web.TCPSite(self.runner, self.host, self.config.port).start()
        except BaseException:
            set_ice_addresses(self._ice_before)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.runner.cleanup()
        finally:
            set_ice_addresses(self._ice_before)

    @property
    def sfu(self):
        """The SFU this server drives."""
        return self.app[SFU_KEY]

    def token(self, room: str, identity: str, name: str = "", **grant: object) -> str:
        """A token for ``identity``; keyword arguments set VideoGrant fields."""
        fields = {"room": room, "room_join": True, **grant}
        return mint_token(KEY, SECRET, identity, room, name=name, grant=VideoGrant(**fields))

    async def api(self, method: str, path: str, token: str | None, body: object = None):
        """Call the admin API; returns (status, JSON body)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.url}{path}", json=body, headers=headers) as r,
        ):
            return r.status, await r.json(content_type=None)
