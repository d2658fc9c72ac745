"""catalog: visibility and search in SQL (audience_restricted, audience rows, search_text, term rows) and the indexes
that make a page cost the same at any catalog size

Revision ID: 0009_catalog_indexes
Revises: 0008_catalog_connector
"""
import json
import re

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009_catalog_indexes"
down_revision = "0008_catalog_connector"
branch_labels = None
depends_on = None

_asset = sa.table("catalog_asset", sa.column("id", sa.String), sa.column("version", sa.Integer),
                  sa.column("offers", sa.JSON), sa.column("title", sa.String), sa.column("description", sa.Text),
                  sa.column("keywords", sa.JSON), sa.column("entity_type", sa.String), sa.column("domain", sa.String),
                  sa.column("audience_restricted", sa.Boolean), sa.column("search_text", sa.Text))
_term = sa.table("catalog_asset_term", sa.column("asset_id", sa.String), sa.column("version", sa.Integer),
                 sa.column("term", sa.String))
_audience = sa.table("catalog_asset_audience", sa.column("asset_id", sa.String), sa.column("version", sa.Integer),
                     sa.column("kind", sa.String), sa.column("value", sa.String))


def _json(value):
    return json.loads(value) if isinstance(value, str) else (value or [])


def upgrade() -> None:
    op.create_table("catalog_asset_audience",
                    sa.Column("asset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
                    sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
                    sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
                    sa.PrimaryKeyConstraint("asset_id", "version", "kind", "value"))
    op.create_table("catalog_asset_term",
                    sa.Column("asset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
                    sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("term", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
                    sa.PrimaryKeyConstraint("asset_id", "version", "term"))
    op.create_index("ix_catalog_asset_term_term", "catalog_asset_term", ["term", "asset_id", "version"],
                    postgresql_ops={"term": "text_pattern_ops"})
    with op.batch_alter_table("catalog_asset") as batch:
        batch.add_column(sa.Column("audience_restricted", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
        for name in ("is_latest", "status", "classification"):
            batch.drop_index(f"ix_catalog_asset_{name}")
        batch.create_index("ix_catalog_asset_list", ["is_latest", "created_at", "id", "version", "status",
                                                     "classification", "audience_restricted"])
        batch.create_index("ix_catalog_asset_visible", ["is_latest", "status", "classification", "audience_restricted",
                                                        "id", "version"])
    # Backfill with the rule of broker.catalog.query.audience_rows / service.search_text.
    conn = op.get_bind()
    rows = conn.execute(sa.select(_asset.c.id, _asset.c.version, _asset.c.offers, _asset.c.title,
                                  _asset.c.description, _asset.c.keywords, _asset.c.entity_type,
                                  _asset.c.domain)).all()
    for aid, ver, offers, title, description, keywords, entity_type, domain in rows:
        audiences = [(o.get("params") or {}).get("audience") for o in _json(offers)]
        is_open = any(not a for a in audiences)
        admitted = set()
        if not is_open:
            for a in audiences:
                admitted.update(("type", str(v)) for v in a.get("org_types") or [] if len(str(v)) <= 64)
                admitted.update(("org", str(v)) for v in a.get("org_ids") or [] if len(str(v)) <= 64)
        text = "\n".join([title, description or "", " ".join(_json(keywords)), entity_type, domain]).lower()
        conn.execute(_asset.update().where(_asset.c.id == aid, _asset.c.version == ver)
                     .values(audience_restricted=not is_open, search_text=text))
        conn.execute(_term.insert(), [{"asset_id": aid, "version": ver, "term": t}
                                      for t in sorted({w[:64] for w in re.findall(r"\w+", text)})])
        if admitted:
            conn.execute(_audience.insert(), [{"asset_id": aid, "version": ver, "kind": k, "value": v}
                                              for k, v in sorted(admitted)])


def downgrade() -> None:
    with op.batch_alter_table("catalog_asset") as batch:
        batch.drop_index("ix_catalog_asset_visible")
        batch.drop_index("ix_catalog_asset_list")
        for name in ("is_latest", "status", "classification"):
            batch.create_index(f"ix_catalog_asset_{name}", [name])
        batch.drop_column("search_text")
        batch.drop_column("audience_restricted")
    op.drop_index("ix_catalog_asset_term_term", table_name="catalog_asset_term")
    op.drop_table("catalog_asset_term")
    op.drop_table("catalog_asset_audience")
