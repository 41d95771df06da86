"""Listing cases from Temporal visibility, fast: what `signoff cases` and the `waiting` bench run.

Temporal visibility is the only source: every row comes from `ListWorkflowExecutions`, read when
the command runs; nothing is cached. Two things make it fast (docs/benchmarks.md, "waiting"):

- the raw gRPC call instead of `Client.list_workflows`: the SDK converts every execution into a
  `WorkflowExecution` (all search attributes, memo, typed values: ~0.2 ms of client CPU per case);
  here only the fields a row shows are read from the protobuf message;
- the next page is requested as soon as a page arrives (pages are chained by their token, so
  they cannot be fetched in parallel), and decoded while the server prepares the next one.

The dev server's own cost is addressed in `signoff.devserver.server_command` (search attribute
cache refreshed on every read: 5 s of server CPU per 10,000 listed executions). What remains is
the server turning each row into protobuf (~0.1 ms of CPU per row): on `signoff dev`'s own server,
`case_rows` reads the same rows from its visibility table instead, checked against the API on
every run (`signoff.embedded_visibility`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from google.protobuf.internal.containers import MessageMap
from temporalio.api.common.v1 import Payload
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest, ListWorkflowExecutionsResponse
from temporalio.client import Client, WorkflowExecutionStatus

from signoff import search_attributes as sa
from signoff import settings
from signoff.models import CaseStatus, CaseView

if TYPE_CHECKING:
    from signoff.alertstore import AlertStore

PAGE_SIZE = 1000  # the most the server returns per page (frontend.visibilityMaxPageSize)
CASE_TYPE = "CaseWorkflow"


class CaseRow(TypedDict):
    """One case as visibility lists it (no workflow query, no history read): `signoff cases` rows.

    A plain dict (10,000 of them are built per listing; a pydantic model per row cost more than
    decoding the row itself)."""

    case_id: str
    status: str  # the CaseStatus search attribute; "open" before the workflow sets one
    alert_type: str | None
    severity: str | None
    playbook: str | None
    decision: str | None
    awaiting_approval: bool
    started: str | None  # ISO 8601, UTC
    workflow_status: str | None  # RUNNING, COMPLETED, ... (temporalio.client.WorkflowExecutionStatus names)
    alert_count: int | None  # the AlertCount search attribute; None for cases started before it existed
    verdict_due: str | None  # ISO 8601, UTC: the VerdictDue search attribute (policy verdict_sla); None: no SLA
    assignee: str | None  # the Assignee search attribute (`signoff assign`); None: nobody
    last_case_status: NotRequired[str]  # only on a case Temporal ended: its CaseStatus then (`ended_by_temporal`)


# A case's own statuses after which it waits for nobody; any other status is a case still at work.
FINAL_STATUSES = frozenset({CaseStatus.closed.value, CaseStatus.auto_closed.value, CaseStatus.merged.value})
# A case that Temporal itself ended (someone terminated or cancelled it, or it timed out or failed)
# keeps the last CaseStatus it set, `awaiting_approval` say, though nothing waits any more: it is
# listed under what ended it (its visibility ExecutionStatus), never in the queue it left.
ENDED_BY_TEMPORAL = {"TERMINATED": "Terminated", "CANCELED": "Canceled", "TIMED_OUT": "TimedOut", "FAILED": "Failed"}
LISTED_AS_ENDED = {name.lower(): visibility for name, visibility in ENDED_BY_TEMPORAL.items()}
STILL_AT_WORK = "ExecutionStatus NOT IN (" + ", ".join(f"'{v}'" for v in ENDED_BY_TEMPORAL.values()) + ")"


def case_query(status: str | None = None, extra: str | None = None) -> str:
    """The visibility query for case workflows, optionally in one status and ANDed with `extra`.
    A status of a case at work lists only cases Temporal still runs (or completed); `terminated`,
    `canceled`, `timed_out` and `failed` list the cases Temporal ended that way."""
    clauses = [f"WorkflowType='{CASE_TYPE}'"]
    if status in LISTED_AS_ENDED:
        clauses.append(f"ExecutionStatus='{LISTED_AS_ENDED[status]}'")
    elif status:
        if status not in {s.value for s in CaseStatus}:
            known = [s.value for s in CaseStatus] + list(LISTED_AS_ENDED)
            raise ValueError(f"unknown case status {status!r}; use one of: {', '.join(known)}")
        clauses.append(f"{sa.CASE_STATUS.name}='{status}'")
        if status not in FINAL_STATUSES:
            clauses.append(STILL_AT_WORK)
    if extra:
        clauses.append(f"({extra})")
    return " AND ".join(clauses)


def _value(fields: MessageMap[str, Payload], key: str) -> object:
    """A search attribute's value (always json/plain: search attributes never pass a payload codec)."""
    payload = fields.get(key)
    if payload is None:
        return None
    data = payload.data
    if data[:1] == b'"' and b"\\" not in data:  # a plain JSON string: most values, decoded without json
        return data[1:-1].decode()
    return _LITERALS[data] if data in _LITERALS else json.loads(data)


_LITERALS: dict[bytes, object] = {b"true": True, b"false": False, b"null": None}
visibility_value = _value  # for other listings of visibility records (`signoff related`)


def _keyword(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _iso(info: WorkflowExecutionInfo) -> str | None:
    if not info.HasField("start_time"):
        return None
    ts = info.start_time
    return datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000).isoformat()


STATUS_NAMES = {int(s): s.name for s in WorkflowExecutionStatus}


def ended_by_temporal(row: CaseRow) -> CaseRow:
    """The row of a case Temporal ended before the case did: its status says what ended it
    (`terminated`, ...), `last_case_status` what the case was doing, and it awaits nothing."""
    ended = row["workflow_status"]
    if ended not in ENDED_BY_TEMPORAL or row["status"] in FINAL_STATUSES:
        return row
    row["last_case_status"] = row["status"]
    row["status"] = ended.lower()
    row["awaiting_approval"] = False
    row["verdict_due"] = None
    return row


def case_row(info: WorkflowExecutionInfo) -> CaseRow:
    """The fields `signoff cases` shows, read straight from the visibility record."""
    fields = info.search_attributes.indexed_fields
    return ended_by_temporal({
        "case_id": info.execution.workflow_id,
        "status": _keyword(_value(fields, sa.CASE_STATUS.name)) or CaseStatus.open.value,
        "alert_type": _keyword(_value(fields, sa.ALERT_TYPE.name)),
        "severity": _keyword(_value(fields, sa.CASE_SEVERITY.name)),
        "playbook": _keyword(_value(fields, sa.PLAYBOOK.name)),
        "decision": _keyword(_value(fields, sa.DECISION.name)),
        "awaiting_approval": _value(fields, sa.AWAITING_APPROVAL.name) is True,
        "started": _iso(info),
        "workflow_status": STATUS_NAMES.get(info.status),
        "alert_count": count_value(_value(fields, sa.ALERT_COUNT.name)),
        "verdict_due": instant_value(_value(fields, sa.VERDICT_DUE.name)),
        "assignee": _keyword(_value(fields, sa.ASSIGNEE.name)),
    })


def instant_value(value: object) -> str | None:
    """A Datetime search attribute's value as ISO 8601 in UTC (the server stores RFC 3339 text)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC).isoformat()
    except ValueError:
        return None


def assignee_query(assignee: str | None, unassigned: bool = False) -> str | None:
    """Cases assigned to `assignee`, or (unassigned) to nobody; None: no filter."""
    if unassigned:
        return f"{sa.ASSIGNEE.name} IS NULL"
    if assignee is None:
        return None
    if not assignee or any(c in assignee for c in "'\"\\"):
        raise ValueError(f"--assignee {assignee!r} is not a name in policy")
    return f"{sa.ASSIGNEE.name}='{assignee}'"


def overdue_query(extra: str | None = None) -> str:
    """Open cases whose verdict is past due (VerdictDue, published under the policy's verdict_sla)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # A case with its verdict may still run (its policy rollback_window): it is not overdue.
    clause = f"ExecutionStatus='Running' AND {sa.VERDICT_DUE.name} < '{now}' AND {sa.CASE_STATUS.name} != 'closed'"
    return f"{clause} AND ({extra})" if extra else clause


def count_value(value: object) -> int | None:
    """An Int search attribute's value (JSON numbers; a bool is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def visibility_pages(client: Client, query: str, *, limit: int | None = None,
                           page_size: int = PAGE_SIZE) -> AsyncIterator[list[WorkflowExecutionInfo]]:
    """Raw pages of `ListWorkflowExecutions` for `query`, at most `limit` executions in all.

    While the caller works on one page, the request for the next is already in flight.
    """
    if limit is not None and limit <= 0:
        return
    service = client.workflow_service

    def fetch(token: bytes, wanted: int) -> asyncio.Task[ListWorkflowExecutionsResponse]:
        request = ListWorkflowExecutionsRequest(namespace=client.namespace, query=query,
                                                page_size=min(page_size, wanted), next_page_token=token)
        return asyncio.ensure_future(service.list_workflow_executions(request))

    remaining = limit if limit is not None else -1  # -1: no limit
    pending: asyncio.Task[ListWorkflowExecutionsResponse] | None = fetch(b"", limit or page_size)
    try:
        while pending is not None:
            response = await pending
            pending = None
            page = list(response.executions)
            if limit is not None:
                page = page[:remaining]
                remaining -= len(page)
            if response.next_page_token and remaining != 0:
                pending = fetch(response.next_page_token, remaining if limit is not None else page_size)
            if page:
                yield page
    finally:
        if pending is not None:
            pending.cancel()


async def case_pages(client: Client, query: str, *, limit: int | None = None,
                     page_size: int = PAGE_SIZE) -> AsyncIterator[list[CaseRow]]:
    """Cases matching `query` (build it with `case_query`), a page of rows at a time."""
    async for page in visibility_pages(client, query, limit=limit, page_size=page_size):
        yield [case_row(info) for info in page]


@dataclass(frozen=True)
class Listing:
    listed: int
    source: str  # "visibility api" or "embedded visibility table" (checked against the api)
    total: int | None = None  # with `total_if_cut`: how many match when `limit` cut the list
    counts_from_cases: int = 0  # cases whose alert count or uids were read from the case workflows (no store record)
    counts_unknown: int = 0  # rows whose alert count could not be read (alert_count None)
    counts_not_asked: int = 0  # of those, rows past the `counts_from_cases` cap (not asked)
    uids_partial: int = 0  # rows whose alert_uids are only the case's capped timeline
    uids_unknown: int = 0  # rows with a known alert count whose alert_uids could not be read (None)
    store: Path | None = None  # the alert store read (None: there is none here)
    problem: str = ""  # why counts are unknown, when some are


async def _embedded_cases(client: Client, db: Path, status: str, limit: int | None) -> list[CaseRow] | None:
    """The cases read from the embedded server's visibility table, if that read is checked exact
    against the server's API right now (same count, same first row); None means use the API."""
    from signoff.embedded_visibility import EmbeddedVisibility, Unavailable

    query = case_query(status)
    try:
        rows = EmbeddedVisibility.open(db, client.namespace).cases(CASE_TYPE, status, limit)
    except Unavailable:
        return None
    count = (await client.count_workflows(query)).count
    first = [case_row(info) async for page in visibility_pages(client, query, limit=1) for info in page]
    expected = count if limit is None else min(count, limit)
    return rows if len(rows) == expected and rows[:1] == first else None


def as_merged(row: dict[str, Any]) -> None:
    """QA9: a merged case's alerts are counted by the case it was merged into (which lists them), so a
    merged row reports `alert_count` 0 (a dashboard summing counts counts each alert once), what it
    sent in `merged_alerts`, no `alert_uids`, and no `verdict_due` (it ended without a verdict)."""
    row["merged_alerts"] = row["alert_count"]
    row["alert_count"] = 0
    row["verdict_due"] = None
    if "alert_uids" in row:
        row["alert_uids"] = []


async def case_rows(query: str, *, limit: int | None, each: Callable[[list[dict[str, Any]]], None],
                    with_alerts: bool = False, client: Client | None = None, home: Path | None = None,
                    status: str | None = None, embedded_db: Path | None = None,
                    counts_from_cases: int = 0, total_if_cut: bool = False) -> Listing:
    """What `signoff cases` prints: visibility rows plus alert counts from the alert store, passed
    to `each` a page at a time. The `waiting` bench times this.

    With `embedded_db` (the SQLite file of the dev server `client` talks to) and a plain status
    query (`query == case_query(status)`), the rows are read from that server's visibility table
    when the read checks out against the API (signoff.embedded_visibility); else from the API.

    The alert store is read only if it exists (a listing never creates one). With
    `counts_from_cases=N`, up to N cases the store has no alert of (cases ingested from another
    directory or host) get their count from the case workflow itself (`CaseFromWorkflow`): only
    those cost a call each (~15 ms of worker time, measured); past N their count is None
    (unknown). With `total_if_cut`, a listing that `limit` cut short reports the total.
    """
    from signoff.client import connect

    own_client = client is None
    client = client or await connect()
    pages: AsyncIterator[list[CaseRow]] | None = None
    source = "visibility api"
    if embedded_db is not None and status is not None and status not in LISTED_AS_ENDED \
            and query == case_query(status):
        direct = await _embedded_cases(client, embedded_db, status, limit)
        if direct is not None:
            pages = _chunks(direct)
            source = "embedded visibility table"
    if pages is None:
        pages = case_pages(client, query, limit=limit)
    store = _existing_store((home or settings.home_path()) / "alerts.db")
    from_cases = CaseFromWorkflow(client, counts_from_cases) if counts_from_cases else None
    listed = partial = 0
    try:
        async for page in pages:
            rows = []
            lacking = []
            for case in page:
                row: dict[str, Any] = dict(case)
                stored = store.count(case["case_id"]) if store is not None else 0
                # The case's own count (AlertCount) is the truth; the store is this directory's copy.
                if row["alert_count"] is None:
                    row["alert_count"] = stored
                if with_alerts:
                    row["alert_uids"] = store.uids(case["case_id"]) if store is not None and stored else []
                if row["status"] == CaseStatus.merged.value:
                    as_merged(row)
                    rows.append(row)
                    continue
                if not stored and from_cases is not None and (with_alerts or not row["alert_count"]):
                    lacking.append(row)
                rows.append(row)
            if lacking and from_cases is not None:
                partial += await from_cases.fill(lacking, with_alerts)
            listed += len(rows)
            each(rows)
    finally:
        if store is not None:
            store.close()
    total = None
    if total_if_cut and limit is not None and listed >= limit:
        total = (await client.count_workflows(query)).count
    if own_client:
        # The SDK's Rust threads finish releasing the last response a moment after it arrives; a
        # process that exits right then aborts in finalisation ("PyGILState_Release", measured 1 in
        # 7 runs of `signoff cases` after raw list calls; 0 in 32 with this pause).
        await asyncio.sleep(0.02)
    return Listing(listed, source, total=total,
                   counts_from_cases=from_cases.answered if from_cases else 0,
                   counts_unknown=from_cases.unknown if from_cases else 0, uids_partial=partial,
                   counts_not_asked=from_cases.over_cap if from_cases else 0,
                   uids_unknown=from_cases.uids_unknown if from_cases else 0,
                   store=store.path if store is not None else None,
                   problem=from_cases.problem if from_cases else "")


def _existing_store(path: Path) -> AlertStore | None:
    """The alert store at `path` if there is one; None otherwise (a read creates no empty store)."""
    from signoff.alertstore import AlertStore

    if not path.is_file() or path.stat().st_size == 0:
        return None
    return AlertStore(path)


# Cases asked per listing. A `status` query costs ~15 ms when the worker no longer caches the case
# (it replays the history): `signoff bench -s waiting -n 2000`, no alert store, 1,000 asked: the
# `signoff cases` run took 18.9 s instead of ~2.5 s. 250 bounds that to ~4 s and covers a demo.
FROM_CASES_AT_MOST = 250


class CaseFromWorkflow:
    """Alert counts (and the timeline's alert uids) read from the case workflows themselves.

    For cases the local alert store has no record of. A running case answers its `status` query
    (a worker must be running); a completed one is read from its result (the server answers).
    After one query times out (no worker), the remaining running cases are not asked: their
    count is unknown (None), said once on stderr by the CLI. At most `at_most` cases are asked
    per listing (`FROM_CASES_AT_MOST`); past that, counts are None. Cases that publish their
    count (`AlertCount`: every case started since it exists) are asked only for their alert uids
    (`--with-alerts`); their count is exact at any size.
    """

    CONCURRENCY = 32
    QUERY_TIMEOUT = timedelta(seconds=5)

    def __init__(self, client: Client, at_most: int = FROM_CASES_AT_MOST) -> None:
        self.client = client
        self.at_most = at_most
        self.asked = 0
        self.answered = 0
        self.over_cap = 0
        self.unknown = 0
        self.uids_unknown = 0
        self.problem = ""
        self._no_worker = False
        self._gate = asyncio.Semaphore(self.CONCURRENCY)

    async def fill(self, rows: list[dict[str, Any]], with_alerts: bool) -> int:
        """Set alert_count (where visibility had none) and alert_uids on `rows` in place, from the
        cases themselves; returns rows with partial uids."""
        room = max(self.at_most - self.asked, 0)
        asked, skipped = rows[:room], rows[room:]
        self.asked += len(asked)
        views: list[CaseView | None] = list(await asyncio.gather(*(self._view(row) for row in asked)))
        partial = 0
        for i, (row, view) in enumerate(zip(rows, views + [None] * len(skipped), strict=True)):
            known = bool(row["alert_count"])  # from AlertCount: only the uids are missing
            if view is None:
                if known:
                    self.uids_unknown += 1
                else:
                    self.unknown += 1
                    self.over_cap += i >= len(asked)
                    row["alert_count"] = None
                if with_alerts:
                    row["alert_uids"] = None
                continue
            self.answered += 1
            if not known:
                row["alert_count"] = view.alert_count
            if with_alerts:
                uids = [a.uid for a in view.timeline]
                row["alert_uids"] = uids
                if len(uids) < row["alert_count"]:
                    partial += 1
        return partial

    async def _view(self, row: dict[str, Any]) -> CaseView | None:
        from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError
        from temporalio.service import RPCError, RPCStatusCode

        from signoff.case_view import read_case_view

        completed = row["workflow_status"] == "COMPLETED"
        async with self._gate:
            try:
                if not completed and self._no_worker:
                    return None
                return await read_case_view(self.client, row["case_id"], completed=completed,
                                            timeout=None if completed else self.QUERY_TIMEOUT)
            except RPCError as exc:
                if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED) \
                        or "timeout" in exc.message.lower():  # the SDK's own rpc_timeout: "Timeout expired"
                    self._no_worker = True
                    self.problem = (f"the case workflows did not answer their status query within "
                                    f"{self.QUERY_TIMEOUT.total_seconds():.0f} s: is a worker running?")
                else:
                    self.problem = self.problem or f"reading a case failed: {exc.message}"
                return None
            except (WorkflowQueryFailedError, WorkflowFailureError) as exc:
                self.problem = self.problem or f"reading case {row['case_id']} failed: {exc}"
                return None
            except Exception as exc:  # a result that is not a CaseView (another workflow type's)
                self.problem = self.problem or f"reading case {row['case_id']} failed: {exc}"
                return None


async def _chunks(rows: list[CaseRow], size: int = PAGE_SIZE) -> AsyncIterator[list[CaseRow]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
