"""The governance workflow under abuse and long use, on the real Temporal dev server.

1. Thousands of verdicts with huge reasons never wedge it: every state carried through
   continue-as-new stays small, `signoff autonomy status` answers and the kill switch works.
2. Verdicts count only when their case says so: forged verdicts (no such case, an analyst not in
   the policy, a verdict the case does not carry, a workflow that is not a case) are refused and
   recorded; a case counts once (a later verdict replaces the earlier one).
3. A drift report is accepted only from the running drift check that computed it.
4. Governance histories recorded before these rules still replay (workflow.patched).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from typer.testing import CliRunner

from policies.engine import AutonomyPolicy
from signoff.autonomy.client import GovernanceRefused, govern, governance_id, read_state, signal_verdict
from signoff.autonomy.models import (
    AutonomyChange,
    DriftCheckInput,
    DriftFinding,
    DriftReport,
    GovernanceInput,
    GovernanceState,
    ThresholdChange,
    ThresholdRevert,
    VerdictBatch,
    VerdictCheck,
    VerdictRecord,
)
from signoff.cli import app
from signoff.models import CloseRequest, Verdict
from signoff.worker import activities, build_worker
from tests.casekit import alert, case_input, start_case, wait_for
from tests.replay import recorded_patches
from workflows.case import CaseWorkflow
from workflows.drift import DriftCheckWorkflow
from workflows.governance import CHECK_DRIFT_REPORTS, CHECK_VERDICTS, GovernanceWorkflow

HISTORIES = Path(__file__).parent / "replay" / "histories" / "governance"
GENERATIONS = ["before-verdict-checks", "current"]
TYPES = ("compromised_account", "malware", "network_intrusion", "phishing", "suspicious_activity")
PER_TYPE = 1000  # the evidence window: QA's wedge was 1,000 ordinary verdicts per alert type
CARRIED_LIMIT = 256 * 1024
BIG = 1_500_000  # characters: close reasons have no size cap
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"


def _name(act: Any) -> str:
    return str(getattr(act, "__temporal_activity_definition").name)


@activity.defn(name="verify_verdicts")
async def trusting_check(batch: VerdictBatch) -> list[VerdictCheck]:
    """Stand-in for the check against the case, for synthetic verdicts (no case behind them)."""
    return [VerdictCheck(case_id=c.record.case_id, alert_type=c.alert_type, record=c.record) for c in batch.claims]


def _worker(client: Client, queue: str, *stand_ins: Any) -> Worker:
    names = {_name(a) for a in stand_ins}
    return build_worker(client, queue, activities=[*(a for a in activities() if _name(a) not in names), *stand_ins])


def _raw_verdict(case_id: str, alert_type: str, verdict: str = "BenignPositive", analyst: str = "alice",
                 reason: str = "reviewed", benign: float = 0.9971234567891234) -> dict[str, Any]:
    """What `temporal workflow signal --name record_verdict --input '{...}'` sends (QA's 531-byte record)."""
    return {"case_id": case_id, "alert_type": alert_type, "verdict": verdict, "analyst": analyst, "reason": reason,
            "at": "2026-11-28T10:07:48.123456Z", "model_id": "0b92988f7d53ca15" * 4, "predicted": "BenignPositive",
            "benign_confidence": benign, "threshold": 0.98, "autonomy": "in_the_loop", "decision": "analyst",
            "review_sampled": False, "candidate_model_id": None, "candidate_predicted": None,
            "candidate_benign_confidence": None}


def _case(alert_type: str, i: int) -> str:
    return f"guide-{TYPES.index(alert_type) * 100 + i % 100}-{10_020_600 + i}"


async def _state_with(client: Client, queue: str, predicate: Any, what: str, attempts: int = 600) -> GovernanceState:
    state = None
    for _ in range(attempts):
        state = await read_state(client, queue)
        if state is not None and predicate(state):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"governance state never reached: {what}; last revision "
                         f"{state.revision if state else None}, recent "
                         f"{ {k: len(v) for k, v in state.recent.items()} if state else None}")


async def _carried_sizes(client: Client, workflow_id: str, first_run: str) -> list[int]:
    """Bytes of each state carried through continue-as-new, following the chain from the first run."""
    sizes: list[int] = []
    run = first_run
    for _ in range(100):
        history = await client.get_workflow_handle(workflow_id, run_id=run).fetch_history()
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return sizes
        attrs = last.workflow_execution_continued_as_new_event_attributes
        sizes.append(sum(len(p.data) for p in attrs.input.payloads))
        run = attrs.new_execution_run_id
    return sizes


async def _cli(address: str, queue: str, *args: str) -> tuple[int, str]:
    env = {"TEMPORAL_ADDRESS": address, "SIGNOFF_TASK_QUEUE": queue, "COLUMNS": "200"}
    result = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
    return result.exit_code, result.output


# ---------------------------------------------------------------- 1. bounded state, whatever is sent


async def test_thousands_of_verdicts_with_huge_reasons_never_wedge_governance(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, isolated_home: Path
) -> None:
    client = dev_env.client
    gid = governance_id(task_queue)
    async with _worker(client, task_queue, trusting_check):
        first = await client.start_workflow(GovernanceWorkflow.run, GovernanceInput(ensure_schedule=False),
                                            id=gid, task_queue=task_queue)
        handle = client.get_workflow_handle(gid)
        huge = "x" * BIG
        # Humans type what they type: governance reasons and refused requests of any size.
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.98, by="carol",
                                                              reason=huge), task_queue)
        for _ in range(20):
            with pytest.raises(GovernanceRefused, match="needs one of"):
                await govern(client, "set_threshold", ThresholdChange(
                    alert_type="phishing", value=0.1, by="mallory" * 1000, reason="y" * 100_000), task_queue)
        for start in range(0, PER_TYPE, 50):  # GUIDE-like case ids: guide-<org>-<incident>
            await asyncio.gather(*(handle.signal("record_verdict", _raw_verdict(_case(t, i), t))
                                   for t in TYPES for i in range(start, start + 50)))
        for i in range(3):  # three verdicts with a 1.5 MB reason (QA's second wedge)
            await handle.signal("record_verdict", _raw_verdict(_case("phishing", i), "phishing", reason=huge))
        state = await _state_with(client, task_queue, lambda s: all(s.counts.get(t) and s.counts[t].reviewed
                                                                    == PER_TYPE for t in TYPES), "every verdict")

        # One record per case: the three re-sent phishing cases replaced their earlier verdicts.
        assert {t: len(state.recent[t]) for t in TYPES} == {t: PER_TYPE for t in TYPES}
        carried = await _carried_sizes(client, gid, first.result_run_id or "")
        assert carried, "several MB of history: the workflow must have continued as new"
        assert max(carried) < CARRIED_LIMIT, carried
        whole = pydantic_data_converter.payload_converter.to_payloads([GovernanceInput(state=state)])[0]
        assert len(whole.data) < CARRIED_LIMIT, len(whole.data)
        assert max(len(e.reason) for e in state.events) <= 1000 and max(len(e.by) for e in state.events) <= 200
        print(f"\ncarried states (bytes): {carried}; full state with {len(state.events)} events and "
              f"{sum(len(v) for v in state.recent.values())} evidence records: {len(whole.data)} bytes")

        address = client.service_client.config.target_host
        code, out = await _cli(address, task_queue, "autonomy", "status", "--json")
        assert code == 0, out
        code, out = await _cli(address, task_queue, "autonomy", "demote", "--all", "--as", "alice", "--reason",
                               "kill switch after a long run")
        assert code == 0 and "in the loop now" in out, out
        state = await _state_with(client, task_queue, lambda s: s.alert_types.get("malware") is not None,
                                  "demoted")
        assert all(state.alert_types[t].autonomy == "in_the_loop" for t in TYPES)
        # still accepting verdicts after all that
        await handle.signal("record_verdict", _raw_verdict("case-after", "malware"))
        await _state_with(client, task_queue, lambda s: s.counts["malware"].reviewed == PER_TYPE + 1, "one more")


# ---------------------------------------------------------------- 2. verdicts are checked against the case


async def _closed_case(client: Client, queue: str, alert_type: str, analyst: str, verdict: Verdict) -> str:
    handle = await start_case(client, queue, case_input(alert_type), alert("v1", ("mailbox", f"m-{queue}"),
                                                                          category="InitialAccess"))
    await wait_for(handle, lambda v: v.decision is not None, "decided")
    _ = await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst=analyst, verdict=verdict, reason="looked"))
    await handle.result()
    return handle.id


async def test_forged_verdicts_are_refused_and_a_case_counts_once(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, isolated_home: Path
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["autonomy"].update(require_evidence=True, min_reviewed=50)
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    gid = governance_id(task_queue)
    async with build_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="malware", value=0.5, by="carol",
                                                              reason="test"), task_queue)
        handle = client.get_workflow_handle(gid)
        # QA's forgery: 65 copies of a verdict by nobody on a case that does not exist.
        for _ in range(65):
            await handle.signal("record_verdict", _raw_verdict("forged-1", "malware", analyst="nobody"))
        for i in range(5):  # a person in the policy, but no such case
            await handle.signal("record_verdict", _raw_verdict(f"forged-a{i}", "malware"))
        await handle.signal("record_verdict", _raw_verdict(gid, "malware"))  # a workflow that is not a case
        state = await _state_with(client, task_queue, lambda s: len([e for e in s.events if e.before == "verdict"])
                                  == 71, "71 refusals")
        assert not state.recent.get("malware") and not state.counts.get("malware")
        refusals = [e for e in state.events if e.before == "verdict"]
        assert all(not e.accepted and e.kind == "refused" for e in refusals)
        assert sum("'nobody' is not a person in the policy" in e.after for e in refusals) == 65
        assert sum("there is no case 'forged-a" in e.after for e in refusals) == 5
        assert any("is a GovernanceWorkflow workflow, not a case" in e.after for e in refusals)
        with pytest.raises(GovernanceRefused, match="not enough evidence: 0 reviewed"):
            await govern(client, "set_autonomy", AutonomyChange(alert_type="malware", level="on_the_loop", by="carol",
                                                                reason="forged evidence"), task_queue)

        # A real case, closed by an analyst: its verdict counts once, however often it is sent.
        case_id = await _closed_case(client, task_queue, "phishing", "bob", Verdict.benign_positive)
        state = await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 1, "counted")
        genuine = _raw_verdict(case_id, "phishing", analyst="bob")
        for _ in range(3):
            await handle.signal("record_verdict", genuine)
        # ... and what the case does not say is refused: another grade, another analyst, another type.
        await handle.signal("record_verdict", _raw_verdict(case_id, "phishing", verdict="TruePositive", analyst="bob"))
        await handle.signal("record_verdict", _raw_verdict(case_id, "phishing", analyst="alice"))
        await handle.signal("record_verdict", _raw_verdict(case_id, "malware", analyst="bob"))
        state = await _state_with(client, task_queue, lambda s: len([e for e in s.events if e.before == "verdict"])
                                  == 74, "3 more refusals")
        assert [r.case_id for r in state.recent["phishing"]] == [case_id]
        assert state.counts["phishing"].reviewed == 1 and not state.recent.get("malware")
        record = state.recent["phishing"][0]
        view = await client.get_workflow_handle(case_id).query(CaseWorkflow.status)
        # The record counted is the case's own: its score, not the 0.997 the signals claimed.
        assert view.score is None or record.benign_confidence == pytest.approx(view.score.benign_confidence, abs=1e-10)
        # ... and the model that scored it (a promotion counts only the model in force), not the one claimed.
        assert view.score is not None and record.model_id == view.score.model_id[:16] != "0b92988f7d53ca15"
        assert record.verdict == Verdict.benign_positive
        mismatches = [e.after for e in state.events if e.before == "verdict"][-3:]
        assert all(f"case {case_id!r} says BenignPositive by 'bob' on phishing" in m for m in mismatches), mismatches
        # The audit trail says which verdicts counted: a forged one is never exported as plain feedback.
        from signoff.audit import governance_events
        from signoff.history import decode_history

        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        feedback = [e for e in governance_events(history) if e["kind"] == "feedback_recorded"]
        forged = [e["detail"]["outcome"] for e in feedback if e["detail"]["case_id"] == "forged-1"]
        assert len(forged) == 65 and all(o.startswith("refused: ") for o in forged), forged[:2]
        real = [(e["actor"], e["detail"]["verdict"], e["detail"]["outcome"]) for e in feedback
                if e["detail"]["case_id"] == case_id]
        assert ("bob", "BenignPositive", "counted") in real
        assert ("alice", "BenignPositive", "counted") not in real


async def test_a_flood_of_forged_verdicts_never_pushes_governance_changes_out(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    from workflows.governance import _event_chars

    client = dev_env.client
    async with build_worker(client, task_queue):
        for value in (0.9, 0.95):
            await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=value, by="carol",
                                                                  reason=f"step {value}"), task_queue)
        handle = client.get_workflow_handle(governance_id(task_queue))
        def forged(i: int) -> Any:
            return _raw_verdict(f"forged-{i}", "phishing", analyst="nobody" * 40, reason="z" * 20_000)

        for start in range(0, 400, 100):
            await asyncio.gather(*(handle.signal("record_verdict", forged(i)) for i in range(start, min(start + 100, 399))))
        # The last one alone, so it is surely the newest refusal (concurrent signals arrive in any order).
        await handle.signal("record_verdict", forged(399))
        state = await _state_with(client, task_queue, lambda s: any("forged-399" in e.reason for e in s.events),
                                  "the last forged verdict refused", attempts=1800)
        kept = [e for e in state.events if e.before == "verdict"]
        assert 0 < len(kept) < 400 and all(not e.accepted and len(e.by) <= 200 for e in kept)
        assert sum(_event_chars(e) for e in state.events) <= GovernanceInput().events_budget
        assert [e.after for e in state.events if e.kind == "threshold"] == ["0.900000", "0.950000"]
        msg = await govern(client, "revert_threshold", ThresholdRevert(alert_type="phishing", by="carol",
                                                                       reason="undo"), task_queue)
        assert "0.950000 -> 0.900000" in msg


async def test_a_later_verdict_on_the_same_case_replaces_the_earlier(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    client = dev_env.client
    async with _worker(client, task_queue, trusting_check):
        for verdict in (Verdict.benign_positive, Verdict.true_positive):
            await signal_verdict(client, VerdictRecord(
                case_id="c1", alert_type="phishing", verdict=verdict, analyst="alice", reason="r" * 5000,
                predicted=Verdict.benign_positive, benign_confidence=0.99, threshold=0.9), task_queue)
            await asyncio.sleep(0.3)  # separate batches
        await signal_verdict(client, VerdictRecord(
            case_id="c2", alert_type="phishing", verdict=Verdict.false_positive, analyst="alice", reason="fine",
            predicted=Verdict.benign_positive, benign_confidence=0.5, threshold=0.9), task_queue)
        state = await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 2
                                  and s.recent["phishing"][-1].case_id == "c2", "two cases")
    assert [(r.case_id, r.verdict) for r in state.recent["phishing"]] == [
        ("c1", Verdict.true_positive), ("c2", Verdict.false_positive)]
    counts = state.counts["phishing"]
    assert (counts.reviewed, counts.above_threshold, counts.above_threshold_tp, counts.agree) == (2, 1, 1, 0)


# ---------------------------------------------------------------- 3. drift reports come from a drift check


@activity.defn(name="compute_drift")
async def breaching_figures(req: object) -> DriftReport:
    return DriftReport(at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC), model_id="m" * 64, reference="test",
                       window="7d", findings=(DriftFinding(alert_type="phishing", cases=60, verdicts=0, score_psi=0.649,
                                                          breaches=("score PSI 0.649 > 0.25",)),))


TAMPER = {"on": False}


@activity.defn(name="apply_drift")
async def tampering_apply_drift(report: DriftReport) -> list[str]:
    """The real hand-over, except that it can change the findings on the way (a forged report that
    names a genuine, running drift check)."""
    if TAMPER["on"]:
        report = report.model_copy(update=dict(findings=(DriftFinding(
            alert_type="malware", cases=60, verdicts=0, breaches=("forged breach by nobody",)),)))
    demoted: list[str] = await govern(activity.client(), "drift_report", report, activity.info().task_queue)
    return demoted


async def test_only_the_drift_check_that_computed_a_report_can_hand_it_over(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, isolated_home: Path
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["autonomy"]["require_evidence"] = False
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    forged = DriftReport(at=datetime.now(UTC), model_id="m", reference="forged", window="7d", findings=(
        DriftFinding(alert_type="phishing", cases=50, verdicts=20, breaches=("forged breach by nobody",)),))
    async with _worker(client, task_queue, breaching_figures, tampering_apply_drift):
        for value, who in ((0.9, "carol"),):
            await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=value, by=who,
                                                                  reason="test"), task_queue)
        # QA's forgery: no drift check behind it.
        with pytest.raises(GovernanceRefused, match="must name the drift check run"):
            await govern(client, "drift_report", forged, task_queue)
        # Naming a workflow that is not a drift check.
        gid = governance_id(task_queue)
        run = (await client.get_workflow_handle(gid).describe()).run_id
        with pytest.raises(GovernanceRefused, match="not a drift check"):
            await govern(client, "drift_report", forged.model_copy(update=dict(check_workflow_id=gid,
                                                                               check_run_id=run)), task_queue)
        state = await read_state(client, task_queue)
        assert state is not None and state.last_drift is None
        assert not any(e.kind == "drift" for e in state.events)
        refused = [e for e in state.events if not e.accepted and "drift report refused" in e.after]
        assert len(refused) == 2 and refused[0].by == "unnamed sender" and refused[1].by == f"drift check {gid}"
        # Promotion is not blocked by the forged breach.
        await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol",
                                                            reason="clean"), task_queue)

        # A genuine check: its breach demotes (recorded, by signoff-drift).
        report = await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(), id=f"drift-ok-{task_queue}",
                                               task_queue=task_queue)
        assert report.demoted == ("phishing",)
        state = await read_state(client, task_queue)
        assert state is not None and state.alert_types["phishing"].autonomy == "in_the_loop"
        assert state.last_drift is not None and state.last_drift.check_workflow_id == f"drift-ok-{task_queue}"
        # The same (finished) check's report again: refused.
        replayed = state.last_drift.model_copy(update=dict(demoted=()))
        with pytest.raises(GovernanceRefused, match="no longer running"):
            await govern(client, "drift_report", replayed, task_queue)

        # A running check whose report was changed on the way: refused, and the check fails.
        TAMPER["on"] = True
        try:
            with pytest.raises(Exception):  # noqa: B017 - the drift check fails on the refused hand-over
                await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(),
                                              id=f"drift-tampered-{task_queue}", task_queue=task_queue)
        finally:
            TAMPER["on"] = False
        state = await read_state(client, task_queue)
        assert state is not None
        assert any("differs from what drift check" in e.after for e in state.events if not e.accepted)
        assert state.last_drift is not None and state.last_drift.check_workflow_id == f"drift-ok-{task_queue}"
        assert not any(e.kind == "drift" and e.alert_type == "malware" for e in state.events)


# ---------------------------------------------------------------- 4. replay




def _history(generation: str) -> WorkflowHistory:
    path = HISTORIES / f"{generation}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python -m tests.replay.record_governance_history {generation}`")
    return WorkflowHistory.from_json(f"replay-governance-{generation}", path.read_text())


@pytest.mark.parametrize("generation", GENERATIONS)
async def test_recorded_governance_history_replays(generation: str) -> None:
    history = _history(generation)
    replayer = Replayer(workflows=[GovernanceWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
    patches = recorded_patches(history)
    checked = generation != "before-verdict-checks"
    assert (CHECK_VERDICTS in patches) == checked and (CHECK_DRIFT_REPORTS in patches) == checked
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW


# ---------------------------------------------------------------- the compact evidence encoding


def test_evidence_columns_round_trip_and_older_carried_states_still_load() -> None:
    from signoff.autonomy.evidence import evidence
    from signoff.autonomy.models import EvidenceRecord

    records = tuple(EvidenceRecord.of(VerdictRecord(
        case_id=f"guide-1-{i}", alert_type="phishing", verdict=(Verdict.true_positive, Verdict.benign_positive)[i % 2],
        analyst="alice", reason="r", at=datetime(2026, 11, 28, 10, i, 30, 123, tzinfo=UTC),
        predicted=None if i == 3 else Verdict.benign_positive, benign_confidence=None if i == 3 else 0.9 + i / 100,
        threshold=0.92, review_sampled=i == 4, candidate_model_id=("a" * 64, "b" * 64, None)[i % 3],
        candidate_predicted=Verdict.false_positive if i % 3 != 2 else None,
        candidate_benign_confidence=0.123456789012345 if i % 3 != 2 else None)) for i in range(6))
    state = GovernanceState(recent={"phishing": records})
    payload = pydantic_data_converter.payload_converter.to_payloads([state])[0]
    [back] = pydantic_data_converter.payload_converter.from_payloads([payload], [GovernanceState])
    assert back == state
    assert [r.above_threshold for r in records] == [False, False, True, False, True, True]
    assert records[4].review_sampled and records[3].predicted is None and records[2].candidate_model_id is None
    assert records[0].candidate_model_id == "a" * 16 and records[0].at == datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC)
    policy = AutonomyPolicy(min_reviewed=1, miss_budget=0.99)
    ev = evidence("phishing", back.recent["phishing"], 0.92, policy, candidate_model_id="a" * 64)
    assert ev.candidate is not None and ev.candidate.scored == 2
    # A state carried by a run from before compact evidence: full verdict records, reasons and all.
    old = {"recent": {"phishing": [_raw_verdict("guide-1-9", "phishing", reason="x" * 5000)]}}
    loaded = GovernanceState.model_validate(old)
    assert loaded.recent["phishing"][0].case_id == "guide-1-9" and loaded.recent["phishing"][0].above_threshold
