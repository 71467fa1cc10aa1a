"""Resuming a participant after a dropped connection (docs/protocol.md, "Resuming").

Every ``joined`` carries a resume token, ``<participant sid>.<secret>`` (a random secret the
server keeps; nothing signed, nothing derived from the access token). When a socket closes
without a ``leave``, its participant is not removed: it is suspended in its room for
``resume_grace`` seconds (Room.suspend), and the others see nothing. A ``join`` carrying the
token gets the same participant back (Room.resume: same sid, fresh peer connections; with
``keep``, when only the socket dropped and its peer connections are up: Room.resume_signaling,
the same connections, tracks and subscriptions) when:

- the token's secret matches (compared in constant time), and it was not used already: each
  resume replaces it with a new one, given in that ``joined``;
- the access token of the new connection names the same identity and room, with the same
  grants;
- the participant is still there: suspended, or held by a connection the server has not yet
  found dead (that connection is then closed, code 4004).

Otherwise the join is an ordinary one (``"resumed": false``). A token is forgotten when its
participant leaves, so it lives at most as long as the participant plus its grace. A participant
moved to a breakout room (signaling/breakout.py) is resumed where it is now: the token follows
it (the access token still names the meeting's room).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visio_sfu import SFU, Participant, Permissions, Room, TransportError
from visio_sfu.events import LifecycleEvent, ParticipantEntered, ParticipantExited

if TYPE_CHECKING:
    from .session import Session

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    secret: str
    identity: str
    room: str  # the room its access token names
    session: weakref.ref[Session] | None  # the connection serving it now (None: suspended)
    now: str = ""  # the room it is in now, when moved (breakout rooms)


class Resumes:
    """The resume tokens of one SFU's participants."""

    def __init__(self, sfu: SFU) -> None:
        self._entries: dict[str, _Entry] = {}  # participant sid -> its token
        sfu.listeners.append(self._on_event)

    def issue(self, session: Session, p: Participant, room: str) -> str:
        """A new token for ``p`` (served by ``session``); any older one stops working."""
        secret = secrets.token_urlsafe(24)
        self._entries[p.sid] = _Entry(
            secret, p.identity, room, weakref.ref(session), p.room_name or room
        )
        return f"{p.sid}.{secret}"

    def let_go(self, sid: str) -> None:
        """The connection of participant ``sid`` dropped: it waits for a resume."""
        entry = self._entries.get(sid)
        if entry is not None:
            entry.session = None

    def claim(self, token: str, identity: str, room: str) -> tuple[str, Session | None, str] | None:
        """The sid ``token`` names, the session holding that participant now and the room it
        is in now, if the token is valid for ``identity`` in ``room``; the token is then used
        up."""
        sid, _, secret = token.partition(".")
        entry = self._entries.get(sid)
        if entry is None or not hmac.compare_digest(entry.secret.encode(), secret.encode()):
            return None
        if entry.identity != identity or entry.room != room:
            return None
        del self._entries[sid]
        return sid, entry.session() if entry.session is not None else None, entry.now or room

    def _on_event(self, event: LifecycleEvent) -> None:
        if isinstance(event, ParticipantExited) and event.reason != "moved":
            self._entries.pop(event.participant.sid, None)
        elif isinstance(event, ParticipantEntered):
            entry = self._entries.get(event.participant.sid)
            if entry is not None:
                entry.now = event.room.name

    def __len__(self) -> int:
        return len(self._entries)


_REGISTRIES: weakref.WeakKeyDictionary[SFU, Resumes] = weakref.WeakKeyDictionary()


def registry(sfu: SFU) -> Resumes:
    """The resume tokens of ``sfu``'s participants."""
    found = _REGISTRIES.get(sfu)
    if found is None:
        found = _REGISTRIES[sfu] = Resumes(sfu)
    return found


def connections_up(p: Participant) -> bool:
    """Whether ``p``'s peer connections can be kept for a client that came back: none failed
    or closed (one never negotiated is kept too)."""
    transports = [p.publishing.transport if p.publishing is not None else None]
    if p.subscriber is not None:
        transports.append(p.subscriber.transport)
    return all(t is None or t.state not in ("failed", "closed") for t in transports)


async def take_over(
    session: Session, room: Room, token: str, permissions: Permissions, keep: bool = False
) -> tuple[Participant, bool] | None:
    """Give ``session`` the participant ``token`` names in ``room`` (or in the breakout room
    it was moved to), and whether its connections were kept (``keep``, if they are up), or
    None (an ordinary join follows): see the module's documentation for the conditions."""
    identity = session.identity.identity
    claimed = registry(session.sfu).claim(token, identity, room.name)
    if claimed is not None:
        room = session.sfu.room(claimed[2]) or room
    p = room.participants.get(claimed[0]) if claimed is not None else None
    if claimed is None or p is None or p.identity != identity or p.permissions != permissions:
        logger.info("session <%s>: resume refused", identity)
        return None
    holder = claimed[1]
    if holder is not None and holder is not session:
        holder.release(p)
    kept = keep and connections_up(p)
    try:
        if kept:
            room.resume_signaling(p, session.emit)
        else:
            await room.resume(p, session.emit)
    except (KeyError, TransportError) as exc:  # gone meanwhile: an ordinary join
        logger.info("session <%s>: resume failed: %r", identity, exc)
        return None
    return p, kept
