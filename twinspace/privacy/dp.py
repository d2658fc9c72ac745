"""The exact k-threshold rule, for releases that are not differentially private (twin profiles and
other k-anonymity style publications, ``connectors/twins/profiles.py``).

Encrypted queries do NOT use it: there the threshold is decided on a noisy count and a refusal is
charged (``twinspace/privacy/mechanisms.py``), because an exact threshold answered for free is an
oracle. Pure code.
"""

from __future__ import annotations

from twinspace.errors import BadRequest, Forbidden


def enforce_k_threshold(selected_rows: int, k: int) -> None:
    """Refuse cohorts smaller than k (k ≥ 1)."""
    if k < 1:
        raise BadRequest("k must be at least 1.", code="invalid_k")
    if selected_rows < k:
        raise Forbidden("The cohort has too few rows to be released.", code="cohort_too_small")
