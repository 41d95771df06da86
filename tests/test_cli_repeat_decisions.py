"""`signoff approve|reject|rollback` run twice: the second run gets the case's own answer, never the
first run's answer again (QA: a fixed update id made Temporal repeat "1/2 approved" after a reject)."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from signoff.worker import build_worker
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for


async def test_repeated_decisions_are_answered_afresh(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    client = dev_env.client
    address = address_of(client)
    async with build_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", f"acct-{inp.case_id}")))
        await wait_for(handle, awaiting("revoke_sessions"), "revoke_sessions waiting")
        env = {"SIGNOFF_TASK_QUEUE": task_queue}
        first = await acli(address, "approve", inp.case_id, "revoke_sessions", "--as", "carol", "--reason", "r", env=env)
        assert first.exit_code == 0 and "1/2" in first.output, first.output
        again = await acli(address, "approve", inp.case_id, "revoke_sessions", "--as", "carol", "--reason", "r", env=env)
        assert again.exit_code == 1 and "refused" in again.output and "1/2" not in again.output, again.output
        rejected = await acli(address, "reject", inp.case_id, "revoke_sessions", "--as", "dave", "--reason", "no", env=env)
        assert rejected.exit_code == 0, rejected.output
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state.value == "skipped", "skipped")
        late = await acli(address, "approve", inp.case_id, "revoke_sessions", "--as", "carol", "--reason", "insist",
                          env=env)
        assert late.exit_code == 1 and "skipped" in late.output, late.output

        done = await acli(address, "rollback", inp.case_id, "--as", "carol", "--reason", "undo", env=env)
        assert done.exit_code == 0, done.output
        twice = await acli(address, "rollback", inp.case_id, "--as", "carol", "--reason", "undo", env=env)
        assert twice.exit_code == 1 and "already" in twice.output, twice.output
        await handle.terminate("test done")
