"""Webhooks: the SFU's lifecycle events POSTed as JSON to configured URLs.

Each request carries ``Authorization: <JWT>`` signed (HS256) with the first API key's secret;
its ``sha256`` claim is the base64 SHA-256 of the body, so a receiver can check both who sent
it and that it was not altered. Deliveries run in their own tasks, are retried with exponential
backoff, and never block media or signaling: when the queue is full, new events are dropped
(and counted).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time

import aiohttp
import jwt

from visio_sfu.events import LifecycleEvent

from .protocol import webhook

logger = logging.getLogger(__name__)


def sign(body: bytes, api_key: str, api_secret: str, ttl: int = 300) -> str:
    """The Authorization JWT for a webhook body."""
    now = int(time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": api_key, "nbf": now, "exp": now + ttl, "sha256": digest}
    return jwt.encode(claims, api_secret, algorithm="HS256")


def verify(body: bytes, authorization: str, api_keys: dict[str, str]) -> dict:
    """Check a webhook request as a receiver would; returns the decoded event."""
    unverified = jwt.decode(authorization, options={"verify_signature": False})
    secret = api_keys[unverified["iss"]]
    claims = jwt.decode(authorization, secret, algorithms=["HS256"])
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    if claims.get("sha256") != digest:
        raise ValueError("webhook body does not match its signature")
    return json.loads(body)


class WebhookNotifier:
    """Queues SFU events and delivers them to every URL, with retries."""

    def __init__(
        self,
        urls: list[str],
        api_key: str,
        api_secret: str,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_pending: int = 1000,
        timeout: float = 5.0,
    ) -> None:
        self.urls = list(urls)
        self.api_key = api_key
        self.api_secret = api_secret
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_pending = max_pending
        self.timeout = timeout
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def __call__(self, lifecycle: LifecycleEvent) -> None:
        """An SFU listener: queue the event for delivery (synchronous, never blocks)."""
        if not self.urls:
            return
        if len(self._tasks) >= self.max_pending:
            self.dropped += 1
            return
        event = lifecycle.name
        body = self.encode(lifecycle)
        for url in self.urls:
            task = asyncio.ensure_future(self._deliver(url, body, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def encode(self, lifecycle: LifecycleEvent) -> bytes:
        """The request body for an event: visio-sfu's JSON (docs/api.md, Webhooks)."""
        payload = {
            "event": lifecycle.name,
            "id": f"EV_{secrets.token_hex(8)}",
            "createdAt": int(time.time()),
            **webhook(lifecycle),
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _deliver(self, url: str, body: bytes, event: str) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for attempt in range(self.attempts):
            headers = {
                "Content-Type": "application/webhook+json",
                "Authorization": sign(body, self.api_key, self.api_secret),
            }
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if response.status < 300:
                        self.delivered += 1
                        return
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = type(exc).__name__
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.base_delay * 2**attempt)
        self.failed += 1
        logger.warning(
            "webhook %s to %s failed after %d attempts (%s)", event, url, self.attempts, reason
        )

    async def close(self) -> None:
        """Cancel pending deliveries and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
