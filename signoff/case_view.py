"""Read a case as its workflow tells it: as it ended (its result: the server answers, no worker
needed) or as it is (its `status` query: a worker answers). Callers decide what a failure means."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client

from signoff.models import CaseView


async def read_case_view(client: Client, case_id: str, *, completed: bool, run_id: str | None = None,
                         timeout: timedelta | None = None) -> CaseView:
    handle = client.get_workflow_handle(case_id, run_id=run_id, result_type=CaseView)
    if completed:
        ended: CaseView = await handle.result(follow_runs=False, rpc_timeout=timeout)
        return ended
    return await handle.query("status", result_type=CaseView, rpc_timeout=timeout)
