"""dsp: transfer processes keep the consumer's callback address, the key its tokens bind to and its
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


def downgrade() -> None:
    with op.batch_alter_table("transfer_process") as batch:
        batch.drop_column("data_address")
        batch.drop_column("consumer_kid")
        batch.drop_column("callback_address")
