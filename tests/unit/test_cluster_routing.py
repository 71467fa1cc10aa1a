"""Issue 19, the pieces of the cluster without processes: the internal header (a forged one
is an outside request), what internal endpoints answer to outsiders, placement by load in
the worker pool, the Redis placement scripts against a real redis-server, and the CLI's
settings."""

from __future__ import annotations

import argparse

import pytest
import redis

from signaling.cluster import internal
from signaling.cluster.backend import KEY, install_backend
from signaling.cluster.cli import settings_from
from signaling.cluster.load import score
from signaling.cluster.node import MOVE, PLACE, PREFIX, NodeInfo
from signaling.cluster.workers import WorkerPool
from signaling.config import ConfigError, load_config
from tests.support.inprocess import LocalServer
from tests.support.redis import RedisServer


def test_internal_header_needs_the_shared_secret():
    key = internal.cluster_key(load_config(env={}, overrides={"api_keys": {"k": "s" * 32}}))
    other = internal.cluster_key(load_config(env={}, overrides={"api_keys": {"k": "t" * 32}}))
    assert key != other
    value = internal.header_value(key, internal.NODE)

    class Request:
        def __init__(self, header: str) -> None:
            self.headers = {internal.HEADER: header}

    assert internal.hop_of(Request(value), key) == internal.NODE
    assert internal.hop_of(Request(value), other) is None  # another deployment's secret
    assert internal.hop_of(Request("worker." + value.partition(".")[2]), key) is None
    assert internal.hop_of(Request("node."), key) is None
    assert internal.hop_of(Request("root.abc"), key) is None
    assert internal.hop_of(Request(""), key) is None


async def test_internal_endpoints_refuse_outsiders():
    server = LocalServer()
    install_backend(server.app)
    async with server:
        import aiohttp

        headers = internal.headers(server.app[KEY], internal.WORKER)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/internal/load") as r:
                assert r.status == 404
            forged = {internal.HEADER: "worker." + "0" * 64}
            async with http.get(f"{server.url}/internal/load", headers=forged) as r:
                assert r.status == 404
            async with http.post(f"{server.url}/internal/evict", json={"room": "x"}) as r:
                assert r.status == 404
            async with http.get(f"{server.url}/internal/load", headers=headers) as r:
                assert r.status == 200
                assert await r.json() == {"rooms": [], "participants": 0, "pps": 0.0}
            server.sfu.get_or_create_room("here")
            async with http.post(
                f"{server.url}/internal/evict", json={"room": "here"}, headers=headers
            ) as r:
                assert (await r.json()) == {"closed": True}
            assert server.sfu.room("here") is None


def test_pool_places_new_rooms_on_the_least_loaded_worker():
    config = load_config(env={}, overrides={"api_keys": {"k": "s" * 32}})
    pool = WorkerPool(config, 3, "key")

    class Alive:
        exitcode = None

    for worker in pool.workers:
        worker.process, worker.ready = Alive(), True  # type: ignore[assignment]
    pool.workers[0].participants = 10
    pool.workers[1].pps = 50_000.0
    assert pool.place("a").index == 2  # idle
    assert pool.place("b").index == 2  # one room weighs less than 10 people or 50k pps
    pool.workers[2].participants = 30
    assert pool.place("c").index == 0  # 10 people weigh less than 50 000 packets/s
    assert pool.place("a").index == 2  # a room stays where it is
    pool.draining = True
    assert pool.place("new") is None and pool.owner("a").index == 2
    assert score(1, 0, 0) < score(0, 2, 0) < score(0, 0, 3000)


def test_placement_scripts_on_a_real_redis():
    server = RedisServer()
    try:
        r = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        place, move = r.register_script(PLACE), r.register_script(MOVE)
        nodes = PREFIX + "node:"
        r.set(nodes + "a", '{"url": "http://a"}', px=60_000)
        assert place(keys=[PREFIX + "room:r"], args=["a", nodes, "r"]) == "a"
        # a live owner is kept, whoever asks
        assert place(keys=[PREFIX + "room:r"], args=["b", nodes, "r"]) == "a"
        # its heartbeat gone, the room goes to the candidate, and changes sets
        r.delete(nodes + "a")
        assert place(keys=[PREFIX + "room:r"], args=["b", nodes, "r"]) == "b"
        assert r.smembers(nodes + "a:rooms") == set() and r.smembers(nodes + "b:rooms") == {"r"}
        # moves and releases only from the expected owner
        assert move(keys=[PREFIX + "room:r"], args=["a", "c", nodes, "r"]) == 0
        assert move(keys=[PREFIX + "room:r"], args=["b", "c", nodes, "r"]) == 1
        assert r.get(PREFIX + "room:r") == "c"
        assert move(keys=[PREFIX + "room:r"], args=["c", "", nodes, "r"]) == 1
        assert r.get(PREFIX + "room:r") is None
        r.close()
    finally:
        server.stop()


def test_node_info_parse_refuses_garbage():
    assert NodeInfo.parse("a", None) is None
    assert NodeInfo.parse("a", "not json") is None
    assert NodeInfo.parse("a", '{"load": {}}') is None  # no url
    info = NodeInfo.parse("a", '{"url": "http://a", "load": {"rooms": ["x"], "pps": 5}}')
    assert info is not None and info.rooms == 1 and info.pps == 5.0


def test_cli_settings():
    def args(**kw):
        base = dict(
            workers=None, redis=None, node_url=None, node_id=None, heartbeat_ttl=None,
            drain_timeout=None,
        )  # fmt: skip
        return argparse.Namespace(**{**base, **kw})

    assert settings_from(args(), env={}).workers >= 1  # one per core
    assert settings_from(args(workers=1), env={"VISIO_WORKERS": "4"}).workers == 1
    assert settings_from(args(), env={"VISIO_WORKERS": "3"}).workers == 3
    s = settings_from(args(redis="redis://h:1/0", heartbeat_ttl=0.2, drain_timeout=7), env={})
    assert s.redis_url == "redis://h:1/0" and s.heartbeat_ttl == 1.0 and s.drain_timeout == 7
    for bad in (args(workers=-1), args(redis="http://nope")):
        with pytest.raises(ConfigError):
            settings_from(bad, env={})
    with pytest.raises(ConfigError):
        settings_from(args(), env={"VISIO_WORKERS": "many"})


def test_a_node_chooses_the_least_loaded_open_node_for_a_new_room():
    """Cluster placement: the open node with the lowest load score takes a new room; a
    draining node never does, however idle; rooms it just placed count before the chosen
    node's heartbeat shows them, so a burst of new rooms spreads; every node draining is a
    clear refusal."""
    from signaling.cluster.node import NoNode, RedisNode

    node = RedisNode("redis://127.0.0.1:1", "http://127.0.0.1:1", node_id="a")
    busy = NodeInfo("a", "http://a", rooms=1, participants=1, pps=500.0)  # score 2.5
    idle = NodeInfo("b", "http://b", rooms=0, participants=0, pps=0.0)
    draining = NodeInfo("c", "http://c", draining=True)
    assert node._choose([busy, idle, draining]).id == "b"
    # b's new rooms count before its heartbeat shows them (b took one above): b while its
    # score stays under a's 2.5 (1, then 2), then a (3 > 2.5)
    assert [node._choose([busy, idle]).id for _ in range(3)] == ["b", "b", "a"]
    assert node._choose([busy, NodeInfo("b", "http://b", rooms=5)]).id == "a"
    with pytest.raises(NoNode):
        node._choose([draining])


def test_dev_stats_of_workers_add_up_and_name_the_silent_ones():
    from signaling.cluster.front import merge_stats

    one = {
        "rooms": 1,
        "participants": 2,
        "drops": {"muted": 3, "paused": 1},
        "transport_errors": {"send": 1},
        "per_room": [{"name": "a", "participants": 2}],
    }
    two = {"rooms": 2, "participants": 1, "drops": {"muted": 4}, "per_room": [{"name": "b"}]}
    merged = merge_stats([(0, one), (1, two), (2, None)])
    assert merged["rooms"] == 3 and merged["participants"] == 3
    assert merged["drops"] == {"muted": 7, "paused": 1}
    assert merged["transport_errors"] == {"send": 1}
    assert merged["per_room"] == [
        {"name": "a", "participants": 2, "worker": 0},
        {"name": "b", "worker": 1},
    ]
    assert merged["workers"] == [
        {"worker": 0, "rooms": 1, "participants": 2},
        {"worker": 1, "rooms": 2, "participants": 1},
    ]
    assert merged["unreachable"] == ["worker 2"]
    assert "unreachable" not in merge_stats([(0, one)])
