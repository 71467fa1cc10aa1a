"""PeerTransports connected to each other on 127.0.0.1 (tests/support/peers.py)."""

from tests.support.peers import connected_pair

__all__ = ["connected_pair"]
