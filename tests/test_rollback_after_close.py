"""Rolling back a case whose workflow has ended (promise 6; workflows/case_undo.py, signoff/undo.py).

With the lab policy (no `rollback_window`) a verdict ends the case at once. Afterwards `signoff
rollback` starts the case's undo workflow (`<case>-undo`): the policy in force now governs it (roles,
signed tokens, quorum), it restores the captured state of what has not changed since (real OpenLDAP
and nftables stand-ins, and the lab), leaves and escalates what has, retries only what failed, and a
request after it finished runs nothing again. Real time-skipping Temporal server; policy file: a test copy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.executors import reset_cache
from connectors.http import Secret
from connectors.lab import lab
from connectors.ldap_directory import LdapDirectory
from connectors.nftables_hosts import NetnsRunner, NftablesHosts
from policies.signing import public_key_text, sign_case_decision
from signoff import settings
from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CaseView,
    CloseRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from signoff.undo import UndoInput, UndoOutcome, UndoStatus, UndoView, read_undo, request_undo, undo_id
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.standins import (  # noqa: F401
    LdapStandin,
    NetnsHosts,
    netns_hosts_fixture,
    slapd_fixture,
    tcp_reachable,
)
from workflows.case import CaseWorkflow
from workflows.case_undo import CaseUndoWorkflow

PATIENCE = 1200


def _edit_policy(policy_file: Path, **changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(policy_file.read_text())
    raw.pop("rollback_window", None)  # the lab policy: a verdict ends the case
    raw.update(changes)
    policy_file.write_text(yaml.safe_dump(raw))
    return dict(raw)


async def _contained_then_closed(client: Client, task_queue: str, host: str | None = None,
                                 account: str | None = None,
                                 before_verdict: Callable[[WorkflowHandle], Awaitable[None]] | None = None,
                                 ) -> tuple[WorkflowHandle, CaseView]:
    """A malware case: isolate_host and disable_account approved and executed, a verdict, the end."""
    inp = case_input(alert_type="malware")
    host = host or f"host-{inp.case_id}"
    account = account or f"user-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), ("account", account),
                                                             category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=PATIENCE)
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="bob",
                                                                      reason="beaconing"))
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=PATIENCE)
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="disable_account", approver="bob",
                                                                      reason="credentials used by the implant"))
    await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=PATIENCE)
    if before_verdict is not None:
        await before_verdict(handle)
    await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                 reason="confirmed"))
    final: CaseView = await handle.result()
    assert final.status == CaseStatus.closed and (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    return handle, final


def _rollback(who: str, reason: str = "false positive after review", token: str | None = None) -> RollbackRequest:
    return RollbackRequest(requested_by=who, reason=reason, token=token)


async def _ask(client: Client, task_queue: str, case_id: str, req: RollbackRequest) -> str:
    return await request_undo(client, case_id, req, task_queue=task_queue,
                              update_id=f"rollback:{case_id}:{req.requested_by}:{uuid.uuid4().hex[:12]}")


def _undo_calls(kind: str, target: str) -> list[dict[str, Any]]:
    return [c for c in lab().calls(kind, target) if c["key"].endswith(":undo-late")]


def _text(result: Any) -> str:
    """CLI output as one line (the console wraps long lines at 160 columns)."""
    return " ".join(result.output.split())


def _escalations(case_id: str) -> list[dict[str, Any]]:
    path = settings.home() / "escalations.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["case_id"] == case_id]


def test_the_undo_id_is_never_a_case_or_a_follow_up() -> None:
    from signoff.ingest import _same_case, follow_up_id
    from signoff.sources.guide import case_id_for

    for case in (case_id_for("211", "20822"), "ocsf-0123456789abcdef", follow_up_id("guide-1-2", 3)):
        assert undo_id(case) == f"{case}-undo"
        assert not _same_case(undo_id(case), case)  # ingest never takes it for a follow-up of the case
        assert undo_id(case) not in {follow_up_id(case, n) for n in range(2, 50)}
    # Correlated case ids are `prefix-<sha256 hex>` (signoff/correlation): never ending in "-undo" either.


# ---------------------------------------------------------------- real stand-ins


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch, slapd: LdapStandin, netns_hosts: NetnsHosts) -> Iterator[None]:
    env = {
        "SIGNOFF_BACKENDS": "isolate_host=nftables,disable_account=ldap",
        "SIGNOFF_NFTABLES_HOSTS": f"web-7={netns_hosts.server}",
        "SIGNOFF_NFTABLES_MGMT_PORTS": str(netns_hosts.mgmt_port),
        **slapd.env(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_cache()
    yield
    reset_cache()


async def test_an_ended_case_is_rolled_back_on_the_real_directory_and_host(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, standins: None,
    slapd: LdapStandin, netns_hosts: NetnsHosts,
) -> None:
    _edit_policy(policy_file)
    h = netns_hosts
    directory = LdapDirectory(slapd.url, slapd.admin_dn, Secret(slapd.admin_password), slapd.base_dn)
    alice = (slapd.dn("alice"), Secret(slapd.users["alice"]))
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, final = await _contained_then_closed(client, task_queue, host="web-7", account="alice")
        # The case has ended: the host is contained, the account locked, and nothing in the case runs any more.
        assert not await tcp_reachable(h.client, h.server_ip, h.app_port)
        assert not await directory.can_bind(*alice)

        reply = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert reply.startswith("rollback after close rolled_back: disable_account=restored, isolate_host=restored"), reply
        assert await tcp_reachable(h.client, h.server_ip, h.app_port)  # the captured state, really back
        assert not await NftablesHosts(NetnsRunner(), (h.mgmt_port,)).is_contained(h.server)
        assert await directory.can_bind(*alice)

        undo = client.get_workflow_handle(undo_id(case.id), result_type=UndoView)
        view: UndoView = await undo.result()
        assert view.status == UndoStatus.rolled_back and [r.requested_by for r in view.runs] == [("carol",)]
        restored = {s.step_id: s for s in view.steps if s.outcome == UndoOutcome.restored}
        assert list(restored)[:2] == ["disable_account", "isolate_host"]  # newest first (then the automatic steps)
        assert restored["isolate_host"].before == {"contained": False}
        assert restored["isolate_host"].current == {"contained": True}  # read before restoring: as the case left it
        assert restored["disable_account"].idempotency_key == f"{case.id}:disable_account:undo-late"
        # The policy now and the one the case ran under are both named; the case's record is unchanged.
        assert view.policy_version and view.case_policy_version == final.policy_version
        assert view.case_verdict == final.verdict
        again: CaseView = await case.result()
        assert again.status == CaseStatus.closed and again.verdict == final.verdict
        assert step(again, "isolate_host").state == StepState.executed


# ---------------------------------------------------------------- governance (the lab estate)


async def test_someone_without_a_rollback_role_is_refused_and_nothing_is_undone(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host = f"host-{case.id}"
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await _ask(client, task_queue, case.id, _rollback("erin"))
        assert "'erin' may not roll back: needs one of the roles" in str(info.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await _ask(client, task_queue, case.id, _rollback("carol", reason="  "))
        assert "a reason is required" in str(info.value.cause)
        assert lab().read("host", host)["network"] == "isolated" and not _undo_calls("host", host)
        view = await client.get_workflow_handle(undo_id(case.id)).query(CaseUndoWorkflow.status)
        assert view.status == UndoStatus.waiting and view.requests == () and view.runs == ()


async def test_a_rollback_token_sent_to_the_case_is_spent_for_its_undo(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """A signed request counted by the case towards its rollback quorum cannot be replayed on the undo
    (the case ended before the quorum was met: its nonce is in the case's history)."""
    raw = _edit_policy(policy_file, rollback_quorum=2)
    carol = Ed25519PrivateKey.generate()
    approvers = dict(raw["approvers"])
    approvers["carol"] = {**approvers["carol"], "public_key": public_key_text(carol)}
    _edit_policy(policy_file, rollback_quorum=2, approvers=approvers)
    client = time_env.client
    tokens: list[str] = []

    async def carol_asks(handle: WorkflowHandle) -> None:
        tokens.append(sign_case_decision(carol, case_id=handle.id, decision="rollback", approver="carol",
                                         now=await time_env.get_current_time()))
        counted = await handle.execute_update(CaseWorkflow.rollback, _rollback("carol", token=tokens[0]))
        assert counted.startswith("rollback requested by carol (1/2"), counted

    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue, before_verdict=carol_asks)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await _ask(client, task_queue, case.id, _rollback("carol", token=tokens[0]))
        assert "token already used (replay)" in str(info.value.cause), info.value.cause
        fresh = sign_case_decision(carol, case_id=case.id, decision="rollback", approver="carol",
                                   now=await time_env.get_current_time())
        reply = await _ask(client, task_queue, case.id, _rollback("carol", token=fresh))
        assert reply.startswith("rollback requested by carol (1/2"), reply


async def test_a_request_counted_before_its_person_left_does_not_complete_the_quorum(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """Requests towards the undo's quorum wait up to 7 days; when it is met, the earlier ones must still
    count under the policy in force (carol left the team meanwhile): nothing is undone until enough
    people the policy stands behind have asked."""
    raw = _edit_policy(policy_file, rollback_quorum=2)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host = f"host-{case.id}"
        first = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert first.startswith("rollback requested by carol (1/2"), first
        approvers = {k: v for k, v in raw["approvers"].items() if k != "carol"}
        approvers["frank"] = {"roles": ["lead"]}  # her successor (the critical tier needs two leads)
        _edit_policy(policy_file, rollback_quorum=2, approvers=approvers)

        second = await _ask(client, task_queue, case.id, _rollback("dave"))
        assert second.startswith("rollback requested by dave (1/2, asked: dave)"), second
        assert "carol: 'carol' is no longer an approver in the policy in force" in second, second
        assert lab().read("host", host)["network"] == "isolated" and not _undo_calls("host", host)
        view = await client.get_workflow_handle(undo_id(case.id)).query(CaseUndoWorkflow.status)
        assert [v.requested_by for v in view.votes] == ["dave"] and view.runs == ()
        assert any("no longer count under the policy in force" in e for e in view.escalations)
        assert any(e["kind"] == "approval_voided" for e in _escalations(case.id))

        third = await _ask(client, task_queue, case.id, _rollback("alice"))
        assert "rolled_back" in third, third
        assert lab().read("host", host)["network"] == "connected"


async def test_an_undo_started_by_hand_under_another_id_undoes_nothing(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """QA7 F13: a second CaseUndoWorkflow for the same case under its own id (`temporal workflow start`) had
    nonces of its own: the tokens spent on the real undo could be replayed there. It refuses every request."""
    _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host = f"host-{case.id}"
        rogue = await client.start_workflow(CaseUndoWorkflow.run, UndoInput(case_id=case.id), id=f"rogue-{case.id}",
                                            task_queue=task_queue)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await rogue.execute_update(CaseUndoWorkflow.rollback, _rollback("carol"))
        assert "is not the undo workflow of case" in str(info.value.cause), info.value.cause
        view = await rogue.result()
        assert view.status == UndoStatus.unavailable and view.runs == ()
        assert lab().read("host", host)["network"] == "isolated" and not _undo_calls("host", host)


def test_undo_requests_are_checked_again_by_the_identities_in_force() -> None:
    from policies.loader import load_policy
    from policies.revocation import signing_key, undo_vote_void_reason

    policy = load_policy(None)
    key = public_key_text(Ed25519PrivateKey.generate())
    then = policy.model_copy(update={"approvers": {**policy.approvers, "carol": policy.approvers["carol"].model_copy(
        update={"public_key": key})}})
    assert undo_vote_void_reason(then, "carol", True, None, signing_key(then, "carol", None)) is None
    rotated = then.model_copy(update={"approvers": {**then.approvers, "carol": then.approvers["carol"].model_copy(
        update={"public_key": public_key_text(Ed25519PrivateKey.generate())})}})
    assert "revoked or replaced" in str(undo_vote_void_reason(rotated, "carol", True, None, key))
    assert undo_vote_void_reason(rotated, "carol", True, None, None) is None  # recorded before keys were kept
    demoted = then.model_copy(update={"approvers": {**then.approvers, "carol": then.approvers["carol"].model_copy(
        update={"roles": ("detection_engineer",)})}})
    assert "no longer has a role that may roll back" in str(undo_vote_void_reason(demoted, "carol", False, None, None))
    signed_only = then.model_copy(update={"deployment": then.deployment.model_copy(
        update={"trust_unsigned_approvals": False})})
    assert "unsigned requests are no longer accepted" in str(undo_vote_void_reason(signed_only, "carol", False, None,
                                                                                   None))


async def test_an_unsigned_request_is_refused_where_the_policy_in_force_wants_signatures(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    raw = _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, final = await _contained_then_closed(client, task_queue)  # under the lab policy (unsigned is fine)
        host = f"host-{case.id}"
        # Since then the deployment went to production: signed requests only.
        carol = Ed25519PrivateKey.generate()
        approvers = dict(raw["approvers"])
        approvers["carol"] = {**approvers["carol"], "public_key": public_key_text(carol)}
        _edit_policy(policy_file, approvers=approvers,
                     deployment={**(raw.get("deployment") or {}), "trust_unsigned_approvals": False})

        with pytest.raises(WorkflowUpdateFailedError) as info:
            await _ask(client, task_queue, case.id, _rollback("carol"))
        assert "unsigned rollback requests are not accepted" in str(info.value.cause)
        forged = sign_case_decision(Ed25519PrivateKey.generate(), case_id=case.id, decision="rollback", approver="carol")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await _ask(client, task_queue, case.id, _rollback("carol", token=forged))
        assert "forged or corrupted token" in str(info.value.cause)
        other_case = sign_case_decision(carol, case_id=f"{case.id}-r2", decision="rollback", approver="carol")
        with pytest.raises(WorkflowUpdateFailedError):
            await _ask(client, task_queue, case.id, _rollback("carol", token=other_case))
        assert lab().read("host", host)["network"] == "isolated"

        # Signed at the server's time: earlier tests on this shared time-skipping server moved its clock.
        token = sign_case_decision(carol, case_id=case.id, decision="rollback", approver="carol",
                                   now=await time_env.get_current_time())
        reply = await _ask(client, task_queue, case.id, _rollback("carol", token=token))
        assert "rolled_back" in reply, reply
        assert lab().read("host", host)["network"] == "connected"
        view: UndoView = await client.get_workflow_handle(undo_id(case.id), result_type=UndoView).result()
        assert view.requests[0].signed and view.policy_version != view.case_policy_version == final.policy_version


async def test_a_quorum_of_two_different_people_through_the_cli_and_a_repeat_runs_nothing_twice(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _edit_policy(policy_file, rollback_quorum=2)
    client = time_env.client
    address = address_of(client)
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host, account = f"host-{case.id}", f"user-{case.id}"

        first = await acli(address, "rollback", case.id, "--as", "carol", "--reason", "admin tool after all")
        assert first.exit_code == 0, first.output
        assert "rollback requested by carol (1/2" in _text(first) and "1 more person" in _text(first)
        assert lab().read("host", host)["network"] == "isolated"  # counted, nothing undone

        same = await acli(address, "rollback", case.id, "--as", "carol", "--reason", "again")
        assert same.exit_code == 1 and "has already asked for this rollback" in _text(same), same.output
        refused = [json.loads(line) for line in (settings.home() / "audit" / "refused.jsonl").read_text().splitlines()]
        assert any(r["case_id"] == case.id and r["kind"] == "refused_rollback" and r["requested_by"] == "carol"
                   for r in refused)

        shown = await acli(address, "show", case.id)
        assert shown.exit_code == 0 and "asked so far: carol (1/2)" in _text(shown), shown.output

        second = await acli(address, "rollback", case.id, "--as", "dave", "--reason", "agreed")
        assert second.exit_code == 0, second.output
        assert "rolled back: " in _text(second) and "isolate_host=restored" in _text(second)
        assert lab().read("host", host)["network"] == "connected" and lab().read("account", account)["enabled"]
        undo = client.get_workflow_handle(undo_id(case.id), result_type=UndoView)
        view: UndoView = await undo.result()
        assert view.runs[0].requested_by == ("carol", "dave")
        run_id = (await undo.describe()).run_id

        # After it finished: a new request says what happened and runs nothing again.
        repeat = await acli(address, "rollback", case.id, "--as", "alice", "--reason", "just to be sure")
        assert repeat.exit_code == 0, repeat.output
        assert "was already rolled back after it closed" in _text(repeat) and "nothing was run again" in _text(repeat)
        assert (await undo.describe()).run_id == run_id
        assert len(_undo_calls("host", host)) == 1 and len(_undo_calls("account", account)) == 1

        shown = await acli(address, "show", case.id)
        assert "rollback after close" in _text(shown) and "isolate_host: isolate_host on host" in _text(shown)
        assert "asked by carol, dave" in _text(shown)


async def test_a_target_changed_since_is_not_restored_and_escalates(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host, account = f"host-{case.id}", f"user-{case.id}"
        # Days later someone moved the host to a quarantine VLAN by hand, and re-enabled the account.
        lab().write("host", host, {"network": "quarantine-vlan"}, key="operator")
        lab().write("account", account, {"enabled": True}, key="operator")

        reply = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert reply.startswith("rollback after close partly_rolled_back: disable_account=already_restored, "
                                "isolate_host=changed_since"), reply
        assert lab().read("host", host)["network"] == "quarantine-vlan"  # not clobbered
        assert lab().read("account", account)["enabled"] is True
        assert not _undo_calls("host", host) and not _undo_calls("account", account)  # nothing written
        view: UndoView = await client.get_workflow_handle(undo_id(case.id), result_type=UndoView).result()
        changed = next(s for s in view.steps if s.step_id == "isolate_host")
        assert changed.outcome == UndoOutcome.changed_since and changed.current == {"network": "quarantine-vlan"}
        assert "changed since the case: not restored" in changed.why
        escalated = [e for e in _escalations(case.id) if e["kind"] == "rollback_conflict"]
        assert len(escalated) == 1 and "isolate_host" in escalated[0]["reason"]
        assert "disable_account" not in escalated[0]["reason"]  # already back: nothing for a human to decide


async def test_a_failed_compensation_escalates_and_a_new_request_retries_only_what_failed(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host, account = f"host-{case.id}", f"user-{case.id}"
        monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=retired-edr")  # the EDR it ran on is gone
        reset_cache()
        reply = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert reply.startswith("rollback after close rollback_failed: disable_account=restored, isolate_host=failed")
        assert lab().read("account", account)["enabled"] is True and lab().read("host", host)["network"] == "isolated"
        assert "rollback_failed" in [e["kind"] for e in _escalations(case.id)]
        undo = client.get_workflow_handle(undo_id(case.id), result_type=UndoView)
        assert (await undo.describe()).status == WorkflowExecutionStatus.RUNNING  # open for the retry

        monkeypatch.setenv("SIGNOFF_BACKENDS", "")  # fixed
        reset_cache()
        reply = await _ask(client, task_queue, case.id, _rollback("dave", reason="EDR back"))
        assert reply.startswith("rollback after close rolled_back: isolate_host=restored"), reply
        assert lab().read("host", host)["network"] == "connected"
        assert len(_undo_calls("account", account)) == 1  # the restored step did not run again
        view = await undo.result()
        assert view.runs[0].steps[:2] == ("disable_account", "isolate_host") and view.runs[1].steps == ("isolate_host",)
        history = await undo.fetch_history()
    replayer = Replayer(workflows=[CaseUndoWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_the_running_case_path_is_unchanged_and_show_reads_no_undo_for_it(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _edit_policy(policy_file)
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=PATIENCE)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="bob",
                                                                          reason="beaconing"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated",
                       attempts=PATIENCE)
        result = await acli(address_of(client), "rollback", inp.case_id, "--as", "carol", "--reason", "FP")
        assert result.exit_code == 0 and _text(result).startswith("rolled back: "), result.output
        assert lab().read("host", host)["network"] == "connected"
        assert await read_undo(client, inp.case_id) is None  # the case rolled itself back: no undo workflow
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="admin tool"))
        await handle.result()


# ---------------------------------------------------------------- the dev server: visibility, explain, audit


async def test_a_target_another_open_case_holds_is_handed_over_and_the_auditor_sees_the_rollback(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path
) -> None:
    from signoff.audit import export, verify_file

    _edit_policy(policy_file)
    client = dev_env.client
    address = address_of(client)
    async with settled_worker(client, task_queue):
        first, _ = await _contained_then_closed(client, task_queue)
        host, account = f"host-{first.id}", f"user-{first.id}"
        # A second case, still open, contained the same host since (it captured "isolated").
        inp = case_input(alert_type="malware")
        second = await start_case(client, task_queue, inp, alert("m2", ("host", host), category="Malware"))
        await wait_for(second, awaiting("isolate_host"), "second waiting", attempts=PATIENCE)
        await second.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="bob",
                                                                          reason="still beaconing"))
        await wait_for(second, lambda v: step(v, "isolate_host").state == StepState.executed, "second isolated",
                       attempts=PATIENCE)
        for _ in range(PATIENCE):  # visibility follows the upsert
            if [wf async for wf in client.list_workflows(f"WorkflowId='{inp.case_id}' AND HeldTargets IS NOT NULL")]:
                break
            await asyncio.sleep(0.05)

        result = await acli(address, "rollback", first.id, "--as", "carol", "--reason", "wrong host in the first case")
        assert result.exit_code == 0, result.output
        assert "isolate_host=kept" in _text(result) and "disable_account=restored" in _text(result)
        assert lab().read("host", host)["network"] == "isolated"  # the open case still holds it
        assert lab().read("account", account)["enabled"] is True
        view = await wait_for(second, lambda v: "took over from case" in step(v, "isolate_host").note, "handed over")
        assert first.id in step(view, "isolate_host").note
        # The open case's own rollback now restores the state from before the first case.
        await second.execute_update(CaseWorkflow.rollback, _rollback("dave"))
        assert lab().read("host", host)["network"] == "connected"

        explained = await acli(address, "explain", first.id)
        text = _text(explained)
        assert explained.exit_code == 0, explained.output
        assert f"Rollback after close ({undo_id(first.id)}" in text and "requested by carol" in text
        assert "isolate_host: isolate_host on host" in text and "-> kept: not undone: open case" in text
        assert "The case's verdict stays on record: TruePositive by alice" in text

        # The undo is no case: listings of cases (visibility by WorkflowType) do not show it.
        listed = await acli(address, "cases", "--json", "--limit", "0")
        assert listed.exit_code == 0 and first.id in listed.output and undo_id(first.id) not in listed.output
        cases_now = [wf.id async for wf in client.list_workflows("WorkflowType='CaseWorkflow'")]
        assert first.id in cases_now and undo_id(first.id) not in cases_now

        out = tmp_path / "trail.jsonl"
        await export(client, out)
        assert verify_file(out).ok
        mine = [json.loads(line) for line in out.read_text().splitlines()]
        mine = [r for r in mine if r.get("workflow_id") == first.id and r.get("detail", {}).get("after_close")]
        kinds = [r["kind"] for r in mine]
        assert "rollback_request" in kinds and "rollback" in kinds and "compensation" in kinds, kinds
        run = next(r for r in mine if r["kind"] == "rollback")
        assert run["actor"] == "carol" and run["detail"]["outcomes"]["isolate_host"]["outcome"] == "kept"
        assert run["detail"]["case_policy_version"] and run["detail"]["policy_version"]
        await second.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="done"))
        await second.result()


async def test_a_case_temporal_no_longer_has_is_rolled_back_from_its_archive(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    from tests.test_audit import _forget

    _edit_policy(policy_file)
    client = dev_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host = f"host-{case.id}"
        await _forget(client, case.id)  # retention deleted it; the case archived itself when it ended
        reply = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert "isolate_host=restored" in reply, reply
        assert lab().read("host", host)["network"] == "connected"
        view: UndoView = await client.get_workflow_handle(undo_id(case.id), result_type=UndoView).result()
        assert view.case_source == "archive" and view.case_verdict is not None
