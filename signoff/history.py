"""Workflow histories, decoded: the one source `explain`, the audit export and the governance report read.

A history is fetched live from Temporal or, once Temporal has deleted it (the dev server keeps
closed workflows 24 h), read back from the archive that `archive_case` wrote when the case closed.
Payloads are decoded with the client's data converter (so encrypted histories decode when the
codec key is configured) into plain JSON values; callers validate them into models as needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter, decode_search_attributes
from temporalio.service import RPCError, RPCStatusCode

from signoff import settings


@dataclass
class ActivityRun:
    name: str
    event_id: int
    scheduled_at: datetime
    input: Any = None
    completed_at: datetime | None = None
    result: Any = None
    failure: str = ""
    attempt: int = 1
    local: bool = False  # a local activity: recorded as a marker, result only (no input)


@dataclass
class UpdateRun:
    name: str
    update_id: str
    event_id: int
    accepted_at: datetime
    identity: str = ""
    args: list[Any] = field(default_factory=list)
    completed_at: datetime | None = None
    result: Any = None
    failure: str = ""


@dataclass
class SignalRun:
    name: str
    event_id: int
    at: datetime
    identity: str = ""
    args: list[Any] = field(default_factory=list)


@dataclass
class ResetRecord:
    """A `temporal workflow reset` that made this run (QA7): the history up to `event_id` was copied from
    `base_run_id`; what that run recorded after it (an approval, a rejection, an action) is not here."""

    at: datetime
    event_id: int
    base_run_id: str
    new_run_id: str
    reason: str


@dataclass
class DecodedHistory:
    workflow_id: str
    run_id: str
    workflow_type: str
    started_at: datetime
    start_identity: str = ""
    start_args: list[Any] = field(default_factory=list)
    closed_at: datetime | None = None
    close: str = "running"  # running | completed | failed | terminated | timed_out | canceled | continued_as_new
    result: Any = None
    failure: str = ""
    activities: list[ActivityRun] = field(default_factory=list)
    updates: list[UpdateRun] = field(default_factory=list)
    signals: list[SignalRun] = field(default_factory=list)
    search_attributes: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    source: str = "live"  # live | archive
    event_count: int = 0
    undecodable: list[str] = field(default_factory=list)  # payloads the configured codec could not open
    resets: list[ResetRecord] = field(default_factory=list)  # `temporal workflow reset`s that made this run

    def activities_named(self, name: str) -> list[ActivityRun]:
        return [a for a in self.activities if a.name == name]

    def updates_named(self, *names: str) -> list[UpdateRun]:
        return [u for u in self.updates if u.name in names]

    def signals_named(self, *names: str) -> list[SignalRun]:
        return [s for s in self.signals if s.name in names]


def failure_text(failure: Failure) -> str:
    """The innermost message of a failure chain (activity errors wrap the application error)."""
    message = failure.message
    while failure.HasField("cause"):
        failure = failure.cause
        message = failure.message or message
    return message


async def _failure(converter: DataConverter, failure: Failure, problems: list[str]) -> str:
    """Like failure_text, decoding messages the codec encrypted (encoded failure attributes)."""
    if not failure.HasField("encoded_attributes") and not _has_encoded_cause(failure):
        return failure_text(failure)
    copy = Failure()
    copy.CopyFrom(failure)  # the codec decodes in place: leave the history as Temporal holds it
    try:
        exc: BaseException | None = await converter.decode_failure(copy)
    except Exception as err:
        problem = f"{type(err).__name__}: {err}"
        if problem not in problems:
            problems.append(problem)
        return failure_text(failure)
    message = ""
    while exc is not None:
        message = str(getattr(exc, "message", "") or exc) or message
        exc = exc.__cause__
    return message


def _has_encoded_cause(failure: Failure) -> bool:
    while failure.HasField("cause"):
        failure = failure.cause
        if failure.HasField("encoded_attributes"):
            return True
    return False


async def _decode(converter: DataConverter, payloads: Sequence[Payload], problems: list[str] | None = None) -> list[Any]:
    if not payloads:
        return []
    try:
        return await converter.decode(list(payloads))
    except Exception as exc:  # a codec key missing or wrong: say so rather than fail the whole read
        problem = f"{type(exc).__name__}: {exc}"
        if problems is not None and problem not in problems:
            problems.append(problem)
        return [{"undecodable": problem}]


LOCAL_ACTIVITY_MARKER = "core_local_activity"


def _timestamp(value: Any, default: datetime) -> datetime:
    if isinstance(value, dict) and "seconds" in value:
        return datetime.fromtimestamp(int(value["seconds"]) + int(value.get("nanos", 0)) / 1e9, tz=UTC)
    return default


async def _local_activity(converter: DataConverter, event_id: int, at: datetime, marker: Any,
                          problems: list[str]) -> ActivityRun:
    """A local activity's marker: core's metadata (plain JSON) plus the result payload or a failure."""
    meta: dict[str, Any] = {}
    if "data" in marker.details and marker.details["data"].payloads:
        try:
            meta = json.loads(marker.details["data"].payloads[0].data)
        except ValueError:
            meta = {}
    run = ActivityRun(name=str(meta.get("activity_type", "?")), event_id=event_id,
                      scheduled_at=_timestamp(meta.get("original_schedule_time"), at),
                      completed_at=_timestamp(meta.get("complete_time"), at),
                      attempt=int(meta.get("attempt") or 1), local=True)
    if marker.HasField("failure"):
        run.failure = await _failure(converter, marker.failure, problems)
    elif "result" in marker.details:
        values = await _decode(converter, marker.details["result"].payloads, problems)
        run.result = values[0] if values else None
    return run


async def decode_history(history: WorkflowHistory, converter: DataConverter, source: str = "live") -> DecodedHistory:
    events = list(history.events)
    if not events:
        raise ValueError(f"the history of {history.workflow_id} is empty")
    problems: list[str] = []

    async def dec(payloads: Sequence[Payload]) -> list[Any]:
        return await _decode(converter, payloads, problems)

    first = events[0].workflow_execution_started_event_attributes
    decoded = DecodedHistory(
        workflow_id=history.workflow_id,
        run_id=history.run_id,
        workflow_type=first.workflow_type.name,
        started_at=events[0].event_time.ToDatetime().replace(tzinfo=UTC),
        start_identity=first.identity,
        start_args=await dec(first.input.payloads),
        source=source,
        event_count=len(events),
        undecodable=problems,
    )
    scheduled: dict[int, ActivityRun] = {}
    updates: dict[str, UpdateRun] = {}
    E = EventType
    for ev in events:
        at = ev.event_time.ToDatetime().replace(tzinfo=UTC)
        kind = ev.event_type
        if kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            args = await dec(attrs.input.payloads)
            run = ActivityRun(name=attrs.activity_type.name, event_id=ev.event_id, scheduled_at=at,
                              input=args[0] if args else None)
            scheduled[ev.event_id] = run
            decoded.activities.append(run)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = ev.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                scheduled[started.scheduled_event_id].attempt = started.attempt
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs_c = ev.activity_task_completed_event_attributes
            run = scheduled[attrs_c.scheduled_event_id]
            values = await dec(attrs_c.result.payloads)
            run.completed_at, run.result = at, values[0] if values else None
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            attrs_f = ev.activity_task_failed_event_attributes
            run = scheduled[attrs_f.scheduled_event_id]
            run.completed_at, run.failure = at, await _failure(converter, attrs_f.failure, problems)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            attrs_t = ev.activity_task_timed_out_event_attributes
            run = scheduled[attrs_t.scheduled_event_id]
            run.completed_at, run.failure = at, "timed out: " + await _failure(converter, attrs_t.failure, problems)
        elif kind == E.EVENT_TYPE_MARKER_RECORDED:
            marker = ev.marker_recorded_event_attributes
            if marker.marker_name == LOCAL_ACTIVITY_MARKER:
                decoded.activities.append(await _local_activity(converter, ev.event_id, at, marker, problems))
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs_s = ev.workflow_execution_signaled_event_attributes
            decoded.signals.append(SignalRun(
                name=attrs_s.signal_name, event_id=ev.event_id, at=at, identity=attrs_s.identity,
                args=await dec(attrs_s.input.payloads),
            ))
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            req = ev.workflow_execution_update_accepted_event_attributes.accepted_request
            upd = UpdateRun(name=req.input.name, update_id=req.meta.update_id, event_id=ev.event_id,
                            accepted_at=at, identity=req.meta.identity,
                            args=await dec(req.input.args.payloads))
            updates[upd.update_id] = upd
            decoded.updates.append(upd)
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            done = ev.workflow_execution_update_completed_event_attributes
            upd_c = updates.get(done.meta.update_id)
            if upd_c is not None:
                upd_c.completed_at = at
                if done.outcome.HasField("failure"):
                    upd_c.failure = await _failure(converter, done.outcome.failure, problems)
                else:
                    values = await dec(done.outcome.success.payloads)
                    upd_c.result = values[0] if values else None
        elif kind == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes
            decoded.search_attributes.append((at, dict(decode_search_attributes(fields))))
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            values = await dec(ev.workflow_execution_completed_event_attributes.result.payloads)
            decoded.close, decoded.closed_at, decoded.result = "completed", at, values[0] if values else None
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            decoded.close, decoded.closed_at = "failed", at
            decoded.failure = await _failure(converter, ev.workflow_execution_failed_event_attributes.failure, problems)
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            decoded.close, decoded.closed_at = "terminated", at
            decoded.failure = ev.workflow_execution_terminated_event_attributes.reason
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            decoded.close, decoded.closed_at = "timed_out", at
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
            decoded.close, decoded.closed_at = "canceled", at
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            decoded.close, decoded.closed_at = "continued_as_new", at
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_FAILED and ev.workflow_task_failed_event_attributes.cause == \
                WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW:
            failed = ev.workflow_task_failed_event_attributes
            decoded.resets.append(ResetRecord(at=at, event_id=ev.event_id, base_run_id=failed.base_run_id,
                                              new_run_id=failed.new_run_id, reason=failed.failure.message))
    if decoded.resets:  # WorkflowHistory.run_id is the first event's original run: the run this one was reset from
        decoded.run_id = decoded.resets[-1].new_run_id
    return decoded

# ---------------------------------------------------------------- the archive


def archive_dir() -> Path:
    path = settings.home() / "audit" / "archive"
    path.mkdir(parents=True, exist_ok=True)
    return path


def archive_path(workflow_id: str, run_id: str) -> Path:
    safe = workflow_id.replace("/", "_")
    return archive_dir() / safe / f"{run_id}.json"


def write_archive(history: WorkflowHistory, complete: bool, final_view: Any = None) -> Path:
    """Keep a history after Temporal deletes it. A complete (closed) history never gets overwritten
    by a partial one; the payloads stay as they are in Temporal (encrypted if a codec is on)."""
    path = archive_path(history.workflow_id, history.run_id)
    if path.exists() and not complete:
        try:
            if json.loads(path.read_text()).get("complete"):
                return path
        except (OSError, ValueError):
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "workflow_id": history.workflow_id,
        "run_id": history.run_id,
        "archived_at": datetime.now(UTC).isoformat(),
        "complete": complete,
        "final_view": final_view,
        "history": json.loads(history.to_json()),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(path)
    return path


def read_archive(path: Path) -> tuple[WorkflowHistory, dict[str, Any]]:
    record = json.loads(path.read_text())
    return WorkflowHistory.from_json(record["workflow_id"], record["history"]), record


def apply_archive_record(decoded: DecodedHistory, record: dict[str, Any]) -> DecodedHistory:
    """An archive written by the case itself ends just before the workflow completed: its final
    view stands in for the completion event (the case had finished everything it would do)."""
    if decoded.result is None and record.get("final_view") is not None:
        decoded.result = record["final_view"]
        if decoded.close == "running":
            decoded.close = "completed"
            archived_at = record.get("archived_at")
            decoded.closed_at = datetime.fromisoformat(archived_at) if archived_at else decoded.closed_at
    return decoded


def archived_runs(workflow_id: str | None = None) -> list[Path]:
    root = archive_dir()
    if workflow_id is not None:
        return sorted((root / workflow_id.replace("/", "_")).glob("*.json"))
    return sorted(root.glob("*/*.json"))


async def load_history(client: Client, workflow_id: str) -> DecodedHistory:
    """The latest run of a workflow: live if Temporal still has it, else from the archive."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return await decode_history(history, client.data_converter, source="live")
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    runs = archived_runs(workflow_id)
    if not runs:
        raise KeyError(
            f"no workflow {workflow_id!r} in Temporal and none in the archive ({archive_dir()}); "
            "check the case id with `signoff cases`"
        )
    decoded = []
    for path in runs:
        history, record = read_archive(path)
        one = await decode_history(history, client.data_converter, source="archive")
        decoded.append(apply_archive_record(one, record))
    return max(decoded, key=lambda d: d.started_at)
