"""Ranker settings, from SHOPSTREAM_RANKER_* (and the shared REDIS_URL)."""
from __future__ import annotations

from pathlib import Path

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
    log_level: str = "INFO"
    redis_url: str = redis_field()

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        return check_addr(value)
