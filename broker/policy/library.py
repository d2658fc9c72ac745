"""Policy sources: the built-in Rego library in ``policies/`` and operator uploads (versioned).

A policy id like ``purpose-restricted`` lives in package ``twinspace.policies.purpose_restricted``
and exposes ``decision := decide(input)``. Uploaded versions are loaded under a per-version
package (``twinspace.versions.<pkg>_v<n>``) so several versions coexist in one engine, as
agreements may reference older ones. ``data.json`` files are the library's data document, nested
by directory as ``opa test`` / ``opa run`` load them (``policies/twinspace/config/data.json`` is
``data.twinspace.config``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Library:
    """Everything read from a policies directory."""

    shared: dict[str, str]  # non-policy modules (e.g. twinspace/lib.rego) by relative path
    builtins: dict[str, PolicySource]  # built-in policies by id
    data: dict[str, Any] = field(default_factory=dict)  # the data document
    tests: dict[str, str] = field(default_factory=dict)  # *_test.rego modules by relative path
    data_files: dict[str, Any] = field(default_factory=dict)  # data path ("twinspace/config") -> document

    @property
    def data_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()


def package_for(policy_id: str) -> str:
    return "twinspace.policies." + policy_id.replace("-", "_")


def declared_package(rego: str) -> str | None:
    match = _PACKAGE_LINE.search(rego)
    return match.group(1) if match else None


def versioned(policy_id: str, version: int, rego: str) -> PolicySource:
    """Rename the declared package so that this version does not collide with other versions."""
    package = f"twinspace.versions.{policy_id.replace('-', '_')}_v{version}"
    return PolicySource(policy_id, f"v{version}", package, _PACKAGE_LINE.sub(f"package {package}", rego, count=1))


def _merge(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys:
        target = target.setdefault(key, {})
    target.update(value)


@lru_cache(maxsize=8)
def load_library(policies_dir: Path = DEFAULT_DIR) -> Library:
    """Read modules, built-in policies, tests and data from ``policies_dir``."""
    shared, policies, tests, data, data_files = {}, {}, {}, {}, {}
    for path in sorted(policies_dir.rglob("*.rego")):
        rel = str(path.relative_to(policies_dir))
        rego = path.read_text(encoding="utf-8")
        if path.name.endswith("_test.rego"):
            tests[rel] = rego
            continue
        package = declared_package(rego) or ""
        if package.startswith("twinspace.policies."):
            policies[package.removeprefix("twinspace.policies.").replace("_", "-")] = (package, rego)
        else:
            shared[rel] = rego
    for path in sorted(policies_dir.rglob("data.json")):
        parts = list(path.relative_to(policies_dir).parent.parts)
        document = json.loads(path.read_text(encoding="utf-8"))
        _merge(data, parts, document)
        data_files["/".join(parts)] = document
    # A built-in's version covers everything its decisions depend on: its module, the shared
    # modules and the data document, so a library change is a new version in the audit log.
    common = hashlib.sha256(json.dumps([shared, data], sort_keys=True).encode()).hexdigest()
    builtins = {}
    for policy_id, (package, rego) in policies.items():
        digest = hashlib.sha256((common + rego).encode()).hexdigest()[:12]
        builtins[policy_id] = PolicySource(policy_id, f"builtin-{digest}", package, rego)
    return Library(shared, builtins, data, tests, data_files)
