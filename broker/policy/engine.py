"""Policy decision points. Both engines evaluate the same Rego sources on the same input and
fail closed: a compile error, an evaluation error, an unreachable or slow engine is a deny."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from urllib.parse import urlparse

from broker.canonical import canonical_sha256
from broker.policy.library import PolicySource


@dataclass(frozen=True)
class Decision:
    allow: bool
    reasons: list[str]
    obligations: dict[str, Any] = field(default_factory=dict)
    policy_id: str = ""
    policy_version: str = ""
    input_hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"allow": self.allow, "reasons": self.reasons, "obligations": self.obligations,
                "policy_id": self.policy_id, "policy_version": self.policy_version, "input_hash": self.input_hash}


class PolicyError(Exception):
    """The engine could not produce a decision (compile error, evaluation error, unreachable)."""


def to_decision(source: PolicySource, document: Any, input_hash: str) -> Decision:
    """Read a policy's ``decision`` document; anything malformed is a deny."""
    if not isinstance(document, dict) or not isinstance(document.get("allow"), bool):
        return Decision(False, ["the policy produced no decision (deny by default)"], {}, source.policy_id,
                        source.version, input_hash)
    reasons = sorted(str(r) for r in document.get("deny") or [])
    allow = document["allow"] and not reasons
    obligations = document.get("obligations") if isinstance(document.get("obligations"), dict) else {}
    return Decision(allow, reasons, obligations, source.policy_id, source.version, input_hash)


def fail_closed(source: PolicySource, input_hash: str, why: str) -> Decision:
    return Decision(False, [f"policy engine error: {why} (fail closed)"], {}, source.policy_id, source.version,
                    input_hash)


class PolicyEngine(Protocol):
    name: str

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        """Return the policy's ``decision`` document, or raise PolicyError."""


def decide_with(engine: PolicyEngine, source: PolicySource, input_doc: dict[str, Any]) -> Decision:
    input_hash = canonical_sha256(input_doc)
    try:
        document = engine.evaluate(source, input_doc)
    except PolicyError as exc:
        return fail_closed(source, input_hash, str(exc))
    except Exception as exc:  # noqa: BLE001 - any engine failure must deny, never allow
        return fail_closed(source, input_hash, type(exc).__name__)
    return to_decision(source, document, input_hash)


class EmbeddedEngine:
    """regopy (rego-cpp) in-process. Each policy version is compiled once into a bundle (rego-cpp's
    compiled form, ~10x faster than interpreting the query each time) and reused; a lock per
    interpreter because rego-cpp interpreters are not thread-safe."""

    name = "embedded"

    def __init__(self, shared_modules: dict[str, str]):
        self.shared_modules = shared_modules
        self._cache: dict[tuple[str, str], tuple[Any, Any, threading.Lock]] = {}
        self._cache_lock = threading.Lock()

    def compile(self, source: PolicySource):
        """(interpreter, bundle) for ``data.<package>.decision``; PolicyError if it does not compile."""
        from regopy import Interpreter

        interpreter = Interpreter()
        try:
            for name, rego in self.shared_modules.items():
                interpreter.add_module(name, rego)
            interpreter.add_module(source.module_name, source.rego)
            bundle = interpreter.build(f"data.{source.package}.decision")
        except Exception as exc:  # noqa: BLE001
            raise PolicyError(f"policy {source.policy_id} {source.version} does not compile: "
                              f"{str(exc).strip()[:400]}") from None
        return interpreter, bundle

    def _compiled(self, source: PolicySource):
        key = (source.policy_id, source.version)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = (*self.compile(source), threading.Lock())
            with self._cache_lock:
                cached = self._cache.setdefault(key, cached)
        return cached

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        interpreter, bundle, lock = self._compiled(source)
        with lock:
            interpreter.set_input(input_doc)
            output = interpreter.query_bundle(bundle)
        if not output.results or not output.results[0].expressions:
            return None  # undefined: no decision, which the caller turns into a deny
        return output.results[0].expressions[0]


class OpaServerEngine:
    """An OPA server through its REST Data API (opa-python-client): modules are pushed once per
    version with ``PUT /v1/policies/{id}``, decisions read with ``POST /v1/data/{package}/decision``."""

    name = "opa"

    def __init__(self, url: str, shared_modules: dict[str, str], timeout: float = 1.5, token: str | None = None):
        from opa_client.opa import OpaClient

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"TWINSPACE_OPA_URL must be an http(s) URL, got {url!r}")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.client = OpaClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https", timeout=timeout,
                                retries=0, token=token)
        self.shared_modules = shared_modules
        self._pushed: set[str] = set()
        self._lock = threading.Lock()

    def _push(self, module_id: str, rego: str) -> None:
        if module_id in self._pushed:
            return
        with self._lock:
            if module_id not in self._pushed:
                self.client.update_policy_from_string(rego, module_id, rego_compat=False)
                self._pushed.add(module_id)

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        try:
            for name, rego in self.shared_modules.items():
                self._push("twinspace/" + name.removesuffix(".rego"), rego)
            self._push(source.module_name.removesuffix(".rego"), source.rego)
            response = self.client.query_rule(input_doc, source.package.replace(".", "/"), "decision")
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, 4xx/5xx, bad JSON
            with self._lock:
                self._pushed.clear()  # the server may have restarted without our modules
            raise PolicyError(f"OPA server unavailable or failed: {type(exc).__name__}") from None
        return response.get("result") if isinstance(response, dict) else None


class PolicyDecisionPoint:
    """Resolves a policy id (and version) to its source and asks the configured engine."""

    def __init__(self, engine: PolicyEngine, resolve: Callable[[str, str | None], PolicySource]):
        self.engine = engine
        self.resolve = resolve

    def decide(self, policy_id: str, input_doc: dict[str, Any], version: str | None = None) -> Decision:
        try:
            source = self.resolve(policy_id, version)
        except Exception as exc:  # noqa: BLE001 - an unknown policy is a deny, with the reason
            missing = PolicySource(policy_id, version or "", "", "")
            return fail_closed(missing, canonical_sha256(input_doc), str(exc) or type(exc).__name__)
        return decide_with(self.engine, source, input_doc)


