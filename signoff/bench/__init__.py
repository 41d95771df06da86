"""Benchmarks: one JSON-able result per scenario (`signoff bench --json`).

Each scenario is `run_<name>(cases, report) -> dict` with at least `scenario`, `cases`, `seconds`,
`cases_per_s`; `report(phase, done, total)` drives a progress display. Server scenarios start
their own Temporal dev server on durable SQLite and a worker process (signoff/bench/harness.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

Report = Callable[[str, int, int], None]

# name -> (module, function, default number of cases)
SCENARIOS: dict[str, tuple[str, str, int]] = {
    "pipeline": ("signoff.bench.pipeline", "run_pipeline", 300),
    "approval": ("signoff.bench.approval", "run_approval", 50),
    "rollback": ("signoff.bench.rollback", "run_rollback", 10),
    "scoring": ("signoff.bench.scoring", "run_scoring", 1000),
    "waiting": ("signoff.bench.waiting", "run_waiting", 10_000),
}


def ait_paths() -> tuple[Path, Path]:
    """The AIT-ADS scenario beside the repository (../shared/data/ait): data, labels."""
    ait = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ait"
    return ait / "russellmitchell.ocsf.jsonl.gz", ait / "russellmitchell.labels.csv.gz"


def available() -> list[str]:
    names = list(SCENARIOS)
    if _correlation() is not None:
        names.append("correlation")
    return names


def planned(scenario: str, data: Path | None = None, ait: Path | None = None) -> tuple[list[str], str | None]:
    """The scenarios `signoff bench --scenario SCENARIO` runs, and why `all` left one out (else None).

    `all` is every scenario but `waiting`, and `correlation` only where its data is (`--data`, or the
    AIT scenario beside the repository, which a clone does not have): a clean clone's `make bench`
    measures what it can instead of failing after the other scenarios ran.
    """
    if scenario != "all":
        return [scenario], None
    names = [n for n in available() if n != "waiting"]
    default = ait or ait_paths()[0]
    if "correlation" in names and data is None and not default.exists():
        names.remove("correlation")
        return names, (f"correlation skipped: no AIT scenario at {default}; "
                       "`signoff bench -s correlation --data FILE --labels FILE` runs it on yours")
    return names, None


def _correlation() -> Callable[..., Coroutine[Any, Any, dict[str, Any]]] | None:
    try:
        from signoff.bench.correlation import run_correlation
    except ImportError:
        return None
    return run_correlation


def run_scenario(
    name: str,
    cases: int | None = None,
    report: Report | None = None,
    *,
    data: Path | None = None,
    labels: Path | None = None,
) -> dict[str, Any]:
    """Run one scenario and return its result. `cases=None` uses the scenario's default.

    `data`/`labels`: the OCSF scenario and its labels for `correlation` (default: AIT russellmitchell).
    """
    import importlib

    report = report or (lambda *_: None)
    if name == "correlation":
        bench = _correlation()
        if bench is None:
            raise ValueError("the correlation benchmark is not installed (signoff/bench/correlation.py)")
        default_data, default_labels = ait_paths()
        data, labels = data or default_data, labels or (default_labels if data is None else None)
        if not data.exists():
            raise FileNotFoundError(f"the OCSF scenario {data} is missing; pass --data FILE.jsonl[.gz]")
        if labels is None or not labels.exists():
            raise FileNotFoundError(f"the scenario's labels {labels} are missing; pass --labels FILE.csv[.gz]")
        return dict(asyncio.run(bench(data, labels, report=report)))
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {available()} or 'all'")
    module, function, default = SCENARIOS[name]
    fn = getattr(importlib.import_module(module), function)
    n = default if cases is None else cases
    if n < 1:
        raise ValueError("--cases must be at least 1")
    result = fn(n, report)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return dict(result)
