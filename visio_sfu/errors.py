"""The exceptions the SFU's public API raises."""

from __future__ import annotations


class TransportError(Exception):
    """An SDP or ICE input the transport could not accept."""


class PermissionDenied(Exception):
    """The participant's grants do not allow this."""


class RestartRefused(Exception):
    """A participant asked for too many subscriber restarts in a short time."""


class RoomFull(Exception):
    """The room has reached its participant limit."""


class RoomClosed(Exception):
    """The room is closing and takes no one in."""


class RoomLocked(Exception):
    """The room is locked (Room.set_locked): it takes no newcomer."""
