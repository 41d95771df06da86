"""Correlation rules: the policy file `policies/correlation.yaml`, validated by pydantic."""

from __future__ import annotations

import os
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.engine import parse_duration

RULES_ENV = "SIGNOFF_CORRELATION_POLICY"
ENTITY_TYPES = ("host", "ip", "account", "file", "mailbox", "url", "process", "cloud_app")


class RulesError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class Burst(_Model):
    """`min_alerts` within `within` is a burst; `quiet` after a burst ends the case."""

    min_alerts: int = Field(ge=2, le=100_000)
    within: str
    quiet: str

    @field_validator("within", "quiet")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        return _duration(value)

    @property
    def within_ms(self) -> int:
        return _ms(self.within)

    @property
    def quiet_ms(self) -> int:
        return _ms(self.quiet)


class CorrelationRules(_Model):
    version: int = 1
    group_by: tuple[str, ...] = ("host", "ip", "account", "file")
    fallback: Literal["rule", "none"] = "rule"
    gap: str = "40m"
    max_span: str = "24h"
    max_alerts: int = Field(default=10_000, ge=1)
    burst: Burst | None = None
    late_alerts: Literal["join", "open"] = "join"
    lateness: str = "7d"
    case_id_prefix: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    @field_validator("gap", "max_span", "lateness")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        return _duration(value)

    @field_validator("group_by")
    @classmethod
    def _known_entities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in ENTITY_TYPES]
        if unknown:
            raise ValueError(f"group_by has unknown entity types {unknown}; use some of {list(ENTITY_TYPES)}")
        if len(set(value)) != len(value):
            raise ValueError("group_by lists an entity type twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CorrelationRules:
        if not self.group_by and self.fallback == "none":
            raise ValueError("group_by is empty and fallback is 'none': no alert could be grouped")
        if _ms(self.gap) <= 0:
            raise ValueError("gap must be longer than 0s")
        if _ms(self.max_span) < _ms(self.gap):
            raise ValueError(f"max_span {self.max_span} is shorter than gap {self.gap}")
        return self

    @property
    def gap_ms(self) -> int:
        return _ms(self.gap)

    @property
    def max_span_ms(self) -> int:
        return _ms(self.max_span)

    @property
    def lateness_ms(self) -> int:
        return _ms(self.lateness)


def _ms(text: str) -> int:
    return int(parse_duration(text) / timedelta(milliseconds=1))


def default_rules_path() -> Path:
    return Path(str(resources.files("policies").joinpath("correlation.yaml")))


def rules_path() -> Path:
    """`$SIGNOFF_CORRELATION_POLICY` when set, else the rules shipped with the package."""
    configured = os.environ.get(RULES_ENV)
    return Path(configured) if configured else default_rules_path()


def load_rules(path: Path | str | None = None) -> CorrelationRules:
    p = Path(path) if path else rules_path()
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise RulesError(f"correlation rules {p} not found; set {RULES_ENV} to a YAML file") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"correlation rules {p} are not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RulesError(f"correlation rules {p} must be a YAML mapping, got {type(raw).__name__}")
    try:
        return CorrelationRules.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(f"correlation rules {p} are invalid:\n{exc}") from exc
