"""privacy: per-agreement epsilon budgets

Revision ID: 0006_privacy
Revises: 0001_foundation
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006_privacy"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_budget",
        sa.Column("agreement_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("epsilon_total", sa.Float(), nullable=False),
        sa.Column("epsilon_spent", sa.Float(), nullable=False),
        sa.Column("epsilon_reserved", sa.Float(), nullable=False),
        sa.Column("queries", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id"),
    )


def downgrade() -> None:
    op.drop_table("privacy_budget")
