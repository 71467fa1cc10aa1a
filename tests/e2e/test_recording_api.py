"""Recording through the admin API and the CLI: start and stop a room's recording, list,
show, download and delete recordings, each with roomAdmin on the recording's room only; the
recordings_dir setting; `visio-sfu token --record`, `visio-sfu recordings ...`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import jwt
import pytest

from signaling import cli
from signaling.config import load_config
from signaling.recording import RECORDINGS, default_recordings_dir, recordings_dir
from tests.support.inprocess import KEY, SECRET, LocalServer
from tests.support.media import until
from visio_client import Client
from visio_client.media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.timeout(120)


async def download(server: LocalServer, path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(server.url + path, headers=headers) as r:
        return r.status, await r.read()


async def test_admin_api(tmp_path):
    async with LocalServer(recordings_dir=str(tmp_path)) as s:
        admin = s.token("board", "ops", room_join=False, room_admin=True)
        everywhere = s.token("*", "ops", room_join=False, room_admin=True)
        other = s.token("elsewhere", "ops", room_join=False, room_admin=True)
        lister = s.token("*", "ops", room_join=False, room_list=True)
        alice = Client(s.url, s.token("board", "alice", "Alice"))
        await alice.connect()
        await alice.publish(PatternVideoTrack(0), ToneAudioTrack(0))
        path = "/api/rooms/board/recording"

        assert (await s.api("POST", path, None, {"action": "start"}))[0] == 401
        assert (await s.api("POST", path, other, {"action": "start"}))[0] == 403
        assert (await s.api("POST", path, lister, {"action": "start"}))[0] == 403
        assert (await s.api("POST", path, admin, {"action": "pause"}))[0] == 400
        assert (await s.api("POST", path, admin, {"action": "stop"}))[0] == 409
        assert (await s.api("POST", "/api/rooms/none/recording", everywhere, {}))[0] == 404
        status, body = await s.api("POST", path, admin, {"action": "start"})
        assert status == 200 and body["active"] is True, body
        rid = body["recording"]["id"]
        told = await alice.wait_for("recording_started")
        assert told["recording"]["id"] == rid and told["recording"]["by"] is None
        assert (await s.api("POST", path, admin, {"action": "start"}))[0] == 409
        # listed while it runs; not deletable
        status, listing = await s.api("GET", "/api/recordings", everywhere)
        assert status == 200 and [(r["id"], r["active"]) for r in listing["recordings"]] == [
            (rid, True)
        ]
        assert (await s.api("DELETE", f"/api/recordings/{rid}", admin))[0] == 409
        await asyncio.sleep(2)
        status, body = await s.api("POST", path, admin, {"action": "stop"})
        assert status == 200 and body["active"] is False
        stopped = await alice.wait_for("recording_stopped")
        assert stopped["by"] is None and stopped["reason"] == "stopped"
        service = s.app[RECORDINGS]
        await until(lambda: not service.busy(rid), what="files written")

        # who sees what
        assert (await s.api("GET", "/api/recordings", lister))[0] == 403
        assert (await s.api("GET", "/api/recordings", other))[1]["recordings"] == []
        status, listing = await s.api("GET", "/api/recordings", admin)
        [item] = listing["recordings"]
        assert item["id"] == rid and item["room"] == "board" and item["active"] is False
        assert item["status"] == "complete" and len(item["files"]) == 2 and item["bytes"] > 0
        status, manifest = await s.api("GET", f"/api/recordings/{rid}", admin)
        assert status == 200 and manifest["started_by"] == {"api": "admin API (ops)"}
        assert manifest["participants"][0]["identity"] == "alice"
        assert (await s.api("GET", f"/api/recordings/{rid}", other))[0] == 403
        assert (await s.api("GET", "/api/recordings/RC_000000000000", admin))[0] == 404
        assert (await s.api("GET", "/api/recordings/..%2Fetc", everywhere))[0] == 404

        # files: admins only, named files only
        name = manifest["tracks"][0]["file"]
        status, data = await download(s, f"/api/recordings/{rid}/files/{name}", admin)
        assert status == 200 and data == (tmp_path / rid / name).read_bytes()
        status, data = await download(s, f"/api/recordings/{rid}/files/manifest.json", admin)
        assert status == 200 and json.loads(data)["id"] == rid
        assert (await download(s, f"/api/recordings/{rid}/files/{name}", None))[0] == 401
        assert (await download(s, f"/api/recordings/{rid}/files/{name}", other))[0] == 403
        plain = s.token("board", "alice")
        assert (await download(s, f"/api/recordings/{rid}/files/{name}", plain))[0] == 403
        for bad in ("..%2F..%2Fetc%2Fpasswd", "nothing.ogg", "%2Fetc%2Fpasswd"):
            assert (await download(s, f"/api/recordings/{rid}/files/{bad}", admin))[0] == 404

        assert (await s.api("DELETE", f"/api/recordings/{rid}", other))[0] == 403
        status, body = await s.api("DELETE", f"/api/recordings/{rid}", admin)
        assert status == 200 and body == {"deleted": rid} and not (tmp_path / rid).exists()
        assert (await s.api("DELETE", f"/api/recordings/{rid}", admin))[0] == 404
        await alice.close()


async def test_a_start_the_disk_refuses_is_507(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with LocalServer(recordings_dir=str(blocker / "sub")) as s:
        alice = Client(s.url, s.token("board", "alice"))
        await alice.connect()
        admin = s.token("board", "ops", room_join=False, room_admin=True)
        status, body = await s.api("POST", "/api/rooms/board/recording", admin, {"action": "start"})
        assert status == 507 and body["code"] == "recording_failed", body
        assert (await alice.wait_for("recording_stopped"))["reason"] == "error"
        await alice.close()


def test_the_recordings_dir_setting(tmp_path, monkeypatch):
    assert default_recordings_dir({"XDG_DATA_HOME": "/data"}) == Path(
        "/data/visio-sfu/recordings"
    )
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    home = Path.home()
    assert recordings_dir(load_config(env={})) == home / ".local/share/visio-sfu/recordings"
    assert recordings_dir(load_config(env={"VISIO_RECORDINGS_DIR": "/srv/rec"})) == Path(
        "/srv/rec"
    )
    toml = tmp_path / "visio.toml"
    toml.write_text('recordings_dir = "~/meetings"\n')
    assert recordings_dir(load_config(str(toml), env={})) == home / "meetings"
    config = load_config(env={}, overrides={"recordings_dir": "/opt/r"})
    assert recordings_dir(config) == Path("/opt/r")


def test_token_record_flag(tmp_path, capsys):
    toml = tmp_path / "visio.toml"
    toml.write_text(f'[keys]\n{KEY} = "{SECRET}"\n')
    assert cli.main(["token", "--config", str(toml), "--room", "r", "--identity", "a"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["video"]["roomRecord"] is False
    args = ["token", "--config", str(toml), "--room", "r", "--identity", "a", "--record"]
    assert cli.main([*args, "--no-data"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    video = claims["video"]
    assert video["roomRecord"] is True and video["room"] == "r" and video["roomJoin"] is True
    assert video["canPublishData"] is False


async def test_cli(tmp_path, capsys):
    toml = tmp_path / "visio.toml"
    toml.write_text(f'[keys]\n{KEY} = "{SECRET}"\n')
    async with LocalServer(recordings_dir=str(tmp_path / "rec")) as s:
        alice = Client(s.url, s.token("board", "alice"))
        await alice.connect()
        await alice.publish(ToneAudioTrack(0))

        async def run(*args: str) -> tuple[int, str, str]:
            argv = ["recordings", "--url", s.url, "--config", str(toml), *args]
            code = await asyncio.to_thread(cli.main, argv)
            out, err = capsys.readouterr()
            return code, out, err

        code, out, _ = await run("start", "board")
        assert code == 0 and json.loads(out)["active"] is True
        rid = json.loads(out)["recording"]["id"]
        code, _, err = await run("start", "board")
        assert code == 1 and "409" in err
        await asyncio.sleep(1)
        code, out, _ = await run("stop", "board")
        assert code == 0
        service = s.app[RECORDINGS]
        await until(lambda: not service.busy(rid), what="files written")
        code, out, _ = await run("list")
        assert code == 0 and [r["id"] for r in json.loads(out)["recordings"]] == [rid]
        code, out, _ = await run("show", rid)
        assert code == 0 and json.loads(out)["tracks"][0]["kind"] == "audio"
        code, out, _ = await run("delete", rid)
        assert code == 0 and json.loads(out) == {"deleted": rid}
        code, _, err = await run("show", rid)
        assert code == 1 and "404" in err
        await alice.close()
