"""The meeting's name of a room, for what is kept of it (the notes' heading, a recording's
manifest): rooms people own have one (signaling/identity.py sets the services' lookup)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .auth import printable

logger = logging.getLogger(__name__)

#: room name -> the meeting's name, or None when the room is not a meeting people own
TitleLookup = Callable[[str], Awaitable[str | None]]


async def meeting_title(lookup: TitleLookup | None, room: str) -> str:
    """The meeting's name of ``room``, or '' (no lookup, not a meeting, or the lookup failed:
    what is kept then bears the room's name)."""
    if lookup is None:
        return ""
    try:
        return await lookup(room) or ""
    except Exception:
        logger.warning("room %s: the meeting's name could not be read", printable(room))
        return ""
