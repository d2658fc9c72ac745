"""The connector node: a provider's own data-plane process (docs/data-plane.md).

It holds the provider's key and rows, answers the broker's ownership challenges and manifest requests,
and is the policy enforcement point for pulls: every request carries a broker-signed transfer token and
the consumer's proof of possession; the connector asks the broker for a fresh decision, verifies the
agreement bundle offline, serves exactly the permitted rows and columns, and signs a receipt.
"""

from connectors.node.config import NodeConfig

__all__ = ["NodeConfig", "create_node_app"]


def create_node_app(config: NodeConfig):  # lazy: FastAPI only when an app is built
    from connectors.node.app import create_node_app as _create

    return _create(config)
