"""`signoff governance report`: the five questions a SOC lead asks, from live state and histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from signoff.cli._common import emit_json, out, run

app = typer.Typer(help="Governance overview for SOC leads and auditors.", no_args_is_help=True)


@app.command("report")
def report(
    html_file: Path = typer.Option(None, "--html", help="also write a self-contained HTML page here"),
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Humans in the loop, traceability, rollback speed, approval tiers, threshold control."""
    from signoff.governance_report import build_report, render_html, render_text

    async def main() -> dict[str, Any]:
        from signoff.client import connect

        return await build_report(await connect())

    data = run(main())
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(render_html(data))
    if json_out:
        emit_json(data)
        return
    out.print(render_text(data), markup=False, highlight=False)
    if html_file is not None:
        out.print(f"HTML report: {html_file}")
