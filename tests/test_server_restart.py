"""The Temporal dev server stops (SIGTERM) and starts again on the same SQLite file: every case
that waited for approval still waits, none ran its gated steps, and every one is approvable."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from connectors.lab import lab as default_lab
from signoff.models import ApprovalRequest, CaseStatus, StepState
from signoff.worker import build_worker
from tests.casekit import alert, case_input, start_case, step
from tests.reliability_kit import SqliteDevServer, gather_limited, writes_per_key
from workflows.case import CaseWorkflow

GATED = ("isolate_host", "disable_account")


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _until_count(client: Client, query: str, want: int, attempts: int = 6000) -> None:
    import asyncio

    got = -1
    for _ in range(attempts):
        got = await _count(client, query)
        if got == want:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{query!r}: {got} cases, expected {want}")


async def _restart_run(tmp_path: Path, cases: int) -> dict[str, int]:
    home = tmp_path / "home"
    server = SqliteDevServer(home)
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    awaiting = f"CaseStatus='awaiting_approval' AND ExecutionStatus='Running' AND TaskQueue='{queue}'"
    contained = f"CaseStatus='contained' AND TaskQueue='{queue}'"
    ids = [f"restart-{tag}-{i}" for i in range(cases)]
    lab = default_lab()  # the in-process worker acts on the test session's lab
    try:
        client = await server.start()
        async with build_worker(client, queue):
            await gather_limited((start_case(client, queue, case_input(alert_type="malware", case_id=cid),
                                             alert(f"{cid}-a", ("host", f"h-{cid}"), ("account", f"u-{cid}"),
                                                   category="Malware")) for cid in ids), limit=32)
            await _until_count(client, awaiting, cases)
        keys = [f"{cid}:{s}" for cid in ids for s in GATED]
        assert sum(writes_per_key(lab, keys).values()) == 0

        await server.stop(signal.SIGTERM)
        client = await server.start()  # same SQLite file, same port
        assert await _count(client, awaiting) == cases  # visible in the queue before any worker runs
        async with build_worker(client, queue):
            for cid in ids:
                view = await client.get_workflow_handle_for(CaseWorkflow.run, cid).query(CaseWorkflow.status)
                assert view.status == CaseStatus.awaiting_approval
                assert all(step(view, g).state == StepState.awaiting_approval for g in GATED)
            assert sum(writes_per_key(lab, keys).values()) == 0, "nothing gated ran across the restart"

            async def approve(cid: str) -> None:
                handle = client.get_workflow_handle_for(CaseWorkflow.run, cid)
                for g in GATED:
                    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                        step=g, approver="alice", reason="after restart"), id=f"approve-{g}")

            await gather_limited((approve(cid) for cid in ids), limit=32)
            await _until_count(client, contained, cases)
        writes = writes_per_key(lab, keys)
        assert all(n == 1 for n in writes.values()), {k: n for k, n in writes.items() if n != 1}
        for cid in ids:
            await client.get_workflow_handle(cid).terminate("restart test done")
        return {"cases": cases, "awaiting_after_restart": cases, "approved_and_executed": cases,
                "gated_changes": sum(writes.values())}
    finally:
        await server.stop()


async def test_cases_survive_server_restart(tmp_path: Path) -> None:
    result = await _restart_run(tmp_path, cases=120)
    print(f"\nserver restart: {result}")


@pytest.mark.slow
async def test_1000_cases_survive_server_restart(tmp_path: Path) -> None:
    result = await _restart_run(tmp_path, cases=1000)
    print(f"\nserver restart (large): {result}")
