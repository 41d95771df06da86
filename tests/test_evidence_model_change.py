"""Autonomy promotion counts only the evidence about the model that scores cases now.

SOC-lead QA pass (high): after `signoff model promote` (model B replaced A), `signoff autonomy promote`
still passed on analysts' verdicts that were all about A's scores. Real dev server; B is a small real
model trained on the committed GUIDE slice, A the shipped default (what cases get when governance names
no model, resolved by the workers' `resolve_model`).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner

from policies.engine import AutonomyPolicy
from signoff.autonomy.client import GovernanceRefused, govern, handle, signal_verdict
from signoff.autonomy.evidence import about_model, evidence, last_model_change
from signoff.autonomy.models import (
    AutonomyChange,
    Event,
    EvidenceRecord,
    GovernanceState,
    ModelChange,
    ModelState,
    ThresholdChange,
    VerdictRecord,
)
from signoff.cli import app
from signoff.models import Verdict
from signoff.sandbox import workflow_runner
from tests.autonomykit import _small_model_files
from tests.replay import recorded_patches
from tests.test_governance import _policy, _state_with, trusting_worker
from workflows.governance import EVIDENCE_ON_ACTIVE_MODEL, GovernanceWorkflow

BP, TP = Verdict.benign_positive, Verdict.true_positive
runner = CliRunner()


def _verdict(case: str, model_id: str | None, at: datetime | None = None) -> VerdictRecord:
    """A benign verdict on a case the model scored 0.99 (above the 0.9 threshold): evidence for promotion.
    `model_id` None: a record from before records kept the scoring model."""
    return VerdictRecord(case_id=case, alert_type="phishing", verdict=BP, analyst="alice", reason="review", at=at,
                         model_id=model_id, predicted=BP, benign_confidence=0.99, threshold=0.9)


async def _status(*args: str) -> dict:  # type: ignore[type-arg]
    result = await asyncio.to_thread(runner.invoke, app, ["autonomy", "status", "phishing", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def _backtest(*args: str) -> dict:  # type: ignore[type-arg]
    result = await asyncio.to_thread(runner.invoke, app, ["policy", "backtest", "phishing", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_promotion_after_a_model_change_needs_verdicts_on_the_new_models_scores(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signoff.autonomy.drift import save_reference
    from signoff.scoring import model_store

    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    _policy(policy_file, require_evidence=True, min_reviewed=3, miss_budget=0.7)
    shipped = model_store.default_model_id()  # A: what cases get while governance names no model
    new, blob, manifest, reference = _small_model_files()  # B: stored, not active
    model_store.save(new, blob, manifest)
    save_reference(new, reference)
    assert new != shipped and model_store.active_model_id() == shipped

    client = dev_env.client
    promote = AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol", reason="shadow evidence")
    demote = AutonomyChange(alert_type="phishing", level="in_the_loop", by="carol", reason="model change ahead")
    async with trusting_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                              reason="OOF"), task_queue)
        # Evidence while A scores cases: two records naming A, one from before records named their model.
        for rec in (_verdict("a0", shipped), _verdict("a1", shipped), _verdict("old0", None)):
            await signal_verdict(client, rec, task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 3, "3 verdicts")
        # No model named by governance: the workers' model store resolves A, and all three count.
        assert "on the loop" in await govern(client, "set_autonomy", promote, task_queue)
        await govern(client, "set_autonomy", demote, task_queue)

        for who in ("carol", "dave"):
            await govern(client, "promote_model", ModelChange(model_id=new, by=who, reason="retrained"), task_queue)
        with pytest.raises(GovernanceRefused) as refused:
            await govern(client, "set_autonomy", promote, task_queue)
        why = str(refused.value)
        assert f"Model {new[:12]} scores cases now: 0 reviewed cases are about it, 3 were about earlier models" in why
        assert f"review 3 more cases scored by {new[:12]}" in why and "not enough evidence: 0 reviewed" in why
        row = await _status()
        ev = row["evidence"]
        assert (ev["active_model_id"], ev["reviewed_active_model"], ev["reviewed_earlier_models"]) == (new, 0, 3)
        assert not ev["recommend_promotion"] and row["reviewed_before_model_change"] == 3
        # The threshold backtest reads the same evidence: A's confidences are left out unless asked for.
        bt = await _backtest()
        assert (bt["scored"], bt["scored_by_other_models"], bt["active_model"]) == (0, 3, new), bt
        assert "left out, as a promotion leaves them out" in bt["caveats"][-1]
        assert (await _backtest("--all-models"))["scored"] == 3

        # Verdicts after the change: B's scores count, an old-style record counts (no model change after
        # it), a case A scored whose verdict came late does not.
        state = await _state_with(client, task_queue, lambda s: s.model.active == new, "B active")
        changed = last_model_change(state)
        assert changed is not None
        await asyncio.sleep(max((changed.replace(microsecond=0) + timedelta(seconds=1)
                                 - datetime.now(UTC)).total_seconds(), 0))  # records keep whole seconds
        for rec in (_verdict("b0", new), _verdict("old1", None), _verdict("old2", None), _verdict("a2", shipped)):
            await signal_verdict(client, rec, task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 7, "7 verdicts")
        row = await _status()
        assert (row["evidence"]["reviewed_active_model"], row["evidence"]["reviewed_earlier_models"]) == (3, 4)
        assert row["evidence"]["recommend_promotion"]
        assert ((await _backtest())["scored"], (await _backtest("--all-models"))["scored"]) == (3, 7)
        assert "on the loop" in await govern(client, "set_autonomy", promote, task_queue)

        history = await handle(client, task_queue).fetch_history()
    assert EVIDENCE_ON_ACTIVE_MODEL in recorded_patches(history)
    replayed = await Replayer(workflows=[GovernanceWorkflow], data_converter=pydantic_data_converter,
                              workflow_runner=workflow_runner()).replay_workflow(history)
    assert replayed.replay_failure is None


def test_records_without_a_model_count_only_when_no_model_change_came_after_them() -> None:
    change = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    model_b = "b" * 64

    def rec(case: str, model: str | None, minutes: int) -> EvidenceRecord:
        return EvidenceRecord.of(_verdict(case, model, change + timedelta(minutes=minutes)))

    records = (rec("legacy-before", None, -5), rec("legacy-after", None, 5), rec("a", "a" * 64, 10),
               rec("b", model_b, -10), EvidenceRecord(case_id="unscored", verdict=TP))
    mine, other = about_model(records, model_b, change)
    assert [r.case_id for r in mine] == ["legacy-after", "b"] and [r.case_id for r in other] == ["legacy-before", "a"]
    mine, other = about_model(records, model_b, None)  # the model never changed: every old record is about it
    assert [r.case_id for r in mine] == ["legacy-before", "legacy-after", "b"]
    policy = AutonomyPolicy(min_reviewed=3, miss_budget=0.7)
    ev = evidence("phishing", records, 0.9, policy, active_model_id=model_b, model_changed_at=change)
    assert (ev.reviewed, ev.reviewed_active_model, ev.reviewed_earlier_models, ev.model.scored) == (5, 2, 2, 2)
    assert not ev.recommend_promotion and f"review 1 more cases scored by {model_b[:12]}" in ev.recommendation
    assert evidence("phishing", records, 0.9, policy).model.scored == 4  # not asked about a model: as before

    # The change is the newest promote/rollback event; when the state no longer keeps it (bounded events)
    # although a model was changed, the oldest kept event bounds it.
    events = (Event(revision=1, at=change, kind="model_promote", by="carol", reason="r"),
              Event(revision=2, at=change + timedelta(hours=1), kind="model_rollback", by="dave", reason="r"),
              Event(revision=3, at=change + timedelta(hours=2), kind="threshold", by="carol", reason="r"))
    assert last_model_change(GovernanceState(events=events)) == change + timedelta(hours=1)
    assert last_model_change(GovernanceState(events=events[2:])) is None
    pruned = GovernanceState(events=events[2:], model=ModelState(active=model_b, history=("",)))
    assert last_model_change(pruned) == change + timedelta(hours=2)


def test_evidence_record_arrays_round_trip_in_the_old_and_new_shapes() -> None:
    old_arrays = [["guide-1-1", "BBa", 0.99, 1764417600],
                  ["guide-1-2", "TB", 0.5, 1764417601, "a" * 16, "F", 0.25],
                  ["guide-1-3", "F-", None, 1764417602]]
    for array in old_arrays:  # records in running governance states and recorded histories: unchanged
        rec = EvidenceRecord.model_validate(array)
        assert rec.model_id is None
        assert json.dumps(rec.model_dump(mode="json")) == json.dumps(array)
    new_arrays = [["guide-1-4", "BBa", 0.99, 1764417600, None, None, None, "b" * 16],
                  ["guide-1-5", "TB", 0.5, 1764417601, "a" * 16, "F", 0.25, "b" * 16]]
    for array in new_arrays:
        rec = EvidenceRecord.model_validate(array)
        assert rec.model_id == "b" * 16
        assert json.dumps(rec.model_dump(mode="json")) == json.dumps(array)
    assert EvidenceRecord.of(_verdict("c", "c" * 64)).model_id == "c" * 16  # the prefix, as for candidates

    # The governance state carries them as columns: the model columns only when a record names its model.
    old_state = GovernanceState(recent={"phishing": tuple(EvidenceRecord.model_validate(a) for a in old_arrays)})
    old_json = pydantic_data_converter.payload_converter.to_payloads([old_state])[0].data
    assert b"model" not in json.dumps(json.loads(old_json)["recent"]).encode()
    [back] = pydantic_data_converter.payload_converter.from_payloads(
        pydantic_data_converter.payload_converter.to_payloads([old_state]), [GovernanceState])
    assert back == old_state and pydantic_data_converter.payload_converter.to_payloads([back])[0].data == old_json
    mixed = GovernanceState(recent={"phishing": tuple(EvidenceRecord.model_validate(a)
                                                      for a in [*old_arrays, *new_arrays])})
    payload = pydantic_data_converter.payload_converter.to_payloads([mixed])[0]
    [back] = pydantic_data_converter.payload_converter.from_payloads([payload], [GovernanceState])
    assert back == mixed and [r.model_id for r in back.recent["phishing"]] == [None, None, None, "b" * 16, "b" * 16]
    assert json.loads(payload.data)["recent"]["phishing"]["model_codes"] == "---00"


async def test_drift_override_rate_counts_only_verdicts_on_the_model_in_force(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift check judges the model in force: analysts overruling A's scores say nothing about B (and
    A's agreed verdicts would hide B's overrides)."""
    import yaml

    from signoff.autonomy.drift import save_reference
    from signoff.autonomy.models import DriftCheckInput
    from signoff.scoring import model_store
    from workflows.drift import DriftCheckWorkflow

    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    policy = yaml.safe_load(policy_file.read_text())
    policy["drift"].update(min_verdicts=3, override_rate=0.5)
    policy_file.write_text(yaml.safe_dump(policy))
    shipped = model_store.default_model_id()
    new, blob, manifest, reference = _small_model_files()
    model_store.save(new, blob, manifest)
    save_reference(new, reference)
    client = dev_env.client

    async def overrides(n: int) -> tuple[int, float | None]:
        report = await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(act=False),
                                               id=f"drift-{n}-{task_queue}", task_queue=task_queue)
        (finding,) = [f for f in report.findings if f.alert_type == "phishing"]
        return finding.verdicts, finding.override_rate

    def overruled(case: str, model_id: str) -> VerdictRecord:  # the model said benign, the analyst TP
        return _verdict(case, model_id).model_copy(update=dict(verdict=TP))

    async with trusting_worker(client, task_queue):
        for i in range(3):
            await signal_verdict(client, overruled(f"a{i}", shipped), task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 3, "3 verdicts")
        assert await overrides(1) == (3, 1.0)
        for who in ("carol", "dave"):
            await govern(client, "promote_model", ModelChange(model_id=new, by=who, reason="retrained"), task_queue)
        await _state_with(client, task_queue, lambda s: s.model.active == new, "B active")
        assert await overrides(2) == (0, None)  # A's overrides are not B's: too few verdicts to judge
        for i in range(3):
            await signal_verdict(client, _verdict(f"b{i}", new), task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 6, "6 verdicts")
        assert await overrides(3) == (3, 0.0)
