"""Model lifecycle on the real Temporal dev server: governed promotion (quorum), shadow candidate,
rollback restoring bit-identical scores, retraining from analysts' verdicts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.retrain import RetrainRequest
from policies.loader import load_policy
from signoff.autonomy.client import GovernanceRefused, govern, read_state
from signoff.autonomy.models import ModelChange, ModelRollback
from signoff.models import CaseView, CloseRequest, Verdict
from signoff.scoring import model_store
from signoff.worker import build_worker
from tests.autonomykit import case_of, split, train_small
from tests.casekit import wait_for
from workflows.case import CaseWorkflow
from workflows.retrain import RetrainWorkflow


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    yield tmp_path / "home"


def _phishing_held_out() -> list:  # type: ignore[type-arg]
    policy = load_policy()
    _, held = split()
    return [i for i in held if policy.alert_type_for_category(i.category) == "phishing"]


async def _scored(client: Client, queue: str, prefix: str, incident) -> CaseView:  # type: ignore[no-untyped-def]
    inp = case_of(incident, "phishing", prefix)
    handle = await client.start_workflow(CaseWorkflow.run, inp, id=inp.case_id, task_queue=queue)
    return await wait_for(handle, lambda v: v.decision is not None, "scored and decided")


async def test_promotion_quorum_shadow_and_bit_identical_rollback(
    dev_env: WorkflowEnvironment, task_queue: str, isolated_home: Path
) -> None:
    train, _ = split()
    model_a = train_small(train, seed=7, rounds=30)
    model_b = train_small(train, seed=11, rounds=45)
    assert model_a != model_b
    incident = _phishing_held_out()[0]
    client = dev_env.client
    async with build_worker(client, task_queue):
        # Promotion is high impact: a governance role, and a quorum of two distinct people.
        with pytest.raises(GovernanceRefused, match="needs one of"):
            await govern(client, "promote_model", ModelChange(model_id=model_a, by="alice", reason="looks good"),
                         task_queue)
        msg = await govern(client, "promote_model", ModelChange(model_id=model_a[:12], by="carol", reason="CV ok"),
                           task_queue)
        assert "1/2" in msg
        with pytest.raises(GovernanceRefused, match="distinct"):
            await govern(client, "promote_model", ModelChange(model_id=model_a, by="carol", reason="again"),
                         task_queue)
        assert model_store.active_model_id() == model_store.default_model_id()  # nothing active yet
        msg = await govern(client, "promote_model", ModelChange(model_id=model_a, by="dave", reason="CV ok"),
                           task_queue)
        assert "is active" in msg and model_store.active_model_id() == model_a
        with pytest.raises(GovernanceRefused, match="matches 0 models"):
            await govern(client, "promote_model", ModelChange(model_id="deadbeefdeadbeef", by="carol", reason="x"),
                         task_queue)

        first = await _scored(client, task_queue, "a1", incident)
        assert first.score is not None and first.score.model_id == model_a
        assert first.decision is not None and first.decision.model_id == model_a

        # A candidate in shadow: scored and recorded next to the active score, never deciding.
        await govern(client, "set_candidate", ModelChange(model_id=model_b, by="erin", reason="retrained"), task_queue)
        shadowed = await _scored(client, task_queue, "shadow", incident)
        assert shadowed.score is not None and shadowed.score.model_id == model_a
        assert shadowed.shadow_score is not None and shadowed.shadow_score.model_id == model_b
        _ = await client.get_workflow_handle(shadowed.case_id).execute_update(
            CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.benign_positive, reason="known sender"))
        await client.get_workflow_handle(shadowed.case_id).result()

        for who in ("carol", "dave"):
            await govern(client, "promote_model", ModelChange(model_id=model_b, by=who, reason="shadow evidence ok"),
                         task_queue)
        second = await _scored(client, task_queue, "b1", incident)
        assert second.score is not None and second.score.model_id == model_b
        assert second.score.probabilities != first.score.probabilities

        # Rollback is the compensation: at once, and the previous model scores exactly as before.
        msg = await govern(client, "rollback_model", ModelRollback(by="dave", reason="drift after promotion"),
                           task_queue)
        assert model_store.active_model_id() == model_a
        third = await _scored(client, task_queue, "a2", incident)
        assert third.score is not None
        assert third.score.model_dump_json() == first.score.model_dump_json()  # bit-identical scoring

        state = await read_state(client, task_queue)
        assert state is not None
        rec = next(r for r in state.recent["phishing"] if r.case_id == shadowed.case_id)
        # Evidence records keep a prefix of the candidate's id and confidences to 1e-10 (compact state).
        assert rec.candidate_model_id and model_b.startswith(rec.candidate_model_id) and model_b != model_a
        assert rec.candidate_benign_confidence == pytest.approx(shadowed.shadow_score.benign_confidence, abs=1e-10)
        kinds = [(e.kind, e.by) for e in state.events if e.kind.startswith("model") or e.kind == "candidate"]
        assert kinds == [("model_approval", "carol"), ("model_promote", "dave"), ("candidate", "erin"),
                         ("model_approval", "carol"), ("model_promote", "dave"), ("model_rollback", "dave")]
        assert [(h.action, h.model_id) for h in model_store.history()] == [
            ("promote", model_a), ("promote", model_b), ("rollback", model_a)]
        await govern(client, "rollback_model", ModelRollback(by="carol", reason="back to the shipped model"),
                     task_queue)
        assert model_store.active_model_id() == model_store.default_model_id()
        with pytest.raises(GovernanceRefused, match="no model promotion"):
            await govern(client, "rollback_model", ModelRollback(by="carol", reason="once more"), task_queue)

        # The audit trail names each promoted model in full, also where a person typed a prefix.
        from signoff.audit import governance_events
        from signoff.autonomy.client import governance_id
        from signoff.history import decode_history

        handle = client.get_workflow_handle(governance_id(task_queue))
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        promotions = [(e["actor"], e["detail"]["request"]["model_id"], e["detail"]["request"].get("model_id_resolved"))
                      for e in governance_events(history) if e["kind"] in ("model_promotion", "model_candidate")]
        assert (("carol", model_a[:12], model_a) in promotions and ("erin", model_b, model_b) in promotions
                and ("carol", "deadbeefdeadbeef", None) in promotions)


async def test_retraining_builds_a_deterministic_shadow_candidate_from_verdicts(
    dev_env: WorkflowEnvironment, task_queue: str, isolated_home: Path
) -> None:
    policy = load_policy()
    _, held = split()
    incidents = [i for i in held if policy.alert_type_for_category(i.category) in ("phishing", "suspicious_activity")][:24]
    client = dev_env.client
    train, _ = split()
    active = train_small(train, seed=7, rounds=30)
    async with build_worker(client, task_queue):
        for who in ("carol", "dave"):
            await govern(client, "promote_model", ModelChange(model_id=active, by=who, reason="base"), task_queue)
        for incident in incidents:  # analysts review real cases; their verdicts are the labels
            at = policy.alert_type_for_category(incident.category)
            inp = case_of(incident, at, "rt")
            handle = await client.start_workflow(CaseWorkflow.run, inp, id=inp.case_id, task_queue=task_queue)
            await wait_for(handle, lambda v: v.decision is not None, "decided")
            assert incident.grade is not None
            _ = await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="bob", verdict=incident.grade,
                                                                         reason="triaged"))
            await handle.result()
        req = RetrainRequest(requested_by="erin", reason="monthly retrain", min_verdicts=20, rounds=20, folds=3)
        refused = req.model_copy(update={"requested_by": "alice"})
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(RetrainWorkflow.run, refused, id=f"rt-refused-{task_queue}",
                                          task_queue=task_queue)
        assert "retraining needs one of" in str(failure.value.cause.cause)  # type: ignore[attr-defined]
        first = await client.execute_workflow(RetrainWorkflow.run, req, id=f"rt-1-{task_queue}", task_queue=task_queue)
        again = await client.execute_workflow(RetrainWorkflow.run, req, id=f"rt-2-{task_queue}", task_queue=task_queue)
        assert first.verdict_cases == 24 and first.base_cases == 0
        assert again.model_id == first.model_id  # same verdicts + seed → the same model bytes
        state = await read_state(client, task_queue)
        assert state is not None and state.model.candidate == first.model_id and state.model.active == active
        assert model_store.active_model_id() == active  # retraining never activates its candidate
        from signoff.autonomy.drift import load_reference

        reference = load_reference(first.model_id)
        assert reference is not None and reference["cases"] == 24
        # Who trained it, when and why: the system, at erin's request, in the manifest (not in the model id).
        manifest = model_store.read_manifest(first.model_id)
        assert (manifest["trained_by"], manifest["trained_by_from"], manifest["requested_by"], manifest["reason"]) == (
            f"signoff-retrain (workflow rt-1-{task_queue})", "retrain workflow", "erin", "monthly retrain")
        assert manifest["trained_at"]
        [later] = manifest["trained_again"]  # the second run made the same bytes: the first record stands
        assert later["trained_by"] == f"signoff-retrain (workflow rt-2-{task_queue})"
    assert os.environ["SIGNOFF_HOME"] == str(isolated_home)
