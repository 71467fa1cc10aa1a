"""A Python (aiortc) client for visio-sfu, for examples, tests and load tools."""

from .client import Client, RemoteTrack, ServerError

__all__ = ["Client", "RemoteTrack", "ServerError"]
