"""Allow-listed homomorphic-encryption parameter sets (all ~128-bit security, HE standard).

Shared by the consumer client (``twinspace/client/query.py``) and the compute side
(``twinspace/privacy/he.py``). A public context is accepted only if its SEAL ``parms_id`` (a hash of
scheme, poly-modulus degree, coefficient moduli and plain modulus) equals the one of a reference
context built from this list, so nothing but these exact parameter sets gets through.

TenSEAL is imported by the functions that build or read a context, not by this module: the request
models (``twinspace/privacy/queries.py``) need only the sizes below, and the broker loads them at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tenseal as ts


@dataclass(frozen=True)
class ParamSet:
    name: str
    scheme: str                 # "bfv" | "ckks"
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]  # () = SEAL BFVDefault (218 bits for N=8192)
    plain_modulus: int | None = None      # BFV only
    global_scale: float | None = None     # CKKS only

    @property
    def slots(self) -> int:
        """SIMD slots per ciphertext: N for BFV batching, N/2 for CKKS."""
        return self.poly_modulus_degree if self.scheme == "bfv" else self.poly_modulus_degree // 2


# 40-bit batching prime (t ≡ 1 mod 2N): exact sums/counts up to ±5.4e11 per query.
BFV_PLAIN_MODULUS = 1099510054913

ALLOWED: dict[str, ParamSet] = {
    "bfv": ParamSet("bfv-8192", "bfv", 8192, (), plain_modulus=BFV_PLAIN_MODULUS),
    "ckks": ParamSet("ckks-8192", "ckks", 8192, (60, 40, 40, 60), global_scale=2.0 ** 40),
}

# Request caps (bytes). A BFV-8192 public context is ~0.5 MiB, CKKS-8192 ~1.8 MiB; one mask chunk
# ciphertext ~0.4 MiB. 128 MiB of mask covers ~1M rows with either scheme.
MAX_CONTEXT_BYTES = 4 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 2 * 1024 * 1024
MAX_REQUEST_BYTES = 128 * 1024 * 1024


def new_context(scheme: str) -> ts.Context:
    """A fresh (private) TenSEAL context for an allow-listed scheme."""
    import tenseal as ts

    p = ALLOWED[scheme]
    if p.scheme == "bfv":
        return ts.context(ts.SCHEME_TYPE.BFV, p.poly_modulus_degree, plain_modulus=p.plain_modulus)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, p.poly_modulus_degree, coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes))
    ctx.global_scale = p.global_scale
    return ctx


@lru_cache(maxsize=None)
def reference_parms_id(scheme: str) -> tuple[int, ...]:
    return parms_id(new_context(scheme))


def parms_id(ctx: ts.Context) -> tuple[int, ...]:
    return tuple(ctx.seal_context().data.key_parms_id())


def identify(ctx: ts.Context) -> ParamSet | None:
    """The allow-listed parameter set this context uses, or None."""
    pid = parms_id(ctx)
    for name, p in ALLOWED.items():
        if pid == reference_parms_id(name):
            if p.scheme == "ckks" and ctx.global_scale != p.global_scale:
                return None
            return p
    return None
