"""The documents say what the code does: OpenAPI paths, protocol message types, metrics."""

import json
import re
from pathlib import Path

from signaling import recording, transcription
from signaling.api import AdminAPI
from signaling.cluster import front as cluster_front
from signaling.metrics import LoopLag, SFUCollector
from signaling.session import HANDLERS
from visio_sfu import SFU

ROOT = Path(__file__).resolve().parents[1]


def test_openapi_lists_exactly_the_api_routes():
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    routes = {(r.method, r.path) for r in AdminAPI(None, None, None).routes()}
    routes |= {(r.method, r.path) for r in recording.api_routes()}  # features' own routes
    routes |= {(r.method, r.path) for r in transcription.api_routes()}
    routes |= {(r.method, r.path) for r in cluster_front.api_routes()}
    assert documented == routes


def test_protocol_documents_every_client_message():
    text = (ROOT / "docs" / "protocol.md").read_text()
    headings = set(re.findall(r"^### ([a-z_ /()]+)$", text, re.M))
    words = {w.strip() for h in headings for w in re.split(r"[ /()]+", h) if w.strip()}
    for kind in HANDLERS:
        assert kind in words, f"docs/protocol.md has no section for '{kind}'"


def test_metrics_documents_every_metric():
    text = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(visio_[a-z_]+)` \|", text, re.M))
    sfu = SFU()
    collector = SFUCollector(sfu, LoopLag())
    exposed = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in collector.collect()
    }
    assert documented == exposed


def test_metrics_documents_every_drop_reason():
    from visio_sfu.stats import DROP_DOCS, DropReason

    text = (ROOT / "docs" / "metrics.md").read_text()
    for reason in DropReason:
        assert f'`reason="{reason.label}"`' in text, reason
        assert reason in DROP_DOCS, reason
