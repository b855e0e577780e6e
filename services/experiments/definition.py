"""An experiment definition: named variants with traffic weights, as JSON.

    {"name": "sasrec-v2-vs-v1",
     "variants": [
       {"name": "control",   "kind": "model",    "model_version": "v20261201-ab12", "weight": 45},
       {"name": "candidate", "kind": "model",    "model_version": "v20261203-cd34", "weight": 45},
       {"name": "trending",  "kind": "trending", "weight": 10},
       {"name": "next",      "kind": "shadow",   "model_version": "v20261203-ef56"}]}

Kinds: ``model`` (the ranker scores with that loaded model version), ``trending`` (the
trending rule), ``shadow`` (scored on live traffic beside what is served, never served:
no weight). Unknown fields are refused, and every error names its field
(``variants[1].weight: ...``), so a typo never becomes a silently different experiment.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL = "model"
TRENDING = "trending"
SHADOW = "shadow"
KINDS = (MODEL, TRENDING, SHADOW)
RUNNING = "running"
ENDED = "ended"


class DefinitionError(ValueError):
    """A definition that cannot be used; the message names the field(s) at fault."""


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="unique within the experiment; what reports group by")
    kind: Literal["model", "trending", "shadow"]
    model_version: str = Field("", max_length=256, description="the ranker's model version (model, shadow)")
    weight: float | None = Field(None, ge=0, description="traffic share, relative to the other served variants")

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> "Variant":
        if self.kind in (MODEL, SHADOW) and not self.model_version:
            raise ValueError(f"a {self.kind} variant needs model_version")
        if self.kind == TRENDING and self.model_version:
            raise ValueError("a trending variant takes no model_version")
        if self.kind == SHADOW and self.weight:
            raise ValueError("a shadow variant is never served, so it takes no weight")
        if self.kind != SHADOW and self.weight is None:
            raise ValueError(f"a {self.kind} variant needs a weight")
        return self

    @property
    def served(self) -> bool:
        return self.kind != SHADOW


class Winner(BaseModel):
    """What ``promote`` made the live default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str
    variant: str
    kind: Literal["model", "trending"]
    model_version: str = ""
    promoted_at_ms: int = 0


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    variants: tuple[Variant, ...] = Field(min_length=1)
    description: str = Field("", max_length=1024)
    # Kept by the store, not written by hand: "ended" once promote named a winner.
    status: Literal["running", "ended"] = RUNNING
    winner: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [v.name for v in self.variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names must be unique: {', '.join(twice)} appear more than once")
        served = [v for v in self.variants if v.served]
        if not served:
            raise ValueError("at least one variant must be served (kind model or trending)")
        total = sum(v.weight or 0.0 for v in served)
        if not (total > 0 and math.isfinite(total)):
            raise ValueError(f"the served variants' weights must sum to a positive number, got {total:g}")
        if sum(1 for v in self.variants if v.kind == SHADOW) > 1:
            raise ValueError("at most one shadow variant per experiment")
        if self.winner and self.winner not in names:
            raise ValueError(f"winner {self.winner!r} is not one of the variants")
        return self

    @property
    def served(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.served)

    @property
    def shadow(self) -> Variant | None:
        return next((v for v in self.variants if v.kind == SHADOW), None)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise DefinitionError(f"experiment {self.name!r} has no variant {name!r} "
                              f"(variants: {', '.join(v.name for v in self.variants)})")

    def model_versions(self) -> set[str]:
        """Every model version the experiment needs loaded at the ranker (shadow included)."""
        return {v.model_version for v in self.variants if v.model_version}

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=False)


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "definition"


def _describe(exc: ValidationError) -> str:
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        if err["type"] == "too_short" and any(len(e["loc"]) > len(err["loc"]) and e["loc"][:len(err["loc"])]
                                              == err["loc"] for e in errors):
            continue  # "too short" only because an item of it failed: that item's error says why
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of an experiment definition)"
        lines.append(f"{_location(loc)}: {msg}")
    return "; ".join(lines)


def parse(doc: str | bytes | dict[str, Any]) -> Experiment:
    """The experiment of a JSON text or an already-parsed dict; DefinitionError naming the
    field(s) at fault otherwise."""
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise DefinitionError(f"definition is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DefinitionError("definition must be a JSON object")
    try:
        return Experiment.model_validate(doc)
    except ValidationError as exc:
        raise DefinitionError(_describe(exc)) from None


def parse_winner(doc: str | bytes) -> Winner:
    try:
        return Winner.model_validate_json(doc)
    except ValidationError as exc:
        raise DefinitionError(_describe(exc)) from None
