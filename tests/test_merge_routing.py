"""Alerts that correlate to a merged case go to the case it was merged into (signoff/ingest.py,
`MergeRoutes`), not to a `-r2` follow-up of the merged case.

Real dev server, in-process worker, real GUIDE ingest (incident = case): case 1 is merged into case 2,
later case 2 into case 3. A late alert of incident 1 lands in case 2, then (after the second merge) in
case 3, marked as correlated to case 1 (`show`, `explain`); ingested twice, or from another state
directory, it counts once; once case 3 has closed, its follow-up takes them. The histories replay."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.ingest import CaseDraft, _signal_with_start, ingest_path
from signoff.merge_text import merge_lines
from signoff.models import CaseStatus, CloseRequest, MergeRequest, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, wait_for
from tests.test_merge_cases import _replays
from tests.test_qa_ingest_listing import _guide_csv, _row, _unique_org
from workflows.case import CaseWorkflow


async def test_alerts_of_a_merged_case_go_where_it_was_merged(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path
) -> None:
    client = dev_env.client
    org = _unique_org()
    one, two, three = (f"guide-{org}-{n}" for n in (1, 2, 3))
    store = AlertStore(tmp_path / "alerts.db")
    elsewhere = AlertStore(tmp_path / "elsewhere" / "alerts.db")  # another state directory

    async def ingest(name: str, alert_id: int, where: AlertStore = store):  # type: ignore[no-untyped-def]
        rows = [_row(org, 1, alert_id, alert_id)]  # incident 1: case `one`
        return await ingest_path(client, _guide_csv(tmp_path / name, rows), "guide", store=where,
                                 task_queue=task_queue)

    async with settled_worker(client, task_queue):
        handles = {}
        for case_id in (one, two, three):
            handles[case_id] = await start_case(client, task_queue, case_input("malware", case_id=case_id),
                                                alert(f"{case_id}-a", ("host", f"h-{case_id}"), category="Malware"))
        for handle in handles.values():
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        before = await handles[two].query(CaseWorkflow.status)
        planned = [s.step_id for s in before.steps]
        await handles[one].execute_update(CaseWorkflow.merge_into, MergeRequest(
            target=two, requested_by="carol", reason="same actor"))
        assert (await handles[one].result()).status == CaseStatus.merged

        # A late alert of incident 1: to case two, where the incident lives now; not a follow-up of one.
        late = await ingest("late.csv", 13)
        assert (late.cases_opened, late.cases_updated, late.case_ids) == (0, 1, [two]), late
        view = await wait_for(handles[two], lambda v: v.alert_count == 3, "the late alert")
        assert view.routed_from_merged == {one: 1}
        (came,) = [a for a in view.timeline if a.uid == f"guide-{org}-13"]
        assert f"correlated to case {one}, merged ({one} -> {two})" in came.joined_because
        assert f"guide-{org}-13" in store.uids(two)
        assert any(f"routed in: 1 later alert(s) correlated to case {one}" in line for line in merge_lines(view))
        # Its playbook was planned before: the merged host and the late alert's account plan no step, as for
        # any alert that arrives after planning.
        assert len(view.entities) > len(before.entities) + 1  # the merged host and the late alert's account
        assert [s.step_id for s in view.steps] == planned

        # The same alert again: a duplicate here; from another state directory it reaches case two once.
        again = await ingest("late-again.csv", 13)
        assert (again.duplicates, again.cases_opened, again.cases_updated, again.case_ids) == (1, 0, 0, []), again
        await ingest("late-elsewhere.csv", 13, where=elsewhere)
        assert (await handles[two].query(CaseWorkflow.status)).alert_count == 3

        # Case two merged into case three: incident 1's alerts follow the chain.
        await handles[two].execute_update(CaseWorkflow.merge_into, MergeRequest(
            target=three, requested_by="carol", reason="one campaign"))
        assert (await handles[two].result()).status == CaseStatus.merged
        chained = await ingest("chained.csv", 14)
        assert chained.case_ids == [three], chained
        view = await wait_for(handles[three], lambda v: v.routed_from_merged == {one: 1}, "the chained alert")
        (came,) = [a for a in view.timeline if a.uid == f"guide-{org}-14"]
        assert f"({one} -> {two} -> {three})" in came.joined_because
        # Without this chunk's visibility answer (a case merged a moment ago): the ended case says so itself.
        draft = CaseDraft(case_id=one, alert_type="malware", title="late")
        fresh = alert(f"guide-{org}-16", ("host", f"h-{one}"), category="Malware")
        landed, _ = await _signal_with_start(client, CaseWorkflow, draft, [fresh], "signoff-ingest", task_queue)
        assert landed == three
        view = await wait_for(handles[three], lambda v: v.routed_from_merged == {one: 2}, "the direct delivery")

        history = await decode_history(await handles[three].fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history, view)
        (routed,) = ex["routed_from_merged"]
        assert (routed["source"], routed["via"], routed["alerts_sent"]) == (one, [one, two], 2), routed
        assert f"Routed in: 2 later alert(s) correlated to case {one}" in render_explanation(ex)
        assert any(a["uid"] == f"guide-{org}-14" and one in a["joined_because"] for a in ex["alerts"]["alerts"])

        # Case three closes: incident 1's next alert opens its follow-up, as for any closed case.
        await handles[three].execute_update(CaseWorkflow.close, CloseRequest(
            analyst="alice", verdict=Verdict.true_positive, reason="contained"))
        await handles[three].result()
        latest = await ingest("latest.csv", 15)
        assert (latest.cases_opened, latest.case_ids) == (1, [f"{three}-r2"]), latest
        follow_up = client.get_workflow_handle_for(CaseWorkflow.run, f"{three}-r2")
        view = await wait_for(follow_up, lambda v: v.alert_count == 1, "the follow-up")
        assert f"follow-up of closed case {three}" in view.title and view.routed_from_merged == {one: 1}

        await _replays(client, handles[two], handles[three])
        await follow_up.terminate("test done")
    store.close()
    elsewhere.close()


def test_a_merge_target_that_is_a_follow_up_continues_its_own_follow_ups_and_cycles_stop() -> None:
    import pytest

    from signoff.ingest import _next_case

    via: list[str] = []
    # a into x-r2 (itself the follow-up of x): once x-r2 has closed, x-r3 takes them, not x-r2-r2.
    assert _next_case("a", "a", "a", 1, "x-r2", via) == ("x", 2, None) and via == ["a"]
    assert _next_case("a", "x-r2", "x", 2, None, via) == ("x", 3, "x-r2")
    assert _next_case("b", "b", "b", 1, "guide-1-7", []) == ("guide-1-7", 1, None)
    with pytest.raises(RuntimeError, match="without end"):
        _next_case("a", "x-r3", "x", 3, "a", via)  # back to a case already followed
