"""A Python (aiortc) client for visio-sfu, for examples, tests and load tools."""

from .client import Client, RemoteTrack
from .protocol import ServerError, SignalingConnection

__all__ = ["Client", "RemoteTrack", "ServerError", "SignalingConnection"]
