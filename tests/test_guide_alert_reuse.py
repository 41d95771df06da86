"""GUIDE re-uses an AlertId across incidents of one organisation: in each incident it is that
incident's evidence, so it belongs to that incident's case, whichever file brought it.

Found by QA: with incidents A and B sharing AlertId X, one file gave both cases X, while two files
ingested one after the other counted B's X as a duplicate of A's (the alert store knew the uid)
and, X being B's only alert, never opened B's case. Idempotence still holds per incident: the same
file again, or a file overlapping it, opens nothing and counts duplicates.

Real dev server, real worker, the real `signoff ingest` / `signoff cases` processes and `ingest_path`.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from signoff.alertstore import AlertStore
from signoff.ingest import guide_chunks, ingest_path
from signoff.listing import case_query, case_rows
from signoff.models import CaseStatus
from signoff.sources.guide import GUIDE_COLUMNS, read_guide
from signoff.worker import build_worker
from tests.casekit import wait_for
from tests.test_qa_ingest_listing import GUIDE_SLICE, _env, _signoff, _unique_org
from workflows.case import CaseWorkflow

# In tests/data/guide_slice.csv, org 7 uses AlertId 964 in incident 450 (one of its 5 alerts) and
# in incident 3870 (its only alert).
SLICE_ORG, X, A, B = "7", "964", "450", "3870"


def _slice_rows(incident: str, org: int) -> list[dict[str, str]]:
    """The slice's rows of one incident of SLICE_ORG, moved to `org` (keeps cases apart on the server)."""
    with GUIDE_SLICE.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (r["OrgId"], r["IncidentId"]) == (SLICE_ORG, incident)]
    return [{**r, "OrgId": str(org)} for r in rows]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GUIDE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _expected(org: int) -> dict[str, list[str]]:
    """case id → its GUIDE alert uids, from the slice itself."""
    out: dict[str, list[str]] = {}
    for incident in (A, B):
        alert_ids = {r["AlertId"] for r in _slice_rows(incident, org)}
        out[f"guide-{org}-{incident}"] = sorted(f"guide-{org}-{a}" for a in alert_ids)
    return out


def test_the_slice_still_has_the_reused_alert() -> None:
    rows_a, rows_b = _slice_rows(A, 1), _slice_rows(B, 1)
    assert X in {r["AlertId"] for r in rows_a} and len({r["AlertId"] for r in rows_a}) == 5
    assert {r["AlertId"] for r in rows_b} == {X}


def test_the_store_keeps_a_per_case_uid_once_per_case_and_a_global_uid_once(tmp_path: Path) -> None:
    rows = _slice_rows(A, 5) + _slice_rows(B, 5)
    x = next(a for i in read_guide(_write(tmp_path / "both.csv", rows)).incidents for a in i.alerts
             if a.uid == f"guide-5-{X}")
    store = AlertStore(tmp_path / "alerts.db")
    assert store.put_assigned([("c1", x, None), ("c2", x, None)], per_case=True) == 2
    assert store.put_assigned([("c1", x, None), ("c2", x, None)], per_case=True) == 0
    assert store.put_assigned([("c3", x, None)]) == 0  # by default (OCSF) a uid is global
    assert store.cases_holding([x.uid, "nope"]) == {x.uid: {"c1", "c2"}}
    assert store.case_of(x.uid) == "c1" and store.cases_of([x.uid]) == {x.uid: "c1"}
    assert store.count() == 2 and store.count("c2") == 1 and store.uids("c2") == [x.uid]
    assert store.alerts("c2") == [x] and store.summary("c2").alert_count == 1
    assert store.known_cases(["c1", "c2", "c3"]) == {"c1", "c2"} and store.case_ids() == ["c1", "c2"]
    assert sorted(store.iter_assignments()) == [(x.uid, "c1"), (x.uid, "c2")]
    store.close()


def test_guide_duplicates_are_per_incident_and_follow_ups_count(tmp_path: Path) -> None:
    data = _write(tmp_path / "b.csv", _slice_rows(B, 5))
    x = f"guide-5-{X}"
    store = AlertStore(":memory:")
    alert = next(a for i in read_guide(data).incidents for a in i.alerts)
    store.put_many(f"guide-5-{A}", [alert])  # X known, for incident A only
    chunk = next(guide_chunks(data, store))
    assert chunk.duplicates == 0 and [a.uid for a in chunk.drafts[f"guide-5-{B}"].alerts] == [x]
    store.put_assigned([(f"guide-5-{B}-r2", alert, None)], per_case=True)  # B's follow-up took it
    again = next(guide_chunks(data, store))
    assert (again.accepted, again.duplicates, again.drafts) == (1, 1, {})


async def test_an_alert_id_reused_by_another_incident_lands_in_that_incidents_case(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    client = dev_env.client
    org, other = _unique_org(), _unique_org()
    while other == org:
        other = _unique_org()
    rows_a, rows_b = _slice_rows(A, org), _slice_rows(B, org)
    first = _write(tmp_path / "incident-a.csv", rows_a)
    second = _write(tmp_path / "incident-b.csv", rows_b)
    both = _write(tmp_path / "both.csv", rows_a + rows_b)
    case_a, case_b = f"guide-{org}-{A}", f"guide-{org}-{B}"
    x = f"guide-{org}-{X}"
    expected = _expected(org)
    assert x in expected[case_a] and expected[case_b] == [x]

    home = tmp_path / "soc" / ".signoff"
    env = _env(dev_env, task_queue, home)

    async def ingest(path: Path) -> dict[str, Any]:
        code, out, err = await _signoff("ingest", str(path), "--format", "guide", "--json", env=env)
        assert code == 0, err
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary

    def counts(s: dict[str, Any]) -> tuple[int, ...]:
        return s["accepted"], s["rejected"], s["duplicates"], s["cases_opened"], s["cases_updated"]

    started = [case_a, case_b, f"guide-{other}-{A}", f"guide-{other}-{B}"]
    async with build_worker(client, task_queue):
        try:
            # Two files, one after the other, into one state directory.
            s1 = await ingest(first)
            assert counts(s1) == (len(rows_a), 0, 0, 1, 0), s1
            s2 = await ingest(second)
            # Was (1, 0, 1, 0, 0): X counted as a duplicate of incident A's, B's case never opened.
            assert counts(s2) == (len(rows_b), 0, 0, 1, 0), s2

            # B's case holds X, and only X; A's case is unchanged.
            view_b = await wait_for(client.get_workflow_handle_for(CaseWorkflow.run, case_b),
                                    lambda v: v.status != CaseStatus.triage, "triaged")
            assert view_b.alert_count == 1 and [a.uid for a in view_b.timeline] == [x]
            view_a = await wait_for(client.get_workflow_handle_for(CaseWorkflow.run, case_a),
                                    lambda v: v.status != CaseStatus.triage, "triaged")
            assert view_a.alert_count == len(expected[case_a])
            assert sorted(a.uid for a in view_a.timeline) == expected[case_a]

            # The counts add up: every row accepted once, every alert stored once per incident.
            assert s1["accepted"] + s2["accepted"] == len(rows_a) + len(rows_b)
            store = AlertStore(home / "alerts.db")
            try:
                assert {c: sorted(store.uids(c)) for c in expected} == expected
                assert store.count() == len(expected[case_a]) + len(expected[case_b])
                assert store.summary(case_b).alert_count == 1
            finally:
                store.close()

            # `signoff cases --json --with-alerts`: GUIDE alert ids, X in both cases.
            code, out, err = await _signoff("cases", "--json", "--with-alerts", "--query",
                                            f"TaskQueue='{task_queue}'", env=env)
            assert code == 0, err
            listed = {r["case_id"]: r for r in map(json.loads, out.splitlines()) if r}
            assert {c: (r["alert_count"], sorted(r["alert_uids"])) for c, r in listed.items()} == \
                {c: (len(u), u) for c, u in expected.items()}

            # Idempotent per incident: either file again, or one file holding both, opens nothing.
            for again, rows in ((first, rows_a), (second, rows_b), (both, rows_a + rows_b), (second, rows_b)):
                s = await ingest(again)
                assert counts(s) == (len(rows), 0, len(rows), 0, 0), (again.name, s)

            # One file holding both incidents (another org, a fresh state directory): the same cases.
            moved = {r["AlertId"]: r for r in rows_a + rows_b}
            assert len(moved) == len(expected[case_a])  # X once in the dict, twice in the rows
            one_file = _write(tmp_path / "both-other.csv", [{**r, "OrgId": str(other)} for r in rows_a + rows_b])
            fresh = AlertStore(tmp_path / "fresh" / "alerts.db")
            try:
                one = await ingest_path(client, one_file, "guide", store=fresh, task_queue=task_queue)
                assert (one.accepted, one.duplicates, one.cases_opened, one.cases_updated) == \
                    (len(rows_a) + len(rows_b), 0, 2, 0), one
                assert sorted(one.case_ids) == sorted([f"guide-{other}-{A}", f"guide-{other}-{B}"])
                expected_other = _expected(other)
                assert {c: sorted(fresh.uids(c)) for c in expected_other} == expected_other
                listed_other: list[dict[str, Any]] = []
                scope = "WorkflowId IN (" + ", ".join(f"'{c}'" for c in expected_other) + ")"
                await case_rows(case_query(None, scope), limit=None, each=listed_other.extend, client=client,
                                home=tmp_path / "fresh", with_alerts=True)
                assert {r["case_id"]: sorted(r["alert_uids"]) for r in listed_other} == expected_other
                # ... and re-ingesting it, or just B's rows, is all duplicates.
                again_one = await ingest_path(client, one_file, "guide", store=fresh, task_queue=task_queue)
                assert (again_one.duplicates, again_one.cases_opened, again_one.cases_updated) == \
                    (len(rows_a) + len(rows_b), 0, 0)
                only_b = _write(tmp_path / "b-other.csv", [{**r, "OrgId": str(other)} for r in rows_b])
                again_b = await ingest_path(client, only_b, "guide", store=fresh, task_queue=task_queue)
                assert (again_b.duplicates, again_b.cases_opened, again_b.cases_updated) == (len(rows_b), 0, 0)
                view = await wait_for(client.get_workflow_handle_for(CaseWorkflow.run, f"guide-{other}-{B}"),
                                      lambda v: v.status != CaseStatus.triage, "triaged")
                assert view.alert_count == 1 and [a.uid for a in view.timeline] == [f"guide-{other}-{X}"]
            finally:
                fresh.close()
        finally:
            for case_id in started:
                # Not started (an assertion failed first) or already closed: nothing to end.
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(case_id).terminate("test over")
