"""The README's set-up block has exactly two commands, and .ci/run runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_two_setup_commands_demo_then_tests():
    demo, tests = _setup_commands()
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith(".venv/bin/twinspace demo")
    assert tests.startswith("python3 -m venv .venv && ") and tests.endswith(".venv/bin/pytest")
    assert "'.[test]'" in tests


def test_ci_runs_the_readme_test_command_verbatim_and_fails_on_failure():
    script = (REPO / ".ci" / "run").read_text()
    lines = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == _setup_commands()[1]
    assert lines[-2] == "set -e"
    assert lines[0].startswith("set -") and "pipefail" in lines[0]
