"""Consumer side of encrypted aggregate queries.

The consumer keeps the secret key; it sends the provider a *public* context (no secret key, no
Galois keys, no relinearisation keys) and an encrypted 0/1 mask packed SIMD-style into ciphertext
chunks of ``slots`` rows. The compute side returns ONE ciphertext whose slots are blinded by a
random vector summing to zero, so only the total (plus DP noise) is meaningful: the consumer sums
the slots here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tenseal as ts

from broker.privacy.params import ALLOWED, ParamSet, new_context


def center_mod(x: int, t: int) -> int:
    """Map an integer mod t to the symmetric range (-t/2, t/2]."""
    x %= t
    return x - t if x > t // 2 else x


@dataclass
class ConsumerKeys:
    context: ts.Context
    params: ParamSet

    @classmethod
    def create(cls, scheme: str = "bfv") -> "ConsumerKeys":
        if scheme not in ALLOWED:
            raise ValueError(f"scheme must be one of {sorted(ALLOWED)}")
        return cls(new_context(scheme), ALLOWED[scheme])

    @property
    def scheme(self) -> str:
        return self.params.scheme

    @property
    def slots(self) -> int:
        return self.params.slots

    def public_context_bytes(self) -> bytes:
        return self.context.serialize(save_public_key=True, save_secret_key=False,
                                      save_galois_keys=False, save_relin_keys=False)

    def _encrypt(self, vec: np.ndarray) -> bytes:
        if self.scheme == "bfv":
            return ts.bfv_vector(self.context, [int(x) for x in vec]).serialize()
        return ts.ckks_vector(self.context, vec.astype(float).tolist()).serialize()

    def encrypt_vector(self, values: np.ndarray) -> list[bytes]:
        """Encrypt any vector, zero-padded to whole chunks of ``slots``."""
        values = np.asarray(values)
        n = max(1, -(-len(values) // self.slots))
        padded = np.zeros(n * self.slots, dtype=np.int64 if self.scheme == "bfv" else float)
        padded[:len(values)] = values
        return [self._encrypt(padded[i * self.slots:(i + 1) * self.slots]) for i in range(n)]

    def encrypt_mask(self, mask: np.ndarray) -> list[bytes]:
        """Encrypt a row-selection mask (0/1 per row) as ceil(rows/slots) ciphertext chunks."""
        mask = np.asarray(mask)
        if mask.ndim != 1:
            raise ValueError("mask must be one-dimensional")
        return self.encrypt_vector(mask.astype(np.int64))

    def encrypt_weights(self, weights: np.ndarray) -> bytes:
        """Encrypt a private linear model (one weight per feature) for ``linear_score``."""
        weights = np.asarray(weights)
        if weights.ndim != 1 or len(weights) > self.slots:
            raise ValueError(f"weights must be a vector of at most {self.slots} entries")
        if self.scheme == "bfv" and not np.all(np.equal(np.mod(weights, 1), 0)):
            raise ValueError("BFV weights must be integers (scale them to fixed point first)")
        return self.encrypt_vector(weights)[0]

    def decrypt_slots(self, ct_bytes: bytes) -> np.ndarray:
        if self.scheme == "bfv":
            return np.array(ts.bfv_vector_from(self.context, ct_bytes).decrypt(), dtype=object)
        return np.array(ts.ckks_vector_from(self.context, ct_bytes).decrypt(), dtype=float)

    def decrypt_sum(self, ct_bytes: bytes) -> float | int:
        """Decrypt a blinded result and sum its slots: the only meaningful value is the total."""
        slots = self.decrypt_slots(ct_bytes)
        if self.scheme == "bfv":
            return center_mod(int(sum(int(x) for x in slots)), self.params.plain_modulus)
        return float(np.sum(slots))
