"""privacy: one budget per (consumer organisation, asset) instead of per agreement, and reservations
that expire

The old per-agreement budgets are folded into the new accounts: spent epsilon adds up over every
agreement of a consumer on an asset (it was all spent on that asset), the total is the smallest one
any of those agreements named, and in-flight reservations are dropped (nothing is in flight during
a migration).

Revision ID: 0009_privacy_budget_accounts
Revises: 0007_aggregation
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009_privacy_budget_accounts"
down_revision = "0007_aggregation"
branch_labels = None
depends_on = "0005_contracts"  # the fold reads contract_agreement
UNIT = 10**9  # amounts are stored in integer units of 1e-9 epsilon (broker/privacy/ledger.py)


def upgrade() -> None:
    account = op.create_table(
        "privacy_account",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("consumer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("asset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("measure", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("total_units", sa.BigInteger(), nullable=False),
        sa.Column("spent_units", sa.BigInteger(), nullable=False),
        sa.Column("reserved_units", sa.BigInteger(), nullable=False),
        sa.Column("queries", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_privacy_account_consumer_id", "privacy_account", ["consumer_id"])
    op.create_index("ix_privacy_account_asset_id", "privacy_account", ["asset_id"])
    op.create_table(
        "privacy_reservation",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("account_key", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("cost_units", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_privacy_reservation_account_key", "privacy_reservation", ["account_key"])

    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT a.consumer_id, a.asset_id, b.epsilon_total, b.epsilon_spent, b.queries, b.updated_at "
        "FROM privacy_budget b JOIN contract_agreement a ON a.id = b.agreement_id")).all()
    folded: dict[tuple[str, str], dict] = {}
    for consumer_id, asset_id, total, spent, queries, updated_at in rows:
        f = folded.setdefault((consumer_id, asset_id), {"total": total, "spent": 0.0, "queries": 0,
                                                        "updated_at": updated_at})
        f["total"] = min(f["total"], total)
        f["spent"] += spent
        f["queries"] += queries
    if folded:
        op.bulk_insert(account, [
            {"key": f"{c}|{a}", "consumer_id": c, "asset_id": a, "measure": "pure",
             "total_units": round(f["total"] * UNIT), "spent_units": round(f["spent"] * UNIT), "reserved_units": 0,
             "queries": f["queries"],
             "updated_at": f["updated_at"]} for (c, a), f in folded.items()])
    op.drop_table("privacy_budget")


def downgrade() -> None:
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
    op.drop_table("privacy_reservation")
    op.drop_table("privacy_account")
