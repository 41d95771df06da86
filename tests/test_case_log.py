"""A case's owner and investigation log (`signoff assign`, `signoff note`; workflows/case_log.py):
attributed, timestamped, refused before anything is written when wrong, signed where the policy
wants it, and in `signoff show`, `signoff explain`, the audit export and the queue's filters.
Real dev server (the queue filters need visibility); the policy file is a test copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from policies.signing import public_key_text, sign_case_decision
from signoff.audit import case_events
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import AssignRequest, NoteRequest
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, wait_for
from workflows.case import CaseWorkflow
from workflows.case_log import MAX_ASSIGNMENTS, MAX_NOTE_CHARS


async def _refused(handle: WorkflowHandle, name: str, req: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(name, req)
    return str(getattr(info.value.cause, "message", info.value.cause))


async def test_owner_and_log_are_attributed_checked_and_in_every_record(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"h-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        history_before = len((await handle.fetch_history()).events)

        # Refused before anything is written: who is not in policy, an empty or oversized note, a
        # stranger as owner, the same owner again.
        assert "'mallory' is not in policy" in await _refused(handle, "note", NoteRequest(author="mallory", text="hi"))
        assert "the note is empty" in await _refused(handle, "note", NoteRequest(author="alice", text="  \n "))
        too_long = NoteRequest(author="alice", text="x" * (MAX_NOTE_CHARS + 1))
        assert f"keep it under {MAX_NOTE_CHARS}" in await _refused(handle, "note", too_long)
        assert "'zed' is not in policy" in await _refused(handle, "assign", AssignRequest(assignee="zed", by="carol"))
        assert len((await handle.fetch_history()).events) == history_before

        # Through the CLI, as an analyst does.
        result = await acli(address, "assign", inp.case_id, "--to", "bob", "--as", "carol", "--reason", "on shift", env=env)
        assert result.exit_code == 0 and "assigned to bob by carol" in result.output, result.output
        again = await acli(address, "assign", inp.case_id, "--to", "bob", "--as", "carol", env=env)
        assert again.exit_code == 1 and "already assigned to bob" in again.output, again.output
        result = await acli(address, "note", inp.case_id, "beacon to [198.51.100.7] stops after reboot", "--as", "bob",
                            env=env)
        assert result.exit_code == 0 and "note 1 added by bob" in result.output, result.output
        await handle.execute_update(CaseWorkflow.note, NoteRequest(author="alice", text="user confirms: travelling"))

        view = await handle.query(CaseWorkflow.status)
        assert view.assignee == "bob" and [(a.by, a.reason) for a in view.assignments] == [("carol", "on shift")]
        assert [(n.author, n.text) for n in view.notes] == [
            ("bob", "beacon to [198.51.100.7] stops after reboot"), ("alice", "user confirms: travelling")]
        assert view.notes[0].at <= view.notes[1].at

        shown = await acli(address, "show", inp.case_id, env=env)
        assert shown.exit_code == 0 and "owner: bob (assigned by carol" in shown.output
        assert "bob: beacon to [198.51.100.7] stops after reboot" in shown.output  # brackets are text, not markup

        # The queue: the owner's cases, and the unassigned ones (visibility; give it a moment).
        for _ in range(100):
            mine = await acli(address, "cases", "--assignee", "bob", "--json", "--query", f"TaskQueue='{task_queue}'",
                              env=env)
            rows = [json.loads(line) for line in mine.output.splitlines() if line.startswith("{")]
            if rows:
                break
        assert [(r["case_id"], r["assignee"]) for r in rows] == [(inp.case_id, "bob")]
        nobody = await acli(address, "cases", "--unassigned", "--json", "--query", f"TaskQueue='{task_queue}'", env=env)
        assert inp.case_id not in nobody.output
        both = await acli(address, "cases", "--assignee", "bob", "--unassigned", env=env)
        assert both.exit_code == 1 and "exclude each other" in both.output

        # From the history alone: explain and the audit export.
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history)
        assert [(a["assignee"], a["by"], a["reason"]) for a in ex["assignments"]] == [("bob", "carol", "on shift")]
        assert [(n["author"], n["text"]) for n in ex["notes"]] == [(n.author, n.text) for n in view.notes]
        text = render_explanation(ex)
        assert "Assigned: " in text and "Investigation log:" in text and "alice: user confirms: travelling" in text
        kinds = [(e["kind"], e["actor"]) for e in case_events(history) if e["kind"] in ("assignment", "note")]
        assert kinds == [("assignment", "carol"), ("note", "bob"), ("note", "alice")]
        await handle.terminate("test done")


ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "erin": ["detection_engineer"]}


async def test_where_unsigned_requests_are_not_trusted_notes_need_the_authors_key(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    keys = {user: Ed25519PrivateKey.generate() for user in ROLES}
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"h-{cid}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting")

        unsigned = await _refused(handle, "note", NoteRequest(author="alice", text="seen before"))
        assert "unsigned note requests are not accepted" in unsigned and "signoff note" in unsigned
        # Signed by someone else's key, or signed for another decision: refused.
        forged = sign_case_decision(keys["bob"], case_id=cid, decision="note", approver="alice")
        assert "forged" in await _refused(handle, "note", NoteRequest(author="alice", text="x", token=forged))
        wrong = sign_case_decision(keys["alice"], case_id=cid, decision="close", approver="alice")
        assert "decision" in await _refused(handle, "note", NoteRequest(author="alice", text="x", token=wrong))

        token = sign_case_decision(keys["alice"], case_id=cid, decision="note", approver="alice")
        assert "note 1 added" in await handle.execute_update(
            CaseWorkflow.note, NoteRequest(author="alice", text="seen before", token=token))
        # The same token again: its nonce is spent.
        assert "already" in (await _refused(handle, "note", NoteRequest(author="alice", text="twice", token=token))).lower()
        assign = sign_case_decision(keys["carol"], case_id=cid, decision="assign", approver="carol")
        await handle.execute_update(CaseWorkflow.assign, AssignRequest(assignee="alice", by="carol", token=assign))
        view = await handle.query(CaseWorkflow.status)
        assert view.notes[0].signed and view.assignments[0].signed and view.assignee == "alice"
        await handle.terminate("test done")


async def test_a_case_bounced_between_owners_stops_taking_hand_overs(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """Review10: accepted assignments were unbounded, so two people in policy could push a case to
    Temporal's history limit (which ends it) by handing it back and forth."""
    client = dev_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("b1", ("host", f"h-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        for i in range(MAX_ASSIGNMENTS):
            await handle.execute_update(CaseWorkflow.assign, AssignRequest(
                assignee=("alice", "bob")[i % 2], by="carol", reason="shift"))
        refusal = await _refused(handle, "assign", AssignRequest(assignee="carol", by="carol", reason="mine"))
        assert f"handed over {MAX_ASSIGNMENTS} times" in refusal, refusal
        view = await handle.query(CaseWorkflow.status)
        assert len(view.assignments) == MAX_ASSIGNMENTS and view.assignee == "bob"
        await handle.execute_update(CaseWorkflow.note, NoteRequest(author="carol", text="taking it over"))
