"""Audit activities: keep each case's history after Temporal deletes it.

The dev server keeps closed workflows for 24 h; Temporal archival is off there. `archive_case`
runs as the last step of every case and writes the history (payloads as Temporal holds them,
so encrypted when a codec is on) plus the final case view to `$SIGNOFF_HOME/audit/archive/`.
`signoff audit archive` sweeps closed cases again later and stores their complete histories.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from signoff.models import CaseView


class ArchiveRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    final_view: CaseView | None = None


@activity.defn
async def archive_case(req: ArchiveRequest) -> str:
    from signoff.history import write_archive

    handle = activity.client().get_workflow_handle(req.workflow_id, run_id=req.run_id)
    history = await handle.fetch_history()
    view = req.final_view.model_dump(mode="json") if req.final_view else None
    path = write_archive(history, complete=False, final_view=view)
    return str(path)


ACTIVITIES = [archive_case]
