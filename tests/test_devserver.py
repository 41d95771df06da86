"""End to end on the real dev server: the CLI, the temporal CLI (what the UI forms send), ingest."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from signoff.alertstore import AlertStore
from signoff.ingest import ingest_path
from signoff.models import CaseStatus, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow

REPO = Path(__file__).resolve().parent.parent


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _run(*args: str, env_extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    """An async subprocess: a blocking one would starve the in-process worker's event loop."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env_extra or {})},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _signoff(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "signoff.cli", *args)


def _temporal() -> str:
    return str(Path(sys.executable).with_name("temporal"))


async def test_cli_approval_and_ui_signal_each_advance_a_case(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    client = dev_env.client
    env = {"TEMPORAL_ADDRESS": _address(dev_env), "SIGNOFF_TASK_QUEUE": task_queue}
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host, account = f"h-{inp.case_id}", f"u-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("d1", ("host", host), ("account", account)))
        await wait_for(handle, awaiting("isolate_host"), "waiting")

        # `signoff approve`, as an analyst types it.
        code, out, err = await _run(*_signoff("approve", inp.case_id, "isolate_host", "--as", "alice",
                                              "--reason", "beaconing confirmed"), env_extra=env)
        assert code == 0, err
        assert "quorum 1/1" in out
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
        assert lab().read("host", host)["network"] == "isolated"

        # What the Temporal UI's signal form sends: the same JSON through `temporal workflow signal`.
        code, out, err = await _run(
            _temporal(), "workflow", "signal", "--address", _address(dev_env), "-w", inp.case_id,
            "--name", "approve_signal", "--identity", "bob@soc-console",
            "--input", json.dumps({"step": "disable_account", "approver": "bob", "reason": "same actor"}),
        )
        assert code == 0, err
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert step(view, "disable_account").approvals[0].via == "signal"
        assert lab().read("account", account)["enabled"] is False

        # Rollback from the CLI restores both.
        code, out, err = await _run(*_signoff("rollback", inp.case_id, "--as", "carol", "--reason", "FP"),
                                    env_extra=env)
        assert code == 0, err
        assert "rolled back: " in out
        assert lab().read("host", host)["network"] == "connected"
        assert lab().read("account", account)["enabled"] is True
        await handle.terminate("test done")


async def test_refused_and_malformed_updates_leave_no_trace_and_never_fail_a_task(
    dev_env: WorkflowEnvironment, task_queue: str, signoff_home: Path
) -> None:
    client = dev_env.client
    env = {"TEMPORAL_ADDRESS": _address(dev_env)}
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("d2", ("host", f"h2-{inp.case_id}")))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        before = len((await handle.fetch_history()).events)

        code, _, err = await _run(*_signoff("approve", inp.case_id, "isolate_host", "--as", "mallory",
                                            "--reason", "trust me"), env_extra=env)
        assert code == 1 and "not an approver" in err
        refused = [json.loads(x) for x in (signoff_home / "audit" / "refused.jsonl").read_text().splitlines()]
        assert any(r["case_id"] == inp.case_id and r["approver"] == "mallory" for r in refused)

        # Bad JSON typed into the UI's update form.
        for bad in ('{"step": "isolate_host"', '{"step": 7}', '[]'):
            code, _, _ = await _run(_temporal(), "workflow", "update", "execute", "--address", _address(dev_env),
                                    "-w", inp.case_id, "--name", "approve", "--input", bad)
            assert code != 0
        history = await handle.fetch_history()
        assert len(history.events) == before  # nothing was written
        assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        view = await handle.query(CaseWorkflow.status)
        assert step(view, "isolate_host").state == StepState.awaiting_approval
        await handle.terminate("test done")


def _guide_slice(path: Path, incidents: int) -> Path:
    source = REPO / "signoff" / "data" / "guide_demo.csv"
    with source.open() as fh:
        rows = list(csv.DictReader(fh))
    keep = sorted({(r["OrgId"], r["IncidentId"]) for r in rows})[:incidents]
    chosen = [r for r in rows if (r["OrgId"], r["IncidentId"]) in set(keep)]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return path


async def test_duplicate_ingestion_opens_one_case_and_cases_lists_them(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    data = _guide_slice(tmp_path / "slice.csv", incidents=6)
    store = AlertStore(tmp_path / "alerts.db")
    async with build_worker(client, task_queue):
        first = await ingest_path(client, data, "guide", store=store, task_queue=task_queue)
        second = await ingest_path(client, data, "guide", store=store, task_queue=task_queue)
        assert first.cases_opened == 6 and first.rejected == 0
        assert second.cases_opened == 0 and second.cases_updated == 0
        assert second.duplicates == second.accepted == first.accepted  # every record already known
        for case_id in first.case_ids:
            view = await wait_for(client.get_workflow_handle(case_id), lambda v: v.decision is not None, "decided")
            assert view.alert_count == store.count(case_id)
        runs = [wf async for wf in client.list_workflows(f"WorkflowId='{first.case_ids[0]}'")]
        assert len(runs) == 1
        for case_id in first.case_ids:
            await client.get_workflow_handle(case_id).terminate("test done")
