"""Typed settings from service-prefixed environment variables that fail fast.

Each service declares one ``BaseSettings`` subclass with
``model_config = service_config("RANKER")``; ``load(cls)`` turns a validation
error into one line per bad variable, named as the operator must spell it.
"""
from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


def service_config(service: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"SHOPSTREAM_{service.upper()}_", extra="forbid", frozen=True)


class SettingsError(SystemExit):
    pass


def load(cls: type[S], **overrides) -> S:
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {prefix}{field.upper()}: {err['msg']}")
        raise SettingsError(f"invalid {cls.__name__}:\n" + "\n".join(lines)) from None
