"""`signoff bench`: performance scenarios against a private dev server on durable SQLite."""

from __future__ import annotations

import platform
import signal
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from signoff.cli._common import emit_json, err, fail, out


def register(app: typer.Typer) -> None:
    app.command(name="bench")(bench)


def bench(
    scenario: str = typer.Option(
        "all", "--scenario", "-s",
        help="pipeline | approval | rollback | scoring | waiting | correlation | all (all = every one but waiting)",
    ),
    cases: int = typer.Option(None, "--cases", "-n", help="number of cases (default: per scenario)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object per scenario, one per line"),
    data: Path = typer.Option(None, "--data", help="correlation: an OCSF .jsonl[.gz] scenario (default: AIT russellmitchell)"),
    labels: Path = typer.Option(None, "--labels", help="correlation: the scenario's per-alert labels .csv[.gz]"),
) -> None:
    """Measure Signoff: the governed pipeline vs bare Temporal, approval and rollback latency, scoring, scale.

    Each server scenario starts its own Temporal dev server (SQLite file, WAL, synchronous=normal)
    on free ports and a worker process, and removes both afterwards. See docs/benchmarks.md.
    """
    from signoff.bench import available, planned, run_scenario

    names, skipped = planned(scenario, data)
    if skipped:
        err.print(skipped, highlight=False)
    unknown = [n for n in names if n not in available()]
    if unknown:
        fail(f"unknown scenario {unknown[0]!r}; choose from {', '.join(available())} or all")
    # A SIGTERM unwinds like Ctrl-C, so the private server and worker are stopped and deleted.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    for name in names:
        with Progress(TextColumn(f"{name}: " + "{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            def report(phase: str, done: int, total: int, bar: Progress = bar, tasks: dict[str, Any] = {},  # noqa: B006
                       name: str = name) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)
                if not err.is_terminal:  # no live bar (a log, CI): a line per phase and per tenth of it
                    tenth = 10 * done // total if total else 0
                    if tasks.get(f"line:{phase}") != tenth:
                        tasks[f"line:{phase}"] = tenth
                        err.print(f"{name}: {phase} {done}/{total or '?'}", highlight=False)

            try:
                result = run_scenario(name, cases, report, data=data, labels=labels)
            except KeyboardInterrupt:
                fail("interrupted", code=130)
            except (RuntimeError, ValueError, FileNotFoundError, TimeoutError) as exc:
                fail(f"{name}: {exc}")
        result["machine"] = _machine()
        if json_out:
            emit_json(result)
        else:
            _print(result)


def _machine() -> dict[str, Any]:
    import os
    from pathlib import Path

    cpu, mem_kb = "", 0
    try:
        models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = models[0].split(":", 1)[1].strip() if models else ""
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "ram_gb": round(mem_kb / 1024**2, 1),
            "python": platform.python_version(), "load_average": os.getloadavg()[0]}


def _print(result: dict[str, Any]) -> None:
    out.print(f"[bold]{result['scenario']}[/]: {result['cases']} cases in {result['seconds']} s "
              f"({result['cases_per_s']} cases/s)")
    for key, value in result.items():
        if key not in ("scenario", "cases", "seconds", "cases_per_s", "machine"):
            out.print(f"  {key}: {value}")
