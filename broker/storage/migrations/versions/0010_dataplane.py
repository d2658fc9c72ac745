"""dataplane: connectors hold the rows — the connector registry, the decisions and receipts of pulls;
the broker vault and the upload staging tables are dropped (the broker keeps no provider rows)

Revision ID: 0010_dataplane
Revises: 0009_catalog_indexes, 0009_dsp_transfer
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010_dataplane"
down_revision = ("0009_catalog_indexes", "0009_dsp_transfer")
branch_labels = None
depends_on = None

_str = sqlmodel.sql.sqltypes.AutoString
_dt = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "connector_endpoint",
        sa.Column("id", _str(length=64), nullable=False),
        sa.Column("org_id", _str(length=64), nullable=False),
        sa.Column("endpoint", _str(length=500), nullable=False),
        sa.Column("kid", _str(length=64), nullable=False),
        sa.Column("public_key", _str(length=64), nullable=False),
        sa.Column("status", _str(length=16), nullable=False),
        sa.Column("verified_at", _dt(), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("endpoint"),
    )
    op.create_index("ix_connector_endpoint_org_id", "connector_endpoint", ["org_id"])
    op.create_table(
        "dataplane_decision",
        sa.Column("decision_id", _str(length=64), nullable=False),
        sa.Column("transfer_id", _str(length=64), nullable=False),
        sa.Column("provider_id", _str(length=64), nullable=False),
        sa.Column("consumer_id", _str(length=64), nullable=False),
        sa.Column("agreement_id", _str(length=64), nullable=False),
        sa.Column("token_jti", _str(length=128), nullable=False),
        sa.Column("allow", sa.Boolean(), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.ForeignKeyConstraint(["transfer_id"], ["transfer_process.id"]),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index("ix_dataplane_decision_transfer_id", "dataplane_decision", ["transfer_id"])
    op.create_table(
        "dataplane_receipt",
        sa.Column("receipt_id", _str(length=128), nullable=False),
        sa.Column("kind", _str(length=16), nullable=False),
        sa.Column("transfer_id", _str(length=64), nullable=True),
        sa.Column("agreement_id", _str(length=64), nullable=False),
        sa.Column("decision_id", _str(length=128), nullable=False),
        sa.Column("provider_id", _str(length=64), nullable=False),
        sa.Column("sha256", _str(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.ForeignKeyConstraint(["transfer_id"], ["transfer_process.id"]),
        sa.PrimaryKeyConstraint("receipt_id"),
    )
    op.create_index("ix_dataplane_receipt_transfer_id", "dataplane_receipt", ["transfer_id"])
    op.drop_table("catalog_upload_part")
    with op.batch_alter_table("catalog_upload", schema=None) as batch_op:
        batch_op.drop_index("ix_catalog_upload_provider_id")
    op.drop_table("catalog_upload")
    op.drop_table("catalog_asset_blob")


def downgrade() -> None:
    op.create_table(
        "catalog_asset_blob",
        sa.Column("asset_id", _str(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("master_key_id", _str(length=32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("content_hash", _str(length=64), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", "version"),
    )
    op.create_table(
        "catalog_upload",
        sa.Column("id", _str(length=64), nullable=False),
        sa.Column("provider_id", _str(length=64), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.ForeignKeyConstraint(["provider_id"], ["org.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_catalog_upload_provider_id", "catalog_upload", ["provider_id"])
    op.create_table(
        "catalog_upload_part",
        sa.Column("upload_id", _str(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["catalog_upload.id"]),
        sa.PrimaryKeyConstraint("upload_id", "part"),
    )
    op.drop_table("dataplane_receipt")
    op.drop_table("dataplane_decision")
    op.drop_table("connector_endpoint")
