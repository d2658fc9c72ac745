"""Encrypted queries computed on the provider's own rows (compute-to-data; docs/privacy-queries.md).

The broker decides and charges; this module computes, at the connector, on the table whose SHA-256
the agreement names. It has two halves, and the line between them is the privacy property:

- ``plan`` — every check that depends only on public facts (the request, the schema, the public row
  count, the ciphertexts, encodability). A failure is a ``TwinSpaceError`` with its own code, answered
  as a 4xx problem, and the broker charges nothing.
- the computation ``plan`` returns — reads the data, adds the DP noise here (OpenDP-based
  ``twinspace.privacy.mechanisms``) and encrypts the released values under the consumer's public
  context (``twinspace.privacy.he``). ``run`` turns *any* failure of it into ``refused`` with the reason
  kept for the receipt only: the broker charges it like an answer, so refusals are no oracle.

Pure: no HTTP, no broker. The route is ``connectors/node/compute_api.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc_

from twinspace.errors import BadRequest, Forbidden, TwinSpaceError, Unprocessable
from twinspace.privacy import he, mechanisms
from twinspace.privacy.queries import ComputeTerms, LinearScoreQuery, PredicateQuery, b64decode

MASK_QUERIES = ("aggregate", "histogram")  # refused here too: an encrypted mask cannot be proven 0/1


@dataclass
class Terms:
    """What the broker's policy decision and the agreement allow this query (signed by the broker)."""
    epsilon: float
    k: int
    columns: list[str] | None = None            # permitted value columns (None: every column)
    predicate_columns: list[str] | None = None  # columns a plaintext predicate / group-by may use
    measure: str = "pure"

    @classmethod
    def of(cls, terms: ComputeTerms) -> "Terms":
        return cls(epsilon=mechanisms.check_epsilon(terms.epsilon), k=max(1, int(terms.k)),
                   columns=list(terms.columns) if terms.columns is not None else None,
                   predicate_columns=list(terms.predicate_columns) if terms.predicate_columns is not None else None,
                   measure=terms.measure)


@dataclass
class Outcome:
    """What one computation produced: ``answered`` with ciphertexts, or ``refused`` with a reason that
    only the receipt carries (never the answer)."""
    outcome: str                                   # "answered" | "refused"
    rows: int
    results: dict[str, bytes] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def result_sha256(self) -> dict[str, str]:
        return {name: hashlib.sha256(ct).hexdigest() for name, ct in self.results.items()}


def _column(table: pa.Table, terms: Terms, name: str, *, predicate: bool = False) -> pa.ChunkedArray:
    allowed = terms.predicate_columns if predicate and terms.predicate_columns is not None else terms.columns
    if name not in table.column_names or (allowed is not None and name not in allowed):
        raise Unprocessable(f"Column {name!r} is not available under this agreement.", code="column_not_permitted")
    return table.column(name)


def _numeric(table: pa.Table, terms: Terms, name: str) -> pa.ChunkedArray:
    column = _column(table, terms, name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise Unprocessable(f"Column {name!r} is not numeric.", code="column_not_numeric")
    return column


def _fixed(column: pa.ChunkedArray, scale: int) -> np.ndarray:
    """Reads data: the column in fixed point 10^scale (nulls and non-finite values → 0)."""
    return mechanisms.to_fixed_point(column.to_numpy(zero_copy_only=False).astype(float), scale)


_OPS = {"eq": pc_.equal, "ne": pc_.not_equal, "lt": pc_.less, "le": pc_.less_equal, "gt": pc_.greater,
        "ge": pc_.greater_equal}


def _conditions(table: pa.Table, terms: Terms, conditions) -> list[tuple[pa.ChunkedArray, str, Any]]:
    """Data-independent: every predicate column is permitted and every value casts to its type."""
    out = []
    for c in conditions:
        column = _column(table, terms, c.column, predicate=True)
        try:
            value = (pa.array(c.value).cast(column.type) if c.op == "in" else pa.scalar(c.value).cast(column.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise Unprocessable(f"The value for {c.column!r} does not match the column's type.",
                                code="invalid_predicate") from None
        out.append((column, c.op, value))
    return out


def _where(n: int, conditions: list[tuple[pa.ChunkedArray, str, Any]]) -> np.ndarray:
    """Reads data: the rows the predicate selects."""
    selected = np.ones(n, dtype=bool)
    for column, op, value in conditions:
        hit = pc_.is_in(column, value_set=value) if op == "in" else _OPS[op](column, value)
        selected &= pc_.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return selected


def _codes(column: pa.ChunkedArray, labels: list[str]) -> np.ndarray:
    """Row → index of its label in ``labels``; rows matching none (and nulls) → len(labels)."""
    text = pc_.cast(column, pa.string()).to_pylist()
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, len(labels)) if v is not None else len(labels) for v in text], dtype=np.int64)


def _scaled(scale: int, names: list[str]) -> dict[str, Any]:
    """Which results are in fixed point (the consumer divides them by 10^scale), for both schemes."""
    return {"scale": scale, "scaled": names} if scale else {"scale": 0, "scaled": []}


# --------------------------------------------------------------------------- plan (no data) + compute
def _plan(ctx: he.PublicContext, query, table: pa.Table, terms: Terms) -> Callable[[], tuple[dict, dict]]:
    """Every check that depends only on public facts (schema, row count, the request), with its own code
    and no charge; returns the computation, which reads data and may then only fail as ``query_refused``."""
    n, measure = table.num_rows, terms.measure
    if getattr(query, "type", None) in MASK_QUERIES:
        raise Forbidden("Encrypted-mask queries are not offered; use a predicate or a linear score.",
                        code="encrypted_mask_not_allowed")
    if isinstance(query, PredicateQuery):
        conditions = _conditions(table, terms, query.where)
        value_column = _numeric(table, terms, query.column) if query.kind == "sum" else None
        bound = mechanisms.fixed_bound(query.bound, query.scale) if query.kind == "sum" else 1
        he.check_encodable(ctx, n, bound, terms.epsilon)

        def run() -> tuple[dict, dict]:
            selected = _where(n, conditions)
            values = _fixed(value_column, query.scale) if value_column is not None else np.zeros(n, np.int64)
            released = mechanisms.release_predicate(values, selected, kind=query.kind, bound=bound, k=terms.k,
                                                    cost=terms.epsilon, measure=measure)
            return ({query.kind: he.encrypt_result(ctx, released)},
                    _scaled(query.scale if query.kind == "sum" else 0, ["sum"] if query.kind == "sum" else []))
        return run
    if isinstance(query, LinearScoreQuery):
        weights = b64decode(query.weights, "weights ciphertext")
        he.check_weights(ctx, weights)
        columns = [_numeric(table, terms, f) for f in query.features]
        bound = mechanisms.fixed_bound(query.bound, query.scale)
        he.check_encodable(ctx, n, bound * len(columns), terms.epsilon)
        group_column = _column(table, terms, query.group_by, predicate=True) if query.group_by else None
        labels = list(dict.fromkeys(query.groups or []))
        if group_column is None and n < terms.k:  # n is public: a data-independent refusal
            raise Forbidden("The asset has fewer rows than the agreement's minimum cohort.", code="cohort_too_small")

        def run() -> tuple[dict, dict]:
            x = np.stack([_fixed(c, query.scale) for c in columns], axis=1)
            codes = _codes(group_column, labels) if group_column is not None else None
            released = mechanisms.release_group_sums(x, codes, len(labels), bound=bound, k=terms.k,
                                                     cost=terms.epsilon, measure=measure)
            names = labels if group_column is not None else ["total"]
            out = {names[g]: he.linear_score(ctx, weights, sums) for g, sums in sorted(released.items())}
            return out, _scaled(query.scale, list(out))
        return run
    raise BadRequest("Unknown query type.", code="invalid_query")  # pragma: no cover - pydantic refuses first


def plan(ctx: he.PublicContext, query, table: pa.Table, terms: Terms) -> Callable[[], Outcome]:
    """The data-independent half (raises ``TwinSpaceError``: a 4xx, not charged); returns the
    computation, which never raises: every failure after reading data is ``refused``."""
    compute = _plan(ctx, query, table, terms)
    rows = table.num_rows

    def run() -> Outcome:
        try:
            results, facts = compute()  # reads data: from here on every outcome is charged
        except TwinSpaceError as exc:
            return Outcome("refused", rows, reason=getattr(exc, "reason", None) or exc.code)
        except Exception as exc:  # noqa: BLE001 - e.g. an encoder error on a data-dependent value
            return Outcome("refused", rows, reason=type(exc).__name__)
        return Outcome("answered", rows, results=results, facts=facts)
    return run


def run(ctx: he.PublicContext, query, table: pa.Table, terms: Terms) -> Outcome:
    """``plan`` then compute: a ``TwinSpaceError`` before any data is read, an ``Outcome`` after."""
    return plan(ctx, query, table, terms)()
