"""Ingest: validate alerts, group them into cases, open or update case workflows in batches.

Every record ends in exactly one place: a case (new alerts), the duplicates count (an alert
already ingested), or the dead-letter file with the reason. A case gets one signal-with-start
per batch, never one RPC per alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import BaseModel
from temporalio.client import Client

from policies.engine import SEVERITIES
from policies.loader import load_policy
from signoff import settings
from signoff.alertstore import AlertStore
from signoff.client import BEST_EFFORT_QUERY
from signoff.display import clean
from signoff.models import Alert, AlertBatch, CaseInput, DetachedFrom
from signoff.payload_budget import carried, rule_counts
from signoff.sources import Rejected

Format = Literal["guide", "ocsf"]
BATCH_ALERTS_IN_SIGNAL = 50  # alerts carried in full per signal; the rest are in the alert store
CONCURRENCY = 64
CHUNK_LINES = 20_000  # records parsed and correlated per step: bounds memory on huge files
FIRST_CHUNK_LINES = 2_500
CORRELATOR_STATE = "correlator"


@dataclass
class CaseDraft:
    case_id: str
    alert_type: str
    title: str
    alerts: list[Alert] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)  # the source record of each alert (alert store)


@dataclass
class Chunk:
    """A bounded piece of the input: one draft per case, plus what was rejected or already known."""

    drafts: dict[str, CaseDraft] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    accepted: int = 0
    correlator_state: dict[str, Any] | None = None  # saved once the chunk is delivered


@dataclass
class IngestSummary:
    source: str
    format: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    cases_opened: int = 0
    cases_updated: int = 0
    dead_letter: str = ""
    seconds: float = 0.0
    case_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "case_ids"}
        data["alerts_per_s"] = round(self.records / self.seconds, 1) if self.seconds else None
        return data


class DeadLetter:
    """Append-only JSON Lines of rejected records, with their reasons. Nothing is dropped.

    `path` is known from the start (the ingest summary names it), but the file is created with the
    first rejected record: QA5 found an empty file left behind by every clean ingest."""

    def __init__(self, source: str) -> None:
        self.source = source  # the input file as given: each record names it
        self.folder = settings.home() / "dead-letter"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.path = self.folder / f"{stamp}-{Path(source).name}.jsonl"
        self._fh: IO[str] | None = None
        self.count = 0

    def write(self, rejected: Rejected) -> None:
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a")
        record = {"source": self.source, "line": rejected.line, "reason": rejected.reason,
                  "record": rejected.record}
        self._fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _worst(severities: Iterable[str]) -> str:
    ranked = [s for s in severities if s in SEVERITIES]
    return max(ranked, key=SEVERITIES.index) if ranked else "medium"


def guide_chunks(path: Path, store: AlertStore) -> Iterator[Chunk]:
    """GUIDE: one case per incident (OrgId + IncidentId). Small files: one chunk.

    An alert is a duplicate when the store holds its uid for this incident's case (or a follow-up
    of it, or the case it was merged into). GUIDE re-uses an AlertId across incidents of one
    organisation: in another incident it is that incident's evidence, so it goes to that incident's
    case, whichever file brought it."""
    from signoff.sources.guide import read_guide

    policy = load_policy()
    read = read_guide(path)
    chunk = Chunk(rejected=list(read.rejected))
    holding = store.cases_holding([a.uid for i in read.incidents for a in i.alerts])
    routes: dict[str, list[str]] = store.get_state(MERGE_ROUTES_STATE) or {}
    for incident in read.incidents:
        # This incident's case, and the cases its alerts went to because it was merged (record_merge_routes).
        its = (incident.case_id, *routes.get(incident.case_id, ()))
        known = {a.uid for a in incident.alerts
                 if any(_same_case(held, case) for held in holding.get(a.uid, ()) for case in its)}
        fresh = [a for a in incident.alerts if a.uid not in known]
        # Already ingested: the evidence rows of every alert of this incident the store knows,
        # also when the incident brings a new alert too.
        chunk.duplicates += sum(_evidence_rows(a) for a in incident.alerts if a.uid in known)
        chunk.accepted += incident.evidence_rows
        if fresh:
            chunk.drafts[incident.case_id] = CaseDraft(
                case_id=incident.case_id,
                alert_type=policy.alert_type_for_category(incident.category),
                title=guide_case_title(incident),
                alerts=fresh,
                raw=[None] * len(fresh),
            )
    yield chunk


def guide_case_title(incident: Any) -> str:
    """A title a person can read: GUIDE anonymises alert titles to numbers ("5"), so a case titled by one
    said nothing in `signoff cases`, `show` or the Temporal UI; its category and the anonymised ids say more."""
    if not incident.alerts:
        return str(incident.case_id)
    first = incident.alerts[0]
    if not first.title.isdigit():
        return str(first.title)
    more = f", +{len(incident.alerts) - 1} more alert(s)" if len(incident.alerts) > 1 else ""
    return f"{incident.category or 'Uncategorised'} (GUIDE alert title {first.title}, detector {first.rule}{more})"


def _same_case(held: str, case_id: str) -> bool:
    """Whether `held` is the case `case_id`, one of its follow-ups (`{case_id}-rN`) or a case opened
    for an alert detached from it (`{case_id}-dN`, workflows/case_detach.py), or theirs in turn."""
    if held == case_id:
        return True
    rest = held.removeprefix(f"{case_id}-")
    if rest == held:
        return False
    return all(len(part) > 1 and part[0] in "rd" and part[1:].isdigit() for part in rest.split("-"))


def _evidence_rows(alert: Alert) -> int:
    """How many GUIDE rows an alert was built from (signoff.sources.guide sets the attribute)."""
    try:
        return max(int(alert.attributes.get("evidence_rows", "1")), 1)
    except ValueError:
        return 1


def ocsf_chunks(path: Path, store: AlertStore, chunk_lines: int = CHUNK_LINES) -> Iterator[Chunk]:
    """OCSF: the correlation policy decides which alerts share a case (policies/correlation.yaml).

    Memory stays bounded by `chunk_lines` whatever the file size. Alerts already in the store are
    counted as duplicates before correlation, so re-ingesting a file changes no case. The
    correlator continues from its saved state, so a second file's alerts join the open cases.
    """
    from signoff.correlation import Correlator, annotate, load_correlation_rules
    from signoff.sources.ocsf import iter_ocsf_raw

    policy = load_policy()
    rules = load_correlation_rules()
    saved = store.get_state(CORRELATOR_STATE)
    correlator = Correlator.restore(saved, rules) if saved else Correlator(rules)
    pending: list[tuple[Alert | Rejected, str]] = []

    def flush() -> Chunk:
        chunk = Chunk()
        alerts = [item for item, _ in pending if isinstance(item, Alert)]
        known = store.cases_of([a.uid for a in alerts])
        for item, text in pending:
            if isinstance(item, Rejected):
                chunk.rejected.append(item)
                continue
            chunk.accepted += 1
            if item.uid in known:
                chunk.duplicates += 1
                continue
            assignment = correlator.assign(item)
            if assignment.duplicate:  # the same uid twice in this input
                chunk.duplicates += 1
                continue
            alert = annotate(item, assignment)
            draft = chunk.drafts.get(assignment.case_id)
            if draft is None:
                draft = chunk.drafts[assignment.case_id] = CaseDraft(
                    case_id=assignment.case_id,
                    alert_type=policy.alert_type_for_category(alert.category),
                    title=alert.title,
                )
            draft.alerts.append(alert)
            draft.raw.append(text)
        chunk.correlator_state = correlator.snapshot()
        pending.clear()
        return chunk

    # The first chunk is small: nothing is delivered until it is parsed, so a big first chunk
    # leaves the server and the worker idle; later chunks are parsed while the previous one is
    # being delivered.
    limit = min(chunk_lines, FIRST_CHUNK_LINES)
    for item in iter_ocsf_raw(path):
        pending.append(item)
        if len(pending) >= limit:
            yield flush()
            limit = chunk_lines
    if pending:
        yield flush()


def group_guide(path: Path, dead: DeadLetter, store: AlertStore | None = None) -> tuple[list[CaseDraft], int]:
    """Parse and group a GUIDE file without Temporal: (case drafts, accepted records)."""
    return _group(guide_chunks(path, store or AlertStore(":memory:")), dead)


def group_ocsf(path: Path, dead: DeadLetter, store: AlertStore | None = None) -> tuple[list[CaseDraft], int]:
    """Parse and correlate an OCSF file without Temporal: (case drafts, accepted records)."""
    return _group(ocsf_chunks(path, store or AlertStore(":memory:")), dead)


def _group(chunks: Iterator[Chunk], dead: DeadLetter) -> tuple[list[CaseDraft], int]:
    drafts: dict[str, CaseDraft] = {}
    accepted = 0
    for chunk in chunks:
        for rejected in chunk.rejected:
            dead.write(rejected)
        accepted += chunk.accepted
        for case_id, draft in chunk.drafts.items():
            merged = drafts.setdefault(case_id, CaseDraft(case_id, draft.alert_type, draft.title))
            merged.alerts.extend(draft.alerts)
            merged.raw.extend(draft.raw)
    return list(drafts.values()), accepted


CHUNKERS: dict[str, Callable[[Path, AlertStore], Iterator[Chunk]]] = {
    "guide": guide_chunks,
    "ocsf": ocsf_chunks,
}
# Formats whose alert uids name an alert within its case only, so the store keys them by (case, uid):
# GUIDE re-uses an AlertId across incidents. OCSF uids are global (correlation decides the case).
UIDS_PER_CASE: frozenset[str] = frozenset({"guide"})


async def ingest_path(
    client: Client,
    path: Path,
    fmt: Format,
    *,
    requested_by: str = "signoff-ingest",
    store: AlertStore | None = None,
    task_queue: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Ingest a file. Every record is accepted into a case, counted as a duplicate, or dead-lettered."""
    from workflows.case import CaseWorkflow

    if fmt not in CHUNKERS:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(CHUNKERS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory: give one file (ingest each file of it in turn)")
    if problem := unsigned_ingest_problem():
        raise ValueError(problem)
    loop = asyncio.get_running_loop()
    started = loop.time()
    store = store or AlertStore(settings.home() / "alerts.db")
    dead = DeadLetter(str(path))
    summary = IngestSummary(source=str(path), format=fmt, dead_letter=str(dead.path))
    queue = task_queue or settings.task_queue()
    gate = asyncio.Semaphore(CONCURRENCY)
    touched: set[str] = set()
    merges = MergeRoutes()
    # The next chunk is parsed while this one is delivered: delivery mostly waits on the server.
    # The parser reads the store through its own connection; the loop below is the only writer.
    reports_started = await _reports_started(client)
    reader = _reader_for(store)
    chunks = CHUNKERS[fmt](path, reader)
    upcoming = asyncio.ensure_future(asyncio.to_thread(_next_chunk, chunks))
    try:
        while (chunk := await upcoming) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(_next_chunk, chunks))
            for rejected in chunk.rejected:
                dead.write(rejected)
            summary.rejected += len(chunk.rejected)
            summary.accepted += chunk.accepted
            summary.duplicates += chunk.duplicates

            held_open = await _closed_but_running(client)
            merges.merged = await _merged_cases(client)

            async def deliver(draft: CaseDraft, closed: frozenset[str] = held_open) -> tuple[str, bool | None]:
                async with gate:
                    return await _signal_with_start(client, CaseWorkflow, draft, draft.alerts, requested_by, queue,
                                                    closed=closed, merges=merges)

            # The case each draft landed in (its own, or the follow-up of a closed one), and whether
            # this delivery started it: Temporal's answer, right also when two ingests run at once.
            # Where the server does not say (older servers, the time-skipping test server), the store does.
            results = await asyncio.gather(*(deliver(d) for d in chunk.drafts.values()))
            # Drafts a closed case had already taken in full (this state directory's alert store did not
            # know them): duplicates, recorded under that case so the store knows them next time.
            taken = {d.case_id for d, (_, started) in zip(chunk.drafts.values(), results, strict=True)
                     if started is ALREADY_TAKEN}
            summary.duplicates += sum(_evidence_rows(a) for d in chunk.drafts.values() if d.case_id in taken
                                      for a in d.alerts)
            delivered = [(case_id, started if reports_started and started is not ALREADY_TAKEN else None)
                         for case_id, started in results]
            landed = {draft_id: case_id for draft_id, (case_id, _) in zip(chunk.drafts, delivered, strict=True)}
            unknown = [case_id for case_id, started in delivered if started is None]
            known_before = await asyncio.to_thread(store.known_cases, unknown) if unknown else set()
            opened_now = {case_id for case_id, started in delivered
                          if started or (started is None and case_id not in known_before)}
            # Stored after Temporal accepted them: a crash in between re-sends the same batch,
            # which the workflow recognises by its batch id and counts once.
            await asyncio.to_thread(
                store.put_assigned,
                [(landed[d.case_id], _as_landed(a, merges.routed.get(d.case_id), landed[d.case_id]), r)
                 for d in chunk.drafts.values() for a, r in zip(d.alerts, d.raw, strict=True)],
                per_case=fmt in UIDS_PER_CASE,
            )
            if routes := {d: landed[d] for d in chunk.drafts if d in merges.routed}:
                await asyncio.to_thread(record_merge_routes, store, routes)
            if chunk.correlator_state is not None:
                await asyncio.to_thread(store.put_state, CORRELATOR_STATE, chunk.correlator_state)
            for draft_id, case_id in landed.items():
                if case_id in touched or draft_id in taken:
                    continue
                touched.add(case_id)
                summary.case_ids.append(case_id)
                if case_id in opened_now:
                    summary.cases_opened += 1
                else:
                    summary.cases_updated += 1
            if progress:
                progress(summary.accepted + summary.rejected, 0)
    finally:
        # After an error in delivery the parser may be mid-chunk: let it finish before its
        # connection closes (the chunk is dropped; nothing of it was sent or stored).
        with contextlib.suppress(Exception):
            await upcoming
        if reader is not store:
            reader.close()
        dead.close()
    summary.records = summary.accepted + summary.rejected
    summary.seconds = round(loop.time() - started, 3)
    return summary


def _as_landed(alert: Alert, via: tuple[str, ...] | None, case_id: str) -> Alert:
    return routed_alert(alert, via, case_id) if via else alert


MERGE_ROUTES_STATE = "merge_routes"


def record_merge_routes(store: AlertStore, routes: dict[str, str]) -> None:
    """Remember that alerts of case X went to case Y because X was merged (`signoff merge`, or ingest
    following one): a GUIDE alert of X's incident that Y holds is then a duplicate, not a new alert
    (GUIDE alert ids name an alert within its incident: the store keeps them per case)."""
    saved: dict[str, Any] = store.get_state(MERGE_ROUTES_STATE) or {}
    changed = False
    for source, landed in routes.items():
        known = saved.setdefault(source, [])
        if landed != source and landed not in known:
            known.append(landed)
            changed = True
    if changed:
        store.put_state(MERGE_ROUTES_STATE, saved)


def _next_chunk(chunks: Iterator[Chunk]) -> Chunk | None:
    """The next chunk, parsed with the cyclic garbage collector paused.

    A chunk is ~20,000 validated models that all stay alive until it is delivered, so every
    collection during parsing rescans them and frees nothing: measured, that was most of the
    parse time. Reference counting still frees what parsing drops; the collector runs again as
    soon as the chunk is built.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return next(chunks, None)
    finally:
        if enabled:
            gc.enable()


def _reader_for(store: AlertStore) -> AlertStore:
    """A second connection to a file store (WAL: reads never block the writer); the store itself
    when it lives in memory."""
    if str(store.path) == ":memory:":
        return store
    return AlertStore(store.path)


async def _reports_started(client: Client) -> bool:
    """Whether the server says if a SignalWithStart started the workflow (`started`: Temporal 1.25+).
    Older servers leave it false even when they did start it."""
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    try:
        version = (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version
        major, minor = (int(part) for part in version.split(".")[:2])
    except Exception:  # noqa: BLE001 - no version, or none we can read: do not trust the field
        return False
    return (major, minor) >= (1, 25)


# A closed case is never restarted under its own id (that made a second run of it: two rows, the
# verdict lost, steps run again). Alerts that come after it closed open a follow-up case,
# `{case_id}-r2`, then `-r3` if that one closed too, ... up to this many.
FOLLOW_UPS_AT_MOST = 100


def follow_up_id(case_id: str, n: int) -> str:
    return f"{case_id}-r{n}"


M = TypeVar("M", bound=BaseModel)


def unsigned_ingest_problem() -> str | None:
    """Why this host must not open cases: the policy requires signed input and there is no key here
    (every case would be a human's alone, its alerts acted on by nobody)."""
    from signoff.keys import ingest_key_path, load_ingest_key

    if not load_policy().deployment.require_signed_ingest or load_ingest_key() is not None:
        return None
    return (f"the policy requires signed case input (deployment.require_signed_ingest) and this host has no "
            f"ingest key at {ingest_key_path()}: set SIGNOFF_INGEST_KEY_FILE to the ingesters' key file "
            "(`signoff keys ingest-create` made it; docs/deployment.md §3)")


def signed(model: M) -> M:
    """`model` signed with the ingesters' key where this host has one (policies/ingest_signing.py);
    unsigned otherwise, which only a policy with `require_signed_ingest` refuses to act on."""
    from policies.ingest_signing import sign_input
    from signoff.keys import load_ingest_key

    key = load_ingest_key()
    return sign_input(key, model) if key is not None else model


# `_signal_with_start`'s "started" when a closed case already holds every alert of the draft.
ALREADY_TAKEN: Any = "already-taken"


async def _closed_but_running(client: Client) -> frozenset[str]:
    """Cases that have their verdict but still run (policy rollback_window: their actions can still be
    rolled back). New alerts must open their follow-up, not join a case nobody triages any more.
    One visibility query per chunk; a server without visibility (the time-skipping test server) has
    none. A case closed in the last second (visibility lag) can still take a batch: it counts it."""
    from temporalio.service import RPCError

    from signoff.listing import case_query

    try:
        query = case_query("closed", "ExecutionStatus='Running'")
        return frozenset([wf.id async for wf in client.list_workflows(query)])
    except RPCError:
        return frozenset()


async def _signal_with_start(
    client: Client, workflow_cls: Any, draft: CaseDraft, alerts: list[Alert], requested_by: str, queue: str,
    *, closed: frozenset[str] = frozenset(), detached_from: DetachedFrom | None = None,
    merges: MergeRoutes | None = None,
) -> tuple[str, bool | None]:
    """Deliver `alerts` to the draft's case, or to its open follow-up when the case has closed, or to
    the case it was merged into (`signoff merge`: the incident lives there now; that case's follow-up
    if it has closed too); returns the case id they landed in and whether this delivery started that
    case (None: unknown; ALREADY_TAKEN: a closed or merged case took every one of these alerts before,
    so nothing was sent)."""
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    merges = merges or MergeRoutes()
    sample = carried(alerts, BATCH_ALERTS_IN_SIGNAL)  # within Temporal's payload limit whatever the alerts hold
    batch = AlertBatch(
        case_id=draft.case_id, alerts=sample, total=len(alerts),
        rules=rule_counts(alerts, sample), first_seen=min(a.time for a in alerts),
        last_seen=max(a.time for a in alerts),
        batch_id=hashlib.sha256("\n".join(a.uid for a in alerts).encode()).hexdigest(),
    )
    base, n, previous = draft.case_id, 1, None
    via: list[str] = []  # the merged cases these alerts correlated to, in the order they were followed
    while True:
        case_id = base if n == 1 else follow_up_id(base, n)
        merged = case_id in merges.merged
        if merged or case_id in closed:  # closed with its verdict (open only for a rollback), or merged
            if await _closed_case_took(client, case_id, batch, alerts):  # ... it had them already
                return case_id, ALREADY_TAKEN
            target = await merges.target_of(client, case_id) if merged else None
            base, n, previous = _next_case(draft.case_id, case_id, base, n, target, via)
            continue
        title = draft.title if previous is None else f"follow-up of closed case {previous}: {draft.title}"
        case = signed(CaseInput(case_id=case_id, alert_type=draft.alert_type, severity=_worst(a.severity for a in alerts),
                                title=title[:200], requested_by=requested_by, follows=previous,
                                detached_from=detached_from))
        sent = signed(_routed(batch, via, case_id) if via else batch.model_copy(update={"case_id": case_id}))
        try:
            handle = await client.start_workflow(
                workflow_cls.run,
                case,
                id=case_id,
                task_queue=queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                start_signal="add_alerts",
                start_signal_args=[sent],
                # The Temporal UI shows it as it is: no bidi override or control character from an alert title.
                static_summary=clean(f"{case.alert_type} · {case.severity} · {case.title}")[:200],
                static_details=(
                    f"Opened by {requested_by} from {draft.case_id.split('-', 1)[0]} alerts"
                    + (f", after case {previous} had closed" if previous else "")
                    + (f", for alerts of case {via[0]}, which was merged" if via else "")
                    + (f", for the alert {detached_from.by} detached from case {detached_from.case_id}"
                       if detached_from else "") + ". "
                    "Send the `approve` update to sign off a step; the `status` query shows the whole case."
                ),
            )
            # Temporal's SignalWithStart response says whether it started the workflow (`started`).
            # (The SDK keeps it on the handle; if a later SDK does not, None: the store answers.)
            response = getattr(handle, "_start_workflow_response", None)
            started = getattr(response, "started", None)
            if via:
                merges.routed[draft.case_id] = tuple(via)
            return case_id, started if isinstance(started, bool) else None
        except WorkflowAlreadyStartedError:  # this case id has ended: its follow-up takes the alerts
            # QA: ingesting from another state directory (its alert store does not know these alerts)
            # opened `-r2` follow-ups holding the very alerts the closed case had decided on, and put
            # their high-impact steps up for approval again. The closed case's history says.
            if await _closed_case_took(client, case_id, batch, alerts):
                return case_id, ALREADY_TAKEN
            # Merged after this chunk's visibility query (or a server without visibility): it says so itself.
            target = await merges.target_of(client, case_id)
            base, n, previous = _next_case(draft.case_id, case_id, base, n, target, via)


# Merges followed for one delivery at most: a merge never makes a cycle (workflows/case_merge.py refuses
# one), so a longer chain means something else is wrong.
MERGE_HOPS_AT_MOST = 20


def _next_case(first: str, ended: str, base: str, n: int, target: str | None,
               via: list[str]) -> tuple[str, int, str | None]:
    """Where alerts go after the case `ended`: the case it was merged into (`target`), else the next
    follow-up of `base`. Returns (base, follow-up number, the closed case the next one follows)."""
    if target is not None:
        if target in via or target == ended or len(via) >= MERGE_HOPS_AT_MOST:
            raise RuntimeError(f"alerts of case {first} follow merges {' -> '.join([*via, ended, target])} "
                               "without end: check `signoff show` of those cases")
        via.append(ended)
        return (*_follow_up_of(target), None)
    if n >= FOLLOW_UPS_AT_MOST:
        raise RuntimeError(f"case {base} and its {FOLLOW_UPS_AT_MOST - 1} follow-ups have all closed; "
                           "new alerts for it need a case of their own: check the correlation settings")
    return base, n + 1, ended


def _follow_up_of(case_id: str) -> tuple[str, int]:
    """(base, n) of a follow-up id `{base}-r{n}`; (case_id, 1) for any other: the next follow-up of a
    merge target that was itself a follow-up is `{base}-r{n+1}`, as for the alerts of its own case."""
    base, sep, number = case_id.rpartition("-r")
    if sep and base and number.isdigit() and int(number) >= 2:
        return base, int(number)
    return case_id, 1


def _routed(batch: AlertBatch, via: list[str], case_id: str) -> AlertBatch:
    """The batch as sent to `case_id` after following merges: each alert says it correlated to the
    merged case (`signoff show`/`explain` list why it joined), the batch names them (`via`)."""
    alerts = tuple(routed_alert(a, via, case_id) for a in batch.alerts)
    return batch.model_copy(update={"case_id": case_id, "alerts": alerts, "via": tuple(via)})


def routed_alert(alert: Alert, via: Sequence[str], case_id: str) -> Alert:
    """`alert`, saying it correlated to the merged case `via[0]` and came to `case_id` through merges."""
    note = f"correlated to case {via[0]}, merged ({' -> '.join([*via, case_id])})"
    return alert.model_copy(update={"joined_because": f"{alert.joined_because}; {note}" if alert.joined_because
                                    else note})


@dataclass
class MergeRoutes:
    """Cases merged into another (`signoff merge`): alerts that correlate to one go to the case it was
    merged into. `merged` comes from one visibility query per chunk; a case's target is read once per
    ingest, from the case itself: its `status` query while it still runs, its result once it has ended."""

    merged: frozenset[str] = frozenset()
    targets: dict[str, str | None] = field(default_factory=dict)
    routed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # draft case id -> the merged cases followed

    async def target_of(self, client: Client, case_id: str) -> str | None:
        if case_id not in self.targets:
            self.targets[case_id] = await _merge_target(client, case_id)
        return self.targets[case_id]


async def _merged_cases(client: Client) -> frozenset[str]:
    """The cases that ended `merged` (running for a moment after the merge, or completed). One
    visibility query per chunk; none on a server without visibility (a case then says so itself
    when a delivery finds it ended: `_merge_target`)."""
    from temporalio.service import RPCError

    from signoff.listing import case_query

    try:
        return frozenset([wf.id async for wf in client.list_workflows(case_query("merged"))])
    except RPCError:
        return frozenset()


async def _merge_target(client: Client, case_id: str) -> str | None:
    """The case `case_id` was merged into, or None (not merged, or it cannot say)."""
    from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
    from temporalio.service import RPCError

    from signoff import search_attributes as sa
    from signoff.models import CaseStatus, CaseView

    handle = client.get_workflow_handle(case_id, result_type=CaseView)
    try:
        described = await handle.describe()
        if described.typed_search_attributes.get(sa.CASE_STATUS) != CaseStatus.merged.value:
            return None
        if described.status == WorkflowExecutionStatus.RUNNING:
            view = await handle.query("status", result_type=CaseView, rpc_timeout=BEST_EFFORT_QUERY)
        elif described.status == WorkflowExecutionStatus.COMPLETED:
            view = await handle.result()
        else:
            return None  # terminated after the merge: no record to follow, its follow-up takes them
    except (RPCError, WorkflowQueryFailedError):
        return None
    return view.merged_into.target if view.merged_into is not None else None


async def _closed_case_took(client: Client, case_id: str, batch: AlertBatch, alerts: list[Alert]) -> bool:
    """Whether the closed case `case_id` was delivered every one of `alerts` before: the same batch
    (same alert uids), or alerts carried in full by its `add_alerts` signals. Read from its history."""
    from temporalio.api.enums.v1 import EventType

    wanted = {a.uid for a in alerts}
    seen: set[str] = set()
    async for event in client.get_workflow_handle(case_id).fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        if attrs.signal_name != "add_alerts" or not attrs.input.payloads:
            continue
        try:
            earlier = (await client.data_converter.decode(attrs.input.payloads[:1], [AlertBatch]))[0]
        except Exception:  # noqa: BLE001 - a payload this client cannot read proves nothing
            continue
        if not isinstance(earlier, AlertBatch):
            continue
        if batch.batch_id and earlier.batch_id == batch.batch_id:
            return True
        seen.update(a.uid for a in earlier.alerts)
        if wanted <= seen:
            return True
    return False
