"""Reading policy files. I/O lives here, not in the engine (workflows call it through an activity)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from policies.engine import Policy

POLICY_ENV = "SIGNOFF_POLICY"


class PolicyError(ValueError):
    pass


def default_policy_path() -> Path:
    return Path(str(resources.files("policies").joinpath("default.yaml")))


def policy_path() -> Path:
    """`$SIGNOFF_POLICY` when set, else the policy shipped with the package."""
    configured = os.environ.get(POLICY_ENV)
    return Path(configured) if configured else default_policy_path()


def load_policy(path: Path | None = None) -> Policy:
    path = path or policy_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} not found; set {POLICY_ENV} to a policy YAML file") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path} is invalid:\n{exc}") from exc
