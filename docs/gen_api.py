"""Regenerate the endpoint table in docs/api.md from the broker's OpenAPI document.

Run: .venv/bin/python docs/gen_api.py
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from broker.api.deps import RoleGuard
from broker.api.routes import _dependency_calls, is_public
from broker.app import create_app
from broker.settings import Settings

DOC = Path(__file__).with_name("api.md")
MARK_START, MARK_END = "<!-- endpoints:start -->", "<!-- endpoints:end -->"


def endpoint_rows() -> list[str]:
    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp())))
    rows = []
    for route in sorted(app.state.api_routes, key=lambda r: (r.path, sorted(r.methods))):
        guard = next((c for c in _dependency_calls(route.dependant) if isinstance(c, RoleGuard)), None)
        roles = "public" if is_public(route) else ", ".join(guard.roles)
        summary = (route.description or route.summary or "").strip().splitlines()
        for method in sorted(route.methods):
            rows.append(f"| `{method} {route.path}` | {roles} | {summary[0] if summary else ''} |")
    return rows


def main() -> None:
    table = "\n".join(["| endpoint | roles | what |", "|---|---|---|", *endpoint_rows()])
    text = DOC.read_text()
    text = re.sub(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), f"{MARK_START}\n{table}\n{MARK_END}", text,
                  flags=re.S)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
