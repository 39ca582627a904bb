"""Organisations' wallets for the onchain way of paying.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:05:43.543096
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import marketplace.models._types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "org_wallet",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column(
            "address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False
        ),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("organisation_id"),
        sa.UniqueConstraint("address"),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("org_wallet")
