"""Rooms people own and sign-in sessions, in a real database (SQLAlchemy 2, async).

SQLite (aiosqlite) in the data directory by default, nothing to set up; PostgreSQL (asyncpg)
when ``database_url`` is configured. The schema is Alembic's (signaling/migrations), brought
up to date when the server starts. Used only when ``[oidc]`` is configured (docs/identity.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

ACCESS_LEVELS = ("public", "trusted", "restricted")
MAX_MEMBERS = 200  # invited users and extra hosts per room
MAX_ROOMS_PER_OWNER = 500


class Base(DeclarativeBase):
    """The models' metadata (Alembic's target)."""


class RoomRow(Base):
    """A meeting someone owns: its slug is the SFU room's name."""

    __tablename__ = "rooms"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(255), index=True)  # the owner's subject
    access: Mapped[str] = mapped_column(String(16), default="trusted")
    created_at: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch
    updated_at: Mapped[int] = mapped_column(BigInteger)
    members: Mapped[list[MemberRow]] = relationship(
        back_populates="room", cascade="all, delete-orphan", passive_deletes=True
    )


class MemberRow(Base):
    """Someone named on a room: an extra host, or an invited user (restricted rooms). ``user``
    is a subject or an e-mail address, matched against the signed-in user's."""

    __tablename__ = "room_members"
    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "host" or "invited"
    room: Mapped[RoomRow] = relationship(back_populates="members")


class SessionRow(Base):
    """A signed-in browser: only the hash of its cookie's secret is stored."""

    __tablename__ = "sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(255), default="")
    id_token: Mapped[str] = mapped_column(Text, default="")  # for RP-initiated logout's hint
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True)
class User:
    """A signed-in user, as its session says."""

    subject: str
    name: str
    email: str
    id_token: str = ""
    expires_at: int = 0

    def names(self) -> set[str]:
        """What a room's member entries may call this user: its subject, its e-mail."""
        out = {self.subject}
        if self.email:
            out.add(self.email.lower())
        return out


@dataclass(frozen=True)
class OwnedRoom:
    """A room as the API shows it."""

    slug: str
    name: str
    owner: str
    access: str
    hosts: tuple[str, ...]
    invited: tuple[str, ...]
    created_at: int

    def to_json(self) -> dict:
        """The API's form."""
        return {
            "slug": self.slug,
            "name": self.name,
            "access": self.access,
            "hosts": list(self.hosts),
            "invited": list(self.invited),
            "created_at": self.created_at,
        }


def _room(row: RoomRow) -> OwnedRoom:
    members = sorted(row.members, key=lambda m: m.user)
    return OwnedRoom(
        row.slug,
        row.name,
        row.owner,
        row.access,
        tuple(m.user for m in members if m.role == "host"),
        tuple(m.user for m in members if m.role == "invited"),
        row.created_at,
    )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_slug() -> str:
    """An unguessable room slug: 3 groups of 4 letters and digits (about 62 bits)."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/visio-sfu (~/.local/share/visio-sfu)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "visio-sfu"


def database_url(configured: str | None, data_dir: Path) -> str:
    """The configured URL, else a SQLite file in the data directory."""
    if configured:
        return configured
    return f"sqlite+aiosqlite:///{data_dir / 'visio.db'}"


def _migrate(connection: object) -> None:
    """Alembic's upgrade to head, on a synchronous connection (run_sync)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


class Store:
    """The rooms and sessions database."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 15}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def start(self) -> None:
        """Bring the schema up to date (Alembic migrations), then purge expired sessions.
        Processes starting together (--workers) may race to migrate: the losers' transaction
        fails (the table exists, the database is locked), and trying again finds it done."""
        for attempt in range(10):
            try:
                async with self.engine.begin() as connection:
                    await connection.run_sync(_migrate)
                break
            except Exception:
                if attempt == 9:
                    raise
                await asyncio.sleep(0.2 + 0.3 * random.random())
        await self.purge_sessions()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.engine.dispose()

    # -- sessions ---------------------------------------------------------------------------
    async def create_session(self, user: User, ttl: int) -> str:
        """A new session for ``user`` lasting ``ttl`` seconds; returns its secret."""
        secret = secrets.token_urlsafe(32)
        now = int(time.time())
        async with self._sessions.begin() as db:
            db.add(
                SessionRow(
                    id_hash=_hash(secret),
                    subject=user.subject[:255],
                    name=user.name[:200],
                    email=user.email[:255],
                    id_token=user.id_token,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return secret

    async def session_user(self, secret: str) -> User | None:
        """The user of an unexpired session, or None."""
        async with self._sessions() as db:
            row = await db.get(SessionRow, _hash(secret))
        if row is None or row.expires_at <= time.time():
            return None
        return User(row.subject, row.name, row.email, row.id_token, row.expires_at)

    async def delete_session(self, secret: str) -> None:
        """Sign out: forget the session."""
        async with self._sessions.begin() as db:
            await db.execute(delete(SessionRow).where(SessionRow.id_hash == _hash(secret)))

    async def expire_session(self, secret: str) -> None:
        """Make a session expired now (tests, and an administrator's revocation)."""
        async with self._sessions.begin() as db:
            row = await db.get(SessionRow, _hash(secret))
            if row is not None:
                row.expires_at = int(time.time()) - 1

    async def purge_sessions(self) -> int:
        """Delete expired sessions; how many."""
        async with self._sessions.begin() as db:
            result = await db.execute(
                delete(SessionRow).where(SessionRow.expires_at <= int(time.time()))
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- rooms ------------------------------------------------------------------------------
    async def create_room(self, owner: str, name: str, access: str) -> OwnedRoom:
        """A new room owned by ``owner`` with an unguessable slug; ValueError if over limits."""
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {', '.join(ACCESS_LEVELS)}")
        now = int(time.time())
        async with self._sessions.begin() as db:
            count = await db.scalar(select(func.count()).where(RoomRow.owner == owner))
            if (count or 0) >= MAX_ROOMS_PER_OWNER:
                raise ValueError(f"at most {MAX_ROOMS_PER_OWNER} rooms per owner")
            row = RoomRow(
                slug=new_slug(),
                name=name,
                owner=owner,
                access=access,
                created_at=now,
                updated_at=now,
                members=[],
            )
            db.add(row)
        return _room(row)

    async def room(self, slug: str) -> OwnedRoom | None:
        """The room ``slug``, or None."""
        async with self._sessions() as db:
            row = await db.scalar(
                select(RoomRow).where(RoomRow.slug == slug).options(selectinload(RoomRow.members))
            )
        return None if row is None else _room(row)

    async def rooms_of(self, user: User) -> list[OwnedRoom]:
        """The rooms ``user`` owns, newest first."""
        async with self._sessions() as db:
            rows = await db.scalars(
                select(RoomRow)
                .where(RoomRow.owner == user.subject)
                .options(selectinload(RoomRow.members))
                .order_by(RoomRow.created_at.desc(), RoomRow.id.desc())
            )
            return [_room(row) for row in rows]

    async def update_room(
        self,
        slug: str,
        owner: str,
        *,
        name: str | None = None,
        access: str | None = None,
        hosts: list[str] | None = None,
        invited: list[str] | None = None,
    ) -> OwnedRoom | None:
        """Change a room its owner owns; None if there is no such room of theirs."""
        if access is not None and access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {', '.join(ACCESS_LEVELS)}")
        async with self._sessions.begin() as db:
            row = await db.scalar(
                select(RoomRow)
                .where(RoomRow.slug == slug, RoomRow.owner == owner)
                .options(selectinload(RoomRow.members))
            )
            if row is None:
                return None
            if name is not None:
                row.name = name
            if access is not None:
                row.access = access
            if hosts is not None or invited is not None:
                keep = {
                    "host": hosts
                    if hosts is not None
                    else [m.user for m in row.members if m.role == "host"],
                    "invited": invited
                    if invited is not None
                    else [m.user for m in row.members if m.role == "invited"],
                }
                wanted: dict[str, str] = {}
                for role in ("invited", "host"):  # host wins over invited
                    for user in keep[role]:
                        wanted[user] = role
                if len(wanted) > MAX_MEMBERS:
                    raise ValueError(f"at most {MAX_MEMBERS} hosts and invited users")
                row.members = [MemberRow(user=u, role=r) for u, r in sorted(wanted.items())]
            row.updated_at = int(time.time())
        return _room(row)

    async def delete_room(self, slug: str, owner: str) -> bool:
        """Delete a room its owner owns; whether there was one."""
        async with self._sessions.begin() as db:
            row = await db.scalar(
                select(RoomRow).where(RoomRow.slug == slug, RoomRow.owner == owner)
            )
            if row is None:
                return False
            await db.execute(delete(MemberRow).where(MemberRow.room_id == row.id))
            await db.delete(row)
        return True


async def open_store(url: str) -> Store:
    """A Store whose schema is up to date; a SQLite file's directory is made (mode 0700)."""
    if url.startswith("sqlite") and ":///" in url:
        path = Path(url.split(":///", 1)[1])
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
    store = Store(url)
    await store.start()
    return store
