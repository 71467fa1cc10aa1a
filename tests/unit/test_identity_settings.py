"""The identity layer's settings and schema (signaling/identity.py, signaling/store.py)."""

from __future__ import annotations

import asyncio
import re

import pytest


def test_oidc_settings_are_checked():
    from signaling.config import ConfigError
    from signaling.identity import OidcSettings

    good = {"issuer": "https://sso.example.org/realms/a", "client_id": "visio"}
    assert OidcSettings.from_table(good).scopes == "openid profile email"
    for table, says in (
        ({"client_id": "visio"}, "'issuer' is required"),
        ({**good, "client_id": ""}, "'client_id' is required"),
        ({**good, "scopes": "profile email"}, "must include 'openid'"),
        ({**good, "colour": "blue"}, "unknown setting(s) colour"),
        ({**good, "session_ttl": -1}, "'session_ttl' must be a positive integer"),
        ({**good, "issuer": "ftp://sso"}, "issuer must be an https:// URL"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            OidcSettings.from_table(table)


def test_config_reads_the_identity_settings(tmp_path):
    from signaling.config import load_config

    path = tmp_path / "visio.toml"
    path.write_text('[oidc]\nissuer = "https://sso.example.org"\nclient_id = "visio"\n')
    config = load_config(
        str(path),
        env={
            "VISIO_OIDC_CLIENT_SECRET": "very-secret",
            "VISIO_DATABASE_URL": "postgresql+asyncpg://visio:pw@db/visio",
            "VISIO_DATA_DIR": "/var/lib/visio",
        },
    )
    assert config.oidc["client_secret"] == "very-secret"
    assert config.database_url.endswith("@db/visio") and config.data_dir == "/var/lib/visio"
    shown = repr(config)
    assert "very-secret" not in shown and ":pw@" not in shown


def test_migrations_match_the_models(tmp_path):
    """Alembic's migrations build exactly the schema the models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from signaling.store import Base, open_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'v.db'}"

    async def migrate():
        store = await open_store(url)
        await store.close()

    asyncio.run(migrate())
    engine = create_engine(f"sqlite:///{tmp_path / 'v.db'}")
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []
