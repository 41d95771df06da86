"""Alerts that arrive after their case closed open a follow-up case; the closed case is never run
again under its own id (real dev server, real ingest, real worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.ingest import ingest_path
from signoff.listing import case_query, case_rows
from signoff.models import CaseStatus, CaseView, CloseRequest, Verdict
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow


async def test_late_alerts_open_a_follow_up_and_the_closed_case_keeps_its_verdict(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    client = dev_env.client
    org = _unique_org()
    case = f"guide-{org}-1"
    store = AlertStore(tmp_path / "alerts.db")

    async def ingest(name: str, *alert_ids: int):  # type: ignore[no-untyped-def]
        rows = [_row(org, 1, a, a) for a in alert_ids]
        return await ingest_path(client, _guide_csv(tmp_path / name, rows), "guide", store=store,
                                 task_queue=task_queue)

    async def close(case_id: str, verdict: Verdict) -> CaseView:
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
        await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=verdict,
                                                                     reason="reviewed"))
        return await handle.result()

    async with build_worker(client, task_queue):
        first = await ingest("first.csv", 11, 12)
        assert (first.cases_opened, first.case_ids) == (1, [case])
        closed = await close(case, Verdict.false_positive)
        assert closed.status == CaseStatus.closed and closed.alert_count == 2

        late = await ingest("late.csv", 13)
        assert (late.accepted, late.cases_opened, late.cases_updated, late.case_ids) == (1, 1, 0, [f"{case}-r2"])
        later = await ingest("later.csv", 14)  # the follow-up is open: it takes them
        assert (later.cases_opened, later.cases_updated, later.case_ids) == (0, 1, [f"{case}-r2"])
        again = await ingest("late-again.csv", 13)  # the same alert twice: nothing new
        assert (again.duplicates, again.cases_opened, again.cases_updated, again.case_ids) == (1, 0, 0, [])

        follow_up = client.get_workflow_handle_for(CaseWorkflow.run, f"{case}-r2")
        view = await wait_for(follow_up, lambda v: v.alert_count == 2, "two late alerts")
        assert f"follow-up of closed case {case}" in view.title
        await close(f"{case}-r2", Verdict.true_positive)
        assert (await ingest("latest.csv", 15)).case_ids == [f"{case}-r3"]

        # The closed case is unchanged: one run, its verdict, its two alerts.
        original = client.get_workflow_handle_for(CaseWorkflow.run, case)
        result = await original.result()
        assert result.verdict is not None and result.verdict.verdict == Verdict.false_positive
        assert result.alert_count == 2
        assert len([wf async for wf in client.list_workflows(f"WorkflowId = '{case}'")]) == 1  # one run only

        want = [(case, 2), (f"{case}-r2", 2), (f"{case}-r3", 1)]
        for _ in range(100):  # until visibility shows the newest case's first upsert
            rows: list[dict] = []  # type: ignore[type-arg]
            await case_rows(case_query(None, f"TaskQueue='{task_queue}'"), limit=None, each=rows.extend,
                            client=client, home=tmp_path / "nowhere", with_alerts=False)
            counts = sorted((r["case_id"], r["alert_count"]) for r in rows)
            if counts == want:
                break
            await asyncio.sleep(0.05)
        assert counts == want
        assert sorted(store.uids(f"{case}-r2")) == [f"guide-{org}-13", f"guide-{org}-14"]
        await client.get_workflow_handle(f"{case}-r3").terminate("test over")
    store.close()



async def test_two_ingests_at_once_count_each_case_opened_once(dev_env: WorkflowEnvironment, task_queue: str,
                                                                tmp_path: Path) -> None:
    """QA: two concurrent ingests of one file said 442 + 430 cases opened for 442 cases. Whether a
    delivery opened its case is Temporal's answer now, not this process's store."""
    client = dev_env.client
    org = _unique_org()
    rows = [_row(org, incident, 10 * incident + k, 10 * incident + k) for incident in range(1, 31) for k in (1, 2)]
    data = _guide_csv(tmp_path / "thirty.csv", rows)
    stores = [AlertStore(tmp_path / f"home{i}" / "alerts.db") for i in (1, 2)]
    summaries = await asyncio.gather(*(ingest_path(client, data, "guide", store=s, task_queue=task_queue)
                                       for s in stores))
    assert sum(s.cases_opened for s in summaries) == 30
    assert all(s.cases_opened + s.cases_updated == 30 for s in summaries)
    for store in stores:
        store.close()
    for incident in range(1, 31):
        await client.get_workflow_handle(f"guide-{org}-{incident}").terminate("test over")
