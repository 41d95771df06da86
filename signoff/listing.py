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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from google.protobuf.internal.containers import MessageMap
from temporalio.api.common.v1 import Payload
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest, ListWorkflowExecutionsResponse
from temporalio.client import Client, WorkflowExecutionStatus

from signoff import search_attributes as sa
from signoff import settings
from signoff.models import CaseStatus

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


def case_query(status: str | None = None, extra: str | None = None) -> str:
    """The visibility query for case workflows, optionally in one status and ANDed with `extra`."""
    clauses = [f"WorkflowType='{CASE_TYPE}'"]
    if status:
        if status not in {s.value for s in CaseStatus}:
            raise ValueError(f"unknown case status {status!r}; use one of: {', '.join(s.value for s in CaseStatus)}")
        clauses.append(f"{sa.CASE_STATUS.name}='{status}'")
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


def _keyword(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _iso(info: WorkflowExecutionInfo) -> str | None:
    if not info.HasField("start_time"):
        return None
    ts = info.start_time
    return datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000).isoformat()


STATUS_NAMES = {int(s): s.name for s in WorkflowExecutionStatus}


def case_row(info: WorkflowExecutionInfo) -> CaseRow:
    """The fields `signoff cases` shows, read straight from the visibility record."""
    fields = info.search_attributes.indexed_fields
    return {
        "case_id": info.execution.workflow_id,
        "status": _keyword(_value(fields, sa.CASE_STATUS.name)) or CaseStatus.open.value,
        "alert_type": _keyword(_value(fields, sa.ALERT_TYPE.name)),
        "severity": _keyword(_value(fields, sa.CASE_SEVERITY.name)),
        "playbook": _keyword(_value(fields, sa.PLAYBOOK.name)),
        "decision": _keyword(_value(fields, sa.DECISION.name)),
        "awaiting_approval": _value(fields, sa.AWAITING_APPROVAL.name) is True,
        "started": _iso(info),
        "workflow_status": STATUS_NAMES.get(info.status),
    }


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


async def case_rows(query: str, *, limit: int | None, each: Callable[[list[dict[str, Any]]], None],
                    with_alerts: bool = False, client: Client | None = None, home: Path | None = None,
                    status: str | None = None, embedded_db: Path | None = None) -> Listing:
    """What `signoff cases` prints: visibility rows plus alert counts from the alert store, passed
    to `each` a page at a time. The `waiting` bench times this.

    With `embedded_db` (the SQLite file of the dev server `client` talks to) and a plain status
    query (`query == case_query(status)`), the rows are read from that server's visibility table
    when the read checks out against the API (signoff.embedded_visibility); else from the API.
    """
    from signoff.alertstore import AlertStore
    from signoff.client import connect

    own_client = client is None
    client = client or await connect()
    pages: AsyncIterator[list[CaseRow]] | None = None
    source = "visibility api"
    if embedded_db is not None and status is not None and query == case_query(status):
        direct = await _embedded_cases(client, embedded_db, status, limit)
        if direct is not None:
            pages = _chunks(direct)
            source = "embedded visibility table"
    if pages is None:
        pages = case_pages(client, query, limit=limit)
    store = AlertStore((home or settings.home()) / "alerts.db")
    listed = 0
    try:
        async for page in pages:
            rows = []
            for case in page:
                row: dict[str, Any] = dict(case)
                row["alert_count"] = store.count(case["case_id"])
                if with_alerts:
                    row["alert_uids"] = store.uids(case["case_id"])
                rows.append(row)
            listed += len(rows)
            each(rows)
    finally:
        store.close()
    if own_client:
        # The SDK's Rust threads finish releasing the last response a moment after it arrives; a
        # process that exits right then aborts in finalisation ("PyGILState_Release", measured 1 in
        # 7 runs of `signoff cases` after raw list calls; 0 in 32 with this pause).
        await asyncio.sleep(0.02)
    return Listing(listed, source)


async def _chunks(rows: list[CaseRow], size: int = PAGE_SIZE) -> AsyncIterator[list[CaseRow]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
