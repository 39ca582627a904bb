"""search change log for per-process facet values

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``search_change`` records which search document each index write touched, in
commit order, so every API process can keep its in-memory facet values and
prices current by replaying it (ADR 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "search_change",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("doc_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("search_change")
