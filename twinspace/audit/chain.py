"""Reading ``Anchored`` events from the auditor's own EVM node (needs the ``[chain]`` extra: web3).

Only the event's ABI is needed to read anchors, so it is kept here: an auditor verifies with the light
install plus web3, without the broker or the compiled contract (tests check it matches the artifact).
"""

from __future__ import annotations

from typing import Any

from twinspace.audit.verify import AnchorRecord
from twinspace.extras import require

ANCHORED_EVENT_ABI: dict[str, Any] = {
    "anonymous": False, "name": "Anchored", "type": "event",
    "inputs": [{"indexed": True, "name": "tree_size", "type": "uint256"},
               {"indexed": False, "name": "root_hash", "type": "bytes32"},
               {"indexed": True, "name": "anchored_by", "type": "address"},
               {"indexed": False, "name": "anchored_at", "type": "uint256"}],
}


def read_anchor_events(w3, address: str, *, from_block: int = 0) -> list[AnchorRecord]:
    """``Anchored`` events straight from a node, in chain order (what an auditor trusts)."""
    c = w3.eth.contract(address=w3.to_checksum_address(address), abi=[ANCHORED_EVENT_ABI])
    events = sorted(c.events.Anchored.get_logs(from_block=from_block), key=lambda e: (e["blockNumber"], e["logIndex"]))
    out = []
    for e in events:
        tx = e["transactionHash"]
        out.append(AnchorRecord(int(e["args"]["tree_size"]), bytes(e["args"]["root_hash"]), int(e["blockNumber"]),
                                tx.to_0x_hex() if hasattr(tx, "to_0x_hex") else tx.hex()))
    return out


def read_anchors_from_node(rpc_url: str, address: str, *, timeout: float = 10) -> list[AnchorRecord]:
    web3 = require("web3", "chain", "reading anchors from a chain node")
    return read_anchor_events(web3.Web3(web3.Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout})), address)
