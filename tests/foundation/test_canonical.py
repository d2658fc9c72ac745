"""The fast canonical JSON path is byte-equal to the rfc8785 reference on everything TwinSpace signs,
and defers to it (same bytes or the same refusal) on everything else."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from twinspace import canonical
from twinspace.canonical import canonical_json

SAFE = 2**53 - 1
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any code point but surrogates
scalars = (st.none() | st.booleans() | st.integers(-SAFE, SAFE) | texts
           | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False))
keys = st.text(st.characters(max_codepoint=127), max_size=8) | texts
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
                         max_leaves=30)


def _reference(obj):
    try:
        return rfc8785.dumps(obj)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


def _ours(obj):
    try:
        return canonical_json(obj)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(documents)
def test_byte_equal_to_rfc8785(obj):
    assert _ours(obj) == _reference(obj)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-SAFE, SAFE) | texts,
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=5),
                    max_leaves=30))
def test_the_signed_subset_takes_the_fast_path(obj):
    assert canonical._plain(obj)
    assert canonical_json(obj) == rfc8785.dumps(obj)


@pytest.mark.parametrize("obj", [{"é": 1, "z": 2, "\U0001F600": 3, "\ufb01": 4}, {"x": 1.5, "y": 1e21, "z": 1e-7},
                                 {"big": 2**53}, ["\ud800"], {"t": (1, 2)}, "\u2028\x7f\x00\x1f"])
def test_edge_cases_match_the_reference(obj):
    assert _ours(obj) == _reference(obj)
