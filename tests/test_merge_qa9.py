"""QA9 lows around merged cases (real dev server, in-process worker, the CLI an analyst uses).

- `signoff cases --json`: a merged case reports `alert_count` 0 (its target counts its alerts, so a
  dashboard summing counts counts each once), what it sent in `merged_alerts`, and no `verdict_due`.
- the rollback of a merged case after it ended does not say "the case's verdict stays on record" (it
  has none); the undo's history replays.
- `signoff governance report --html` without a path writes under the state directory and says where.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from signoff import search_attributes as sa
from signoff.models import CaseStatus, MergeRequest
from signoff.undo import undo_id
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, wait_for
from workflows.case import CaseWorkflow
from workflows.case_undo import CaseUndoWorkflow


async def _rows(address: str, task_queue: str, env: dict[str, str], want: int) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for _ in range(200):  # until visibility has the merge
        listed = await acli(address, "cases", "--json", "--with-alerts", "--query", f"TaskQueue='{task_queue}'",
                            env=env)
        rows = {r["case_id"]: r for r in map(json.loads, (line for line in listed.output.splitlines()
                                                          if line.startswith("{")))}
        if len(rows) == want and all(r["status"] != "awaiting_approval" or r["alert_count"] == 3
                                     for r in rows.values()) and CaseStatus.merged.value in \
                {r["status"] for r in rows.values()}:
            break
        await asyncio.sleep(0.05)
    return rows


async def _replays(client: Client, handle: WorkflowHandle) -> None:
    replayer = Replayer(workflows=[CaseWorkflow, CaseUndoWorkflow], data_converter=client.data_converter)
    result = await replayer.replay_workflow(await handle.fetch_history())
    assert result.replay_failure is None, (handle.id, result.replay_failure)


async def test_a_merged_case_lists_no_alerts_no_verdict_due_and_its_undo_claims_no_verdict(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    async with settled_worker(client, task_queue):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        src, dst = src_inp.case_id, dst_inp.case_id
        source = await start_case(client, task_queue, src_inp, alert("s1", ("host", f"s-{src}"), category="Malware"),
                                  alert("s2", ("host", f"s-{src}"), category="Malware"))
        target = await start_case(client, task_queue, dst_inp, alert("t1", ("host", f"t-{dst}"), category="Malware"))
        for handle in (source, target):
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        assert (await source.describe()).typed_search_attributes.get(sa.VERDICT_DUE) is not None  # an SLA runs
        await source.execute_update(CaseWorkflow.merge_into, MergeRequest(target=dst, requested_by="carol",
                                                                          reason="same actor"))
        assert (await source.result()).status == CaseStatus.merged

        rows = await _rows(address, task_queue, env, want=2)
        assert rows[src]["status"] == "merged", rows
        assert (rows[src]["alert_count"], rows[src]["merged_alerts"], rows[src]["verdict_due"]) == (0, 2, None), rows
        assert rows[src]["alert_uids"] == []
        assert rows[dst]["alert_count"] == 3 and sum(r["alert_count"] for r in rows.values()) == 3
        table = await acli(address, "cases", "--query", f"TaskQueue='{task_queue}'", env={**env, "COLUMNS": "250"})
        (src_line,) = [line for line in table.output.splitlines() if src in line]
        assert "in " not in src_line.split("merged", 1)[1] and "overdue" not in src_line, src_line

        # The source's executed watch is undone after it ended: the reply claims no verdict.
        undone = await acli(address, "rollback", src, "--as", "carol", "--reason", "merged, undo its watch", env=env)
        said = " ".join(undone.output.split())
        assert undone.exit_code == 0 and "rolled back" in said, said
        assert "verdict stays on record" not in said and "merged into another and has no verdict" in said, said
        await _replays(client, client.get_workflow_handle(undo_id(src)))

        # The governance report's HTML page, without a path: under the state directory, named in the output.
        report = await acli(address, "governance", "report", "--html", env=env)
        assert report.exit_code == 0, report.output
        (written,) = re.findall(r"HTML report: (\S+)", report.output)
        path = Path(written)
        assert path.is_file() and path.parent == signoff_home / "reports" and path.name.startswith("governance-")
        assert "<html" in path.read_text().lower()
        await target.terminate("test done")
