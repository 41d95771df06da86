"""The risk-tier promise (SPEC promise 5) holds at load time: policies and playbook declarations that
would break it are refused with one clear line, before any case depends on them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

import activities.executors as executors
from activities.executors import MissingExecutorError, missing_executors, require_executors
from connectors.lab import lab
from playbooks import PLAYBOOKS, Playbook, Step, register
from playbooks.actions import (
    ACTIONS,
    CRITICAL,
    DISABLE_ACCOUNT,
    HIGH,
    IRREVERSIBLE,
    LOW,
    REVERSIBLE,
    TAG_CASE,
    WATCH_ENTITY,
    ActionSpec,
    declare,
)
from policies.engine import promise_violations
from policies.loader import PolicyError, default_policy_path, load_policy
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, RollbackRequest, StepState, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow

Mutation = Callable[[dict[str, Any]], None]


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(default_policy_path().read_text())


def _load(tmp_path: Path, mutate: Mutation) -> Any:
    raw = _shipped()
    mutate(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_policy(path)


# ---------------------------------------------------------------- policy files


def test_the_shipped_policy_keeps_every_promise() -> None:
    policy = load_policy(default_policy_path())
    assert promise_violations(policy, PLAYBOOKS) == []


# (what QA wrote, the words the refusal must contain: field, bad value, what to do)
REFUSED: dict[str, tuple[Mutation, tuple[str, ...]]] = {
    "irreversible action lowered to low": (
        lambda p: p.update(irreversible_tier="low"),
        ("irreversible_tier is 'low'", "top tier", "set irreversible_tier: critical"),
    ),
    "irreversible action lowered to high": (
        lambda p: p.update(irreversible_tier="high"),
        ("irreversible_tier is 'high'", "set irreversible_tier: critical"),
    ),
    "high tier runs automatically": (
        lambda p: p["tiers"]["high"].update(auto=True),
        ("tiers.high.auto is true", "only the low tier", "set tiers.high.auto: false"),
    ),
    "critical tier runs automatically": (
        lambda p: p["tiers"]["critical"].update(auto=True),
        ("tiers.critical.auto is true", "set tiers.critical.auto: false"),
    ),
    "quorum nobody can meet": (
        lambda p: p["tiers"]["critical"].update(quorum=3),
        ("tiers.critical.quorum is 3", "only 2 approver(s) ['carol', 'dave']", "lower it or add approvers"),
    ),
    "quorum of zero": (
        lambda p: p["tiers"]["high"].update(quorum=0),
        ("tiers.high.quorum is 0", "quorum of 1 or more"),
    ),
    "gated tier without roles": (
        lambda p: p["tiers"]["high"].update(roles=[]),
        ("tiers.high.roles is empty", "roles approvers hold: ['analyst', 'detection_engineer', 'ir_manager', 'lead']"),
    ),
    "role no approver holds": (
        lambda p: p["tiers"]["critical"].update(roles=["lead", "ir_managr"]),
        ("tiers.critical.roles names ['ir_managr']", "roles approvers hold: ['analyst',", "fix the name"),
    ),
    "critical easier to pass than high": (
        lambda p: (p["tiers"]["high"].update(quorum=2), p["tiers"]["critical"].update(
            quorum=1, roles=["analyst", "lead", "ir_manager"])),
        ("tiers.critical.quorum is 1, below tiers.high.quorum 2", "raise it to 2 or more, or narrow its roles"),
    ),
    "critical lets requesters approve their own steps": (
        lambda p: p["tiers"]["critical"].update(requester_may_approve=True),
        ("tiers.critical.requester_may_approve is true while tiers.high forbids it",
         "set tiers.critical.requester_may_approve: false"),
    ),
    "rollback roles nobody holds": (
        lambda p: p.update(rollback_roles=["incident_lead"]),
        ("rollback_roles is ['incident_lead'], which no approver holds: nobody could roll back a case",
         "roles approvers hold: ['analyst',"),
    ),
    "nobody may roll back": (
        lambda p: p.update(rollback_roles=[]),
        ("rollback_roles is [], which no approver holds: nobody could roll back a case",),
    ),
    "governance roles nobody holds": (
        lambda p: p.update(governance_roles=["ciso"]),
        ("governance_roles is ['ciso']", "nobody could change governance"),
    ),
    "a typo beside a held rollback role": (
        lambda p: p.update(rollback_roles=["lead", "ir-manager"]),
        ("rollback_roles names ['ir-manager'], which no approver holds",
         "roles approvers hold: ['analyst', 'detection_engineer', 'ir_manager', 'lead']", "fix the name"),
    ),
    "a typo beside a held governance role": (
        lambda p: p.update(governance_roles=["ir_manager", "laed"]),
        ("governance_roles names ['laed'], which no approver holds", "roles approvers hold: ['analyst',"),
    ),
    "a typo in the kill switch roles": (
        lambda p: p["autonomy"].update(kill_switch_roles=["analyst", "lead", "ir_manager", "detection_enginer"]),
        ("autonomy.kill_switch_roles names ['detection_enginer'], which no approver holds",
         "roles approvers hold: ['analyst',", "fix the name"),
    ),
    "a kill switch role nobody holds": (
        lambda p: p["autonomy"].update(kill_switch_roles=["soc_oncall"]),
        ("autonomy.kill_switch_roles names ['soc_oncall'], which no approver holds",),
    ),
    "a typo beside held close roles": (
        lambda p: p["alert_types"]["model_drift"].update(close_roles=["detection_engineer", "ir_lead"]),
        ("alert_types.model_drift.close_roles names ['ir_lead'], which no approver holds",
         "roles approvers hold: ['analyst',"),
    ),
    "playbook typo": (
        lambda p: p["alert_types"]["network_intrusion"].update(playbook="network_intrusoin"),
        ("alert_types.network_intrusion.playbook is 'network_intrusoin'", "not a registered playbook",
         "'network_intrusion', 'phishing'", "fix the name or register the playbook"),
    ),
    "unknown default alert type": (
        lambda p: p.update(default_alert_type="nosuch"),
        ("default_alert_type is 'nosuch'", "not in alert_types", "name one of ['compromised_account'"),
    ),
    "category mapped to an unknown alert type": (
        lambda p: p["alert_type_map"].update(Malware="malwar"),
        ("alert_type_map.Malware is 'malwar'", "not in alert_types"),
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_policy_breaking_the_promise_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    mutate, words = REFUSED[case]
    with pytest.raises(PolicyError) as info:
        _load(tmp_path, mutate)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"policy file {tmp_path / 'policy.yaml'} is refused: ")
    for word in words:
        assert word in message, (word, message)


def test_every_problem_is_named_not_just_the_first(tmp_path: Path) -> None:
    def many(p: dict[str, Any]) -> None:
        p.update(irreversible_tier="low", default_alert_type="nosuch")
        p["tiers"]["high"].update(auto=True)

    with pytest.raises(PolicyError) as info:
        _load(tmp_path, many)
    assert all(w in str(info.value) for w in ("irreversible_tier", "default_alert_type", "tiers.high.auto"))


def test_a_malformed_policy_is_refused_in_one_line_too(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        _load(tmp_path, lambda p: p["tiers"].update(medium={"auto": True}))
    message = str(info.value)
    assert "\n" not in message and "tiers.medium" in message and "'low', 'high' or 'critical'" in message


def test_stricter_policies_are_still_accepted(tmp_path: Path) -> None:
    def stricter(p: dict[str, Any]) -> None:
        p["tiers"]["low"] = {"auto": False, "quorum": 1, "roles": ["analyst"]}  # even tags wait for an analyst
        p["tiers"]["high"].update(quorum=4)  # alice, bob, carol, dave
        p["tiers"]["critical"].update(quorum=2, roles=["ir_manager", "lead"])

    policy = _load(tmp_path, stricter)
    assert policy.tiers["high"].quorum == 4 and not policy.tiers["low"].auto


def test_a_top_tier_with_fewer_but_more_senior_approvers_is_accepted(tmp_path: Path) -> None:
    def senior(p: dict[str, Any]) -> None:
        p["tiers"]["high"].update(quorum=2, roles=["analyst", "lead"])
        p["tiers"]["critical"].update(quorum=1, roles=["ir_manager"])  # one IR manager outranks two analysts

    policy = _load(tmp_path, senior)
    assert policy.tiers["critical"].quorum == 1


def test_a_recorded_policy_snapshot_still_decodes() -> None:
    """Checks run on load, not on decode: a case history carrying an older policy must replay."""
    from policies.engine import Policy

    raw = _shipped()
    raw["tiers"]["critical"]["quorum"] = 3
    policy = Policy.model_validate(raw)
    assert promise_violations(policy)  # refused if loaded from a file, but decodable


# ---------------------------------------------------------------- playbook declarations


@pytest.fixture
def registries() -> Iterator[None]:
    """Whatever a test declares or registers is gone afterwards."""
    actions, playbooks = dict(ACTIONS), dict(PLAYBOOKS)
    registered = dict(executors._REGISTRY)
    try:
        yield
    finally:
        for live, saved in ((ACTIONS, actions), (PLAYBOOKS, playbooks), (executors._REGISTRY, registered)):
            live.clear()
            live.update(saved)  # type: ignore[attr-defined]
        executors.reset_cache()


def test_redeclaring_an_action_differently_is_refused(registries: None) -> None:
    with pytest.raises(ValueError, match=r"action 'disable_account' is already declared; refusing to re-declare "
                                         r"it with tier high -> low: declare a new action under a new name"):
        declare("disable_account", "account", LOW, REVERSIBLE, "restore_account", "Disable the user account")
    assert ACTIONS["disable_account"] is DISABLE_ACCOUNT and DISABLE_ACCOUNT.tier == HIGH
    # The identical declaration (a module reload) is the same action.
    again = declare("disable_account", "account", HIGH, REVERSIBLE, "restore_account", "Disable the user account")
    assert again is DISABLE_ACCOUNT


def test_a_second_playbook_under_a_registered_name_is_refused(registries: None) -> None:
    shipped = PLAYBOOKS["phishing"]
    rogue = Playbook(name="phishing", description="no approvals", steps=(Step("tag", TAG_CASE, {"tag": "x"}),))
    with pytest.raises(ValueError, match="a different playbook named 'phishing' is already registered"):
        register(rogue)
    assert PLAYBOOKS["phishing"] is shipped
    same = Playbook(name=shipped.name, description=shipped.description, steps=tuple(shipped.steps))
    assert register(same) is shipped  # a reload registers the identical playbook: a no-op


def test_reloading_the_library_is_idempotent(registries: None) -> None:
    import importlib

    import playbooks.library

    before = dict(PLAYBOOKS)
    importlib.reload(playbooks.library)
    assert before == PLAYBOOKS


def test_a_hand_made_action_spec_cannot_bypass_the_declaration(registries: None) -> None:
    lowered = ActionSpec("disable_account", "account", LOW, REVERSIBLE, "restore_account", "Disable the user account")
    with pytest.raises(ValueError, match=r"step 'disable' uses an ActionSpec for 'disable_account' \(tier low, "
                                         r"reversible\) that differs from its declaration \(tier high"):
        register(Playbook(name="qa_sneaky", description="x", steps=(Step("disable", lowered),)))
    assert "qa_sneaky" not in PLAYBOOKS
    undeclared = ActionSpec("wipe_host", "host", CRITICAL, IRREVERSIBLE, None, "Wipe")
    with pytest.raises(ValueError, match="uses undeclared action 'wipe_host'; declare it in playbooks/actions.py"):
        register(Playbook(name="qa_undeclared", description="x", steps=(Step("wipe", undeclared),)))


def test_a_step_cannot_aim_an_action_at_the_wrong_entity_type() -> None:
    with pytest.raises(ValueError, match=r"action 'disable_account' acts on 'account' entities, but "
                                         r"target_types=\('host',\) aims it at \['host'\]"):
        Step("x", DISABLE_ACCOUNT, target_types=("host",))
    with pytest.raises(ValueError, match="acts on the case itself"):
        Step("x", TAG_CASE, target_types=("host",))
    # Agreeing or open-ended targets are fine.
    assert Step("x", DISABLE_ACCOUNT, target_types=("account",)).target_types == ("account",)
    assert Step("x", WATCH_ENTITY, target_types=("host", "ip")).target_types == ("host", "ip")


# ---------------------------------------------------------------- executors at worker start


def test_every_shipped_playbook_action_has_an_executor() -> None:
    assert missing_executors() == []


async def test_a_worker_will_not_start_without_an_executor_for_a_playbook_action(
    registries: None, time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signoff.worker import build_worker

    orphan = declare("qa_orphan_action", "host", HIGH, REVERSIBLE, "restore_orphan", "An action nobody implemented")
    register(Playbook(name="qa_orphans", description="x", steps=(Step("orphan", orphan),)))
    with pytest.raises(MissingExecutorError) as info:
        build_worker(time_env.client, task_queue)
    message = str(info.value)
    assert "\n" not in message
    assert "action 'qa_orphan_action' (playbooks ['qa_orphans']) has no executor on backend 'lab'" in message
    assert "register one with @register('qa_orphan_action', 'lab')" in message
    PLAYBOOKS.pop("qa_orphans")  # the orphan action alone (no playbook uses it) stops nothing
    require_executors()

    monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=nosuch")
    with pytest.raises(MissingExecutorError, match=r"'isolate_host' .* no executor on backend 'nosuch' \(available: ") \
            as missing:
        require_executors()
    # The shipped backends are offered (other tests may have registered more: the list is the registry's).
    offered = str(missing.value).split("(available: ", 1)[1]
    assert all(f"'{name}'" in offered for name in ("crowdstrike", "defender", "lab", "nftables", "sentinelone"))


# ---------------------------------------------------------------- docs/playbooks.md, as written


def _the_documented_example() -> None:
    """docs/playbooks.md steps 1-3, verbatim."""
    from activities.executors import register as register_executor
    from activities.executors.lab import LabExecutor

    block_domain = declare(
        "block_domain",          # name: what executors register under
        "url",                   # the entity type it acts on ("case" for the case itself)
        HIGH,                    # risk tier: LOW runs automatically, HIGH/CRITICAL wait for approvals
        REVERSIBLE,              # REVERSIBLE | PARTIAL | IRREVERSIBLE
        "restore_domain",        # its compensation; None only for IRREVERSIBLE actions
        "Block the domain at the DNS resolver",
    )

    @register_executor("block_domain", "lab")
    class LabBlockDomain(LabExecutor):
        action, kind, keys = "block_domain", "url", ("blocked",)

        def goal(self, before, params, idempotency_key):  # type: ignore[no-untyped-def]
            return {"blocked": True}

    register(Playbook(
        name="domain_abuse",
        description="Malicious domain in mail or proxy logs: block it, watch the users.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "domain-abuse"}),
            Step("block_domain", block_domain),
            Step("watch_user", WATCH_ENTITY, target_types=("account",)),
        ),
    ))


@pytest.fixture
def domain_abuse(registries: None, policy_file: Path) -> Path:
    """The documented playbook registered, and step 4's policy lines in the active policy file."""
    _the_documented_example()
    policy = yaml.safe_load(policy_file.read_text())
    policy["alert_types"]["domain_abuse"] = {"playbook": "domain_abuse", "autonomy": "in_the_loop", "threshold": None}
    policy["alert_type_map"]["DomainAbuse"] = "domain_abuse"
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


async def test_documented_domain_abuse_example_runs_end_to_end(
    domain_abuse: Path, time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="domain_abuse")
        domain, user = f"evil-{inp.case_id}.example", f"user-{inp.case_id}"
        handle = await start_case(client, task_queue, inp,
                                  alert("d1", ("url", domain), ("account", user), category="DomainAbuse"))
        view = await wait_for(handle, awaiting("block_domain"), "block_domain waiting", attempts=2400)
        assert view.playbook == "domain_abuse" and step(view, "tag").state == StepState.executed
        assert lab().read("url", domain)["blocked"] is False  # gated: nothing happened yet
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="block_domain", approver="alice",
                                                                          reason="known phishing domain"))
        await wait_for(handle, lambda v: step(v, "block_domain").state == StepState.executed, "executed", attempts=2400)
        assert lab().read("url", domain)["blocked"] is True

        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert msg.startswith("rollback rolled_back")
        assert lab().read("url", domain)["blocked"] is False  # the captured state came back
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                     reason="sinkholed test domain"))
        assert (await handle.result()).status == CaseStatus.rolled_back


async def test_recording_a_named_playbook_writes_only_its_history(domain_abuse: Path, tmp_path: Path) -> None:
    from tests.replay import record_histories

    out = tmp_path / "histories"
    out.mkdir()
    (out / "phishing.json").write_text("shipped, untouched")
    await record_histories.record(*record_histories.parse_args(["--playbook", "domain_abuse", "--out", str(out)]))
    assert sorted(p.name for p in out.iterdir()) == ["domain_abuse.json", "phishing.json"]
    assert (out / "phishing.json").read_text() == "shipped, untouched"
    history = WorkflowHistory.from_json("replay-domain_abuse", (out / "domain_abuse.json").read_text())
    replayed = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
    assert replayed.replay_failure is None
    # The derived case exercised the playbook: the gated step was approved and rolled back.
    assert b"block_domain" in (out / "domain_abuse.json").read_bytes()

    with pytest.raises(SystemExit, match="already recorded: a recorded case must keep replaying; pass --force"):
        await record_histories.record(*record_histories.parse_args(["--playbook", "domain_abuse", "--out", str(out)]))
    with pytest.raises(SystemExit):  # no silent "record everything"
        record_histories.parse_args(["--out", str(out)])
    assert os.environ.get("SIGNOFF_POLICY") == str(domain_abuse)


def test_derived_fixture_for_the_documented_playbook(domain_abuse: Path) -> None:
    from tests.replay.record_histories import derive_fixture

    assert derive_fixture("domain_abuse") == (
        "domain_abuse", "DomainAbuse", (("url", "replay-url"), ("account", "replay-account")))
    with pytest.raises(SystemExit, match="no alert type in the policy answers with playbook 'domain_abuse'"):
        derive_fixture("domain_abuse", alert_type="phishing")


def test_registrations_made_by_these_tests_do_not_leak() -> None:
    assert "domain_abuse" not in PLAYBOOKS and "block_domain" not in ACTIONS
    assert ("block_domain", "lab") not in executors._REGISTRY
