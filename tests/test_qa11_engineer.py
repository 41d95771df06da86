"""QA pass 11 (a detection engineer's first week, following docs/playbooks.md): add a response
capability end to end, wire it into a playbook and an alert type, and change policy by pull request.

What the framework let through silently, and now refuses or records:
- an irreversible action declared below the top tier (the policy raised it at run time, while
  `signoff show`, `explain` and the audit trail printed the declared "high"), and a partial one
  declared low (run without approval, not fully undone by a rollback);
- a policy whose `drift.open_case_alert_type` is not an alert type (drift cases governed, and scored,
  as the default type);
- a playbook edited and deployed while cases of it run: the case planned from the worker's code, so
  its replay broke (or its steps changed) with nothing recorded. The playbook is now recorded with the
  case's governance, with a digest, and the case plans from that record;
- a policy pull request that weakens a tier: `signoff policy diff BASE NEW` names each weakening and
  fails, so CI notices.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

import activities.executors as executors
from playbooks import PLAYBOOKS, Playbook, Step, register
from playbooks.actions import (
    ACTIONS,
    BLOCK_IP,
    CRITICAL,
    HIGH,
    IRREVERSIBLE,
    LOW,
    PARTIAL,
    REVERSIBLE,
    TAG_CASE,
    WATCH_ENTITY,
    declare,
)
from policies.loader import PolicyError, default_policy_path, load_policy
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, StepState, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow


@pytest.fixture
def registries() -> Iterator[None]:
    """Whatever a test declares or registers is gone afterwards. The built-in executors are loaded first:
    a snapshot of a registry not loaded yet would empty it for every later test of the session."""
    executors.load_builtin()
    actions, playbooks, registered = dict(ACTIONS), dict(PLAYBOOKS), dict(executors._REGISTRY)
    try:
        yield
    finally:
        for live, saved in ((ACTIONS, actions), (PLAYBOOKS, playbooks), (executors._REGISTRY, registered)):
            live.clear()
            live.update(saved)  # type: ignore[attr-defined]
        executors.reset_cache()


# ---------------------------------------------------------------- declarations


def test_an_irreversible_action_below_the_top_tier_is_refused_at_declaration(registries: None) -> None:
    with pytest.raises(ValueError, match=r"action 'qa11_revoke_tokens' is irreversible: declare it CRITICAL "
                                         r"\(irreversible actions need the top tier\), not HIGH"):
        declare("qa11_revoke_tokens", "account", HIGH, IRREVERSIBLE, None, "Revoke OAuth refresh tokens")
    with pytest.raises(ValueError, match="is irreversible: declare it CRITICAL"):
        declare("qa11_revoke_tokens", "account", LOW, IRREVERSIBLE, None, "Revoke OAuth refresh tokens")
    assert "qa11_revoke_tokens" not in ACTIONS
    spec = declare("qa11_revoke_tokens", "account", CRITICAL, IRREVERSIBLE, None, "Revoke OAuth refresh tokens")
    assert spec.tier == CRITICAL


def test_a_partial_action_cannot_run_without_approval(registries: None) -> None:
    with pytest.raises(ValueError, match=r"action 'qa11_purge_rule' is partial .* and LOW .*: declare it HIGH"):
        declare("qa11_purge_rule", "mailbox", LOW, PARTIAL, "restore_rule", "Remove the inbox rule")
    assert declare("qa11_purge_rule", "mailbox", HIGH, PARTIAL, "restore_rule", "Remove the inbox rule").tier == HIGH


# ---------------------------------------------------------------- policy files


def _policy(tmp_path: Path, mutate: Any) -> Path:
    raw = yaml.safe_load(default_policy_path().read_text())
    mutate(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_drift_cases_must_have_an_alert_type_of_their_own(tmp_path: Path) -> None:
    path = _policy(tmp_path, lambda p: p["drift"].update(open_case_alert_type="model_drfit"))
    with pytest.raises(PolicyError, match=r"drift.open_case_alert_type is 'model_drfit', which is not in "
                                          r"alert_types: drift cases would be governed as 'suspicious_activity'"):
        load_policy(path)


# ---------------------------------------------------------------- a playbook edited while its cases run


def _qa_playbook(*steps: Step) -> Playbook:
    return Playbook(name="qa11_ip_abuse", description="QA11: block a scanning address.", steps=steps)


@pytest.fixture
def ip_abuse(registries: None, policy_file: Path) -> Path:
    register(_qa_playbook(Step("tag", TAG_CASE, {"tag": "ip-abuse"}), Step("block_ip", BLOCK_IP)))
    policy = yaml.safe_load(policy_file.read_text())
    policy["alert_types"]["qa11_ip_abuse"] = {"playbook": "qa11_ip_abuse", "autonomy": "in_the_loop",
                                              "threshold": None}
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


async def test_a_playbook_edited_after_a_case_began_does_not_change_or_break_it(
    ip_abuse: Path, time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    original = PLAYBOOKS["qa11_ip_abuse"]
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="qa11_ip_abuse")
        handle = await start_case(client, task_queue, inp, alert("a1", ("ip", "203.0.113.77"), ("host", "web-1"),
                                                                 category="Discovery"))
        await wait_for(handle, awaiting("block_ip"), "block_ip waiting", attempts=2400)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="block_ip", approver="alice",
                                                                          reason="scanner"))
        await wait_for(handle, lambda v: step(v, "block_ip").state == StepState.executed, "executed", attempts=2400)
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.true_positive,
                                                                     reason="scanner blocked"))
        assert (await handle.result()).status == CaseStatus.closed
    history = await handle.fetch_history()

    # The engineer's next pull request: watch the host first, then block. Deployed workers replay the
    # case above (a worker restart, a cache eviction) with the new code.
    PLAYBOOKS["qa11_ip_abuse"] = _qa_playbook(Step("watch_host", WATCH_ENTITY, target_types=("host",)),
                                              Step("tag", TAG_CASE, {"tag": "ip-abuse"}), Step("block_ip", BLOCK_IP))
    replayed = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        WorkflowHistory.from_json(inp.case_id, history.to_json()))
    assert replayed.replay_failure is None, replayed.replay_failure
    # The case recorded the playbook it planned from, with a digest auditors can compare.
    assert original.record().digest in _payloads(history.to_json())


def _payloads(history_json: str) -> str:
    """Every payload of a history, decoded (histories keep them base64)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    found.append(base64.b64decode(value).decode(errors="replace"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(found)


def test_the_governance_snapshot_records_the_registered_playbook(ip_abuse: Path) -> None:
    from signoff.governance_state import snapshot

    snap = snapshot(load_policy(), "qa11_ip_abuse", None)
    assert snap.playbook == PLAYBOOKS["qa11_ip_abuse"].record()
    assert [s.step_id for s in snap.playbook.steps] == ["tag", "block_ip"]
    rebuilt = Playbook.from_record(snap.playbook)
    assert rebuilt == PLAYBOOKS["qa11_ip_abuse"]
    # Any edit is a new digest.
    edited = _qa_playbook(Step("tag", TAG_CASE, {"tag": "ip-abuse-v2"}), Step("block_ip", BLOCK_IP))
    assert edited.record().digest != snap.playbook.digest
    assert json.loads(snap.model_dump_json())["playbook"]["name"] == "qa11_ip_abuse"


# ---------------------------------------------------------------- a policy pull request that weakens a tier


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from signoff.cli import app

    return CliRunner().invoke(app, list(args))


def test_a_policy_change_that_weakens_governance_is_named_and_can_fail_ci(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(default_policy_path().read_text())

    def weaker(p: dict[str, Any]) -> None:
        # Each edit keeps every promise the loader checks; together they make the SOC much easier to pass.
        p["tiers"]["critical"]["roles"] = ["analyst", "lead", "ir_manager"]  # analysts approve irreversible steps
        p["tiers"]["high"]["escalation"] = [{"after": "24h", "notify": ["lead"]}]
        p["approvers"]["erin"]["roles"] = ["detection_engineer", "lead"]
        p["deployment"]["trust_unsigned_approvals"] = True
        p["alert_types"]["phishing"].update(autonomy="on_the_loop", threshold=0.5)
        p["autonomy"]["miss_budget"] = 0.2
        p["verdict_sla"].pop("critical")

    (tmp_path / "new").mkdir()
    new = _policy(tmp_path / "new", weaker)
    assert load_policy(new)  # the loader accepts it: only a comparison with the base can tell

    result = _cli("policy", "diff", str(base), str(new), "--fail-on-weaker")
    assert result.exit_code == 1, result.output
    for expected in (
        "weaker: tiers.high.roles: ['erin'] may now approve its steps (approvers given one of its roles)",
        "weaker: tiers.high.escalation has 1 level(s), was 2",
        "weaker: tiers.high.escalation[0] after 4h -> 24h: a waiting step escalates later",
        "weaker: tiers.critical.roles: ['alice', 'bob', 'erin'] may now approve its steps (roles added: ['analyst'])",
        "weaker: alert_types.phishing.autonomy in_the_loop -> on_the_loop",
        "weaker: alert_types.phishing.threshold None -> 0.5",
        "weaker: autonomy.miss_budget 0.05 -> 0.2",
        "weaker: verdict_sla.critical 4h -> none",
        "weaker: rollback_roles: ['erin'] may now request a rollback",
        "weaker: governance_roles: ['erin'] may now change thresholds, autonomy and models",
        "10 weakening(s) of governance; a person with a governance role must approve",
    ):
        assert expected in result.output, result.output
    assert "trust_unsigned_approvals" not in result.output  # already true in the lab policy: not a change

    as_json = _cli("policy", "diff", str(base), str(new), "--json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.output.strip().splitlines()[-1])
    assert doc["changed"] is True and len(doc["weaker"]) == 10, doc["weaker"]


def test_a_tightening_policy_change_is_not_weaker(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(default_policy_path().read_text())

    def stricter(p: dict[str, Any]) -> None:
        p["tiers"]["high"]["quorum"] = 2
        p["tiers"]["critical"]["roles"] = ["ir_manager", "lead"]
        p["alert_types"]["qa11_unused"] = {"playbook": "triage_only"}

    (tmp_path / "new").mkdir()
    new = _policy(tmp_path / "new", stricter)
    result = _cli("policy", "diff", str(base), str(new), "--fail-on-weaker")
    assert result.exit_code == 0, result.output
    assert "nothing weaker" in result.output and "weaker:" not in result.output
    same = _cli("policy", "diff", str(base), str(base))
    assert same.exit_code == 0 and "no change" in same.output
    missing = _cli("policy", "diff", str(tmp_path / "nope.yaml"), str(new))
    assert missing.exit_code == 1 and "is not a policy file" in missing.output


# ---------------------------------------------------------------- the worked example: infostealer


def _infostealer_alert(case_id: str) -> Any:
    return alert("i1", ("file", f"{case_id}aa55"), ("host", f"wks-{case_id}"), ("account", f"u-{case_id}"),
                 title="Infostealer: browser cookie store read", category="Infostealer")


async def _approve_all(handle: Any) -> None:
    for step_id, approver in (("block_file_hash", "alice"), ("isolate_host", "alice"),
                              ("revoke_sessions", "carol"), ("revoke_sessions", "dave")):
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step=step_id, approver=approver,
                                                                          reason="stealer confirmed"))


async def test_infostealer_blocks_the_hash_and_a_rollback_restores_it_but_not_the_sessions(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    from connectors.lab import lab
    from signoff.models import Reversibility, RiskTier, RollbackRequest

    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type=load_policy().alert_type_for_category("Infostealer"))
        assert inp.alert_type == "infostealer"
        file, host, user = f"{inp.case_id}aa55", f"wks-{inp.case_id}", f"u-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, _infostealer_alert(inp.case_id))
        view = await wait_for(handle, awaiting("block_file_hash"), "block_file_hash waiting", attempts=2400)
        assert view.playbook == "infostealer"
        assert step(view, "tag").state == StepState.executed and step(view, "watch_account").state == StepState.executed
        revoke = step(view, "revoke_sessions")
        assert (revoke.tier, revoke.reversibility) == (RiskTier.critical, Reversibility.irreversible)
        assert lab().read("file", file)["blocked"] is False  # gated: nothing happened yet

        await _approve_all(handle)
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.executed, "all executed",
                       attempts=2400)
        assert lab().read("file", file)["blocked"] is True
        assert lab().read("host", host)["network"] == "isolated"
        assert lab().read("account", user)["sessions_revoked_at"]

        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol",
                                                                                 reason="false positive"))
        assert msg.startswith("rollback rolled_back"), msg
        assert lab().read("file", file)["blocked"] is False  # the captured state came back
        assert lab().read("host", host)["network"] == "connected"
        assert lab().read("account", user)["sessions_revoked_at"]  # irreversible: stays revoked, named
        view = await handle.query(CaseWorkflow.status)
        assert step(view, "revoke_sessions").state == StepState.executed
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                     reason="pen test"))
        await handle.result()


async def test_a_hash_blocked_before_the_case_stays_blocked_after_its_rollback(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The compensation restores the captured state, not the blind inverse: the hash was on the
    blocklist before (another team's entry), so undoing this case must not take it off."""
    from connectors.lab import lab
    from signoff.models import RollbackRequest

    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="infostealer")
        file = f"{inp.case_id}aa55"
        lab().write("file", file, {"blocked": True}, "seed:another-team")
        handle = await start_case(client, task_queue, inp, _infostealer_alert(inp.case_id))
        await wait_for(handle, awaiting("block_file_hash"), "block_file_hash waiting", attempts=2400)
        await _approve_all(handle)
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.executed, "all executed",
                       attempts=2400)
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert lab().read("file", file)["blocked"] is True
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                     reason="pen test"))
        await handle.result()


async def _undo_leaves_a_prior_end_state(action: str) -> bool:
    """Seed the target in the action's end state, act, undo: is it still in that state?"""
    from activities.executors import executor_for, load_builtin
    from activities.executors.lab import LabExecutor
    from signoff.models import ActionTarget

    load_builtin()
    if (action, "lab") not in executors._REGISTRY:
        pytest.fail(f"{action!r} has no lab executor: add one in activities/executors/lab.py")
    ex = executor_for(action)
    assert isinstance(ex, LabExecutor)
    kind = ACTIONS[action].target_kind
    target = ActionTarget(kind="host" if kind == "any" else kind, id=f"qa11-contract-{action}")
    default = await ex.capture(target)
    await ex.write(target, ex.goal(default, {}, "qa11:seed"), "qa11:seed")  # in the end state before the case
    before = await ex.capture(target)
    await ex.apply(target, before, {}, "qa11:act")
    await ex.restore(target, before, "qa11:undo")
    kept = await ex.capture(target) == before
    await ex.write(target, default, "qa11:reset")
    return kept


@pytest.mark.parametrize("action", sorted(a for a, spec in ACTIONS.items() if spec.reversibility != IRREVERSIBLE))
async def test_every_lab_executor_restores_the_captured_state_not_the_inverse(action: str) -> None:
    """CI guard for every reversible action with a lab executor (a new one is checked as soon as it is
    declared): a target already in the action's end state before it ran is left so by the undo."""
    assert await _undo_leaves_a_prior_end_state(action), f"{action}: restore did not give back the captured state"


async def test_the_guard_catches_a_blind_inverse(registries: None) -> None:
    from activities.executors import register as register_executor
    from activities.executors.lab import LabExecutor
    from signoff.models import ActionTarget

    declare("qa11_blind_block", "file", HIGH, REVERSIBLE, "unblock", "Block a hash, undo by unblocking")

    @register_executor("qa11_blind_block", "lab")
    class BlindBlock(LabExecutor):
        action, kind, keys = "qa11_blind_block", "file", ("blocked",)

        def goal(self, before: dict[str, Any], params: dict[str, str], idempotency_key: str) -> dict[str, Any]:
            return {"blocked": True}

        async def restore(self, target: ActionTarget, before: dict[str, Any], key: str) -> dict[str, Any]:
            await self.write(target, {"blocked": False}, key)  # the blind inverse
            return {"blocked": False}

    assert await _undo_leaves_a_prior_end_state("qa11_blind_block") is False


def test_a_tier_signoff_does_not_have_is_refused_saying_which_exist(tmp_path: Path) -> None:
    path = _policy(tmp_path, lambda p: p["tiers"].update(medium={"quorum": 1, "roles": ["analyst"]}))
    with pytest.raises(PolicyError, match=r"tiers.medium: Signoff has no such tier \(tiers are 'low', 'high' or "
                                          r"'critical'\); a step's tier is its action's declaration "
                                          r"\(playbooks/actions.py\): give the approvals to high or critical"):
        load_policy(path)


async def test_explain_names_the_recorded_playbook_version() -> None:
    from signoff.explain import explanation_from_history
    from signoff.history import decode_history

    histories = Path(__file__).parent / "replay" / "histories"

    async def governance(name: str) -> dict[str, Any]:
        history = WorkflowHistory.from_json(f"replay-{name}", (histories / f"{name}.json").read_text())
        decoded = await decode_history(history, pydantic_data_converter)
        return explanation_from_history(decoded)["governance"]

    recorded = await governance("infostealer")
    assert recorded["playbook"] == {"name": "infostealer", "digest": PLAYBOOKS["infostealer"].record().digest}
    # shipped before playbooks were recorded (the generation kept when the shipped ones were re-recorded)
    assert (await governance("before-local-result-race/phishing"))["playbook"] is None
    assert (await governance("phishing"))["playbook"] == {"name": "phishing", "digest": PLAYBOOKS["phishing"].record().digest}
