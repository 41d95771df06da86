"""`signoff audit`: export and verify the tamper-evident audit trail; archive closed cases; codec server."""

from __future__ import annotations

from pathlib import Path

import typer

from signoff.cli._common import emit_json, err, fail, out, plural, run

app = typer.Typer(help="The audit trail: export it (hash-chained JSON Lines), verify it, archive histories.",
                  no_args_is_help=True)


@app.command("export")
def export_cmd(
    out_file: Path = typer.Option(..., "--out", help="where to write the JSON Lines trail"),
    since: str = typer.Option(None, help="only events at or after this time (ISO, or a duration back: 24h, 7d)"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Every governance event from case and governance histories (live + archived) and refused updates."""
    from signoff.audit import export, parse_since

    try:
        cutoff = parse_since(since)
    except ValueError as exc:
        fail(str(exc))
    if out_file.is_dir():  # said now, not after reading every history
        fail(f"--out {out_file} is a directory: give the trail's file name, e.g. --out {out_file / 'trail.jsonl'}")

    async def main() -> dict:  # type: ignore[type-arg]
        from signoff.client import connect

        return await export(await connect(), out_file, cutoff)

    err.print(f"exporting the audit trail to {out_file}: reading every case and governance history ...",
              highlight=False)
    with err.status("reading histories"):
        summary = run(main())
    if json_out:
        emit_json(summary)
        return
    out.print(f"wrote {plural(summary['events'], 'event')} ({plural(summary['case_runs'], 'case run')}, "
              f"{plural(summary['governance_runs'], 'governance run')}; {summary['archived_histories']} from the "
              f"archive) to {summary['file']}")
    out.print(f"digest {summary['digest']}  (recorded in audit/exports.jsonl; check with `signoff audit verify`)")


@app.command("verify")
def verify_cmd(
    file: Path = typer.Argument(..., help="an exported trail"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Check every hash and link; name each edited, deleted, inserted or reordered line. Exit 1 if any."""
    from signoff.audit import NotATrail, verify_file

    if file.is_dir():
        fail(f"{file} is a directory: give the exported trail's file")
    try:
        result = verify_file(file)
    except (FileNotFoundError, NotATrail) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result.as_json())
    elif result.ok:
        out.print(result.summary(), highlight=False, markup=False)
        for warning in result.warnings:
            out.print(f"warning: {warning}", highlight=False, markup=False)
    else:
        out.print(f"[bold red]TAMPERED[/]: {len(result.issues)} problem(s) in {file}", highlight=False)
        for issue in result.issues:
            out.print(f"  line {issue.line}: {issue.problem}: {issue.message}", highlight=False, markup=False)
    if not result.ok:
        raise typer.Exit(1)


@app.command("archive")
def archive_cmd() -> None:
    """Store the complete history of every closed case under .signoff/audit/archive (Temporal deletes them)."""
    from signoff.audit import archive_closed

    async def main() -> int:
        from signoff.client import connect

        return await archive_closed(await connect())

    out.print(f"archived {plural(run(main()), 'closed case history', 'closed case histories')}")


@app.command("codec-server")
def codec_server_cmd(
    port: int = typer.Option(8081, help="port on 127.0.0.1"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    origin: str = typer.Option("http://localhost:8233,http://127.0.0.1:8233",
                               help="Temporal UI origins allowed by CORS (comma separated)"),
) -> None:
    """Temporal's /encode and /decode endpoints, so authorised UI users read encrypted histories."""
    from signoff.codec import serve

    try:
        serve(host=host, port=port, origins=[o.strip() for o in origin.split(",")])
    except ValueError as exc:
        fail(str(exc))
