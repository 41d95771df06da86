"""Vendor faults during a playbook: timeouts, 5xx, 429 storms, a vendor that accepts and never
confirms, a 4xx. Retries are bounded (ACTION_RETRY), the case ends in a clear state
(action_failed, earlier steps compensated per policy), and a case stuck retrying is visible in
the queue (CaseStatus=running, the pending call's attempt and last failure in `describe`).

On the time-skipping server: hours of retry back-off and timeouts pass in seconds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.executors import register, reset_cache
from activities.executors.base import ConnectorExecutor, State
from connectors.http import NonRetryableConnectorError, RetryableConnectorError
from connectors.lab import lab
from signoff.models import ActionTarget, ApprovalRequest, CaseStatus, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.reliability_kit import skip_time
from workflows.case import ACTION_RETRY, CaseWorkflow

WRITES: Counter[str] = Counter()  # vendor write attempts per host, across activity retries


class _FaultyEdr(ConnectorExecutor[None]):
    """isolate_host against a vendor that misbehaves in one way; reads come from the lab."""

    action = "isolate_host"
    verify_attempts = 5
    verify_interval = 0.01

    def connect(self) -> None:
        return None

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"network": "isolated"}

    async def read(self, target: ActionTarget) -> State:
        return {"network": lab().read("host", target.id)["network"]}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        WRITES[target.id] += 1
        await self.fault(target, state, idempotency_key)

    async def fault(self, target: ActionTarget, state: State, key: str) -> None:
        raise NotImplementedError


def _fault(name: str):  # type: ignore[no-untyped-def]
    def wrap(fn):  # type: ignore[no-untyped-def]
        cls = type(f"Faulty_{name}", (_FaultyEdr,), {"fault": fn})
        register("isolate_host", f"fault-{name}")(cls)
        return fn

    return wrap


@_fault("5xx")
async def _five_hundred(self, target, state, key):  # type: ignore[no-untyped-def]
    raise RetryableConnectorError("edr: HTTP 503 Service Unavailable", vendor="edr", status=503)


@_fault("429")
async def _rate_limited(self, target, state, key):  # type: ignore[no-untyped-def]
    raise RetryableConnectorError("edr: HTTP 429 Too Many Requests; retry after 600s", vendor="edr", status=429,
                                  retry_after=600)


@_fault("timeout")
async def _times_out(self, target, state, key):  # type: ignore[no-untyped-def]
    # What VendorClient raises when httpx's timeout (30 s) expires on every in-call retry. A call
    # that hangs with no client timeout at all is cut by ACTION_TIMEOUT (15 min) per attempt; the
    # time-skipping server cannot skip time under a running activity, so that is not tested here.
    await asyncio.sleep(0.05)
    raise RetryableConnectorError("edr: POST /devices/actions timed out after 30s (ReadTimeout)", vendor="edr")


@_fault("never-confirms")
async def _accepts_silently(self, target, state, key):  # type: ignore[no-untyped-def]
    return None  # 202 Accepted, and the host never shows up as isolated


@_fault("4xx")
async def _forbidden(self, target, state, key):  # type: ignore[no-untyped-def]
    raise NonRetryableConnectorError("edr: HTTP 403 the API client lacks the Hosts:write scope; grant it",
                                     vendor="edr", status=403)


FAULTS = {
    # fault: (vendor attempts expected, text the failure carries)
    "5xx": (ACTION_RETRY.maximum_attempts, "503"),
    "429": (ACTION_RETRY.maximum_attempts, "429"),
    "timeout": (ACTION_RETRY.maximum_attempts, "timed out"),
    "never-confirms": (ACTION_RETRY.maximum_attempts, "has not confirmed"),
    "4xx": (1, "403"),
}


@pytest.fixture(scope="module")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: cases other tests leave running (with
    activities in flight) would stop the shared one from skipping hours of back-off."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from tests.conftest import _binary, register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_vendor_fault_ends_in_a_clear_state(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setenv("SIGNOFF_BACKENDS", f"isolate_host=fault-{fault}")
    reset_cache()
    client = time_env.client
    try:
        async with build_worker(client, task_queue):
            inp = case_input(alert_type="network_intrusion")
            digest = int(inp.case_id[-8:], 16)
            ip, host = f"198.18.{digest % 256}.{digest // 256 % 256}", f"host-{inp.case_id}"  # unique per case
            handle = await start_case(client, task_queue, inp, alert("f1", ("ip", ip), ("host", host)))
            await wait_for(handle, awaiting("block_ip"), "waiting", attempts=2400)
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="block_ip", approver="alice",
                                                                              reason="C2 address"))
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="bob",
                                                                              reason="beaconing host"))
            seen_stuck = False
            view = await handle.query(CaseWorkflow.status)
            for _ in range(400):
                view = await handle.query(CaseWorkflow.status)
                if view.status in (CaseStatus.action_failed, CaseStatus.rollback_failed):
                    break
                if view.status == CaseStatus.running and not seen_stuck:
                    desc = await handle.describe()
                    pending = [p for p in desc.raw_description.pending_activities
                               if p.activity_type.name == "execute_action"]
                    status = desc.typed_search_attributes
                    if pending and pending[0].attempt > 1:
                        from signoff import search_attributes as sa

                        assert status.get(sa.CASE_STATUS) == "running"  # visible in the queue
                        assert pending[0].last_failure.message  # and why it is stuck
                        seen_stuck = True
                await skip_time(time_env, timedelta(minutes=5))
            else:
                pytest.fail(f"{fault}: the case never reached a final state: {view.status}")
            assert view.status == CaseStatus.action_failed, view.escalations
            failed = step(view, "isolate_host")
            assert failed.state == StepState.compensated  # it may have half-applied: its undo ran too
            want_attempts, text = FAULTS[fault]
            assert text in failed.error.lower() or text in failed.error, failed.error
            if want_attempts:
                assert WRITES[host] == want_attempts, f"{fault}: {WRITES[host]} vendor calls"
            assert step(view, "block_ip").state == StepState.compensated
            assert lab().read("ip", ip)["blocked"] is False  # the earlier step was undone
            assert lab().read("host", host)["network"] == "connected"
            assert any("isolate_host failed" in e for e in view.escalations)
            if fault != "4xx":
                history = await handle.fetch_history()
                from temporalio.api.enums.v1 import EventType

                attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
                assert max(attempts) == ACTION_RETRY.maximum_attempts  # bounded, never more
            if fault == "429":  # an hour of Retry-After: the stuck case must be visible meanwhile
                assert seen_stuck, "a case waiting out a 429 storm must be visible as running, with its last failure"
            await handle.terminate("test done")
    finally:
        reset_cache()


async def test_escalation_channel_down_never_fails_the_case(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The escalation webhook is down when an approval times out: the case stays open, escalated,
    says the escalation was not delivered, and can still be approved."""
    from tests.reliability_kit import free_port

    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK", f"http://127.0.0.1:{free_port()}/escalations")
    await _escalation_not_delivered(time_env, task_queue)


async def test_escalation_webhook_errors_never_reveal_its_url(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch, signoff_home: Path
) -> None:
    """QA: a webhook answering 500 put its URL (a bearer secret for Slack/Teams) into the case
    history and `signoff show`; and each retry appended another copy to the escalation queue."""
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(500)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "PLANTEDWEBHOOKTOKEN42"
    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/services/{secret}")
    try:
        handle, view = await _escalation_not_delivered(time_env, task_queue)
    finally:
        server.shutdown()
    history = (await handle.fetch_history()).to_json()
    assert secret not in history and secret not in view.model_dump_json()
    assert any("HTTP 500" in e for e in view.escalations), view.escalations
    queued = [line for line in (signoff_home / "escalations.jsonl").read_text().splitlines() if handle.id in line]
    assert len(queued) == 1, queued


async def _escalation_not_delivered(time_env: WorkflowEnvironment, task_queue: str) -> Any:
    from temporalio.client import WorkflowExecutionStatus

    client = time_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"h-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("e1", ("host", host)))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=2400)
        view = await handle.query(CaseWorkflow.status)
        for _ in range(200):
            await skip_time(time_env, timedelta(hours=1))
            view = await handle.query(CaseWorkflow.status)
            if any("could not be delivered" in e for e in view.escalations):
                break
        else:
            pytest.fail(f"the failed escalation was never recorded: {view.escalations}")
        assert view.status == CaseStatus.escalated
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert step(view, "isolate_host").state == StepState.escalated
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="late but confirmed"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "executed",
                       attempts=2400)
        assert lab().read("host", host)["network"] == "isolated"
        view = await handle.query(CaseWorkflow.status)
        await handle.terminate("test done")
        return handle, view
