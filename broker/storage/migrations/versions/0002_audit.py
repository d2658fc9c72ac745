"""audit: Merkle log head, signed checkpoints, chain anchors

Revision ID: 0002_audit
Revises: 0001_foundation
"""
import hashlib

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002_audit"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entry_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entry_outcome"), ["outcome"], unique=False)

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("last_leaf_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("tree_size", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    with op.batch_alter_table("audit_checkpoint", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_checkpoint_created_at"), ["created_at"], unique=False)
    op.create_table(
        "audit_anchor",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("contract", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("anchored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "contract", "tree_size"),
    )
    op.create_table(
        "audit_chain_contract",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("deployed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id"),
    )

    _append_only_guards(create=True)

    # The head starts where the existing log ends (entries written before this revision).
    bind = op.get_bind()
    last = bind.execute(sa.text("SELECT seq, body FROM audit_entry ORDER BY seq DESC LIMIT 1")).first()
    size, last_hash = (0, "0" * 64) if last is None else (
        last[0], hashlib.sha256(b"\x00" + last[1].encode()).hexdigest())
    op.bulk_insert(head, [{"id": 1, "size": size, "last_leaf_hash": last_hash}])


GUARDED = ("audit_entry", "audit_checkpoint")


def _append_only_guards(create: bool) -> None:
    """Refuse UPDATE / DELETE (and TRUNCATE on PostgreSQL) of entries and checkpoints.

    Defence in depth against mistakes in application code; someone with DDL rights can drop the
    triggers, which is what the verifier is for.
    """
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        if create:
            op.execute("CREATE OR REPLACE FUNCTION twinspace_audit_append_only() RETURNS trigger "
                       "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit log tables are append-only (%)', "
                       "TG_TABLE_NAME; END $$")
        for table in GUARDED:
            if create:
                op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION twinspace_audit_append_only()")
                op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                           "FOR EACH STATEMENT EXECUTE FUNCTION twinspace_audit_append_only()")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        if not create:
            op.execute("DROP FUNCTION IF EXISTS twinspace_audit_append_only()")
    elif bind.dialect.name == "sqlite":
        for table in GUARDED:
            for action in ("UPDATE", "DELETE"):
                name = f"{table}_no_{action.lower()}"
                if create:
                    op.execute(f"CREATE TRIGGER {name} BEFORE {action} ON {table} BEGIN "
                               f"SELECT RAISE(ABORT, 'audit log tables are append-only ({table})'); END")
                else:
                    op.execute(f"DROP TRIGGER IF EXISTS {name}")


def downgrade() -> None:
    _append_only_guards(create=False)
    op.drop_table("audit_chain_contract")
    op.drop_table("audit_anchor")
    with op.batch_alter_table("audit_checkpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoint_created_at"))
    op.drop_table("audit_checkpoint")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entry_outcome"))
        batch_op.drop_index(batch_op.f("ix_audit_entry_created_at"))
