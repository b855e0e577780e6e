"""Ranker settings, from SHOPSTREAM_RANKER_* (and the shared REDIS_URL)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings

from services.common.infra import redis_field
from services.common.metrics_http import DEFAULT_METRICS_HOST
from services.common.settings import check_addr, service_config
from services.common.tls import ServerTls, check_pair, check_readable


class RankerSettings(BaseSettings):
    model_config = service_config("RANKER")

    addr: str = "127.0.0.1:50051"
    models_dir: Path = Path("var/models")
    reload_interval_s: float = Field(10.0, gt=0)
    # Retry a version that failed to load only after this long, so a bad bundle
    # is counted once per interval rather than once per poll.
    failed_retry_s: float = Field(300.0, ge=0)
    max_models: int = Field(3, ge=1, description="model versions loaded at once: the live one (LATEST) and the "
                                                 "newest candidates listed in <models_dir>/CANDIDATES")
    intra_op_threads: int = Field(
        0, ge=0, description="threads per batch (the encoder's chunk pool; onnxruntime and faiss threads of "
                             "the scorer); 0 = the cores shared among the batches in flight")
    prefer_gpu: bool = True
    executor_threads: int = Field(2, ge=1, description="threads that run batches, Similar and model loads")
    metrics_port: int = Field(9103, ge=0, le=65535)
    metrics_host: str = Field(DEFAULT_METRICS_HOST, description="address /metrics listens on (0.0.0.0: every interface)")
    # Mutual TLS: with a certificate, callers (the gateway) must present one signed by the client CA.
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) of the gRPC port; mutual TLS "
                                                         "when set")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA that signs the callers' (gateway's) "
                                                              "client certificates; required with TLS")
    health_addr: str = Field("", description="extra plaintext host:port serving only grpc.health.v1 (for "
                                             "probes that cannot speak TLS); empty = none")
    max_k: int = Field(500, ge=1)
    history_len: int = Field(200, ge=1, description="history items read per request")
    reason_window: int = Field(0, ge=0, le=50, description="0: a reason cites the history item nearest in the "
                               "model's item space, weighted by recency; n > 0: occlusion over the newest n "
                               "history items, more faithful, n extra encoder rows per request (docs/rules.md)")
    catalog_refresh_s: float = Field(1.0, gt=0)
    grace_s: float = Field(5.0, ge=0)
    # Dynamic micro-batching of concurrent Rank calls (services/common/batching.py).
    batch_max_size: int = Field(64, ge=1, description="most Rank calls scored together")
    # 0: a lone request runs at once; under load batches still form from the calls
    # that queue while the batches in flight run.
    batch_max_wait_ms: float = Field(0.0, ge=0, description="longest a call waits for batch-mates")
    # Batches scored at once, each on its own executor thread; with the default
    # intra_op_threads each gets cores / in_flight threads. Two single-threaded batches of
    # 32 serve encode-heavy traffic faster than one batch of 64 on 2 cores in-process, but
    # through gRPC with Redis embeddings (cheap batches, the gateway's path) the second
    # thread's GIL contention with the server's loop cost more (gateway/echo requests/s at
    # c=64, medians of three A/B runs: 0.39 vs 0.55), so one batch at a time is the default
    # (docs/ranker.md).
    batch_max_in_flight: int = Field(1, ge=1, description="batches scored at once")
    queue_max: int = Field(1024, ge=1, description="Rank calls waiting beyond this get RESOURCE_EXHAUSTED")
    rank_batch_max_requests: int = Field(256, ge=1, description="most requests in one RankBatch call")
    # How the catalog is scored (runtime.plan_scoring): exact, or approximate for big catalogs.
    scorer: Literal["auto", "exact", "ann"] = "auto"
    exact_backend: Literal["numpy", "onnx"] = "onnx"
    ann_min_items: int = Field(500_000, ge=1, description="auto: ANN from this many items up (CPU only)")
    ann_nlist: int = Field(0, ge=0, description="IVF lists; 0 = 2 * sqrt(items)")
    ann_nprobe: int = Field(0, ge=0, description="IVF lists visited; 0 = calibrated to ann_target_recall")
    ann_target_recall: float = Field(0.95, gt=0, le=1)
    ort_spinning: bool = Field(False, description="onnxruntime intra-op threads spin while idle")
    log_level: str = "INFO"
    redis_url: str = redis_field()

    @property
    def ort_threads(self) -> int:
        """onnxruntime (and faiss) threads per call: ``intra_op_threads``, or the cores shared
        among the batches in flight."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // self.batch_max_in_flight)

    def scoring_config(self):
        from services.ranker.runtime import ScoringConfig

        return ScoringConfig(prefer_gpu=self.prefer_gpu, intra_op_threads=self.ort_threads,
                             allow_spinning=self.ort_spinning, scorer=self.scorer,
                             exact_backend=self.exact_backend, ann_min_items=self.ann_min_items,
                             ann_nlist=self.ann_nlist, ann_nprobe=self.ann_nprobe,
                             ann_target_recall=self.ann_target_recall)

    @field_validator("batch_max_in_flight")
    @classmethod
    def _fits_the_executor(cls, value: int, info: ValidationInfo) -> int:
        threads = info.data.get("executor_threads")
        if threads is not None and value > threads:
            raise ValueError(f"{value} batches in flight need at least as many executor threads "
                             f"(SHOPSTREAM_RANKER_EXECUTOR_THREADS is {threads})")
        return value

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        return check_addr(value)

    @field_validator("health_addr")
    @classmethod
    def _check_optional_addr(cls, value: str) -> str:
        return check_addr(value) if value else value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return check_readable(value)

    @model_validator(mode="after")
    def _mutual_tls(self) -> "RankerSettings":
        check_pair(self.tls_cert_file, self.tls_key_file, "SHOPSTREAM_RANKER_TLS_CERT_FILE",
                   "SHOPSTREAM_RANKER_TLS_KEY_FILE")
        if (self.tls_cert_file is None) != (self.tls_client_ca_file is None):
            raise ValueError("SHOPSTREAM_RANKER_TLS_CLIENT_CA_FILE goes with SHOPSTREAM_RANKER_TLS_CERT_FILE and "
                             "SHOPSTREAM_RANKER_TLS_KEY_FILE: the ranker's TLS is mutual (only callers with a "
                             "certificate the CA signed get in)")
        return self

    def server_tls(self) -> ServerTls | None:
        if self.tls_cert_file is None:
            return None
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
