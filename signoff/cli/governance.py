"""`signoff governance report`: the five questions a SOC lead asks, from live state and histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from signoff.cli._common import emit_json, out, run

app = typer.Typer(help="Governance overview for SOC leads and auditors.", no_args_is_help=True)


@app.command("report")
def report(
    html: bool = typer.Option(False, "--html", help="also write a self-contained HTML page: to PATH, or without "
                                                    "one to reports/governance-<time>.html in the state directory "
                                                    "(the path is printed)"),
    # QA9: `--html` needed a path. A flag and an optional argument: `--html report.html` works as before.
    path: Path = typer.Argument(None, metavar="PATH", help="where `--html` writes the page"),
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Humans in the loop, traceability, rollback speed, approval tiers, threshold control."""
    from signoff.governance_report import build_report, render_html, render_text

    async def main() -> dict[str, Any]:
        from signoff.client import connect

        return await build_report(await connect())

    data = run(main())
    html_file = path if path is not None else _default_html() if html else None
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(render_html(data))
    if json_out:  # one JSON object: it names the page it wrote
        emit_json({**data, "html_file": str(html_file)} if html_file is not None else data)
        return
    out.print(render_text(data), markup=False, highlight=False)
    if html_file is not None:
        out.print(f"HTML report: {html_file}", markup=False, highlight=False)


def _default_html() -> Path:
    """A page of its own per run, beside the case archives and the audit records."""
    from datetime import UTC, datetime

    from signoff import settings

    return settings.home() / "reports" / f"governance-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.html"
