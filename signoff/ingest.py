"""Ingest: validate alerts, group them into cases, open or update case workflows in batches.

Every record ends in exactly one place: a case (new alerts), the duplicates count (an alert
already ingested), or the dead-letter file with the reason. A case gets one signal-with-start
per batch, never one RPC per alert.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from temporalio.client import Client

from policies.loader import load_policy
from signoff import settings
from signoff.alertstore import AlertStore
from signoff.models import Alert, AlertBatch, CaseInput
from signoff.sources import Rejected

Format = Literal["guide", "ocsf"]
SEVERITY_ORDER = ("informational", "low", "medium", "high", "critical")
BATCH_ALERTS_IN_SIGNAL = 50  # alerts carried in full per signal; the rest are in the alert store
CONCURRENCY = 64


@dataclass
class CaseDraft:
    case_id: str
    alert_type: str
    title: str
    alerts: list[Alert] = field(default_factory=list)


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
    """Append-only JSON Lines of rejected records, with their reasons. Nothing is dropped."""

    def __init__(self, source: str) -> None:
        folder = settings.home() / "dead-letter"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.path = folder / f"{stamp}-{Path(source).name}.jsonl"
        self._fh = self.path.open("a")
        self.count = 0

    def write(self, rejected: Rejected) -> None:
        record = {"source": self.path.name, "line": rejected.line, "reason": rejected.reason,
                  "record": rejected.record}
        self._fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        self._fh.close()


def _worst(severities: Iterable[str]) -> str:
    ranked = [s for s in severities if s in SEVERITY_ORDER]
    return max(ranked, key=SEVERITY_ORDER.index) if ranked else "medium"


def group_guide(path: Path, dead: DeadLetter) -> tuple[list[CaseDraft], int]:
    """GUIDE: one case per incident (OrgId + IncidentId)."""
    from signoff.sources.guide import read_guide

    policy = load_policy()
    read = read_guide(path)
    for rejected in read.rejected:
        dead.write(rejected)
    drafts = [
        CaseDraft(
            case_id=incident.case_id,
            alert_type=policy.alert_type_for_category(incident.category),
            title=incident.alerts[0].title if incident.alerts else incident.case_id,
            alerts=list(incident.alerts),
        )
        for incident in read.incidents
    ]
    return drafts, read.accepted


def group_ocsf(path: Path, dead: DeadLetter) -> tuple[list[CaseDraft], int]:
    """OCSF: the correlation policy decides which alerts share a case (policies/correlation.yaml)."""
    from signoff.correlation import Correlator, load_correlation_rules
    from signoff.sources.ocsf import iter_ocsf

    policy = load_policy()
    correlator = Correlator(load_correlation_rules())
    drafts: dict[str, CaseDraft] = {}
    accepted = 0
    for item in iter_ocsf(path):
        if isinstance(item, Rejected):
            dead.write(item)
            continue
        accepted += 1
        assignment = correlator.assign(item)
        alert = item.model_copy(update={"joined_because": assignment.reason})
        draft = drafts.get(assignment.case_id)
        if draft is None:
            draft = drafts[assignment.case_id] = CaseDraft(
                case_id=assignment.case_id,
                alert_type=policy.alert_type_for_category(alert.category),
                title=alert.title,
            )
        draft.alerts.append(alert)
    return list(drafts.values()), accepted


GROUPERS: dict[str, Callable[[Path, DeadLetter], tuple[list[CaseDraft], int]]] = {
    "guide": group_guide,
    "ocsf": group_ocsf,
}


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
    from workflows.case import CaseWorkflow

    if fmt not in GROUPERS:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(GROUPERS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    started = asyncio.get_running_loop().time()
    store = store or AlertStore(settings.home() / "alerts.db")
    dead = DeadLetter(str(path))
    summary = IngestSummary(source=str(path), format=fmt, dead_letter=str(dead.path))
    try:
        drafts, accepted = await asyncio.to_thread(GROUPERS[fmt], path, dead)
    finally:
        dead.close()
    summary.accepted = accepted
    summary.rejected = dead.count
    summary.records = accepted + dead.count

    queue = task_queue or settings.task_queue()
    gate = asyncio.Semaphore(CONCURRENCY)
    done = 0

    async def deliver(draft: CaseDraft) -> None:
        nonlocal done
        existed = store.count(draft.case_id) > 0
        fresh = [a for a in draft.alerts if not store.has(a.uid)]
        summary.duplicates += len(draft.alerts) - len(fresh)
        if fresh:
            async with gate:
                await _signal_with_start(client, CaseWorkflow, draft, fresh, requested_by, queue)
            # Stored after Temporal accepted them: a crash in between re-sends, the workflow dedups.
            store.put_many(draft.case_id, fresh)
            if existed:
                summary.cases_updated += 1
            else:
                summary.cases_opened += 1
            summary.case_ids.append(draft.case_id)
        done += 1
        if progress:
            progress(done, len(drafts))

    await asyncio.gather(*(deliver(d) for d in drafts))
    summary.seconds = round(asyncio.get_running_loop().time() - started, 3)
    return summary


async def _signal_with_start(
    client: Client, workflow_cls: Any, draft: CaseDraft, alerts: list[Alert], requested_by: str, queue: str,
) -> None:
    case = CaseInput(
        case_id=draft.case_id,
        alert_type=draft.alert_type,
        severity=_worst(a.severity for a in alerts),
        title=draft.title[:200],
        requested_by=requested_by,
    )
    batch = AlertBatch(
        case_id=draft.case_id, alerts=tuple(alerts[:BATCH_ALERTS_IN_SIGNAL]), total=len(alerts),
        rules=_count_rules(alerts), first_seen=min(a.time for a in alerts),
        last_seen=max(a.time for a in alerts),
        batch_id=hashlib.sha256("\n".join(a.uid for a in alerts).encode()).hexdigest(),
    )
    await client.start_workflow(
        workflow_cls.run,
        case,
        id=draft.case_id,
        task_queue=queue,
        start_signal="add_alerts",
        start_signal_args=[batch],
    )


def _count_rules(alerts: list[Alert]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.rule] = counts.get(alert.rule, 0) + 1
    return counts
