"""Migrations build exactly the schema the models declare, on both engines."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from marketplace.db import Database, current_revision, upgrade


def _relevant(diff: Any) -> bool:
    """Ignore the engine-specific full-text parts, which only the migration has."""
    op = diff[0] if isinstance(diff, tuple) else diff[0][0]
    if op == "remove_table" and diff[1].name.startswith("search_fts"):
        return False
    if op == "remove_column" and diff[2] == "search_document" and diff[3].name == "tsv":
        return False
    if op == "remove_index" and diff[1].name == "ix_search_document_tsv":
        return False
    return True


def test_models_match_migrations(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if _relevant(d)]
    assert diffs == []
    assert current_revision(db.engine) == "0007"


def test_full_text_part_exists_per_engine(db: Database) -> None:
    insp = inspect(db.engine)
    if db.dialect == "sqlite":
        assert "search_fts" in insp.get_table_names()
    else:
        cols = {c["name"] for c in insp.get_columns("search_document")}
        assert "tsv" in cols


def test_downgrade_and_upgrade_again(tmp_path: Any) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    db.upgrade()
    upgrade(db.engine, "head")  # idempotent
    from alembic import command

    from marketplace.db import _alembic_config

    with db.engine.begin() as conn:
        cfg = _alembic_config(str(db.engine.url))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "dataset" not in inspect(db.engine).get_table_names()
    db.upgrade()
    assert "dataset" in inspect(db.engine).get_table_names()
    db.dispose()
