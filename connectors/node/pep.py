"""The policy enforcement point of a pull (no FastAPI): check the transfer token and the proof of
possession, ask the broker for a fresh decision, verify it and the agreement bundle offline, then
stream exactly the permitted rows and sign a receipt at the end of the body."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from connectors.node.config import NodeConfig
from connectors.node.encode import MEDIA_TYPES, apply_obligations, encode
from twinspace.agreements import verify_bundle
from twinspace.client.broker import BrokerError
from twinspace.crypto import public_key_from_b64
from twinspace.dataplane import DECISION, RECEIPT, merge_obligations, sign_message, verify_message
from twinspace.errors import (BadGateway, BadRequest, Forbidden, NotFound, ServiceUnavailable, TwinSpaceError,
                              Unauthorized)
from twinspace.transfer_tokens import decode_transfer_token, pop_kid, verify_pop

log = logging.getLogger("twinspace.connector")
TOKEN_HEADER = "TwinSpace-Transfer-Token"
POP_HEADER = "TwinSpace-PoP"
FORMATS = tuple(MEDIA_TYPES)


class BrokerProblem(TwinSpaceError):
    """A problem the broker answered, passed on to the consumer with its status and code."""

    def __init__(self, status: int, title: str, detail: str, code: str, extra: dict[str, Any] | None = None):
        super().__init__(detail, code=code, extra=extra)
        self.status = status
        self.title = title


def broker_call(config: NodeConfig, path: str, body: dict[str, Any]) -> Any:
    """POST to the broker; its 4xx problems become the same problem here, everything else a 502/503."""
    try:
        return config.broker_post(path, body)
    except BrokerError as exc:
        problem = exc.problem if isinstance(exc.problem, dict) else {}
        if exc.status == 503:  # the broker is shedding load (or lost a dependency): a retryable answer
            raise ServiceUnavailable("The broker is busy; try again later.", code="broker_busy",
                                     extra={"broker_code": exc.code}) from None
        if exc.status in (401,) or exc.status >= 500:
            raise BadGateway("The broker refused or failed the connector's request.", code="broker_error",
                             extra={"broker_status": exc.status, "broker_code": exc.code}) from None
        if 400 <= exc.status < 500:
            detail = str(problem.get("detail") or problem.get("title") or "The broker refused.")[:500]
            extra = {"reasons": problem["reasons"]} if isinstance(problem.get("reasons"), list) else None
            raise BrokerProblem(exc.status, str(problem.get("title") or "Refused by the broker"), detail,
                                str(exc.code), extra) from None
        raise BadGateway("The broker answered unexpectedly.", code="broker_error") from None
    except TwinSpaceError:
        raise
    except Exception as exc:  # noqa: BLE001 - transport errors
        raise ServiceUnavailable("The broker cannot be reached; try again later.", code="broker_unreachable",
                                 extra={"error": type(exc).__name__}) from None


@dataclass
class Pull:
    """Everything decided before the first byte: what to serve and what the receipt will say."""

    token: dict[str, Any]
    decision: dict[str, Any]
    table: pa.Table
    fmt: str
    content_hash: str
    receipt_id: str = field(default_factory=lambda: f"rcpt_{uuid.uuid4().hex}")

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]

    def headers(self) -> dict[str, str]:
        return {"X-TwinSpace-Receipt": self.receipt_id, "X-TwinSpace-Rows": str(self.rows),
                "X-TwinSpace-Content-Hash": self.content_hash, "Cache-Control": "no-store"}


class Enforcer:
    """The PEP of one node. Thread-safe (the stores lock; the bundle cache is guarded)."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self._bundles: dict[tuple[str, str], dict[str, Any]] = {}
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}  # agreement id -> (document sha256, document)
        self._lock = threading.Lock()

    # --- checks -------------------------------------------------------------------------------
    def check_token(self, token: str | None, pid: str) -> dict[str, Any]:
        cfg = self.config
        if not token:
            raise Unauthorized(f"A transfer token ({TOKEN_HEADER}) is required.", code="missing_transfer_token")
        claims = decode_transfer_token(token, cfg.broker_key(), issuer=cfg.broker_issuer, audience=cfg.endpoint,
                                       leeway=cfg.leeway)
        if claims.get("tpid") != pid:
            raise Unauthorized("The transfer token is for another transfer.", code="wrong_transfer")
        if claims.get("prv") != cfg.org_id:
            raise Unauthorized("The transfer token names another provider.", code="wrong_provider")
        asset = claims.get("asset")
        if not isinstance(asset, dict) or not isinstance(asset.get("content_hash"), str):
            raise Unauthorized("The transfer token names no asset content.", code="invalid_transfer_token")
        if not isinstance(claims.get("agr"), str):
            raise Unauthorized("The transfer token names no agreement.", code="invalid_transfer_token")
        return claims

    def claim_token(self, claims: dict[str, Any]) -> None:
        if not self.config.claims.claim(f"tok:{claims['jti']}", float(claims["exp"]) + self.config.leeway):
            raise Unauthorized("This transfer token was already used; request a new one.",
                               code="replayed_transfer_token")

    def check_pop(self, proof: str | None, claims: dict[str, Any], token: str, *, method: str, path: str) -> None:
        cfg = self.config
        if not proof:
            raise Unauthorized(f"A proof of possession ({POP_HEADER}) is required.", code="missing_pop")
        cnf = claims["cnf"]
        if pop_kid(proof) != cnf.get("kid"):
            raise Unauthorized("The proof of possession is signed by another key than the token's.",
                               code="invalid_pop")
        try:
            key = public_key_from_b64(str(cnf.get("x")))
        except (ValueError, TypeError):
            raise Unauthorized("The transfer token's key is not an Ed25519 key.", code="invalid_transfer_token") from None
        from twinspace.crypto import key_id

        if key_id(key) != cnf.get("kid"):
            raise Unauthorized("The transfer token's key does not match its thumbprint.", code="invalid_transfer_token")
        pop = verify_pop(proof, key, method=method, path=path, token=token, max_age=cfg.pop_max_age, leeway=cfg.leeway)
        if not cfg.claims.claim(f"pop:{pop['jti']}", time.time() + cfg.pop_max_age + 2 * cfg.leeway):
            raise Unauthorized("This proof of possession was already used; make a fresh one per request.",
                               code="replayed_pop")

    def decide(self, claims: dict[str, Any], pid: str, fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh broker decision bound to our nonce and this token; the verified agreement document."""
        cfg = self.config
        nonce = secrets.token_urlsafe(24)
        gen = claims.get("gen")
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise Unauthorized("The transfer token names no generation.", code="invalid_transfer_token")
        # The broker denies when the transfer has moved on (suspended, resumed, ...): earlier tokens die.
        request = {"transfer_id": pid, "token_jti": claims["jti"], "token_generation": gen, "nonce": nonce,
                   "format": fmt}
        with self._lock:
            held = self._held.get(str(claims["agr"]))
        if held is not None:
            request["agreement_sha256"] = held[0]  # verified before: the broker need not send the bundle
        answer = broker_call(cfg, "/dataplane/decisions", request)
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), str):
            raise BadGateway("The broker's decision answer is malformed.", code="invalid_decision")
        try:
            decision = verify_message(answer["decision"], cfg.broker_key(), DECISION, audience=cfg.endpoint,
                                      issuer=cfg.broker_issuer, leeway=cfg.leeway)
        except Unauthorized as exc:
            raise BadGateway(f"The broker's decision does not verify ({exc.code}).", code="invalid_decision") from None
        expected = {"nonce": nonce, "token_jti": claims["jti"], "tpid": pid, "agr": claims["agr"],
                    "sub": claims["sub"]}
        wrong = [k for k, v in expected.items() if decision.get(k) != v]
        if wrong:
            raise BadGateway(f"The broker's decision is not for this request ({', '.join(wrong)}).",
                             code="invalid_decision")
        if decision.get("allow") is not True:
            reasons = decision.get("reasons") if isinstance(decision.get("reasons"), list) else []
            raise Forbidden("Access denied by the policy decision: " + ("; ".join(map(str, reasons)) or "no reason given"),
                            code="access_denied", extra={"reasons": reasons, "decision_id": decision.get("decision_id")})
        signed_sha = decision.get("agreement_sha256")
        if answer.get("agreement") is None and held is not None and signed_sha == held[0]:
            document = self.check_document(held[1], claims)  # the broker signed that it decided on this document
        else:
            document = self.check_bundle(answer.get("agreement"), claims)
            if signed_sha is not None and answer["agreement"].get("document_sha256") != signed_sha:
                raise BadGateway("The agreement bundle is not the one the decision names.", code="invalid_agreement")
            with self._lock:
                if len(self._held) > 4096:
                    self._held.clear()
                self._held[str(claims["agr"])] = (answer["agreement"].get("document_sha256"), document)
        return decision, document

    def check_bundle(self, bundle: Any, claims: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        if not isinstance(bundle, dict) or not isinstance(bundle.get("document"), dict):
            raise BadGateway("The broker sent no agreement bundle.", code="invalid_agreement")
        counter = bundle.get("countersignature") if isinstance(bundle.get("countersignature"), dict) else {}
        cache_key = (str(claims["agr"]), f"{bundle.get('document_sha256')}:{counter.get('signature')}")
        with self._lock:
            cached = self._bundles.get(cache_key)
        if cached is None:
            report = verify_bundle(bundle, trusted_broker_keys=[cfg.broker_key_b64()])
            if not report["valid"]:
                raise BadGateway("The agreement bundle does not verify: " + "; ".join(report["errors"][:3]),
                                 code="invalid_agreement")
            cached = bundle["document"]
            with self._lock:
                if len(self._bundles) > 1024:
                    self._bundles.clear()
                self._bundles[cache_key] = cached
        return self.check_document(cached, claims)

    def check_document(self, doc: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        """The verified agreement names this token's agreement, consumer, provider and asset version."""
        cfg = self.config
        asset = doc.get("asset") if isinstance(doc.get("asset"), dict) else {}
        token_asset = claims["asset"]
        problems = []
        if doc.get("id") != claims["agr"]:
            problems.append("agreement id")
        if doc.get("consumer_id") != claims["sub"]:
            problems.append("consumer")
        if doc.get("provider_id") != cfg.org_id:
            problems.append("provider")
        if asset.get("content_hash") != token_asset.get("content_hash"):
            problems.append("content hash")
        for k in ("id", "version"):
            if k in token_asset and asset.get(k) != token_asset.get(k):
                problems.append(f"asset {k}")
        if problems:
            raise Forbidden("The agreement does not match the transfer token (" + ", ".join(problems) + ").",
                            code="agreement_mismatch")
        return doc

    # --- the pull -------------------------------------------------------------------------------
    def authorise_pull(self, pid: str, *, token: str | None, proof: str | None, fmt: str,
                       columns: str | None, limit: int | None = None) -> Pull:
        """``limit``: the consumer wants only the first rows (a preview); never more than permitted."""
        cfg = self.config
        if fmt not in FORMATS:
            raise BadRequest(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.", code="invalid_format")
        if limit is not None and not 0 <= limit <= 10_000_000:
            raise BadRequest("limit is a row count of 0 or more.", code="invalid_limit")
        requested = None
        if columns is not None:
            requested = [c.strip() for c in columns.split(",") if c.strip()]
            if not requested or len(requested) > 1000 or any(len(c) > 256 for c in requested):
                raise BadRequest("columns is a comma-separated list of column names.", code="invalid_columns")
        claims = self.check_token(token, pid)
        # The proof is verified before anything is claimed (a stolen token without the key burns nothing);
        # then the proof's jti (a captured request replayed: replayed_pop), then the token's.
        self.check_pop(proof, claims, token or "", method="GET", path=f"{cfg.path_prefix}/dataplane/transfers/{pid}")
        self.claim_token(claims)
        decision, document = self.decide(claims, pid, fmt)
        content_hash = claims["asset"]["content_hash"]
        table = cfg.store.open(content_hash)  # lazy: read batch by batch while streaming
        if table is None:
            raise NotFound("The agreed content is not served by this connector.", code="data_not_found")
        obligations = merge_obligations(document.get("obligations") if isinstance(document.get("obligations"), dict)
                                        else None,
                                        decision.get("obligations") if isinstance(decision.get("obligations"), dict)
                                        else None,
                                        {"max_rows": limit} if limit is not None else None)
        table = apply_obligations(table, max_rows=obligations["max_rows"], columns=obligations["columns"],
                                  requested_columns=requested)
        return Pull(token=claims, decision=decision, table=table, fmt=fmt, content_hash=content_hash)

    def receipt(self, pull: Pull, *, rows: int, nbytes: int, sha256: str, complete: bool) -> str:
        cfg = self.config
        claims = pull.token
        return sign_message(cfg.private_key, RECEIPT, issuer=cfg.org_id, audience=cfg.broker_issuer, claims={
            "jti": pull.receipt_id, "receipt_id": pull.receipt_id, "kind": "transfer",
            "decision_id": pull.decision.get("decision_id"), "agr": claims["agr"], "tpid": claims["tpid"],
            "sub": claims["sub"], "asset": claims["asset"], "rows": rows, "bytes": nbytes, "sha256": sha256,
            "format": pull.fmt, "complete": complete})

    def stream(self, pull: Pull) -> Iterator[bytes]:
        """The body; after the last chunk (before the generator ends) the receipt is signed and sent,
        or kept in the outbox. An interrupted body gets a receipt with ``complete: false``."""
        digest = hashlib.sha256()
        nbytes = 0
        complete = False
        try:
            for chunk in encode(pull.table, pull.fmt):
                digest.update(chunk)
                nbytes += len(chunk)
                yield chunk
            complete = True
        finally:
            try:
                receipt = self.receipt(pull, rows=pull.rows, nbytes=nbytes,
                                       sha256=digest.hexdigest(), complete=complete)
                if complete:
                    self.config.outbox.send(pull.receipt_id, receipt)
                else:
                    self.config.outbox.add(pull.receipt_id, receipt, "body interrupted")
            except Exception:  # noqa: BLE001 - the body was served; never fail after the fact
                log.exception("receipt for %s could not be recorded", pull.receipt_id)
