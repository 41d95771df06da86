"""Recorded cases for the what-if commands (`policy diff --cases`, `playbook diff`): the newest N on the
server (the archive fills up what Temporal no longer keeps) or case histories exported as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signoff.cli._common import err, fail, run
from signoff.history import DecodedHistory

Recorded = tuple[DecodedHistory, dict[str, Any]]  # a case run's history and its explanation


def recorded_cases(histories: Path | None, newest: int) -> list[Recorded]:
    """Newest first; `newest` 0 keeps every case of an exported directory."""
    if histories is not None:
        if not histories.is_dir():
            fail(f"{histories} is not a directory; give one holding case histories as JSON "
                 "(`temporal workflow show -w CASE --output json > DIR/CASE.json`)")
        found = run(_from_files(sorted(histories.glob("*.json"))))
        if not found:
            fail(f"{histories} holds no case history (*.json from `temporal workflow show --output json`)")
    else:
        err.print("reading case histories ...", highlight=False)
        found = run(_from_server(newest))
    found.sort(key=lambda pair: pair[1].get("opened_at") or "", reverse=True)
    return found[:newest] if newest else found


async def _from_server(newest: int) -> list[Recorded]:
    """A running case's steps come from its `status` query (its history holds them only once it ends)."""
    import asyncio
    from datetime import timedelta

    from signoff.audit import CASE_TYPE
    from signoff.client import connect
    from signoff.explain import explanation_from_history
    from signoff.history import apply_archive_record, archived_runs, decode_history, read_archive
    from signoff.models import CaseView

    client = await connect()
    runs = sorted([(wf.start_time, wf.id, wf.run_id)
                   async for wf in client.list_workflows(f"WorkflowType='{CASE_TYPE}'")], reverse=True)[:newest]
    gate = asyncio.Semaphore(16)

    async def read(workflow_id: str, run_id: str) -> Recorded:
        async with gate:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            decoded = await decode_history(await handle.fetch_history(), client.data_converter)
            view = None
            if decoded.close == "running":
                try:
                    view = await handle.query("status", result_type=CaseView, rpc_timeout=timedelta(seconds=10))
                except Exception:  # no worker answered: its steps are not judged (counted apart)
                    view = None
            return decoded, explanation_from_history(decoded, view)

    found = list(await asyncio.gather(*(read(w, r) for _, w, r in runs)))
    seen = {(h.workflow_id, h.run_id) for h, _ in found}
    for path in archived_runs():
        if len(found) >= newest:
            break
        try:
            history, record = read_archive(path)
        except (OSError, ValueError, KeyError):
            continue
        if (record["workflow_id"], record["run_id"]) in seen:
            continue
        decoded = await decode_history(history, client.data_converter, source="archive")
        if decoded.workflow_type == CASE_TYPE:
            decoded = apply_archive_record(decoded, record)
            found.append((decoded, explanation_from_history(decoded)))
    return found


async def _from_files(paths: list[Path]) -> list[Recorded]:
    from temporalio.client import WorkflowHistory

    from signoff.client import data_converter
    from signoff.explain import explanation_from_history
    from signoff.history import decode_history

    found = []
    for path in paths:
        try:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            fail(f"{path} is not a workflow history exported as JSON ({exc}); export one with "
                 "`temporal workflow show -w CASE --output json`")
        decoded = await decode_history(history, data_converter())
        if decoded.workflow_type == "CaseWorkflow":
            found.append((decoded, explanation_from_history(decoded)))
    return found
