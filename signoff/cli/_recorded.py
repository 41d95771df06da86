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

    from signoff.audit import CASE_TYPE, collect_histories
    from signoff.client import BEST_EFFORT_QUERY, connect
    from signoff.explain import explanation_from_history
    from signoff.models import CaseView

    client = await connect()
    decoded = (await collect_histories(client, (CASE_TYPE,), newest=newest)).histories
    gate = asyncio.Semaphore(16)

    async def read(h: DecodedHistory) -> Recorded:
        view = None
        if h.close == "running" and h.source == "live":
            async with gate:
                try:
                    view = await client.get_workflow_handle(h.workflow_id, run_id=h.run_id).query(
                        "status", result_type=CaseView, rpc_timeout=BEST_EFFORT_QUERY)
                except Exception:  # no worker answered: its steps are not judged (counted apart)
                    view = None
        return h, explanation_from_history(h, view)

    return list(await asyncio.gather(*(read(h) for h in decoded)))


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
