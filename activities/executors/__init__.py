"""Executors by action name and backend. `SIGNOFF_BACKENDS` picks a backend per action.

`SIGNOFF_BACKENDS="disable_account=ldap,isolate_host=nftables"`; unnamed actions use the lab.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from activities.executors.base import ActionExecutor, ActionNotConfirmed, State, non_retryable, satisfies

Factory = Callable[[], ActionExecutor]
_REGISTRY: dict[tuple[str, str], Factory] = {}
_CACHE: dict[tuple[str, str], ActionExecutor] = {}
DEFAULT_BACKEND = "lab"


def register(action: str, backend: str) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        _REGISTRY[(action, backend)] = factory
        return factory

    return add


def backend_for(action: str) -> str:
    mapping = dict(
        item.split("=", 1) for item in os.environ.get("SIGNOFF_BACKENDS", "").split(",") if "=" in item
    )
    return mapping.get(action, os.environ.get("SIGNOFF_DEFAULT_BACKEND", DEFAULT_BACKEND))


def executor_for(action: str) -> ActionExecutor:
    load_builtin()
    backend = backend_for(action)
    key = (action, backend)
    if key not in _CACHE:
        factory = _REGISTRY.get(key)
        if factory is None:
            known = sorted(b for a, b in _REGISTRY if a == action)
            raise non_retryable(
                f"no executor for action {action!r} on backend {backend!r}; available: {known}. "
                "Set SIGNOFF_BACKENDS to one of them.",
                type="NoExecutor",
            )
        _CACHE[key] = factory()
    return _CACHE[key]


def reset_cache() -> None:
    _CACHE.clear()


class MissingExecutorError(RuntimeError):
    """A registered playbook uses an action this worker could not execute."""


def missing_executors() -> list[str]:
    """Actions of registered playbooks with no executor on their configured backend, one line each."""
    from playbooks import PLAYBOOKS

    load_builtin()
    used: dict[str, list[str]] = {}
    for playbook in PLAYBOOKS.values():
        for step in playbook.steps:
            used.setdefault(step.action.name, [])
            if playbook.name not in used[step.action.name]:
                used[step.action.name].append(playbook.name)
    problems = []
    for action, playbooks in sorted(used.items()):
        backend = backend_for(action)
        if (action, backend) not in _REGISTRY:
            known = sorted(b for a, b in _REGISTRY if a == action)
            problems.append(
                f"action {action!r} (playbooks {playbooks}) has no executor on backend {backend!r} "
                f"(available: {known}); register one with @register({action!r}, {backend!r}) in "
                "activities/executors/ or set SIGNOFF_BACKENDS to an available backend"
            )
    return problems


def require_executors() -> None:
    """Refuse to start a worker that would collect approvals for an action it cannot execute."""
    problems = missing_executors()
    if problems:
        raise MissingExecutorError("the worker cannot execute every playbook action: " + "; ".join(problems))


_BUILTIN = ("lab", "ldap", "nftables", "aws", "edr", "identity")


def load_builtin() -> None:
    """Import the built-in executor modules (they register themselves). Connectors read their
    credentials on first use, never at import, so an unconfigured vendor costs nothing here."""
    import importlib

    for name in _BUILTIN:
        importlib.import_module(f"activities.executors.{name}")


__all__ = [
    "ActionExecutor",
    "ActionNotConfirmed",
    "MissingExecutorError",
    "State",
    "backend_for",
    "executor_for",
    "load_builtin",
    "missing_executors",
    "non_retryable",
    "register",
    "require_executors",
    "reset_cache",
    "satisfies",
]
