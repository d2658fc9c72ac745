"""The Rego unit tests (policies/**/*_test.rego) run here through the embedded engine, like
`opa test policies/`: every `test_*` rule must evaluate to true."""

from __future__ import annotations

import shutil

import pytest

from broker.policy.library import DEFAULT_DIR, load_library
from broker.policy.rego_tests import discover, make_interpreter, run_all, run_test

LIBRARY = load_library()
TESTS = discover(LIBRARY)


@pytest.fixture(scope="module")
def interpreter():
    return make_interpreter(LIBRARY)


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_rego_unit_test_passes(interpreter, test):
    assert run_test(interpreter, test) is None


def test_every_policy_and_authorisation_mode_has_allow_and_deny_tests():
    names = [t.name for t in TESTS]
    assert len(names) >= 30
    for topic in ("open_data", "purpose", "clearance", "org_type", "validity", "max_accesses", "max_total_rows",
                  "aggregation_only", "geo_restriction", "unified_authorisation", "domain_authorisation",
                  "scenario_authorisation", "hierarchical", "malformed"):
        assert any(topic in n for n in names), topic
    for policy in LIBRARY.builtins:
        rego_name = policy.replace("-", "_")
        assert any(f"policies.{rego_name}.decide" in rego for rego in LIBRARY.tests.values()), policy


def test_runner_reports_failing_and_undefined_tests(tmp_path):
    """The runner can fail: a wrong expectation and a failing condition are both reported."""
    root = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, root)
    (root / "twinspace" / "policies" / "broken_test.rego").write_text(
        "package twinspace.broken_test\nimport rego.v1\nimport data.twinspace.policies\n"
        "test_wrong_expectation if {\n\tpolicies.open_data.decide({}).allow\n}\n"
        "test_false_value := false\n"
        "test_passes if {\n\tnot policies.open_data.decide({}).allow\n}\n")
    results = run_all(load_library(root))
    assert results["twinspace.broken_test.test_wrong_expectation"] is not None
    assert results["twinspace.broken_test.test_false_value"] is not None
    assert results["twinspace.broken_test.test_passes"] is None
    assert all(v is None for k, v in results.items() if k.startswith("twinspace.policies_test."))
