"""Scenario `waiting`: many cases parked on an approval.

Opens N compromised-account cases (default 10,000); each runs its low-tier steps and then waits
for approval of `disable_account`. Measures the worker process's resident memory (RSS) once they
all wait, and the time to list them by status through visibility
(`CaseStatus='awaiting_approval'`): a count, the first page, and the full listing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from signoff.bench.cases import open_waiting_cases
from signoff.bench.harness import BenchError, bench

Report = Callable[[str, int, int], None]
QUERY = "CaseStatus='awaiting_approval'"
PAGE = 1000
WINDOW = 200  # cases in flight at a time (a steady alert stream, not 10,000 starts queued at once)


async def run_waiting(cases: int = 10_000, report: Report | None = None) -> dict[str, Any]:
    report = report or (lambda *_: None)
    async with bench() as b:
        idle_rss = b.worker_rss_mb()
        started = time.monotonic()
        await open_waiting_cases(b, cases, "waiting", report, timeout=300 + cases, window=WINDOW)
        seconds = time.monotonic() - started
        rss, peak = b.worker_rss_mb(), b.worker_rss_mb("VmHWM")

        t0 = time.monotonic()
        counted = (await b.client.count_workflows(QUERY)).count
        count_s = time.monotonic() - t0

        t0 = time.monotonic()
        first_page = 0
        async for _ in b.client.list_workflows(QUERY, page_size=PAGE, limit=PAGE):
            first_page += 1
        first_page_s = time.monotonic() - t0

        t0 = time.monotonic()
        listed = 0
        async for _ in b.client.list_workflows(QUERY, page_size=PAGE):
            listed += 1
        list_s = time.monotonic() - t0
        if listed != cases or counted != cases:
            raise BenchError(f"visibility lists {listed} and counts {counted} waiting cases, expected {cases}")
        return {
            "scenario": "waiting",
            "cases": cases,
            "seconds": round(seconds, 3),
            "cases_per_s": round(cases / seconds, 2),
            "worker_rss_mb": rss,
            "worker_rss_peak_mb": peak,
            "worker_rss_idle_mb": idle_rss,
            "worker_settings": b.worker_settings,
            "list_seconds": round(list_s, 3),
            "list_first_page_seconds": round(first_page_s, 3),
            "count_seconds": round(count_s, 3),
            "listed": listed,
            "page_size": PAGE,
        }

