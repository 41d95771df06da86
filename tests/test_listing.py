"""The fast case listing (`signoff.listing`, `signoff cases`) returns exactly what visibility holds.

A real dev server on a SQLite file, started as `signoff dev` starts it (signoff.devserver flags:
search attributes registered at start, no forced cache refresh), holds a few hundred workflows
in mixed states: case workflows waiting in several statuses, closed ones, ones that never set a
status, and another workflow type with the same `CaseStatus`. The listing must return exactly
the right set, page after page, with the same field values the SDK's `list_workflows` decodes.
The stand-in workflows only upsert search attributes: what is under test is the visibility read.
Correctness only; the timing is `signoff bench -s waiting` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecution
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from signoff import search_attributes as sa
from signoff.alertstore import AlertStore
from signoff.embedded_visibility import EmbeddedVisibility, embedded_db
from signoff.listing import assignee_query, case_pages, case_query, case_rows, overdue_query
from signoff.models import Alert
from tests.reliability_kit import SqliteDevServer, gather_limited

ALERT_TYPES = ("malware", "compromised_account", "phishing")
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Spec:
    """One stand-in workflow: its type, the status it upserts (None: none) and whether it ends."""

    case_id: str
    workflow_type: str
    status: str | None
    closes: bool
    alert_type: str
    severity: str
    alerts: int | None = None  # the AlertCount it publishes (None: a case from before AlertCount)
    due: str | None = None  # the VerdictDue it publishes, ISO 8601 (None: no verdict SLA)
    owner: str | None = None  # the Assignee it publishes (None: nobody)


def _attrs(spec: Spec) -> list[Any]:
    attrs: list[Any] = [sa.ALERT_TYPE.value_set(spec.alert_type), sa.CASE_SEVERITY.value_set(spec.severity),
                        sa.PLAYBOOK.value_set(f"pb-{spec.alert_type}"), sa.CONFIDENCE.value_set(0.25),
                        sa.EXECUTED_ACTIONS.value_set(["notify_user"])]
    if spec.status is not None:
        attrs += [sa.CASE_STATUS.value_set(spec.status), sa.DECISION.value_set("needs_approval"),
                  sa.AWAITING_APPROVAL.value_set(spec.status == "awaiting_approval")]
    if spec.alerts is not None:
        attrs.append(sa.ALERT_COUNT.value_set(spec.alerts))
    if spec.due is not None:
        attrs.append(sa.VERDICT_DUE.value_set(datetime.fromisoformat(spec.due)))
    if spec.owner is not None:
        attrs.append(sa.ASSIGNEE.value_set(spec.owner))
    return attrs


class _StandIn:
    def __init__(self) -> None:
        self.released = False

    async def _run(self, spec: Spec) -> None:
        workflow.upsert_search_attributes(_attrs(spec))
        if not spec.closes:
            await workflow.wait_condition(lambda: self.released)

    @workflow.signal
    def release(self) -> None:
        self.released = True


@workflow.defn(name="CaseWorkflow")
class StandInCase(_StandIn):
    @workflow.run
    async def run(self, spec: Spec) -> None:
        await self._run(spec)


@workflow.defn(name="OtherWorkflow")
class StandInOther(_StandIn):
    @workflow.run
    async def run(self, spec: Spec) -> None:
        await self._run(spec)


def _specs(tag: str) -> list[Spec]:
    mix = ([("CaseWorkflow", "awaiting_approval", False)] * 130 + [("CaseWorkflow", "contained", False)] * 50
           + [("CaseWorkflow", "closed", True)] * 30 + [("CaseWorkflow", None, False)] * 20
           + [("OtherWorkflow", "awaiting_approval", False)] * 20)
    # Contained and closed cases publish AlertCount every other one (i % 7 + 1 alerts); the rest,
    # like cases started before AlertCount existed, do not. A verdict SLA: every fifth one is past
    # due (two hours ago, to the second), the next one due in two days, the rest have none.
    now = datetime.now(UTC).replace(microsecond=0)
    dues = {0: (now - timedelta(hours=2)).isoformat(), 1: (now + timedelta(days=2)).isoformat()}
    return [Spec(f"{tag}-{i:04d}-{uuid.uuid4().hex[:6]}", wtype, status, closes,
                 ALERT_TYPES[i % len(ALERT_TYPES)], SEVERITIES[i % len(SEVERITIES)],
                 i % 7 + 1 if status in ("contained", "closed") and i % 2 == 0 else None, dues.get(i % 5),
                 ("alice", "bob", None)[i % 3])
            for i, (wtype, status, closes) in enumerate(mix)]


@dataclass
class Estate:
    client: Client
    address: str
    task_queue: str
    specs: list[Spec]
    home: Path
    server_pid: int

    @property
    def scope(self) -> str:
        return f"TaskQueue='{self.task_queue}'"

    def cases(self, status: str | None = None) -> set[str]:
        return {s.case_id for s in self.specs
                if s.workflow_type == "CaseWorkflow" and (status is None or s.status == status)}


@pytest.fixture(scope="module")
async def estate(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Estate]:
    home = tmp_path_factory.mktemp("listing")
    server = SqliteDevServer(home)
    client = await server.start()
    task_queue = f"listing-{uuid.uuid4().hex[:8]}"
    specs = _specs("lst")
    try:
        async with Worker(client, task_queue=task_queue, workflows=[StandInCase, StandInOther],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            await gather_limited(
                (client.start_workflow(s.workflow_type, s, id=s.case_id, task_queue=task_queue) for s in specs),
                limit=32,
            )
            scope = f"TaskQueue='{task_queue}'"
            # Every stand-in has upserted (the closed ones have also completed) before anything is listed.
            for query, want in ((f"{scope} AND AlertType IS NOT NULL", len(specs)),
                                (f"{scope} AND ExecutionStatus='Completed'", sum(s.closes for s in specs))):
                for _ in range(600):
                    if (await client.count_workflows(query)).count == want:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"visibility never showed {want} workflows for {query!r}")
            assert server.proc is not None
            yield Estate(client, server.address, task_queue, specs, home, server.proc.pid)
    finally:
        await server.stop()


async def _fast_ids(estate: Estate, status: str | None, *, limit: int | None = None, page_size: int = 17) -> list[str]:
    query = case_query(status, estate.scope)
    return [row["case_id"] async for page in case_pages(estate.client, query, limit=limit, page_size=page_size)
            for row in page]


@pytest.mark.parametrize("status", ["awaiting_approval", "contained", "closed", None])
async def test_each_status_lists_exactly_its_cases(estate: Estate, status: str | None) -> None:
    ids = await _fast_ids(estate, status)
    assert len(ids) == len(set(ids)), "a case was listed twice across pages"
    assert set(ids) == estate.cases(status)
    # ... and the SDK, reading the same visibility, agrees.
    sdk = {wf.id async for wf in estate.client.list_workflows(case_query(status, estate.scope))}
    assert set(ids) == sdk


async def test_overdue_lists_exactly_the_open_cases_past_their_verdict_due(estate: Estate) -> None:
    """`signoff cases --overdue`: running case workflows whose VerdictDue has passed; not the closed
    ones past due, not the ones due later, not those without an SLA."""
    now = datetime.now(UTC)
    # (A real case publishes VerdictDue only once it has a status; closed ones are not overdue.)
    want = {s.case_id for s in estate.specs if s.workflow_type == "CaseWorkflow" and not s.closes
            and s.status not in (None, "closed") and s.due is not None and datetime.fromisoformat(s.due) < now}
    rows = [row async for page in case_pages(estate.client, case_query(None, overdue_query(estate.scope)), page_size=17)
            for row in page]
    assert want and {r["case_id"] for r in rows} == want and len(rows) == len(want)
    assert all(r["workflow_status"] == "RUNNING" and datetime.fromisoformat(str(r["verdict_due"])) < now for r in rows)
    closed_past_due = {s.case_id for s in estate.specs if s.closes and s.due is not None and s.due < now.isoformat()}
    assert closed_past_due and not closed_past_due & {r["case_id"] for r in rows}
    # With a status too (the CLI's `--status contained --overdue`).
    contained = [row async for page in case_pages(estate.client, case_query("contained", overdue_query(estate.scope)))
                 for row in page]
    assert {r["case_id"] for r in contained} == {c for c in want if c in estate.cases("contained")}


async def test_assignee_and_unassigned_list_exactly_those_cases(estate: Estate) -> None:
    """`signoff cases --assignee bob` / `--unassigned`."""
    for owner, unassigned in (("bob", False), (None, True)):
        query = case_query(None, f"{estate.scope} AND {assignee_query(owner, unassigned)}")
        rows = [row async for page in case_pages(estate.client, query, page_size=17) for row in page]
        want = {s.case_id for s in estate.specs if s.workflow_type == "CaseWorkflow" and s.owner == owner}
        assert want and {r["case_id"] for r in rows} == want and len(rows) == len(want)
        assert all(r["assignee"] == owner for r in rows)
    with pytest.raises(ValueError):
        assignee_query("bob' OR 1=1 OR Assignee='x")


async def test_other_workflow_types_are_not_cases(estate: Estate) -> None:
    others = {s.case_id for s in estate.specs if s.workflow_type != "CaseWorkflow"}
    assert others and not others & set(await _fast_ids(estate, "awaiting_approval"))


async def test_limit_stops_at_exactly_that_many(estate: Estate) -> None:
    for limit in (1, 17, 50, 129, 130, 131):
        ids = await _fast_ids(estate, "awaiting_approval", limit=limit)
        assert len(ids) == min(limit, 130) == len(set(ids))
        assert set(ids) <= estate.cases("awaiting_approval")


def _sdk_row(wf: WorkflowExecution) -> dict[str, Any]:
    """What `signoff cases` printed when it read `Client.list_workflows` (the former code)."""
    attrs = wf.typed_search_attributes
    return {
        "case_id": wf.id,
        "status": attrs.get(sa.CASE_STATUS) or "open",
        "alert_type": attrs.get(sa.ALERT_TYPE),
        "severity": attrs.get(sa.CASE_SEVERITY),
        "playbook": attrs.get(sa.PLAYBOOK),
        "decision": attrs.get(sa.DECISION),
        "awaiting_approval": bool(attrs.get(sa.AWAITING_APPROVAL)),
        "started": wf.start_time.isoformat() if wf.start_time else None,
        "workflow_status": wf.status.name if wf.status else None,
        "alert_count": attrs.get(sa.ALERT_COUNT),
        "verdict_due": due.astimezone(UTC).isoformat() if (due := attrs.get(sa.VERDICT_DUE)) else None,
        "assignee": attrs.get(sa.ASSIGNEE),
    }


async def test_rows_carry_the_same_values_as_the_sdk_decodes(estate: Estate) -> None:
    query = case_query(None, estate.scope)
    sdk = {wf.id: _sdk_row(wf) async for wf in estate.client.list_workflows(query)}
    fast = {row["case_id"]: dict(row) async for page in case_pages(estate.client, query, page_size=64) for row in page}
    assert fast == sdk
    by_id = {s.case_id: s for s in estate.specs}
    for case_id, row in fast.items():
        spec = by_id[case_id]
        assert row["status"] == (spec.status or "open")
        assert (row["alert_type"], row["severity"]) == (spec.alert_type, spec.severity)
        assert row["awaiting_approval"] is (spec.status == "awaiting_approval")
        assert row["workflow_status"] == ("COMPLETED" if spec.closes else "RUNNING")
        assert datetime.fromisoformat(str(row["started"])).tzinfo == UTC


async def test_case_rows_add_alert_counts_from_the_store(estate: Estate, tmp_path: Path) -> None:
    contained = sorted(estate.cases("contained"))
    with AlertStore(tmp_path / "alerts.db") as store:
        for n, case_id in enumerate(contained[:3], start=1):
            store.put_many(case_id, [_alert(f"{case_id}-a{k}") for k in range(n)])
    pages: list[list[dict[str, Any]]] = []
    listing = await case_rows(case_query("contained", estate.scope), limit=None, each=pages.append,
                              with_alerts=True, client=estate.client, home=tmp_path)
    rows = {r["case_id"]: r for page in pages for r in page}
    assert listing.listed == len(rows) == 50 and listing.source == "visibility api"
    published = {s.case_id: s.alerts for s in estate.specs if s.alerts is not None}
    assert 0 < len(published.keys() & set(contained)) < 50
    for n, case_id in enumerate(contained[:3], start=1):
        # The case's own AlertCount wins over this directory's store; the uids come from the store.
        assert rows[case_id]["alert_count"] == published.get(case_id, n)
        assert rows[case_id]["alert_uids"] == [f"{case_id}-a{k}" for k in range(n)]
    for case_id in contained[3:]:
        assert rows[case_id]["alert_count"] == published.get(case_id, 0) and rows[case_id]["alert_uids"] == []


def _alert(uid: str) -> Alert:
    return Alert(uid=uid, source="test", rule="r", time=datetime(2026, 1, 1, tzinfo=UTC), title="t", severity="high")


async def _signoff(estate: Estate, home: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": estate.address, "SIGNOFF_HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signoff.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_signoff_cases_json_lists_exactly_the_waiting_cases(estate: Estate, tmp_path: Path) -> None:
    waiting = sorted(estate.cases("awaiting_approval"))
    with AlertStore(tmp_path / "alerts.db") as store:
        store.put_many(waiting[0], [_alert("uid-1"), _alert("uid-2")])
    code, out, err = await _signoff(estate, tmp_path, "cases", "--status", "awaiting_approval", "--json",
                                    "--limit", "0", "--with-alerts", "--query", estate.scope)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert sorted(r["case_id"] for r in rows) == waiting
    assert len(rows) == 130
    assert all(r["status"] == "awaiting_approval" for r in rows)
    first = next(r for r in rows if r["case_id"] == waiting[0])
    assert (first["alert_count"], first["alert_uids"]) == (2, ["uid-1", "uid-2"])
    # The stand-ins have no alerts in the store and no `status` query to ask: unknown, never a wrong 0.
    assert all((r["alert_count"], r["alert_uids"]) == (None, None) for r in rows if r["case_id"] != waiting[0])
    assert "alert count unknown (null) for 129 cases" in err

    code, out, err = await _signoff(estate, tmp_path, "cases", "--status", "awaiting_approval", "--json",
                                    "--limit", "7", "--query", estate.scope)
    assert code == 0, err
    limited = [json.loads(line)["case_id"] for line in out.splitlines() if line.strip()]
    assert len(limited) == len(set(limited)) == 7 and set(limited) <= set(waiting)


async def test_signoff_cases_refuses_an_unknown_status(estate: Estate, tmp_path: Path) -> None:
    code, out, err = await _signoff(estate, tmp_path, "cases", "--status", "waiting' OR 'x'='x", "--json")
    assert code != 0 and not out
    assert "unknown case status" in err


# ---------------------------------------------------------------- the embedded server's own table


def _all_waiting(estate: Estate) -> set[str]:
    """Every CaseWorkflow waiting for approval on this server (the direct read has no TaskQueue scope)."""
    return estate.cases("awaiting_approval")


async def test_embedded_db_is_found_only_for_the_server_that_serves_the_address(estate: Estate) -> None:
    assert embedded_db(estate.address, estate.server_pid) == estate.home / "temporal.db"
    host, _, port = estate.address.rpartition(":")
    assert embedded_db(f"{host}:{int(port) + 1}", estate.server_pid) is None  # another port
    assert embedded_db(f"10.0.0.1:{port}", estate.server_pid) is None  # not loopback
    assert embedded_db(estate.address, os.getpid()) is None  # not a dev server


@pytest.mark.parametrize("status", ["awaiting_approval", "contained", "closed"])
async def test_embedded_table_rows_equal_the_api_rows_in_order(estate: Estate, status: str) -> None:
    table = EmbeddedVisibility.open(estate.home / "temporal.db", estate.client.namespace)
    assert table.columns[sa.CASE_STATUS.name].startswith("Keyword")
    direct = table.cases("CaseWorkflow", status, None)
    api = [row async for page in case_pages(estate.client, case_query(status)) for row in page]
    assert direct == api
    assert {r["case_id"] for r in direct} == estate.cases(status)
    assert table.cases("CaseWorkflow", status, 7) == api[:7]


async def test_case_rows_read_the_table_when_it_checks_out(estate: Estate, tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = []
    listing = await case_rows(case_query("awaiting_approval"), limit=None, each=rows.extend, client=estate.client,
                              home=tmp_path, status="awaiting_approval", embedded_db=estate.home / "temporal.db")
    assert listing.source == "embedded visibility table"
    assert listing.listed == len(rows) and {r["case_id"] for r in rows} == _all_waiting(estate)
    assert all(r["alert_count"] == 0 for r in rows)


async def test_cases_take_exact_counts_from_alert_count_without_any_store(estate: Estate, tmp_path: Path) -> None:
    """No alert store here: counts come from the cases' AlertCount, the embedded table and the API
    agree, and only the uids (which the stand-ins cannot give) are unknown."""
    (tmp_path / "temporal.pid").write_text(str(estate.server_pid))
    contained = estate.cases("contained")
    published = {s.case_id: s.alerts for s in estate.specs if s.case_id in contained and s.alerts is not None}
    for extra in ((), ("--query", estate.scope)):  # embedded table (all on this server), then the API
        code, out, err = await _signoff(estate, tmp_path, "cases", "--status", "contained", "--json", "--limit", "0",
                                        "--with-alerts", *extra)
        assert code == 0, err
        rows = {r["case_id"]: r for r in map(json.loads, filter(str.strip, out.splitlines()))}
        mine = {c: (r["alert_count"], r["alert_uids"]) for c, r in rows.items() if c in contained}
        assert mine == {c: (published.get(c), None) for c in contained}
        assert f"alert uids unknown (null) for {len(published)} cases" in err
        assert f"alert count unknown (null) for {len(contained) - len(published)} cases" in err
    assert not (tmp_path / "alerts.db").exists()


async def test_a_table_that_disagrees_with_the_api_is_not_used(estate: Estate, tmp_path: Path) -> None:
    """A copy of the database missing one waiting case: the check (count, first row) rejects it."""
    stale = tmp_path / "stale.db"
    source = sqlite3.connect(f"file:{estate.home / 'temporal.db'}?mode=ro", uri=True)
    target = sqlite3.connect(stale)
    with closing(source), closing(target):
        source.backup(target)
        victim = sorted(_all_waiting(estate))[0]
        target.execute("DELETE FROM executions_visibility WHERE workflow_id = ?", (victim,))
        target.commit()
    rows: list[dict[str, Any]] = []
    listing = await case_rows(case_query("awaiting_approval"), limit=None, each=rows.extend, client=estate.client,
                              home=tmp_path, status="awaiting_approval", embedded_db=stale)
    assert listing.source == "visibility api"
    assert {r["case_id"] for r in rows} == _all_waiting(estate)


async def test_signoff_cases_on_the_embedded_server_lists_exactly_the_waiting_cases(
        estate: Estate, tmp_path: Path) -> None:
    """With `signoff dev`'s pid file in SIGNOFF_HOME, `signoff cases --status` may read the table."""
    (tmp_path / "temporal.pid").write_text(str(estate.server_pid))
    code, out, err = await _signoff(estate, tmp_path, "cases", "--status", "awaiting_approval", "--json",
                                    "--limit", "0")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == len({r["case_id"] for r in rows}) == len(_all_waiting(estate))
    assert {r["case_id"] for r in rows} == _all_waiting(estate)
    assert all(r["status"] == "awaiting_approval" and r["alert_count"] is None for r in rows)  # stand-ins: unknown
