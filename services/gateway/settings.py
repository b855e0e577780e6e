"""Gateway settings, from SHOPSTREAM_GATEWAY_* (and the shared KAFKA_BOOTSTRAP_SERVERS, REDIS_URL)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from services.common.infra import kafka_field, redis_field
from services.common.metrics_http import DEFAULT_METRICS_HOST
from services.common.settings import check_addr, service_config
from services.common.tls import ChannelTls, ServerTls, check_pair, check_readable
from services.contract.limits import MAX_FILTER_ITEM_IDS, MAX_FUTURE_SKEW_S

AUTH_VAR = "SHOPSTREAM_GATEWAY_AUTH"
TOKENS_FILE_VAR = "SHOPSTREAM_GATEWAY_TOKENS_FILE"
TOKENS_VAR = "SHOPSTREAM_GATEWAY_TOKENS"


class GatewaySettings(BaseSettings):
    model_config = service_config("GATEWAY")

    addr: str = "127.0.0.1:50052"
    # Required: there is no sensible default for where the ranker runs.
    ranker_addr: str
    ranker_timeout_s: float = Field(0.15, gt=0)
    # Concurrent Recommend calls share RankBatch calls to the ranker (ranker_client.py).
    ranker_batching: bool = Field(True, description="coalesce concurrent Rank calls into RankBatch")
    ranker_batch_max: int = Field(64, ge=1, description="most Rank requests in one RankBatch call")
    ranker_max_in_flight: int = Field(1, ge=1, description="RankBatch calls out at once; later requests queue")
    # Kept back from the client's own deadline for the fallback path.
    deadline_margin_s: float = Field(0.02, ge=0)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    max_exclude_ids: int = Field(500, ge=0, le=MAX_FILTER_ITEM_IDS)
    max_events_per_request: int = Field(500, ge=1)
    trending_pool: int = Field(500, ge=1, description="trending items read per fallback")
    trending_cache_s: float = Field(1.0, ge=0, description="how long the trending list is reused; 0 = read per request")
    redis_timeout_s: float = Field(0.1, gt=0, description="bound on each Redis read of a request")
    history_len: int = Field(200, ge=1)
    catalog_refresh_s: float = Field(1.0, gt=0)
    readiness_interval_s: float = Field(2.0, gt=0)
    executor_threads: int = Field(4, ge=1, description="threads for blocking Kafka publishes")
    metrics_port: int = Field(9104, ge=0, le=65535)
    metrics_host: str = Field(DEFAULT_METRICS_HOST, description="address /metrics listens on (0.0.0.0: every interface)")
    # At most the contract's own bound, which the event producer and the features worker apply.
    max_event_skew_s: float = Field(MAX_FUTURE_SKEW_S, ge=0, le=MAX_FUTURE_SKEW_S,
                                    description="how far ahead of this clock an event's occurred_at may be")
    # Who may call (services/common/auth.py, docs/security.md). "disabled" is for development only.
    auth: Literal["required", "disabled"] = Field(
        "required", description="'disabled' lets anyone call anything (development only)")
    tokens_file: Path | None = Field(None, description="JSON file of API clients: tokens, methods, rate limits")
    tokens: SecretStr | None = Field(None, description="the same JSON as the tokens file, inline")
    # TLS on the public port: plaintext unless a certificate is configured.
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) of the gRPC port; TLS when set")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA: when set, clients must present a "
                                                              "certificate it signed")
    # Mutual TLS to the ranker: its CA, and the gateway's client certificate.
    ranker_tls_ca_file: Path | None = Field(None, description="PEM CA that signed the ranker's certificate; "
                                                              "TLS to the ranker when set")
    ranker_tls_cert_file: Path | None = Field(None, description="PEM client certificate presented to the ranker")
    ranker_tls_key_file: Path | None = Field(None, description="PEM private key of ranker_tls_cert_file")
    ranker_tls_server_name: str = Field("", description="name the ranker's certificate carries, if not the "
                                                        "host of ranker_addr")
    health_addr: str = Field("", description="extra plaintext host:port serving only grpc.health.v1 (for "
                                             "probes that cannot speak TLS); empty = none")
    # The HTTP/JSON API and the demo storefront beside gRPC (http_api.py, docs/api.md).
    http_addr: str = Field("", description="host:port of the HTTP/JSON API and demo page (port 0 picks one); "
                                           "empty = no HTTP server")
    http_cors_origins: str = Field("", description="comma-separated origins whose browser pages may call the HTTP "
                                                   "API ('*' = any); empty = none")
    http_demo: bool = Field(True, description="serve the demo storefront page at / of the HTTP server")
    prometheus_url: str = Field("", description="URL of the ops view (Prometheus) that the demo page links to; "
                                                "empty = none")
    # The closed loop (docs/experiments.md): impressions to Kafka, experiments from Redis, shadow scoring.
    impressions_enabled: bool = Field(True, description="publish every served list to the impressions topic")
    impressions_buffer: int = Field(10_000, ge=1, description="served lists held for publishing; more are "
                                                              "dropped (and counted), never waited for")
    impressions_batch_max: int = Field(500, ge=1, description="most impressions in one publish")
    impressions_linger_s: float = Field(0.1, ge=0, description="how long impressions gather before a publish "
                                                                "(unless batch_max are waiting)")
    experiments_poll_s: float = Field(1.0, gt=0, description="how often the experiment definitions in Redis "
                                                             "are checked for changes")
    shadow_sample_rate: float = Field(1.0, ge=0, le=1, description="share of requests also scored by a running "
                                                                   "experiment's shadow variant")
    shadow_max_in_flight: int = Field(64, ge=1, description="shadow scorings out at once; more are skipped "
                                                            "(and counted)")
    grace_s: float = Field(5.0, ge=0)
    log_level: str = "INFO"
    # Bound on connecting to / waiting for Kafka metadata in TrackEvents.
    kafka_timeout_s: float = Field(5.0, gt=0)
    kafka_bootstrap_servers: str = kafka_field()
    redis_url: str = redis_field()

    @field_validator("addr", "ranker_addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        return check_addr(value)

    @field_validator("health_addr", "http_addr")
    @classmethod
    def _check_optional_addr(cls, value: str) -> str:
        return check_addr(value) if value else value

    @field_validator("tokens_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file", "ranker_tls_ca_file",
                     "ranker_tls_cert_file", "ranker_tls_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return check_readable(value)

    @model_validator(mode="after")
    def _consistent(self) -> "GatewaySettings":
        check_pair(self.tls_cert_file, self.tls_key_file, "SHOPSTREAM_GATEWAY_TLS_CERT_FILE",
                   "SHOPSTREAM_GATEWAY_TLS_KEY_FILE")
        check_pair(self.ranker_tls_cert_file, self.ranker_tls_key_file, "SHOPSTREAM_GATEWAY_RANKER_TLS_CERT_FILE",
                   "SHOPSTREAM_GATEWAY_RANKER_TLS_KEY_FILE")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("SHOPSTREAM_GATEWAY_TLS_CLIENT_CA_FILE needs SHOPSTREAM_GATEWAY_TLS_CERT_FILE and "
                             "SHOPSTREAM_GATEWAY_TLS_KEY_FILE (client certificates are only asked for over TLS)")
        if self.ranker_tls_cert_file is not None and self.ranker_tls_ca_file is None:
            raise ValueError("SHOPSTREAM_GATEWAY_RANKER_TLS_CERT_FILE needs SHOPSTREAM_GATEWAY_RANKER_TLS_CA_FILE "
                             "(the gateway must verify the ranker it presents its certificate to)")
        if self.auth == "required":
            if self.tokens_file is None and self.tokens is None:
                raise ValueError(f"no API tokens configured: set {TOKENS_FILE_VAR} (a JSON file of clients) or "
                                 f"{TOKENS_VAR} (the same JSON), or {AUTH_VAR}=disabled for development "
                                 "(anyone could then call anything); see docs/security.md")
            if self.tokens_file is not None and self.tokens is not None:
                raise ValueError(f"set {TOKENS_FILE_VAR} or {TOKENS_VAR}, not both")
            self.api_clients()  # a bad token configuration stops start-up here, naming its source
        return self

    # -- what the settings mean ----------------------------------------------------------

    def api_clients(self):
        """Token digest -> API client, from the tokens file or variable (auth required), or None
        (auth disabled). Raises ValueError naming the source when the configuration is bad."""
        from services.common.auth import TokenConfigError, parse_clients
        from services.gateway.guard import LIMITS, METHODS

        if self.auth == "disabled":
            return None
        if self.tokens_file is not None:
            text, source = self.tokens_file.read_text(encoding="utf-8"), f"{TOKENS_FILE_VAR} ({self.tokens_file})"
        else:
            text, source = self.tokens.get_secret_value(), TOKENS_VAR
        try:
            return parse_clients(text, source, METHODS, LIMITS)
        except TokenConfigError as exc:
            raise ValueError(str(exc)) from None

    def server_tls(self) -> ServerTls | None:
        if self.tls_cert_file is None:
            return None
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    def ranker_tls(self) -> ChannelTls | None:
        if self.ranker_tls_ca_file is None:
            return None
        return ChannelTls(self.ranker_tls_ca_file, self.ranker_tls_cert_file, self.ranker_tls_key_file,
                          self.ranker_tls_server_name)
