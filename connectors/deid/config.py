"""The declarative de-identification config (YAML or JSON). See docs/deidentification.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.errors import ConfigError

Technique = Literal["keep", "drop", "pseudonym", "range", "date", "geo_grid", "hierarchy", "noise"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnRule(_Strict):
    technique: Technique
    # pseudonym: HMAC-SHA256 keyed by a provider-held secret (never written in the config itself)
    secret_env: str | None = None
    secret_file: str | None = None
    context: str = ""
    length: int = Field(32, ge=16, le=64)
    # range: fixed-width buckets or explicit bin edges
    width: float | None = Field(None, gt=0)
    bins: list[float] | None = None
    # date: truncate to this granularity
    granularity: Literal["year", "month", "day", "hour"] | None = None
    # geo_grid: snap a coordinate to the centre of a grid cell of this size (column units, e.g. degrees)
    cell: float | None = Field(None, gt=0)
    # hierarchy: ARX-style file (value;level1;...;*) relative to the config, or an inline mapping
    hierarchy: str | dict[str, list[str]] | None = None
    level: int | None = Field(None, ge=0)
    delimiter: str = ";"
    # noise: Laplace(scale = sensitivity / epsilon)
    epsilon: float | None = Field(None, gt=0)
    sensitivity: float | None = Field(None, gt=0)
    seed: int | None = None
    round: bool = False

    @model_validator(mode="after")
    def _params(self) -> "ColumnRule":
        t = self.technique
        need = {"range": ("width or bins", self.width is not None or bool(self.bins)),
                "date": ("granularity", self.granularity is not None),
                "geo_grid": ("cell", self.cell is not None),
                "hierarchy": ("hierarchy and level", self.hierarchy is not None and self.level is not None),
                "noise": ("epsilon and sensitivity", self.epsilon is not None and self.sensitivity is not None)}
        if t in need and not need[t][1]:
            raise ValueError(f"technique {t!r} needs {need[t][0]}")
        if t == "range" and self.bins is not None and (len(self.bins) < 2 or sorted(self.bins) != self.bins):
            raise ValueError("bins must be at least two increasing edges")
        if t == "pseudonym" and self.secret_env and self.secret_file:
            raise ValueError("give secret_env or secret_file, not both")
        return self


class PrivacyModel(_Strict):
    k: int = Field(1, ge=1)
    l: int = Field(1, ge=1)  # noqa: E741 - the model's name
    max_suppression: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of rows that may be suppressed.")


class DeidConfig(_Strict):
    version: Literal[1] = 1
    quasi_identifiers: list[str] = Field(default_factory=list)
    sensitive_attributes: list[str] = Field(default_factory=list)
    privacy: PrivacyModel = Field(default_factory=PrivacyModel)
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    default: Literal["keep", "drop"] = "keep"
    base_dir: str | None = Field(None, description="Set by load_config: where relative hierarchy files live.")

    @model_validator(mode="after")
    def _consistent(self) -> "DeidConfig":
        overlap = set(self.quasi_identifiers) & set(self.sensitive_attributes)
        if overlap:
            raise ValueError(f"columns cannot be both quasi-identifier and sensitive: {sorted(overlap)}")
        for name in self.quasi_identifiers + self.sensitive_attributes:
            rule = self.columns.get(name)
            if rule and rule.technique == "drop":
                raise ValueError(f"column {name!r} is declared quasi-identifier/sensitive but dropped")
            if rule and rule.technique == "noise" and name in self.quasi_identifiers:
                raise ValueError(f"quasi-identifier {name!r} cannot take noise (use range or hierarchy)")
        if self.privacy.l > 1 and not self.sensitive_attributes:
            raise ValueError("l-diversity (l > 1) needs sensitive_attributes")
        if self.privacy.k > 1 and not self.quasi_identifiers:
            raise ValueError("k-anonymity (k > 1) needs quasi_identifiers")
        return self

    def rule(self, column: str) -> ColumnRule:
        if column in self.columns:
            return self.columns[column]
        if column in self.quasi_identifiers or column in self.sensitive_attributes:
            return ColumnRule(technique="keep")
        return ColumnRule(technique=self.default)

    def validate_columns(self, schema: pa.Schema) -> None:
        """Every column the config names must exist in the table."""
        names = set(schema.names)
        problems = []
        for label, cols in (("quasi_identifiers", self.quasi_identifiers),
                            ("sensitive_attributes", self.sensitive_attributes),
                            ("columns", list(self.columns))):
            unknown = [c for c in cols if c not in names]
            if unknown:
                problems.append(f"{label} names unknown column(s) {', '.join(map(repr, unknown))}")
        if problems:
            raise ConfigError("; ".join(problems) + f" (table columns: {', '.join(schema.names)})",
                              code="deid_unknown_column")

    def public_dict(self) -> dict[str, Any]:
        """The config as it goes into the report (no secret values are ever in it; paths reduced to names)."""
        d = self.model_dump(exclude_none=True, exclude={"base_dir"})
        for rule in d.get("columns", {}).values():
            if isinstance(rule.get("hierarchy"), str):
                rule["hierarchy"] = Path(rule["hierarchy"]).name
            if isinstance(rule.get("hierarchy"), dict):
                rule["hierarchy"] = f"inline ({len(rule['hierarchy'])} values)"
            if rule.get("secret_file"):
                rule["secret_file"] = Path(rule["secret_file"]).name
        return d


def parse_config(data: Any, base_dir: Path | None = None) -> DeidConfig:
    if not isinstance(data, dict):
        raise ConfigError("the de-identification config must be a mapping", code="deid_config_invalid")
    try:
        cfg = DeidConfig.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid de-identification config: {msgs}", code="deid_config_invalid") from exc
    if base_dir is not None:
        cfg.base_dir = str(base_dir)
    return cfg


def load_config(path: Path) -> DeidConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}", code="deid_config_unreadable") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - YAML and JSON raise different types
        raise ConfigError(f"config {path.name} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                          f"{str(exc).splitlines()[0]}", code="deid_config_invalid") from exc
    return parse_config(data, path.parent.resolve())
