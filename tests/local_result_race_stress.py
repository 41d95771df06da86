"""Stress for the late local-activity result race (docs/reliability.md §7): real infostealer cases on the dev
server with a worker in this process; status queries poll each case while alert batches (`add_alerts`) or
`note` updates flood it, from its start (`triage`, `triage-note`) or while its gated steps run (approved all
at once: `signal`, `note`; an approval refused as busy is sent again, as Signoff's clients do: signoff/busy.py). Every history is then replayed with `Replayer`; failing ones are written to
OUT for inspection. Not part of the suite (minutes, and a count, not a pass/fail).

    PYTHONPATH=$PWD python -m tests.local_result_race_stress CASES [triage|signal|note|triage-note] [PARALLEL]
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

os.environ.setdefault("SIGNOFF_HOME", tempfile.mkdtemp(prefix="signoff-race-"))
for name in ("SIGNOFF_BACKENDS", "SIGNOFF_DEFAULT_BACKEND", "SIGNOFF_POLICY"):
    os.environ.pop(name, None)

from temporalio.client import WorkflowUpdateFailedError  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from policies.loader import load_policy  # noqa: E402
from signoff.busy import is_busy_refusal, while_busy  # noqa: E402
from signoff.devserver import register_search_attributes  # noqa: E402
from signoff.models import AlertBatch, ApprovalRequest, CaseStatus, NoteRequest, StepState  # noqa: E402
from signoff.worker import build_worker  # noqa: E402
from tests.casekit import alert, case_input, start_case  # noqa: E402
from tests.conftest import _binary  # noqa: E402
from tests.replay.record_histories import _approvers, derive_fixture  # noqa: E402
from workflows.case import CaseWorkflow  # noqa: E402

OUT = Path(tempfile.gettempdir()) / "signoff-local-result-race"


async def wait_for(handle, predicate, what: str, attempts: int = 4000):  # type: ignore[no-untyped-def]
    for _ in range(attempts):
        try:
            view = await handle.query(CaseWorkflow.status)
        except Exception:  # the consistent query buffer is full under the flood: ask again
            await asyncio.sleep(0.1)
            continue
        if predicate(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never reached {what}")


def _late_local_results(history):  # type: ignore[no-untyped-def]
    from tests.test_local_result_race import _late_local_results as late

    return late(history)


BUSY = {"notes": 0, "approvals": 0}  # updates refused as busy (signoff/busy.py); approvals are sent again


async def counted_send(handle, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return await handle.execute_update(*args, **kwargs)
    except WorkflowUpdateFailedError as exc:
        BUSY["approvals"] += is_busy_refusal(exc)
        raise


async def one_case(client, queue: str, n: int, mode: str):  # type: ignore[no-untyped-def]
    alert_type, category, entities = derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type, case_id=f"race-{n}-{uuid.uuid4().hex[:6]}")
    handle = await start_case(client, queue, inp, alert(f"{inp.case_id}-1", *entities, category=category))
    stop = asyncio.Event()

    async def poll() -> None:  # `signoff show`, the chat bridge, a dashboard: status queries
        while not stop.is_set():
            try:
                await handle.query(CaseWorkflow.status)
            except Exception:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.002)

    async def flood() -> None:
        i = 2
        while not stop.is_set():
            if mode in ("signal", "triage"):
                await handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, batch_id=f"b{i}", alerts=(
                    alert(f"{inp.case_id}-{i}", *entities, category=category),)))
            else:
                try:  # refused while a local activity is in flight (busy): no event; the next one comes anyway
                    await handle.execute_update(CaseWorkflow.note, NoteRequest(author="carol", text=f"note {i}"))
                except WorkflowUpdateFailedError as exc:
                    BUSY["notes"] += is_busy_refusal(exc)
            i += 1
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(poll()), asyncio.create_task(poll())]
    if mode in ("triage", "triage-note"):  # alert batches (or notes) from the start (the ingester's later batches), through triage
        tasks.append(asyncio.create_task(flood()))
    view = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_approval, "awaiting", attempts=4000)
    if mode not in ("triage", "triage-note"):
        tasks.append(asyncio.create_task(flood()))
    for st in view.steps:
        if st.state == StepState.awaiting_approval:
            for who in _approvers(load_policy(), st.tier, st.reversibility, st.quorum, inp.requested_by):
                await while_busy(partial(counted_send, handle, CaseWorkflow.approve, ApprovalRequest(
                    step=st.step_id, approver=who, reason="race"), id=f"{st.step_id}-{who}"), handle.id)
    await wait_for(handle, lambda v: v.status in (CaseStatus.contained, CaseStatus.action_failed), "played",
                   attempts=4000)
    stop.set()
    await asyncio.gather(*tasks)
    return await handle.fetch_history()


async def main(cases: int, mode: str, parallel: int) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"), data_converter=pydantic_data_converter, ui=False,
        dev_server_extra_args=["--log-level", "error"])
    await register_search_attributes(env.client)
    queue = f"race-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    gate = asyncio.Semaphore(parallel)

    async def limited(n: int):  # type: ignore[no-untyped-def]
        async with gate:
            return await one_case(env.client, queue, n, mode)

    async with build_worker(env.client, queue):
        histories = await asyncio.gather(*(limited(n) for n in range(cases)))
    failures = 0
    OUT.mkdir(parents=True, exist_ok=True)
    splits = 0
    for history in histories:
        splits += len(_late_local_results(history))
        result = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures += 1
            (OUT / f"{mode}-{history.workflow_id}.json").write_text(history.to_json())
            print("FAIL", history.workflow_id, str(result.replay_failure)[:220], flush=True)
    print(f"{mode}: {failures}/{len(histories)} cases failed replay; {splits} local-activity results delivered "
          f"a task late ({time.monotonic() - started:.0f}s, "
          f"parallel {parallel}; busy refusals: {BUSY['notes']} notes, {BUSY['approvals']} approvals sent again)",
          flush=True)
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "signal",
                     int(sys.argv[3]) if len(sys.argv) > 3 else 4))
