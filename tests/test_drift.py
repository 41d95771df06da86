"""Drift on the real Temporal dev server: a shifted slice of GUIDE data demotes, clean data does not."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from policies.loader import load_policy
from signoff.autonomy.client import GovernanceRefused, govern, read_state
from signoff.autonomy.models import AutonomyChange, DriftCheckInput, DriftReport, ModelChange, ThresholdChange
from signoff.models import CaseStatus, DecisionKind
from signoff.worker import build_worker
from tests.autonomykit import case_of, split, strip_verdicts, train_small
from tests.casekit import wait_for
from workflows.case import CaseWorkflow
from workflows.drift import DriftCheckWorkflow

CASES = 60  # held-out phishing incidents per run


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A model store of the test's own: promotions here never touch other tests' active model."""
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    yield tmp_path / "home"


async def _run_cases(client: Client, queue: str, prefix: str, shifted: bool) -> list[str]:
    policy = load_policy()
    _, held = split()
    phishing = [i for i in held if policy.alert_type_for_category(i.category) == "phishing"][:CASES]
    assert len(phishing) == CASES
    handles = []
    for incident in phishing:
        alerts = strip_verdicts(incident.alerts) if shifted else incident.alerts
        inp = case_of(incident, "phishing", prefix, alerts)
        handles.append(await client.start_workflow(CaseWorkflow.run, inp, id=inp.case_id, task_queue=queue))
    for handle in handles:
        await wait_for(handle, lambda v: v.decision is not None, "decided", attempts=600)
    # Visibility is eventually consistent: wait until the drift check can list every case.
    query = f"WorkflowType = 'CaseWorkflow' AND TaskQueue = '{queue}' AND AlertType = 'phishing'"
    for _ in range(200):
        if (await client.count_workflows(query)).count >= CASES:
            break
        await asyncio.sleep(0.1)
    return [h.id for h in handles]


async def _promote_phishing(client: Client, queue: str, model_id: str) -> None:
    for who in ("carol", "dave"):  # model promotion: quorum of two governance-role holders
        await govern(client, "promote_model", ModelChange(model_id=model_id, by=who, reason="test model"), queue)
    await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                          reason="test"), queue)
    await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol",
                                                        reason="test"), queue)


async def _check(client: Client, queue: str) -> DriftReport:
    return await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(), id=f"drift-{queue}",
                                         task_queue=queue)


async def test_shifted_guide_slice_demotes_and_opens_a_drift_case(
    dev_env: WorkflowEnvironment, policy_file: Path, isolated_home: Path
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["autonomy"]["require_evidence"] = False
    policy_file.write_text(yaml.safe_dump(policy))
    train, _ = split()
    model_id = train_small(train)
    client = dev_env.client

    # Clean held-out data: the figures stay within policy, nothing changes.
    clean_q = f"drift-clean-{os.getpid()}"
    async with build_worker(client, clean_q):
        await _promote_phishing(client, clean_q, model_id)
        await _run_cases(client, clean_q, "clean", shifted=False)
        report = await _check(client, clean_q)
        state = await read_state(client, clean_q)
    assert report.model_id == model_id and report.reference == "guide_slice (test)"
    phishing = next(f for f in report.findings if f.alert_type == "phishing")
    assert phishing.cases == CASES and phishing.feature_psi_max is not None and phishing.score_psi is not None
    assert not phishing.breaches, phishing
    assert report.demoted == () and report.drift_case_id is None
    assert state is not None and state.alert_types["phishing"].autonomy == "on_the_loop"

    # The same incidents after a connector stops sending the evidence's verdict fields.
    shifted_q = f"drift-shifted-{os.getpid()}"
    async with build_worker(client, shifted_q):
        await _promote_phishing(client, shifted_q, model_id)
        await _run_cases(client, shifted_q, "shifted", shifted=True)
        report = await _check(client, shifted_q)
        phishing = next(f for f in report.findings if f.alert_type == "phishing")
        assert phishing.breaches and "input feature verdict_" in phishing.breaches[0]
        assert phishing.feature_psi_max is not None and phishing.feature_psi_max > 0.25
        assert report.demoted == ("phishing",)

        state = await read_state(client, shifted_q)
        assert state is not None
        assert state.alert_types["phishing"].autonomy == "in_the_loop"
        assert state.alert_types["phishing"].autonomy_by == "signoff-drift"
        drift_events = [e for e in state.events if e.kind == "drift"]
        assert drift_events and "verdict_" in drift_events[-1].reason
        assert state.last_drift is not None and state.last_drift.demoted == ("phishing",)
        # Until a clean drift check, promoting it again is refused (and recorded).
        with pytest.raises(GovernanceRefused, match="found drift on phishing"):
            await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop",
                                                                by="carol", reason="re-promote"), shifted_q)

        # The drift case waits for a detection engineer; it is never automated.
        assert report.drift_case_id
        drift_case = client.get_workflow_handle(report.drift_case_id)
        view = await wait_for(drift_case, lambda v: v.decision is not None, "drift case decided")
        assert view.alert_type == "model_drift" and view.status != CaseStatus.auto_closed
        assert "verdict_" in view.title

        # The breach goes on: the next check adds its figures to the open drift case (QA: a new
        # high-severity case per hourly check). The alert type stays demoted; nothing new to demote.
        again = await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(), id=f"drift-again-{shifted_q}",
                                              task_queue=shifted_q)
        assert again.drift_case_id == report.drift_case_id and again.drift_case_joined
        assert again.demoted == () and not report.drift_case_joined
        view = await wait_for(drift_case, lambda v: len(v.timeline) == 2, "second measurement on the drift case")
        assert "verdict_" in view.timeline[-1].attributes["breaches"]
        state = await read_state(client, shifted_q)
        assert state is not None and state.alert_types["phishing"].autonomy == "in_the_loop"

        # New phishing cases go to an analyst again.
        _, held = split()
        incident = next(i for i in held if load_policy().alert_type_for_category(i.category) == "phishing")
        inp = case_of(incident, "phishing", "after")
        handle = await client.start_workflow(CaseWorkflow.run, inp, id=inp.case_id, task_queue=shifted_q)
        view = await wait_for(handle, lambda v: v.decision is not None, "decided")
        assert view.decision is not None and view.decision.kind != DecisionKind.auto_close
        assert view.decision.autonomy == "in_the_loop"
