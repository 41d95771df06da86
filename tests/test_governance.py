"""Earned autonomy on the real Temporal dev server: roles, quorum, evidence, kill switch, thresholds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scipy.stats import beta
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.case import EnrichRequest
from signoff.autonomy.client import GovernanceRefused, govern, read_state, signal_verdict
from signoff.autonomy.evidence import evidence, upper95
from signoff.autonomy.models import (
    AutonomyChange,
    ThresholdChange,
    ThresholdRevert,
    VerdictBatch,
    VerdictCheck,
    VerdictRecord,
)
from signoff.models import CaseStatus, CloseRequest, DecisionKind, Enrichment, Verdict
from signoff.worker import activities, build_worker
from tests.autonomykit import install_small_model
from tests.casekit import alert, case_input, start_case, wait_for
from workflows.case import CaseWorkflow

TP, BP, FP = Verdict.true_positive, Verdict.benign_positive, Verdict.false_positive


@pytest.fixture(autouse=True)
def _no_cache() -> Iterator[None]:
    os.environ["SIGNOFF_GOVERNANCE_CACHE_S"] = "0"
    yield
    os.environ.pop("SIGNOFF_GOVERNANCE_CACHE_S", None)


@pytest.fixture
def small_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An isolated model store with a small real model active (see tests/autonomykit.py)."""
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    return install_small_model()


def _policy(path: Path, **autonomy: object) -> dict:
    policy = yaml.safe_load(path.read_text())
    policy["autonomy"].update(autonomy)
    path.write_text(yaml.safe_dump(policy))
    return policy


@activity.defn(name="verify_verdicts")
async def trusting_check(batch: VerdictBatch) -> list[VerdictCheck]:
    """Stand-in for the check against the case: these tests send synthetic verdicts with hand-picked
    scores (no case behind them). The real check is tested in tests/test_governance_hardening.py."""
    return [VerdictCheck(case_id=c.record.case_id, alert_type=c.alert_type, record=c.record) for c in batch.claims]


def trusting_worker(client: Client, task_queue: str) -> Worker:
    acts = [a for a in activities() if getattr(a, "__temporal_activity_definition").name != "verify_verdicts"]
    return build_worker(client, task_queue, activities=[*acts, trusting_check])


def _record(case: str, predicted: Verdict | None, benign: float | None, verdict: Verdict, t: float = 0.9,
            alert_type: str = "phishing") -> VerdictRecord:
    # Scored by the shipped model (the one in force unless a test changes it): a promotion counts only
    # the verdicts on the scores of the model in force.
    from signoff.scoring.model_store import default_model_id

    return VerdictRecord(case_id=case, alert_type=alert_type, verdict=verdict, analyst="alice", reason="review",
                         model_id=default_model_id() if predicted else None, predicted=predicted,
                         benign_confidence=benign, threshold=t)


async def _state_with(client: Client, queue: str, predicate, what: str):  # type: ignore[no-untyped-def]
    state = None
    for _ in range(200):
        state = await read_state(client, queue)
        if state is not None and predicate(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"governance state never reached: {what}; last: {state}")


async def test_promotion_without_the_role_is_refused_and_recorded(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _policy(policy_file, require_evidence=False)
    client = dev_env.client
    async with build_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                              reason="from the model's OOF curve"), task_queue)
        for user in ("alice", "erin", "mallory"):  # analyst, detection engineer, unknown
            with pytest.raises(GovernanceRefused, match="needs one of"):
                await govern(client, "set_autonomy", AutonomyChange(
                    alert_type="phishing", level="on_the_loop", by=user, reason="I think it is fine"), task_queue)
        with pytest.raises(GovernanceRefused, match="needs one of"):
            await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.1, by="alice",
                                                                  reason="close more"), task_queue)
        state = await read_state(client, task_queue)
        assert state is not None
        refused = [e for e in state.events if not e.accepted]
        assert [e.by for e in refused] == ["alice", "erin", "mallory", "alice"]
        assert state.alert_types["phishing"].autonomy is None  # still the policy file's in_the_loop
        assert state.alert_types["phishing"].threshold == 0.9

        msg = await govern(client, "set_autonomy", AutonomyChange(
            alert_type="phishing", level="on_the_loop", by="carol", reason="lead decision"), task_queue)
        assert "on the loop" in msg
        # A reason is always required: refused before anything is written.
        with pytest.raises(GovernanceRefused, match="reason"):
            await govern(client, "set_autonomy", AutonomyChange(alert_type="*", level="in_the_loop", by="carol",
                                                                reason=" "), task_queue)


async def test_promotion_quorum_needs_distinct_governors(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _policy(policy_file, require_evidence=False, promotion_quorum=2)
    client = dev_env.client
    async with build_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="malware", value=0.95, by="dave",
                                                              reason="OOF"), task_queue)
        change = AutonomyChange(alert_type="malware", level="on_the_loop", by="carol", reason="evidence is good")
        assert "1/2" in await govern(client, "set_autonomy", change, task_queue)
        with pytest.raises(GovernanceRefused, match="distinct"):
            await govern(client, "set_autonomy", change, task_queue)
        state = await read_state(client, task_queue)
        assert state is not None and state.alert_types["malware"].autonomy is None
        msg = await govern(client, "set_autonomy", change.model_copy(update={"by": "dave"}), task_queue)
        assert "on the loop" in msg and "carol, dave" in msg


async def test_verdict_statistics_match_a_hand_computed_example(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    client = dev_env.client
    records = [
        _record("c1", BP, 0.95, BP),  # would auto-close, right
        _record("c2", FP, 0.97, TP),  # would auto-close a true positive: a miss
        _record("c3", TP, 0.10, TP),  # below the threshold, agrees
        _record("c4", BP, 0.92, FP),  # would auto-close; grade differs, TP-or-not agrees
        _record("c5", FP, 0.50, BP),  # below; grade differs, TP-or-not agrees
        _record("c6", None, None, TP),  # unscored (scoring failed): counted as reviewed only
    ]
    async with trusting_worker(client, task_queue):
        for rec in records:
            await signal_verdict(client, rec, task_queue)
        state = await _state_with(client, task_queue, lambda s: s.counts.get("phishing") and
                                  s.counts["phishing"].reviewed == 6, "six verdicts")
    counts = state.counts["phishing"]
    assert (counts.reviewed, counts.agree, counts.agree_tp, counts.above_threshold, counts.above_threshold_tp) == \
        (6, 2, 4, 3, 1)
    policy = yaml.safe_load(policy_file.read_text())
    from policies.engine import AutonomyPolicy

    ev = evidence("phishing", state.recent["phishing"], 0.9, AutonomyPolicy.model_validate(policy["autonomy"]))
    assert ev.reviewed == 6 and ev.verdicts == {"BenignPositive": 2, "TruePositive": 3, "FalsePositive": 1}
    m = ev.model
    assert m.scored == 5 and m.tp_total == 2
    assert m.agreement == pytest.approx(2 / 5) and m.agreement_tp == pytest.approx(4 / 5)
    assert m.override_rate == pytest.approx(1 / 5)
    assert (m.would_auto_close, m.misses) == (3, 1)
    assert m.precision_at_threshold == pytest.approx(2 / 3) and m.miss_rate == pytest.approx(1 / 3)
    assert m.miss_upper95 == pytest.approx(float(beta.ppf(0.95, 2, 2)), abs=1e-9)  # Clopper-Pearson, k=1, n=3
    assert not ev.recommend_promotion and "not enough evidence" in ev.recommendation
    # At a stricter threshold the same verdicts say something else: recomputed, not stored.
    strict = evidence("phishing", state.recent["phishing"], 0.96, AutonomyPolicy(min_reviewed=1, miss_budget=0.99))
    assert (strict.model.would_auto_close, strict.model.misses) == (1, 1)


def test_upper_bound_matches_scipy() -> None:
    for k, n in ((0, 1), (0, 59), (0, 600), (1, 3), (3, 50), (10, 200), (49, 50)):
        assert upper95(k, n) == pytest.approx(float(beta.ppf(0.95, k + 1, n - k)), abs=1e-9)
    assert upper95(0, 0) == 1.0 and upper95(5, 5) == 1.0


async def test_evidence_gates_promotion(dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path) -> None:
    _policy(policy_file, require_evidence=True, min_reviewed=3, miss_budget=0.7)
    client = dev_env.client
    promote = AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol", reason="shadow evidence")
    async with trusting_worker(client, task_queue):
        with pytest.raises(GovernanceRefused, match="no threshold"):
            await govern(client, "set_autonomy", promote, task_queue)
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                              reason="OOF"), task_queue)
        for i, (benign, verdict) in enumerate([(0.95, BP), (0.97, TP), (0.93, FP)]):
            await signal_verdict(client, _record(f"g{i}", BP, benign, verdict), task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 3, "3 verdicts")
        # 1 miss in 3: upper bound 86% > budget 70%.
        with pytest.raises(GovernanceRefused, match="exceeds the budget"):
            await govern(client, "set_autonomy", promote, task_queue)
        for i in range(3):
            await signal_verdict(client, _record(f"h{i}", BP, 0.99, BP), task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 6, "6 verdicts")
        # Raising the threshold leaves only the clean cases (0.97 miss excluded at 0.98): 0/3, bound 63%.
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.98, by="carol",
                                                              reason="stricter"), task_queue)
        assert "on the loop" in await govern(client, "set_autonomy", promote, task_queue)


async def test_thresholds_are_recorded_and_reversible(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    from policies.loader import load_policy
    from signoff.governance_state import snapshot

    client = dev_env.client
    policy = load_policy()
    async with build_worker(client, task_queue):
        for value in (0.9, 0.95):
            await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=value, by="dave",
                                                                  reason=f"try {value}"), task_queue)
        state = await read_state(client, task_queue)
        assert state is not None
        v95 = snapshot(policy, "phishing", state).policy_version
        assert snapshot(policy, "phishing", state).threshold == 0.95
        assert v95 != policy.digest()  # the version covers the live state, not only the file

        await govern(client, "revert_threshold", ThresholdRevert(alert_type="phishing", by="carol",
                                                                 reason="too strict"), task_queue)
        state = await read_state(client, task_queue)
        assert state is not None
        snap = snapshot(policy, "phishing", state)
        assert snap.threshold == 0.9 and snap.threshold_set_by == "carol"
        assert snap.policy_version != v95
        await govern(client, "revert_threshold", ThresholdRevert(alert_type="phishing", by="carol",
                                                                 reason="back to the file"), task_queue)
        with pytest.raises(GovernanceRefused, match="no threshold change left"):
            await govern(client, "revert_threshold", ThresholdRevert(alert_type="phishing", by="carol",
                                                                     reason="once more"), task_queue)
        state = await read_state(client, task_queue)
        assert state is not None
        assert snapshot(policy, "phishing", state).threshold is None  # the policy file's value again
        history = [(e.by, e.before, e.after, e.reverts) for e in state.events if e.kind == "threshold"]
        assert history == [
            ("dave", "none (policy file)", "0.900000", None),
            ("dave", "0.900000", "0.950000", None),
            ("carol", "0.950000", "0.900000", state.events[1].revision),  # undoes the second change
            ("carol", "0.900000", "none (policy file)", state.events[0].revision),  # then the first
        ]
        assert all(e.reason for e in state.events)


async def test_cases_follow_autonomy_and_the_kill_switch(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, small_model: str
) -> None:
    """On the loop, a confident case closes itself; the kill switch sends the next ones to a human,
    including a case that was already running (enriching) when the switch was pulled."""
    _policy(policy_file, require_evidence=False)
    policy = yaml.safe_load(policy_file.read_text())
    policy["review_sample_rate"] = 0.0
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    release = asyncio.Event()
    entered = asyncio.Event()

    @activity.defn(name="enrich_case")
    async def slow_enrich(req: EnrichRequest) -> Enrichment:
        if req.case_id.startswith("hold-"):
            entered.set()
            await release.wait()
        return Enrichment(summary="test")

    acts = [a for a in activities() if getattr(a, "__temporal_activity_definition").name != "enrich_case"]
    async with build_worker(client, task_queue, activities=[*acts, slow_enrich]):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.0, by="carol",
                                                              reason="test: everything is confident"), task_queue)
        await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol",
                                                            reason="test"), task_queue)
        first = await start_case(client, task_queue, case_input("phishing"), alert("k1", ("mailbox", "m1"),
                                                                                   category="InitialAccess"))
        done = await first.result()
        assert done.status == CaseStatus.auto_closed
        assert done.decision is not None and "on the loop" in done.decision.reason

        held = await start_case(client, task_queue, case_input("phishing", case_id=f"hold-{task_queue}"),
                                alert("k2", ("mailbox", "m2"), category="InitialAccess"))
        await asyncio.wait_for(entered.wait(), 30)
        msg = await govern(client, "set_autonomy", AutonomyChange(alert_type="*", level="in_the_loop", by="alice",
                                                                  reason="kill switch drill"), task_queue)
        assert "phishing" in msg
        release.set()
        view = await wait_for(held, lambda v: v.decision is not None, "decided")
        assert view.decision is not None and view.decision.kind != DecisionKind.auto_close
        assert view.decision.autonomy == "in_the_loop"
        # The analyst's verdict on it becomes evidence in the governance workflow.
        _ = await held.execute_update(CaseWorkflow.close, CloseRequest(analyst="bob", verdict=Verdict.benign_positive,
                                                                   reason="newsletter"))
        await held.result()
        state = await _state_with(client, task_queue, lambda s: bool(s.recent.get("phishing")), "verdict recorded")
        rec = state.recent["phishing"][-1]
        assert rec.case_id == held.id and rec.verdict == Verdict.benign_positive
        assert view.score is not None and view.score.model_id == small_model
        assert rec.predicted == view.score.predicted
        assert rec.benign_confidence == pytest.approx(view.score.benign_confidence, abs=1e-10)


async def test_review_sample_keeps_confident_cases_with_an_analyst(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, small_model: str
) -> None:
    from signoff.governance_state import review_sampled

    _policy(policy_file, require_evidence=False)
    policy = yaml.safe_load(policy_file.read_text())
    policy["review_sample_rate"] = 0.5
    policy_file.write_text(yaml.safe_dump(policy))
    ids = [f"sample-{task_queue}-{i}" for i in range(40)]
    sampled = [c for c in ids if review_sampled(c, 0.5)]
    assert 8 < len(sampled) < 32  # deterministic by case-id hash, about half
    client = dev_env.client
    async with build_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.0, by="carol",
                                                              reason="test"), task_queue)
        await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol",
                                                            reason="test"), task_queue)
        picked = [sampled[0], next(c for c in ids if c not in sampled)]
        handles = [await start_case(client, task_queue, case_input("phishing", case_id=c),
                                    alert(f"s-{c}", ("mailbox", c), category="InitialAccess")) for c in picked]
        in_sample = await wait_for(handles[0], lambda v: v.decision is not None, "decided")
        assert in_sample.decision is not None and in_sample.decision.kind == DecisionKind.analyst
        assert "review sample" in in_sample.decision.reason
        assert (await handles[1].result()).status == CaseStatus.auto_closed
        _ = await handles[0].execute_update(CaseWorkflow.close, CloseRequest(
            analyst="alice", verdict=Verdict.false_positive, reason="sampled review: fine"))
        await handles[0].result()
        state = await _state_with(client, task_queue, lambda s: bool(s.recent.get("phishing")), "sampled verdict")
        assert state.recent["phishing"][-1].review_sampled
        assert state.counts["phishing"].sampled_reviews == 1


async def test_governance_state_survives_continue_as_new_and_schedules_drift(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    from activities.drift import schedule_id
    from signoff.autonomy.client import governance_id, read_live
    from signoff.autonomy.models import GovernanceInput
    from workflows.governance import GovernanceWorkflow

    client = dev_env.client
    async with trusting_worker(client, task_queue):
        first = await client.start_workflow(GovernanceWorkflow.run, GovernanceInput(history_limit=40),
                                            id=governance_id(task_queue), task_queue=task_queue)
        for i in range(8):
            await govern(client, "set_threshold", ThresholdChange(alert_type="malware", value=0.9 + i / 100,
                                                                  by="carol", reason=f"step {i}"), task_queue)
        for i in range(5):
            await signal_verdict(client, _record(f"can{i}", BP, 0.95, BP, alert_type="malware"), task_queue)
        state = await _state_with(client, task_queue, lambda s: len(s.recent.get("malware", ())) == 5, "verdicts")
        latest = await client.get_workflow_handle(governance_id(task_queue)).describe()
        assert latest.run_id != first.result_run_id  # it continued as new at least once
        assert state.revision == 8 and [e.reason for e in state.events] == [f"step {i}" for i in range(8)]
        assert state.alert_types["malware"].threshold == pytest.approx(0.97)
        live = await read_live(client, task_queue)  # the memo, republished by the new run
        assert live is not None and live.revision == 8 and live.alert_types["malware"].threshold == pytest.approx(0.97)
        schedule = await client.get_schedule_handle(schedule_id(task_queue)).describe()
        from temporalio.client import ScheduleActionStartWorkflow

        action = schedule.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.workflow == "DriftCheckWorkflow"
        await client.get_schedule_handle(schedule_id(task_queue)).delete()
