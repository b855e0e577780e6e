"""Ranker settings, from SHOPSTREAM_RANKER_* (and the shared REDIS_URL)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from services.common.infra import redis_field
from services.common.settings import check_addr, service_config


class RankerSettings(BaseSettings):
    model_config = service_config("RANKER")

    addr: str = "127.0.0.1:50051"
    models_dir: Path = Path("var/models")
    reload_interval_s: float = Field(10.0, gt=0)
    # Retry a version that failed to load only after this long, so a bad bundle
    # is counted once per interval rather than once per poll.
    failed_retry_s: float = Field(300.0, ge=0)
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads; 0 = its default")
    prefer_gpu: bool = True
    executor_threads: int = Field(2, ge=1, description="threads that run encoding and scoring")
    metrics_port: int = Field(9103, ge=0, le=65535)
    max_k: int = Field(500, ge=1)
    history_len: int = Field(200, ge=1, description="history items read per request")
    catalog_refresh_s: float = Field(1.0, gt=0)
    grace_s: float = Field(5.0, ge=0)
    # Dynamic micro-batching of concurrent Rank calls (batcher.py).
    batch_max_size: int = Field(64, ge=1, description="most Rank calls scored together")
    # 0: a lone request runs at once; under load batches still form from the calls
    # that queue while the previous batch runs (one batch in flight at a time).
    batch_max_wait_ms: float = Field(0.0, ge=0, description="longest a call waits for batch-mates")
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

    def scoring_config(self):
        from services.ranker.runtime import ScoringConfig

        return ScoringConfig(prefer_gpu=self.prefer_gpu, intra_op_threads=self.intra_op_threads,
                             allow_spinning=self.ort_spinning, scorer=self.scorer,
                             exact_backend=self.exact_backend, ann_min_items=self.ann_min_items,
                             ann_nlist=self.ann_nlist, ann_nprobe=self.ann_nprobe,
                             ann_target_recall=self.ann_target_recall)

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        return check_addr(value)
