"""The cluster's options of ``visio-sfu serve``, and ``visio-sfu drain``."""

from __future__ import annotations

import argparse
import os
import sys

from ..auth import VideoGrant, mint_token
from ..config import Config, ConfigError, load_config

ENV_HELP = """cluster (docs/cluster.md):
  VISIO_WORKERS                 media worker processes (default: one per core; 1 = in-process)
  VISIO_REDIS_URL               join the cluster whose state is in this Redis
  VISIO_NODE_URL                where other nodes reach this one (default http://HOST:PORT)
  VISIO_NODE_ID                 this node's name in Redis (default host-pid-random)
  VISIO_DRAIN_TIMEOUT           seconds meetings have to end when draining (default 120)
  VISIO_HEARTBEAT_TTL           seconds without a heartbeat before a node is dead (default 5)"""


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """--workers, --redis, --node-url, --node-id, --drain-timeout, --heartbeat-ttl."""
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="media worker processes (default: one per core; 1 runs everything in this process)",
    )
    serve.add_argument(
        "--redis", metavar="URL", help="join a cluster coordinated through Redis (redis://...)"
    )
    serve.add_argument("--node-url", metavar="URL", help="where other nodes reach this one")
    serve.add_argument("--node-id", metavar="ID", help="this node's name in the cluster")
    serve.add_argument(
        "--drain-timeout", type=float, metavar="S", help="seconds meetings have to end on drain"
    )
    serve.add_argument(
        "--heartbeat-ttl", type=float, metavar="S", help="seconds before a silent node is dead"
    )


def add_drain_command(sub: argparse._SubParsersAction) -> None:
    """``visio-sfu drain``: ask a node to drain, then exit."""
    drain = sub.add_parser(
        "drain",
        help="drain a node: no new rooms, meetings end or move, then it exits",
        description="Ask a running node to drain (as SIGTERM does): it takes no new rooms, "
        "lets its meetings end within the timeout, moves the rest to other nodes, then exits.",
    )
    drain.add_argument("--url", default="http://127.0.0.1:7880", help="the node's address")
    drain.add_argument("--config", metavar="FILE", help="TOML configuration file (API keys)")
    drain.add_argument("--timeout", type=float, metavar="S", help="seconds meetings have to end")


def _number(value: str | None, kind: type, name: str) -> float | int | None:
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}: invalid value {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name}: must not be negative")
    return number  # type: ignore[no-any-return]


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None):  # noqa: ANN201
    """The cluster Settings of ``serve``: options over VISIO_* variables over defaults."""
    from .front import Settings

    env = dict(os.environ) if env is None else env
    workers = (
        args.workers
        if args.workers is not None
        else _number(env.get("VISIO_WORKERS"), int, "VISIO_WORKERS")
    )
    if workers is None or workers == 0:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    settings = Settings(
        workers=int(workers),
        redis_url=args.redis or env.get("VISIO_REDIS_URL") or None,
        node_url=args.node_url or env.get("VISIO_NODE_URL") or None,
        node_id=args.node_id or env.get("VISIO_NODE_ID") or None,
    )
    ttl = args.heartbeat_ttl or _number(env.get("VISIO_HEARTBEAT_TTL"), float, "heartbeat ttl")
    if ttl:
        settings.heartbeat_ttl = max(float(ttl), 1.0)
    drain = args.drain_timeout
    if drain is None:
        drain = _number(env.get("VISIO_DRAIN_TIMEOUT"), float, "VISIO_DRAIN_TIMEOUT")
    if drain is not None:
        settings.drain_timeout = float(drain)
    if settings.redis_url and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError("--redis: expected redis://host:port[/db] (or rediss://, unix://)")
    return settings


def serve(config: Config, args: argparse.Namespace) -> int:
    """Run ``serve``: in this process alone (one worker, no Redis), or as a front."""
    settings = settings_from(args)
    from ..app import create_app, run

    if settings.workers == 1 and not settings.redis_url:
        run(config)
        return 0
    if settings.workers > 1 and config.udp_port:
        from ..app import media_ports_free

        problem = media_ports_free(config, settings.workers)
        if problem is not None:
            print(f"visio-sfu: {problem}", file=sys.stderr)
            return 2
    from .front import install_front
    from .node import ClusterError

    app = create_app(config)
    install_front(app, settings)
    what = f"{settings.workers} workers" if settings.workers > 1 else "1 process"
    if settings.redis_url:
        what += f", cluster at {settings.redis_url}"
    print(f"visio-sfu: {what}", flush=True)
    try:
        run(config, app=app)
    except ClusterError as exc:
        print(f"visio-sfu: {exc}", file=sys.stderr)
        return 3
    return 0


def drain(args: argparse.Namespace) -> int:
    """POST /api/node/drain with an administrator's token."""
    from ..cli import _call  # the admin API client of the other commands

    config = load_config(args.config)
    key, secret = next(iter(config.api_keys.items()))
    grant = VideoGrant(room="*", room_admin=True)
    token = mint_token(key, secret, "visio-sfu-cli", "*", ttl=60, grant=grant)
    body = {} if args.timeout is None else {"timeout": args.timeout}
    return _call(args.url, token, "POST", "/api/node/drain", body)
