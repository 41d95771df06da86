"""The approval gateway (signoff/gateway.py): people decide through it and can do nothing else.

A real dev server; the worker talks to it directly (workers hold `write`), the people's clients and
the `signoff` CLI talk to the gateway in front of it. Through the gateway an approval, a rollback,
a note and a governance change work, and listing and explaining cases work; starting a case,
sending it alerts, the workers' own updates, terminating, cancelling, resetting and polling a task
queue are refused with PERMISSION_DENIED and a line that says who does them instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest, ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from signoff.gateway import start_gateway
from signoff.models import AlertBatch, ApprovalRequest, NoteRequest, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow


@pytest.fixture
async def through_gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[tuple[Client, str]]:
    upstream = dev_env.client.service_client.config.target_host
    server, port = await start_gateway("127.0.0.1:0", upstream, dev_env.client.namespace)
    address = f"127.0.0.1:{port}"
    try:
        yield await Client.connect(address, namespace=dev_env.client.namespace,
                                   data_converter=pydantic_data_converter), address
    finally:
        await server.stop(grace=None)


async def _refused(call: object, caplog: pytest.LogCaptureFixture, words: str) -> None:
    logged = sum('"outcome": "refused"' in r.getMessage() for r in caplog.records)
    with pytest.raises(RPCError) as err:
        await call  # type: ignore[misc]
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED, err.value
    assert words in err.value.message, err.value.message
    assert sum('"outcome": "refused"' in r.getMessage() for r in caplog.records) == logged + 1  # this one, logged


async def test_people_decide_through_the_gateway_and_can_do_nothing_else(
    dev_env: WorkflowEnvironment, task_queue: str, through_gateway: tuple[Client, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.gateway")
    person, _ = through_gateway
    async with build_worker(dev_env.client, task_queue):
        inp = case_input(requested_by="bob")
        await start_case(dev_env.client, task_queue, inp, alert("g1", ("account", f"u-{inp.case_id}")))
        handle = person.get_workflow_handle_for(CaseWorkflow.run, inp.case_id)
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)

        # What people do: read, list, write in the log, approve.
        assert [wf.id async for wf in person.list_workflows(f"WorkflowId = '{inp.case_id}'")] == [inp.case_id]
        await handle.fetch_history()
        await handle.execute_update(CaseWorkflow.note, NoteRequest(author="alice", text="seen it"))
        answer = await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
            step="disable_account", approver="alice", reason="credential stuffing"))
        assert answer.startswith("approved"), answer
        view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        forwarded = [json.loads(r.getMessage()) for r in caplog.records if '"forwarded"' in r.getMessage()]
        assert [(f["method"], f["name"]) for f in forwarded] == [
            ("UpdateWorkflowExecution", "note"), ("UpdateWorkflowExecution", "approve")]

        # A refused decision is the workflow's answer, passed back as Temporal gave it.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                step="revoke_sessions", approver="bob", reason="my own case"))
        assert "tier critical needs one of" in str(refused.value.cause)

        # What only ingest, workers and on-call operators do.
        await _refused(handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, alerts=(
            alert("g2", ("host", "ceo-laptop")),))), caplog, "ingest sends alerts")
        await _refused(person.start_workflow(CaseWorkflow.run, case_input(), id="hand-made", task_queue=task_queue),
                       caplog, "starting a workflow (cases are opened by ingest)")
        await _refused(handle.execute_update("accept_merge", {"source": "x"}), caplog, "update 'accept_merge'")
        await _refused(handle.execute_update("take_over_hold", {}), caplog, "update 'take_over_hold'")
        await _refused(handle.terminate("insider"), caplog, "terminating a workflow")
        await _refused(handle.cancel(), caplog, "cancelling a workflow")
        await _refused(person.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=person.namespace)), caplog, "resetting a workflow")
        await _refused(person.workflow_service.poll_workflow_task_queue(PollWorkflowTaskQueueRequest(
            namespace=person.namespace)), caplog, "PollWorkflowTaskQueue")
        await _refused(person.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace="another")), caplog, "this gateway serves")
        assert (await dev_env.client.get_workflow_handle(inp.case_id).describe()).status.name == "RUNNING"
        assert view.alert_count == 1


async def test_the_signoff_cli_approves_and_changes_governance_through_the_gateway(
    dev_env: WorkflowEnvironment, task_queue: str, through_gateway: tuple[Client, str], policy_file: Path,
    tmp_path: Path,
) -> None:
    _, address = through_gateway
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "SIGNOFF_HOME": str(tmp_path), "SIGNOFF_POLICY": str(policy_file),
           "SIGNOFF_TASK_QUEUE": task_queue}

    async def signoff(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "signoff.cli", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode or 0, " ".join(out.decode().split())

    async with build_worker(dev_env.client, task_queue):
        inp = case_input(requested_by="bob")
        await start_case(dev_env.client, task_queue, inp, alert("c1", ("account", f"u-{inp.case_id}")))
        await wait_for(dev_env.client.get_workflow_handle_for(CaseWorkflow.run, inp.case_id),
                       awaiting("disable_account"), "disable_account waiting", attempts=2400)
        code, out = await signoff("approve", inp.case_id, "disable_account", "--as", "alice", "--reason", "confirmed")
        assert code == 0, out
        code, out = await signoff("policy", "set-threshold", "phishing", "0.99", "--as", "carol", "--reason", "evidence")
        assert code == 0, out
        code, out = await signoff("cases", "--json", "--limit", "0")
        assert code == 0 and inp.case_id in out, out
        code, out = await signoff("drift", "check")  # starts a workflow: an operator's job
        assert code != 0 and "refused by the approval gateway" in out, out


def _certificates(tmp_path: Path) -> dict[str, bytes]:
    """A CA, the gateway's server certificate (127.0.0.1) and a person's client certificate (CN alice)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signoff test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))

    def issued(cn: str, serial: int, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), pem_key(key)

    server_cert, server_key = issued("gateway", 2, True)
    client_cert, client_key = issued("alice", 3, False)
    return {"ca": ca.public_bytes(serialization.Encoding.PEM), "server_cert": server_cert, "server_key": server_key,
            "client_cert": client_cert, "client_key": client_key}


async def test_under_mutual_tls_the_log_names_the_person_and_strangers_get_nothing(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from temporalio.service import TLSConfig

    from signoff.gateway import ServerTLS

    caplog.set_level(logging.INFO, logger="signoff.gateway")
    pems = _certificates(tmp_path)
    server, port = await start_gateway(
        "127.0.0.1:0", dev_env.client.service_client.config.target_host, dev_env.client.namespace,
        tls=ServerTLS(pems["server_cert"], pems["server_key"], pems["ca"]))
    try:
        alice = await Client.connect(f"127.0.0.1:{port}", namespace=dev_env.client.namespace,
                                     data_converter=pydantic_data_converter,
                                     tls=TLSConfig(server_root_ca_cert=pems["ca"], client_cert=pems["client_cert"],
                                                   client_private_key=pems["client_key"]))
        async with build_worker(dev_env.client, task_queue):
            inp = case_input(requested_by="bob")
            await start_case(dev_env.client, task_queue, inp, alert("t1", ("account", f"u-{inp.case_id}")))
            handle = alice.get_workflow_handle_for(CaseWorkflow.run, inp.case_id)
            await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
            await handle.execute_update(CaseWorkflow.note, NoteRequest(author="alice", text="on it"))
        lines = [json.loads(r.getMessage()) for r in caplog.records if '"forwarded"' in r.getMessage()]
        assert [(x["name"], x["client"]) for x in lines] == [("note", "alice")]
        with pytest.raises(RuntimeError):  # no client certificate: the TLS handshake fails, nothing is served
            await Client.connect(f"127.0.0.1:{port}", namespace=dev_env.client.namespace,
                                 tls=TLSConfig(server_root_ca_cert=pems["ca"]))
    finally:
        await server.stop(grace=None)


async def test_a_busy_refusal_comes_through_the_gateway_and_the_sent_again_note_gets_in(
    dev_env: WorkflowEnvironment, task_queue: str, through_gateway: tuple[Client, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A case refuses updates as busy while a step's capture (a local activity, `local-capture`) is in flight:
    the gateway passes that refusal back as it came, and a client that sends the update again (signoff/busy.py,
    as the CLI and the chat bridge do) gets in once the capture is done."""
    from datetime import timedelta

    import tests.test_local_result_race as race
    from signoff.busy import CASE_BUSY, while_busy
    from workflows import case as case_module

    race.GATES = race.Gates()
    race.GATES.first_call_go.set()  # the first step runs; the second step's capture is held
    monkeypatch.setattr(case_module, "CAPTURE_LOCAL_BUDGET", timedelta(seconds=race.WAIT * 2), raising=False)
    person, _ = through_gateway
    alert_type, category, entities = race.derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type)
    note = NoteRequest(author="carol", text="user confirms the download")
    async with race._worker(dev_env.client, task_queue):
        # A short task timeout: the SDK completes the task (heartbeat) while the held capture runs.
        await dev_env.client.start_workflow(
            race.RacedCase.run, inp, id=inp.case_id, task_queue=task_queue, task_timeout=timedelta(seconds=2),
            start_signal="add_alerts", start_signal_args=[AlertBatch(case_id=inp.case_id, alerts=(
                alert(f"{inp.case_id}-1", *entities, category=category),))])
        assert await asyncio.to_thread(race.GATES.capture_started.wait, race.WAIT), "the second step never captured"
        handle = person.get_workflow_handle_for(CaseWorkflow.run, inp.case_id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.note, note, id="gateway-note")
        assert getattr(refused.value.cause, "type", None) == CASE_BUSY, refused.value.cause
        sends = []

        async def send() -> str:
            sends.append(1)
            return await handle.execute_update(CaseWorkflow.note, note, id="gateway-note")

        sent = asyncio.create_task(while_busy(send, inp.case_id))
        for _ in range(race.WAIT * 20):
            if len(sends) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(sends) >= 2 and not sent.done(), "the refused note was not sent again"
        race.GATES.capture_go.set()
        assert await asyncio.wait_for(sent, race.WAIT) == "note 1 added by carol"
        await dev_env.client.get_workflow_handle(inp.case_id).terminate("test done")
