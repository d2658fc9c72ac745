"""Anchoring signed checkpoints on an EVM chain (contracts/AuditAnchor.vy) through web3.py.

Modes (``TWINSPACE_AUDIT_ANCHORING``): ``off``; ``embedded`` — an in-process py-evm chain
(eth-tester), for demos and tests, gone when the process exits; ``rpc`` — any JSON-RPC node
(anvil, Besu) at ``TWINSPACE_CHAIN_RPC_URL``; ``auto`` (default) — rpc when a URL is set, else off.

One anchor per interval, never per entry. A node that is down never blocks the log: the
attempt fails with ``chain_unavailable``, the daemon retries with back-off and the status
reports the anchoring lag (entries and seconds since the newest anchored checkpoint).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.audit.models import AuditAnchor, AuditChainContract
from twinspace.audit.chain import read_anchor_events
from twinspace.audit.verify import AnchorRecord
from twinspace.errors import ServiceUnavailable

log = logging.getLogger("broker.audit.anchor")
CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
ARTIFACT = CONTRACTS_DIR / "AuditAnchor.json"


class ChainUnavailable(ServiceUnavailable):
    default_code = "chain_unavailable"


@lru_cache
def load_artifact() -> dict[str, Any]:
    return json.loads(ARTIFACT.read_text())


def effective_mode(settings) -> str:
    mode = settings.audit_anchoring
    if mode == "auto":
        return "rpc" if settings.chain_rpc_url else "off"
    return mode


@dataclass(frozen=True)
class AnchorTx:
    tree_size: int
    root_hash: bytes
    tx_hash: str
    block_number: int


class Chain:
    """A web3 connection and the anchor contract on it."""

    def __init__(self, w3, *, address: str | None = None, private_key: str | None = None, embedded: bool = False):
        self.w3 = w3
        self.embedded = embedded
        self._account = None
        if private_key:
            from eth_account import Account

            self._account = Account.from_key(private_key)
        self.address = w3.to_checksum_address(address) if address else None
        self._lock = threading.Lock()

    @classmethod
    def embedded_chain(cls) -> "Chain":
        from web3 import Web3
        from web3.providers.eth_tester import EthereumTesterProvider

        return cls(Web3(EthereumTesterProvider()), embedded=True)

    @classmethod
    def rpc(cls, url: str, *, address: str | None = None, private_key: str | None = None,
            timeout: float = 5.0) -> "Chain":
        from web3 import Web3

        return cls(Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout})), address=address,
                   private_key=private_key)

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def sender(self) -> str:
        if self._account is not None:
            return self._account.address
        accounts = self.w3.eth.accounts
        if not accounts:
            raise ChainUnavailable("The chain node has no unlocked account; set TWINSPACE_CHAIN_ACCOUNT_KEY_FILE.")
        return accounts[0]

    def _send(self, fn) -> Any:
        if self._account is None:
            tx_hash = fn.transact({"from": self.sender})
        else:
            tx = fn.build_transaction({"from": self._account.address,
                                       "nonce": self.w3.eth.get_transaction_count(self._account.address, "pending"),
                                       "chainId": self.chain_id})
            signed = self._account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def deploy(self) -> str:
        art = load_artifact()
        with self._lock:
            receipt = self._send(self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor())
            self.address = receipt["contractAddress"]
        return self.address

    def contract(self):
        if self.address is None:
            raise RuntimeError("no anchor contract address")
        return self.w3.eth.contract(address=self.address, abi=load_artifact()["abi"])

    def latest(self) -> tuple[int, bytes]:
        c = self.contract()
        return int(c.functions.latest_size().call()), bytes(c.functions.latest_root().call())

    def anchor(self, tree_size: int, root_hash: bytes) -> AnchorTx:
        with self._lock:
            receipt = self._send(self.contract().functions.anchor(tree_size, root_hash))
        return AnchorTx(tree_size, root_hash, receipt["transactionHash"].to_0x_hex()
                        if hasattr(receipt["transactionHash"], "to_0x_hex") else receipt["transactionHash"].hex(),
                        int(receipt["blockNumber"]))


def _connection_error(exc: BaseException) -> bool:
    causes = list(_chain(exc))
    names = {type(e).__name__ for e in causes}
    return bool(names & {"ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ProviderConnectionError",
                         "TimeExhausted", "MaxRetryError", "NewConnectionError", "ConnectionRefusedError"}) or \
        any(isinstance(e, OSError) for e in causes)


def _chain(exc: BaseException | None):
    seen = 0
    while exc is not None and seen < 20:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


class Anchorer:
    """Anchors the newest checkpoint for one broker process; remembers failures for the status."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = runtime.settings
        self.mode = effective_mode(self.settings)
        self._chain: Chain | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_attempt_at: datetime | None = None
        self.last_success_at: datetime | None = None
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def chain(self) -> Chain:
        if self._chain is not None:
            return self._chain
        if self.mode == "embedded":
            chain = Chain.embedded_chain()
            chain.deploy()
        elif self.mode == "rpc":
            key = None
            if self.settings.chain_account_key_file:
                key = Path(self.settings.chain_account_key_file).read_text().strip()
            chain = Chain.rpc(self.settings.chain_rpc_url, address=self.settings.chain_contract_address,
                              private_key=key)
            if chain.address is None:
                chain.address = self._remembered_or_deployed(chain)
        else:
            raise ChainUnavailable("Anchoring is off (TWINSPACE_AUDIT_ANCHORING).", code="anchoring_off")
        self._chain = chain
        return chain

    def _remembered_or_deployed(self, chain: Chain) -> str:
        chain_id = chain.chain_id
        with Session(self.runtime.engine) as session:
            row = session.get(AuditChainContract, chain_id)
            if row is not None and chain.w3.eth.get_code(chain.w3.to_checksum_address(row.address)):
                return row.address
        address = chain.deploy()
        try:
            with Session(self.runtime.engine) as session:
                existing = session.get(AuditChainContract, chain_id)
                if existing is not None:
                    existing.address = address
                    existing.deployed_at = datetime.now(timezone.utc)
                else:
                    session.add(AuditChainContract(chain_id=chain_id, address=address,
                                                   deployed_at=datetime.now(timezone.utc)))
                session.commit()
        except IntegrityError:  # another replica deployed at the same time: use theirs
            with Session(self.runtime.engine) as session:
                return session.get(AuditChainContract, chain_id).address
        log.info("deployed AuditAnchor at %s on chain %s", address, chain_id)
        return address

    def anchor_latest(self) -> dict[str, Any]:
        """Anchor the newest checkpoint if the chain does not have it yet."""
        from broker.audit.service import current_checkpoint

        with self._lock:
            self.last_attempt_at = datetime.now(timezone.utc)
            cp = None
            try:
                cp = current_checkpoint(self.runtime)
                chain = self.chain()
                on_chain, _ = chain.latest()
                if cp.tree_size <= on_chain:
                    result = {"anchored": False, "tree_size": on_chain, "reason": "already anchored"}
                else:
                    tx = chain.anchor(cp.tree_size, bytes.fromhex(cp.root_hash))
                    self._record(chain, tx)
                    result = {"anchored": True, "tree_size": tx.tree_size, "root_hash": cp.root_hash,
                              "tx_hash": tx.tx_hash, "block_number": tx.block_number, "chain_id": chain.chain_id,
                              "contract": chain.address}
            except ChainUnavailable as exc:
                if exc.code != "anchoring_off":
                    self._fail(exc.detail)
                raise
            except Exception as exc:  # noqa: BLE001 - a down or misbehaving node must not break the log
                if getattr(exc, "code", None) == "unknown_checkpoint":
                    raise
                if cp is not None and not _connection_error(exc) and "revert" in str(exc).lower():
                    try:  # another replica anchored this size (or a larger one) first: that is success
                        on_chain, _ = self._chain.latest() if self._chain else (0, b"")
                    except Exception:  # noqa: BLE001
                        on_chain = 0
                    if on_chain >= cp.tree_size:
                        self.failures, self.last_error = 0, None
                        self.last_success_at = datetime.now(timezone.utc)
                        return {"anchored": False, "tree_size": on_chain, "reason": "anchored by another replica"}
                    self._fail(f"anchor transaction rejected: {exc}")
                    raise ChainUnavailable(f"The anchor transaction was rejected: {exc}",
                                           code="anchor_rejected") from None
                self._fail(f"{type(exc).__name__}: {exc}")
                if self.mode == "rpc":
                    self._chain = None  # reconnect next time
                raise ChainUnavailable(f"The chain node is unavailable ({type(exc).__name__}); anchoring will be "
                                       "retried and the log keeps working.") from None
            self.failures = 0
            self.last_error = None
            self.last_success_at = datetime.now(timezone.utc)
            return result

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.last_error = message[:500]
        log.warning("audit anchoring failed (%d in a row): %s", self.failures, self.last_error)

    def _record(self, chain: Chain, tx: AnchorTx) -> None:
        with Session(self.runtime.engine) as session:
            session.add(AuditAnchor(chain_id=chain.chain_id, contract=chain.address, tree_size=tx.tree_size,
                                    root_hash=tx.root_hash.hex(), tx_hash=tx.tx_hash, block_number=tx.block_number,
                                    anchored_at=datetime.now(timezone.utc)))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()

    def retry_delay(self) -> float:
        base = self.settings.audit_anchor_interval_seconds
        return base if self.failures == 0 else min(base, 2.0 ** min(self.failures, 8))

    def events(self) -> list[AnchorRecord]:
        chain = self.chain()
        return read_anchor_events(chain.w3, chain.address)

    def status(self) -> dict[str, Any]:
        from broker.audit.service import latest_checkpoint

        with Session(self.runtime.engine) as session:
            cp = latest_checkpoint(session)
            last = session.scalars(select(AuditAnchor).order_by(AuditAnchor.anchored_at.desc(),
                                                                AuditAnchor.tree_size.desc()).limit(1)).first()
            if last is not None and self._chain is not None and self._chain.address:
                mine = session.scalars(select(AuditAnchor).where(AuditAnchor.contract == self._chain.address)
                                       .order_by(AuditAnchor.tree_size.desc()).limit(1)).first()
                last = mine or last
        now = datetime.now(timezone.utc)
        anchored = last.tree_size if last else 0
        lag_entries = max(0, (cp.tree_size if cp else 0) - anchored)
        lag_seconds = None
        if lag_entries:
            since = last.anchored_at if last else (cp.created_at if cp else now)
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            lag_seconds = round((now - since).total_seconds(), 3)
        return {"mode": self.mode, "enabled": self.enabled,
                "chain_id": last.chain_id if last else None, "contract": (self._chain.address if self._chain else
                                                                          (last.contract if last else None)),
                "latest_checkpoint": cp.tree_size if cp else 0, "anchored_tree_size": anchored,
                "anchored_root_hash": last.root_hash if last else None,
                "anchored_block": last.block_number if last else None,
                "anchored_tx": last.tx_hash if last else None,
                "lag_entries": lag_entries, "lag_seconds": lag_seconds,
                "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
                "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
                "last_error": self.last_error, "consecutive_failures": self.failures}


class AuditDaemon:
    """Background thread: sign checkpoints every interval; anchor the newest one every anchor interval."""

    def __init__(self, runtime):
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-daemon", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        from broker.audit.service import create_checkpoint

        s = self.runtime.settings
        anchorer = get_anchorer(self.runtime)
        cp_every = s.audit_checkpoint_interval_seconds
        next_cp = time.monotonic() + cp_every if cp_every > 0 else float("inf")
        next_anchor = time.monotonic() + s.audit_anchor_interval_seconds if anchorer.enabled else float("inf")
        while not self._stop.wait(min(3600.0, max(0.05, min(next_cp, next_anchor) - time.monotonic()))):
            now = time.monotonic()
            if now >= next_cp:
                try:
                    create_checkpoint(self.runtime)
                except Exception:  # noqa: BLE001 - reported in the log; the broker keeps serving
                    log.exception("audit checkpoint failed")
                next_cp = now + cp_every
            if now >= next_anchor:
                try:
                    anchorer.anchor_latest()
                except Exception:  # noqa: BLE001 - failures are in anchorer.status()
                    pass
                next_anchor = time.monotonic() + anchorer.retry_delay()


def get_anchorer(runtime) -> Anchorer:
    anchorer = runtime.__dict__.get("_audit_anchorer")
    if anchorer is None:
        anchorer = runtime.__dict__.setdefault("_audit_anchorer", Anchorer(runtime))
    return anchorer
