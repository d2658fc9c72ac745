"""contracts: negotiations, signed agreements, transfer processes

Revision ID: 0005_contracts
Revises: 0001_foundation
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005_contracts"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString
T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "contract_negotiation",
        sa.Column("id", S(length=64), nullable=False),
        sa.Column("consumer_pid", S(length=128), nullable=False),
        sa.Column("consumer_id", S(length=64), nullable=False),
        sa.Column("provider_id", S(length=64), nullable=False),
        sa.Column("asset_id", S(length=64), nullable=False),
        sa.Column("asset_version", sa.Integer(), nullable=False),
        sa.Column("content_hash", S(length=64), nullable=False),
        sa.Column("offer_id", S(length=64), nullable=False),
        sa.Column("policy_id", S(length=128), nullable=False),
        sa.Column("policy_version", S(length=32), nullable=False),
        sa.Column("offer_params", sa.JSON(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("purpose", S(length=100), nullable=False),
        sa.Column("scenario", S(length=100), nullable=True),
        sa.Column("requested_not_after", T(), nullable=True),
        sa.Column("precheck", sa.JSON(), nullable=False),
        sa.Column("draft", sa.JSON(), nullable=True),
        sa.Column("state", S(length=16), nullable=False),
        sa.Column("agreement_id", S(length=64), nullable=True),
        sa.Column("callback_address", S(length=500), nullable=True),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("updated_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["consumer_id"], ["org.id"]),
        sa.ForeignKeyConstraint(["provider_id"], ["org.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("consumer_id", "consumer_pid", name="uq_contract_negotiation_consumer_pid"),
    )
    for col in ("consumer_id", "provider_id", "asset_id", "state"):
        op.create_index(f"ix_contract_negotiation_{col}", "contract_negotiation", [col], unique=False)

    op.create_table(
        "contract_agreement",
        sa.Column("id", S(length=64), nullable=False),
        sa.Column("negotiation_id", S(length=64), nullable=False),
        sa.Column("asset_id", S(length=64), nullable=False),
        sa.Column("asset_version", sa.Integer(), nullable=False),
        sa.Column("content_hash", S(length=64), nullable=False),
        sa.Column("consumer_id", S(length=64), nullable=False),
        sa.Column("provider_id", S(length=64), nullable=False),
        sa.Column("purpose", S(length=100), nullable=False),
        sa.Column("scenario", S(length=100), nullable=True),
        sa.Column("policy_id", S(length=128), nullable=False),
        sa.Column("policy_version", S(length=32), nullable=False),
        sa.Column("policy_params", sa.JSON(), nullable=False),
        sa.Column("obligations", sa.JSON(), nullable=False),
        sa.Column("not_before", T(), nullable=False),
        sa.Column("not_after", T(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("document_sha256", S(length=64), nullable=False),
        sa.Column("signatures", sa.JSON(), nullable=False),
        sa.Column("countersignature", sa.JSON(), nullable=True),
        sa.Column("registry_keys", sa.JSON(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("finalized_at", T(), nullable=True),
        sa.Column("revoked_at", T(), nullable=True),
        sa.Column("revoked_by", S(length=64), nullable=True),
        sa.Column("revocation_reason", S(length=500), nullable=True),
        sa.ForeignKeyConstraint(["negotiation_id"], ["contract_negotiation.id"]),
        sa.ForeignKeyConstraint(["consumer_id"], ["org.id"]),
        sa.ForeignKeyConstraint(["provider_id"], ["org.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("negotiation_id", "asset_id", "consumer_id", "provider_id", "status"):
        op.create_index(f"ix_contract_agreement_{col}", "contract_agreement", [col], unique=False)

    op.create_table(
        "transfer_process",
        sa.Column("id", S(length=64), nullable=False),
        sa.Column("consumer_pid", S(length=128), nullable=False),
        sa.Column("agreement_id", S(length=64), nullable=False),
        sa.Column("consumer_id", S(length=64), nullable=False),
        sa.Column("provider_id", S(length=64), nullable=False),
        sa.Column("asset_id", S(length=64), nullable=False),
        sa.Column("asset_version", sa.Integer(), nullable=False),
        sa.Column("format", S(length=64), nullable=False),
        sa.Column("state", S(length=16), nullable=False),
        sa.Column("token_generation", sa.Integer(), nullable=False),
        sa.Column("pulls", sa.Integer(), nullable=False),
        sa.Column("rows_served", sa.Integer(), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("updated_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["agreement_id"], ["contract_agreement.id"]),
        sa.ForeignKeyConstraint(["consumer_id"], ["org.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("consumer_id", "consumer_pid", name="uq_transfer_process_consumer_pid"),
    )
    for col in ("agreement_id", "consumer_id", "state"):
        op.create_index(f"ix_transfer_process_{col}", "transfer_process", [col], unique=False)


def downgrade() -> None:
    for col in ("agreement_id", "consumer_id", "state"):
        op.drop_index(f"ix_transfer_process_{col}", table_name="transfer_process")
    op.drop_table("transfer_process")
    for col in ("negotiation_id", "asset_id", "consumer_id", "provider_id", "status"):
        op.drop_index(f"ix_contract_agreement_{col}", table_name="contract_agreement")
    op.drop_table("contract_agreement")
    for col in ("consumer_id", "provider_id", "asset_id", "state"):
        op.drop_index(f"ix_contract_negotiation_{col}", table_name="contract_negotiation")
    op.drop_table("contract_negotiation")
