"""Bad JSON typed into the UI or the `temporal` CLI: refused with a reason, never a failed
workflow task. Runs the real `temporal` CLI against the real dev server (async subprocesses:
the worker shares this event loop)."""

from __future__ import annotations

import asyncio
import json

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from signoff.devserver import temporal_cli
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for

BAD_INPUTS = [
    "{",  # not JSON: the CLI refuses it before it reaches Temporal
    "null", "42", '"approve please"', "[1, 2, 3]", "{}",
    '{"step": 42, "approver": true, "reason": null}',
    '{"step": "disable_account", "approver": "alice"}',  # no reason
    '{"step": "disable_account", "approver": "alice", "reason": ""}',
    '{"step": "disable_account", "approver": "alice", "reason": "x", "token": 5}',
    '{"step": "disable_account", "approver": "alice", "reason": "x", "token": "a.b"}',
    '{"step": "disable_account", "approver": "mallory", "reason": "<script>alert(1)</script>"}',
    '{"step": "../../etc/passwd", "approver": "alice", "reason": "x"}',
    '{"step": "disable_account", "approver": "alice\\u0000", "reason": "x"}',
    json.dumps({"step": "disable_account", "approver": "alice", "reason": "R" * 100_000}),  # huge (one CLI argument holds 128 KiB)
    '{"steps": ["disable_account"], "who": "alice"}',
]


async def _temporal(address: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(), *args, "--address", address, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_bad_payloads_are_refused_and_never_fail_a_workflow_task(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    address = client.service_client.config.target_host
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        handle = await start_case(client, task_queue, inp, alert("b1", ("account", f"u-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)

        refused_updates = 0
        for n, raw in enumerate(BAD_INPUTS):
            for name in ("approve", "reject"):
                code, out = await _temporal(address, "workflow", "update", "execute", "-w", inp.case_id,
                                            "--name", name, "--input", raw, "--update-id", f"bad-{name}-{n}")
                assert code != 0, f"{name} {raw[:60]!r} was accepted: {out[:300]}"
                refused_updates += 1
        for name in ("rollback", "close"):
            code, out = await _temporal(address, "workflow", "update", "execute", "-w", inp.case_id, "--name", name,
                                        "--input", '{"requested_by": 7}')
            assert code != 0, out
            refused_updates += 1

        signalled = 0
        for raw in BAD_INPUTS[1:]:  # "{" never leaves the CLI
            code, out = await _temporal(address, "workflow", "signal", "-w", inp.case_id, "--name", "approve_signal",
                                        "--input", raw, "--identity", "mallory@laptop")
            assert code == 0, out  # a signal is always written...
            signalled += 1
        for name in ("rollback_signal", "close_signal", "add_alerts"):
            code, out = await _temporal(address, "workflow", "signal", "-w", inp.case_id, "--name", name,
                                        "--input", '{"analyst": ["x"], "requested_by": null, "alerts": 5}')
            assert code == 0, out

        # ...and refused by the handler, kept in the case with its reason.
        view = await wait_for(handle, lambda v: len(v.refusals) >= signalled, "every bad signal refused", attempts=2400)
        assert len(view.refusals) == signalled
        assert all(not r.accepted and r.refusal for r in view.refusals)
        assert sum(1 for r in view.refusals if r.refusal.startswith("malformed approval")) >= 8
        assert any("refused rollback signal" in e for e in view.escalations)
        assert any("refused close signal" in e for e in view.escalations)
        assert step(view, "disable_account").state == StepState.awaiting_approval
        assert view.alert_count == 1  # the garbage add_alerts signal added nothing

        history = await handle.fetch_history()
        kinds = [e.event_type for e in history.events]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in kinds
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in kinds  # no refused update was written

        # The case still works: a good approval from the CLI executes the step.
        code, out = await _temporal(address, "workflow", "update", "execute", "-w", inp.case_id, "--name", "approve",
                                    "--input", '{"step": "disable_account", "approver": "alice", "reason": "ok"}')
        assert code == 0, out
        await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed",
                       attempts=2400)
        history = await handle.fetch_history()
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in [e.event_type for e in history.events]
        # `signoff explain` tells the garbage as refused attempts (QA: a typo'd "approver" crashed it).
        decoded = await decode_history(history, client.data_converter, source="live")
        text = render_explanation(explanation_from_history(decoded))
        assert "approve step None by (no approver given) (identity mallory@laptop) via signal" in text
        await handle.terminate("test done")
    assert (refused_updates, signalled) == (2 * len(BAD_INPUTS) + 2, len(BAD_INPUTS) - 1)
