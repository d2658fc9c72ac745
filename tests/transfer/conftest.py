"""Shared contract fixtures (tests/contracts/helpers.py)."""

from tests.contracts.helpers import world  # noqa: F401
