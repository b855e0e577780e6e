"""Gateway settings, from SHOPSTREAM_GATEWAY_* (and the shared KAFKA_BOOTSTRAP_SERVERS, REDIS_URL)."""
from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from services.common.infra import kafka_field, redis_field
from services.common.settings import check_addr, service_config


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
    max_exclude_ids: int = Field(500, ge=0)
    max_events_per_request: int = Field(500, ge=1)
    trending_pool: int = Field(500, ge=1, description="trending items read per fallback")
    trending_cache_s: float = Field(1.0, ge=0, description="how long the trending list is reused; 0 = read per request")
    redis_timeout_s: float = Field(0.1, gt=0, description="bound on each Redis read of a request")
    history_len: int = Field(200, ge=1)
    catalog_refresh_s: float = Field(1.0, gt=0)
    readiness_interval_s: float = Field(2.0, gt=0)
    executor_threads: int = Field(4, ge=1, description="threads for blocking Kafka publishes")
    metrics_port: int = Field(9104, ge=0, le=65535)
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
