"""Message validation for the JSON signaling protocol (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

MAX_ID_LENGTH = 64


class ProtocolError(Exception):
    """A message the server refuses, with the protocol error code to send back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode(text: str) -> dict:
    """Parse one text frame into a message object; raise ProtocolError if it is not one."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_request", "field 'type' must be a string")
    mid = msg.get("id")
    if mid is not None and not (
        (isinstance(mid, str) and len(mid) <= MAX_ID_LENGTH)
        or (isinstance(mid, int) and not isinstance(mid, bool))
    ):
        raise ProtocolError("bad_request", "field 'id' must be a short string or an integer")
    return msg


def field(msg: dict, name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    """A typed field of a message; raise ProtocolError if missing or of the wrong type."""
    value = msg.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad_request", f"field '{name}' is required")
        return None
    if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
        raise ProtocolError("bad_request", f"field '{name}' has the wrong type")
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in _tuple(kind))
        raise ProtocolError("bad_request", f"field '{name}' must be a {names}")
    return value


def short_str(msg: dict, name: str, limit: int = 256, required: bool = False) -> str:
    """A string field of bounded length ('' when absent and optional)."""
    value = field(msg, name, str, required)
    if value is None:
        return ""
    if len(value) > limit:
        raise ProtocolError("bad_request", f"field '{name}' is longer than {limit} characters")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def error(code: str, message: str, msg_id: Any = None) -> dict:
    """An error message."""
    out: dict = {"type": "error", "code": code, "message": message}
    if msg_id is not None:
        out["id"] = msg_id
    return out
