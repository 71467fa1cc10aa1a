"""The core's layering, read from its source (ast): what each module may import, and that the
core builds no wire message."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "visio_sfu"
#: no I/O, no event loop: arrays and bytes in, values out
PURE = {
    "allocator",
    "bwe",
    "delay",
    "errors",
    "events",
    "forwarder",
    "jitter",
    "layers",
    "media",
    "munger",
    "packetcache",
    "router",
    "sdp",
    "speaker",
    "stats",
    "rtp.codecs",
    "rtp.depacketize",
    "rtp.extensions",
    "rtp.header",
    "rtp.rtcp",
    "rtp.twcc",
}
WEBRTC_STACK = {"aiortc", "aioice", "pylibsrtp"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in CORE.rglob("*.py"):
        name = ".".join(path.relative_to(CORE).with_suffix("").parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imported(tree: ast.Module) -> set[str]:
    """Top-level names of every absolute import (relative ones stay inside the core)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_never_imports_the_server():
    for name, tree in modules().items():
        assert "signaling" not in imported(tree), f"visio_sfu/{name} imports signaling"


def test_only_transport_touches_the_webrtc_stack():
    for name, tree in modules().items():
        # udpmux: aioice's gathering, one port; icerestart: a new generation of aioice's checks
        if name not in ("transport", "udpmux", "icerestart"):
            assert not imported(tree) & WEBRTC_STACK, f"visio_sfu/{name}: {imported(tree)}"


def test_pure_modules_use_no_event_loop():
    trees = modules()
    assert PURE <= set(trees), PURE - set(trees)
    for name in PURE:
        assert "asyncio" not in imported(trees[name]), f"visio_sfu/{name} imports asyncio"


def core_imports(name: str, tree: ast.Module) -> set[str]:
    """The core modules ``name`` imports at run time (not under ``if TYPE_CHECKING``)."""
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in typing_only:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module is None:  # from . import x
                out |= {".".join([*base, alias.name]) for alias in node.names}
            else:
                out.add(target)
    return out


def test_pure_modules_import_only_pure_modules():
    """A pure module that imported transport.py or room.py would bring the event loop back."""
    trees = modules()
    for name in PURE:
        impure = {m for m in core_imports(name, trees[name]) if m and m not in PURE}
        assert not impure, f"visio_sfu/{name} imports {impure} at run time"


def test_the_core_builds_no_wire_message():
    """Events are typed (events.py); signaling/protocol.py writes the JSON."""
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                assert "type" not in keys, f"visio_sfu/{name}:{node.lineno} builds a message"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "dict":
                words = [k.arg for k in node.keywords]
                assert "type" not in words, f"visio_sfu/{name}:{node.lineno} builds a message"
