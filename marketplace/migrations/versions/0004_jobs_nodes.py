"""jobs, data nodes, attestations, blobs, HE contexts and budget use

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

- ``node`` (Ed25519 public key, unique), ``node_dataset`` (which node serves a
  dataset) and ``attestation`` (verified quality attestations per version);
- ``blob`` / ``blob_owner`` and ``he_context`` / ``he_context_owner``: bytes stored
  once per SHA-256, one ownership row per uploading organisation;
- ``job`` with indexes for a node's poll (node, state, created) and the deadline
  sweep (state, deadline); ``job_blob`` (the blobs a job names, for access);
- ``budget_usage``: the latest budget use per dataset and buyer (or ``total``)
  reported by the node.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import marketplace.models._types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "blob",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "he_context",
        sa.Column("context_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("has_galois_keys", sa.Boolean(), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("context_id"),
    )
    op.create_table(
        "blob_owner",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blob.sha256"],
        ),
        sa.PrimaryKeyConstraint("sha256", "organisation_id"),
    )
    op.create_table(
        "he_context_owner",
        sa.Column("context_id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["context_id"],
            ["he_context.context_id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
        ),
        sa.PrimaryKeyConstraint("context_id", "organisation_id"),
    )
    op.create_table(
        "node",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_key"),
    )
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_node_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "node_dataset",
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column(
            "bound_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["node.id"],
        ),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    with op.batch_alter_table("node_dataset", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_node_dataset_node_id"), ["node_id"], unique=False
        )

    op.create_table(
        "attestation",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_version_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column(
            "received_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["node.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attestation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestation_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_attestation_node_id"), ["node_id"], unique=False
        )
        batch_op.create_index(
            "ix_attestation_version_received",
            ["dataset_version_id", "received_at"],
            unique=False,
        )

    op.create_table(
        "job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_version_id", sa.Uuid(), nullable=False),
        sa.Column("buyer_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=48), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("context_id", sa.String(length=64), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("buyer_region", sa.String(length=2), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason_code", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("approval_note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "deadline",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "output",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "output_blobs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "privacy_loss",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "receipt",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("result_digest", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["buyer_id"],
            ["organisation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["context_id"],
            ["he_context.context_id"],
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["node.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(
            "ix_job_buyer_created", ["buyer_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_job_dataset_created", ["dataset_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_job_node_state_created",
            ["node_id", "state", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_job_state_deadline", ["state", "deadline"], unique=False
        )

    op.create_table(
        "budget_usage",
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=36), nullable=False),
        sa.Column("buyer_id", sa.Uuid(), nullable=True),
        sa.Column("epsilon_spent", sa.Double(), nullable=False),
        sa.Column("delta_spent", sa.Double(), nullable=False),
        sa.Column("epsilon_budget", sa.Double(), nullable=False),
        sa.Column("delta_budget", sa.Double(), nullable=False),
        sa.Column("queries", sa.BigInteger(), nullable=False),
        sa.Column("inference_rows", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column(
            "updated_at",
            marketplace.models._types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["buyer_id"],
            ["organisation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("dataset_id", "scope"),
    )
    op.create_table(
        "job_blob",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blob.sha256"],
        ),
        sa.PrimaryKeyConstraint("job_id", "role", "name"),
    )
    with op.batch_alter_table("job_blob", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_blob_sha256"), ["sha256"], unique=False
        )


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("job_blob", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_blob_sha256"))

    op.drop_table("job_blob")
    op.drop_table("budget_usage")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_state_deadline")
        batch_op.drop_index("ix_job_node_state_created")
        batch_op.drop_index("ix_job_dataset_created")
        batch_op.drop_index("ix_job_buyer_created")

    op.drop_table("job")
    with op.batch_alter_table("attestation", schema=None) as batch_op:
        batch_op.drop_index("ix_attestation_version_received")
        batch_op.drop_index(batch_op.f("ix_attestation_node_id"))
        batch_op.drop_index(batch_op.f("ix_attestation_dataset_id"))

    op.drop_table("attestation")
    with op.batch_alter_table("node_dataset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_dataset_node_id"))

    op.drop_table("node_dataset")
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_organisation_id"))

    op.drop_table("node")
    op.drop_table("he_context_owner")
    op.drop_table("blob_owner")
    op.drop_table("he_context")
    op.drop_table("blob")
