"""A case Temporal ended (terminated, cancelled) before the case itself did is not in any queue.

QA7: a case someone terminated or cancelled from the Temporal UI kept `CaseStatus='awaiting_approval'`
in visibility, so `signoff cases --status awaiting_approval` (the approval queue) listed it for
ever, though nothing waits for an approval there. A real dev server; the stand-in cases only
upsert search attributes (what is under test is the listing, as in tests/test_listing.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from signoff.embedded_visibility import EmbeddedVisibility
from signoff.listing import case_pages, case_query
from tests.reliability_kit import SqliteDevServer
from tests.test_listing import Spec, StandInCase, _signoff


@dataclass
class Ended:
    client: Client
    address: str
    home: Path
    server_pid: int
    waiting: str  # still waiting for an approval
    terminated: str  # was awaiting_approval, terminated
    canceled: str  # was awaiting_approval, cancelled
    closed_then_terminated: str  # closed with its verdict (rollback window), then terminated


@pytest.fixture(scope="module")
async def ended(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ended]:
    home = tmp_path_factory.mktemp("ended")
    server = SqliteDevServer(home)
    client = await server.start()
    task_queue = f"ended-{uuid.uuid4().hex[:8]}"
    tag = f"end{uuid.uuid4().hex[:6]}"
    specs = {name: Spec(f"{tag}-{name}", "CaseWorkflow", status, False, "malware", "high")
             for name, status in (("waiting", "awaiting_approval"), ("terminated", "awaiting_approval"),
                                  ("canceled", "awaiting_approval"), ("closed", "closed"))}
    try:
        async with Worker(client, task_queue=task_queue, workflows=[StandInCase],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            handles = {name: await client.start_workflow("CaseWorkflow", spec, id=spec.case_id, task_queue=task_queue)
                       for name, spec in specs.items()}
            await _until(client, f"WorkflowId STARTS_WITH '{tag}-' AND AlertType IS NOT NULL", 4)
            await handles["terminated"].terminate("an operator terminated it from the Temporal UI")
            await handles["closed"].terminate("retention clean-up")
            await handles["canceled"].cancel()
            await _until(client, f"WorkflowId STARTS_WITH '{tag}-' AND ExecutionStatus IN ('Terminated', 'Canceled')", 3)
            assert server.proc is not None
            yield Ended(client, server.address, home, server.proc.pid, specs["waiting"].case_id,
                        specs["terminated"].case_id, specs["canceled"].case_id, specs["closed"].case_id)
            await handles["waiting"].signal(StandInCase.release)
    finally:
        await server.stop()


async def _until(client: Client, query: str, want: int) -> None:
    for _ in range(600):
        if (await client.count_workflows(query)).count == want:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"visibility never showed {want} workflows for {query!r}")


async def _rows(ended: Ended, status: str | None) -> dict[str, dict]:
    return {row["case_id"]: dict(row) async for page in case_pages(ended.client, case_query(status)) for row in page}


async def test_the_approval_queue_lists_only_cases_that_still_wait(ended: Ended) -> None:
    assert set(await _rows(ended, "awaiting_approval")) == {ended.waiting}
    table = EmbeddedVisibility.open(ended.home / "temporal.db", ended.client.namespace)
    assert [r["case_id"] for r in table.cases("CaseWorkflow", "awaiting_approval", None)] == [ended.waiting]


async def test_an_ended_case_is_listed_under_what_ended_it(ended: Ended) -> None:
    rows = await _rows(ended, None)
    assert rows[ended.waiting]["status"] == "awaiting_approval" and rows[ended.waiting]["awaiting_approval"]
    terminated = rows[ended.terminated]
    assert (terminated["status"], terminated["last_case_status"], terminated["awaiting_approval"]) == (
        "terminated", "awaiting_approval", False)
    assert (rows[ended.canceled]["status"], rows[ended.canceled]["last_case_status"]) == ("canceled", "awaiting_approval")
    # A case that had its verdict keeps it: terminating it later does not make it a terminated case.
    assert rows[ended.closed_then_terminated]["status"] == "closed"
    assert "last_case_status" not in rows[ended.closed_then_terminated]
    assert set(await _rows(ended, "terminated")) == {ended.terminated, ended.closed_then_terminated}
    assert set(await _rows(ended, "canceled")) == {ended.canceled}
    assert set(await _rows(ended, "closed")) == {ended.closed_then_terminated}


async def test_signoff_cases_shows_the_queue_and_the_ended_cases(ended: Ended, tmp_path: Path) -> None:
    (tmp_path / "temporal.pid").write_text(str(ended.server_pid))  # `signoff dev`'s server: the table path
    code, out, err = await _signoff(ended, tmp_path, "cases", "--status", "awaiting_approval", "--json")
    assert code == 0, err
    assert [json.loads(line)["case_id"] for line in out.splitlines() if line.strip()] == [ended.waiting]
    code, out, err = await _signoff(ended, tmp_path, "cases", "--status", "terminated")
    assert code == 0, err
    assert ended.terminated in out and "terminated (was awaiting_approval)" in " ".join(out.split())
    code, out, err = await _signoff(ended, tmp_path, "cases", "--status", "gone")
    assert code != 0 and "terminated" in err and "canceled" in err
