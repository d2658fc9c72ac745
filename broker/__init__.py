"""TwinSpace broker: the trusted intermediary of the digital-twin data space."""

__version__ = "0.1.0"
