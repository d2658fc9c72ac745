"""audit: fewer, better indexes on audit_entry — (kind, seq) for every row; (asset_id, seq) and
(agreement_id, seq) where set; (outcome, seq) where not 'ok'; no index on actor; created_at on
PostgreSQL only

Every append writes its entry into each index it belongs to: the six single-column indexes made a
bare insert into this table ~0.45x as fast as into an index-free one (benchmarks/audit_bench.py).
The filters an index serves are an equality on its leading column with seq second, so a page comes
out in sequence order without a sort; outcome=ok, org, a kind prefix and (on SQLite) the time
filters walk the primary key (docs/audit.md#indexes). Indexes only: the table is not rebuilt (on
SQLite a rebuild would also drop the append-only triggers).

Revision ID: 0011_audit_indexes
Revises: 0010_dataplane, 0002_audit
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_audit_indexes"
# 0002_audit is on its own branch: listed so that its indexes exist before this drops them.
down_revision = ("0010_dataplane", "0002_audit")
branch_labels = None
depends_on = None

_OLD = ("actor", "agreement_id", "asset_id", "kind", "created_at", "outcome")  # ix_audit_entry_<column>
_KEPT_ON_POSTGRESQL = ("created_at",)  # its planner uses it for time windows; SQLite's barely did
# name, columns, partial-index predicate (the same text on both databases)
_NEW = (
    ("ix_audit_entry_kind_seq", ["kind", "seq"], None),
    ("ix_audit_entry_asset_seq", ["asset_id", "seq"], "asset_id IS NOT NULL"),
    ("ix_audit_entry_agreement_seq", ["agreement_id", "seq"], "agreement_id IS NOT NULL"),
    ("ix_audit_entry_not_ok_seq", ["outcome", "seq"], "outcome <> 'ok'"),
)


def _dropped() -> list[str]:
    kept = _KEPT_ON_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else ()
    return [c for c in _OLD if c not in kept]


def upgrade() -> None:
    for name, columns, where in _NEW:
        kw = {} if where is None else {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}
        op.create_index(name, "audit_entry", columns, **kw)
    for column in _dropped():
        op.drop_index(f"ix_audit_entry_{column}", table_name="audit_entry")


def downgrade() -> None:
    for column in _dropped():
        op.create_index(f"ix_audit_entry_{column}", "audit_entry", [column])
    for name, _, _ in reversed(_NEW):
        op.drop_index(name, table_name="audit_entry")
