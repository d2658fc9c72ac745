"""Consumer side of encrypted aggregate queries.

The consumer keeps the secret key; it sends the provider a *public* context (no secret key, no
Galois keys, no relinearisation keys) and an encrypted 0/1 mask packed SIMD-style into ciphertext
chunks of ``slots`` rows. The compute side returns ONE ciphertext whose slots are blinded by a
random vector summing to zero, so only the total (plus DP noise) is meaningful: the consumer sums
the slots here.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

from twinspace.privacy.params import ALLOWED, ParamSet, identify, new_context


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

    def decrypt_vector(self, ct_bytes: bytes, n: int) -> list[float | int]:
        """The first ``n`` slots of an unblinded result (secure aggregation), centred for BFV."""
        slots = self.decrypt_slots(ct_bytes)[:n]
        if self.scheme == "bfv":
            return [center_mod(int(x), self.params.plain_modulus) for x in slots]
        return [float(x) for x in slots]

    # --- keeping the secret key on the consumer's machine ---------------------------------------
    def save(self, path: Path) -> Path:
        """Write the full context (with the secret key) to ``path``, mode 0600; it never leaves here."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                      save_relin_keys=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    @classmethod
    def load(cls, path: Path) -> "ConsumerKeys":
        ctx = ts.context_from(Path(path).read_bytes())
        if not ctx.is_private():
            raise ValueError(f"{path} holds no secret key")
        params = identify(ctx)
        if params is None:
            raise ValueError(f"{path} uses parameters that are not on the allow-list")
        return cls(ctx, params)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass
class QueryClient:
    """Encrypted queries through the broker with a consumer's ``BrokerClient``; decrypts locally.

    Each method returns the broker's answer with a ``values`` field holding the decrypted (noised)
    numbers, already divided back from BFV fixed point.
    """

    broker: Any  # twinspace.client.broker.BrokerClient
    keys: ConsumerKeys

    def _send(self, agreement_id: str, query: dict[str, Any], epsilon: float | None) -> dict[str, Any]:
        body = {"agreement_id": agreement_id, "context": _b64(self.keys.public_context_bytes()), "query": query}
        if epsilon is not None:
            body["epsilon"] = epsilon
        return self.broker.post("/queries", json=body)

    def _decoded(self, answer: dict[str, Any]) -> dict[str, Any]:
        divisor, scaled = 10 ** int(answer.get("scale") or 0), set(answer.get("scaled") or [])
        values = {}
        exact = answer.get("type") == "predicate"  # a noised integer, freshly encrypted
        for name, ct in answer["results"].items():
            value = self.keys.decrypt_sum(_unb64(ct))
            if exact and self.keys.scheme == "ckks":
                value = round(value)
            values[name] = value / divisor if name in scaled else value
        return {**answer, "values": values}

    def aggregate(self, agreement_id: str, column: str, mask, *, bound: float, scale: int = 0,
                  epsilon: float | None = None) -> dict[str, Any]:
        """Noised sum and count of ``column`` over the rows selected by the 0/1 ``mask`` (and their mean)."""
        chunks = [_b64(c) for c in self.keys.encrypt_mask(np.asarray(mask))]
        out = self._decoded(self._send(agreement_id, {"type": "aggregate", "column": column, "mask": chunks,
                                                      "bound": bound, "scale": scale}, epsilon))
        v = out["values"]
        if "sum" in v and "count" in v:
            v["mean"] = v["sum"] / v["count"] if v["count"] > 0 else None
        return out

    def histogram(self, agreement_id: str, column: str, categories: list[str], mask, *,
                  epsilon: float | None = None) -> dict[str, Any]:
        chunks = [_b64(c) for c in self.keys.encrypt_mask(np.asarray(mask))]
        answer = self._send(agreement_id, {"type": "histogram", "column": column, "categories": categories,
                                           "mask": chunks}, epsilon)
        return {**answer, "values": {k: self.keys.decrypt_sum(_unb64(ct)) for k, ct in answer["results"].items()}}

    def linear_score(self, agreement_id: str, features: list[str], weights, *, bound: float, scale: int = 0,
                     group_by: str | None = None, groups: list[str] | None = None,
                     epsilon: float | None = None) -> dict[str, Any]:
        """Σ_rows w·x per named group (or in total) for private weights ``w`` (BFV: integers). Groups whose
        noisy count is below the cohort threshold are absent from the answer."""
        body = {"type": "linear_score", "features": features, "weights": _b64(self.keys.encrypt_weights(
            np.asarray(weights))), "bound": bound, "scale": scale}
        if group_by:
            body["group_by"] = group_by
            body["groups"] = list(groups or [])
        return self._decoded(self._send(agreement_id, body, epsilon))

    def predicate(self, agreement_id: str, where: list[dict[str, Any]], *, kind: str = "count",
                  column: str | None = None, bound: float = 1.0, scale: int = 0,
                  epsilon: float | None = None) -> dict[str, Any]:
        body = {"type": "predicate", "kind": kind, "where": where, "bound": bound, "scale": scale}
        if column:
            body["column"] = column
        return self._decoded(self._send(agreement_id, body, epsilon))

    def budget(self, agreement_id: str) -> dict[str, Any]:
        return self.broker.get(f"/queries/budgets/{agreement_id}")

    # --- secure aggregation ------------------------------------------------------------------
    def open_round(self, agreement_ids: list[str], column: str, *, bound: float, scale: int = 0,
                   epsilon: float | None = None, min_providers: int | None = None) -> dict[str, Any]:
        body = {"agreement_ids": agreement_ids, "context": _b64(self.keys.public_context_bytes()),
                "column": column, "bound": bound, "scale": scale}
        if epsilon is not None:
            body["epsilon"] = epsilon
        if min_providers is not None:
            body["min_providers"] = min_providers
        return self.broker.post("/queries/aggregations", json=body)

    def round_result(self, round_id: str) -> dict[str, Any]:
        """The released total across providers: noised sum, count and their mean."""
        answer = self.broker.post(f"/queries/aggregations/{round_id}/result")
        total, count = self.keys.decrypt_vector(_unb64(answer["result"]), 2)
        scale = int(answer["spec"].get("scale") or 0)
        if self.keys.scheme == "ckks":  # providers encrypt integers (noised in fixed point) under either scheme
            total, count = round(total), round(count)
        if scale:
            total = total / 10 ** scale
        return {**answer, "values": {"sum": total, "count": count, "mean": total / count if count > 0 else None}}


def contribute_pending(provider: Any, tables: dict[str, Any]) -> list[dict[str, Any]]:
    """Provider side of secure aggregation, on the provider's machine: for each pending round naming one
    of its agreements, compute [noised sum, noised count] of the round's column from its own table
    (``tables``: asset id → pyarrow Table), encrypt under the consumer's public context and send it.
    The broker only ever sees the ciphertext."""
    from twinspace.privacy import he
    from twinspace.privacy.he import provider_statistics

    sent = []
    for rnd in provider.get("/queries/aggregations/pending")["items"]:
        pc = he.load_public_context(_unb64(rnd["context"]))
        spec = rnd["spec"]
        for item in rnd["to_contribute"]:
            table = tables.get(item["asset_id"])
            if table is None or spec["column"] not in table.column_names:
                continue
            # trust the signed agreement, not the round: never noise less than the agreement allows
            terms = provider.contract_agreement(item["agreement_id"]).get("policy_params") or {}
            if "epsilon_per_query" in terms and spec["epsilon"] > float(terms["epsilon_per_query"]) + 1e-12:
                raise ValueError(f"round {rnd['round_id']} asks epsilon {spec['epsilon']}, above the "
                                 f"{terms['epsilon_per_query']} of agreement {item['agreement_id']}")
            values = table.column(spec["column"]).to_numpy(zero_copy_only=False).astype(float)
            # the measure, too, comes from the signed agreement (under zCDP the cost is a rho)
            stats = provider_statistics(values, scheme=pc.scheme, bound=spec["bound"], scale=spec["scale"],
                                        epsilon=spec["epsilon"], measure=terms.get("privacy_measure", "pure"))
            ct = he.encrypt_statistics(pc, stats)
            sent.append(provider.post(f"/queries/aggregations/{rnd['round_id']}/contributions",
                                      json={"agreement_id": item["agreement_id"], "ciphertext": _b64(ct)}))
    return sent
