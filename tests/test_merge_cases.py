"""Merging two cases that are one incident (`signoff merge`; workflows/case_merge.py, activities/merge.py).

Real dev server, in-process worker, the CLI an analyst uses. Two malware cases on two hosts: the
source's alerts and host go to the target (its alert count, alerts, entities and `CaseEntities`:
`signoff cases --entity` finds the source's host there); the source skips its waiting step, keeps
its executed actions in effect (rolled back after it ended through `signoff rollback`) and ends
`merged` with no verdict. Refusals change nothing and are recorded; a repeated merge delivers once;
both histories replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.signing import public_key_text, sign_case_decision
from signoff import search_attributes as sa
from signoff.audit import case_events
from signoff.entity_index import entity_key
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import CaseStatus, CloseRequest, MergeDelivery, MergeRequest, StepState, Verdict
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _refused(home: Path, case_id: str) -> list[dict[str, Any]]:
    path = home / "audit" / "refused.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r["case_id"] == case_id and r["kind"] == "refused_merge_into"]


async def _events(handle: WorkflowHandle) -> int:
    return len((await handle.fetch_history()).events)


@activity.defn(name="deliver_merge")
async def unreachable(delivery: MergeDelivery) -> str:
    """A stand-in for `deliver_merge` once its retries are spent (Temporal unreachable from the worker)."""
    raise ApplicationError(f"connection refused delivering to {delivery.target}", type="Unreachable",
                           non_retryable=True)


HELD = asyncio.Event()


@activity.defn(name="deliver_merge")
async def held_delivery(delivery: MergeDelivery) -> str:
    """`deliver_merge`, held until the test lets it go: the merge is under way meanwhile."""
    from activities.merge import deliver_merge

    await HELD.wait()
    return await deliver_merge(delivery)


async def _replays(client: Any, *handles: WorkflowHandle) -> None:
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=client.data_converter)
    for handle in handles:
        result = await replayer.replay_workflow(await handle.fetch_history())
        assert result.replay_failure is None, (handle.id, result.replay_failure)


async def test_merge_moves_the_alerts_and_ends_the_source_merged(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "250"}
    tag = task_queue[-8:]
    source_host, target_host = f"src-{tag}.corp", f"dst-{tag}.corp"
    async with settled_worker(client, task_queue):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        src, dst = src_inp.case_id, dst_inp.case_id
        source = await start_case(client, task_queue, src_inp,
                                  alert("s1", ("host", source_host), category="Malware"),
                                  alert("s2", ("host", source_host), category="Malware"))
        target = await start_case(client, task_queue, dst_inp, alert("t1", ("host", target_host), category="Malware"))
        before = await wait_for(source, awaiting("isolate_host"), "source waiting", attempts=600)
        assert step(before, "watch_host").state == StepState.executed
        await wait_for(target, awaiting("isolate_host"), "target waiting", attempts=600)
        source_events, target_events = await _events(source), await _events(target)

        # Refused before anything changes, each recorded with its reason.
        refusals = {
            "'mallory' is not in policy": ("--into", dst, "--as", "mallory", "--reason", "same incident"),
            "merging a case into another needs one of": ("--into", dst, "--as", "erin", "--reason", "same incident"),
            "cannot be merged into itself": ("--into", src, "--as", "carol", "--reason", "same incident"),
            "a reason is required": ("--into", dst, "--as", "carol", "--reason", "  "),
            f"there is no case 'nope-{tag}'": ("--into", f"nope-{tag}", "--as", "carol", "--reason", "same"),
        }
        for expected, opts in refusals.items():
            result = await acli(address, "merge", src, *opts, env=env)
            assert result.exit_code == 1 and "refused" in result.output and expected in result.output, result.output
        assert (await _events(source), await _events(target)) == (source_events, target_events)
        recorded = _refused(signoff_home, src)
        assert len(recorded) == len(refusals) and all(r["refusal"] for r in recorded)
        assert {r["requested_by"] for r in recorded} == {"mallory", "erin", "carol"}

        # Carol merges the source into the target.
        merged = await acli(address, "merge", src, "--into", dst, "--as", "carol", "--reason", "one actor, both hosts",
                            "--json", env=env)
        assert merged.exit_code == 0, merged.output
        (record,) = _json_lines(merged.output)
        assert (record["target"], record["by"], record["already_merged"]) == (dst, "carol", False)
        assert record["status"] == "merged" and record["alerts"] == 2 and record["target_alert_count"] == 3
        assert record["skipped_steps"] == ["isolate_host"] and "watch_host" in record["acted_steps"]

        ended = await source.result()  # the source ends: merged, no verdict
        assert ended.status == CaseStatus.merged and ended.verdict is None
        assert ended.merged_into is not None and ended.merged_into.target == dst
        waiting = step(ended, "isolate_host")
        assert waiting.state == StepState.skipped and f"merged into {dst}" in waiting.error
        kept = step(ended, "watch_host")
        assert kept.state == StepState.executed and f"signoff rollback {src}" in kept.note
        # Its verdict is not feedback for the model: nothing went to the governance counters.
        assert not any(e.activity_task_scheduled_event_attributes.activity_type.name == "record_verdict"
                       for e in (await source.fetch_history()).events if e.HasField("activity_task_scheduled_event_attributes"))

        view = await target.query(CaseWorkflow.status)
        assert view.alert_count == 3 and sorted(a.uid for a in view.timeline) == ["s1", "s2", "t1"]
        assert ("host", source_host) in {(e.type, e.value) for e in view.entities}
        (came,) = view.merged_from
        assert (came.source, came.by, came.alerts_added, came.after_scoring) == (src, "carol", 2, True)
        assert view.status == CaseStatus.awaiting_approval  # the target goes on; its score is not recomputed
        published = (await target.describe()).typed_search_attributes
        assert entity_key(source_host) in (published.get(sa.CASE_ENTITIES) or "").split()
        assert published.get(sa.ALERT_COUNT) == 3

        # `signoff cases --entity` finds the source's host in the target; `signoff cases` says merged.
        scoped = f"TaskQueue='{task_queue}'"
        rows: dict[str, Any] = {}
        for _ in range(200):
            listed = await acli(address, "cases", "--entity", source_host, "--json", "--query", scoped, env=env)
            rows = {r["case_id"]: r for r in _json_lines(listed.output)}
            if dst in rows and rows.get(src, {}).get("status") == "merged":
                break
            await asyncio.sleep(0.05)
        assert rows[dst]["alert_count"] == 3 and rows[src]["status"] == "merged", rows
        related = await acli(address, "related", dst, "--json", env=env)
        assert related.exit_code == 0 and src in related.output, related.output

        # The same merge again: the same record, nothing delivered twice.
        target_events = await _events(target)
        again = await acli(address, "merge", src, "--into", dst, "--as", "dave", "--reason", "again", "--json", env=env)
        assert again.exit_code == 0, again.output
        (same,) = _json_lines(again.output)
        assert same["already_merged"] and same["by"] == "carol" and same["target_alert_count"] == 3
        assert await _events(target) == target_events

        # Refused: a cycle (the target back into the source), a merge of an ended source elsewhere.
        cycle = await acli(address, "merge", dst, "--into", src, "--as", "carol", "--reason", "the other way", env=env)
        assert cycle.exit_code == 1 and "would make a cycle" in cycle.output, cycle.output
        assert any("cycle" in r["refusal"] for r in _refused(signoff_home, dst))
        elsewhere = await acli(address, "merge", src, "--into", f"x-{tag}", "--as", "carol", "--reason", "x", env=env)
        assert elsewhere.exit_code == 1 and f"already merged into {dst}" in elsewhere.output, elsewhere.output
        assert (await target.query(CaseWorkflow.status)).alert_count == 3
        # A late approval on the merged source says where the incident went (not just "closed").
        late = await acli(address, "approve", src, "isolate_host", "--as", "alice", "--reason", "late", env=env)
        assert late.exit_code == 1 and f"was merged into case {dst}" in " ".join(late.output.split()), late.output

        # show, explain, the audit export: both sides.
        shown = await acli(address, "show", src, env=env)
        assert f"MERGED into case {dst} by carol" in shown.output and "status merged" in shown.output, shown.output
        assert f"signoff rollback {src}" in shown.output and "verdict due" not in shown.output
        shown_dst = await acli(address, "show", dst, env=env)
        assert f"merged in: case {src} by carol" in shown_dst.output and "not rescored" in shown_dst.output
        src_history = await decode_history(await source.fetch_history(), client.data_converter, source="live")
        dst_history = await decode_history(await target.fetch_history(), client.data_converter, source="live")
        ex_src = explanation_from_history(src_history)
        assert ex_src["merged_into"]["target"] == dst and ex_src["final"]["status"] == "merged"
        assert ex_src["verdicts"] == [] and "MERGED into case" in render_explanation(ex_src)
        ex_dst = explanation_from_history(dst_history, view)
        (m,) = ex_dst["merged_from"]
        assert (m["source"], m["requested_by"], m["after_scoring"], m["alert_uids"]) == (src, "carol", True, ["s1", "s2"])
        assert ex_dst["alerts"]["count"] == 3 and ex_dst["score"]["merged_after_scoring"] == [src]
        assert "score was computed before case" in render_explanation(ex_dst)
        explained = await acli(address, "explain", dst, "--json", env=env)
        assert json.loads(explained.output)["merged_from"][0]["source"] == src
        src_merge = [e for e in case_events(src_history) if e["kind"] == "merge"]
        dst_merge = [e for e in case_events(dst_history) if e["kind"] == "merge"]
        assert [(e["actor"], e["detail"]["side"], e["detail"]["target"]) for e in src_merge] == [("carol", "source", dst)]
        assert [(e["detail"]["side"], e["detail"]["source"]) for e in dst_merge] == [("target", src)]

        # The merged case's executed actions are still undoable.
        undone = await acli(address, "rollback", src, "--as", "carol", "--reason", "merged, undo its watch", env=env)
        assert undone.exit_code == 0 and "rolled back" in undone.output, undone.output

        await _replays(client, source, target)
        await target.terminate("test done")


ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "erin": ["detection_engineer"]}


async def test_signed_merges_deliver_once_and_refusals_change_nothing(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    keys = {user: Ed25519PrivateKey.generate() for user in ROLES}
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    policy["approvers"] = {u: {"roles": r, "public_key": public_key_text(keys[u])} for u, r in ROLES.items()}
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    async with settled_worker(client, task_queue):
        inputs = [case_input(alert_type="malware") for _ in range(3)]
        src, dst, done = (i.case_id for i in inputs)
        source, target, closed = [
            await start_case(client, task_queue, inp, alert(f"{n}1", ("host", f"{n}-{inp.case_id}"), category="Malware"))
            for n, inp in zip("abc", inputs, strict=True)]
        for handle in (source, target, closed):
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        events = await _events(source)

        unsigned = await acli(address, "merge", src, "--into", dst, "--as", "carol", "--reason", "same", env=env)
        assert unsigned.exit_code == 1 and "unsigned merge requests are not accepted" in unsigned.output, unsigned.output
        assert _refused(signoff_home, src)[-1]["signed"] is False
        assert await _events(source) == events  # refused by the validator: nothing written
        forged = sign_case_decision(keys["bob"], case_id=src, decision="merge", approver="carol")
        try:
            await source.execute_update(CaseWorkflow.merge_into,
                                        MergeRequest(target=dst, requested_by="carol", reason="x", token=forged))
            raise AssertionError("a token signed with another person's key was accepted")
        except Exception as exc:  # noqa: BLE001 - the update's refusal
            assert "forged" in str(getattr(exc, "cause", exc))
        # A signature the case's copy of the policy does not verify may be a key rotated since the case
        # opened: checked against the policy in force once (at most hourly), so this one refusal is
        # recorded in the history and kept as a refusal; nothing else changed.
        view = await source.query(CaseWorkflow.status)
        assert [(r.approver, r.via, r.accepted) for r in view.refusals] == [("carol", "merge", False)]
        assert view.merged_into is None and view.status != CaseStatus.merged

        # A target that is not there: the source refuses once the target says so, records it, changes nothing.
        ghost = MergeRequest(target=f"{dst}-ghost", requested_by="carol", reason="same",
                             token=sign_case_decision(keys["carol"], case_id=src, decision="merge", approver="carol"))
        try:
            await source.execute_update(CaseWorkflow.merge_into, ghost)
            raise AssertionError("a merge into a case that does not exist was accepted")
        except Exception as exc:  # noqa: BLE001 - the update's refusal
            assert "there is no case" in str(getattr(exc, "cause", exc))
        view = await source.query(CaseWorkflow.status)
        assert view.merged_into is None and view.status == CaseStatus.awaiting_approval
        assert step(view, "isolate_host").state == StepState.awaiting_approval
        assert [(r.decision.value, r.accepted) for r in view.refusals] == [("merge", False)] * 2  # forged, ghost

        # An ended source is refused (recorded); so is a merge into an ended case.
        await closed.execute_update(CaseWorkflow.close, CloseRequest(
            analyst="carol", verdict=Verdict.true_positive, reason="done",
            token=sign_case_decision(keys["carol"], case_id=done, decision="close", approver="carol")))
        await closed.result()
        late = await acli(address, "merge", done, "--into", dst, "--as", "carol", "--reason", "same", env=env)
        assert late.exit_code == 1 and "has ended" in late.output, late.output
        assert _refused(signoff_home, done)
        into_ended = await acli(address, "merge", src, "--into", done, "--as", "carol", "--reason", "same", env=env)
        assert into_ended.exit_code == 1 and f"case {done} has ended" in into_ended.output, into_ended.output

        # The same update sent twice (a client retry with the same id): delivered once.
        token = sign_case_decision(keys["dave"], case_id=src, decision="merge", approver="dave")
        req = MergeRequest(target=dst, requested_by="dave", reason="same host group", token=token)
        first = await source.execute_update(CaseWorkflow.merge_into, req, id=f"merge-{src}")
        second = await source.execute_update(CaseWorkflow.merge_into, req, id=f"merge-{src}")
        assert first == second and first.startswith(f"case {src} merged into {dst} by dave"), (first, second)
        ended = await source.result()
        assert ended.status == CaseStatus.merged and ended.merged_into is not None and ended.merged_into.signed
        view = await target.query(CaseWorkflow.status)
        assert view.alert_count == 2 and len(view.merged_from) == 1
        accepted = [u for u in (await decode_history(await target.fetch_history(), client.data_converter,
                                                     source="live")).updates_named("accept_merge")]
        assert len(accepted) == 1
        await _replays(client, source, target)
        await target.terminate("test done")


async def test_alerts_past_the_timeline_cap_go_as_counts_with_their_entities(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    client = dev_env.client
    async with settled_worker(client, task_queue):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        many = [alert(f"m{n:02d}", ("host", f"h{n:02d}-{src_inp.case_id}"), category="Malware") for n in range(60)]
        source = await start_case(client, task_queue, src_inp, *many)
        target = await start_case(client, task_queue, dst_inp, alert("t1", ("host", f"t-{dst_inp.case_id}"),
                                                                      category="Malware"))
        before = await wait_for(source, awaiting("isolate_host"), "source waiting", attempts=600)
        assert before.alert_count == 60 and len(before.timeline) == 50  # the rest as counts
        await wait_for(target, awaiting("isolate_host"), "target waiting", attempts=600)
        reply = await source.execute_update(CaseWorkflow.merge_into, MergeRequest(
            target=dst_inp.case_id, requested_by="carol", reason="one campaign"))
        assert "60 alert(s) sent" in reply, reply
        view = await target.query(CaseWorkflow.status)
        assert view.alert_count == 61 and len(view.timeline) == 50 and view.rules == {"R1": 61}
        last_host = f"h59-{src_inp.case_id}"  # only in an alert past the source's timeline
        assert ("host", last_host) in {(e.type, e.value) for e in view.entities}
        published = (await target.describe()).typed_search_attributes.get(sa.CASE_ENTITIES) or ""
        assert entity_key(last_host) in published.split()
        assert (await source.result()).status == CaseStatus.merged
        await _replays(client, source, target)
        await target.terminate("test done")


async def test_a_failed_delivery_escalates_and_the_source_stays_open(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    from signoff.worker import activities

    down = [a for a in activities() if getattr(a, "__name__", "") != "deliver_merge"] + [unreachable]
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
    src, dst = src_inp.case_id, dst_inp.case_id
    async with settled_worker(client, task_queue, activities=down):
        source = await start_case(client, task_queue, src_inp, alert("s1", ("host", f"s-{src}"), category="Malware"))
        target = await start_case(client, task_queue, dst_inp, alert("t1", ("host", f"t-{dst}"), category="Malware"))
        for handle in (source, target):
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        failed = await acli(address, "merge", src, "--into", dst, "--as", "carol", "--reason", "same", env=env)
        assert failed.exit_code == 1 and "could not be merged" in failed.output, failed.output
        assert "stays open" in failed.output and not _refused(signoff_home, src)  # not a refusal: a failure
        view = await source.query(CaseWorkflow.status)
        assert view.merged_into is None and view.status == CaseStatus.awaiting_approval
        assert step(view, "isolate_host").state == StepState.awaiting_approval
        assert any("could not be merged" in e for e in view.escalations)
        assert (await target.query(CaseWorkflow.status)).alert_count == 1
    async with settled_worker(client, task_queue):  # Temporal reachable again: the same merge, run again
        merged = await acli(address, "merge", src, "--into", dst, "--as", "carol", "--reason", "same", "--json",
                            env=env)
        assert merged.exit_code == 0, merged.output
        assert _json_lines(merged.output)[0]["target_alert_count"] == 2
        ended = await source.result()
        assert ended.status == CaseStatus.merged
        history = await decode_history(await source.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history)
        assert [f["target"] for f in ex["merge_failures"]] == [dst] and ex["merged_into"]["target"] == dst
        assert any(e["detail"]["escalation_kind"] == "merge_failed" for e in case_events(history) if e["kind"] == "escalation")
        await _replays(client, source, target)
        await target.terminate("test done")


async def test_while_a_merge_is_under_way_the_source_takes_no_close_rollback_or_detach(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage

    from signoff.models import DetachRequest, RollbackRequest
    from signoff.worker import activities

    held = [a for a in activities() if getattr(a, "__name__", "") != "deliver_merge"] + [held_delivery]
    client = dev_env.client
    HELD.clear()
    async with settled_worker(client, task_queue, activities=held):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        source = await start_case(client, task_queue, src_inp, alert("s1", ("host", f"s-{src_inp.case_id}"),
                                                                     category="Malware"),
                                  alert("s2", ("host", f"s2-{src_inp.case_id}"), category="Malware"))
        target = await start_case(client, task_queue, dst_inp, alert("t1", ("host", f"t-{dst_inp.case_id}"),
                                                                      category="Malware"))
        for handle in (source, target):
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        merging = await source.start_update(
            CaseWorkflow.merge_into, MergeRequest(target=dst_inp.case_id, requested_by="carol", reason="same"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        attempts = {
            "close": (CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.true_positive, reason="x")),
            "rollback": (CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="x")),
            "detach": (CaseWorkflow.detach_alert, DetachRequest(alert_uid="s1", requested_by="carol", reason="x")),
        }
        for name, (update, arg) in attempts.items():
            try:
                await source.execute_update(update, arg)  # type: ignore[arg-type]
                raise AssertionError(f"a {name} was accepted while the case was being merged")
            except WorkflowUpdateFailedError as exc:
                assert "is being merged into" in str(getattr(exc.cause, "message", exc.cause)), (name, exc.cause)
        HELD.set()
        assert (await merging.result()).startswith(f"case {src_inp.case_id} merged into {dst_inp.case_id}")
        ended = await source.result()
        assert ended.status == CaseStatus.merged and ended.verdict is None and ended.rollback is None
        assert ended.alert_count == 2 and not ended.detached_alerts
        assert (await target.query(CaseWorkflow.status)).alert_count == 3
        await _replays(client, source, target)
        await target.terminate("test done")
