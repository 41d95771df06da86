"""`signoff explain` under a policy `rollback_quorum` above 1, when rollback requests arrive as
signals: the earlier requests were only counted towards the quorum, the one that met it ran the
compensations. Once the quorum is met the case clears its votes, so explain must tell them apart
from the history (the policy snapshot the case decided under), not from the live votes.
Real time-skipping server; the policy file is a test copy with a quorum of 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import ApprovalRequest, CaseStatus, RollbackRequest, StepState
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.test_rollback_quorum import _with_quorum
from workflows.case import CaseWorkflow


async def _ask(handle: WorkflowHandle, via: str, who: str, reason: str) -> None:
    if via == "update":
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by=who, reason=reason))
    else:
        await handle.signal(CaseWorkflow.rollback_signal, {"requested_by": who, "reason": reason})


def _outcomes(ex: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(r["requested_by"], r["via"], r["outcome"], r["compensations"]) for r in ex["rollbacks"]]


@pytest.mark.parametrize(("first", "second"), [("signal", "signal"), ("update", "signal"), ("signal", "update")])
async def test_explain_tells_a_counted_rollback_request_from_the_one_that_met_the_quorum(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, first: str, second: str
) -> None:
    _with_quorum(policy_file, 2)
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host)))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")

        # carol asks first: only counted, nothing undone.
        await _ask(handle, first, "carol", "FP")
        await wait_for(handle, lambda v: [r.requested_by for r in v.rollback_votes] == ["carol"], "carol counted")
        # carol again, by signal: refused by the case (the same person counts once).
        await handle.signal(CaseWorkflow.rollback_signal, {"requested_by": "carol", "reason": "once more"})
        await wait_for(handle, lambda v: any(r.via == "rollback_signal" for r in v.refusals), "carol refused")
        # dave: the quorum is met, the compensations run and the votes are cleared.
        await _ask(handle, second, "dave", "agreed")
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert view.rollback_votes == () and view.rollback is not None and view.rollback.requested_by == "dave"
        assert lab().read("host", host)["network"] == "connected"
        compensated = sum(1 for s in view.steps if s.compensation is not None)
        assert compensated >= 2  # isolate_host and the tag, at least

        # What the CLI prints: `signoff explain CASE --json` (the case is still running, waiting for a verdict).
        result = await acli(address_of(client), "explain", inp.case_id, "--json")
        assert result.exit_code == 0, result.output
        from_cli = json.loads(result.output.strip().splitlines()[-1])
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        await handle.terminate("test done")

    expected = [("carol", first, "counted", 0), ("carol", "signal", "refused", 0),
                ("dave", second, "accepted", compensated)]
    assert _outcomes(from_cli) == expected, from_cli["rollbacks"]
    assert "has already asked for this rollback" in from_cli["rollbacks"][1]["refusal"]
    # From the history alone (no live view, no final view): the policy snapshot gives the quorum.
    alone = explanation_from_history(history)
    assert _outcomes(alone) == expected, alone["rollbacks"]
    assert "has already asked for this rollback" in alone["rollbacks"][1]["refusal"]

    text = render_explanation(from_cli)
    counted = [line for line in text.splitlines() if line.startswith("Rollback requested:")]
    assert len(counted) == 1 and "by carol" in counted[0] and "counted towards the policy's rollback quorum" in counted[0]
    done = [line for line in text.splitlines() if line.startswith("Rollback:")]
    assert len(done) == 1 and "by dave" in done[0] and f"{compensated} compensations" in done[0], text
