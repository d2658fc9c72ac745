"""Request bodies of the encrypted-query API, validated at the boundary.

The query models themselves live in ``twinspace/privacy/queries.py`` (the provider's connector parses
the same queries) and are re-exported here. Ciphertexts and contexts travel as standard base64
strings; their sizes are capped there (before any decoding) and again in ``twinspace/privacy/he.py``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from broker.schemas import StrictModel
from twinspace.privacy.dp_terms import MIN_EPSILON_PER_QUERY
from twinspace.privacy.queries import (MAX_MASK_CHUNKS, AggregateQuery, CiphertextB64, ColumnName,  # noqa: F401
                                       ComputeRequest, Condition, ContextB64, HistogramQuery, LinearScoreQuery,
                                       PredicateQuery, Query, b64decode, b64encode, jsonable_query, wire_query)


class EncryptedQueryRequest(StrictModel):
    agreement_id: Annotated[str, Field(min_length=1, max_length=64)]
    context: ContextB64
    query: Query
    epsilon: float | None = Field(None, ge=MIN_EPSILON_PER_QUERY, le=10, description="Privacy cost of this query (at least MIN_EPSILON_PER_QUERY); "
                                  "default and ceiling: the policy's add_dp_noise obligation")


class AggregationRoundRequest(StrictModel):
    """Secure aggregation of one numeric column across several providers' assets."""
    agreement_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=2, max_length=32)
    context: ContextB64
    column: ColumnName
    bound: float = Field(gt=0, le=1e9)
    scale: int = Field(0, ge=0, le=6)
    epsilon: float | None = Field(None, ge=MIN_EPSILON_PER_QUERY, le=10)
    min_providers: int | None = Field(None, ge=2, le=32, description="Default: every named agreement")


class ContributionRequest(StrictModel):
    agreement_id: Annotated[str, Field(min_length=1, max_length=64)]
    ciphertext: CiphertextB64
