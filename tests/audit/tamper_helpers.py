"""Acting as an attacker with DDL rights: remove the append-only triggers before editing rows."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine


def drop_append_only_guards(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in ("audit_entry", "audit_checkpoint"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
        else:
            for table in ("audit_entry", "audit_checkpoint"):
                for action in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))
