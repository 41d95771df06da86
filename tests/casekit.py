"""Helpers for case-workflow tests: build cases, start them, wait for a state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

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
