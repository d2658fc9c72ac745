"""policy: uploaded policy versions, usage counters, scenario approvals

Revision ID: 0004_policy
Revises: 0001_foundation
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004_policy"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_version",
        sa.Column("policy_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rego", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("policy_id", "version"),
    )
    op.create_table(
        "usage_counter",
        sa.Column("agreement_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("accesses", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id"),
    )
    op.create_table(
        "scenario_approval",
        sa.Column("asset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("consumer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("scenario", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("approved_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", "consumer_id", "scenario"),
    )


def downgrade() -> None:
    op.drop_table("scenario_approval")
    op.drop_table("usage_counter")
    op.drop_table("policy_version")
