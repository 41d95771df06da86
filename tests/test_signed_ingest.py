"""Signed case input (policies/ingest_signing.py): under `require_signed_ingest` a case acts only on
what an ingester signed.

QA7 F4: approving needs Temporal `write`, and `write` also starts and signals workflows, so anyone
who may approve could start a case of their own making (its playbook aimed at entities they typed
in), claim the id of a case ingest was about to open, or slip alerts into a running case. Real dev
server; the policy file requires signed input and lists the ingesters' key; ingest signs with the
key in SIGNOFF_INGEST_KEY_FILE, as `signoff ingest` and the workers do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.engine import Policy, promise_violations
from policies.ingest_signing import ingest_refusal, sign_input
from policies.loader import load_policy
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.ingest import CaseDraft, _signal_with_start
from signoff.keys import INGEST_KEY_ENV, ingest_policy_lines, write_key_file
from signoff.models import AlertBatch, CaseStatus, DecisionKind, MergeDelivery, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow


@pytest.fixture
def ingest_key(tmp_path: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    """The ingesters' key (this process is the ingester and the worker), listed in a policy that
    requires signed input: the lines `signoff keys ingest-create` prints."""
    path = tmp_path / "keys" / "ingest.ed25519"
    key = write_key_file(path)
    monkeypatch.setenv(INGEST_KEY_ENV, str(path))
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"].update(yaml.safe_load(ingest_policy_lines(key))["deployment"])
    policy_file.write_text(yaml.safe_dump(policy))
    assert load_policy().deployment.require_signed_ingest
    return key


async def _ingest(client: Client, task_queue: str, case_id: str, *alerts: object) -> None:
    draft = CaseDraft(case_id=case_id, alert_type="compromised_account", title="test case", alerts=list(alerts))  # type: ignore[arg-type]
    await _signal_with_start(client, CaseWorkflow, draft, draft.alerts, "signoff-ingest", task_queue)


async def test_a_case_ingest_opens_runs_and_refuses_alerts_sent_by_hand(
    dev_env: WorkflowEnvironment, task_queue: str, ingest_key: Ed25519PrivateKey,
) -> None:
    client = dev_env.client
    async with build_worker(client, task_queue):
        cid = case_input().case_id
        account = f"u-{cid}"
        await _ingest(client, task_queue, cid, alert("s1", ("account", account)))
        handle = client.get_workflow_handle_for(CaseWorkflow.run, cid)
        view = await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        assert view.unsigned_input == () and view.decision is not None
        assert "signed by an ingester" not in view.decision.reason  # the model's decision, the playbook planned

        # Someone with Temporal write slips alerts in by hand: unsigned, then with a forged signature,
        # then a batch an ingester signed, altered after signing. None joins the case.
        unsigned = AlertBatch(case_id=cid, alerts=(alert("x1", ("host", "ceo-laptop")),), batch_id="x1")
        forged = sign_input(Ed25519PrivateKey.generate(), unsigned.model_copy(update={"batch_id": "x2"}))
        genuine = sign_input(ingest_key, AlertBatch(case_id=cid, alerts=(alert("x3", ("host", "build-7")),),
                                                    batch_id="x3"))
        altered = genuine.model_copy(update={"alerts": (alert("x3", ("host", "ceo-laptop")),)})
        for batch in (unsigned, forged, altered):
            await handle.signal(CaseWorkflow.add_alerts, batch)
        view = await wait_for(handle, lambda v: len(v.refused_batches) == 3, "three batches refused")
        reasons = [b.reason for b in view.refused_batches]
        assert "carry no ingester signature" in reasons[0]
        assert all("no key in deployment.ingest_keys verifies" in r for r in reasons[1:]), reasons
        assert [b.alert_uids for b in view.refused_batches] == [("x1",), ("x1",), ("x3",)]
        assert view.alert_count == 1 and ("host", "ceo-laptop") not in {(e.type, e.value) for e in view.entities}
        # ... while what the ingester signed, as it signed it, does.
        await handle.signal(CaseWorkflow.add_alerts, genuine)
        view = await wait_for(handle, lambda v: v.alert_count == 2, "the signed batch taken")
        assert ("host", "build-7") in {(e.type, e.value) for e in view.entities}
        assert step(view, "disable_account").state == StepState.awaiting_approval

        # A merge delivery typed by hand is refused: only a worker's signed delivery merges.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("accept_merge", MergeDelivery(
                source="case-elsewhere", target=cid, by="carol", reason="same incident", at=view.first_seen,
                batch=AlertBatch(case_id=cid, alerts=(alert("m1", ("host", "ceo-laptop")),), batch_id="merge:x")))
        assert "takes no merge delivery a Signoff worker did not sign" in str(refused.value.cause)

        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        text = render_explanation(explanation_from_history(history, await handle.query(CaseWorkflow.status)))
        assert "Alerts refused at" in text and "x1" in text
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await handle.fetch_history())


async def test_a_case_started_by_hand_runs_nothing_even_after_ingest_sends_it_signed_alerts(
    dev_env: WorkflowEnvironment, task_queue: str, ingest_key: Ed25519PrivateKey,
) -> None:
    """An insider claims a case id first (unsigned start, alerts of their choosing): the case is a human's
    alone, no playbook is planned (it would aim at entities typed by hand), and the genuine alerts
    ingest then delivers to that id do not make it trusted."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("h1", ("account", "ceo")))
        await _ingest(client, task_queue, inp.case_id, alert("h2", ("account", f"u-{inp.case_id}")))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_verdict, "with an analyst",
                              attempts=2400)
        assert view.steps == () and view.decision is not None and view.decision.kind == DecisionKind.analyst
        assert "not (all) signed by an ingester" in view.decision.reason
        assert any(p.startswith("the case's start: the case's start carry no ingester signature")
                   for p in view.unsigned_input), view.unsigned_input
        assert any("unsigned input" in e for e in view.escalations)
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history, view)
        assert [e.get("kind") for e in ex["escalations"]] == ["unsigned_input"]
        assert "NOT FROM AN INGESTER" in render_explanation(ex)
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await handle.fetch_history())


def test_the_policy_requires_a_key_when_it_requires_signed_input() -> None:
    policy = load_policy()
    raw = policy.model_dump(mode="json")
    raw["deployment"]["require_signed_ingest"] = True
    problems = promise_violations(Policy.model_validate(raw))
    assert any("deployment.ingest_keys is empty" in p and "signoff keys ingest-create" in p for p in problems)
    raw["deployment"]["ingest_keys"] = ["not-a-key"]
    problems = promise_violations(Policy.model_validate(raw))
    assert any("deployment.ingest_keys[0] is not a base64 Ed25519 public key" in p for p in problems)


def test_a_policy_without_the_fields_keeps_its_version_and_checks_nothing() -> None:
    policy = load_policy()
    raw = policy.model_dump(mode="json")
    raw["deployment"].pop("ingest_keys")
    raw["deployment"].pop("require_signed_ingest")
    assert Policy.model_validate(raw).digest() == policy.digest()
    assert ingest_refusal(policy, case_input()) is None  # the lab: unsigned input is fine


async def test_signoff_ingest_without_the_key_refuses_before_opening_anything(
    dev_env: WorkflowEnvironment, ingest_key: Ed25519PrivateKey, policy_file: Path, tmp_path: Path,
) -> None:
    import asyncio
    import os
    import sys

    env = {**os.environ, "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_POLICY": str(policy_file),
           INGEST_KEY_ENV: str(tmp_path / "nowhere.ed25519")}
    data = Path(__file__).parent / "data" / "guide_slice.csv"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "signoff.cli", "ingest", str(data),
                                                "--format", "guide", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    text = " ".join(err.decode().split())
    assert proc.returncode != 0, out
    assert "requires signed case input" in text and "SIGNOFF_INGEST_KEY_FILE" in text, text
    assert not (tmp_path / "home" / "alerts.db").exists()  # nothing ingested
