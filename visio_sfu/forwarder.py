"""Forwarder: for one subscriber of one track, what to do with each packet of the publisher.

A pure decision, one call per packet: forward it, forward it as the first of a new layer (a
switch, at that layer's keyframe), or drop it with a reason. When the decision needs a keyframe
(a switch or a start is waiting for one), it says which layer in ``keyframe_wanted``; the
caller asks the publisher (throttled there) and clears it. No I/O, no time: unit-testable.

``current`` is the layer forwarded now (-1: none, a video waits for a keyframe); ``target`` the
layer the LayerSelector chose (-1: paused). An audio track has one layer and never waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .stats import DropReason

FORWARD = 100  # forward the packet
SWITCH = 101  # forward it: the first packet of a new layer (or of a start)

OTHER_LAYER = int(DropReason.OTHER_LAYER)
WAITING_KEYFRAME = int(DropReason.WAITING_KEYFRAME)
PAUSED = int(DropReason.PAUSED)


class _ForwarderState:
    """A Forwarder's state in Python, when visio_sfu._batch is not built (its ForwarderCore
    holds the same, where the compiled DownTrack write reads it)."""

    __slots__ = ("video", "current", "target", "keyframe_wanted", "switches", "starts")


if TYPE_CHECKING:
    _ForwarderBase = _ForwarderState
else:
    try:
        from ._batch import ForwarderCore as _ForwarderBase
    except ImportError:  # pragma: no cover - depends on the build
        _ForwarderBase = _ForwarderState


class Forwarder(_ForwarderBase):
    """The layer state of one DownTrack and its per-packet decision."""

    __slots__ = ()

    def __init__(self, video: bool) -> None:
        self.video = video
        self.current = -1 if video else 0
        self.target = 0
        self.keyframe_wanted = -1  # set by decide(); the caller clears it after asking
        self.switches = 0  # from one layer to another
        self.starts = 0  # from nothing to a layer (join, unmute, shown again, new path)

    def decide(self, layer: int, key: bool) -> int:
        """FORWARD, SWITCH, or the DropReason of a packet of ``layer`` (keyframe or not)."""
        if layer != self.current:
            if layer != self.target:
                return OTHER_LAYER if self.target >= 0 else PAUSED
            if not key:
                # the switch waits for this layer's keyframe: ask (again; the track throttles),
                # whether or not another layer is still forwarded meanwhile
                self.keyframe_wanted = layer
                return WAITING_KEYFRAME
            if self.current >= 0:
                self.switches += 1
            else:
                self.starts += 1
            self.current = layer
            return SWITCH
        if self.target != layer:
            if self.target < 0:
                self.current = -1
                return PAUSED
            self.keyframe_wanted = self.target  # keep asking for the layer to switch to
        return FORWARD

    def set_target(self, layer: int) -> bool:
        """Forward ``layer`` from its next keyframe on (-1: pause now); True if a keyframe of
        it is wanted now."""
        if layer == self.target:
            return False
        self.target = layer
        if layer < 0:
            self.current = -1 if self.video else self.current
            return False
        return layer != self.current

    def restart(self) -> int:
        """Start again from a keyframe (new transport path, unmute, publisher change); returns
        the layer whose keyframe is wanted (-1: none, or audio)."""
        if not self.video:
            self.current = 0
            return -1
        self.current = -1
        return self.target

    @property
    def waiting(self) -> bool:
        """A video that forwards nothing until a keyframe comes."""
        return self.video and self.current < 0


_B_BIT = 0x08  # VP9 descriptor: start of a layer frame
ALL_TEMPORAL = 7  # the highest temporal layer id: every temporal layer forwarded
#: VP9 SVC: the allocator's levels below spatial layer 0 at full frame rate (T0, T0+T1)
TEMPORAL_LEVELS = 2
_U_BIT = 0x10  # VP9 layer byte: switching-up point


class SvcForwarder:
    """The layer state of one DownTrack of a VP9 SVC track (one stream, several spatial and
    temporal layers inside, RFC 9628), and its per-packet decision.

    ``current`` and ``target`` are spatial layers, so that the LayerSelector chooses among them
    as among simulcast layers. A packet of a higher spatial layer than ``current``, or of a
    higher temporal layer than ``temporal``, is dropped. Switches happen where a picture starts
    (the first packet of its spatial layer 0): down at once (lower layers never depend on upper
    ones), up only at a keyframe (``L3T3_KEY``: upper layers are predicted from lower ones
    only there). Temporal layers (``temporal_target``, chosen by the allocator) go down at any
    picture, and up at a keyframe, at a T0 picture (in libwebrtc's structures the frames after
    a T0 frame refer to it or later ones only), or one layer at a time at a picture of the next
    temporal layer up with U set (libwebrtc and LiveKit read U as "this frame refers to lower
    temporal layers only", which the layers already forwarded are).
    """

    __slots__ = (
        "video",
        "current",
        "target",
        "temporal",
        "temporal_target",
        "keyframe_wanted",
        "switches",
        "starts",
    )

    def __init__(self) -> None:
        self.video = True
        self.current = -1
        self.target = 0
        self.temporal = ALL_TEMPORAL  # highest temporal layer forwarded now
        self.temporal_target = ALL_TEMPORAL
        self.keyframe_wanted = -1
        self.switches = 0
        self.starts = 0

    def decide_svc(self, flags: int, sid: int, tid: int, switch_up: bool, key: bool) -> int:
        """FORWARD or the DropReason of a packet of spatial layer ``sid``, temporal ``tid``."""
        target = self.target
        if target < 0:
            self.current = -1
            return PAUSED
        current = self.current
        if sid == 0 and flags & _B_BIT:  # a picture starts: where layers may change
            if current != target:
                if target < current:
                    self.switches += 1
                    self.current = current = target
                elif key:
                    if current < 0:
                        self.starts += 1
                    else:
                        self.switches += 1
                    self.current = current = target
                else:
                    self.keyframe_wanted = target
            t_target = self.temporal_target
            temporal = self.temporal
            if t_target < temporal or (t_target > temporal and (key or tid == 0)):
                self.temporal = t_target
            elif t_target > temporal and switch_up and tid == temporal + 1:
                self.temporal = tid  # one step up: this frame refers to lower layers only
        if current < 0:
            return WAITING_KEYFRAME
        if sid > current or tid > self.temporal:
            return OTHER_LAYER
        return FORWARD

    def set_target(self, layer: int) -> bool:
        """Forward spatial ``layer`` from the next picture (down) or keyframe (up); -1 pauses
        now. True if a keyframe is wanted now."""
        if layer == self.target:
            return False
        self.target = layer
        if layer < 0:
            self.current = -1
            return False
        return layer > self.current

    def restart(self) -> int:
        """Start again from a keyframe; returns the spatial layer whose keyframe is wanted."""
        self.current = -1
        return self.target

    @property
    def waiting(self) -> bool:
        """Forwards nothing until a keyframe comes."""
        return self.current < 0
