"""Resuming a participant after a dropped connection (docs/protocol.md, "Resuming").

Every ``joined`` carries a resume token, ``<participant sid>.<secret>`` (a random secret the
server keeps; nothing signed, nothing derived from the access token). When a socket closes
without a ``leave``, its participant is not removed: it is suspended in its room for
``resume_grace`` seconds (Room.suspend), and the others see nothing. A ``join`` carrying the
token gets the same participant back (Room.resume: same sid, fresh peer connections) when:

- the token's secret matches (compared in constant time), and it was not used already: each
  resume replaces it with a new one, given in that ``joined``;
- the access token of the new connection names the same identity and room, with the same
  grants;
- the participant is still there: suspended, or held by a connection the server has not yet
  found dead (that connection is then closed, code 4004).

Otherwise the join is an ordinary one (``"resumed": false``). A token is forgotten when its
participant leaves, so it lives at most as long as the participant plus its grace.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visio_sfu import SFU, Participant, Permissions, Room, TransportError
from visio_sfu.events import LifecycleEvent, ParticipantExited

if TYPE_CHECKING:
    from .session import Session

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    secret: str
    identity: str
    room: str
    session: weakref.ref[Session] | None  # the connection serving it now (None: suspended)


class Resumes:
    """The resume tokens of one SFU's participants."""

    def __init__(self, sfu: SFU) -> None:
        self._entries: dict[str, _Entry] = {}  # participant sid -> its token
        sfu.listeners.append(self._on_event)

    def issue(self, session: Session, p: Participant, room: str) -> str:
        """A new token for ``p`` (served by ``session``); any older one stops working."""
        secret = secrets.token_urlsafe(24)
        self._entries[p.sid] = _Entry(secret, p.identity, room, weakref.ref(session))
        return f"{p.sid}.{secret}"

    def let_go(self, sid: str) -> None:
        """The connection of participant ``sid`` dropped: it waits for a resume."""
        entry = self._entries.get(sid)
        if entry is not None:
            entry.session = None

    def claim(self, token: str, identity: str, room: str) -> tuple[str, Session | None] | None:
        """The sid ``token`` names, and the session holding that participant now, if the token
        is valid for ``identity`` in ``room``; the token is then used up."""
        sid, _, secret = token.partition(".")
        entry = self._entries.get(sid)
        if entry is None or not hmac.compare_digest(entry.secret.encode(), secret.encode()):
            return None
        if entry.identity != identity or entry.room != room:
            return None
        del self._entries[sid]
        return sid, entry.session() if entry.session is not None else None

    def _on_event(self, event: LifecycleEvent) -> None:
        if isinstance(event, ParticipantExited):
            self._entries.pop(event.participant.sid, None)

    def __len__(self) -> int:
        return len(self._entries)


_REGISTRIES: weakref.WeakKeyDictionary[SFU, Resumes] = weakref.WeakKeyDictionary()


def registry(sfu: SFU) -> Resumes:
    """The resume tokens of ``sfu``'s participants."""
    found = _REGISTRIES.get(sfu)
    if found is None:
        found = _REGISTRIES[sfu] = Resumes(sfu)
    return found


async def take_over(
    session: Session, room: Room, token: str, permissions: Permissions
) -> Participant | None:
    """Give ``session`` the participant ``token`` names in ``room``, or None (an ordinary join
    follows): see the module's documentation for the conditions."""
    identity = session.identity.identity
    claimed = registry(session.sfu).claim(token, identity, room.name)
    p = room.participants.get(claimed[0]) if claimed is not None else None
    if claimed is None or p is None or p.identity != identity or p.permissions != permissions:
        logger.info("session <%s>: resume refused", identity)
        return None
    holder = claimed[1]
    if holder is not None and holder is not session:
        holder.release(p)
    try:
        await room.resume(p, session.emit)
    except (KeyError, TransportError) as exc:  # gone meanwhile: an ordinary join
        logger.info("session <%s>: resume failed: %r", identity, exc)
        return None
    return p
