"""Rebuild contracts/AuditAnchor.json (ABI + bytecode) from AuditAnchor.vy with the vyper compiler.

    .venv/bin/python contracts/build.py          # rewrite the artifact
    .venv/bin/python contracts/build.py --check  # exit 1 if the committed artifact is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "AuditAnchor.vy"
ARTIFACT = HERE / "AuditAnchor.json"


def build() -> dict:
    import vyper
    from vyper.compiler import compile_code

    out = compile_code(SOURCE.read_text(), output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {"contractName": "AuditAnchor", "source": SOURCE.name, "compiler": f"vyper {vyper.__version__}",
            "abi": out["abi"], "bytecode": out["bytecode"], "deployedBytecode": out["bytecode_runtime"]}


def main(argv: list[str]) -> int:
    artifact = build()
    text = json.dumps(artifact, indent=2, sort_keys=True) + "\n"
    if "--check" in argv:
        current = ARTIFACT.read_text() if ARTIFACT.exists() else ""
        if current != text:
            print(f"{ARTIFACT} is stale; run: python contracts/build.py", file=sys.stderr)
            return 1
        print(f"{ARTIFACT} is up to date")
        return 0
    ARTIFACT.write_text(text)
    print(f"wrote {ARTIFACT} ({len(artifact['bytecode']) // 2 - 1} bytes of init code)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
