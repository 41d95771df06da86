"""QA5: the same alerts ingested from another state directory (another working directory, another
machine, a lost alert store) never open a second case for a case that has closed.

Found running `SIGNOFF_HOME=/elsewhere signoff demo` against the server of a first `signoff demo`:
"0 already known; 2 cases opened": the two cases an analyst had closed got follow-ups (`-r2`) holding
the very alerts they had decided on, with their high-impact steps waiting for approval again.
Real dev server, real ingest, real worker.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.ingest import ingest_path
from signoff.models import CaseStatus, CloseRequest, Verdict
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow


async def test_reingest_from_a_fresh_alert_store_opens_no_follow_up_of_a_closed_case(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    client = dev_env.client
    org = _unique_org()
    case = f"guide-{org}-1"
    data = _guide_csv(tmp_path / "alerts.csv", [_row(org, 1, 11, 1), _row(org, 1, 12, 2)])
    here, elsewhere = AlertStore(tmp_path / "here.db"), AlertStore(tmp_path / "elsewhere.db")

    async with build_worker(client, task_queue):
        first = await ingest_path(client, data, "guide", store=here, task_queue=task_queue)
        assert (first.cases_opened, first.case_ids) == (1, [case])
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case)
        await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="reviewed"))
        assert (await handle.result()).verdict is not None

        # The same file from a state directory whose alert store has never seen these alerts.
        again = await ingest_path(client, data, "guide", store=elsewhere, task_queue=task_queue)
        assert (again.accepted, again.duplicates, again.cases_opened, again.cases_updated) == (2, 2, 0, 0), again
        assert again.case_ids == []
        follow_ups = [wf.id async for wf in client.list_workflows(f"WorkflowId = '{case}-r2'")]
        assert follow_ups == []
        # ... and that store now knows where they went: a third run is a plain duplicate.
        assert elsewhere.case_of(f"guide-{org}-11") == case

        # A genuinely new alert for the closed incident still opens its follow-up.
        late = _guide_csv(tmp_path / "late.csv", [_row(org, 1, 13, 3)])
        later = await ingest_path(client, late, "guide", store=elsewhere, task_queue=task_queue)
        assert (later.cases_opened, later.case_ids) == (1, [f"{case}-r2"])
        await client.get_workflow_handle(f"{case}-r2").terminate("test over")
    here.close()
    elsewhere.close()
