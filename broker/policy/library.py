"""Policy sources: the built-in Rego library in ``policies/`` and operator uploads (versioned).

A policy id like ``purpose-restricted`` lives in package ``twinspace.policies.purpose_restricted``.
Uploaded versions are loaded under a per-version package (``twinspace.versions.<pkg>_v<n>``) so
several versions coexist in one engine, as agreements may reference older ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

POLICY_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_PACKAGE_LINE = re.compile(r"^package\s+([\w.]+)\s*$", re.MULTILINE)
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "policies"


@dataclass(frozen=True)
class PolicySource:
    policy_id: str
    version: str
    package: str  # the package the engine queries: data.<package>.decision
    rego: str

    @property
    def module_name(self) -> str:
        return f"{self.package.replace('.', '/')}.rego"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.rego.encode()).hexdigest()


def package_for(policy_id: str) -> str:
    return "twinspace.policies." + policy_id.replace("-", "_")


def declared_package(rego: str) -> str | None:
    match = _PACKAGE_LINE.search(rego)
    return match.group(1) if match else None


def versioned(policy_id: str, version: int, rego: str) -> PolicySource:
    """Rename the declared package so that this version does not collide with other versions."""
    package = f"twinspace.versions.{policy_id.replace('-', '_')}_v{version}"
    return PolicySource(policy_id, f"v{version}", package, _PACKAGE_LINE.sub(f"package {package}", rego, count=1))


@lru_cache(maxsize=8)
def load_library(policies_dir: Path = DEFAULT_DIR) -> tuple[dict[str, str], dict[str, PolicySource]]:
    """(shared modules by name, built-in policies by id) read from ``policies_dir``."""
    shared, builtins = {}, {}
    for path in sorted(policies_dir.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        rego = path.read_text(encoding="utf-8")
        package = declared_package(rego) or ""
        if package.startswith("twinspace.policies."):
            policy_id = package.removeprefix("twinspace.policies.").replace("_", "-")
            digest = hashlib.sha256(rego.encode()).hexdigest()[:12]
            builtins[policy_id] = PolicySource(policy_id, f"builtin-{digest}", package, rego)
        else:
            shared[str(path.relative_to(policies_dir))] = rego
    return shared, builtins


def rego_test_modules(policies_dir: Path = DEFAULT_DIR) -> dict[str, str]:
    return {str(p.relative_to(policies_dir)): p.read_text(encoding="utf-8")
            for p in sorted(policies_dir.rglob("*_test.rego"))}
