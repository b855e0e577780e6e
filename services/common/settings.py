"""Typed settings from service-prefixed environment variables that fail fast.

Each service declares one ``BaseSettings`` subclass with
``model_config = service_config("RANKER")``; ``load(cls)`` turns a validation
error into one line per bad variable, named as the operator must spell it.
"""
from __future__ import annotations

import argparse
import os
from typing import TypeVar

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


def service_config(service: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"SHOPSTREAM_{service.upper()}_", extra="forbid", frozen=True)


class SettingsError(SystemExit):
    pass


def check_addr(value: str) -> str:
    """host:port with a numeric port (0 lets the OS pick, for tests)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable an operator sets for this field."""
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0]).upper()
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def unknown_env(cls: type[BaseSettings], environ=None) -> list[str]:
    """Variables with this service's prefix that name no setting (typos fail fast too)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    known = {env_name(cls, field) for field in cls.model_fields}
    for info in cls.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            known.update(str(c).upper() for c in info.validation_alias.choices)
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if prefix and k.upper().startswith(prefix) and k.upper() not in known)


def load(cls: type[S], **overrides) -> S:
    unknown = unknown_env(cls)
    if unknown:
        raise SettingsError(f"invalid {cls.__name__}:\n" + "\n".join(f"  {k}: no such setting" for k in unknown))
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a check across settings: its message names the variables itself
                lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
                continue
            lines.append(f"  {env_name(cls, str(err['loc'][0]))}: {err['msg']}")
        raise SettingsError(f"invalid {cls.__name__}:\n" + "\n".join(lines)) from None


def env_help(cls: type[BaseSettings]) -> str:
    """Every environment variable of ``cls``, its description and default: a ``--help`` epilog."""
    lines = ["environment:"]
    for field, info in cls.model_fields.items():
        default = "required" if info.is_required() else f"default {info.default!r}"
        about = f"{info.description}; " if info.description else ""
        lines.append(f"  {env_name(cls, field):<44} {about}{default}")
    return "\n".join(lines)


def service_command(prog: str, description: str, cls: type[BaseSettings]) -> argparse.ArgumentParser:
    """The argument parser of a service's command: no options but ``--help``, which lists
    the settings (they come from the environment only)."""
    return argparse.ArgumentParser(prog=prog, description=f"{description} Settings come from the environment only.",
                                   epilog=env_help(cls), formatter_class=argparse.RawDescriptionHelpFormatter)
