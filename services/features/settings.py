"""Settings of the features worker, from ``SHOPSTREAM_FEATURES_*`` (plus the shared infra variables)."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

from services.common.metrics_http import DEFAULT_METRICS_HOST

from services.common.infra import kafka_field, redis_field
from services.common.settings import service_config


class FeaturesSettings(BaseSettings):
    model_config = service_config("FEATURES")

    kafka_bootstrap_servers: str = kafka_field()
    redis_url: str = redis_field()

    app_id: str = Field("shopstream-features", description="faust app id = Kafka consumer group")
    topic_partitions: int = Field(8, ge=1, description="partitions of topics faust creates")
    models_dir: Path = Field(
        Path("./var/models"),
        validation_alias=AliasChoices("SHOPSTREAM_FEATURES_MODELS_DIR", "SHOPSTREAM_MODELS_DIR", "models_dir"),
    )
    model_reload_interval_s: float = Field(5.0, gt=0)
    failed_retry_s: float = Field(60.0, gt=0, description="a model version that failed to load is retried after this")
    prefer_gpu: bool = False
    encode_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads; 0 = its default")

    # A batch is one Redis round trip and one script call per user in it; a large
    # maximum only matters under backlog (a steady trickle flushes on the window).
    batch_size: int = Field(2000, ge=1, description="max events per batch")
    batch_window_ms: float = Field(10.0, gt=0, description="max wait to fill a batch")
    fetch_max_wait_ms: int = Field(10, ge=0, description="longest a Kafka fetch waits for data (faust: 1500)")
    max_poll_records: int = Field(4000, ge=1, description="records handed over per consumer poll")
    max_fetch_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="bytes per partition per fetch")
    stream_buffer: int = Field(8192, ge=1, description="records buffered per partition ahead of the agent")
    embedding_min_interval_ms: float = Field(
        100.0, ge=0, description="least time between embedding refreshes (more users per encode)")
    embedding_max_duty: float = Field(
        0.3, gt=0, le=1, description="share of wall time the encoder may run under backlog")
    shutdown_flush_s: float = Field(2.0, ge=0, description="wait for queued embedding refreshes at shutdown")
    history_cap: int = Field(200, ge=1, description="items kept per user history")
    dedup_window: int = Field(5000, ge=1, description="event ids remembered per user for dedup")

    recovery_check_interval_s: float = Field(
        1.0, gt=0, description="how often the recovery marks are checked and advanced (lost Redis state is "
                              "replayed from Kafka, see docs/redis-keys.md)")

    attribution_enabled: bool = Field(True, description="join events with served lists (impressions) and count "
                                                          "them per experiment and variant (docs/experiments.md)")
    attribution_window_s: float = Field(1800.0, gt=0, description="an event without recommendation_id counts for "
                                                                "a list served this long before it at most")
    attribution_bucket_s: int = Field(60, ge=1, description="time bucket of the per-variant counters")
    attribution_max_lists: int = Field(200, ge=1, description="served lists kept per user for the join")
    attribution_batch_window_ms: float = Field(
        200.0, gt=0, description="max wait to fill an attribution batch: longer than the events agent's, "
                                 "since the counters are read per minute and larger batches take fewer Redis "
                                 "round trips per record (bench/loop_cost.py)")

    trending_half_life_s: float = Field(3600.0, gt=0)
    trending_decay_interval_s: float = Field(60.0, gt=0)
    lag_interval_s: float = Field(5.0, gt=0)
    # A joining worker waits up to the rebalance timeout for the group to settle
    # (faust's 60 s default makes every restart a minute of stalled consumption).
    session_timeout_s: float = Field(10.0, gt=0)
    rebalance_timeout_s: float = Field(10.0, gt=0)
    heartbeat_interval_s: float = Field(3.0, gt=0)

    metrics_port: int = Field(9102, ge=0, le=65535,
                              description="/metrics, /healthz/live and /healthz/ready; 0 picks a free port")
    metrics_host: str = Field(DEFAULT_METRICS_HOST, description="address that port (metrics and probes) listens on; "
                                                            "0.0.0.0 in a pod, for Prometheus and the kubelet")
    datadir: Path = Field(Path("./var/faust"), description="faust's local state directory")
    log_level: str = "INFO"
    log_json: bool = True
