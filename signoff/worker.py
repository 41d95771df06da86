"""The worker: every workflow and activity Signoff runs, wired in one place."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from signoff import settings

# Modules that contribute workflows/activities export `WORKFLOWS` and/or `ACTIVITIES` lists.
_CONTRIBUTORS = (
    "workflows.governance",
    "workflows.siem_pull",
    "activities.governance",
    "activities.audit",
    "activities.siem",
)


def _contributed(attribute: str) -> list[Any]:
    found: list[Any] = []
    for module in _CONTRIBUTORS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # that part of Signoff is not installed
            raise
        found.extend(getattr(mod, attribute, ()))
    return found


def workflows() -> list[type]:
    from workflows.case import CaseWorkflow

    return [CaseWorkflow, *_contributed("WORKFLOWS")]


def activities() -> list[Callable[..., Any]]:
    from activities.case import enrich_case, escalate, load_governance
    from activities.response import capture_state, compensate_action, execute_action
    from activities.scoring import score_case

    core: list[Callable[..., Any]] = [
        load_governance, enrich_case, escalate, capture_state, execute_action, compensate_action, score_case,
    ]
    return [*core, *_contributed("ACTIVITIES")]


def build_worker(client: Client, task_queue: str | None = None, **overrides: Any) -> Worker:
    env = os.environ.get
    options: dict[str, Any] = dict(
        task_queue=task_queue or settings.task_queue(),
        workflows=workflows(),
        activities=activities(),
        max_concurrent_workflow_tasks=int(env("SIGNOFF_MAX_WORKFLOW_TASKS", "100")),
        max_concurrent_activities=int(env("SIGNOFF_MAX_ACTIVITIES", "200")),
        # ~0.35 MB per cached case: 600 keeps a worker under 500 MB however many cases wait
        # (docs/benchmarks.md); an evicted case is replayed from history when it is next needed.
        max_cached_workflows=int(env("SIGNOFF_MAX_CACHED_WORKFLOWS", "600")),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    options.update(overrides)
    return Worker(client, **options)


async def run_worker(address: str | None = None, task_queue: str | None = None) -> None:
    from signoff.client import connect

    client = await connect(address)
    from signoff.telemetry import start_gauges

    start_gauges(client)  # the awaiting-approval gauge, when OpenTelemetry is configured
    await build_worker(client, task_queue).run()
