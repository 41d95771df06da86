"""The audit trail: export from real histories, verify, and catch every kind of tampering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from signoff.audit import GENESIS, chain, record_hash, verify_file, verify_lines
from signoff.autonomy.client import update as governance_update
from signoff.autonomy.models import ThresholdChange
from signoff.history import archived_runs
from signoff.worker import build_worker
from tests.auditkit import acli, address_of, full_story


async def test_export_covers_every_governance_event_and_verifies(
    dev_env: WorkflowEnvironment, time_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    # A case that only the archive still has (run on another server, as if Temporal had deleted it).
    async with build_worker(time_env.client, task_queue):
        gone = await full_story(time_env.client, task_queue, rollback=False)
    client = dev_env.client
    async with build_worker(client, task_queue):
        story = await full_story(client, task_queue)
        await governance_update(client, "set_threshold", ThresholdChange(
            alert_type="phishing", value=0.97, by="carol", reason="shadow agreement 98% over 400 cases"),
            task_queue=task_queue)
        with pytest.raises(WorkflowUpdateFailedError):
            await governance_update(client, "set_threshold", ThresholdChange(
                alert_type="phishing", value=0.5, by="alice", reason="faster"), task_queue=task_queue)
        # The sweep stores complete histories of closed cases.
        swept = await acli(address_of(client), "audit", "archive")
        assert swept.exit_code == 0 and "archived" in swept.output, swept.output
        record = json.loads(archived_runs(story.case_id)[0].read_text())
        assert record["complete"] is True and record["final_view"]["status"] == "rolled_back"
        explained = await acli(address_of(client), "explain", gone.case_id, "--json")
        assert explained.exit_code == 0, explained.output
        assert json.loads(explained.output.strip().splitlines()[-1])["source"].startswith("archive history")
        out = tmp_path / "trail.jsonl"
        result = await acli(address_of(client), "audit", "export", "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["archived_histories"] >= 1
    assert {"case_opened", "decision", "approval", "action", "feedback", "case_closed"} <= {
        r["kind"] for r in map(json.loads, out.read_text().splitlines()) if r.get("workflow_id") == gone.case_id}
    assert records[0]["kind"] == "audit_header" and records[0]["prev"] == GENESIS
    assert records[-1]["kind"] == "audit_digest" and records[-1]["digest"] == summary["digest"]
    assert [r["seq"] for r in records] == list(range(len(records)))
    mine = [r for r in records if r.get("workflow_id") == story.case_id]
    kinds = {r["kind"] for r in mine}
    assert {"case_opened", "decision", "approval", "refusal", "refused_approve", "action", "compensation",
            "rollback", "feedback", "case_closed"} <= kinds, kinds
    decision = next(r for r in mine if r["kind"] == "decision")
    assert decision["detail"]["model_id"] == story.final.score.model_id  # type: ignore[union-attr]
    assert decision["detail"]["policy_version"] == story.final.policy_version
    assert decision["detail"]["contributions"] and "pushed" in decision["detail"]["contributions"][0]
    action = next(r for r in mine if r["kind"] == "action" and r["detail"]["action"] == "isolate_host")
    assert action["detail"]["before"] == {"network": "connected"} and action["actor"] == "signoff"
    refusal = next(r for r in mine if r["kind"] == "refusal")
    assert refusal["actor"] == "mallory" and "not an approver" in refusal["detail"]["refusal"]
    cli_refusal = next(r for r in mine if r["kind"] == "refused_approve")
    assert cli_refusal["detail"]["source"] == "cli refused.jsonl" and cli_refusal["actor"] == "mallory"
    gov = [r for r in records if r["kind"] == "threshold_change" and r["workflow_id"].endswith(task_queue)]
    assert [(g["actor"], g["detail"]["outcome"]) for g in gov] == [("carol", "accepted"), ("alice", "refused")]
    assert "roles" in gov[1]["detail"]["refusal"]
    # Policy changes: every policy version decisions were made under has its "in force from" record.
    in_force = {r["detail"]["policy_version"] for r in records if r["kind"] == "policy_version_in_force"}
    assert {r["detail"]["policy_version"] for r in records if r["kind"] == "decision"} <= in_force
    assert story.final.policy_version in in_force
    # Time order, so a reader follows the story.
    ats = [r["at"] for r in records[1:-1] if r["at"]]
    assert ats == sorted(ats)

    check = await acli(address_of(client), "audit", "verify", str(out))
    assert check.exit_code == 0 and "OK" in check.output, check.output
    assert verify_file(out).ledger == "matched"

    since = await acli(address_of(client), "audit", "export", "--out", str(tmp_path / "recent.jsonl"),
                       "--since", records[-2]["at"], "--json")
    assert since.exit_code == 0, since.output
    assert 0 < json.loads(since.output.strip().splitlines()[-1])["events"] < summary["events"]


@pytest.mark.slow
async def test_a_case_deleted_by_retention_is_still_explained_and_exported(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The real thing, slow (the dev server takes ~30 s to delete): Temporal deletes a closed case."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        story = await full_story(client, task_queue, rollback=False)
    await _forget(client, story.case_id)
    explained = await acli(address_of(client), "explain", story.case_id, "--json")
    assert explained.exit_code == 0, explained.output
    ex = json.loads(explained.output.strip().splitlines()[-1])
    assert ex["source"].startswith("archive history") and ex["verdicts"][0]["analyst"] == "carol"
    out = tmp_path / "trail.jsonl"
    assert (await acli(address_of(client), "audit", "export", "--out", str(out))).exit_code == 0
    assert any(json.loads(line).get("workflow_id") == story.case_id for line in out.read_text().splitlines())


async def _forget(client: Client, case_id: str) -> None:
    """Delete the closed case from Temporal, as retention does, and wait until it is gone."""
    handle = client.get_workflow_handle(case_id)
    run_id = (await handle.describe()).run_id
    await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
        namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=case_id, run_id=run_id)))
    for _ in range(600):
        try:
            await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{case_id} was not deleted")


# ---------------------------------------------------------------- tampering, one case each


def _trail(n: int = 6) -> list[str]:
    events = [{"at": f"2026-11-28T10:0{i}:00+00:00", "kind": "approval", "workflow_id": f"case-{i}", "run_id": "r",
               "actor": "alice", "detail": {"step": "isolate_host", "reason": f"reason {i}"}} for i in range(n)]
    records = chain(events, {"at": "2026-11-28T11:00:00+00:00", "format": "signoff-audit/1", "sources": {}})
    _record_export(records[0]["at"], records[-1]["digest"])  # what `export` does
    return [json.dumps(r, sort_keys=True) for r in records]


def _record_export(at: str, digest: str) -> None:
    from signoff.audit import audit_dir

    with (audit_dir() / "exports.jsonl").open("a") as fh:
        fh.write(json.dumps({"exported_at": at, "digest": digest}) + "\n")


def _problems(lines: list[str]) -> list[tuple[int, str]]:
    return [(i.line, i.problem) for i in verify_lines(lines).issues]


def test_an_untouched_trail_verifies() -> None:
    result = verify_lines(_trail())
    assert result.ok and result.records == 8


def test_edited_record_is_named() -> None:
    lines = _trail()
    lines[3] = lines[3].replace("reason 2", "reason 2 (nothing to see)")
    assert _problems(lines) == [(4, "edited")]
    assert "line 4: record 3 (approval case-2) was edited" in verify_lines(lines).issues[0].message


def test_edited_and_rehashed_record_is_named() -> None:
    lines = _trail()
    rec = json.loads(lines[3])
    rec["actor"] = "carol"
    rec["hash"] = record_hash(rec)
    lines[3] = json.dumps(rec, sort_keys=True)
    assert _problems(lines) == [(4, "edited")]
    assert "re-hashed" in verify_lines(lines).issues[0].message


def test_deleted_record_is_named() -> None:
    lines = _trail()
    del lines[3]
    assert _problems(lines) == [(4, "deleted")]
    assert "record 3 deleted between line 3 and line 4" in verify_lines(lines).issues[0].message


def test_deleted_records_before_the_digest_are_named() -> None:
    lines = _trail()
    del lines[-3:-1]
    assert _problems(lines) == [(len(lines), "deleted")]
    assert "records 5..6 deleted" in verify_lines(lines).issues[0].message


def test_truncated_trail_is_named() -> None:
    lines = _trail()[:-2]
    assert _problems(lines) == [(len(lines) + 1, "truncated")]


def test_deleted_header_is_named() -> None:
    lines = _trail()[1:]
    assert (1, "deleted") in _problems(lines)


def test_inserted_record_is_named_even_with_a_valid_hash() -> None:
    lines = _trail()
    before = json.loads(lines[2])
    forged = {"seq": before["seq"] + 1, "at": before["at"], "kind": "approval", "workflow_id": "case-x", "run_id": "r",
              "actor": "mallory", "detail": {"step": "isolate_host"}, "prev": before["hash"]}
    forged["hash"] = record_hash(forged)
    lines.insert(3, json.dumps(forged, sort_keys=True))
    assert _problems(lines) == [(4, "inserted")]
    assert "mallory" not in verify_lines(lines).issues[0].message  # it names the line, not the forger's claim
    assert "record 3 (approval case-x) was inserted" in verify_lines(lines).issues[0].message


def test_duplicated_record_is_named() -> None:
    lines = _trail()
    lines.insert(5, lines[2])
    problems = _problems(lines)
    assert (6, "duplicated") in problems


def test_reordered_records_are_named() -> None:
    lines = _trail()
    lines[3], lines[4] = lines[4], lines[3]
    problems = _problems(lines)
    assert problems and {p for _, p in problems} == {"reordered"}
    assert {line for line, _ in problems} <= {4, 5}


def test_record_moved_far_is_named() -> None:
    lines = _trail()
    moved = lines.pop(2)
    lines.insert(6, moved)
    problems = _problems(lines)
    assert problems and {p for _, p in problems} <= {"reordered", "deleted"}
    assert any(p == "reordered" for _, p in problems)


def test_garbage_line_is_named() -> None:
    lines = _trail()
    lines[2] = "{not json"
    assert (3, "edited") in _problems(lines)


async def test_rewritten_trail_is_caught_by_the_export_ledger(tmp_path: Path, signoff_home: Path) -> None:
    """Every hash recomputed: the chain checks, but the digest differs from the one recorded at export."""
    from signoff.audit import audit_dir

    lines = _trail()
    header = json.loads(lines[0])
    digest = json.loads(lines[-1])["digest"]
    with (audit_dir() / "exports.jsonl").open("a") as fh:
        fh.write(json.dumps({"exported_at": header["at"], "digest": digest}) + "\n")
    events = [json.loads(line) for line in lines[1:-1]]
    for e in events:
        for key in ("seq", "prev", "hash"):
            e.pop(key)
    events[1]["actor"] = "carol"
    rewritten = chain(events, {k: v for k, v in header.items() if k not in ("seq", "prev", "hash", "kind")})
    path = tmp_path / "rewritten.jsonl"
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rewritten))
    result = verify_file(path)
    assert [(i.line, i.problem) for i in result.issues] == [(1, "rewritten")]
    untouched = tmp_path / "untouched.jsonl"
    untouched.write_text("\n".join(lines) + "\n")
    assert verify_file(untouched).ok and verify_file(untouched).ledger == "matched"


def test_verify_cli_exits_non_zero_and_says_which_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from signoff.cli import app

    lines = _trail()
    lines[2] = lines[2].replace("reason 1", "reason one")
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["audit", "verify", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "line 3: edited" in result.output and "TAMPERED" in result.output


def test_signed_digest_catches_a_rewrite_without_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "audit-signing-key-for-tests")
    lines = _trail()
    assert "hmac" in json.loads(lines[-1]) and verify_lines(lines).ok
    events = [json.loads(line) for line in lines[1:-1]]
    for e in events:
        for key in ("seq", "prev", "hash"):
            e.pop(key)
    events[0]["actor"] = "mallory"
    header = {k: v for k, v in json.loads(lines[0]).items() if k not in ("seq", "prev", "hash", "kind")}
    header["at"] = "2026-11-28T12:00:00+00:00"  # not in any ledger
    monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "the-rewriters-guess")
    forged = [json.dumps(r, sort_keys=True) for r in chain(events, header)]
    monkeypatch.setenv("SIGNOFF_AUDIT_KEY", "audit-signing-key-for-tests")
    assert _problems(forged) == [(len(forged), "rewritten")]
    stripped = json.loads(forged[-1])
    stripped.pop("hmac")
    stripped["hash"] = record_hash(stripped)
    assert _problems([*forged[:-1], json.dumps(stripped, sort_keys=True)]) == [(len(forged), "unsigned")]


def test_model_store_promotions_and_rollbacks_are_in_the_trail() -> None:
    """Model activations recorded by the model store's own log (before or beside governance)."""
    import hashlib

    from signoff.audit import model_store_events
    from signoff.scoring import model_store

    blob = b"a model artifact stand-in for the audit trail test"
    model_id = hashlib.sha256(blob).hexdigest()
    model_store.save(model_id, blob, {"note": "test"})
    before = len(model_store_events())
    model_store.promote(model_id, by="carol", reason="better macro F1 on the holdout")
    model_store.rollback(by="dave", reason="override rate rose after promotion")
    events = model_store_events()[before:]
    assert [(e["kind"], e["actor"]) for e in events] == [("model_store_promote", "carol"), ("model_store_rollback", "dave")]
    assert events[0]["detail"]["model_id"] == model_id and events[1]["detail"]["previous"] == model_id
    assert events[1]["detail"]["reason"] == "override rate rose after promotion"


def test_a_rewrite_under_a_new_export_time_is_unanchored_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: every hash recomputed and the header time changed, so no ledger entry says it differs."""
    monkeypatch.delenv("SIGNOFF_AUDIT_KEY", raising=False)
    lines = _trail()
    events = [json.loads(line) for line in lines[1:-1]]
    for e in events:
        for key in ("seq", "prev", "hash"):
            e.pop(key)
    events = [e for e in events if e["workflow_id"] != "case-2"]  # a record dropped
    header = {k: v for k, v in json.loads(lines[0]).items() if k not in ("seq", "prev", "hash", "kind")}
    header["at"] = "2026-11-29T09:00:00+00:00"
    forged = [json.dumps(r, sort_keys=True) for r in chain(events, header)]
    result = verify_lines(forged)
    assert [(i.line, i.problem) for i in result.issues] == [(1, "unanchored")] and result.ledger == "not_in_ledger"
    assert "2026-11-29T09:00:00+00:00" in result.issues[0].message


def test_a_line_appended_after_the_digest_is_named_appended() -> None:
    lines = _trail()
    forged = json.loads(lines[1])
    forged["actor"] = "mallory"
    problems = _problems([*lines, json.dumps(forged, sort_keys=True)])
    assert (len(lines) + 1, "appended") in problems  # was reported as "truncated: digest missing" (QA)
    assert all(problem != "truncated" for _, problem in problems)


async def test_an_escalated_case_exports_its_escalation(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """QA: an escalation carries its own `kind` (approval_timeout, ...); exporting it crashed the export."""
    import yaml

    from signoff.audit import case_events
    from signoff.history import decode_history
    from signoff.models import CaseStatus
    from tests.casekit import alert, awaiting, case_input, start_case, wait_for

    policy = yaml.safe_load(policy_file.read_text())
    policy["tiers"]["high"].pop("escalation", None)  # one level (the lab's chain would disagree with 2s)
    policy["tiers"]["high"]["timeout"] = "2s"  # real time on the dev server: no time skipping to wait for
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"host-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
        await wait_for(handle, lambda v: v.status == CaseStatus.escalated, "escalated")
        # QA: a refused signal to an open case was exported as an "approval"
        await handle.signal("approve_signal", {"step": "isolate_host", "approver": "mallory", "reason": "let me"})
        await wait_for(handle, lambda v: any(r.approver == "mallory" for r in v.refusals), "refusal kept")
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        await handle.terminate("test done")
    events = case_events(history)
    assert [e["kind"] for e in events if e["actor"] == "mallory"] == ["approve_signal_undetermined"]
    escalations = [e for e in events if e["kind"] == "escalation"]
    assert escalations and escalations[0]["detail"]["escalation_kind"] == "approval_timeout"
    assert escalations[0]["detail"]["step_id"] == "isolate_host"
