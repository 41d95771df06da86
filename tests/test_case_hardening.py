"""Case-workflow hardening (security QA findings), on the real Temporal servers.

1. A rollback accepted after the verdict, while the case is still finishing, runs its compensations
   before the case completes (update and signal); one sent once the case is archiving is refused,
   and a refused rollback signal is recorded as a refusal, not as a rollback.
2. With `trust_unsigned_approvals: false`, rollback and close need a token signed for the case and
   the decision ("rollback" / "close"), and close needs a role that may close; `signoff rollback` /
   `signoff close` sign with the user's key file.
3. Close and rollback reasons are capped like approval reasons.
4. A token issued in the future (its `iat` ahead of workflow time) is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.audit import ArchiveRequest, archive_case
from activities.governance import record_verdict
from connectors.lab import lab
from policies.engine import Policy
from policies.signing import CASE_STEP, public_key_text, sign_approval, sign_case_decision, token_refusal
from signoff.autonomy.models import VerdictRecord
from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CloseRequest,
    Decision,
    RollbackRequest,
    StepState,
    Verdict,
)
from signoff.worker import activities
from tests.auditkit import cli_process
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.replay import recorded_patches
from workflows.case import HARDENED_CHECKS, MAX_REASON_CHARS, ROLLBACK_AFTER_VERDICT, CaseWorkflow

PRE_FIX = Path(__file__).parent / "replay" / "histories" / "before-case-hardening"
GUARD = 60.0  # seconds: turns a hang (the defect) into a failure; never a measure of speed
HUGE = "x" * 1_500_000  # the QA reason that wedged the governance workflow downstream


# ---------------------------------------------------------------- helpers


class Held:
    """An activity replaced by one that waits for the test before doing the real work."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self) -> None:
        self.started.set()
        await self.release.wait()


def _worker_activities(replacement: Callable[..., Any]) -> list[Callable[..., Any]]:
    name = _name(replacement)
    kept = [a for a in activities() if _name(a) != name]
    assert len(kept) == len(activities()) - 1, f"no activity {name!r} to replace"
    return [*kept, replacement]


def _name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.from_callable(fn)
    assert defn is not None and defn.name
    return defn.name


def _held_record_verdict(held: Held) -> Callable[[VerdictRecord], Awaitable[str]]:
    @activity.defn(name="record_verdict")
    async def held_record_verdict(rec: VerdictRecord) -> str:
        await held.hold()
        return await record_verdict(rec)

    return held_record_verdict


def _held_archive(held: Held) -> Callable[[ArchiveRequest], Awaitable[str]]:
    @activity.defn(name="archive_case")
    async def held_archive_case(req: ArchiveRequest) -> str:
        await held.hold()
        return await archive_case(req)

    return held_archive_case


async def _contained_malware_case(client: Any, task_queue: str) -> tuple[WorkflowHandle, str]:
    """A malware case whose containment step (isolate_host) was approved and executed."""
    inp = case_input(alert_type="malware")
    host = f"host-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=2400)
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                      reason="beaconing to C2"))
    await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=2400)
    assert lab().read("host", host)["network"] == "isolated"
    return handle, host


def _verdict(analyst: str = "alice", reason: str = "confirmed", token: str | None = None) -> CloseRequest:
    return CloseRequest(analyst=analyst, verdict=Verdict.true_positive, reason=reason, token=token)


async def _accepted_updates(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


async def _replays_with(handle: WorkflowHandle, patch: str) -> None:
    """The case took the patched path, and its history replays against the current workflow."""
    history = await handle.fetch_history()
    assert patch in recorded_patches(history)
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def _refused_update(handle: WorkflowHandle, update: Any, arg: Any, kind: str, **kw: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await asyncio.wait_for(handle.execute_update(update, arg, **kw), GUARD)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == kind, cause
    return cause.message


# ---------------------------------------------------------------- 1. rollback after the verdict


@pytest.mark.parametrize("via", ["update", "signal"])
async def test_rollback_sent_right_after_the_verdict_runs_before_the_case_completes(
    time_env: WorkflowEnvironment, task_queue: str, via: str
) -> None:
    client = time_env.client
    held = Held()  # the case is past its verdict, recording it as evidence, when the rollback comes
    async with settled_worker(client, task_queue, activities=_worker_activities(_held_record_verdict(held))):
        handle, host = await _contained_malware_case(client, task_queue)
        await handle.execute_update(CaseWorkflow.close, _verdict())
        await asyncio.wait_for(held.started.wait(), GUARD)
        request = RollbackRequest(requested_by="bob", reason="wrong host: it was the red team")
        if via == "update":
            rollback: asyncio.Task[str] | None = asyncio.create_task(
                handle.execute_update(CaseWorkflow.rollback, request, id="late-rollback"))
        else:
            rollback = None
            await handle.signal(CaseWorkflow.rollback_signal, request.model_dump(mode="json"))
        view = await wait_for(handle, lambda v: v.rollback is not None or bool(v.refusals), "rollback taken",
                              attempts=2400)
        assert view.rollback == request and not view.refusals  # accepted while the case is still open...
        held.release.set()
        if rollback is not None:  # ...so it answers: it ran
            msg = await asyncio.wait_for(rollback, GUARD)
            assert msg.startswith("rollback rolled_back"), msg
        final = await asyncio.wait_for(handle.result(), GUARD)  # and the case completes
    assert final.status == CaseStatus.rolled_back
    assert final.verdict is not None and final.verdict.analyst == "alice"  # the verdict stands
    assert step(final, "isolate_host").state == StepState.compensated
    assert step(final, "isolate_host").compensation is not None
    assert lab().read("host", host)["network"] == "connected"  # the executed action was undone
    assert not final.refusals
    await _replays_with(handle, ROLLBACK_AFTER_VERDICT)


async def test_rollback_once_the_case_is_archiving_is_refused_and_recorded_as_refused(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    held = Held()  # the case has settled and is archiving its history: nothing can run any more
    async with settled_worker(client, task_queue, activities=_worker_activities(_held_archive(held))):
        handle, host = await _contained_malware_case(client, task_queue)
        await handle.execute_update(CaseWorkflow.close, _verdict())
        await asyncio.wait_for(held.started.wait(), GUARD)

        message = await _refused_update(handle, CaseWorkflow.rollback, RollbackRequest(requested_by="bob", reason="late"),
                                        "RollbackRefused", id="too-late")
        assert "the case has finished" in message and "by hand" in message

        await handle.signal(CaseWorkflow.rollback_signal, {"requested_by": "bob", "reason": "late too"})
        view = await wait_for(handle, lambda v: bool(v.refusals), "rollback signal refused", attempts=2400)
        held.release.set()
        final = await asyncio.wait_for(handle.result(), GUARD)
    assert final.status == CaseStatus.closed
    assert final.rollback is None  # not recorded as a rollback...
    [refused] = view.refusals  # ...but as a refused request, with its reason
    assert (refused.via, refused.decision, refused.approver, refused.accepted) == (
        "rollback_signal", Decision.rollback, "bob", False)
    assert "the case has finished" in refused.refusal
    assert any("refused rollback signal from 'bob'" in e for e in final.escalations)
    assert step(final, "isolate_host").state == StepState.executed
    assert lab().read("host", host)["network"] == "isolated"
    # explain and the audit trail tell it as a refusal, not as a rollback with 0 compensations
    from signoff.audit import case_events
    from signoff.explain import explanation_from_history, render_explanation
    from signoff.history import decode_history

    history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
    ex = explanation_from_history(history)
    [rollback] = ex["rollbacks"]
    assert rollback["outcome"] == "refused" and "the case has finished" in rollback["refusal"]
    assert "Rollback refused:" in render_explanation(ex) and "Rollback: " not in render_explanation(ex)
    kinds = [(e["kind"], e["detail"].get("decision")) for e in case_events(history) if e["actor"] == "bob"]
    assert ("refusal", "rollback") in kinds and not any(k == "rollback" for k, _ in kinds)


# ---------------------------------------------------------------- 3. reason caps (lab mode)


async def test_close_and_rollback_reasons_are_capped(time_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"h-{inp.case_id}"),
                                                                 category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=2400)  # tag and watch_host ran
        accepted = await _accepted_updates(handle)
        for update, arg, kind in (
            (CaseWorkflow.close, _verdict(reason=HUGE), "CloseRefused"),
            (CaseWorkflow.rollback, RollbackRequest(requested_by="bob", reason=HUGE), "RollbackRefused"),
        ):
            message = await _refused_update(handle, update, arg, kind)
            assert f"the reason is {len(HUGE)} characters; keep it under {MAX_REASON_CHARS}" in message
        assert await _accepted_updates(handle) == accepted  # nothing of them written

        # Signals are written anyway: refused, and the refusal keeps only the start of the reason.
        big = "y" * 100_000
        await handle.signal(CaseWorkflow.close_signal, {"analyst": "alice", "verdict": "TruePositive", "reason": big})
        await handle.signal(CaseWorkflow.rollback_signal, {"requested_by": "bob", "reason": big})
        view = await wait_for(handle, lambda v: len(v.refusals) >= 2, "both refused", attempts=2400)
        assert [(r.via, r.decision) for r in view.refusals] == [("close_signal", Decision.close),
                                                                ("rollback_signal", Decision.rollback)]
        assert all("keep it under" in r.refusal and len(r.reason) < 400 for r in view.refusals)
        assert view.verdict is None and view.rollback is None
        assert step(view, "tag").state == StepState.executed

        # Lab mode otherwise as before: an unsigned close from any approver in policy (erin is a
        # detection engineer) closes the case.
        await handle.execute_update(CaseWorkflow.close, _verdict(analyst="erin", reason="lab exercise"))
        final = await asyncio.wait_for(handle.result(), GUARD)
        assert final.status == CaseStatus.closed and final.verdict is not None and final.verdict.analyst == "erin"


# ---------------------------------------------------------------- 2 and 4. production mode: signed


# dave: the critical tier (quorum 2 of lead / ir_manager) must be reachable, or the policy is refused at load.
ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "erin": ["detection_engineer"]}


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Ed25519PrivateKey]:
    """Key files made by `signoff keys`' own code in the CLI's home, one per approver."""
    from signoff.keys import create_key

    with monkeypatch.context() as m:
        m.setenv("SIGNOFF_HOME", str(tmp_path / "cli-home"))
        return {user: create_key(user)[1] for user in ROLES}


@pytest.fixture
def production_policy(policy_file: Path, keys: dict[str, Ed25519PrivateKey]) -> Path:
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


def _case_token(key: Ed25519PrivateKey, case_id: str, decision: str, who: str, **kw: Any) -> str:
    return sign_case_decision(key, case_id=case_id, decision=decision, approver=who, **kw)


async def test_production_rollback_and_close_need_signed_tokens_and_a_closing_role(
    dev_env: WorkflowEnvironment, task_queue: str, production_policy: Path, keys: dict[str, Ed25519PrivateKey]
) -> None:
    client = dev_env.client
    k = keys
    mallory = Ed25519PrivateKey.generate()
    future = datetime.now(UTC) + timedelta(days=30)
    async with settled_worker(client, task_queue):
        inp = case_input()
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("p1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)

        rollbacks = {
            "unsigned": (RollbackRequest(requested_by="bob", reason="fp"), "unsigned rollback requests are not accepted"),
            "close token used to roll back": (RollbackRequest(
                requested_by="bob", reason="fp", token=_case_token(k["bob"], cid, "close", "bob")),
                "token is for decision 'close', not 'rollback'"),
            "approval token used to roll back": (RollbackRequest(
                requested_by="bob", reason="fp",
                token=sign_approval(k["bob"], case_id=cid, step="disable_account", decision="approve", approver="bob")),
                "token is for step 'disable_account'"),
            "token for another case": (RollbackRequest(
                requested_by="bob", reason="fp", token=_case_token(k["bob"], f"{cid}-other", "rollback", "bob")),
                "token is for case"),
            "forged": (RollbackRequest(requested_by="bob", reason="fp",
                                       token=_case_token(mallory, cid, "rollback", "bob")), "forged"),
            "issued in the future": (RollbackRequest(requested_by="bob", reason="fp", token=_case_token(
                k["bob"], cid, "rollback", "bob", now=future)), "token issued in the future"),
        }
        closes = {
            "unsigned": (_verdict(), "unsigned close requests are not accepted"),
            "detection engineer (signed)": (_verdict("erin", token=_case_token(k["erin"], cid, "close", "erin")),
                                            "closing a case needs one of ['analyst', 'lead', 'ir_manager']"),
            "rollback token used to close": (_verdict(token=_case_token(k["alice"], cid, "rollback", "alice")),
                                             "token is for decision 'rollback', not 'close'"),
            "issued in the future": (_verdict(token=_case_token(k["alice"], cid, "close", "alice", now=future)),
                                     "token issued in the future"),
        }
        future_approval = ApprovalRequest(step="disable_account", approver="alice", reason="x", token=sign_approval(
            k["alice"], case_id=cid, step="disable_account", decision="approve", approver="alice", now=future))

        accepted = await _accepted_updates(handle)
        for kind, (req, expected) in rollbacks.items():
            message = await _refused_update(handle, CaseWorkflow.rollback, req, "RollbackRefused")
            assert expected in message, f"rollback {kind}: {message}"
        for kind, (creq, expected) in closes.items():
            message = await _refused_update(handle, CaseWorkflow.close, creq, "CloseRefused")
            assert expected in message, f"close {kind}: {message}"
        message = await _refused_update(handle, CaseWorkflow.approve, future_approval, "ApprovalRefused")
        assert "token issued in the future" in message  # item 4: iat vs workflow time
        # None reaches the history but the forged rollback: a signature the case's copy of the policy does
        # not verify is checked against the policy in force (a rotated key), once an hour; refused and kept.
        assert await _accepted_updates(handle) == accepted + 1
        checked = (await handle.query(CaseWorkflow.status)).refusals
        assert [(r.approver, r.via, "forged" in r.refusal) for r in checked] == [("bob", "rollback", True)], checked

        # The same as signals: written, refused by the handler, kept in the case's refusals.
        for req, _ in rollbacks.values():
            await handle.signal(CaseWorkflow.rollback_signal, req.model_dump(mode="json"))
        for creq, _ in closes.values():
            await handle.signal(CaseWorkflow.close_signal, creq.model_dump(mode="json"))
        await handle.signal(CaseWorkflow.approve_signal, future_approval.model_dump(mode="json"))
        expected_refusals = [*rollbacks.values(), *closes.values(), (future_approval, "token issued in the future")]
        view = await wait_for(handle, lambda v: len(v.refusals) >= len(checked) + len(expected_refusals),
                              "signals refused", attempts=2400)
        assert len(view.refusals) == len(checked) + len(expected_refusals)
        vias = ["rollback_signal"] * len(rollbacks) + ["close_signal"] * len(closes) + ["signal"]
        for record, via, (_, expected) in zip(view.refusals[len(checked):], vias, expected_refusals, strict=True):
            assert record.via == via and not record.accepted and expected in record.refusal, record
        assert view.verdict is None and view.rollback is None
        assert step(view, "tag").state == StepState.executed
        assert step(view, "disable_account").state == StepState.awaiting_approval

        # Properly signed: a rollback by an analyst runs, a close by an analyst closes.
        good = RollbackRequest(requested_by="bob", reason="false positive: pentest",
                               token=_case_token(k["bob"], cid, "rollback", "bob"))
        msg = await asyncio.wait_for(handle.execute_update(CaseWorkflow.rollback, good), GUARD)
        assert msg.startswith("rollback rolled_back") and "tag=compensated" in msg, msg
        await handle.execute_update(CaseWorkflow.close, _verdict(
            reason="pentest", token=_case_token(k["alice"], cid, "close", "alice")))
        final = await asyncio.wait_for(handle.result(), GUARD)
    assert final.status == CaseStatus.rolled_back
    assert final.verdict is not None and final.verdict.analyst == "alice"
    assert step(final, "disable_account").state == StepState.skipped
    await _replays_with(handle, HARDENED_CHECKS)  # the refused signals took the patched path


def test_token_issued_in_the_future_is_refused_beyond_the_clock_skew() -> None:
    from policies.loader import load_policy

    key = Ed25519PrivateKey.generate()
    base = load_policy()
    policy = Policy.model_validate({**base.model_dump(mode="json"),
                                    "approvers": {"alice": {"roles": ["analyst"], "public_key": public_key_text(key)}}})
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def refusal(issued: datetime) -> str | None:
        token = sign_case_decision(key, case_id="c1", decision="close", approver="alice", now=issued)
        return token_refusal(policy, case_id="c1", step=CASE_STEP, decision="close", approver="alice", token=token,
                             now=now, used_nonces=set())

    assert refusal(now) is None
    assert refusal(now + timedelta(minutes=4)) is None  # signer's clock a little ahead: fine
    assert "token issued in the future" in (refusal(now + timedelta(minutes=6)) or "")
    assert "token issued in the future" in (refusal(now + timedelta(days=30)) or "")
    with pytest.raises(ValueError, match="case-wide decisions"):
        sign_case_decision(key, case_id="c1", decision="approve", approver="alice")


# ---------------------------------------------------------------- 2. the CLI signs rollback and close


async def test_cli_signs_rollback_and_close_with_the_key_file(
    dev_env: WorkflowEnvironment, task_queue: str, production_policy: Path, tmp_path: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    client = dev_env.client
    cli_home = tmp_path / "cli-home"
    env = {**os.environ, "SIGNOFF_HOME": str(cli_home), "SIGNOFF_POLICY": str(production_policy),
           "TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
    async with settled_worker(client, task_queue):
        inp = case_input()
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("k1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)

        (cli_home / "keys" / "carol.ed25519").unlink()  # carol (lead) may roll back, but has no key here
        code, _, err = await cli_process("rollback", cid, "--as", "carol", "--reason", "x", env=env)
        assert code != 0 and "unsigned rollback requests are not accepted" in " ".join(err.split()), err
        code, _, err = await cli_process("close", cid, "--as", "erin", "--verdict", "FalsePositive", "--reason", "x", env=env)
        assert code != 0 and "closing a case needs one of" in " ".join(err.split()), err
        refused = [json.loads(line) for line in (cli_home / "audit" / "refused.jsonl").read_text().splitlines()]
        assert [(r["kind"], r["signed"]) for r in refused] == [("refused_rollback", False), ("refused_close", True)]
        assert all("token" not in r for r in refused)

        code, out, err = await cli_process("rollback", cid, "--as", "bob", "--reason", "pentest account", env=env)
        assert code == 0 and "rolled back: " in out, err
        code, out, err = await cli_process("close", cid, "--as", "alice", "--verdict", "BenignPositive",
                                    "--reason", "pentest", env=env)
        assert code == 0, err
        final = await asyncio.wait_for(handle.result(), GUARD)
    assert final.rollback is not None and final.rollback.requested_by == "bob" and final.rollback.token
    assert final.verdict is not None and final.verdict.analyst == "alice" and final.verdict.token
    assert step(final, "tag").state == StepState.compensated


# ---------------------------------------------------------------- cases recorded before the fix


@pytest.mark.parametrize("name", ["rollback_signal_after_verdict", "unsigned_signals_in_production"])
async def test_cases_recorded_before_the_fix_replay_as_they_ran(name: str) -> None:
    """Recorded with the code before this change (a rollback signal accepted after the verdict and
    never run; in production mode an unsigned rollback signal, a future-dated approval and a close
    signal from a detection engineer with a 5,000-character reason, all accepted): cases running when
    the change ships go on as they started (the new checks are behind `workflow.patched`)."""
    path = PRE_FIX / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    history = WorkflowHistory.from_json(name, path.read_text())
    assert not recorded_patches(history) & {ROLLBACK_AFTER_VERDICT, HARDENED_CHECKS}
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None
