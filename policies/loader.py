"""Reading policy files. I/O lives here, not in the engine (workflows call it through an activity)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from playbooks import PLAYBOOKS
from policies.engine import Policy, promise_violations

POLICY_ENV = "SIGNOFF_POLICY"


class PolicyError(ValueError):
    pass


def default_policy_path() -> Path:
    return Path(str(resources.files("policies").joinpath("default.yaml")))


def policy_path() -> Path:
    """`$SIGNOFF_POLICY` when set, else the policy shipped with the package."""
    configured = os.environ.get(POLICY_ENV)
    return Path(configured) if configured else default_policy_path()


_cache: dict[tuple[Path, str], Policy] = {}


def load_policy(path: Path | None = None) -> Policy:
    """The policy in `path`, parsed once per content (cases load it once each; parsing is the cost)."""
    path = path or policy_path()
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} not found; set {POLICY_ENV} to a policy YAML file") from exc
    key = (path, text)
    policy = _cache.get(key)
    if policy is None:
        if len(_cache) > 16:
            _cache.clear()
        policy = _cache[key] = _parse(path, text)
    return policy


def _parse(path: Path, text: str) -> Policy:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from exc
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path} is invalid: {one_line(exc)}") from exc
    problems = promise_violations(policy, PLAYBOOKS)
    if problems:
        raise PolicyError(f"policy file {path} is refused: {'; '.join(problems)}")
    return policy


def one_line(exc: ValidationError) -> str:
    """Each pydantic error as `field.path: message (got value)`, on one line."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        parts.append(f"{where}: {err['msg']}{got}")
    return "; ".join(parts)
