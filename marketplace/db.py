"""Database engines, sessions and schema migrations (Alembic).

SQLite (the embedded default) runs in WAL mode with foreign keys enforced;
PostgreSQL is used through psycopg 3. Migrations live in
``marketplace/migrations`` and are applied by ``veilx serve``, ``veilx demo`` and
``veilx db upgrade``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

__all__ = ["Database", "make_engine", "upgrade"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for ``url`` with the settings veilx needs per dialect."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if parsed.database and parsed.database != ":memory:":
            # A fixed pool: reconnecting (and re-running the pragmas) per request
            # costs more than the query.
            kwargs = {"pool_size": pool_size, "max_overflow": pool_size}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            # Reads dominate: a 32 MiB page cache per connection and memory-mapped
            # I/O (shared by all connections through the OS page cache).
            cur.execute("PRAGMA cache_size=-32768")
            cur.execute("PRAGMA mmap_size=268435456")
            cur.close()

        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(
        parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``'s database."""
    with engine.begin() as conn:
        cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """Return the database's current migration revision, if any."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class Database:
    """An engine plus a session factory; services receive sessions from it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Database:
        """Create the engine for ``url``."""
        return cls(make_engine(url))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session; the caller commits, anything unfinished rolls back."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def upgrade(self) -> None:
        """Apply all migrations."""
        upgrade(self.engine)

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()
