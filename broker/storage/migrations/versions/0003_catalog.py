"""catalog: assets, encrypted vault blobs, staged uploads

Revision ID: 0003_catalog
Revises: 0001_foundation
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003_catalog'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_asset_blob',
    sa.Column('asset_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('master_key_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('asset_id', 'version')
    )
    op.create_table('catalog_asset',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('provider_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('is_latest', sa.Boolean(), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('keywords', sa.JSON(), nullable=False),
    sa.Column('twin_category', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('entity_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('entity_code_scheme', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('region', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('classification', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('domain', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('min_lon', sa.Float(), nullable=True),
    sa.Column('min_lat', sa.Float(), nullable=True),
    sa.Column('max_lon', sa.Float(), nullable=True),
    sa.Column('max_lat', sa.Float(), nullable=True),
    sa.Column('time_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('time_end', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('byte_size', sa.Integer(), nullable=False),
    sa.Column('deid_report', sa.JSON(), nullable=True),
    sa.Column('deid_report_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('offers', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('withdrawn_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['provider_id'], ['org.id'], ),
    sa.PrimaryKeyConstraint('id', 'version')
    )
    with op.batch_alter_table('catalog_asset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_asset_classification'), ['classification'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_domain'), ['domain'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_entity_type'), ['entity_type'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_is_latest'), ['is_latest'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_provider_id'), ['provider_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_asset_twin_category'), ['twin_category'], unique=False)

    op.create_table('catalog_upload',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('provider_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('byte_size', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['provider_id'], ['org.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('catalog_upload', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_upload_provider_id'), ['provider_id'], unique=False)

    op.create_table('catalog_upload_part',
    sa.Column('upload_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['catalog_upload.id'], ),
    sa.PrimaryKeyConstraint('upload_id', 'part')
    )


def downgrade() -> None:
    op.drop_table('catalog_upload_part')
    with op.batch_alter_table('catalog_upload', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_upload_provider_id'))
    op.drop_table('catalog_upload')
    with op.batch_alter_table('catalog_asset', schema=None) as batch_op:
        for name in ('twin_category', 'status', 'provider_id', 'is_latest', 'entity_type', 'domain', 'classification'):
            batch_op.drop_index(batch_op.f(f'ix_catalog_asset_{name}'))
    op.drop_table('catalog_asset')
    op.drop_table('catalog_asset_blob')
