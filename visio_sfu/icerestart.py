"""ICE restarts within one peer connection (RFC 8445 section 9), which aiortc does not do.

A client whose network changed (Wi-Fi to 4G, a NAT that rebound, a VPN coming up) restarts
ICE: new credentials, new candidates, new checks, on the same connection. DTLS and SRTP go on,
so the participant keeps its session, its tracks and its subscriptions, and media resumes as
soon as a new candidate pair is nominated.

aioice runs one check list per Connection, once; this module starts a new generation on a
Connection already connected:

- ``renew_local``: new local credentials (on the mux, a new unique username fragment);
- ``restart_remote``: the peer's new credentials; the old generation's remote candidates and
  checks are dropped, while the nominated pair keeps carrying media until a pair of the new
  generation is nominated (by the peer when it controls, by ``run_checks`` when we do);
- ``TrickleBuffer``: candidates the peer trickles for a generation not applied yet (they race
  the description that starts it) wait for it instead of joining the old one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

from aioice.ice import CandidatePair

logger = logging.getLogger(__name__)

#: seconds the controlling side keeps checking a new generation's pairs before giving up (the
#: old pair, if it still works, carries on; if not, consent expires and the connection fails)
CHECKS_TIMEOUT = 30.0
#: candidates kept for a generation not applied yet
MAX_WAITING = 64
_ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)\s*$", re.M)
_PWD = re.compile(r"^a=ice-pwd:(\S+)\s*$", re.M)


def ice_credentials(sdp: str) -> tuple[str, str] | None:
    """The first ``(ice-ufrag, ice-pwd)`` of a description (every section's, bundled)."""
    ufrag, pwd = _UFRAG.search(sdp), _PWD.search(sdp)
    if ufrag is None or pwd is None:
        return None
    return ufrag.group(1), pwd.group(1)


def _random(length: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def renew_local(connection: Any, mux: Any = None) -> None:
    """Give an aioice Connection new local credentials (its next description carries them);
    ``mux``: the UdpMux it gathered on, which then routes the new ufrag to it."""
    if mux is not None:
        mux.renew(connection)
    else:
        connection._local_username = _random(8)  # (aioice's properties have no setters)
    connection._local_password = _random(24)


def restart_remote(connection: Any, ufrag: str, pwd: str, gatherer: Any = None) -> None:
    """Start the peer's new generation on a connected aioice Connection: its credentials, no
    remote candidate yet (the description's and the trickled ones come next), no check. The
    nominated pair stays until one of the new generation replaces it. ``gatherer``: aiortc's
    RTCIceGatherer, whose own end-of-candidates flag is reset too."""
    for pair in connection._check_list:
        if pair.task is not None:
            pair.task.cancel()
    connection._check_list = []
    connection._remote_candidates = []
    connection._remote_candidates_end = False
    connection._nominating = set()
    connection.remote_username = ufrag
    connection.remote_password = pwd
    if gatherer is not None:
        gatherer._remote_candidates_end = False
    # consent (RFC 7675) counts afresh: failures while the peer was away (its path dead)
    # must not close the connection while the new generation's checks run
    task = connection._query_consent_task
    if task is not None and not task.done():
        task.cancel()
        connection._query_consent_task = asyncio.ensure_future(connection.query_consent())


async def run_checks(connection: Any, timeout: float = CHECKS_TIMEOUT) -> bool:
    """As the controlling side, check the new generation's pairs (one every 20 ms, as aioice's
    connect() paces them, each nominating: aggressive nomination) until one is nominated;
    True if one was within ``timeout`` seconds."""
    old = connection._nominated.get(1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and not connection._closing:
        pair = connection._nominated.get(1)
        if pair is not None and pair is not old and pair in connection._check_list:
            return True
        for state in (CandidatePair.State.WAITING, CandidatePair.State.FROZEN):
            waiting = next((p for p in connection._check_list if p.state == state), None)
            if waiting is not None:
                connection.check_start_task(waiting)
                break
        await asyncio.sleep(0.02)
    return False


class TrickleBuffer:
    """Trickled candidates of a generation not applied yet, by its username fragment."""

    def __init__(self) -> None:
        self._waiting: list[tuple[str, Any]] = []

    def early(self, ufrag: str | None, current: str | None) -> bool:
        """Whether a candidate for ``ufrag`` must wait: it names a generation other than the
        one applied (``current``), which must then be a newer one (candidates of an older
        generation are of no use either)."""
        return bool(ufrag) and current is not None and ufrag != current

    def keep(self, ufrag: str, candidate: Any) -> None:
        """Keep a candidate for later (the oldest dropped past MAX_WAITING)."""
        self._waiting.append((ufrag, candidate))
        del self._waiting[:-MAX_WAITING]

    def take(self, ufrag: str) -> list[Any]:
        """The candidates kept for ``ufrag`` (now applied); the others are dropped."""
        out = [c for u, c in self._waiting if u == ufrag]
        self._waiting.clear()
        return out


def nominated_address(connection: Any) -> tuple[str, int] | None:
    """The remote address media goes to (the nominated pair's), if any."""
    pair: CandidatePair | None = connection._nominated.get(1)
    return pair.remote_addr if pair is not None else None
