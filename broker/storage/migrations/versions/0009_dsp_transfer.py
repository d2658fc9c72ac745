"""dsp: consumer-role negotiations and transfers with other DSP providers; transfer processes keep the consumer's callback address, the key its tokens bind to and its
push DataAddress (a TransferRequestMessage is REQUESTED first; the provider starts it later)

Revision ID: 0009_dsp_transfer
Revises: 0005_contracts
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009_dsp_transfer"
down_revision = "0005_contracts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfer_process") as batch:
        batch.add_column(sa.Column("callback_address", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
        batch.add_column(sa.Column("consumer_kid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.add_column(sa.Column("data_address", sa.JSON(), nullable=True))
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "dsp_remote_negotiation",
        sa.Column("id", text(length=64), primary_key=True),
        sa.Column("org_id", text(length=64), sa.ForeignKey("org.id"), nullable=False),
        sa.Column("provider_url", text(length=500), nullable=False),
        sa.Column("provider_pid", text(length=200), nullable=True),
        sa.Column("offer", sa.JSON(), nullable=False),
        sa.Column("purpose", text(length=100), nullable=True),
        sa.Column("scenario", text(length=100), nullable=True),
        sa.Column("state", text(length=16), nullable=False),
        sa.Column("agreement", sa.JSON(), nullable=True),
        sa.Column("signed_agreement", sa.JSON(), nullable=True),
        sa.Column("countersignature", sa.JSON(), nullable=True),
        sa.Column("callback_secret_sha256", text(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_dsp_remote_negotiation_org_id", "dsp_remote_negotiation", ["org_id"])
    op.create_index("ix_dsp_remote_negotiation_state", "dsp_remote_negotiation", ["state"])
    op.create_table(
        "dsp_remote_transfer",
        sa.Column("id", text(length=64), primary_key=True),
        sa.Column("negotiation_id", text(length=64), sa.ForeignKey("dsp_remote_negotiation.id"), nullable=False),
        sa.Column("org_id", text(length=64), sa.ForeignKey("org.id"), nullable=False),
        sa.Column("provider_pid", text(length=200), nullable=True),
        sa.Column("agreement_id", text(length=300), nullable=False),
        sa.Column("format", text(length=64), nullable=False),
        sa.Column("state", text(length=16), nullable=False),
        sa.Column("data_address", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    for col in ("negotiation_id", "org_id", "state"):
        op.create_index(f"ix_dsp_remote_transfer_{col}", "dsp_remote_transfer", [col])


def downgrade() -> None:
    op.drop_table("dsp_remote_transfer")
    op.drop_table("dsp_remote_negotiation")
    with op.batch_alter_table("transfer_process") as batch:
        batch.drop_column("data_address")
        batch.drop_column("consumer_kid")
        batch.drop_column("callback_address")
