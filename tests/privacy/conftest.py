from __future__ import annotations

import pytest

from twinspace.privacy import he
from twinspace.client.query import ConsumerKeys


@pytest.fixture(scope="session")
def keys() -> dict[str, ConsumerKeys]:
    return {s: ConsumerKeys.create(s) for s in ("bfv", "ckks")}


@pytest.fixture(scope="session")
def pcs(keys) -> dict[str, he.PublicContext]:
    return {s: he.load_public_context(k.public_context_bytes()) for s, k in keys.items()}
