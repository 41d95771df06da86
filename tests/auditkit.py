"""A case with a full governance story (refusals, approvals, actions, rollback, verdict), for the
traceability tests: explain, audit export, governance report, secrets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle
from typer.testing import CliRunner

from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CaseView,
    CloseRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from tests.casekit import alert, awaiting, case_input, settle_governance, start_case, step, wait_for
from workflows.case import CaseWorkflow

# Polls of 50 ms: generous, so a loaded CI machine (2 cores) is not mistaken for a stuck case.
PATIENCE = 1200


@dataclass
class Story:
    handle: WorkflowHandle
    case_id: str
    host: str
    account: str
    final: CaseView


def cli(address: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `signoff ...` in a thread (the CLI runs its own event loop) against `address`."""
    from signoff.cli import app

    runner = CliRunner()
    return runner.invoke(app, list(args), env={"TEMPORAL_ADDRESS": address, **(env or {})})


async def acli(address: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.to_thread(cli, address, *args, env=env)


async def cli_process(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `signoff ...` as its own process (as a user does): exit code, stdout, stderr."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signoff.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


async def full_story(client: Client, task_queue: str, rollback: bool = True) -> Story:
    """malware case: refused signal + refused CLI update, approvals by update and signal, two
    actions, a rollback (compensations) and a verdict. The worker must be running."""
    inp = case_input(alert_type="malware", requested_by="signoff-ingest")
    host, account = f"host-{inp.case_id}", f"user-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), ("account", account),
                                                             title="Trojan [beacon] detected", category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=PATIENCE)
    # A refused signal (recorded in history, refused in state) and a refused update through the CLI.
    await handle.signal(CaseWorkflow.approve_signal, {"step": "isolate_host", "approver": "mallory", "reason": "let me"})
    refused = await acli(address_of(client), "approve", inp.case_id, "isolate_host", "--as", "mallory",
                         "--reason", "trust me")
    assert refused.exit_code != 0, refused.output
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                      reason="beaconing to known C2"))
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=PATIENCE)
    await handle.signal(CaseWorkflow.approve_signal, {"step": "disable_account", "approver": "bob",
                                                      "reason": "credentials seen on host"})
    await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=PATIENCE)
    if rollback:
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="admin tool, FP"))
        verdict = CloseRequest(analyst="carol", verdict=Verdict.false_positive, reason="signed admin tool")
    else:
        verdict = CloseRequest(analyst="carol", verdict=Verdict.true_positive, reason="confirmed trojan")
    await handle.execute_update(CaseWorkflow.close, verdict)
    final = await handle.result()
    assert step(final, "isolate_host").state in (StepState.compensated, StepState.executed)
    await settle_governance(client, task_queue)
    return Story(handle=handle, case_id=inp.case_id, host=host, account=account, final=final)
