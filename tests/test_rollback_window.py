"""Closing a case does not end the way back (policy `rollback_window`, promise 6): after its verdict a
case whose actions are still in effect stays open that long, and a rollback in the window restores
the captured state; the window's end completes the case. Time-skipping server of this module's own
(it skips days); the policy file is a test copy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from connectors.lab import lab
from policies.loader import PolicyError, load_policy
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, RollbackRequest, StepState, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.replay import recorded_patches
from workflows.case import ROLLBACK_WINDOW, CaseWorkflow


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


def _with_window(policy_file: Path, window: str | None) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    raw.pop("rollback_window", None)
    if window is not None:
        raw["rollback_window"] = window
    policy_file.write_text(yaml.safe_dump(raw))


async def _isolated_and_closed(client, task_queue: str) -> tuple[WorkflowHandle, str]:  # type: ignore[no-untyped-def]
    inp = case_input(alert_type="malware")
    host = f"host-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "waiting")
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                      reason="beaconing"))
    await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
    await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                 reason="confirmed"))
    return handle, host


def test_the_window_is_a_duration_and_unset_keeps_the_policy_version(policy_file: Path) -> None:
    _with_window(policy_file, None)
    without = load_policy(policy_file).digest()
    _with_window(policy_file, "7d")
    assert load_policy(policy_file).digest() != without
    _with_window(policy_file, "0d")
    with pytest.raises(PolicyError) as info:
        load_policy(policy_file)
    assert "rollback_window is '0d': give a duration above zero" in str(info.value)


async def test_a_closed_case_can_be_rolled_back_within_its_window(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _with_window(policy_file, "2d")
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, host = await _isolated_and_closed(client, task_queue)
        view = await wait_for(handle, lambda v: v.rollback_open_until is not None, "held open for a rollback")
        assert view.status == CaseStatus.closed and view.verdict is not None
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert lab().read("host", host)["network"] == "isolated"

        await time_env.sleep(timedelta(days=1))  # a day later the verdict turns out wrong
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol",
                                                                                 reason="admin tool after all"))
        assert msg.startswith("rollback rolled_back"), msg
        assert lab().read("host", host)["network"] == "connected"
        final = await handle.result()
        assert final.status == CaseStatus.rolled_back and final.verdict is not None  # the verdict stays on record
        assert final.rollback_open_until is None
        history = await handle.fetch_history()
        assert ROLLBACK_WINDOW in recorded_patches(history)
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_the_windows_end_completes_the_case_and_nothing_is_undone(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _with_window(policy_file, "2d")
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, host = await _isolated_and_closed(client, task_queue)
        await wait_for(handle, lambda v: v.rollback_open_until is not None, "held open")
        await time_env.sleep(timedelta(days=3))  # past the window's end
        final = await handle.result()
        assert final.status == CaseStatus.closed and lab().read("host", host)["network"] == "isolated"
        assert final.rollback_open_until is None
        # Ended: a rollback now has no case to run in (the CLI says to restore by hand from `explain`).
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_without_a_window_or_anything_to_undo_the_case_ends_at_its_verdict(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _with_window(policy_file, None)
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, _ = await _isolated_and_closed(client, task_queue)
        final = await handle.result()
        assert final.status == CaseStatus.closed
        assert ROLLBACK_WINDOW not in recorded_patches(await handle.fetch_history())
    _with_window(policy_file, "2d")
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")  # only automatic steps ran (tag, watch): nothing held open
        handle = await start_case(client, task_queue, inp, alert("m2", ("host", f"h-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="benign"))
        await handle.result()
        assert ROLLBACK_WINDOW not in recorded_patches(await handle.fetch_history())
