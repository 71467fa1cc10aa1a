"""visio-sfu: a selective forwarding unit for WebRTC, in Python on asyncio.

The SFU forwards RTP between participants without decoding it. Start from :class:`SFU`.
"""

from .participant import Participant, PermissionDenied, Permissions, RestartRefused
from .publisher import Publisher
from .room import Room, RoomClosed, RoomFull
from .sfu import SFU
from .transport import TransportError

__all__ = [
    "SFU",
    "Participant",
    "PermissionDenied",
    "Permissions",
    "Publisher",
    "RestartRefused",
    "Room",
    "RoomClosed",
    "RoomFull",
    "TransportError",
]
__version__ = "0.1.0"
