"""QA5: after a drift breach, a clean drift check lets the alert type be promoted again.

docs/autonomy.md: a breach "blocks re-promotion until a clean check", and the refusal says "promote after
a clean drift check". Found following it on the demo's server: `signoff drift check` came back clean for
phishing, and `signoff autonomy promote phishing` was still refused on the breach of the check before.
A clean check never reached the governance workflow (only breaching ones did), so its `last_drift` kept
the old breach for good. Real dev server, real worker, real cases, the policy's own drift rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.autonomy.client import govern, read_state
from signoff.autonomy.models import AutonomyChange, DriftCheckInput, ThresholdChange
from signoff.ingest import ingest_path
from signoff.models import CaseStatus, CloseRequest, Verdict
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow
from workflows.drift import DriftCheckWorkflow

CASES = 4


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    yield tmp_path / "home"


def _set_policy(path: Path, **drift: float) -> None:
    policy = yaml.safe_load(path.read_text())
    policy["autonomy"]["require_evidence"] = False
    policy["drift"].update(drift)
    path.write_text(yaml.safe_dump(policy))


async def test_a_clean_drift_check_lifts_the_block_on_promotion(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, policy_file: Path, isolated_home: Path) -> None:
    client = dev_env.client
    _set_policy(policy_file, min_verdicts=CASES)
    org = _unique_org()
    store = AlertStore(tmp_path / "alerts.db")

    async def check(n: int) -> list[str]:
        report = await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(),
                                               id=f"drift-{n}-{task_queue}", task_queue=task_queue)
        return [b for f in report.findings if f.alert_type == "phishing" for b in f.breaches]

    async with build_worker(client, task_queue):
        rows = [_row(org, n, 100 + n, n) for n in range(1, CASES + 1)]
        await ingest_path(client, _guide_csv(tmp_path / "a.csv", rows), "guide", store=store, task_queue=task_queue)
        for n in range(1, CASES + 1):  # every analyst overrules the model: an override-rate breach
            handle = client.get_workflow_handle_for(CaseWorkflow.run, f"guide-{org}-{n}")
            view = await wait_for(handle, lambda v: v.status != CaseStatus.triage, "triaged", attempts=600)
            assert view.score is not None
            overrule = (Verdict.false_positive if view.score.predicted == Verdict.true_positive
                        else Verdict.true_positive)
            await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=overrule,
                                                                         reason="the model was wrong"))
            await handle.result()
        for _ in range(300):  # until the governance workflow has counted every verdict
            state = await read_state(client, task_queue)
            if state is not None and len(state.recent.get("phishing", ())) == CASES:
                break
            await asyncio.sleep(0.05)

        assert any("overrode" in b for b in await check(1))  # the breach
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.99, by="carol",
                                                              reason="test"), task_queue)

        _set_policy(policy_file, min_verdicts=CASES, override_rate=1.0)  # now within policy: a clean check
        assert await check(2) == []
        state = await read_state(client, task_queue)
        assert state is not None and state.last_drift is not None
        assert not [f for f in state.last_drift.findings if f.alert_type == "phishing" and f.breaches]
        said = await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop",
                                                                   by="carol", reason="clean check"), task_queue)
        assert "on the loop" in str(said) or "on_the_loop" in str(said), said
    store.close()
