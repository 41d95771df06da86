"""Governance changes are signed like approvals (QA6 H1): on the real dev server.

Policy: `trust_unsigned_approvals: false`, the leads carol, dave and erin hold Ed25519 keys (made by
`signoff.keys.create_key` in the CLI's home, so `signoff policy|autonomy|model` sign with them). An
unsigned change, a token naming someone else, a replayed token or a token for another change is
refused and changes nothing; the CLI's signed change is accepted and attributed; the two-person
model quorum cannot be met by one key under two names. Under the lab policy unsigned changes count.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner

from policies.signing import public_key_text, sign_approval, sign_governance_change
from signoff.autonomy.client import GovernanceRefused, govern, governance_id, handle, read_state
from signoff.autonomy.models import (
    AutonomyChange,
    ModelChange,
    ModelRollback,
    ThresholdChange,
    ThresholdRevert,
)
from signoff.cli import app
from signoff.sandbox import workflow_runner
from signoff.worker import build_worker
from workflows.governance import GovernanceWorkflow

runner = CliRunner()
ROLES = {"alice": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"], "erin": ["lead"],
         "frank": ["detection_engineer"]}  # every role the policy's lists name is held (the loader checks)


@pytest.fixture
def home(tmp_path: Path, task_queue: str, dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(home))
    monkeypatch.delenv("SIGNOFF_APPROVER_KEY_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture
def keys(home: Path) -> dict[str, Ed25519PrivateKey]:
    """Every approver's key file in the CLI's home; erin's is then moved away (her key is in policy,
    but this machine does not have it)."""
    from signoff.keys import create_key

    made = {user: create_key(user)[1] for user in ROLES}
    (home / "keys" / "erin.ed25519").rename(home / "erin.ed25519.elsewhere")
    return made


@pytest.fixture
def production_policy(policy_file: Path, keys: dict[str, Ed25519PrivateKey]) -> Path:
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy["autonomy"]["require_evidence"] = False
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


async def _cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


def _token(key: Ed25519PrivateKey, queue: str, change: str, subject: str, person: str) -> str:
    return sign_governance_change(key, workflow_id=governance_id(queue), change=change, subject=subject, person=person)


async def _refused(client: Client, queue: str, name: str, arg: object) -> GovernanceRefused:
    with pytest.raises(GovernanceRefused) as caught:
        await govern(client, name, arg, queue)
    return caught.value


async def _accepted_updates(client: Client, queue: str) -> int:
    history = await handle(client, queue).fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


async def test_unsigned_or_forged_changes_are_refused_and_change_nothing(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        # The QA6 reproduction: an unsigned set_threshold naming dave (first change: the workflow starts
        # with it, so its handler refuses it, recorded).
        refused = await _refused(client, q, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.05, by="dave", reason="unsigned, nobody is dave"))
        assert "unsigned governance changes are not accepted" in str(refused)

        # The CLI signs with carol's key file: accepted and attributed to carol.
        code, out = await _cli("policy", "set-threshold", "phishing", "0.97", "--as", "carol", "--reason", "OOF curve")
        assert code == 0 and "0.970000" in out, out
        accepted = await _accepted_updates(client, q)

        # From now on the validator refuses: nothing is written to the history.
        for name, arg in [
            ("set_threshold", ThresholdChange(alert_type="phishing", value=0.05, by="dave", reason="unsigned")),
            ("revert_threshold", ThresholdRevert(alert_type="phishing", by="dave", reason="unsigned")),
            ("set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="dave", reason="unsigned")),
            ("set_autonomy", AutonomyChange(alert_type="*", level="in_the_loop", by="alice", reason="unsigned")),
            ("promote_model", ModelChange(model_id="abc", by="dave", reason="unsigned")),
            ("rollback_model", ModelRollback(by="dave", reason="unsigned")),
        ]:
            refused = await _refused(client, q, name, arg)
            assert "unsigned governance changes are not accepted" in str(refused), (name, refused)
            assert refused.recorded is False

        # A token signed with carol's key naming dave.
        forged = _token(keys["carol"], q, "set_threshold=0.05", "phishing", "dave")
        refused = await _refused(client, q, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.05, by="dave", reason="carol as dave", token=forged))
        assert "does not verify with 'dave'" in str(refused)
        # dave's own token for another value, another alert type, another change; a case approval's token.
        for token, why in [
            (_token(keys["dave"], q, "set_threshold=0.5", "phishing", "dave"), "token is for change"),
            (_token(keys["dave"], q, "set_threshold=0.05", "malware", "dave"), "token is for subject"),
            (_token(keys["dave"], q, "revert_threshold", "phishing", "dave"), "token is for change"),
            (_token(keys["dave"], "other-queue", "set_threshold=0.05", "phishing", "dave"), "token is for workflow"),
            (sign_approval(keys["dave"], case_id=governance_id(q), step="phishing", decision="set_threshold=0.05",
                           approver="dave"), "not for a governance change"),
        ]:
            refused = await _refused(client, q, "set_threshold", ThresholdChange(
                alert_type="phishing", value=0.05, by="dave", reason="wrong token", token=token))
            assert why in str(refused), (why, refused)
        # The promotion: an unsigned one and one signed by carol naming dave.
        refused = await _refused(client, q, "set_autonomy", AutonomyChange(
            alert_type="phishing", level="on_the_loop", by="dave", reason="x",
            token=_token(keys["carol"], q, "promote", "phishing", "dave")))
        assert "does not verify" in str(refused)

        assert await _accepted_updates(client, q) == accepted  # nothing refused above reached the history
        state = await read_state(client, q)
        assert state is not None
        phishing = state.alert_types["phishing"]
        assert (phishing.threshold, phishing.threshold_by, phishing.autonomy) == (0.97, "carol", None)
        assert state.model.pending is None and state.model.active is None
        assert [(e.kind, e.by, e.accepted) for e in state.events] == [("refused", "dave", False),
                                                                     ("threshold", "carol", True)]
        assert "unsigned governance" in state.events[0].after

        # The CLI without the person's key: an actionable refusal, recorded in audit/refused.jsonl.
        code, out = await _cli("policy", "set-threshold", "phishing", "0.05", "--as", "erin", "--reason", "no key here")
        assert code == 1 and "unsigned governance changes are not accepted" in out, out
        assert "signoff keys create --as erin" in " ".join(out.split()), out
        records = [json.loads(line) for line in (home / "audit" / "refused.jsonl").read_text().splitlines()]
        assert [(r["kind"], r["case_id"], r["by"], r["signed"]) for r in records] == [
            ("refused_set_threshold", governance_id(q), "erin", False)]
        assert "token" not in records[0] and "unsigned governance" in records[0]["refusal"]
        code, out = await _cli("autonomy", "promote", "phishing", "--as", "erin", "--reason", "no key here")
        assert code == 1 and "unsigned governance" in out, out
        code, out = await _cli("model", "promote", "abc", "--as", "erin", "--reason", "no key here")
        assert code == 1 and "unsigned governance" in out, out


async def test_signed_changes_count_once_and_the_model_quorum_needs_two_keys(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    from signoff.scoring import model_store

    client, q = dev_env.client, task_queue
    model_id = model_store.default_model_id()
    async with build_worker(client, q):
        token = _token(keys["dave"], q, "set_threshold=0.9", "phishing", "dave")
        result = await govern(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.9, by="dave", reason="signed", token=token), q)
        assert "0.900000" in result
        refused = await _refused(client, q, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.9, by="dave", reason="replayed", token=token))
        assert "replay" in str(refused)

        # Model quorum 2: carol approves with her key; her key cannot add dave's approval.
        code, out = await _cli("model", "promote", model_id[:12], "--as", "carol", "--reason", "baseline")
        assert code == 0 and "1/2" in out, out
        refused = await _refused(client, q, "promote_model", ModelChange(
            model_id=model_id[:12], by="dave", reason="carol as dave",
            token=_token(keys["carol"], q, "promote_model", model_id[:12], "dave")))
        assert "does not verify with 'dave'" in str(refused)
        state = await read_state(client, q)
        assert state is not None and state.model.active is None and state.model.pending_approvers == ("carol",)
        # dave's own signed approval completes it.
        code, out = await _cli("model", "promote", model_id[:12], "--as", "dave", "--reason", "baseline", "--json")
        assert code == 0 and json.loads(out)["active"] is True, out
        code, out = await _cli("autonomy", "promote", "phishing", "--as", "dave", "--reason", "signed promotion")
        assert code == 0 and "on the loop" in out, out
        code, out = await _cli("autonomy", "demote", "--all", "--as", "alice", "--reason", "signed kill switch")
        assert code == 0 and "demoted: phishing" in out, out
        code, out = await _cli("model", "rollback", "--as", "carol", "--reason", "signed compensation")
        assert code == 0 and "rolled back" in out, out
        code, out = await _cli("policy", "revert-threshold", "phishing", "--as", "carol", "--reason", "signed undo")
        assert code == 0 and "(policy file)" in out, out
        state = await read_state(client, q)
        assert state is not None
        accepted = [(e.kind, e.by) for e in state.events if e.accepted]
        assert accepted[:4] == [("threshold", "dave"), ("model_approval", "carol"), ("model_promote", "dave"),
                                ("autonomy", "dave")]
        assert ("autonomy", "alice") in accepted and accepted[-2:] == [("model_rollback", "carol"),
                                                                       ("threshold", "carol")]
        # The history (tokens, a refused replay, the per-change patch markers) replays deterministically.
        history = await handle(client, q).fetch_history()
        replayed = await Replayer(workflows=[GovernanceWorkflow], data_converter=pydantic_data_converter,
                                  workflow_runner=workflow_runner()).replay_workflow(history)
        assert replayed.replay_failure is None


async def test_lab_policy_keeps_taking_unsigned_changes(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, policy_file: Path,
) -> None:
    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        result = await govern(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.95, by="dave", reason="lab, unsigned"), q)
        assert "0.950000" in result
        code, out = await _cli("policy", "set-threshold", "phishing", "0.96", "--as", "carol", "--reason", "lab CLI")
        assert code == 0 and "0.960000" in out, out
        state = await read_state(client, q)
        assert state is not None
        assert [(e.kind, e.by, e.accepted) for e in state.events] == [("threshold", "dave", True),
                                                                     ("threshold", "carol", True)]


async def test_the_drift_checks_demotion_needs_no_persons_token(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under the production policy the drift check (SYSTEM_DRIFT, through the checked drift_report
    path) still demotes an alert type that persons put on the loop with signed changes."""
    from tests.autonomykit import split, train_small
    from tests.test_drift import _check, _run_cases

    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    client, q = dev_env.client, task_queue
    model_id = train_small(split()[0])
    async with build_worker(client, q):
        for who in ("carol", "dave"):
            await govern(client, "promote_model", ModelChange(
                model_id=model_id, by=who, reason="test model",
                token=_token(keys[who], q, "promote_model", model_id, who)), q)
        await govern(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.9, by="carol", reason="test",
            token=_token(keys["carol"], q, "set_threshold=0.9", "phishing", "carol")), q)
        await govern(client, "set_autonomy", AutonomyChange(
            alert_type="phishing", level="on_the_loop", by="carol", reason="test",
            token=_token(keys["carol"], q, "promote", "phishing", "carol")), q)
        await _run_cases(client, q, f"signed-shifted-{q[-8:]}", shifted=True)
        report = await _check(client, q)
        assert report.demoted == ("phishing",)
        state = await read_state(client, q)
        assert state is not None
        assert (state.alert_types["phishing"].autonomy, state.alert_types["phishing"].autonomy_by) == \
            ("in_the_loop", "signoff-drift")


async def test_a_key_removed_from_policy_is_refused_by_the_handler_that_reads_the_policy_again(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, production_policy: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """The validators check against the policy read for the last change; the handler reads the policy
    in force again: a key revoked since (dave's laptop stolen) is refused there, and recorded."""
    client, q = dev_env.client, task_queue
    async with build_worker(client, q):
        await govern(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.9, by="dave", reason="before the revocation",
            token=_token(keys["dave"], q, "set_threshold=0.9", "phishing", "dave")), q)
        policy = yaml.safe_load(production_policy.read_text())
        policy["approvers"]["dave"]["public_key"] = None
        production_policy.write_text(yaml.safe_dump(policy))
        for recorded in (True, False):  # the handler refuses (recorded); then the validator, on the new copy
            refused = await _refused(client, q, "set_threshold", ThresholdChange(
                alert_type="phishing", value=0.05, by="dave", reason="stolen laptop",
                token=_token(keys["dave"], q, "set_threshold=0.05", "phishing", "dave")))
            assert "no public key for 'dave'" in str(refused) and refused.recorded is recorded
        state = await read_state(client, q)
        assert state is not None and state.alert_types["phishing"].threshold == 0.9
        assert [(e.kind, e.by, e.accepted) for e in state.events] == [("threshold", "dave", True),
                                                                     ("refused", "dave", False)]
