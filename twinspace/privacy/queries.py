"""The encrypted-query models both planes parse: the broker (``broker/privacy/schemas.py`` re-imports
them for its request bodies) and the provider's connector (``connectors/node/compute.py``), which
receives the same query inside a compute request signed by the broker. Pure pydantic: no HTTP, no
database.

Ciphertexts and contexts travel as standard base64 strings; their sizes are capped here (before any
decoding) and again on the decoded bytes in ``twinspace/privacy/he.py``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twinspace.errors import BadRequest
from twinspace.privacy.dp_terms import MEASURES, MIN_EPSILON_PER_QUERY
from twinspace.privacy.params import MAX_CIPHERTEXT_BYTES, MAX_CONTEXT_BYTES

_B64_CONTEXT = 4 * (MAX_CONTEXT_BYTES // 3 + 1)
_B64_CIPHERTEXT = 4 * (MAX_CIPHERTEXT_BYTES // 3 + 1)
MAX_MASK_CHUNKS = 256            # 256 × 8192 slots = 2M rows (BFV), 1M rows (CKKS)
ColumnName = Annotated[str, Field(min_length=1, max_length=128)]
Identifier = Annotated[str, Field(min_length=1, max_length=64)]


class StrictModel(BaseModel):
    """Unknown fields are an error, not silently dropped (as ``broker.schemas.StrictModel``)."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64; a clear 400 (never a parser message) otherwise."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest(f"The {what} is not valid base64.", code="ciphertext_malformed") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


ContextB64 = Annotated[str, Field(min_length=4, max_length=_B64_CONTEXT,
                                  description="Public TenSEAL context, base64 (no secret key)")]
CiphertextB64 = Annotated[str, Field(min_length=4, max_length=_B64_CIPHERTEXT, description="Ciphertext, base64")]


class Condition(StrictModel):
    """One plaintext predicate term on a declared column."""
    column: ColumnName
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in"]
    value: Union[float, int, str, list[Union[float, int, str]]]

    @model_validator(mode="after")
    def _shape(self) -> "Condition":
        if (self.op == "in") != isinstance(self.value, list):
            raise ValueError("'in' takes a list of values; the other operators one value")
        if isinstance(self.value, list) and not 1 <= len(self.value) <= 256:
            raise ValueError("'in' takes 1 to 256 values")
        return self


class AggregateQuery(StrictModel):
    """Encrypted 0/1 mask (or weights) → encrypted sum and count of a numeric column (mean = sum/count)."""
    type: Literal["aggregate"]
    column: ColumnName
    mask: list[CiphertextB64] = Field(min_length=1, max_length=MAX_MASK_CHUNKS)
    bound: float = Field(gt=0, le=1e9, description="Values are clipped to ±bound (the DP sensitivity of the sum)")
    scale: int = Field(0, ge=0, le=6, description="BFV fixed point: values × 10^scale, rounded")
    outputs: list[Literal["sum", "count"]] = Field(default_factory=lambda: ["sum", "count"], min_length=1,
                                                   max_length=2)


class HistogramQuery(StrictModel):
    """Encrypted mask → encrypted counts per named category (rows of other categories go to "(other)")."""
    type: Literal["histogram"]
    column: ColumnName
    categories: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=64)
    mask: list[CiphertextB64] = Field(min_length=1, max_length=MAX_MASK_CHUNKS)


class LinearScoreQuery(StrictModel):
    """Encrypted weight vector × plaintext feature columns → encrypted total or per-group scores.

    Groups are named by the consumer (``groups``), never discovered from the data: how many groups a
    column has would otherwise be an answer without noise."""
    type: Literal["linear_score"]
    features: list[ColumnName] = Field(min_length=1, max_length=64)
    weights: CiphertextB64
    bound: float = Field(gt=0, le=1e9, description="Each feature is clipped to ±bound")
    scale: int = Field(0, ge=0, le=6)
    group_by: ColumnName | None = None
    groups: list[Annotated[str, Field(max_length=200)]] | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _groups_named(self) -> "LinearScoreQuery":
        if (self.group_by is None) != (self.groups is None):
            raise ValueError("group_by and groups go together: name the groups you want")
        return self


class PredicateQuery(StrictModel):
    """Plaintext predicate on declared columns (cohort ≥ k) → encrypted noised sum or count."""
    type: Literal["predicate"]
    kind: Literal["sum", "count"] = "sum"
    column: ColumnName | None = None
    where: list[Condition] = Field(min_length=1, max_length=16)
    bound: float = Field(1.0, gt=0, le=1e9)
    scale: int = Field(0, ge=0, le=6)

    @model_validator(mode="after")
    def _column_for_sum(self) -> "PredicateQuery":
        if self.kind == "sum" and not self.column:
            raise ValueError("a sum needs a column")
        return self


Query = Annotated[Union[AggregateQuery, HistogramQuery, LinearScoreQuery, PredicateQuery],
                  Field(discriminator="type")]


def wire_query(query: Any) -> dict[str, Any]:
    """The whole query as JSON, as the broker forwards it to the connector (ciphertexts and predicate
    values included: the connector needs them to compute). Never audited: see ``jsonable_query``."""
    return query.model_dump(mode="json")


def jsonable_query(query: Any) -> dict[str, Any]:
    """What the audit log keeps of a query: its shape, never ciphertexts or predicate values."""
    data = query.model_dump(mode="json", exclude={"mask", "weights"})
    if "where" in data:
        data["where"] = [{"column": c["column"], "op": c["op"]} for c in data["where"]]
    if data.get("groups"):
        data["groups"] = len(data["groups"])
    if "categories" in data:
        data["categories"] = len(data["categories"])
    return data


# --------------------------------------------------------------------------- broker → connector
class ComputeAsset(StrictModel):
    id: Identifier
    version: int = Field(ge=1)
    content_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ComputeTerms(StrictModel):
    """What the broker's fresh policy decision and the agreement allow this one query."""
    epsilon: float = Field(ge=MIN_EPSILON_PER_QUERY, le=10)
    k: int = Field(ge=1, le=10**9)
    columns: list[ColumnName] | None = Field(None, max_length=4096)           # value columns (None: all)
    predicate_columns: list[ColumnName] | None = Field(None, max_length=4096)  # predicate / group-by columns
    measure: str = "pure"

    @model_validator(mode="after")
    def _known_measure(self) -> "ComputeTerms":
        if self.measure not in MEASURES:
            raise ValueError(f"measure is one of {', '.join(MEASURES)}")
        return self


class ComputeRequest(StrictModel):
    """The body of ``POST {connector}/compute/queries`` (``request``), bound by the compute message's
    ``body_sha256``."""
    query_id: Identifier
    agreement_id: Identifier
    consumer_id: Identifier
    asset: ComputeAsset
    context: ContextB64
    query: Query
    terms: ComputeTerms
