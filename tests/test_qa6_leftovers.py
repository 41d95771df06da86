"""QA6 leftovers (/work/qa6/findings.md M3, M4, M5, L9, L10, L11), each failing before its fix.

M5. Drift cases are for detection engineers: the `model_drift` alert type names its own
    `close_roles` (policy data), so a detection engineer may close (retry, detach) them under a
    signed-only policy; other alert types keep the approving tiers' roles.
M4. A decision sent to an ended case (an approval, a retry) is recorded in audit/refused.jsonl.
M3. `signoff approve --as frank` with no key says first that frank is not in the policy, else where
    the key was looked for; a signature that does not verify says what a rotated key means.
L9. `signoff show` lists a refused rollback signal once.
L10. "1 case" in the governance report; "rolled back: ..." as the CLI's rollback answer.
L11. The promotion refused for lack of evidence says how evidence is earned.

Real dev server and worker where a case is involved (tests/conftest.py `dev_env`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.engine import Policy, close_roles
from policies.loader import PolicyError, default_policy_path, load_policy
from policies.signing import public_key_text, sign_case_decision
from signoff.models import ApprovalRequest, CloseRequest, RollbackRequest, Verdict
from tests.auditkit import cli_process
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, wait_for
from tests.policykit import digest_as_before
from workflows.case import CaseWorkflow

ROLES = {"alice": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"], "erin": ["detection_engineer"]}
EXAMPLE_POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy.example.yaml"


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Ed25519PrivateKey]:
    """Key files made by `signoff keys`' own code in the CLI's home, one per approver."""
    from signoff.keys import create_key

    with monkeypatch.context() as m:
        m.setenv("SIGNOFF_HOME", str(tmp_path / "cli-home"))
        m.delenv("SIGNOFF_APPROVER_KEY_FILE", raising=False)
        return {user: create_key(user)[1] for user in ROLES}


@pytest.fixture
def production_policy(policy_file: Path, keys: dict[str, Ed25519PrivateKey]) -> Path:
    """The shipped policy with signed-only decisions and a key for every approver."""
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy["alert_types"]["malware"]["close_roles"] = ["detection_engineer", "lead"]
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


def _cli_env(client: Client, task_queue: str, policy: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "SIGNOFF_HOME": str(home), "SIGNOFF_POLICY": str(policy),
           "TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
    env.pop("SIGNOFF_APPROVER_KEY_FILE", None)
    return env


def _refused(home: Path) -> list[dict[str, object]]:
    path = home / "audit" / "refused.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


# ---------------------------------------------------------------- M5: who closes a drift case


def test_drift_cases_name_their_own_close_roles_and_other_policies_keep_their_version(policy_file: Path) -> None:
    for path in (default_policy_path(), EXAMPLE_POLICY):
        policy = load_policy(path)
        assert "detection_engineer" in close_roles(policy, "model_drift"), path
        assert "detection_engineer" not in close_roles(policy, "compromised_account"), path
        assert close_roles(policy, "compromised_account") == close_roles(policy)
        assert close_roles(policy, "no_such_type") == close_roles(policy)  # governed as the default type

    # A policy that does not set the field hashes as before it existed (recorded versions stay valid).
    raw = yaml.safe_load(policy_file.read_text())
    raw["alert_types"]["model_drift"].pop("close_roles")
    policy_file.write_text(yaml.safe_dump(raw))
    without = load_policy(policy_file)
    assert without.alert_types["model_drift"].close_roles is None
    assert without.digest() == digest_as_before(without.model_dump(mode="json"))
    assert close_roles(without, "model_drift") == close_roles(without)
    # Setting it is policy content: the version changes.
    raw["alert_types"]["model_drift"]["close_roles"] = ["detection_engineer"]
    policy_file.write_text(yaml.safe_dump(raw))
    assert load_policy(policy_file).digest() != without.digest()

    # Roles nobody holds, or none at all, would leave drift cases nobody may close.
    raw["alert_types"]["model_drift"]["close_roles"] = ["data_scientist"]
    policy_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(PolicyError, match=r"alert_types.model_drift.close_roles is \['data_scientist'\]"):
        load_policy(policy_file)
    raw["alert_types"]["model_drift"]["close_roles"] = []
    with pytest.raises(ValueError, match="close_roles is empty"):
        Policy.model_validate(raw)


async def test_a_detection_engineer_closes_a_drift_case_under_the_production_policy(
    dev_env: WorkflowEnvironment, task_queue: str, production_policy: Path, keys: dict[str, Ed25519PrivateKey],
    tmp_path: Path,
) -> None:
    """QA6 M5: `signoff close <drift case> --as erin` was refused "'erin' has roles
    ['detection_engineer']; closing a case needs one of ['analyst', 'lead', 'ir_manager']"."""
    client = dev_env.client
    home = tmp_path / "cli-home"
    env = _cli_env(client, task_queue, production_policy, home)
    async with settled_worker(client, task_queue):
        drift = case_input(alert_type="model_drift")
        handle = await start_case(client, task_queue, drift, alert("d1", ("host", "drift-report"), category="Drift"))
        await wait_for(handle, lambda v: v.decision is not None, "decided", attempts=2400)
        code, out, err = await cli_process("close", drift.case_id, "--as", "erin", "--verdict", "TruePositive",
                                           "--reason", "retraining scheduled", env=env)
        assert code == 0, err
        final = await handle.result()
        assert final.verdict is not None and final.verdict.analyst == "erin"

        # The signal path (replayed, so behind the patch): a signed close signal from erin is taken
        # on a type whose close_roles name her (malware here: the test policy sets them).
        other = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, other, alert("m1", ("host", f"h-{other.case_id}"),
                                                                   category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=2400)
        token = sign_case_decision(keys["erin"], case_id=other.case_id, decision="close", approver="erin")
        await handle.signal(CaseWorkflow.close_signal, CloseRequest(
            analyst="erin", verdict=Verdict.benign_positive, reason="lab host", token=token,
        ).model_dump(mode="json"))
        final = await handle.result()
        assert final.verdict is not None and final.verdict.analyst == "erin" and not final.refusals
        history = await handle.fetch_history()
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(history)).replay_failure is None

        # Other alert types keep the approving tiers' roles: erin may not close an account case.
        case = case_input()
        handle = await start_case(client, task_queue, case, alert("a1", ("account", f"u-{case.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)
        code, _, err = await cli_process("close", case.case_id, "--as", "erin", "--verdict", "FalsePositive",
                                         "--reason", "not mine", env=env)
        assert code == 1 and "closing a case needs one of" in _flat(err), err
        await handle.terminate("test done")


# ---------------------------------------------------------------- M4 and M3: refusals the CLI records and explains


async def test_decisions_on_an_ended_case_are_recorded_and_a_missing_key_is_explained(
    dev_env: WorkflowEnvironment, task_queue: str, production_policy: Path, tmp_path: Path,
) -> None:
    """QA6 M4: an approval on a closed case was refused (exit 1) and left no line in refused.jsonl.
    QA6 M3: `--as frank` (no key, not in the policy) was told to "approve with `signoff approve` and
    your approver key"; an approver whose key file is missing was told the same."""
    client = dev_env.client
    home = tmp_path / "cli-home"
    env = _cli_env(client, task_queue, production_policy, home)
    async with settled_worker(client, task_queue):
        case = case_input()
        cid = case.case_id
        handle = await start_case(client, task_queue, case, alert("a1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)

        code, _, err = await cli_process("approve", cid, "disable_account", "--as", "frank", "--reason", "hi", env=env)
        assert code == 1, err
        text = _flat(err)
        assert f"'frank' is not an approver in the policy ({production_policy})" in text, text
        assert "approve with `signoff approve` and your approver key" in text  # the case's own words stay
        assert "signoff keys create --as frank" in text, text

        (home / "keys" / "alice.ed25519").unlink()  # alice is in the policy; her key is not on this machine
        code, _, err = await cli_process("approve", cid, "disable_account", "--as", "alice", "--reason", "hi", env=env)
        assert code == 1, err
        text = _flat(err)
        assert "No approver key for 'alice' was found" in text, text
        assert str(home / "keys" / "alice.ed25519") in text and "SIGNOFF_APPROVER_KEY_FILE is not set" in text, text
        assert "signoff keys create --as alice" in text and "not an approver" not in text, text

        code, _, err = await cli_process("close", cid, "--as", "carol", "--verdict", "FalsePositive",
                                         "--reason", "test account", env=env)
        assert code == 0, err
        await handle.result()
        before = len(_refused(home))
        code, _, err = await cli_process("approve", cid, "disable_account", "--as", "dave", "--reason", "late",
                                         env=env)
        assert code == 1 and f"case {cid} is closed" in _flat(err), err
        code, _, err = await cli_process("retry", cid, "--as", "dave", "--reason", "late too", env=env)
        assert code == 1 and f"case {cid} is closed" in _flat(err), err
    late = _refused(home)[before:]
    assert [(r["kind"], r["case_id"], r["signed"]) for r in late] == [
        ("refused_approve", cid, True), ("refused_retry", cid, True)], late
    assert all(str(r["refusal"]).startswith(f"case {cid} is closed") for r in late), late
    assert late[0]["approver"] == "dave" and late[0]["step"] == "disable_account" and late[0]["reason"] == "late"
    assert all("token" not in r for r in late)


def test_a_signature_that_does_not_verify_says_what_a_rotated_key_means() -> None:
    """QA6 M3: a rotated key (new key in the policy, case opened before) got "does not verify" alone."""
    from signoff.cli.cases import _refusal_next_step

    req = ApprovalRequest(step="disable_account", approver="alice", reason="x", token="claims.signature")
    hint = _refusal_next_step(req, "forged or corrupted token: the signature does not verify with 'alice''s key")
    assert "rotated" in hint and "another approver" in hint and "old key in the policy" in hint, hint
    assert "SIGNOFF_APPROVER_KEY_FILE" in hint, hint
    # A refusal nobody can fix on their side gets nothing added.
    assert _refusal_next_step(req, "step 'disable_account' is already approved") == ""


# ---------------------------------------------------------------- L9, L10, L11: wording


async def test_show_lists_a_refused_rollback_signal_once(
    dev_env: WorkflowEnvironment, task_queue: str, production_policy: Path, tmp_path: Path,
) -> None:
    """QA6 L9: a refused rollback signal was listed as "refused rollback_signal ..." and again as an
    escalation."""
    client = dev_env.client
    env = _cli_env(client, task_queue, production_policy, tmp_path / "cli-home")
    async with settled_worker(client, task_queue):
        case = case_input()
        handle = await start_case(client, task_queue, case, alert("a1", ("account", f"u-{case.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)
        await handle.signal(CaseWorkflow.rollback_signal,
                            RollbackRequest(requested_by="carol", reason="unsigned rb").model_dump(mode="json"))
        view = await wait_for(handle, lambda v: len(v.refusals) == 1, "refused", attempts=2400)
        assert any("refused rollback signal" in e for e in view.escalations)  # the case keeps both
        code, out, err = await cli_process("show", case.case_id, env=env)
        await handle.terminate("test done")
    assert code == 0, err
    text = _flat(out)
    assert text.count("unsigned rollback requests are not accepted") == 1, out
    assert "refused rollback signal from 'carol'" in text, out


async def test_report_and_rollback_answers_read_as_words(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """QA6 L10: "1 cases" in the governance report; "rollback rolled_back: ..." as the CLI's answer."""
    from signoff.governance_report import build_report, render_text
    from signoff.undo import rollback_reply_text as _rollback_reply_text
    from signoff.worker import build_worker

    async with build_worker(dev_env.client, task_queue):
        report = await build_report(dev_env.client, task_queue)
    rows = report["humans_in_the_loop"]["alert_types"]
    rows[0]["cases"], rows[1]["cases"] = 1, 2
    text = render_text(report)
    assert "; 1 case; gated steps" in text and "; 2 cases; gated steps" in text, text
    assert not re.search(r"(?<![0-9])1 cases", text), text  # "371 cases" elsewhere in a shared server's report is fine

    assert _rollback_reply_text("rollback rolled_back: tag=compensated") == "rolled back: tag=compensated"
    assert _rollback_reply_text("rollback rollback_failed: tag=failed") == "rollback failed: tag=failed"
    assert (_rollback_reply_text("rollback after close partly_rolled_back: a=restored; left as they were: b")
            == "partly rolled back: a=restored; left as they were: b")
    vote = "rollback requested by carol (1/2, asked: carol): nothing is undone until 1 more person(s) ask too"
    assert _rollback_reply_text(vote) == vote


def test_a_promotion_refused_for_lack_of_evidence_says_how_evidence_is_earned() -> None:
    """QA6 L11: "not enough evidence: 0 reviewed cases at or above threshold 0.9000, policy needs 300"
    said how much, not how it is earned."""
    from signoff.autonomy.models import AutonomyChange
    from signoff.cli.autonomy import _next_step

    change = AutonomyChange(alert_type="phishing", level="on_the_loop", by="dave", reason="evidence is in")
    refusal = ("the evidence does not support promotion: not enough evidence: 0 reviewed cases at or above "
               "threshold 0.9000, policy needs 300")
    hint = _next_step(change, refusal)
    assert "signoff close" in hint and "phishing cases" in hint and "at or above the threshold" in hint, hint
    assert "signoff autonomy status" in hint, hint
