"""Taking a wrongly correlated alert out of its case (`signoff detach`; workflows/case_detach.py).

Real dev server, real ingest through the CLI, in-process worker. A GUIDE incident with three alerts,
each naming its own account: the case aims its account steps at the first account. Detaching that
account's alert takes it out of the case (count, alerts, entities, AlertCount, `--with-alerts`),
skips the waiting steps aimed only at it, names the executed step that acted on it, opens a case of
its own (`<case>-d1`) that runs its own pipeline, makes a re-ingest of the alert a duplicate, and is
in `show`, `explain` and the audit export. Refusals change nothing and are recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.signing import public_key_text, sign_case_decision
from signoff.alertstore import AlertStore
from signoff.audit import case_events
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.ingest import _same_case, ingest_path
from signoff.models import CaseStatus, CloseRequest, DetachRequest, StepState, Verdict
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow
from workflows.case_detach import detached_case_id


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _refused_records(home: Path, case_id: str) -> list[dict[str, Any]]:
    path = home / "audit" / "refused.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r["case_id"] == case_id and r["kind"] == "refused_detach_alert"]


async def _events(handle: WorkflowHandle) -> int:
    return len((await handle.fetch_history()).events)


def test_detached_ids_never_collide_with_follow_ups_and_count_as_the_incident() -> None:
    assert detached_case_id("guide-1-2", 1) == "guide-1-2-d1" != "guide-1-2-r1"
    # GUIDE duplicates are per incident: the detached case still belongs to the incident's alerts.
    assert _same_case("guide-1-2-d1", "guide-1-2") and _same_case("guide-1-2-r2-d3", "guide-1-2")
    assert not _same_case("guide-1-23-d1", "guide-1-2") and not _same_case("guide-1-2-dx", "guide-1-2")
    assert not _same_case("guide-1-2-d", "guide-1-2")


async def test_detach_takes_the_alert_out_and_opens_its_own_case(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path, signoff_home: Path
) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    org = _unique_org()
    case = f"guide-{org}-1"
    first, second, third = (f"guide-{org}-{n}" for n in (11, 12, 13))
    rows = [_row(org, 1, a, a) for a in (11, 12, 13)]
    for row in rows:
        row["Category"] = "CredentialAccess"  # compromised_account: account steps gated for approval
    data = _guide_csv(tmp_path / "incident.csv", rows)
    async with settled_worker(client, task_queue):
        ingested = await acli(address, "ingest", str(data), "--format", "guide", "--json", env=env)
        assert ingested.exit_code == 0, ingested.output
        assert _json_lines(ingested.output)[-1]["cases_opened"] == 1
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case)
        before = await wait_for(handle, awaiting("disable_account"), "waiting for approval", attempts=600)
        assert before.alert_count == 3
        assert step(before, "disable_account").target.id == "111"  # the first alert's account
        assert step(before, "watch_account").state == StepState.executed
        events_before = await _events(handle)

        # Refused before anything changes, each recorded with its reason.
        refusals = {
            "'mallory' is not in policy": ("--as", "mallory", "--reason", "other incident", first),
            "detaching an alert from a case needs one of": ("--as", "erin", "--reason", "other incident", first),
            f"case {case} has no alert 'nope'": ("--as", "carol", "--reason", "other incident", "nope"),
            "a reason is required": ("--as", "carol", "--reason", "  ", first),
        }
        for expected, (*opts, uid) in refusals.items():
            result = await acli(address, "detach", case, uid, *opts, env=env)
            assert result.exit_code == 1 and "refused" in result.output and expected in result.output, result.output
        assert await _events(handle) == events_before
        recorded = _refused_records(signoff_home, case)
        assert len(recorded) == 4 and {r["requested_by"] for r in recorded} == {"mallory", "erin", "carol"}
        assert all(r["refusal"] for r in recorded)

        # Carol detaches the first alert.
        result = await acli(address, "detach", case, first, "--as", "carol", "--reason", "user 111 is another org's",
                            "--json", env=env)
        assert result.exit_code == 0, result.output
        (record,) = _json_lines(result.output)
        assert record["new_case"] == f"{case}-d1" and record["alert_uid"] == first
        assert record["requested_by"] == "carol" and not record["already_detached"]
        assert record["skipped_steps"] == ["disable_account", "revoke_sessions"]
        assert record["acted_steps"] == ["watch_account"] and record["score_included"] is True
        assert record["alert_count"] == 2 and record["alert_store_updated"] is True

        view = await handle.query(CaseWorkflow.status)
        assert view.alert_count == 2 and [a.uid for a in view.timeline] == [second, third]
        assert ("account", "111") not in {(e.type, e.value) for e in view.entities}
        # ... and from the case's entity digests (`signoff related`, `signoff cases --entity`).
        from signoff import search_attributes as sa
        from signoff.entity_index import entity_key, index_keys

        published = (await handle.describe()).typed_search_attributes.get(sa.CASE_ENTITIES) or ""
        assert entity_key("111") not in published.split()
        assert published.split() == index_keys(e.value for e in view.entities)
        skipped = step(view, "disable_account")
        assert skipped.state == StepState.skipped
        assert f"its target came from alert {first}, detached by carol" in skipped.error
        assert step(view, "revoke_sessions").state == StepState.skipped
        assert "since detached by carol" in step(view, "watch_account").note
        assert step(view, "watch_account").state == StepState.executed  # executed steps stay

        # The alert's own case opens through the normal path and runs its pipeline.
        detached = client.get_workflow_handle_for(CaseWorkflow.run, f"{case}-d1")
        own = await wait_for(detached, awaiting("disable_account"), "the new case waiting", attempts=600)
        assert own.alert_count == 1 and [a.uid for a in own.timeline] == [first]
        assert own.score is not None and own.playbook == "compromised_account"
        assert own.detached_from is not None and (own.detached_from.case_id, own.detached_from.by) == (case, "carol")
        assert own.detached_from.reason == "user 111 is another org's"
        assert own.title.startswith(f"detached from case {case}")

        # The listing follows: AlertCount from visibility, alert uids from this directory's store.
        want = {case: (2, [second, third]), f"{case}-d1": (1, [first])}
        for _ in range(200):
            listed = await acli(address, "cases", "--json", "--with-alerts", "--query", f"TaskQueue='{task_queue}'",
                                env=env)
            got = {r["case_id"]: (r["alert_count"], sorted(r["alert_uids"])) for r in _json_lines(listed.output)}
            if got == want:
                break
            await asyncio.sleep(0.05)
        assert got == want

        # Re-ingesting the alert (or the whole incident) here opens nothing and joins nothing.
        again = await acli(address, "ingest", str(_guide_csv(tmp_path / "again.csv", rows[:1])), "--format", "guide",
                           "--json", env=env)
        summary = _json_lines(again.output)[-1]
        assert (summary["duplicates"], summary["cases_opened"], summary["cases_updated"]) == (1, 0, 0), summary
        whole = _json_lines((await acli(address, "ingest", str(data), "--format", "guide", "--json", env=env)).output)[-1]
        assert (whole["duplicates"], whole["cases_opened"], whole["cases_updated"]) == (3, 0, 0), whole
        # On a machine whose store never heard of the detach, the old case does not take the alert back.
        elsewhere = AlertStore(tmp_path / "elsewhere" / "alerts.db")
        await ingest_path(client, _guide_csv(tmp_path / "elsewhere.csv", rows[:1]), "guide", store=elsewhere,
                          task_queue=task_queue)
        elsewhere.close()
        view = await handle.query(CaseWorkflow.status)
        assert view.alert_count == 2 and first not in [a.uid for a in view.timeline]

        # A repeated detach is idempotent: the same answer, nothing written to the case.
        events_after = await _events(handle)
        repeat = await acli(address, "detach", case, first, "--as", "dave", "--reason", "again", "--json", env=env)
        assert repeat.exit_code == 0, repeat.output
        (same,) = _json_lines(repeat.output)
        assert same["already_detached"] and same["new_case"] == f"{case}-d1" and same["requested_by"] == "carol"
        told = await acli(address, "detach", case, first, "--as", "dave", "--reason", "again", env=env)
        assert told.exit_code == 0 and f"alert {first} was already detached from case {case} by carol" in told.output
        assert "nothing changed" in told.output and f"its own case: {case}-d1" in told.output, told.output
        assert await _events(handle) == events_after
        assert len([wf async for wf in client.list_workflows(f"WorkflowId = '{case}-d2'")]) == 0

        # The last alert of a case cannot be detached: close the case instead.
        last = await acli(address, "detach", f"{case}-d1", first, "--as", "carol", "--reason", "x", env=env)
        assert last.exit_code == 1 and "close the case instead" in last.output, last.output
        assert _refused_records(signoff_home, f"{case}-d1")

        # show, explain, the audit export.
        shown = await acli(address, "show", case, env=env)
        assert f"detached: alert {first} by carol" in shown.output and f"now in case {case}-d1" in shown.output
        assert "skipped, their target came only from it: disable_account, revoke_sessions" in shown.output
        assert "executed on a target that came from it: watch_account" in shown.output
        assert f"score included alert {first}, since detached" in shown.output
        shown_new = await acli(address, "show", f"{case}-d1", env=env)
        assert f"detached from case {case}: alert {first} taken out by carol" in shown_new.output

        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history, view)
        (d,) = ex["detaches"]
        assert (d["alert_uid"], d["requested_by"], d["new_case"], d["score_included"]) == (first, "carol",
                                                                                           f"{case}-d1", True)
        assert ex["alerts"]["count"] == 2 and ex["alerts"]["detached"] == [first]
        assert ex["score"]["included_detached"] == [first]
        text = render_explanation(ex)
        assert "Detached: " in text and f"into case {case}-d1" in text and "computed with alert(s) since detached" in text
        assert any(r["kind"] == "refused_detach_alert" for r in ex["refused_attempts"])
        detach_events = [e for e in case_events(history) if e["kind"] == "detach"]
        assert [(e["actor"], e["detail"]["alert_uid"], e["detail"]["new_case"]) for e in detach_events] == [
            ("carol", first, f"{case}-d1")]
        new_history = await decode_history(await detached.fetch_history(), client.data_converter, source="live")
        opened = [e for e in case_events(new_history) if e["kind"] == "case_opened"]
        assert opened[0]["detail"]["detached_from"]["case_id"] == case
        assert f"Detached from case {case}: alert {first} taken out by carol" in render_explanation(
            explanation_from_history(new_history))
        assert f"DETACHED into case {case}-d1" in text

        # A closed case takes no detach (recorded).
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                     reason="confirmed"))
        await handle.result()
        closed = await acli(address, "detach", case, second, "--as", "carol", "--reason", "late", env=env)
        assert closed.exit_code == 1 and "closed" in closed.output, closed.output
        assert any(r["alert_uid"] == second and "closed" in r["refusal"] for r in _refused_records(signoff_home, case))
        assert (await handle.query(CaseWorkflow.status)).alert_count == 2
        # The case with its detach replays against the current code (the handler is deterministic).
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=client.data_converter)
        assert (await replayer.replay_workflow(await handle.fetch_history())).replay_failure is None
        await detached.terminate("test done")


ROLES = {"alice": ["analyst"], "bob": ["analyst"], "carol": ["lead"], "dave": ["lead", "ir_manager"],
         "erin": ["detection_engineer"]}


async def test_where_unsigned_requests_are_not_trusted_a_detach_needs_the_requesters_key(
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
        inp = case_input(alert_type="malware")
        cid = inp.case_id
        handle = await start_case(
            client, task_queue, inp,
            *(alert(f"m{n}", ("host", f"{h}-{cid}"), category="Malware") for n, h in ((1, "a"), (2, "b"), (3, "c"))))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        events_before = await _events(handle)

        unsigned = await acli(address, "detach", cid, "m1", "--as", "carol", "--reason", "another host", env=env)
        assert unsigned.exit_code == 1 and "unsigned detach requests are not accepted" in unsigned.output
        assert await _events(handle) == events_before
        assert _refused_records(signoff_home, cid)[-1]["signed"] is False

        forged = sign_case_decision(keys["bob"], case_id=cid, decision="detach", approver="carol")
        try:
            await handle.execute_update(CaseWorkflow.detach_alert,
                                        DetachRequest(alert_uid="m1", requested_by="carol", reason="x", token=forged))
            raise AssertionError("a token signed with another person's key was accepted")
        except Exception as exc:  # noqa: BLE001 - the update's refusal
            assert "forged" in str(getattr(exc, "cause", exc))
        token = sign_case_decision(keys["carol"], case_id=cid, decision="detach", approver="carol")
        reply = await handle.execute_update(
            CaseWorkflow.detach_alert, DetachRequest(alert_uid="m1", requested_by="carol", reason="another host",
                                                     token=token))
        assert f"into case {cid}-d1" in reply and "isolate_host" in reply
        view = await handle.query(CaseWorkflow.status)
        view = await handle.query(CaseWorkflow.status)
        assert view.alert_count == 2 and view.detached_alerts[0].signed
        assert step(view, "isolate_host").state == StepState.skipped  # aimed at host a-..., only in m1
        own = await wait_for(client.get_workflow_handle_for(CaseWorkflow.run, f"{cid}-d1"),
                             lambda v: v.status not in (CaseStatus.open, CaseStatus.triage), "triaged", attempts=600)
        assert own.detached_from is not None and own.detached_from.by == "carol"
        # Sent to the case again (not through the CLI, which answers from the case's state): the same record.
        again = await handle.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid="m1", requested_by="dave", reason="again",
            token=sign_case_decision(keys["dave"], case_id=cid, decision="detach", approver="dave")))
        assert again.startswith("alert m1 was already detached by carol") and f"into case {cid}-d1" in again
        assert len((await handle.query(CaseWorkflow.status)).detached_alerts) == 1

        # Two people detach the case's last two alerts at once: one goes, the other is refused (a case
        # keeps at least one alert), whichever order the case takes them in.
        async def detach(uid: str, who: str) -> str:
            token = sign_case_decision(keys[who], case_id=cid, decision="detach", approver=who)
            try:
                return await handle.execute_update(
                    CaseWorkflow.detach_alert, DetachRequest(alert_uid=uid, requested_by=who, reason="race", token=token))
            except Exception as exc:  # noqa: BLE001 - the update's refusal
                return f"refused: {getattr(exc, 'cause', exc)}"

        replies = await asyncio.gather(detach("m2", "carol"), detach("m3", "dave"))
        assert sorted(r.startswith("refused") for r in replies) == [False, True], replies
        assert "close the case instead" in next(r for r in replies if r.startswith("refused"))
        view = await handle.query(CaseWorkflow.status)
        assert view.alert_count == 1 and len(view.detached_alerts) == 2
        await handle.terminate("test done")
        for n in (1, 2):
            await client.get_workflow_handle(f"{cid}-d{n}").terminate("test done")
