"""catalog: assets served from the provider's connector (data_endpoint) instead of the vault

Revision ID: 0008_catalog_connector
Revises: 0003_catalog
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008_catalog_connector"
down_revision = "0003_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_asset") as batch:
        batch.add_column(sa.Column("data_endpoint", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("catalog_asset") as batch:
        batch.drop_column("data_endpoint")
