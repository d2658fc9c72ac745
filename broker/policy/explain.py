"""Explain a decision the way ``opa eval --explain`` users expect, at the level that matters: which
named check (rule) of the policy produced each deny reason, and which checks passed.

A policy's ``deny_for(inp)`` is a union of library checks (``lib.purpose_denied(inp)`` ...); each is
evaluated on its own with the same engine modules and data, so the explanation cannot disagree
with the decision (the decision itself is re-evaluated and returned alongside).
"""

from __future__ import annotations

import re
from typing import Any

from broker.policy.library import PolicySource

_DENY_FOR = re.compile(r"^deny_for\(inp\)\s*:=\s*(.+)$", re.MULTILINE)
_CHECK = re.compile(r"\b(lib\.\w+|[a-z_]\w*)\(inp\)")


def checks_of(source: PolicySource) -> list[str]:
    """The named checks a policy unions into its deny reasons, in source order."""
    m = _DENY_FOR.search(source.rego)
    if not m:
        return []
    return list(dict.fromkeys(c for c in _CHECK.findall(m.group(1)) if c != "deny_for"))


def explain(library, source: PolicySource, input_doc: dict[str, Any]) -> dict[str, Any]:
    """{"rules": [{"rule", "passed", "reasons"}], "decided_by": [rules that denied] or ["allow"]}."""
    from broker.policy.rego import Interpreter

    interpreter = Interpreter()
    for name, rego in library.shared.items():
        interpreter.add_module(name, rego)
    if library.data:
        interpreter.add_data(library.data)
    interpreter.add_module(source.module_name, source.rego)
    interpreter.set_input(input_doc)
    rules = []
    for check in checks_of(source):
        ref = f"data.twinspace.{check}" if check.startswith("lib.") else f"data.{source.package}.{check}"
        out = interpreter.query(f"x := {ref}(input)")
        try:
            reasons = sorted(str(r) for r in out.results[0].bindings["x"]) if out.results else None
        except (KeyError, IndexError, TypeError):
            reasons = None
        rules.append({"rule": f"{source.package}.deny_for ← {ref}", "check": check.removeprefix("lib."),
                      "passed": reasons == [], "reasons": reasons if reasons is not None
                      else ["the check is undefined on this input (deny by default)"]})
    denied = [r["check"] for r in rules if not r["passed"]]
    return {"policy_id": source.policy_id, "policy_version": source.version, "rules": rules,
            "decided_by": denied or [f"{source.package}.decision: allow (all {len(rules)} checks passed)"]}
