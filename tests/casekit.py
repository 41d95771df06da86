"""Helpers for case-workflow tests: build cases, start them, wait for a state."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle

from signoff.models import Alert, AlertBatch, CaseInput, CaseStatus, CaseView, Entity, StepState
from workflows.case import CaseWorkflow


def alert(uid: str, *entities: tuple[str, str], title: str = "Suspicious sign-in", category: str = "CredentialAccess") -> Alert:
    return Alert(
        uid=uid, source="test", time=datetime(2024, 6, 1, 12, 0, tzinfo=UTC), title=title, rule="R1",
        category=category, severity="high",
        entities=tuple(Entity(type=t, value=v, role="impacted") for t, v in entities),
    )


def case_input(alert_type: str = "compromised_account", requested_by: str = "signoff-ingest",
               case_id: str | None = None) -> CaseInput:
    return CaseInput(case_id=case_id or f"case-{uuid.uuid4().hex[:10]}", alert_type=alert_type,
                     severity="high", title="test case", requested_by=requested_by)


async def start_case(client: Client, task_queue: str, inp: CaseInput, *alerts: Alert) -> WorkflowHandle:
    return await client.start_workflow(
        CaseWorkflow.run, inp, id=inp.case_id, task_queue=task_queue,
        start_signal="add_alerts", start_signal_args=[AlertBatch(case_id=inp.case_id, alerts=alerts)],
    )


async def wait_for(handle: WorkflowHandle, predicate: Callable[[CaseView], bool], what: str,
                   attempts: int = 300) -> CaseView:
    view = None
    for _ in range(attempts):
        view = await handle.query(CaseWorkflow.status)
        if predicate(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"case {handle.id} never reached: {what}; last view: {view}")


def step(view: CaseView, step_id: str):  # type: ignore[no-untyped-def]
    for s in view.steps:
        if s.step_id == step_id:
            return s
    raise AssertionError(f"no step {step_id} in {[s.step_id for s in view.steps]}")


def awaiting(step_id: str) -> Callable[[CaseView], bool]:
    return lambda v: any(s.step_id == step_id and s.state == StepState.awaiting_approval for s in v.steps) and \
        v.status == CaseStatus.awaiting_approval


async def settle_governance(client: Client, task_queue: str) -> None:
    """Wait, with the worker still running, until the governance workflow of `task_queue` is idle.

    A closed case's verdict is checked by a governance activity. On the time-skipping server
    (shared by the whole session), a worker that shuts down while that activity runs leaves time
    skipping locked for every later test; tests that close cases there call this before their
    worker stops."""
    from temporalio.service import RPCError

    from signoff.autonomy.client import governance_id

    handle = client.get_workflow_handle(governance_id(task_queue))
    stable, last = 0, -1
    for _ in range(400):
        try:
            raw = (await handle.describe()).raw_description
        except RPCError:
            return  # no governance workflow on this queue
        busy = bool(raw.pending_activities) or raw.HasField("pending_workflow_task")
        length = raw.workflow_execution_info.history_length
        stable = stable + 1 if not busy and length == last else 0
        if stable >= 3:
            return
        last = length
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def settled_worker(client: Client, task_queue: str, **overrides: Any) -> AsyncIterator[Any]:
    """`build_worker` that lets the governance workflow finish its verdict checks before stopping
    (see `settle_governance`): for time-skipping tests that close cases."""
    from signoff.worker import build_worker

    async with build_worker(client, task_queue, **overrides) as worker:
        yield worker
        await settle_governance(client, task_queue)
