"""The worker: every workflow and activity Signoff runs, wired in one place."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
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
    "workflows.case_undo",  # rolling back a case after it ended (signoff/undo.py)
    "activities.governance",
    "activities.case_undo",
    "activities.audit",
    "activities.siem",
    "activities.detach",
    "activities.merge",  # a merged case delivering its alerts (workflows/case_merge.py)
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
    from activities.response import (
        capture_state,
        compensate_action,
        ended_holders,
        execute_action,
        other_holders,
    )
    from activities.scoring import score_case

    core: list[Callable[..., Any]] = [
        load_governance, enrich_case, escalate, capture_state, execute_action, compensate_action, score_case,
        other_holders, ended_holders,
    ]
    return [*core, *_contributed("ACTIVITIES")]


def build_worker(client: Client, task_queue: str | None = None, **overrides: Any) -> Worker:
    from activities.executors import require_executors
    from signoff.sandbox import workflow_runner

    require_executors()  # every playbook action can run here, before any case collects approvals for it
    env = os.environ.get
    options: dict[str, Any] = dict(
        task_queue=task_queue or settings.task_queue(),
        workflow_runner=workflow_runner(),
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


def warm_up() -> None:
    """Pay the worker's one-time costs before it takes tasks, not inside the first cases.

    Importing xgboost (and the numpy/scipy/sklearn it pulls in) and parsing the active model take
    seconds of CPU; done lazily they land in the first scored cases, under load. Then everything
    alive is moved out of the garbage collector's sight (`gc.freeze`): the modules, the model and
    the workflow sandbox's templates are never garbage, and scanning them on every full collection
    is pure overhead for a process that holds hundreds of cached cases.
    """
    from activities.executors import load_builtin

    load_builtin()  # the executor modules and their connector clients (httpx, ldap3, ...)
    try:
        from signoff.scoring.scorer import Scorer

        Scorer.load()
    except Exception as exc:  # noqa: BLE001 - a missing model is reported per case by score_case
        logging.getLogger("signoff.worker").warning("scoring model not loaded at start: %s", exc)
    gc.collect()
    gc.freeze()


async def run_worker(address: str | None = None, task_queue: str | None = None) -> None:
    from signoff.client import connect

    client = await connect(address)
    from signoff.telemetry import start_gauges

    start_gauges(client)  # the awaiting-approval gauge, when OpenTelemetry is configured
    await ensure_search_attributes(client)
    worker = build_worker(client, task_queue)
    warm_up()
    # QA: `signoff worker` printed nothing at all, so nobody could tell it had connected, or to what.
    print(f"worker connected to {client.service_client.config.target_host} (namespace {client.namespace}), polling "
          f"task queue {task_queue or settings.task_queue()}; Ctrl-C stops it", file=sys.stderr, flush=True)
    await worker.run()


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the search attributes this code upserts that the namespace lacks (a cluster set
    up by an older `signoff setup`): a case upserting an unknown one would stall on its first
    workflow task. Without the rights to check or add them, say so and go on."""
    from temporalio.service import RPCError

    from signoff.devserver import register_search_attributes

    log = logging.getLogger("signoff.worker")
    try:
        added = await register_search_attributes(client)
    except RPCError as exc:
        log.warning("could not check or register Signoff's search attributes (%s): if `signoff setup` has not "
                    "run on this namespace since the last upgrade, cases will stall; run it with operator rights",
                    exc.message)
        return []
    if added:
        log.warning("registered missing search attributes: %s", ", ".join(added))
    return added
