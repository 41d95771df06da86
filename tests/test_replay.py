"""Determinism guard: every recorded case history replays against the current CaseWorkflow.

Histories: tests/replay/histories/*.json, recorded by `python -m tests.replay.record_histories`
(one per shipped playbook: approve -> execute -> rollback -> close). A workflow change that would
break cases already running fails here; wrap such changes in `workflow.patched(...)`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from playbooks.library import COMPROMISED_ACCOUNT, MALWARE_ON_HOST, NETWORK_INTRUSION, PHISHING, TRIAGE_ONLY
from signoff.models import CaseInput, CaseView
from tests.replay import recorded_patches
from workflows.case import CaseWorkflow

HISTORIES = Path(__file__).parent / "replay" / "histories"
PLAYBOOKS = [p.name for p in (COMPROMISED_ACCOUNT, MALWARE_ON_HOST, PHISHING, NETWORK_INTRUSION, TRIAGE_ONLY)]
# Histories recorded before a patched change stay here and keep replaying: cases that were running
# when the change shipped must go on with the code path they started on.
GENERATIONS = ["", "before-local-result-race", "before-entity-index", "before-verdict-sla", "before-clearer-replies", "before-shared-targets", "before-alert-count", "before-faster-triage"]
# Playbooks added after the shipped five (`record_histories --playbook NAME`): their histories sit
# in the current folder only and replay like the shipped ones.
ADDED = sorted(p.stem for p in HISTORIES.glob("*.json") if p.stem not in PLAYBOOKS)


def _history(name: str, generation: str = "") -> WorkflowHistory:
    path = HISTORIES / generation / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python -m tests.replay.record_histories`")
    return WorkflowHistory.from_json(f"replay-{name}", path.read_text())


@pytest.mark.parametrize(("playbook", "generation"),
                         [(p, g) for g in GENERATIONS for p in PLAYBOOKS] + [(p, "") for p in ADDED])
async def test_recorded_history_replays(playbook: str, generation: str) -> None:
    history = _history(playbook, generation)
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


def test_current_histories_take_the_patched_path() -> None:
    """Each generation carries the patch markers of its time: faster triage (fewer upserts than
    before it), then the published alert count (a later batch of alerts upserts AlertCount), then
    shared targets (what a case holds is published; a rollback asks who else holds it), then
    clearer replies (only where there was something to add: the compromised-account rollback leaves
    its irreversible revoke_sessions in effect), then the verdict SLA (every recorded case goes to a
    human and its severity has an SLA in the lab policy: a timer, cancelled by the verdict), then the
    entity index (its digests go out with upserts the case makes anyway) and the re-check of approvals
    against the identities in force (a local activity before each gated step runs; triage_only has
    none)."""
    for playbook in PLAYBOOKS:
        new, before_race, before_index, before_sla, before_replies, before_shared, before_count, old = (
            _history(playbook, g) for g in GENERATIONS)
        # The local-result race (docs/reliability.md §7): asked once at the start of every case; a step's
        # before-state capture is an activity from then on (a local activity before).
        assert "local-result-race" in recorded_patches(new) and "local-result-race" not in recorded_patches(before_race)
        if playbook != "triage_only":
            assert _scheduled(new, "capture_state") > 0 and _scheduled(before_race, "capture_state") == 0, playbook
        new = before_race  # the older generations' checks below, as they were
        assert "entity-index" in recorded_patches(new) and "entity-index" not in recorded_patches(before_index)
        assert ("recheck-approvals" in recorded_patches(new)) == (playbook != "triage_only"), playbook
        assert "recheck-approvals" not in recorded_patches(before_index)
        # The digests ride on upserts the case makes anyway (the SDK's own patch-marker upserts aside).
        assert _upserts(new, of_case=True) == _upserts(before_index, of_case=True), playbook
        assert _entity_digests(new) and not _entity_digests(before_index)
        new = before_index  # the older generations' checks below, as they were
        assert "verdict-sla" in recorded_patches(new) and "verdict-sla" not in recorded_patches(before_sla)
        # One timer more (the SLA's), cancelled: the verdict came in time. None fired.
        for kind in (EventType.EVENT_TYPE_TIMER_STARTED, EventType.EVENT_TYPE_TIMER_CANCELED):
            assert _timers(new, kind) == _timers(before_sla, kind) + 1, playbook
        assert _timers(new, EventType.EVENT_TYPE_TIMER_FIRED) == 0, playbook
        for history in (new, before_sla):
            assert ("clearer-replies" in recorded_patches(history)) == (playbook == COMPROMISED_ACCOUNT.name), playbook
        assert "clearer-replies" not in recorded_patches(before_replies)
        assert "shared-targets" in recorded_patches(before_replies)
        assert "shared-targets" in recorded_patches(new)
        assert "shared-targets" not in recorded_patches(before_shared)
        assert "alert-count-attribute" in recorded_patches(before_shared)
        assert "faster-triage" in recorded_patches(new) & recorded_patches(before_count)
        assert "faster-triage" not in recorded_patches(old)
        assert _upserts(before_count) < _upserts(old)
        assert "alert-count-attribute" in recorded_patches(new)
        assert "alert-count-attribute" not in recorded_patches(before_count)
        assert _alert_counts(new) == [1, 2] and _alert_counts(before_count) == []


def _scheduled(history: WorkflowHistory, activity: str) -> int:
    """Ordinary activities of this type the case scheduled (local activities are markers, not counted)."""
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
               and e.activity_task_scheduled_event_attributes.activity_type.name == activity)


def _entity_digests(history: WorkflowHistory) -> list[str]:
    """The CaseEntities values the case upserted, in order."""
    return [json.loads(fields["CaseEntities"].data) for e in history.events
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
            and "CaseEntities" in (fields := e.upsert_workflow_search_attributes_event_attributes
                                   .search_attributes.indexed_fields)]


def _alert_counts(history: WorkflowHistory) -> list[int]:
    """The AlertCount values the case upserted, in order."""
    return [json.loads(fields["AlertCount"].data) for e in history.events
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
            and "AlertCount" in (fields := e.upsert_workflow_search_attributes_event_attributes
                                 .search_attributes.indexed_fields)]


def _timers(history: WorkflowHistory, kind: EventType.ValueType) -> int:
    return sum(1 for e in history.events if e.event_type == kind)


def _upserts(history: WorkflowHistory, *, of_case: bool = False) -> int:
    """Upsert events; `of_case`: those carrying a case attribute (not only the SDK's TemporalChangeVersion)."""
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
               and (not of_case or set(e.upsert_workflow_search_attributes_event_attributes.search_attributes
                                       .indexed_fields) - {"TemporalChangeVersion"}))




@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_history_file_has_a_playbook(generation: str) -> None:
    from playbooks import PLAYBOOKS as REGISTERED

    files = sorted(p.stem for p in (HISTORIES / generation).glob("*.json"))
    expected = sorted(PLAYBOOKS + (ADDED if generation == "" else []))
    assert files == expected, "record a history per shipped playbook (and drop stale ones)"
    unknown = [name for name in files if name not in REGISTERED]
    assert not unknown, f"histories of playbooks nobody registers: {unknown} (drop them or register the playbook)"


@workflow.defn(name="CaseWorkflow")
class _CaseWorkflowWithAnExtraStep(CaseWorkflow):
    """A careless edit: a new activity before the first step, without `workflow.patched`."""

    @workflow.init
    def __init__(self, inp: CaseInput) -> None:
        super().__init__(inp)

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseView:
        await workflow.execute_activity("notify_soc", inp.case_id, start_to_close_timeout=timedelta(seconds=10))
        return await super().run(inp)


async def test_guard_bites_on_an_unpatched_change() -> None:
    replayer = Replayer(workflows=[_CaseWorkflowWithAnExtraStep], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history("malware_on_host"))


async def test_a_different_decision_kind_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Analyst and respond run the same commands (the playbook is planned either way); only the
    Decision search attribute's value differs, which replay does not compare. The decide step relies
    on this: the drift-case rule changed decisions without a patch (workflows/decide.py)."""
    from temporalio.worker import UnsandboxedWorkflowRunner

    import workflows.case as case_module
    from signoff.models import DecisionKind

    swapped = {DecisionKind.analyst: DecisionKind.respond, DecisionKind.respond: DecisionKind.analyst}
    original = case_module.decide
    calls: list[str] = []

    def other_kind(gov, score, problem=""):  # type: ignore[no-untyped-def]
        decision = original(gov, score, problem)
        calls.append(decision.kind.value)
        return decision.model_copy(update={"kind": swapped.get(decision.kind, decision.kind)})

    monkeypatch.setattr(case_module, "decide", other_kind)
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter,
                        workflow_runner=UnsandboxedWorkflowRunner())
    for playbook in PLAYBOOKS:
        result = await replayer.replay_workflow(_history(playbook), raise_on_replay_failure=False)
        assert result.replay_failure is None, playbook
    assert len(calls) >= len(PLAYBOOKS) and set(calls) <= {"analyst", "respond"}
