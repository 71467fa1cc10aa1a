"""Alembic's environment: migrations run on the connection signaling.store hands over
(``config.attributes["connection"]``), inside the server's start-up."""

from __future__ import annotations

from alembic import context

from signaling.store import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the server always passes its connection
    raise RuntimeError("run migrations through signaling.store (Store.start)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
