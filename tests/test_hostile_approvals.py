"""Hostile approvals on the real dev server: nobody approves who should not, nothing counts twice.

Policy: `trust_unsigned_approvals: false`, every approver has an Ed25519 public key. Each hostile
attempt is sent as an update (refused by the validator, nothing written to history) and as a
signal (written, then refused by the handler and kept in the case's `refusals`). The CLI path
(`signoff approve`) signs with the approver's key file and records refusals in refused.jsonl.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from policies.signing import public_key_text, sign_approval
from signoff.models import ApprovalRequest, StepState
from signoff.worker import build_worker
from tests.auditkit import cli_process
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow

ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "erin": ["lead"], "frank": ["detection_engineer"]}  # every role the policy's lists name is held


@pytest.fixture
def approver_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Ed25519PrivateKey]:
    """Key files made by `signoff.keys.create_key` in a separate home (the CLI's), one per approver."""
    from signoff.keys import create_key, load_private_key

    cli_home = tmp_path / "cli-home"
    keys = {}
    with monkeypatch.context() as m:
        m.setenv("SIGNOFF_HOME", str(cli_home))
        for user in ROLES:
            path, key = create_key(user)
            assert oct(path.stat().st_mode & 0o777) == "0o600"
            loaded = load_private_key(user)
            assert loaded is not None and public_key_text(loaded) == public_key_text(key)
        path.chmod(0o644)  # a key readable by others is refused, with the fix in the message
        with pytest.raises(Exception, match="chmod 600"):
            load_private_key(user)
        path.chmod(0o600)
        assert load_private_key("nobody") is None
    for user in ROLES:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        loaded = load_pem_private_key((cli_home / "keys" / f"{user}.ed25519").read_bytes(), None)
        assert isinstance(loaded, Ed25519PrivateKey)
        keys[user] = loaded
    return keys


@pytest.fixture
def signed_policy(policy_file: Path, approver_keys: dict[str, Ed25519PrivateKey]) -> Path:
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(approver_keys[u])} for u, r in ROLES.items()}
    policy["approvers"]["erin"].pop("public_key")  # erin has a key file but policy does not trust it
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


def _token(key: Ed25519PrivateKey, case_id: str, step_id: str, who: str, decision: str = "approve",
           **kw: object) -> str:
    return sign_approval(key, case_id=case_id, step=step_id, decision=decision, approver=who, **kw)  # type: ignore[arg-type]


async def _history_counts(handle: WorkflowHandle) -> tuple[int, int]:
    history = await handle.fetch_history()
    accepted = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    failed_tasks = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    return accepted, failed_tasks


async def test_hostile_approvals_are_refused_and_recorded(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,
    approver_keys: dict[str, Ed25519PrivateKey],
) -> None:
    client = dev_env.client
    k = approver_keys
    mallory = Ed25519PrivateKey.generate()
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        other = f"{cid}-other"
        handle = await start_case(client, task_queue, inp, alert("h1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)

        # A valid signed approval from carol towards the 2-quorum step: accepted, 1/2.
        carol_token = _token(k["carol"], cid, "revoke_sessions", "carol")
        msg = await handle.execute_update(
            CaseWorkflow.approve, ApprovalRequest(step="revoke_sessions", approver="carol", reason="ok",
                                                  token=carol_token))
        assert "1/2" in msg
        past = datetime.now(UTC) - timedelta(hours=2)
        hostile: dict[str, tuple[ApprovalRequest, str]] = {
            "unsigned": (ApprovalRequest(step="disable_account", approver="alice", reason="trust me"),
                         "unsigned approvals are not accepted"),
            "replayed token": (ApprovalRequest(step="revoke_sessions", approver="carol", reason="again",
                                               token=carol_token), "replay"),
            "token for another case": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["alice"], other, "disable_account", "alice")), "token is for case"),
            "token for another step": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["alice"], cid, "deactivate_access_key", "alice")), "token is for step"),
            "reject token used to approve": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["alice"], cid, "disable_account", "alice", decision="reject")),
                "token is for decision"),
            "token naming someone else": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["bob"], cid, "disable_account", "bob")), "forged"),
            "expired token": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["alice"], cid, "disable_account", "alice", now=past, ttl=timedelta(minutes=10))),
                "expired"),
            "token lifetime over the maximum": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(k["alice"], cid, "disable_account", "alice", ttl=timedelta(days=30))),
                "lifetime exceeds"),
            "forged signature": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_token(mallory, cid, "disable_account", "alice")), "forged"),
            "tampered claims": (ApprovalRequest(
                step="disable_account", approver="alice", reason="x",
                token=_tamper(_token(k["alice"], cid, "deactivate_access_key", "alice"), step="disable_account")),
                "forged"),
            "garbage token": (ApprovalRequest(step="disable_account", approver="alice", reason="x",
                                              token="not-a-token"), "malformed approval token"),
            "approver without a key in policy": (ApprovalRequest(
                step="disable_account", approver="erin", reason="x",
                token=_token(k["erin"], cid, "disable_account", "erin")), "no public key"),
            "unknown approver": (ApprovalRequest(
                step="disable_account", approver="mallory", reason="x",
                token=_token(mallory, cid, "disable_account", "mallory")), "no public key"),
            "self-approval (signed)": (ApprovalRequest(
                step="disable_account", approver="bob", reason="mine",
                token=_token(k["bob"], cid, "disable_account", "bob")), "separation of duties"),
            "duplicate towards the quorum (fresh token)": (ApprovalRequest(
                step="revoke_sessions", approver="carol", reason="me again",
                token=_token(k["carol"], cid, "revoke_sessions", "carol")), "distinct approvers"),
            "wrong role for the tier (signed)": (ApprovalRequest(
                step="revoke_sessions", approver="alice", reason="x",
                token=_token(k["alice"], cid, "revoke_sessions", "alice")), "needs one of"),
        }
        accepted_before, _ = await _history_counts(handle)
        for n, (kind, (req, expected)) in enumerate(hostile.items()):
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update(CaseWorkflow.approve, req, id=f"hostile-{n}")
            cause = info.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "ApprovalRefused", kind
            assert expected in cause.message, f"{kind}: {cause.message}"
        accepted_after, failed_tasks = await _history_counts(handle)
        # None leaves a trace in history but one: a signature the case's copy of the policy does not verify
        # is checked against the policy in force (a key rotated since the case opened), once an hour.
        assert accepted_after == accepted_before + 1, "a refused update must leave no trace in history"
        checked = (await handle.query(CaseWorkflow.status)).refusals
        assert [(r.approver, r.accepted, "forged" in r.refusal) for r in checked] == [("alice", False, True)], checked
        assert failed_tasks == 0

        # The same attempts as signals: written to history, refused by the handler, kept in state.
        for req, _ in hostile.values():
            await handle.signal(CaseWorkflow.approve_signal, req.model_dump(mode="json"))
        view = await wait_for(handle, lambda v: len(v.refusals) >= len(checked) + len(hostile), "every signal refused")
        assert len(view.refusals) == len(checked) + len(hostile)
        for record, (kind, (_, expected)) in zip(view.refusals[len(checked):], hostile.items(), strict=True):
            assert not record.accepted and record.via == "signal", kind
            assert expected in record.refusal, f"{kind} (signal): {record.refusal}"
        assert step(view, "disable_account").state == StepState.awaiting_approval
        revoke = step(view, "revoke_sessions")
        assert [a.approver for a in revoke.approvals if a.accepted] == ["carol"]
        assert revoke.state == StepState.awaiting_approval

        # A good signed approval still works, once; its token cannot be replayed by update or signal.
        good = ApprovalRequest(step="disable_account", approver="alice", reason="sign-ins from two countries",
                               token=_token(k["alice"], cid, "disable_account", "alice"))
        await handle.execute_update(CaseWorkflow.approve, good, id="good")
        view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        assert step(view, "disable_account").approvals[0].signed
        _, failed_tasks = await _history_counts(handle)
        assert failed_tasks == 0
        await handle.terminate("test done")


def _tamper(token: str, **changes: str) -> str:
    """Rewrite the claims of a token but keep its signature (what an attacker can do without the key)."""
    import base64

    body, sig = token.split(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    return new.rstrip(b"=").decode() + "." + sig


async def test_cli_signs_with_key_file_and_records_refusals(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path, tmp_path: Path,
    approver_keys: dict[str, Ed25519PrivateKey],
) -> None:
    client = dev_env.client
    cli_home = tmp_path / "cli-home"
    env = {**os.environ, "SIGNOFF_HOME": str(cli_home), "SIGNOFF_POLICY": str(signed_policy),
           "TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        handle = await start_case(client, task_queue, inp, alert("c1", ("account", f"u-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting", attempts=2400)

        # erin's key is not in policy; bob requested the case; mallory has no key at all.
        for who, expected in (("erin", "no public key"), ("bob", "separation of duties"),
                              ("mallory", "unsigned approvals are not accepted")):
            code, _, err = await cli_process("approve", inp.case_id, "disable_account", "--as", who, "--reason", "x",
                                      env=env)
            assert code != 0 and expected in " ".join(err.split()), err
        refused = [json.loads(line) for line in (cli_home / "audit" / "refused.jsonl").read_text().splitlines()]
        assert [r["approver"] for r in refused] == ["erin", "bob", "mallory"]
        assert all(r["kind"] == "refused_approve" and r["case_id"] == inp.case_id for r in refused)
        assert all("token" not in r for r in refused)  # the signature never lands in a log
        assert [r["signed"] for r in refused] == [True, True, False]

        code, out, err = await cli_process("approve", inp.case_id, "disable_account", "--as", "alice",
                                    "--reason", "impossible travel", env=env)
        assert code == 0, err
        assert "quorum 1/1" in out
        view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        record = step(view, "disable_account").approvals[0]
        assert record.approver == "alice" and record.signed and record.accepted
        await handle.terminate("test done")


async def test_keys_cli_create_and_show(tmp_path: Path) -> None:
    env = {**os.environ, "SIGNOFF_HOME": str(tmp_path / "h")}
    code, out, err = await cli_process("keys", "create", "--as", "zoe", "--roles", "analyst,lead", env=env)
    assert code == 0, err
    assert out.startswith("  zoe: {roles: [analyst, lead], public_key: ")
    key_file = tmp_path / "h" / "keys" / "zoe.ed25519"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    code, shown, _ = await cli_process("keys", "show", "--as", "zoe", env=env)
    assert code == 0 and shown.split()[-1] in out
    assert "PRIVATE" not in out + shown
    code, _, err = await cli_process("keys", "create", "--as", "zoe", env=env)
    assert code != 0 and "already exists" in err
    code, _, err = await cli_process("keys", "show", "--as", "nobody", env=env)
    assert code != 0 and "signoff keys create --as nobody" in " ".join(err.split())
