"""QA5: the drift check reads the newest cases of each alert type, whether they are still open or not.

Found following docs/autonomy.md on the demo's server: after ingesting the held-out incidents and closing
them with verdicts, `signoff drift check` said "phishing: 0 cases scored by the active model", and a
promotion stayed refused on an hour-old breach. Visibility lists open workflows first, then closed ones
by close time, so "the newest 200" were the oldest cases still waiting for a person; the 280 newer cases,
closed since, were never read. Automatically closed cases (closed at once) would never be read at all.
Real dev server, real ingest, real worker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities.drift import recent_cases
from signoff.alertstore import AlertStore
from signoff.ingest import ingest_path
from signoff.models import CaseStatus, CloseRequest, Verdict
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow


async def test_recent_cases_are_the_newest_by_start_even_when_closed(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    client = dev_env.client
    org = _unique_org()
    store = AlertStore(tmp_path / "alerts.db")
    since = datetime.now(UTC) - timedelta(hours=1)
    older, newer = [f"guide-{org}-{n}" for n in (1, 2, 3)], [f"guide-{org}-{n}" for n in (4, 5, 6)]

    async def open_cases(name: str, incidents: tuple[int, ...]) -> None:
        rows = [_row(org, n, 100 + n, n) for n in incidents]
        await ingest_path(client, _guide_csv(tmp_path / name, rows), "guide", store=store, task_queue=task_queue)
        for n in incidents:
            handle = client.get_workflow_handle_for(CaseWorkflow.run, f"guide-{org}-{n}")
            await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)

    async with build_worker(client, task_queue):
        await open_cases("older.csv", (1, 2, 3))  # they stay open, waiting for people
        await open_cases("newer.csv", (4, 5, 6))
        for case_id in newer:  # analysts close the newer ones at once
            handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
            await handle.execute_update(CaseWorkflow.close, CloseRequest(
                analyst="alice", verdict=Verdict.false_positive, reason="reviewed"))
            await handle.result()
        closed = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Completed'"
        for _ in range(200):  # until visibility has recorded the three closes
            if (await client.count_workflows(closed)).count == len(newer):
                break
            await asyncio.sleep(0.05)

        found = await recent_cases(client, task_queue, since, per_type=3, skip="model_drift")
        assert sorted(v.case_id for v in found["phishing"]) == newer, [v.case_id for v in found["phishing"]]
        for case_id in older:
            await client.get_workflow_handle(case_id).terminate("test over")
    store.close()
