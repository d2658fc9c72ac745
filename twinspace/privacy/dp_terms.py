"""The differential-privacy terms every side checks before any mechanism runs: the neighbouring
relation's name, the privacy measures, the epsilon range per query and the single refusal.

Pure Python (no numpy, no OpenDP), so the broker's request models and its query authorisation import it
at start-up without loading the mechanisms; ``twinspace.privacy.mechanisms`` re-exports all of it.
"""

from __future__ import annotations

import math

from twinspace.errors import BadRequest, Forbidden

NEIGHBOURING = "substitution"
MEASURES = ("pure", "zcdp")          # pure ε-DP (discrete Laplace) | ρ-zCDP (discrete Gaussian)
MIN_EPSILON_PER_QUERY = 0.05         # below this a "refusal oracle" could hide behind huge noise margins
MAX_EPSILON_PER_QUERY = 10.0
REFUSED = "query_refused"            # the one refusal code once a query has read data


class QueryRefused(Forbidden):
    """The single refusal after data was read: the reason is not told (it would be a free oracle)."""

    def __init__(self, reason: str = "refused") -> None:
        super().__init__("The query was not answered. Its privacy cost was charged, as for an answer.",
                         code=REFUSED)
        self.reason = reason  # for the audit log only, never for the answer


def check_epsilon(epsilon: float, *, minimum: float = MIN_EPSILON_PER_QUERY) -> float:
    if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon)
            or not minimum <= epsilon <= MAX_EPSILON_PER_QUERY):
        raise BadRequest(f"epsilon per query must be in [{minimum:g}, {MAX_EPSILON_PER_QUERY:g}].",
                         code="invalid_epsilon")
    return float(epsilon)


def check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise BadRequest(f"The privacy measure must be one of {', '.join(MEASURES)}.", code="invalid_measure")
    return measure
