"""search generation counter, covering facet index, FTS5 rank weights

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- ``search_meta`` holds the index generation, bumped in every transaction that
  changes the search index; caches are keyed by it (ADR 0003).
- ``search_facet(doc_id, facet, value)`` covers facet counting.
- SQLite: the FTS5 ``rank`` column uses BM25 with the 10 : 5 : 1 weights, so
  top-k relevance runs inside FTS5.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    meta = op.create_table(
        "search_meta",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.bulk_insert(meta, [{"key": "generation", "value": 0}])
    with op.batch_alter_table("search_facet", schema=None) as batch_op:
        batch_op.drop_index("ix_search_facet_doc")
        batch_op.create_index(
            "ix_search_facet_doc_cover", ["doc_id", "facet", "value"], unique=False
        )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "INSERT INTO search_fts(search_fts, rank) "
            "VALUES ('rank', 'bm25(10.0, 5.0, 1.0)')"
        )


def downgrade() -> None:
    """Revert this migration."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("INSERT INTO search_fts(search_fts, rank) VALUES ('rank', 'bm25()')")
    with op.batch_alter_table("search_facet", schema=None) as batch_op:
        batch_op.drop_index("ix_search_facet_doc_cover")
        batch_op.create_index("ix_search_facet_doc", ["doc_id"], unique=False)
    op.drop_table("search_meta")
