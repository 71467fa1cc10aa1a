"""Issue 13: admin grants act only on the token's room (or "*"), and creating is not deleting."""

from __future__ import annotations

import pytest

from signaling.auth import VideoGrant, mint_token
from tests.support.inprocess import KEY, SECRET, LocalServer

pytestmark = pytest.mark.timeout(60)


def admin_token(room: str, **grant: bool) -> str:
    return mint_token(KEY, SECRET, "ops", room, grant=VideoGrant(room=room, **grant))


async def test_room_scoped_grants_never_act_on_another_room():
    """Issue 13: a join token for room A carrying roomCreate could DELETE /api/rooms/B."""
    async with LocalServer() as s:
        for name in ("a", "b"):
            assert (
                await s.api(
                    "POST", "/api/rooms", admin_token("*", room_create=True), {"name": name}
                )
            )[0] == 201
        user_a = s.token("a", "eve", room_create=True)  # a join token for room a
        assert (await s.api("DELETE", "/api/rooms/b", user_a))[0] == 403
        assert (await s.api("DELETE", "/api/rooms/a", user_a))[0] == 403, "creating is not deleting"
        assert s.sfu.room("a") is not None and s.sfu.room("b") is not None
        status, body = await s.api("POST", "/api/rooms", user_a, {"name": "c"})
        assert status == 403 and body["code"] == "permission_denied" and "'c'" in body["message"]
        assert (
            await s.api("POST", "/api/rooms", admin_token("", room_create=True), {"name": "c"})
        )[0] == 403

        admin_a = admin_token("a", room_admin=True)
        assert (await s.api("DELETE", "/api/rooms/b", admin_a))[0] == 403
        assert (await s.api("GET", "/api/rooms/b/participants", admin_a))[0] == 403
        status, body = await s.api("DELETE", "/api/rooms/a", admin_a)
        assert status == 200 and body == {"deleted": "a"} and s.sfu.room("a") is None
        assert (await s.api("POST", "/api/rooms", admin_a, {"name": "a"}))[
            0
        ] == 403  # admin is not create

        lister_b = admin_token("b", room_list=True)
        s.sfu.get_or_create_room("other")
        status, body = await s.api("GET", "/api/rooms", lister_b)
        assert status == 200 and [r["name"] for r in body["rooms"]] == ["b"]
        assert (await s.api("GET", "/api/rooms", admin_token("", room_list=True)))[0] == 403
        status, body = await s.api("GET", "/api/rooms", admin_token("*", room_list=True))
        assert sorted(r["name"] for r in body["rooms"]) == ["b", "other"]

        everything = admin_token("*", room_admin=True)
        assert (await s.api("DELETE", "/api/rooms/other", everything))[0] == 200
        assert (await s.api("DELETE", "/api/rooms/other", everything))[0] == 404
