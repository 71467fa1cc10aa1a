"""A TCP load balancer in the test's event loop: several nodes behind one address, as in
production (docs/cluster.md). Each new connection goes to the next backend that accepts it,
round robin; a backend that refuses is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools


class Balancer:
    """Round-robin TCP relay from 127.0.0.1:<port> to ``backends`` (ports on 127.0.0.1)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The address clients use."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Balancer:
        """Listen on a free port."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop accepting."""
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in range(len(self.backends)):
            port = self.backends[next(self._next)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
