"""The ``visio-sfu`` command: serve, and mint access tokens."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from .auth import VideoGrant, mint_token, parse_duration
from .cluster import cli as cluster_cli
from .config import Config, ConfigError, load_config

ENV_HELP = """environment variables (overridden by options):
  VISIO_HOST, VISIO_PORT        where to listen
  VISIO_API_KEY, VISIO_API_SECRET
                                one API key and its secret (>= 32 characters)
  VISIO_KEYS                    several keys: "key1:secret1,key2:secret2" (rotation)
  VISIO_DEV                     1 = development mode (dev key, /dev/token, any room)
  VISIO_CONFIG                  a TOML file with the same settings and a [keys] table
  VISIO_EMPTY_TIMEOUT           seconds an empty room lives (default 20)
  VISIO_PING_TIMEOUT            seconds of client silence before removal (default 30)
  VISIO_RESUME_GRACE            seconds a dropped participant waits to be resumed (default 20;
                                0 = removed at once)
  VISIO_MAX_PARTICIPANTS        per room, 0 = unlimited
  VISIO_LOG_LEVEL               debug, info, warning, error
  VISIO_ICE_ADDRESSES           comma-separated addresses to gather ICE candidates on
  VISIO_PUBLIC_URL              the address people open (https://visio.example.org): browsers'
                                Origin must match it (set it, or VISIO_ALLOWED_ORIGINS, in
                                production: the Host header can be an attacker's rebound name)
  VISIO_ALLOWED_ORIGINS         comma-separated browser Origins allowed to connect
  VISIO_STUN_URLS               comma-separated STUN servers handed to clients
  VISIO_TURN_URLS               comma-separated TURN servers handed to clients (docs/deploy.md)
  VISIO_TURN_SECRET             the secret shared with the TURN server (coturn
                                static-auth-secret): clients get credentials that expire
  VISIO_TURN_TTL                seconds those credentials are valid (default 86400)
  VISIO_RECORDINGS_DIR          where recordings go (default
                                $XDG_DATA_HOME/visio-sfu/recordings, ~/.local/share/...)
  VISIO_TRANSCRIPTION_<SETTING>  any [transcription] setting (docs/notes.md), e.g.
                                VISIO_TRANSCRIPTION_STORE_DIR, VISIO_TRANSCRIPTION_RETENTION=30d,
                                VISIO_TRANSCRIPTION_LANGUAGE=en, VISIO_TRANSCRIPTION_ENABLED=0,
                                VISIO_TRANSCRIPTION_HTTP_API_KEY (secrets out of the TOML file)
  VISIO_DATA_DIR                the server's own files: SQLite rooms database, session key
                                (default $XDG_DATA_HOME/visio-sfu)
  VISIO_DATABASE_URL            rooms database instead of SQLite (postgresql+asyncpg://...)
  VISIO_OIDC_CLIENT_SECRET      the [oidc] client's secret (docs/identity.md)
Without any API key configured, the server starts in development mode."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visio-sfu", description="visio-sfu: a WebRTC selective forwarding unit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the SFU, its WebSocket signaling and the web client.",
        epilog=ENV_HELP + "\n\n" + cluster_cli.ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 7880)")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="development mode: dev API key, tokens from /dev/token, anyone joins any room",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--empty-timeout",
        type=float,
        metavar="S",
        help="seconds an empty room is kept (default 20)",
    )
    serve.add_argument(
        "--ice-address",
        action="append",
        metavar="IP",
        help="gather ICE candidates on this address only (repeatable; "
        "default: every non-loopback interface)",
    )
    serve.add_argument(
        "--udp-port",
        type=int,
        metavar="PORT",
        help="one UDP port for every peer's media (workers: one each, from it on); "
        "0: ephemeral ports for each peer (default 7882)",
    )
    serve.add_argument(
        "--ice-tcp",
        action="store_true",
        default=None,
        help="ICE over TCP on the media port's number too, for networks that block UDP",
    )
    serve.add_argument(
        "--public-ip",
        action="append",
        metavar="IP",
        help="the address announced in ICE candidates behind a 1:1 NAT (repeatable; "
        "needs --udp-port)",
    )
    serve.add_argument(
        "--max-participants", type=int, metavar="N", help="participants per room, 0 = unlimited"
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="the address people open (https://visio.example.org); browsers' Origin must match "
        "it unless allowed_origins is set",
    )
    serve.add_argument(
        "--recordings-dir",
        metavar="DIR",
        help="where recordings go (default $XDG_DATA_HOME/visio-sfu/recordings)",
    )
    notes = serve.add_argument_group("transcription ([transcription] table, docs/notes.md)")
    notes.add_argument(
        "--no-transcription",
        dest="transcription_enabled",
        action="store_const",
        const=False,
        help="no transcription or captions on this server",
    )
    notes.add_argument("--transcription-language", metavar="CODE", help="rooms' language (fr)")
    notes.add_argument(
        "--transcripts-dir",
        metavar="DIR",
        help="where transcripts are kept (default: in memory only)",
    )
    notes.add_argument(
        "--transcript-retention",
        metavar="DURATION",
        help="how long a transcript is kept after its meeting (7d; e.g. 12h, 30d)",
    )
    notes.add_argument(
        "--transcription-model-dir", metavar="DIR", help="a Whisper model (CTranslate2)"
    )
    notes.add_argument(
        "--transcription-model-sha256", metavar="HEX", help="its model.bin's pinned sha256"
    )
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the server's own files (default $XDG_DATA_HOME/visio-sfu)",
    )
    serve.add_argument(
        "--database-url",
        metavar="URL",
        help="rooms database when [oidc] is set (default: SQLite in the data directory)",
    )

    cluster_cli.add_serve_arguments(serve)
    cluster_cli.add_drain_command(sub)

    token = sub.add_parser(
        "token",
        help="print an access token",
        description="Print an access token signed with the configured key.",
    )
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--metadata", default="")
    token.add_argument("--ttl", default="6h", help="lifetime: 90s, 30m, 6h, 2d (default 6h)")
    token.add_argument("--no-publish", action="store_true", help="may not publish media")
    token.add_argument("--no-subscribe", action="store_true", help="may not receive media")
    token.add_argument("--no-data", action="store_true", help="may not send data messages")
    token.add_argument(
        "--record", action="store_true", help="may start and stop recording (roomRecord)"
    )
    token.add_argument(
        "--transcribe",
        action="store_true",
        help="may start and stop transcription and get the meeting notes (roomTranscribe)",
    )
    token.add_argument(
        "--host",
        action="store_true",
        help="a host of the meeting (roomHost): may mute others, stop their video, remove "
        "them, lock the room",
    )
    token.add_argument(
        "--hidden",
        action="store_true",
        help="not shown to the others (a WHEP screen in a lobby, a recorder): joins unseen",
    )
    token.add_argument("--config", metavar="FILE", help="TOML configuration file")

    rooms = sub.add_parser(
        "rooms",
        help="manage rooms through the admin API",
        description="Call a running server's admin API with a short-lived admin token "
        "signed with the configured key.",
    )
    rooms.add_argument("--url", default="http://127.0.0.1:7880", help="the server's URL")
    rooms.add_argument("--config", metavar="FILE", help="TOML configuration file")
    actions = rooms.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list rooms")
    create = actions.add_parser("create", help="create a room")
    create.add_argument("name")
    create.add_argument("--max-participants", type=int)
    create.add_argument("--empty-timeout", type=float)
    create.add_argument("--metadata")
    actions.add_parser("delete", help="delete a room, disconnecting everyone").add_argument("name")
    actions.add_parser("participants", help="list a room's participants").add_argument("room")
    remove = actions.add_parser("remove", help="remove a participant")
    remove.add_argument("room")
    remove.add_argument("identity")
    mute = actions.add_parser("mute", help="mute (or --unmute) a participant's track")
    mute.add_argument("room")
    mute.add_argument("identity")
    mute.add_argument("track", help="track sid (TR_...)")
    mute.add_argument("--unmute", action="store_true")
    send = actions.add_parser("send", help="send a data message to everyone in a room")
    send.add_argument("room")
    send.add_argument("text")
    send.add_argument("--topic", default="chat")

    recordings = sub.add_parser(
        "recordings",
        help="manage recordings through the admin API",
        description="List, show, start, stop and delete recordings of a running server, through "
        "its admin API (with a short-lived admin token signed with the configured key).",
    )
    recordings.add_argument("--url", default="http://127.0.0.1:7880", help="the server's URL")
    recordings.add_argument("--config", metavar="FILE", help="TOML configuration file")
    rec = recordings.add_subparsers(dest="action", required=True)
    rec.add_parser("list", help="list recordings")
    rec.add_parser("show", help="print a recording's manifest").add_argument("id")
    rec.add_parser("delete", help="delete a recording and its files").add_argument("id")
    rec.add_parser("start", help="start recording a room").add_argument("room")
    rec.add_parser("stop", help="stop recording a room").add_argument("room")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the visio-sfu command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "rooms":
            return _rooms(args)
        if args.command == "recordings":
            return _recordings(args)
        if args.command == "drain":
            return cluster_cli.drain(args)
        return _token(args)
    except ConfigError as exc:
        print(f"visio-sfu: {exc}", file=sys.stderr)
        return 2


def serve_config(args: argparse.Namespace) -> Config:
    """The configuration ``visio-sfu serve`` runs with: TOML < VISIO_* < its options."""
    return load_config(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "dev": args.dev,
            "log_level": args.log_level,
            "empty_timeout": args.empty_timeout,
            "max_participants": args.max_participants,
            "ice_addresses": args.ice_address,
            "udp_port": args.udp_port,
            "public_ips": args.public_ip,
            "ice_tcp": args.ice_tcp,
            "public_url": args.public_url,
            "recordings_dir": args.recordings_dir,
            "transcription": {
                name: value
                for name, value in {
                    "enabled": args.transcription_enabled,
                    "language": args.transcription_language,
                    "store_dir": args.transcripts_dir,
                    "retention": args.transcript_retention,
                    "model_dir": args.transcription_model_dir,
                    "model_sha256": args.transcription_model_sha256,
                }.items()
                if value is not None
            },
            "data_dir": args.data_dir,
            "database_url": args.database_url,
        },
    )


def _serve(args: argparse.Namespace) -> int:
    config = serve_config(args)
    try:  # (its banner comes once its ports are bound: app.run)
        return cluster_cli.serve(config, args)  # one process, or workers and a cluster
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        reason = {
            errno.EADDRINUSE: "the address is in use (another server runs there?)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
        }.get(exc.errno, "no such address on this machine")
        print(
            f"visio-sfu: cannot listen on {config.host}:{config.port}: {reason}; "
            "choose another with --host/--port",
            file=sys.stderr,
        )
        return 2


def _token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"visio-sfu: --ttl: {exc}", file=sys.stderr)
        return 2
    key, secret = next(iter(config.api_keys.items()))
    grant = None
    if args.record or args.host or args.transcribe or args.hidden:
        grant = VideoGrant(
            room=args.room,
            room_join=True,
            can_publish=not args.no_publish,
            can_subscribe=not args.no_subscribe,
            can_publish_data=not args.no_data,
            room_record=args.record,
            room_transcribe=args.transcribe,
            room_host=args.host,
            hidden=args.hidden,
        )
    print(
        mint_token(
            key,
            secret,
            args.identity,
            args.room,
            name=args.name,
            ttl=ttl,
            can_publish=not args.no_publish,
            can_subscribe=not args.no_subscribe,
            can_publish_data=not args.no_data,
            metadata=args.metadata,
            grant=grant,
        )
    )
    return 0


def _rooms(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key, secret = next(iter(config.api_keys.items()))
    grant = VideoGrant(room="*", room_create=True, room_list=True, room_admin=True)
    token = mint_token(key, secret, "visio-sfu-cli", "*", ttl=60, grant=grant)
    a = args.action
    quote = urllib.parse.quote
    if a == "list":
        call = ("GET", "/api/rooms", None)
    elif a == "create":
        body = {"name": args.name}
        for field in ("max_participants", "empty_timeout", "metadata"):
            if getattr(args, field) is not None:
                body[field] = getattr(args, field)
        call = ("POST", "/api/rooms", body)
    elif a == "delete":
        call = ("DELETE", f"/api/rooms/{quote(args.name, safe='')}", None)
    elif a == "participants":
        call = ("GET", f"/api/rooms/{quote(args.room, safe='')}/participants", None)
    elif a == "remove":
        call = (
            "DELETE",
            f"/api/rooms/{quote(args.room, safe='')}/participants/{quote(args.identity, safe='')}",
            None,
        )
    elif a == "mute":
        call = (
            "POST",
            f"/api/rooms/{quote(args.room, safe='')}/participants/"
            f"{quote(args.identity, safe='')}/mute",
            {"track": args.track, "muted": not args.unmute},
        )
    else:
        call = (
            "POST",
            f"/api/rooms/{quote(args.room, safe='')}/data",
            {"topic": args.topic, "payload": {"text": args.text}},
        )
    return _call(args.url, token, *call)


def _recordings(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key, secret = next(iter(config.api_keys.items()))
    grant = VideoGrant(room="*", room_admin=True)
    token = mint_token(key, secret, "visio-sfu-cli", "*", ttl=60, grant=grant)
    quote = urllib.parse.quote
    a = args.action
    if a == "list":
        call = ("GET", "/api/recordings", None)
    elif a == "show":
        call = ("GET", f"/api/recordings/{quote(args.id, safe='')}", None)
    elif a == "delete":
        call = ("DELETE", f"/api/recordings/{quote(args.id, safe='')}", None)
    else:
        call = ("POST", f"/api/rooms/{quote(args.room, safe='')}/recording", {"action": a})
    return _call(args.url, token, *call)


def _call(url: str, token: str, method: str, path: str, body: object) -> int:
    """Call the admin API and print its JSON answer; the exit status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"visio-sfu: {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"visio-sfu: cannot reach {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
