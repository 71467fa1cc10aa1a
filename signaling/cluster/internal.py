"""Requests between the processes of one deployment (front to worker, node to node).

They carry ``X-Visio-Internal: <hop>.<mac>``: ``hop`` says how far the request already went
(``node``: relayed by another node, route it to a local worker only; ``worker``: handle it in
this process), ``mac`` proves it comes from a process holding the same API secrets. A request
without a valid header is an outside one, routed from the start.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from ..config import Config

HEADER = "X-Visio-Internal"
#: the client's address, as seen by the first process (rate limits, logs)
FORWARDED_FOR = "X-Visio-Forwarded-For"
NODE, WORKER = "node", "worker"
HOPS = (NODE, WORKER)


def cluster_key(config: Config) -> str:
    """A MAC key every process with the same API keys derives alike (never sent)."""
    material = "\n".join(f"{k}:{v}" for k, v in sorted(config.api_keys.items()))
    return hmac.new(material.encode(), b"visio-sfu cluster v1", hashlib.sha256).hexdigest()


def header_value(key: str, hop: str) -> str:
    """The header a process sends with a request relayed at ``hop``."""
    mac = hmac.new(key.encode(), hop.encode(), hashlib.sha256).hexdigest()
    return f"{hop}.{mac}"


def hop_of(request: web.Request, key: str) -> str | None:
    """``node`` or ``worker`` for a genuine internal request, else None."""
    value = request.headers.get(HEADER, "")
    hop, _, mac = value.partition(".")
    if hop not in HOPS or not mac:
        return None
    expected = header_value(key, hop).partition(".")[2]
    return hop if hmac.compare_digest(expected.encode(), mac.encode()) else None


def headers(key: str, hop: str, request: web.Request | None = None) -> dict[str, str]:
    """Headers of a request relayed at ``hop``: the MAC, the client's address, and the
    original request's Authorization and WebSocket sub-protocols."""
    out = {HEADER: header_value(key, hop)}
    if request is not None:
        remote = request.remote or "?"
        out[FORWARDED_FOR] = remote
        for name in ("Authorization", "Content-Type"):
            if name in request.headers:
                out[name] = request.headers[name]
    return out
