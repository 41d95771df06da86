"""docs/autonomy.md step 2: simulate the analysts. Each case of the file gets the `close` update that
`signoff close CASE --as alice --verdict GRADE --reason ...` sends, with GUIDE's own grade.

    python verdicts.py held_out.csv [--as alice]
Talks to TEMPORAL_ADDRESS like every `signoff` command; waits for cases still in triage.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from pathlib import Path

from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from signoff.client import connect
from signoff.models import CloseRequest, Verdict
from workflows.case import CaseWorkflow


def grades(path: Path) -> dict[str, Verdict]:
    """case id -> the incident's grade (GUIDE: one grade per incident; ungraded incidents are left open)."""
    found: dict[str, Verdict] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("IncidentGrade") in {v.value for v in Verdict}:
                found[f"guide-{row['OrgId']}-{row['IncidentId']}"] = Verdict(row["IncidentGrade"])
    return found


async def close_all(path: Path, analyst: str) -> None:
    client = await connect()
    gate = asyncio.Semaphore(16)
    closed = already = refused = 0

    async def close(case_id: str, verdict: Verdict) -> None:
        nonlocal closed, already, refused
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
        request = CloseRequest(analyst=analyst, verdict=verdict, reason="GUIDE grade (simulated analyst)")
        async with gate:
            for _ in range(600):  # up to a minute while the case is still being triaged
                try:
                    # One update id per case: a retry after a timeout is the same update, applied once.
                    await handle.execute_update("close", request, id=f"simulated-verdict-{case_id}", result_type=str)
                    closed += 1
                    return
                except WorkflowUpdateRPCTimeoutOrCancelledError:  # a busy worker: ask again
                    continue
                except WorkflowUpdateFailedError as exc:
                    if "triaged" not in str(exc.cause):
                        break
                except RPCError as exc:  # closed already (a second run), or no such case
                    if "already completed" in exc.message:
                        already += 1
                        return
                    print(f"{case_id}: {exc.message}")
                    break
                await asyncio.sleep(0.1)
            refused += 1

    await asyncio.gather(*(close(case_id, verdict) for case_id, verdict in grades(path).items()))
    # (a second run is answered from the first one's updates, same update id: counted as closed again)
    print(f"{closed} cases closed with a verdict" + (f"; {already} were closed already" if already else "")
          + (f"; {refused} not closed" if refused else ""))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--as", dest="analyst", default="alice")
    args = parser.parse_args()
    asyncio.run(close_all(args.data, args.analyst))
