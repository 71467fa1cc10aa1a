"""Counters of the forwarding path: why packets are dropped, and the totals of what has closed.

Every Publisher and DownTrack keeps its drops in a plain list indexed by ``DropReason`` (one
increment on the hot path); when it closes, its counts move to the SFU's ``Stats`` so that the
totals in /metrics never go down. One ``Stats`` per SFU, handed to each Room, which hands it to
the Publishers it creates; DownTracks read it from their Publisher.
"""

from __future__ import annotations

from enum import IntEnum

from .delay import DelayHistogram


class DropReason(IntEnum):
    """Why a packet was not forwarded (or not retransmitted)."""

    NOT_BOUND = 0
    OTHER_LAYER = 1
    WAITING_KEYFRAME = 2
    PAUSED = 3
    MUTED = 4
    MUNGER_REJECT = 5
    SEND_FAILED = 6
    INVALID = 7
    WRONG_PAYLOAD_TYPE = 8
    UNKNOWN_SSRC = 9
    NACK_DUPLICATE = 10
    NACK_BUDGET = 11
    NACK_MISSING = 12
    PADDING = 13
    DUPLICATE = 14

    @property
    def label(self) -> str:
        """The reason as /metrics labels it."""
        return self.name.lower()


#: what each reason means, for /metrics and docs/metrics.md
DROP_DOCS: dict[DropReason, str] = {
    DropReason.NOT_BOUND: "the subscriber's m-section is not negotiated yet",
    DropReason.OTHER_LAYER: "a simulcast layer this subscriber does not receive (normal: one "
    "copy per layer it does not get)",
    DropReason.WAITING_KEYFRAME: "the subscriber starts or switches layer at a keyframe: "
    "packets before it are of no use",
    DropReason.PAUSED: "the subscriber hides the video, or gets no layer",
    DropReason.MUTED: "the publisher muted the track (counted once per incoming packet)",
    DropReason.MUNGER_REJECT: "too old for the subscriber's stream (before it started on this "
    "source, or over 1 000 packets late)",
    DropReason.SEND_FAILED: "the subscriber's transport could not send (not connected yet, "
    "SRTP refused)",
    DropReason.INVALID: "not a valid RTP packet",
    DropReason.WRONG_PAYLOAD_TYPE: "a payload type other than the track's codec and its RTX "
    "(FEC, a codec not negotiated)",
    DropReason.UNKNOWN_SSRC: "from an SSRC no published track or layer claims",
    DropReason.NACK_DUPLICATE: "retransmission not repeated: the same packet was resent "
    "less than a round trip ago",
    DropReason.NACK_BUDGET: "retransmission refused: the subscriber's retransmission budget "
    "for the track is spent",
    DropReason.NACK_MISSING: "retransmission asked for a packet no longer cached",
    DropReason.PADDING: "an RTX packet without an original in it (the publisher probing "
    "bandwidth with padding), or before its stream's first packet",
    DropReason.DUPLICATE: "a packet from a publisher already received (a redundant "
    "retransmission, a network duplicate): forwarding it again would repeat it",
}

REASONS = len(DropReason)


def new_drops() -> list[int]:
    """A zeroed drop counter list, indexed by DropReason."""
    return [0] * REASONS


#: the counters the SFU totals over closed tracks and downtracks (see ``Stats.retire``)
RETIRED_COUNTERS = (
    "packets_in",
    "bytes_in",
    "keyframes_in",
    "packets_out",
    "bytes_out",
    "retransmits",
    "nacks",
    "keyframe_requests",
    "layer_switches",
    "layer_starts",
    "nacks_out",
    "repaired",
    "twcc_feedback_out",
)


class Stats:
    """The SFU's shared counters: totals of closed tracks, drops by reason, forwarding delay."""

    def __init__(self) -> None:
        self.retired: dict[str, int] = dict.fromkeys(RETIRED_COUNTERS, 0)
        self.retired_drops = new_drops()
        #: how long each incoming packet is held before its copies are sent (all rooms)
        self.forwarding_delay = DelayHistogram()

    def retire(self, drops: list[int] | None = None, **counters: int) -> None:
        """Add a closing track's or downtrack's counters to the totals (never go down)."""
        for name, value in counters.items():
            self.retired[name] = self.retired.get(name, 0) + value
        if drops is not None:
            for i, value in enumerate(drops):
                self.retired_drops[i] += value


def drop_totals(*lists: list[int]) -> dict[str, int]:
    """Sum drop lists into {reason label: count} for every reason."""
    out = dict.fromkeys((r.label for r in DropReason), 0)
    for drops in lists:
        for reason in DropReason:
            out[reason.label] += drops[reason]
    return out
