"""Errors raised by the participant-side connector (ingest, de-identification, publishing).

They carry a stable snake_case ``code`` like the broker's errors, and a message that names the
file, row or column at fault but never echoes row values of identifying columns.
"""

from __future__ import annotations


class ConnectorError(Exception):
    code = "connector_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class IngestError(ConnectorError):
    code = "ingest_error"


class ConfigError(ConnectorError):
    code = "deid_config_error"


class PrivacyError(ConnectorError):
    """The de-identified table does not meet the declared privacy model (k, l)."""

    code = "privacy_model_not_met"


class PublishError(ConnectorError):
    code = "publish_error"
