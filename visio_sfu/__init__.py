"""visio-sfu: a selective forwarding unit for WebRTC, in Python on asyncio.

The SFU forwards RTP between participants without decoding it. Start from :class:`SFU`; what it
tells the outside comes as typed events (:mod:`visio_sfu.events`).
"""

from . import events
from .errors import (
    PermissionDenied,
    RestartRefused,
    RoomClosed,
    RoomFull,
    RoomLocked,
    TransportError,
)
from .participant import Participant, Permissions
from .publisher import Publisher, Sink
from .room import Room
from .sfu import SFU
from .stats import DropReason
from .transport import set_udp_mux
from .udpmux import UdpMux

__all__ = [
    "SFU",
    "DropReason",
    "Participant",
    "PermissionDenied",
    "Permissions",
    "Publisher",
    "RestartRefused",
    "Room",
    "RoomClosed",
    "RoomFull",
    "RoomLocked",
    "Sink",
    "TransportError",
    "UdpMux",
    "events",
    "set_udp_mux",
]
__version__ = "0.1.0"
