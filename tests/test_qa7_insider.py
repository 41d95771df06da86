"""QA7: an insider against Signoff's governance, on the real dev server, under a production policy.

The insider holds the `temporal` CLI against the namespace (write: start, signal, update) and their own
approver key. Each test is a finding that held before its fix:

1. `temporal workflow start --type GovernanceWorkflow -w signoff-governance --input '{"state": ...}'`
   (before anything started it, or after a terminate) gave every case a governance state nobody
   decided: an alert type on the loop at threshold 0, "set by" two leads who never did, or a model
   promotion "approved" by a lead who never did (then one real lead completed the quorum alone).
2. A second `GovernanceWorkflow` under another id took changes: its model promotion wrote the workers'
   model store (which cases score with while the real governance workflow names no model).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from policies.loader import load_policy
from policies.signing import public_key_text, sign_governance_change
from signoff.autonomy.client import govern, governance_id, read_state
from signoff.autonomy.models import (
    AlertTypeState,
    Event,
    GovernanceInput,
    GovernanceState,
    ModelChange,
    ModelState,
    ThresholdChange,
)
from signoff.governance_state import snapshot
from signoff.worker import build_worker

ROLES = {"alice": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "frank": ["detection_engineer"]}  # every role the policy's lists name is held (the loader checks)


@pytest.fixture
def home(tmp_path: Path, task_queue: str, dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(home))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    monkeypatch.delenv("SIGNOFF_APPROVER_KEY_FILE", raising=False)
    return home


@pytest.fixture
def keys(home: Path) -> dict[str, Ed25519PrivateKey]:
    from signoff.keys import create_key

    return {user: create_key(user)[1] for user in ROLES}


@pytest.fixture
def production_policy(policy_file: Path, keys: dict[str, Ed25519PrivateKey]) -> Path:
    """The shipped policy with production's deployment settings and model quorum (deploy/policy.example.yaml)."""
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy["autonomy"]["model_promotion_quorum"] = 2
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


def _token(key: Ed25519PrivateKey, workflow_id: str, change: str, subject: str, person: str) -> str:
    return sign_governance_change(key, workflow_id=workflow_id, change=change, subject=subject, person=person)


async def _state_when(client: Client, queue: str, ready: object, what: str) -> GovernanceState:
    for _ in range(200):
        state = await read_state(client, queue)
        if state is not None and ready(state):  # type: ignore[operator]
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"governance state never showed {what}: {state}")


def _crafted() -> GovernanceState:
    """What the insider types: malware on the loop at threshold 0, attributed to the two leads."""
    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    return GovernanceState(
        revision=2,
        alert_types={"malware": AlertTypeState(autonomy="on_the_loop", autonomy_by="carol,dave", autonomy_at=at,
                                               threshold_set=True, threshold=0.0, threshold_by="carol",
                                               threshold_at=at)},
        events=(Event(revision=1, at=at, kind="threshold", alert_type="malware", by="carol", reason="tuned",
                      after="0.000000"),
                Event(revision=2, at=at, kind="autonomy", alert_type="malware", by="dave", reason="evidence ok",
                      before="in_the_loop", after="on_the_loop")),
    )


async def test_a_governance_workflow_started_by_hand_with_a_state_of_its_own_starts_from_the_policy_file(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    from signoff.autonomy.client import read_live

    client, q = dev_env.client, task_queue
    gid = governance_id(q)
    async with build_worker(client, q):
        # The insider's start (as `temporal workflow start --type GovernanceWorkflow -w signoff-governance
        # --input '{"state": {...}}'`), before anyone's change started the workflow.
        await client.start_workflow("GovernanceWorkflow", GovernanceInput(state=_crafted(), ensure_schedule=False),
                                    id=gid, task_queue=q)
        state = await _state_when(client, q, lambda s: any(not e.accepted for e in s.events), "the refusal")
        assert "malware" not in state.alert_types and state.revision == 0, state
        refusal = next(e for e in state.events if not e.accepted)
        assert "state given at the start was not taken" in refusal.after
        assert not any(e.accepted for e in state.events)  # the crafted "changes by carol and dave" are gone
        live = await read_live(client, q)
        gov = snapshot(load_policy(), "malware", live, "case-1")
        assert (gov.autonomy, gov.threshold, gov.threshold_set_by) == ("in_the_loop", None, "policy file")

        # The workflow works on: a signed change by a lead is taken as ever.
        result = await govern(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.97, by="dave", reason="OOF curve",
            token=_token(keys["dave"], gid, "set_threshold=0.97", "phishing", "dave")), q)
        assert "0.970000" in result and "revision 1" in result, result


async def test_a_crafted_start_cannot_seed_a_model_quorum_for_one_lead(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    from signoff.scoring import model_store

    client, q = dev_env.client, task_queue
    gid = governance_id(q)
    model_id = model_store.default_model_id()
    seeded = GovernanceState(model=ModelState(pending=model_id, pending_approvers=("carol",)))
    async with build_worker(client, q):
        await client.start_workflow("GovernanceWorkflow", GovernanceInput(state=seeded, ensure_schedule=False),
                                    id=gid, task_queue=q)
        # dave alone, with his own valid token: one approval of the two the policy needs.
        result = await govern(client, "promote_model", ModelChange(
            model_id=model_id, by="dave", reason="looks fine",
            token=_token(keys["dave"], gid, "promote_model", model_id, "dave")), q)
        assert "1/2" in result, result
        state = await read_state(client, q)
        assert state is not None and state.model.active is None and state.model.pending_approvers == ("dave",)
        assert model_store.history() == []  # the workers' model store was not written


async def test_a_second_governance_workflow_takes_no_change(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    from signoff.scoring import model_store

    client, q = dev_env.client, task_queue
    evil = f"evil-governance-{q}"
    model_id = model_store.default_model_id()
    async with build_worker(client, q):
        # As `signoff` does for the real one (update-with-start), under an id of the insider's choosing.
        start = WithStartWorkflowOperation("GovernanceWorkflow", GovernanceInput(ensure_schedule=False), id=evil,
                                           task_queue=q, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await client.execute_update_with_start_workflow("promote_model", ModelChange(
                model_id=model_id, by="carol", reason="second governance workflow",
                token=_token(keys["carol"], evil, "promote_model", model_id, "carol")), start_workflow_operation=start)
        assert "is not the governance workflow" in str(caught.value.cause), caught.value.cause
        handle = client.get_workflow_handle(evil)
        await handle.result()  # it ended at once, its refusal recorded
        with pytest.raises(Exception):  # noqa: B017 - ended: nothing more reaches it
            await handle.execute_update("promote_model", ModelChange(
                model_id=model_id, by="dave", reason="second governance workflow",
                token=_token(keys["dave"], evil, "promote_model", model_id, "dave")))
        assert model_store.history() == []
        history = await handle.fetch_history()
        assert not any(e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events)


# ---------------------------------------------------------------- 3. a reset run is shown as one


async def test_explain_shows_a_reset_and_the_rejection_it_discarded(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """An insider with `temporal workflow reset` takes a case back to before a colleague's rejection, then
    approves. The product cannot stop a reset (namespace write); `signoff explain` must not present the
    reset run as clean: it names the reset and what the old run had recorded after the reset point."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType, ResetReapplyType
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    from policies.signing import sign_approval
    from signoff.explain import explain_case, render_explanation
    from signoff.models import ApprovalRequest, StepState
    from tests.casekit import alert, awaiting, case_input, start_case, wait_for
    from workflows.case import CaseWorkflow

    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        inp = case_input()
        handle = await start_case(client, q, inp, alert("r1", ("account", f"u-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)

        def signed(who: str, decision: str) -> ApprovalRequest:
            token = sign_approval(keys[who], case_id=inp.case_id, step="disable_account", decision=decision,
                                  approver=who)
            return ApprovalRequest(step="disable_account", approver=who, reason=f"{who} decides", token=token)

        await handle.execute_update(CaseWorkflow.reject, signed("carol", "reject"))
        history = await handle.fetch_history()
        accepted = next(e.event_id for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
        task_done = max(e.event_id for e in history.events if e.event_id < accepted
                        and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        # `temporal workflow reset -w CASE --event-id N --reapply-type None`
        await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=inp.case_id),
            reason="stuck task", workflow_task_finish_event_id=task_done, request_id=f"reset-{inp.case_id}",
            reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_NONE))
        fresh = client.get_workflow_handle(inp.case_id)
        await wait_for(fresh, awaiting("disable_account"), "waiting again after the reset", attempts=2400)
        await fresh.execute_update(CaseWorkflow.approve, signed("alice", "approve"))
        await wait_for(fresh, lambda v: any(s.step_id == "disable_account" and s.state == StepState.executed
                                            for s in v.steps), "disable_account executed", attempts=2400)

        ex = await explain_case(inp.case_id)
        assert len(ex["resets"]) == 1, ex.get("resets")
        reset = ex["resets"][0]
        assert reset["reason"].endswith("stuck task") and reset["base_run_id"] != ex["run_id"]
        discarded = [d["what"] for d in reset["discarded"]]
        assert any("reject of step disable_account by carol" in d for d in discarded), discarded
        assert not any("alice" in d for d in discarded)
        text = render_explanation(ex)
        assert "RESET" in text and "DISCARDED by the reset" in text and "carol" in text, text
        assert (await fresh.describe()).run_id == ex["run_id"]  # the run explained is the reset run
        # The audit export says so too: a `workflow_reset` event in the reset run's record.
        from signoff.audit import case_events
        from signoff.history import load_history

        exported = case_events(await load_history(client, inp.case_id))
        (reset_event,) = [e for e in exported if e["kind"] == "workflow_reset"]
        assert reset_event["run_id"] == ex["run_id"] and reset_event["detail"]["base_run_id"] == reset["base_run_id"]
        assert reset_event["detail"]["reason"].endswith("stuck task")


# ---------------------------------------------------------------- 4. a governance token is no case approval


def test_a_governance_token_never_counts_as_a_case_approval(keys: dict[str, Ed25519PrivateKey],
                                                             production_policy: Path) -> None:
    """docs/deployment.md: "a case token never counts as one, nor the other way round". The governance side
    checked the `scope` claim; the case side did not, so a governance token whose claims matched a case's
    (case, step, decision, approver) was taken as that approval (seen live on a critical step)."""
    from policies.signing import governance_token_refusal, sign_approval, token_refusal

    policy, now = load_policy(), datetime.now(UTC)
    scoped = sign_governance_change(keys["carol"], workflow_id="case-1", change="approve", subject="revoke_sessions",
                                    person="carol")
    refusal = token_refusal(policy, case_id="case-1", step="revoke_sessions", decision="approve", approver="carol",
                            token=scoped, now=now, used_nonces=set())
    assert refusal is not None and "governance change, not a case decision" in refusal
    plain = sign_approval(keys["carol"], case_id="case-1", step="revoke_sessions", decision="approve", approver="carol")
    assert token_refusal(policy, case_id="case-1", step="revoke_sessions", decision="approve", approver="carol",
                         token=plain, now=now, used_nonces=set()) is None
    # ... and the other way round, as before; a real governance token still verifies.
    assert "not for a governance change" in str(governance_token_refusal(
        policy, workflow_id="case-1", change="approve", subject="revoke_sessions", person="carol", token=plain,
        now=now, used_nonces=set()))
    assert governance_token_refusal(policy, workflow_id="case-1", change="approve", subject="revoke_sessions",
                                    person="carol", token=scoped, now=now, used_nonces=set()) is None


# ---------------------------------------------------------------- 5. verify says when it cannot tell a rewrite


def test_verify_on_a_machine_without_key_or_ledger_says_a_rewrite_would_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The insider exports, deletes the rejection they want gone, recomputes every hash and the digest, and
    hands the file to an auditor, who verifies on their own machine (no export ledger, no audit key):
    `OK ... chain intact`, exit 0, and nothing said that such a rewrite is undetectable there."""
    import json

    from typer.testing import CliRunner

    from signoff.audit import chain
    from signoff.cli import app

    monkeypatch.delenv("SIGNOFF_AUDIT_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "auditor"))
    events = [{"at": "2026-11-29T06:40:00+00:00", "kind": "approval", "workflow_id": "case-1", "actor": "alice",
               "detail": {"step": "isolate_host"}}]  # the rejection before it was deleted, chain recomputed
    header = {"at": "2026-11-29T06:50:00+00:00", "format": "signoff-audit/1", "namespace": "default",
              "since": None, "sources": {}}
    trail = tmp_path / "trail.jsonl"
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in chain(events, header)))
    result = CliRunner().invoke(app, ["audit", "verify", str(trail)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output and "NOT ANCHORED" in result.output, result.output
    as_json = CliRunner().invoke(app, ["audit", "verify", str(trail), "--json"])
    assert json.loads(as_json.output)["anchored"] is False, as_json.output

    # With the audit key where the trail was exported and where it is verified, it is anchored.
    monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "k" * 64)
    trail.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in chain(events, header)))
    result = CliRunner().invoke(app, ["audit", "verify", str(trail)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "NOT ANCHORED" not in result.output, result.output


# ---------------------------------------------------------------- 6. a pending promotion's earlier approvals


async def test_a_model_promotion_quorum_counts_only_people_who_still_govern(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """carol approves a model (1/2), then leaves the leads (policy pull request: her role is gone). Weeks
    later dave approves alone, and the promotion ran on carol's old approval: two people on paper, one in
    the policy in force (the governance twin of the known rollback-votes issue)."""
    from signoff.scoring import model_store

    client, q = dev_env.client, task_queue
    gid = governance_id(q)
    model_id = model_store.default_model_id()
    async with build_worker(client, q):
        first = await govern(client, "promote_model", ModelChange(
            model_id=model_id, by="carol", reason="baseline",
            token=_token(keys["carol"], gid, "promote_model", model_id, "carol")), q)
        assert "1/2" in first, first
        policy = yaml.safe_load(production_policy.read_text())
        policy["approvers"]["carol"]["roles"] = ["analyst"]  # carol moved to the analysts' team ...
        policy["approvers"]["erin"] = {"roles": ["lead"]}  # ... erin took her place (two leads: critical quorum)
        production_policy.write_text(yaml.safe_dump(policy))
        result = await govern(client, "promote_model", ModelChange(
            model_id=model_id, by="dave", reason="baseline",
            token=_token(keys["dave"], gid, "promote_model", model_id, "dave")), q)
        assert "1/2" in result, result
        state = await read_state(client, q)
        assert state is not None and state.model.active is None and state.model.pending_approvers == ("dave",)
        assert model_store.history() == []
        dropped = [e for e in state.events if not e.accepted and "no longer counted: carol" in e.after]
        assert len(dropped) == 1, state.events


# ---------------------------------------------------------------- 7. a rejection laundered through a detach


async def test_the_detacher_may_not_approve_the_detached_cases_steps(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """carol rejects isolating a host. alice (an analyst: she may detach, she may approve the high tier)
    detaches the alert that brought the host into the case: its case of its own offers the same step again,
    and alice approved it alone, as if she were not the one who asked for that case."""
    from policies.signing import sign_approval, sign_case_decision
    from signoff.models import ApprovalRequest, DetachRequest, StepState
    from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
    from workflows.case import CaseWorkflow

    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        inp = case_input(alert_type="malware")
        cid = inp.case_id
        handle = await start_case(client, q, inp, *(alert(f"{cid}-m{n}", ("host", f"{h}-{cid}"), category="Malware")
                                                     for n, h in ((1, "a"), (2, "b"))))
        view = await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=2400)
        host = step(view, "isolate_host").target.id
        uid = next(a.uid for a in view.timeline if any(e.value == host for e in a.entities))

        def decision(who: str, case_id: str, what: str) -> ApprovalRequest:
            token = sign_approval(keys[who], case_id=case_id, step="isolate_host", decision=what, approver=who)
            return ApprovalRequest(step="isolate_host", approver=who, reason=f"{who}: {what}", token=token)

        await handle.execute_update(CaseWorkflow.reject, decision("carol", cid, "reject"))
        await handle.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid=uid, requested_by="alice", reason="another incident",
            token=sign_case_decision(keys["alice"], case_id=cid, decision="detach", approver="alice")))
        own = client.get_workflow_handle(f"{cid}-d1")
        await wait_for(own, awaiting("isolate_host"), "isolate_host waiting in the detached case", attempts=2400)

        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await own.execute_update(CaseWorkflow.approve, decision("alice", own.id, "approve"))
        assert "detached this case's alert" in str(caught.value.cause), caught.value.cause
        # The same as a signal: written, refused by the handler, kept in the case.
        await own.signal(CaseWorkflow.approve_signal, decision("alice", own.id, "approve"))
        view = await wait_for(own, lambda v: any(r.approver == "alice" for r in v.refusals), "the refused signal")
        assert step(view, "isolate_host").state == StepState.awaiting_approval
        # Another approver decides, as for any case.
        reply = await own.execute_update(CaseWorkflow.approve, decision("dave", own.id, "approve"))
        assert "quorum 1/1 reached" in reply, reply
        # The detached case's history (the refused approval signal, its patch marker) replays as it ran.
        from temporalio.contrib.pydantic import pydantic_data_converter
        from temporalio.worker import Replayer

        replayed = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await own.fetch_history(), raise_on_replay_failure=False)
        assert replayed.replay_failure is None, replayed.replay_failure


# ---------------------------------------------------------------- 8. "signed" is what the token says, not the payload


async def test_a_signed_flag_typed_into_the_payload_is_not_reported_as_signed(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, policy_file: Path,
) -> None:
    """`temporal workflow update execute --name approve --input '{..., "signed": true}'` (no token) under
    the lab policy, which takes unsigned approvals: `signoff explain` and the audit export (built from the
    same records) said the approval was signed, the proof of the approver's intent it never had."""
    from signoff.audit import collect_events
    from signoff.explain import explain_case, render_explanation
    from tests.casekit import alert, awaiting, case_input, start_case, wait_for

    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        inp = case_input()
        handle = await start_case(client, q, inp, alert("s1", ("account", f"u-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        await handle.execute_update("approve", {"step": "disable_account", "approver": "alice", "reason": "typed",
                                                "signed": True})
        await handle.signal("reject_signal", {"step": "revoke_sessions", "approver": "bob", "reason": "typed too",
                                              "signed": True})
        ex = await explain_case(inp.case_id)
        assert [(a["approver"], a["signed"]) for a in ex["approvals"]] == [("alice", False), ("bob", False)]
        assert "(signed)" not in render_explanation(ex)
        events, _ = await collect_events(client, None)
        mine = [e for e in events if e.get("workflow_id") == inp.case_id and e["kind"] in ("approval", "rejection",
                                                                                          "refusal")]
        assert mine and all(e["detail"].get("signed") is False for e in mine), mine


# ---------------------------------------------------------------- 9. no moment without the live state


async def test_continue_as_new_carries_the_live_state_in_the_next_runs_memo(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """Cases read the live governance state from the workflow's memo. A continued run had none until its first
    task ran: in between every case decided under the policy file alone (seen as a flaky read_live() = None
    right after continue-as-new). Verdict signals, which any namespace writer can send, force it."""
    from temporalio.api.common.v1 import Payload

    client, q = dev_env.client, task_queue
    gid = governance_id(q)
    async with build_worker(client, q):
        first = await client.start_workflow("GovernanceWorkflow", GovernanceInput(ensure_schedule=False,
                                                                                  history_limit=20),
                                            id=gid, task_queue=q)
        for value in (0.91, 0.92, 0.93, 0.94, 0.95, 0.96):
            await govern(client, "set_threshold", ThresholdChange(
                alert_type="phishing", value=value, by="dave", reason=f"step {value}",
                token=_token(keys["dave"], gid, f"set_threshold={value!r}", "phishing", "dave")), q)
        latest = await client.get_workflow_handle(gid).describe()
        assert latest.run_id != first.result_run_id, "it should have continued as new"
        history = await client.get_workflow_handle(gid, run_id=latest.run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        payload: Payload | None = started.memo.fields.get("live") if started.memo else None
        assert payload is not None, "the continued run started without the live state"
        import json

        live = json.loads(payload.data)
        assert live["alert_types"]["phishing"]["threshold"] is not None and live["revision"] >= 1, live
