"""Policy decision points. Both engines evaluate the same Rego sources and data on the same input
and fail closed: a compile error, an evaluation error, an unknown policy, an unreachable or slow
engine is a deny with a reason, never an allow.

    pdp = get_pdp(settings)                      # EmbeddedEngine, or OpaServerEngine if opa_url is set
    decision = pdp.decide("purpose-restricted", build_policy_input(...))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable
from urllib.parse import urlparse

from twinspace.canonical import canonical_sha256
from broker.policy.library import DEFAULT_DIR, Library, PolicySource, load_library

Resolver = Callable[[str, "str | None"], PolicySource]


@dataclass(frozen=True)
class Decision:
    allow: bool
    reasons: list[str]
    obligations: dict[str, Any] = field(default_factory=dict)
    policy_id: str = ""
    policy_version: str = ""
    input_hash: str = ""
    # OPA-style decision id: set once per decision by ``policy.service.decide``, in its audit entry too
    decision_id: str = ""
    # the audit entry ``policy.service.decide`` appended, kept so a refusal can re-append it durably
    # after the request's transaction (and that entry with it) is rolled back
    audit: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "allow": self.allow, "reasons": self.reasons,
                "obligations": self.obligations, "policy_id": self.policy_id, "policy_version": self.policy_version,
                "input_hash": self.input_hash}


class PolicyError(Exception):
    """The engine could not produce a decision (compile error, evaluation error, unreachable)."""


@runtime_checkable
class PolicyDecisionPoint(Protocol):
    """Anything that decides: ``decide(policy_id, input) -> Decision`` (deny on any failure)."""

    def decide(self, policy_id: str, input: dict[str, Any], version: str | None = None) -> Decision: ...


def to_decision(source: PolicySource, document: Any, input_hash: str) -> Decision:
    """Read a policy's ``decision`` document; anything malformed is a deny."""
    if not isinstance(document, dict) or not isinstance(document.get("allow"), bool):
        return Decision(False, ["the policy produced no decision (deny by default)"], {}, source.policy_id,
                        source.version, input_hash)
    raw = document.get("deny")
    if raw is not None and not isinstance(raw, list):
        return fail_closed(source, input_hash, "the policy's deny reasons are not a list")
    reasons = sorted(str(r) for r in raw or [])
    allow = document["allow"] and not reasons
    obligations = document.get("obligations") if isinstance(document.get("obligations"), dict) else {}
    return Decision(allow, reasons, obligations if allow else {}, source.policy_id, source.version, input_hash)


def fail_closed(source: PolicySource, input_hash: str, why: str) -> Decision:
    return Decision(False, [f"policy engine error: {why} (fail closed)"], {}, source.policy_id, source.version,
                    input_hash)


def builtin_resolver(library: Library) -> Resolver:
    def resolve(policy_id: str, version: str | None) -> PolicySource:
        source = library.builtins.get(policy_id)
        if source is None or version not in (None, source.version):
            raise LookupError(f"no policy {policy_id!r}" + (f" version {version}" if version else ""))
        return source
    return resolve


class _Engine:
    """What both engines share: resolution of policy ids and the fail-closed ``decide``."""

    name = "engine"

    DECISION_CACHE_SIZE = 4096

    def __init__(self, library: Library | None = None, resolve: Resolver | None = None):
        self.library = library or load_library()
        self.resolve = resolve or builtin_resolver(self.library)
        # Decisions are a pure function of (policy source, library, input): cached per canonical input
        # hash. Revocations and suspensions change the input (or are checked before deciding), so they
        # take effect at once; engine failures (fail closed) are never cached.
        self._decisions: dict[tuple[str, str, str, str], Decision] = {}
        self._decisions_lock = threading.Lock()

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def decide_source(self, source: PolicySource, input_doc: dict[str, Any]) -> Decision:
        try:
            input_hash = canonical_sha256(input_doc)
        except Exception as exc:  # noqa: BLE001 - an input that cannot be canonicalised is a deny
            return fail_closed(source, "", f"the input is not canonical JSON ({type(exc).__name__})")
        key = (source.policy_id, source.version, source.sha256, input_hash)
        cached = self._decisions.get(key) if self.DECISION_CACHE_SIZE else None
        if cached is not None:
            return cached
        try:
            document = self.evaluate(source, input_doc)
        except PolicyError as exc:
            return fail_closed(source, input_hash, str(exc))
        except Exception as exc:  # noqa: BLE001 - any engine failure must deny, never allow
            return fail_closed(source, input_hash, f"{type(exc).__name__} while evaluating")
        decision = to_decision(source, document, input_hash)
        if not self.DECISION_CACHE_SIZE:
            return decision
        with self._decisions_lock:
            if len(self._decisions) >= self.DECISION_CACHE_SIZE:
                self._decisions.pop(next(iter(self._decisions)))  # oldest first
            self._decisions[key] = decision
        return decision

    def decide(self, policy_id: str, input: dict[str, Any], version: str | None = None) -> Decision:
        try:
            source = self.resolve(policy_id, version)
        except Exception as exc:  # noqa: BLE001 - an unknown policy is a deny, with the reason
            missing = PolicySource(policy_id, version or "", "", "")
            detail = getattr(exc, "detail", None) or (exc.args[0] if exc.args else type(exc).__name__)
            return fail_closed(missing, canonical_sha256(input), str(detail))
        return self.decide_source(source, input)

    def with_resolver(self, resolve: Resolver) -> "_Engine":
        """The same engine (shared compiled cache / pushed modules) resolving ids differently."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.resolve = resolve
        return view


def decide_with(engine: _Engine, source: PolicySource, input_doc: dict[str, Any]) -> Decision:
    return engine.decide_source(source, input_doc)


class EmbeddedEngine(_Engine):
    """regopy (rego-cpp) in-process. Each policy version is compiled once into a bundle (rego-cpp's
    compiled form, ~10x faster than interpreting the query each time) and reused. rego-cpp
    interpreters are not thread-safe, so each compiled policy has a small pool of interpreters,
    one per concurrent caller (up to ``pool_size``; beyond that callers wait)."""

    name = "embedded"

    def __init__(self, library: Library | None = None, resolve: Resolver | None = None, pool_size: int = 4):
        super().__init__(library, resolve)
        self.pool_size = pool_size
        self._cache: dict[tuple[str, str, str], _Pool] = {}
        self._cache_lock = threading.Lock()

    def compile(self, source: PolicySource):
        """(interpreter, bundle) for ``data.<package>.decision``; PolicyError if it does not compile."""
        from broker.policy.rego import Interpreter

        interpreter = Interpreter()
        try:
            for name, rego in self.library.shared.items():
                interpreter.add_module(name, rego)
            if self.library.data:
                interpreter.add_data(self.library.data)
            interpreter.add_module(source.module_name, source.rego)
            bundle = interpreter.build(f"data.{source.package}.decision")
        except Exception as exc:  # noqa: BLE001
            raise PolicyError(f"policy {source.policy_id} {source.version} does not compile: "
                              f"{str(exc).strip()[:400]}") from None
        return interpreter, bundle

    def _pool(self, source: PolicySource) -> "_Pool":
        key = (source.policy_id, source.version, source.sha256)
        with self._cache_lock:
            pool = self._cache.get(key)
            if pool is None:
                pool = self._cache[key] = _Pool(lambda: self.compile(source), self.pool_size)
        return pool

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        from broker.policy.rego import rego_output_ok

        pool = self._pool(source)
        interpreter, bundle = pool.acquire()
        try:
            interpreter.set_input(input_doc)
            output = interpreter.query_bundle(bundle)
        finally:
            pool.release((interpreter, bundle))
        if not rego_output_ok(output._impl):
            raise PolicyError(f"evaluation error: {str(output).strip()[:300]}")
        if not output.results or not output.results[0].expressions:
            return None  # undefined: no decision, which the caller turns into a deny
        return output.results[0].expressions[0]


class _Pool:
    """Compiled interpreters for one policy version; compiles lazily, at most ``size`` of them."""

    def __init__(self, factory: Callable[[], Any], size: int):
        self.factory, self.size = factory, size
        self.idle: list[Any] = []
        self.created = 0
        self.cond = threading.Condition()

    def acquire(self):
        with self.cond:
            while not self.idle and self.created >= self.size:
                self.cond.wait()
            if self.idle:
                return self.idle.pop()
            self.created += 1
        try:
            return self.factory()  # compile outside the lock; a compile error propagates
        except BaseException:
            with self.cond:
                self.created -= 1
                self.cond.notify()
            raise

    def release(self, item) -> None:
        with self.cond:
            self.idle.append(item)
            self.cond.notify()


class OpaServerEngine(_Engine):
    """An OPA server through its REST Data API (opa-python-client 3.x): the data document is pushed
    with ``PUT /v1/data/{path}``, modules once per version with ``PUT /v1/policies/{id}``, and
    decisions read with ``POST /v1/data/{package path}/decision``. A push or query that fails
    (connection refused, timeout, 4xx/5xx, bad JSON) is a deny; everything is re-pushed next time."""

    name = "opa"
    DECISION_CACHE_SIZE = 0  # the OPA server is the authority: ask it every time

    def __init__(self, url: str, library: Library | None = None, timeout: float = 1.5, token: str | None = None,
                 resolve: Resolver | None = None):
        from opa_client.opa import OpaClient

        super().__init__(library, resolve)
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"TWINSPACE_OPA_URL must be an http(s) URL, got {url!r}")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.client = OpaClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https", timeout=timeout,
                                retries=0, token=token)
        self._pushed: set[str] = set()
        self._lock = threading.Lock()

    def _push_library(self) -> None:
        if "library" in self._pushed:
            return
        with self._lock:
            if "library" in self._pushed:
                return
            for path, document in self.library.data_files.items():  # the leaves, never a package prefix
                self.client.update_or_create_data(document, path)
            for name, rego in self.library.shared.items():
                self.client.update_policy_from_string(rego, name.removesuffix(".rego"), rego_compat=False)
            self._pushed.add("library")

    def _push(self, source: PolicySource) -> None:
        module_id = f"{source.module_name.removesuffix('.rego')}@{source.sha256[:16]}"
        if module_id in self._pushed:
            return
        with self._lock:
            if module_id not in self._pushed:
                self.client.update_policy_from_string(source.rego, source.module_name.removesuffix(".rego"),
                                                      rego_compat=False)
                self._pushed.add(module_id)

    def _query(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        self._push_library()
        self._push(source)
        return self.client.query_rule(input_doc, source.package.replace(".", "/"), "decision")

    def evaluate(self, source: PolicySource, input_doc: dict[str, Any]) -> Any:
        try:
            response = self._query(source, input_doc)
            if isinstance(response, dict) and "result" not in response:
                # Undefined: the server may have restarted and lost our modules. Push once more.
                with self._lock:
                    self._pushed.clear()
                response = self._query(source, input_doc)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, 4xx/5xx, bad JSON
            with self._lock:
                self._pushed.clear()  # the server may have restarted without our modules
            message = getattr(exc, "message", None) or type(exc).__name__
            raise PolicyError(f"OPA server unavailable or failed: {str(message)[:200]}") from None
        return response.get("result") if isinstance(response, dict) else None


def policies_dir(settings: Any) -> Path:
    """The Rego library: a verified signed bundle when one is configured, else the policies directory."""
    if getattr(settings, "policy_bundle", None):
        return loaded_bundle(settings)[0]
    return Path(settings.policies_dir) if getattr(settings, "policies_dir", None) else DEFAULT_DIR


def loaded_bundle(settings: Any) -> tuple[Path, dict[str, Any]]:
    """The configured bundle, verified and unpacked once per (file, key, data dir)."""
    return _bundle(Path(settings.policy_bundle), settings.policy_bundle_key or "", Path(settings.data_dir))


@lru_cache(maxsize=4)
def _bundle(bundle: Path, key: str, data_dir: Path) -> tuple[Path, dict[str, Any]]:
    from broker.policy.bundle import BundleError, extract_verified

    if not key:
        raise PolicyError("TWINSPACE_POLICY_BUNDLE is set but TWINSPACE_POLICY_BUNDLE_KEY is not: a bundle is "
                          "only loaded when its signature verifies.")
    try:
        return extract_verified(bundle, key, data_dir / "policy-bundles")
    except (BundleError, OSError) as exc:
        raise PolicyError(f"The policy bundle {bundle} is refused: {exc}") from None


def bundle_info(settings: Any) -> dict[str, Any] | None:
    """``{revision, keyid, sha256}`` of the loaded bundle, or None (rules from a directory)."""
    return loaded_bundle(settings)[1] if getattr(settings, "policy_bundle", None) else None


@lru_cache(maxsize=16)
def _engine(policies: Path, opa_url: str | None, timeout: float) -> _Engine:
    library = load_library(policies)
    return OpaServerEngine(opa_url, library, timeout=timeout) if opa_url else EmbeddedEngine(library)


def engine_for(settings: Any) -> _Engine:
    """One engine per configuration (process-wide), so compiled policies are reused across requests."""
    return _engine(policies_dir(settings), settings.opa_url, settings.opa_timeout_seconds)


def get_pdp(settings: Any, session: Any = None) -> PolicyDecisionPoint:
    """The configured decision point: built-in policies and operator uploads (current and pinned
    versions). With ``session`` uploads are read through it, else through a short-lived session."""
    from broker.policy import service

    return engine_for(settings).with_resolver(lambda pid, ver: service.resolve_source(session, settings, pid, ver))
