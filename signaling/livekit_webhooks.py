"""Webhooks in LiveKit's format (``webhook_format = "livekit"``): what a LiveKit application's
webhook endpoint, and ``livekit-api``'s WebhookReceiver, expect.

The body is a ``livekit.WebhookEvent`` in protobuf's JSON form (``{"event": "participant_joined",
"room": {...}, "participant": {...}, "id": "EV_...", "createdAt": "..."}``); the request is
signed as visio-sfu's own webhooks are (``Authorization: <JWT>``, HS256 with the first API
key's secret, its ``sha256`` claim the base64 SHA-256 of the body), which is LiveKit's scheme.
Delivery, retries and limits are signaling/webhooks.py's.
"""

from __future__ import annotations

import secrets
import time

from google.protobuf import json_format
from livekit.protocol import models as lk
from livekit.protocol.webhook import WebhookEvent

from visio_sfu import events as ev

from .livekit import convert
from .livekit_models import participant_ref_proto, room_info_proto
from .webhooks import WebhookNotifier


def livekit_event(lifecycle: ev.LifecycleEvent) -> WebhookEvent:
    """A lifecycle event as LiveKit's WebhookEvent (the event names are LiveKit's already)."""
    out = WebhookEvent(
        event=lifecycle.name,
        id=f"EV_{secrets.token_hex(8)}",
        created_at=int(time.time()),
        room=room_info_proto(lifecycle.room),  # type: ignore[attr-defined]
    )
    who = getattr(lifecycle, "participant", None)
    if who is not None:
        gone = isinstance(lifecycle, ev.ParticipantExited)
        state = lk.ParticipantInfo.State.DISCONNECTED if gone else lk.ParticipantInfo.State.ACTIVE
        out.participant.CopyFrom(participant_ref_proto(who, state))
    if isinstance(lifecycle, ev.TrackAdded | ev.TrackRemoved):
        out.track.CopyFrom(convert.track_info(lifecycle.track))
    return out


class LiveKitWebhookNotifier(WebhookNotifier):
    """A WebhookNotifier whose bodies are LiveKit's WebhookEvent JSON."""

    def encode(self, lifecycle: ev.LifecycleEvent) -> bytes:
        """The request body: the WebhookEvent as protobuf JSON (camelCase, as LiveKit's)."""
        return json_format.MessageToJson(livekit_event(lifecycle), indent=None).encode()
