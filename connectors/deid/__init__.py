"""De-identification on the provider's machine: declarative config, per-column techniques,
record suppression and privacy-model checks (k-anonymity, distinct l-diversity), with a report.

Pure code: no network, file access only for the tables and hierarchy files it is pointed at.
"""

from connectors.deid.config import ColumnRule, DeidConfig, PrivacyModel, load_config
from connectors.deid.engine import DeidResult, deidentify
from twinspace.privacy.kanonymity import PrivacyCheck, check_privacy

__all__ = ["ColumnRule", "DeidConfig", "PrivacyModel", "load_config", "DeidResult", "deidentify",
           "PrivacyCheck", "check_privacy"]
