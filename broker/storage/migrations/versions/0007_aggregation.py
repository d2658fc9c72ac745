"""privacy: secure-aggregation rounds and their encrypted contributions

Revision ID: 0007_aggregation
Revises: 0006_privacy
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007_aggregation"
down_revision = "0006_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregation_round",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("consumer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("scheme", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("context", sa.LargeBinary(), nullable=False),
        sa.Column("context_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("agreement_ids", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("min_providers", sa.Integer(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("released_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_aggregation_round_consumer_id", "aggregation_round", ["consumer_id"])
    op.create_table(
        "aggregation_contribution",
        sa.Column("round_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("agreement_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("round_id", "agreement_id"),
    )
    op.create_index("ix_aggregation_contribution_provider_id", "aggregation_contribution", ["provider_id"])


def downgrade() -> None:
    op.drop_table("aggregation_contribution")
    op.drop_table("aggregation_round")
