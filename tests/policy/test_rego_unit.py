"""The Rego unit tests (policies/**/*_test.rego) are standard OPA tests for `opa test policies/`.

rego-cpp 1.5 (regopy) crashes evaluating `with input as` over rules that read `input`, so CI cannot
load them in-process at all; here we check that each policy and authorisation mode has tests. Their cases are executed on both engines by test_engines.py.
"""

from __future__ import annotations

import re

from broker.policy.library import rego_test_modules


def test_rego_unit_tests_cover_every_policy_and_mode():
    names = [t for rego in rego_test_modules().values() for t in re.findall(r"^(test_\w+)\s+if\b", rego, re.M)]
    assert len(names) >= 12
    for topic in ("unified", "domain", "scenario", "hierarchical", "geo", "aggregation", "purpose", "clearance",
                  "max_accesses", "expired", "open_data"):
        assert any(topic in n for n in names), topic
