"""Opening synthetic cases on the bench and waiting for their steps (approval, rollback, waiting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from temporalio.client import WorkflowHandle

from signoff.bench.data import account_case
from signoff.bench.harness import Bench, BenchError
from signoff.models import CaseView, StepState

Report = Callable[[str, int, int], None]
STARTERS = 64


async def open_waiting_cases(b: Bench, count: int, tag: str, report: Report, *, access_key: bool = False,
                             timeout: float | None = None, window: int | None = None) -> list[str]:
    """Open `count` compromised-account cases and wait until every one waits for an approval.

    With `window`, at most that many cases are in flight (opened, not yet waiting) at a time: a
    closed-loop load, as a real alert stream is, instead of thousands of starts queued at once.
    """
    from workflows.case import CaseWorkflow

    query = "WorkflowType='CaseWorkflow' AND CaseStatus='awaiting_approval'"
    gate = asyncio.Semaphore(STARTERS)
    ids: list[str] = []
    base = await b.count(query)

    async def start(_: int) -> None:
        inp, batch = account_case(tag, access_key=access_key)
        async with gate:
            await b.client.start_workflow(CaseWorkflow.run, inp, id=inp.case_id, task_queue=b.task_queue,
                                          start_signal="add_alerts", start_signal_args=[batch])
        ids.append(inp.case_id)
        report("opening cases", len(ids), count)

    deadline = time.monotonic() + (timeout or 120 + count)
    step = window or count
    while len(ids) < count:
        waiting = await b.count(query) - base
        report("cases reaching approval", waiting, count)
        room = min(step - (len(ids) - waiting), count - len(ids))
        if room >= max(1, step // 4) or room == count - len(ids):
            await asyncio.gather(*(start(i) for i in range(room)))
        else:
            if time.monotonic() > deadline:
                raise BenchError(f"only {waiting}/{count} cases reached approval in time; see {b.home}")
            b.check_alive()
            await asyncio.sleep(0.25)
    await b.wait_count(query, base + count, timeout=max(10.0, deadline - time.monotonic()), interval=0.25,
                       progress=lambda n, t: report("cases reaching approval", n - base, count))
    return ids


async def wait_view(handle: WorkflowHandle, done: Callable[[CaseView], bool], what: str,
                    timeout: float = 60, interval: float = 0.01) -> CaseView:
    from workflows.case import CaseWorkflow

    deadline = time.monotonic() + timeout
    while True:
        view = await handle.query(CaseWorkflow.status)
        if done(view):
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"case {handle.id} did not reach {what} within {timeout:.0f} s (status {view.status})")
        await asyncio.sleep(interval)


def step_state(view: CaseView, step_id: str) -> StepState | None:
    return next((s.state for s in view.steps if s.step_id == step_id), None)


def awaiting(step_id: str) -> Callable[[CaseView], bool]:
    return lambda v: step_state(v, step_id) == StepState.awaiting_approval
