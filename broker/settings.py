"""The one settings object. Every knob is an environment variable ``TWINSPACE_<NAME>``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWINSPACE_", extra="ignore")

    # --- foundation -------------------------------------------------------------
    data_dir: Path = Field(Path(".twinspace"), description="Where embedded state lives (SQLite file, broker key).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir. "
                                     "PostgreSQL: postgresql+psycopg://user@host/db")
    redis_url: str | None = Field(None, description="Redis URL for shared replay protection across replicas.")
    issuer: str = Field("twinspace-broker", description="Broker identity: `iss` of broker tokens and the "
                        "audience client assertions must name.")
    broker_key_file: Path | None = Field(None, description="Ed25519 PEM of the broker; default data_dir/broker_ed25519.pem.")
    access_token_ttl_seconds: int = Field(600, ge=30, le=3600)
    assertion_max_lifetime_seconds: int = Field(300, ge=10, le=300, description="Max exp-iat of a client assertion (≤ 5 min).")
    clock_skew_seconds: int = Field(30, ge=0, le=120)
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Request body limit for ordinary routes.")
    max_query_body_bytes: int = Field(134_217_728, ge=1024, description="Body limit for encrypted-query routes (/queries).")
    log_level: str = "INFO"

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("connector_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value):
        """A JSON list (as env vars carry it) or comma-separated CIDRs; each must parse, so a typo fails at
        start-up instead of silently admitting nothing (or everything)."""
        import ipaddress
        import json

        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        for net in value or []:
            ipaddress.ip_network(str(net), strict=False)
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'twinspace.db'}"

    @property
    def effective_broker_key_file(self) -> Path:
        return self.broker_key_file or self.data_dir / "broker_ed25519.pem"

    # --- server: pools, overload, shutdown, rate limits (broker/api, broker/storage; docs/operations.md) --
    db_pool_size: int = Field(16, ge=1, le=512, description="Requests that may use the database at once per "
                              "process (each holds at most one pooled connection for its unit of work). "
                              "Others wait without a thread or a connection.")
    db_pool_reserve: int = Field(4, ge=2, le=64, description="Extra pooled connections for the audit writer, the "
                                 "checkpoint daemon and nested units of work, so they never wait for requests.")
    db_pool_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Longest wait for a pooled connection; "
                                           "then 503 with Retry-After (never a wedge).")
    db_slot_timeout_seconds: float = Field(15.0, gt=0, le=120, description="Longest a request waits for its "
                                           "turn at the database before 503 with Retry-After.")
    worker_threads: int | None = Field(None, ge=4, le=1024, description="Thread-pool size for blocking work; "
                                       "default 2 x db_pool_size + 16, always more than db_pool_size.")
    retry_after_seconds: int = Field(2, ge=1, le=3600, description="Retry-After sent with 503 answers.")
    graceful_shutdown_seconds: float = Field(3.0, ge=0, le=60, description="On SIGTERM: how long in-flight "
                                             "requests may finish before the process exits anyway.")
    rate_limit_auth_ip: str = Field("300/minute", description="POST /auth/token per client IP (limits "
                                    "syntax, e.g. '20/second;300/minute'; empty: off).")
    rate_limit_auth_org: str = Field("120/minute", description="POST /auth/token per organisation.")
    rate_limit_data_ip: str = Field("", description="Data routes (/dataplane, /queries) per client IP.")
    rate_limit_data_org: str = Field("6000/minute", description="Data routes per organisation.")
    rate_limit_storage_url: str | None = Field(None, description="limits storage URI; default: redis_url when "
                                               "set (shared by replicas), else per-process memory.")

    # --- feature settings are added below, one block per feature ------------------

    # catalog
    catalog_max_upload_bytes: int = Field(536_870_912, ge=1024, description="Largest table a connector's "
                                          "manifest may announce (bytes).")
    catalog_min_k_natural_person: int = Field(5, ge=2, description="k-anonymity floor for natural-person assets.")
    dsp_participant_id: str | None = Field(None, description="DSP participantId of this connector (the "
                                           "catalog's participantId, agreements' assigner); default: issuer.")
    dsp_base_url: str | None = Field(None, description="Public base URL of the DSP endpoints (e.g. "
                                     "https://broker.example.org/dsp): catalog endpointURL and callbacks.")
    dsp_peer_hosts: list[str] = Field(default_factory=list, description="Hosts this broker sends DSP messages to "
                                          "(callbacks, remote providers; JSON list; '.example.org' admits subdomains; ['*'] any). "
                                          "Empty: none.")
    dsp_transfer_autostart: bool = Field(True, description="Start a requested DSP transfer at once when the "
                                         "agreement and a fresh policy decision allow it (broker-hosted data).")
    connector_allow_networks: list[str] = Field(default_factory=list, description="CIDRs of non-public "
                                                "addresses (private, loopback, link-local, CGNAT, ...) the broker "
                                                "may still call connectors at (JSON list, e.g. [\"127.0.0.0/8\"]). "
                                                "Empty: connectors must be at public addresses.")
    connector_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of each broker call "
                                             "to a connector (ownership, manifest, push, compute).")


    # policies (broker/policy; docs/policies.md)
    policies_dir: Path | None = Field(None, description="Rego library; default: the repository's policies/.")
    policy_bundle: Path | None = Field(None, description="A signed policy bundle (.tar.gz, `twinspace policy bundle "
                                       "build`) to decide with instead of policies_dir; the broker refuses to start "
                                       "if its signature does not verify with policy_bundle_key.")
    policy_bundle_key: str | None = Field(None, description="The bundle signer's Ed25519 public key (base64url, "
                                          "the JWK x form).")
    opa_url: str | None = Field(None, description="OPA server (REST Data API); unset: embedded Rego engine.")
    opa_timeout_seconds: float = Field(1.5, gt=0, le=30, description="OPA request timeout; a timeout is a deny.")

    # audit (broker/audit; docs/audit.md)
    audit_origin: str | None = Field(None, description="Checkpoint origin and signed-note key name of the audit "
                                     "log; default '<issuer>/audit'.")
    audit_checkpoint_interval_seconds: float = Field(10.0, ge=0, description="How often a replica signs a new "
                                                     "checkpoint when the log grew (0: only on demand).")
    audit_anchoring: str = Field("auto", pattern="^(auto|off|embedded|rpc)$", description="Anchor checkpoints on "
                                 "an EVM chain: off, embedded (in-process py-evm chain), rpc (chain_rpc_url); "
                                 "auto = rpc when chain_rpc_url is set, else off.")
    chain_rpc_url: str | None = Field(None, description="JSON-RPC URL of an EVM node (anvil, Besu) for anchoring.")
    chain_contract_address: str | None = Field(None, description="AuditAnchor contract; default: deploy one on "
                                               "first use and remember it in the database.")
    chain_account_key_file: Path | None = Field(None, description="Hex secp256k1 key that sends anchor "
                                                "transactions; default: the node's first unlocked account.")
    audit_anchor_interval_seconds: float = Field(60.0, ge=1, description="How often the newest checkpoint is "
                                                 "anchored (one transaction per interval, never per entry).")

    # contracts and transfers (broker/contracts, broker/transfer; docs/contracts.md)
    contract_default_validity_days: int = Field(30, ge=1, le=3660, description="Agreement validity when neither "
                                                "party names an end.")
    contract_max_validity_days: int = Field(366, ge=1, le=3660, description="Longest validity an agreement may have.")
    transfer_token_ttl_seconds: int = Field(300, ge=30, le=3600, description="Lifetime of a data-plane transfer "
                                            "token (bound to the agreement and the consumer key).")
    decision_lease_seconds: int = Field(30, ge=0, le=300, description="How long a connector may reuse one "
                                        "allow decision for further pulls of the same transfer (revocation is "
                                        "pushed to it at once; the lease bounds a push that does not arrive). "
                                        "0: a fresh decision per pull. Agreements with a row quota always get "
                                        "a fresh decision per pull.")
    revocation_push_timeout_seconds: float = Field(2.0, gt=0, le=30, description="Timeout of the revocation "
                                                   "push to a connector.")

    # privacy-preserving queries (broker/privacy; docs/privacy-queries.md). Policies override these per agreement.
    privacy_epsilon_per_query: float = Field(0.5, gt=0, le=10, description="Default epsilon per encrypted query "
                                             "when neither the policy nor the agreement names one.")
    privacy_budget_default: float = Field(10.0, gt=0, le=1000, description="Total epsilon of an agreement whose "
                                          "policy parameters name no privacy_budget.")
    privacy_min_cohort: int = Field(10, ge=1, le=100_000, description="Smallest cohort a plaintext predicate or "
                                    "group may select, unless the policy names min_cohort.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
