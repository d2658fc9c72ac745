# pragma version ~=0.4.3
"""
@title TwinSpace audit-log anchor
@notice Stores (tree size, root hash) of signed checkpoints of the TwinSpace audit log
        (an RFC 9162 Merkle tree). Only the deploying broker account may anchor, and every
        new anchor must cover a strictly larger tree than the previous one, so the anchored
        history is append-only. Each anchor emits `Anchored`, which auditors read from their
        own node.
"""

event Anchored:
    tree_size: indexed(uint256)
    root_hash: bytes32
    anchored_by: indexed(address)
    anchored_at: uint256

owner: public(immutable(address))
latest_size: public(uint256)
latest_root: public(bytes32)
anchor_count: public(uint256)
root_at: public(HashMap[uint256, bytes32])


@deploy
def __init__():
    owner = msg.sender


@external
def anchor(tree_size: uint256, root_hash: bytes32):
    """
    @notice Anchor the checkpoint (tree_size, root_hash).
    @dev Reverts unless called by the owner with tree_size > latest_size.
    """
    assert msg.sender == owner, "only the broker account may anchor"
    assert tree_size > self.latest_size, "tree size must grow strictly"
    self.latest_size = tree_size
    self.latest_root = root_hash
    self.root_at[tree_size] = root_hash
    self.anchor_count += 1
    log Anchored(tree_size=tree_size, root_hash=root_hash, anchored_by=msg.sender, anchored_at=block.timestamp)
