"""`signoff drift ...`: run the drift check, schedule it, build a model's reference, picture it over time."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from signoff import settings
from signoff.cli._common import emit_json, err, fail, out, run

app = typer.Typer(help="Drift of inputs, scores and analyst overrides against the active model's reference.",
                  no_args_is_help=True)


@app.command()
def check(
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
    dry_run: bool = typer.Option(False, "--dry-run", help="figures only: demote nothing, open no case"),
    alert_type: list[str] = typer.Option(None, "--alert-type", help="only these alert types (repeatable)"),
) -> None:
    """Run the drift check now (the same workflow the Schedule runs) and print the figures."""
    from signoff.autonomy.models import DriftCheckInput, DriftReport
    from workflows.drift import DriftCheckWorkflow

    async def main() -> DriftReport:
        import asyncio

        from signoff.client import connect

        client = await connect()
        handle = await client.start_workflow(
            DriftCheckWorkflow.run, DriftCheckInput(act=not dry_run, alert_types=tuple(alert_type or ())),
            id=f"drift-check-{uuid.uuid4().hex[:12]}", task_queue=settings.task_queue(),
        )
        try:
            err.print(f"drift check {handle.id} started; a worker computes it (up to a minute on large windows) ...",
                      highlight=False)
            with err.status("drift check running"):
                return await asyncio.wait_for(handle.result(), 600)
        except TimeoutError:
            fail(f"the drift check {handle.id} did not finish within 10 minutes: is a worker running?")

    report = run(main())
    if json_out:
        emit_json(report.model_dump(mode="json"))
        return
    print_report(report)


def print_report(report: Any) -> None:
    out.print(f"drift check at {report.at:%Y-%m-%d %H:%M:%S} UTC, model {report.model_id[:12]}, reference "
              f"{report.reference}, window {report.window}", highlight=False)
    table = Table("alert type", "cases", "max feature PSI (feature)", "score PSI", "override rate", "verdicts",
                  "breach")
    for f in report.findings:
        top = next(iter(f.feature_psi_top), "")
        table.add_row(
            f.alert_type, str(f.cases),
            "-" if f.feature_psi_max is None else f"{f.feature_psi_max:.3f} ({top})",
            "-" if f.score_psi is None else f"{f.score_psi:.3f}",
            "-" if f.override_rate is None else f"{f.override_rate:.0%}", str(f.verdicts),
            "[red]yes[/]" if f.breaches else "no",
        )
    out.print(table)
    limits = ", ".join(f"{k} {v:g}" for k, v in report.policy_thresholds.items())
    out.print(f"policy thresholds: {limits}", highlight=False)
    for f in report.findings:
        for b in f.breaches:
            out.print(f"[red]breach[/] {f.alert_type}: {b}", highlight=False)
        if f.note:
            out.print(f"[dim]{f.alert_type}: {f.note}[/]", highlight=False)
    if report.demoted:
        out.print(f"demoted to in_the_loop: {', '.join(report.demoted)}", highlight=False)
    if report.drift_case_id:
        what = ("breach added to the open drift case" if report.drift_case_joined
                else "drift case opened")
        out.print(f"{what}: {report.drift_case_id} (signoff show {report.drift_case_id})", highlight=False)


@app.command()
def schedule(
    every: str = typer.Option(None, help="interval like 15m, 1h (default: policy drift.schedule)"),
) -> None:
    """Create or update the Temporal Schedule that runs the drift check."""
    from activities.drift import create_schedule

    async def main() -> str:
        from signoff.client import connect

        return await create_schedule(await connect(), settings.task_queue(), every, replace=True)

    out.print(run(main()), highlight=False)


@app.command()
def reference(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="the model's training data (GUIDE CSV)"),
    model: str = typer.Option(None, "--model", help="model id (default: the active model)"),
    out_path: Path = typer.Option(None, "--out", help="write here instead of beside the model"),
) -> None:
    """Build a model's drift reference from its training data and out-of-fold scores (its manifest)."""
    from signoff.autonomy.drift import build_reference, save_reference
    from signoff.scoring import model_store
    from signoff.scoring.train import cases_from_guide
    from signoff.sources.guide import read_guide

    try:
        model_id = model_store.resolve(model) if model else model_store.active_model_id()
        manifest = model_store.read_manifest(model_id)
    except model_store.ModelStoreError as exc:
        fail(str(exc))
    oof = manifest.get("oof") or {}
    cases = cases_from_guide(read_guide(data))
    scores = dict(zip(oof.get("case_ids", []), oof.get("benign_confidence", []), strict=False))
    missing = [c for c in cases.case_ids if c not in scores]
    if missing:
        fail(f"{len(missing)} incidents of {data.name} have no out-of-fold score in model {model_id[:12]}'s "
             "manifest: give the data the model was trained on")
    ref = build_reference(cases.alerts, [scores[c] for c in cases.case_ids], model_id, data.name)
    path = save_reference(model_id, ref, out_path)
    out.print(f"drift reference of model {model_id[:12]}: {len(cases)} training incidents, "
              f"{len(ref['by_category'])} categories -> {path}", highlight=False)


@app.command()
def report(
    out_path: Path = typer.Option(Path("drift.html"), "--out", help="self-contained HTML file"),
    limit: int = typer.Option(200, help="newest drift checks drawn"),
) -> None:
    """Drift over time: the results of past drift checks, drawn per alert type (self-contained HTML)."""
    from signoff.autonomy.report import collect, write_html

    async def main() -> list[Any]:
        from signoff.client import connect

        return await collect(await connect(), settings.task_queue(), limit)

    reports = run(main())
    if not reports:
        err.print("no drift check has finished yet: `signoff drift check` runs one")
    path = write_html(reports, out_path)
    out.print(f"{len(reports)} drift checks drawn -> {path}", highlight=False)
