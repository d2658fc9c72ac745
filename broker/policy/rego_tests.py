"""Run the library's Rego unit tests (``*_test.rego``) with the embedded engine, like ``opa test``:
every rule named ``test_*`` must evaluate to ``true``.

The tests call each policy's ``decide(inp)`` function directly (rego-cpp 1.5 cannot evaluate
``with input as``), so the same files also pass under a real ``opa test policies/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.policy.library import Library, declared_package

_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True)
class RegoTest:
    module: str
    package: str
    name: str

    @property
    def query(self) -> str:
        return f"data.{self.package}.{self.name}"


def discover(library: Library) -> list[RegoTest]:
    found = []
    for module, rego in library.tests.items():
        package = declared_package(rego) or ""
        for name in dict.fromkeys(_TEST_RULE.findall(rego)):  # incremental definitions: one test
            found.append(RegoTest(module, package, name))
    return found


def make_interpreter(library: Library):
    from broker.policy.rego import Interpreter

    interpreter = Interpreter()
    for name, rego in library.shared.items():
        interpreter.add_module(name, rego)
    for source in library.builtins.values():
        interpreter.add_module(source.module_name, source.rego)
    for name, rego in library.tests.items():
        interpreter.add_module(name, rego)
    if library.data:
        interpreter.add_data(library.data)
    interpreter.set_input({})
    return interpreter


def run_test(interpreter, test: RegoTest) -> str | None:
    """None when the test passes, else why it failed."""
    from broker.policy.rego import rego_output_ok

    output = interpreter.query(test.query)
    text = str(output).strip()
    if not rego_output_ok(output._impl):
        return f"{test.name}: error: {text[:500]}"
    if not output.results or text == "undefined":
        return f"{test.name} is undefined (a condition in it failed)"
    expressions = output.results[0].expressions
    if expressions != [True]:
        return f"{test.name} evaluated to {text[:300]}"
    return None


def run_all(library: Library) -> dict[str, str | None]:
    interpreter = make_interpreter(library)
    return {f"{t.package}.{t.name}": run_test(interpreter, t) for t in discover(library)}
