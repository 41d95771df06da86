"""QA8, an external auditor's month of Signoff: each finding failing first, on the real dev server.

The auditor asks of every decision: who, when, why, under which policy / model / threshold, and can
the record be altered unnoticed. Findings fixed here (signoff/explain.py, signoff/audit.py,
signoff/undo_audit.py, signoff/governance_report.py):

* H1: `explain` and the export put a case's decision under the *last* governance read of the case
  (the re-read before a gated step runs), not the one it decided under: after a threshold change, a
  decision made under revision 0 was reported under the new threshold and policy version.
* M1: governance changes in the export did not say whether they were signed, nor with which key.
* M2: a rollback and a verdict in a case did not say whether they were signed (approvals did).
* M3: the enrichment's time in the export was the case's last governance read (after its actions).
* M4: `verify` said "OK, chain intact" for a trail rewritten end to end when nothing anchors it
  (no ledger on the auditor's machine, no key), and did not say an HMAC went unchecked; a splice of
  two exports was named as an edit.
* M5: the governance report left out rollbacks after close; the undo's times were written as `Z`
  where every other time is `+00:00`.
* M6: a trained model left nothing in the trail until promoted (now `model_stored`, with what it was
  trained on and whether its artifact still hashes to its id).
* L: an action's record did not say who authorised it (now `tier` and `approved_by`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from policies.signing import public_key_text
from signoff.cli import app
from signoff.models import ApprovalRequest, CaseStatus
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, settle_governance, start_case, wait_for
from workflows.case import CaseWorkflow

runner = CliRunner()
PATIENCE = 1200
ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "frank": ["detection_engineer"]}  # every role the policy's lists name is held (the loader checks)
KEYED = ("bob", "carol", "dave")  # alice has no key: her requests are unsigned (the lab policy counts them)


@pytest.fixture
def home(tmp_path: Path, task_queue: str, dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(home))
    monkeypatch.delenv("SIGNOFF_APPROVER_KEY_FILE", raising=False)
    monkeypatch.delenv("SIGNOFF_AUDIT_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    return home


@pytest.fixture
def keys(home: Path, policy_file: Path) -> dict[str, Ed25519PrivateKey]:
    """The lab policy (unsigned requests count) with public keys for bob, carol and dave, whose key
    files are in the CLI's home (so `signoff approve|rollback|close|policy` sign with them)."""
    from signoff.keys import create_key

    made = {user: create_key(user)[1] for user in KEYED}
    policy = yaml.safe_load(policy_file.read_text())
    policy["approvers"] = {u: {"roles": r, **({"public_key": public_key_text(made[u])} if u in made else {})}
                           for u, r in ROLES.items()}
    policy_file.write_text(yaml.safe_dump(policy))
    return made


async def _cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


async def _export(path: Path) -> list[dict[str, Any]]:
    code, out = await _cli("audit", "export", "--out", str(path))
    assert code == 0, out
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _contained(client: Any, task_queue: str) -> tuple[Any, str]:
    """A malware case waiting on isolate_host (its decision made under governance revision 0)."""
    inp = case_input(alert_type="malware")
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"host-{inp.case_id}"),
                                                             ("account", f"user-{inp.case_id}"),
                                                             title="Trojan beacon", category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=PATIENCE)
    return handle, inp.case_id


def _mine(records: list[dict[str, Any]], case_id: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("workflow_id") == case_id and r["kind"] == kind]


async def test_decisions_are_exported_under_the_governance_they_were_made_under_and_every_request_says_if_signed(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, keys: dict[str, Ed25519PrivateKey], tmp_path: Path,
) -> None:
    from signoff.audit import key_id

    client = dev_env.client
    async with build_worker(client, task_queue):
        handle, case_id = await _contained(client, task_queue)
        # Governance moves after the decision: carol (signed) sets a malware threshold, alice (no key,
        # unsigned: the lab policy counts it) pulls the kill switch.
        code, out = await _cli("policy", "set-threshold", "malware", "0.99", "--as", "carol", "--reason", "strict")
        assert code == 0 and "0.990000" in out, out
        code, out = await _cli("autonomy", "demote", "malware", "--as", "alice", "--reason", "pinned")
        assert code == 0, out
        # The approval re-reads governance before the step runs (revision 2 now).
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=PATIENCE)
        code, out = await _cli("approve", case_id, "disable_account", "--as", "bob", "--reason", "creds on host")
        assert code == 0, out
        await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=PATIENCE)
        code, out = await _cli("rollback", case_id, "--as", "carol", "--reason", "admin tool")
        assert code == 0, out
        code, out = await _cli("close", case_id, "--as", "dave", "--verdict", "FalsePositive", "--reason", "admin tool")
        assert code == 0, out
        await handle.result()
        await settle_governance(client, task_queue)

        code, out = await _cli("explain", case_id, "--json")
        assert code == 0, out
        ex = json.loads(out.strip().splitlines()[-1])
        described = await handle.describe()
        recorded_version = described.search_attributes.get("PolicyVersion")
        records = await _export(tmp_path / "trail.jsonl")

    # H1: the decision's governance is the snapshot it was made under (revision 0, no threshold), the
    # one the PolicyVersion search attribute recorded; the later re-reads are listed apart.
    gov = ex["governance"]
    assert (gov["governance_revision"], gov["threshold"], gov["autonomy_set_by"]) == (0, None, "policy file"), gov
    assert recorded_version and gov["policy_version"].startswith(str(recorded_version[0])), (gov, recorded_version)
    assert ex["decision"]["policy_version"] == gov["policy_version"]
    assert gov["rechecks"] and gov["rechecks"][-1]["governance_revision"] == 2, gov["rechecks"]
    assert gov["rechecks"][-1]["policy_version"] != gov["policy_version"]
    [decision] = _mine(records, case_id, "decision")
    assert (decision["detail"]["governance_revision"], decision["detail"]["threshold"]) == (0, None), decision
    assert decision["detail"]["policy_version"] == gov["policy_version"]
    assert [r["governance_revision"] for r in decision["detail"]["governance_rechecks"]][-1] == 2

    # M3: the enrichment ran before the decision, not at the last governance read.
    [enrichment] = _mine(records, case_id, "enrichment")
    assert enrichment["at"] <= decision["at"], (enrichment["at"], decision["at"])

    # M2: the rollback and the verdict say whether they were signed (carol's and dave's keys).
    [rollback] = _mine(records, case_id, "rollback")
    assert rollback["actor"] == "carol" and rollback["detail"]["signed"] is True, rollback
    [feedback] = _mine(records, case_id, "feedback")
    assert feedback["actor"] == "dave" and feedback["detail"]["signed"] is True, feedback
    assert [(v["analyst"], v["signed"]) for v in ex["verdicts"]] == [("dave", True)]
    assert [(r["requested_by"], r["signed"]) for r in ex["rollbacks"]] == [("carol", True)]
    approvals = {(r["actor"], r["detail"]["signed"]) for r in _mine(records, case_id, "approval")}
    assert approvals == {("alice", False), ("bob", True)}, approvals
    # Each action names, in its own record, its tier and whose approvals let it run.
    ran = {r["detail"]["step"]: (r["detail"]["tier"], r["detail"]["approved_by"]) for r in _mine(records, case_id, "action")}
    assert ran["isolate_host"] == ("high", ["alice"]) and ran["disable_account"] == ("high", ["bob"]), ran
    assert all(approved == [] for tier, approved in ran.values() if tier == "low"), ran

    # M1: governance changes say whether they were signed, and with which key (the one the policy the
    # handler read holds for the person).
    gov_events = [r for r in records if r["kind"] in ("threshold_change", "autonomy_change")
                  and r["workflow_id"].endswith(task_queue)]
    assert [(r["kind"], r["actor"], r["detail"]["signed"]) for r in gov_events] == [
        ("threshold_change", "carol", True), ("autonomy_change", "alice", False)], gov_events
    carol = gov_events[0]["detail"]
    assert carol["signer_key_id"] == key_id(public_key_text(keys["carol"])) and carol["signature_verified"] is True
    assert carol["token_issued_at"].endswith("+00:00") and "token" not in carol["request"]
    assert "signer_key_id" not in gov_events[1]["detail"]


async def test_verify_says_what_vouches_for_a_trail_and_names_a_splice(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, keys: dict[str, Ed25519PrivateKey], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signoff.audit import chain, verify_lines

    client = dev_env.client
    async with build_worker(client, task_queue):
        handle, case_id = await _contained(client, task_queue)
        first = (tmp_path / "first.jsonl")
        await _export(first)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=PATIENCE)
        second = tmp_path / "second.jsonl"
        await _export(second)
        monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "the auditor's key, kept away from the exporters")
        keyed = tmp_path / "keyed.jsonl"
        await _export(keyed)
        monkeypatch.delenv("SIGNOFF_AUDIT_KEY")
        await handle.terminate("test over")

    one, two = first.read_text().splitlines(), second.read_text().splitlines()
    # The exporting installation's ledger anchors its own exports.
    assert verify_lines(one).anchor == "ledger"

    # A trail rewritten end to end (an approval's approver changed, every hash recomputed, a new
    # export time): on the auditor's machine (no ledger, no key) every hash checks, and verify says
    # plainly that nothing vouches for the file.
    records = [json.loads(line) for line in two]
    approval = next(r for r in records if r["kind"] == "approval" and r["workflow_id"] == case_id)
    approval["actor"] = "carol"
    header = {k: v for k, v in records[0].items() if k not in ("seq", "prev", "hash", "kind")}
    header["at"] = "2026-12-01T00:00:00+00:00"
    events = [{k: v for k, v in r.items() if k not in ("seq", "prev", "hash")} for r in records[1:-1]]
    forged = [json.dumps(r, sort_keys=True) for r in chain(events, header)]
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "auditor"))
    result = verify_lines(forged)
    assert result.ok and result.ledger == "unknown"
    assert result.anchor == "none" and not result.anchored
    assert any(w.startswith("NOT ANCHORED") for w in result.warnings), result.warnings
    path = tmp_path / "forged.jsonl"
    path.write_text("\n".join(forged) + "\n")
    code, out = await _cli("audit", "verify", str(path))
    assert code == 0 and "NOT ANCHORED" in out and "matches the digest" not in out, out
    code, out = await _cli("audit", "verify", str(path), "--json")
    assert json.loads(out.strip().splitlines()[-1])["anchored"] is False, out

    # A keyed export verified without the key: its HMAC was not checked, and verify says so.
    result = verify_lines(keyed.read_text().splitlines())
    assert result.ok and not result.anchored
    assert any("HMAC" in w and "not checked" in w for w in result.warnings), result.warnings
    monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "the auditor's key, kept away from the exporters")
    assert verify_lines(keyed.read_text().splitlines()).anchor == "hmac"
    monkeypatch.delenv("SIGNOFF_AUDIT_KEY")

    # Two real exports spliced: the head of the first, the tail (and digest) of the second.
    cut = len(one) // 2
    spliced = verify_lines(one[:cut] + two[cut:])
    assert not spliced.ok
    assert "spliced" in {i.problem for i in spliced.issues}, [i.as_json() for i in spliced.issues]


async def test_rollbacks_after_close_are_in_the_report_and_every_exported_time_is_utc_with_its_zone(
    dev_env: WorkflowEnvironment, task_queue: str, home: Path, keys: dict[str, Ed25519PrivateKey], tmp_path: Path,
) -> None:
    import hashlib

    from activities.retrain import RetrainRequest
    from signoff.governance_report import build_report
    from signoff.scoring import model_store

    client = dev_env.client
    async with build_worker(client, task_queue):
        handle, case_id = await _contained(client, task_queue)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=PATIENCE)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="disable_account", approver="alice",
                                                                          reason="creds on host"))
        await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=PATIENCE)
        code, out = await _cli("close", case_id, "--as", "dave", "--verdict", "TruePositive", "--reason", "trojan")
        assert code == 0, out
        await handle.result()
        code, out = await _cli("rollback", case_id, "--as", "carol", "--reason", "the host was a honeypot")
        assert code == 0 and "rolled back" in out, out
        await settle_governance(client, task_queue)
        report = await build_report(client, task_queue)
        # M6: a model trained (stored) and never promoted is in the trail; a swapped artifact shows.
        blob = b"a stand-in model artifact for the auditor"
        model_id = hashlib.sha256(blob).hexdigest()
        model_store.save(model_id, blob, {"data": {"sha256": "ab" * 32, "rows": 10}, "seed": 7})
        # A retraining asked for (no worker polls its queue here: its request is in the history).
        retrain = await client.start_workflow("RetrainWorkflow", RetrainRequest(requested_by="erin", reason="drift"),
                                              id=f"retrain-{case_id}", task_queue=f"{task_queue}-idle")
        records = await _export(tmp_path / "trail.jsonl")
        await retrain.terminate("test over")
        (model_store.store_dir() / model_id / model_store.ARTIFACT).write_bytes(b"swapped")
        swapped = await _export(tmp_path / "swapped.jsonl")

    # M5: the rollback after close is counted and measured in the governance report.
    # Its numbers are the export's: one rollback, as many compensations as the export lists.
    mine = [r for r in records if r.get("workflow_id") == case_id]
    restored = [r for r in mine if r["kind"] == "compensation" and r["detail"].get("after_close")]
    rows = [r for r in report["rollback"]["rollbacks"] if r["case_id"] == case_id]
    assert len(restored) >= 2
    assert [(r["requested_by"], r.get("after_close"), r["compensations"]) for r in rows] == [
        ("carol", True, len(restored))], rows
    assert rows[0]["seconds"] >= 0
    # ... and every time in the export is UTC written one way (the undo's were `Z`).
    assert "rollback" in {r["kind"] for r in mine} and all(r["detail"].get("after_close") for r in mine
                                                             if r["kind"] in ("rollback", "rollback_request"))
    assert all(r["at"].endswith("+00:00") for r in records if r["at"]), sorted(
        {r["at"] for r in records if r["at"] and not r["at"].endswith("+00:00")})
    [stored] = [r for r in records if r["kind"] == "model_stored" and r["detail"]["model_id"] == model_id]
    assert stored["detail"]["artifact_matches_id"] is True and stored["detail"]["seed"] == 7
    assert stored["detail"]["data"] == {"sha256": "ab" * 32, "rows": 10}
    [bad] = [r for r in swapped if r["kind"] == "model_stored" and r["detail"]["model_id"] == model_id]
    assert bad["detail"]["artifact_matches_id"] is False
    [asked] = [r for r in records if r["kind"] == "model_retrain" and r["workflow_id"] == f"retrain-{case_id}"]
    assert (asked["actor"], asked["detail"]["reason"], asked["detail"]["outcome"]) == ("erin", "drift", "running")
    assert records[0]["sources"]["retrain_runs"] >= 1
