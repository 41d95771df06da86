"""Scenario `waiting`: many cases parked on an approval.

Opens N compromised-account cases (default 10,000); each runs its low-tier steps and then waits
for approval of `disable_account`. Measures the worker process's resident memory (RSS) once they
all wait, and the time to list them by status through visibility (`CaseStatus='awaiting_approval'`):
a count, the first page, and the full listing by the path `signoff cases --status` runs
(`signoff.listing.case_rows` plus each case's alert count: on this embedded server, its visibility
table checked against the API), by the API alone (raw pages), by the SDK's `Client.list_workflows`
(the former path) for comparison, and by the `signoff cases` command itself (a new process).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signoff.bench.cases import open_waiting_cases
from signoff.bench.harness import Bench, BenchError, bench
from signoff.embedded_visibility import embedded_db
from signoff.listing import PAGE_SIZE, Listing, case_query, case_rows

Report = Callable[[str, int, int], None]
STATUS = "awaiting_approval"
WINDOW = 200  # cases in flight at a time (a steady alert stream, not 10,000 starts queued at once)
RUNS = 3  # listings timed per path; the median is reported (another job may share the machine)


_encode = json.JSONEncoder(sort_keys=True, default=str).encode


def _emit_json(rows: list[dict[str, Any]]) -> None:
    """What `signoff cases --json` does with a page, minus the terminal (the bench times the listing)."""
    lines = "".join(_encode(r) + "\n" for r in rows)
    del lines


async def _fast_listing(b: Bench, query: str, limit: int | None,
                        embedded: Path | None) -> tuple[Listing, float, dict[str, float]]:
    cpu0, t0 = b.cpu(), time.monotonic()
    listing = await case_rows(query, limit=limit, each=_emit_json, client=b.client, home=b.home, status=STATUS,
                              embedded_db=embedded)
    seconds, cpu1 = time.monotonic() - t0, b.cpu()
    return listing, seconds, {k: round(cpu1[k] - cpu0[k], 3) for k in ("server", "client")}


async def _sdk_listing(b: Bench, query: str) -> tuple[int, float]:
    t0 = time.monotonic()
    listed = 0
    async for _ in b.client.list_workflows(query, page_size=PAGE_SIZE):
        listed += 1
    return listed, time.monotonic() - t0


async def _cli_listing(b: Bench) -> tuple[int, float]:
    """`signoff cases --status awaiting_approval --json --limit 0`, as an analyst runs it. The pid
    file makes the bench's home look like `signoff dev`'s (same server command, same db file)."""
    (b.home / "temporal.pid").write_text(str(b.server.pid))
    env = {**os.environ, "TEMPORAL_ADDRESS": b.address, "SIGNOFF_HOME": str(b.home)}
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signoff.cli", "cases", "--status", STATUS, "--json", "--limit", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(f"signoff cases exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return sum(1 for line in out.splitlines() if line.strip()), seconds


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


async def run_waiting(cases: int = 10_000, report: Report | None = None) -> dict[str, Any]:
    report = report or (lambda *_: None)
    query = case_query(STATUS)
    async with bench() as b:
        idle_rss = b.worker_rss_mb()
        started = time.monotonic()
        await open_waiting_cases(b, cases, "waiting", report, timeout=300 + cases, window=WINDOW)
        seconds = time.monotonic() - started
        rss, peak = b.worker_rss_mb(), b.worker_rss_mb("VmHWM")

        t0 = time.monotonic()
        counted = (await b.client.count_workflows(query)).count
        count_s = time.monotonic() - t0

        embedded = embedded_db(b.address, b.server.pid)
        first, first_page_s, _ = await _fast_listing(b, query, PAGE_SIZE, embedded)
        paths: dict[str, list[float]] = {"users": [], "api": [], "sdk": []}
        cpus: dict[str, list[dict[str, float]]] = {"users": [], "api": []}
        loads: list[float] = []
        sources: set[str] = set()
        for _ in range(RUNS):  # interleaved, so every path sees the same load
            loads.append(os.getloadavg()[0])
            for path, db in (("users", embedded), ("api", None)):
                listing, list_s, cpu = await _fast_listing(b, query, None, db)
                paths[path].append(list_s)
                cpus[path].append(cpu)
                if listing.listed != cases:
                    raise BenchError(f"the {path} listing returned {listing.listed} waiting cases, expected {cases}")
                if path == "users":
                    sources.add(listing.source)
            sdk_listed, sdk_s = await _sdk_listing(b, query)
            paths["sdk"].append(sdk_s)
        cli_listed, cli_s = await _cli_listing(b)
        for name, n in (("the SDK listing", sdk_listed), ("signoff cases", cli_listed), ("visibility count", counted)):
            if n != cases:
                raise BenchError(f"{name} returned {n} waiting cases, expected {cases}")
        if first.listed != min(cases, PAGE_SIZE):
            raise BenchError(f"the first page had {first.listed} cases, expected {min(cases, PAGE_SIZE)}")

        def cpu_median(path: str) -> dict[str, float]:
            return {k: _median([c[k] for c in cpus[path]]) for k in ("server", "client")}

        return {
            "scenario": "waiting",
            "cases": cases,
            "seconds": round(seconds, 3),
            "cases_per_s": round(cases / seconds, 2),
            "worker_rss_mb": rss,
            "worker_rss_peak_mb": peak,
            "worker_rss_idle_mb": idle_rss,
            "worker_settings": b.worker_settings,
            "query": query,
            "count_seconds": round(count_s, 3),
            "list_first_page_seconds": round(first_page_s, 3),
            # The path `signoff cases --status S` runs (signoff.listing.case_rows), median of RUNS:
            # the embedded server's visibility table when it checks out against the API, else the API.
            "list_seconds": _median(paths["users"]),
            "list_seconds_runs": [round(x, 3) for x in paths["users"]],
            "list_source": sorted(sources),
            "list_cpu_seconds": cpu_median("users"),  # server and this process, CPU during one listing
            # The same rows through the API only (raw pages, printed fields), median of RUNS.
            "list_api_seconds": _median(paths["api"]),
            "list_api_seconds_runs": [round(x, 3) for x in paths["api"]],
            "list_api_cpu_seconds": cpu_median("api"),
            # The SDK's Client.list_workflows (what `signoff cases` used before), median of RUNS.
            "list_sdk_seconds": _median(paths["sdk"]),
            "list_sdk_seconds_runs": [round(x, 3) for x in paths["sdk"]],
            # `signoff cases --status awaiting_approval --json --limit 0`: a new process, start to exit.
            "cli_seconds": round(cli_s, 3),
            "load_average_while_listing": [round(x, 2) for x in loads],
            "listed": cases,
            "page_size": PAGE_SIZE,
        }
