"""Server configuration: defaults < TOML file < VISIO_* environment < command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .turn import check_url

DEV_API_KEY = "devkey"
DEV_API_SECRET = "devsecret_change_me_0123456789abcdef"


WEBHOOK_FORMATS = ("visio", "livekit")


class ConfigError(Exception):
    """A configuration value that cannot be used; the message says which and why."""


@dataclass
class Config:
    """Everything the server reads at start-up."""

    host: str = "127.0.0.1"
    port: int = 7880
    api_keys: dict[str, str] = field(default_factory=dict)
    dev: bool = False
    empty_timeout: float = 20.0
    ping_timeout: float = 30.0
    max_message_bytes: int = 256 * 1024
    max_data_bytes: int = 16 * 1024
    max_participants: int = 0
    max_rooms: int = 0  # 0 = unlimited
    auto_create_rooms: bool = True  # else joining a missing room needs the roomCreate grant
    max_tracks: int = 16  # per participant
    message_rate: float = 50.0  # signaling messages per second per connection (burst: 2 s)
    joins_per_second: float = 5.0  # per client IP address
    allowed_origins: list[str] = field(default_factory=list)  # WebSocket Origin check
    webhook_urls: list[str] = field(default_factory=list)
    #: the webhooks' body: "visio" (docs/api.md) or "livekit" (LiveKit's WebhookEvent,
    #: docs/livekit.md)
    webhook_format: str = "visio"
    #: trusted identity providers ([[idp]] tables: issuer, audience, jwks_url, ...)
    identity_providers: list[dict] = field(default_factory=list)
    log_level: str = "info"
    #: the address people open (https://visio.example.org): browsers' Origin must match it
    #: when allowed_origins is empty (DNS rebinding: the Host header is the attacker's)
    public_url: str | None = None
    ice_addresses: list[str] = field(default_factory=list)
    #: one UDP port for every peer's media (visio_sfu/udpmux.py); with workers, one each from
    #: it (udp_port + worker index); 0: each connection on ephemeral ports of its own
    #: (a firewall must then let the whole ephemeral range through)
    udp_port: int = 7882
    #: the addresses written in the candidates instead of the host's (behind a 1:1 NAT: the
    #: public address); with udp_port only
    public_ips: list[str] = field(default_factory=list)
    #: send what one received packet causes (its fan-out) with one sendmmsg system call
    #: (visio_sfu/_batch.c, when built); false: one sendto per datagram
    batch_sends: bool = True
    #: ICE over TCP on the media port's number too (a passive TCP candidate for every
    #: connection), for networks that let no UDP through; with udp_port only
    ice_tcp: bool = False
    #: ICE servers handed to clients (signaling/turn.py): STUN URLs, and TURN URLs with
    #: credentials made from the secret shared with the TURN server (coturn's
    #: static-auth-secret), valid turn_ttl seconds
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    turn_ttl: int = 86400
    #: where recordings go (one directory each); None: $XDG_DATA_HOME/visio-sfu/recordings
    recordings_dir: str | None = None
    #: transcription, live captions and meeting notes ([transcription] table; docs/notes.md)
    transcription: dict = field(default_factory=dict)
    #: seconds a participant whose connection dropped is kept for its client to resume it
    #: (same sid, the others see no leave/join: docs/protocol.md); 0: no resuming
    resume_grace: int = 20
    #: sign-in with an OpenID Connect provider, rooms people own, waiting room ([oidc] table;
    #: docs/identity.md); empty: none of it, tokens only
    oidc: dict = field(default_factory=dict)
    #: the rooms' database (SQLAlchemy URL: postgresql+asyncpg://...); None: SQLite in data_dir
    database_url: str | None = None
    #: where the server keeps its own files (SQLite database, session key); None:
    #: $XDG_DATA_HOME/visio-sfu
    data_dir: str | None = None

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["api_keys"] = {k: "***" for k in self.api_keys}
        if self.turn_secret:
            shown["turn_secret"] = "***"
        shown["transcription"] = {
            k: "***" if k.endswith("api_key") else v for k, v in self.transcription.items()
        }
        shown["oidc"] = {k: "***" if k.endswith("secret") else v for k, v in self.oidc.items()}
        if self.database_url:
            shown["database_url"] = re.sub(r"://[^@/]*@", "://***@", self.database_url)
        return f"Config({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


ENV = {
    "VISIO_HOST": "host",
    "VISIO_PORT": "port",
    "VISIO_DEV": "dev",
    "VISIO_EMPTY_TIMEOUT": "empty_timeout",
    "VISIO_PING_TIMEOUT": "ping_timeout",
    "VISIO_MAX_PARTICIPANTS": "max_participants",
    "VISIO_LOG_LEVEL": "log_level",
    "VISIO_PUBLIC_URL": "public_url",
    "VISIO_ICE_ADDRESSES": "ice_addresses",
    "VISIO_UDP_PORT": "udp_port",
    "VISIO_PUBLIC_IPS": "public_ips",
    "VISIO_BATCH_SENDS": "batch_sends",
    "VISIO_ICE_TCP": "ice_tcp",
    "VISIO_STUN_URLS": "stun_urls",
    "VISIO_TURN_URLS": "turn_urls",
    "VISIO_TURN_SECRET": "turn_secret",
    "VISIO_TURN_TTL": "turn_ttl",
    "VISIO_MAX_ROOMS": "max_rooms",
    "VISIO_AUTO_CREATE_ROOMS": "auto_create_rooms",
    "VISIO_MAX_TRACKS": "max_tracks",
    "VISIO_MESSAGE_RATE": "message_rate",
    "VISIO_JOINS_PER_SECOND": "joins_per_second",
    "VISIO_ALLOWED_ORIGINS": "allowed_origins",
    "VISIO_WEBHOOK_URLS": "webhook_urls",
    "VISIO_WEBHOOK_FORMAT": "webhook_format",
    "VISIO_RECORDINGS_DIR": "recordings_dir",
    "VISIO_RESUME_GRACE": "resume_grace",
    "VISIO_DATABASE_URL": "database_url",
    "VISIO_DATA_DIR": "data_dir",
}
_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value: object) -> object:
    kind = _FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            number = int(value)
            if number < 0 or (name == "port" and number > 65535):
                raise ValueError(value)
            return number
        if kind == "float":
            number = float(value)
            if number <= 0:
                raise ValueError(value)
            return number
        if kind == "dict":  # a feature's own table, checked by the feature
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
        if kind == "list[dict]":
            if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
                raise ValueError(value)
            return value
        if kind == "list[str]":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise ValueError(value)
            return [x.strip() for x in items if x.strip()]
        return None if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r} (expected {kind})") from None


def _check_public_url(url: str) -> str | None:
    """An http(s) URL with a host (its path is ignored), or ConfigError; '' means none."""
    url = url.strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"public_url: invalid value {url!r} (expected http(s)://host[:port], "
            "the address people open)"
        )
    return url


def _parse_keys(text: str) -> dict[str, str]:
    keys = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, secret = item.partition(":")
        if not sep or not key or not secret:
            raise ConfigError("VISIO_KEYS: expected 'key1:secret1,key2:secret2'")
        keys[key] = secret
    return keys


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: dict | None = None,
) -> Config:
    """Build the configuration from a TOML file, the environment and explicit overrides."""
    env = os.environ if env is None else env
    values: dict = {}
    path = path or env.get("VISIO_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        idps = data.pop("idp", [])
        if not isinstance(idps, list) or not all(isinstance(x, dict) for x in idps):
            raise ConfigError("[[idp]] must be tables")
        for idp in idps:
            for required in ("issuer", "audience", "jwks_url"):
                if not isinstance(idp.get(required), str):
                    raise ConfigError(f"[[idp]]: '{required}' is required")
        values["identity_providers"] = idps
        keys = data.pop("keys", {})
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise ConfigError("[keys] must map API keys to secret strings")
        values["api_keys"] = dict(keys)
        for name, value in data.items():
            if name not in _FIELDS or name in ("api_keys", "identity_providers"):
                raise ConfigError(f"config file {path}: unknown setting '{name}'")
            values[name] = _coerce(name, value)
    for var, name in ENV.items():
        if var in env:
            values[name] = _coerce(name, env[var])
    if env.get("VISIO_API_KEY") or env.get("VISIO_API_SECRET"):
        if not (env.get("VISIO_API_KEY") and env.get("VISIO_API_SECRET")):
            raise ConfigError("VISIO_API_KEY and VISIO_API_SECRET must be set together")
        values.setdefault("api_keys", {})[env["VISIO_API_KEY"]] = env["VISIO_API_SECRET"]
    if env.get("VISIO_KEYS"):
        values.setdefault("api_keys", {}).update(_parse_keys(env["VISIO_KEYS"]))
    if env.get("VISIO_OIDC_CLIENT_SECRET"):  # kept out of the TOML file if one prefers
        values["oidc"] = {
            **values.get("oidc", {}),
            "client_secret": env["VISIO_OIDC_CLIENT_SECRET"],
        }
    for var, text in env.items():  # any [transcription] setting: VISIO_TRANSCRIPTION_<NAME>
        if var.startswith("VISIO_TRANSCRIPTION_") and len(var) > 20:
            values["transcription"] = {**values.get("transcription", {}), var[20:].lower(): text}
    for name, value in (overrides or {}).items():
        if name == "transcription":  # options add to the table, setting by setting
            values[name] = {**values.get(name, {}), **(value or {})}
        elif value is not None:
            values[name] = _coerce(name, value) if name != "api_keys" else value
    config = Config(**values)
    if config.webhook_format not in WEBHOOK_FORMATS:
        raise ConfigError(
            f"webhook_format: invalid value {config.webhook_format!r} (expected visio or livekit)"
        )
    if config.public_url is not None:
        config.public_url = _check_public_url(config.public_url)
    for kind in ("stun", "turn"):
        for url in getattr(config, f"{kind}_urls"):
            why = check_url(url, kind)
            if why is not None:
                raise ConfigError(f"{kind}_urls: {why}")
    if config.udp_port > 65535:
        raise ConfigError("udp_port: a port number (1-65535), or 0 for ports of each peer's own")
    for address in config.public_ips:
        try:
            if ipaddress.ip_address(address).version != 4:
                raise ValueError(address)
        except ValueError:
            raise ConfigError(f"public_ips: {address!r} is not an IPv4 address") from None
    if config.ice_tcp and not config.udp_port:
        raise ConfigError("ice_tcp needs udp_port (ICE over TCP listens on its number)")
    if config.public_ips and not config.udp_port:
        raise ConfigError("public_ips needs udp_port (the port they are announced with)")
    if config.turn_urls and not config.turn_secret:
        raise ConfigError("turn_urls needs turn_secret (coturn's static-auth-secret)")
    if config.turn_secret and not config.turn_urls:
        raise ConfigError("turn_secret is set but turn_urls is empty: which TURN servers?")
    if config.turn_secret and len(config.turn_secret) < 32 and not config.dev:
        raise ConfigError("turn_secret must be at least 32 characters")
    if config.turn_secret and not 60 <= config.turn_ttl <= 7 * 86400:
        raise ConfigError("turn_ttl: from 60 seconds to 7 days")
    for key, secret in config.api_keys.items():
        if len(secret) < 32 and not config.dev:
            raise ConfigError(f"the secret of API key '{key}' must be at least 32 characters")
    if not config.api_keys:
        config.dev = True
    if config.dev and DEV_API_KEY not in config.api_keys:
        config.api_keys = {DEV_API_KEY: DEV_API_SECRET, **config.api_keys}
    return config
