"""Features built on the SFU's seams (recording, transcription, meeting controls...), each in a
module of its own: ``setup(app)`` adds its routes, its message handlers
(``session.register_handler``) and its event writers (``protocol.register_event``). List each
feature's setup here; create_app calls them in order."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from . import breakout, livekit, meeting, recording, transcription, whip


def identity_setup(app: web.Application) -> None:
    """Sign-in, rooms people own, the waiting room (issue 16): only with an [oidc] table, so
    that its libraries (the 'identity' extra) are imported only then."""
    from .app import CONFIG

    if app[CONFIG].oidc:
        from . import identity

        identity.setup(app)
    else:  # the web client asks; "not here" is an answer, not an error in its console
        app.router.add_get("/auth/me", _no_sign_in)


async def _no_sign_in(request: web.Request) -> web.Response:
    """GET /auth/me without [oidc]: sign-in does not exist on this server."""
    return web.json_response({"enabled": False, "user": None})


SETUPS: list[Callable[[web.Application], None]] = [
    meeting.setup,  # raised hands, reactions, host controls (issue 15)
    transcription.setup,  # transcription, live captions, meeting notes (issue 14)
    recording.setup,  # recording without re-encoding (issue 14)
    livekit.setup,  # LiveKit's signaling protocol: /rtc/validate, /rtc/v1 (issue 18)
    identity_setup,  # sign-in, owned rooms, waiting room (issue 16)
    breakout.setup,  # breakout rooms (issue 16)
    whip.setup,  # WHIP ingest and WHEP playback over HTTP (issue 20)
]
