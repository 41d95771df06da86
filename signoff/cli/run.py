"""Running Signoff: the embedded dev server, workers, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from signoff import devserver, settings
from signoff.cli._common import emit_json, err, fail, out, plural, print_error, require_policy
from signoff.cli._common import run as run_async

if TYPE_CHECKING:
    from temporalio.worker import Worker


def register(app: typer.Typer) -> None:
    app.command()(dev)
    app.command()(worker)
    app.command()(demo)
    app.command()(stop)
    app.command()(setup)


def dev_banner(address: str) -> list[str]:
    """What a production dry run on the embedded server must know: which policy the worker runs (and
    whether it counts unsigned approvals), and, with payloads encrypted, how the UI and the `temporal`
    CLI read them (QA6: nothing said so; `temporal workflow update` showed refusals as "Encoded failure")."""
    from policies.loader import load_policy, policy_path

    policy = load_policy()
    trust = policy.deployment.trust_unsigned_approvals
    lines = [f"policy {policy_path()} (sha256 {policy.digest()[:12]}): unsigned approvals "
             + ("counted (lab)" if trust else "refused: decide with `signoff approve` and an approver key")]
    if devserver._encryption_on():
        codec = f"http://127.0.0.1:{devserver.CODEC_PORT}"
        lines.append(f"payloads encrypted: the UI decodes them through the codec server at {codec}; the temporal "
                     f"CLI needs --address {address} --codec-endpoint {codec}")
    return lines


def dev(
    port: int = typer.Option(devserver.GRPC_PORT, help="Temporal frontend port (default: $SIGNOFF_DEV_PORT or 7233)"),
    ui_port: int = typer.Option(devserver.UI_PORT, help="Temporal Web UI port (default: $SIGNOFF_UI_PORT or 8233)"),
) -> None:
    """Start the embedded Temporal dev server (SQLite under .signoff/) and a worker, in the foreground.

    Ctrl-C or SIGTERM stops this worker only: the server keeps running for the UI and `signoff cases`.

    `signoff stop` stops both (this worker first). If the server exits, this worker stops with it.
    """
    from activities.executors import MissingExecutorError

    require_policy()  # a bad policy refuses to start here, not case by case in the worker log
    home = settings.home()
    try:
        with devserver.dev_pid_file(home) as pid_file:
            address, server = devserver.launch_server(home, port, ui_port)
            server_pid = server.pid if server else devserver.server_pid(home, port)

            async def main() -> str:
                from signoff.worker import build_worker

                client = await devserver.wait_ready(address)
                added = await devserver.register_search_attributes(client)
                if added:
                    err.print(f"registered search attributes: {', '.join(added)}")
                out.print(f"Temporal at [bold]{address}[/], UI at [bold]{devserver.ui_address(ui_port)}[/]")
                out.print(f"state in {home}; worker on task queue {settings.task_queue()} "
                          "(Ctrl-C stops the worker, the server keeps running; `signoff stop` stops both)")
                for line in dev_banner(address):
                    out.print(line, highlight=False, markup=False, soft_wrap=True)
                return await _work_until_stopped(build_worker(client), server, server_pid)

            try:
                why = run_async(main())
            except KeyboardInterrupt:  # Ctrl-C before the worker ran
                why = "SIGINT"
            if why == "server":
                if server is not None:  # the server this command started is gone: so is its pid file's meaning
                    with contextlib.suppress(FileNotFoundError):
                        if (home / "temporal.pid").read_text().strip() == str(server.pid):
                            (home / "temporal.pid").unlink()
                print_error(f"the Temporal dev server (pid {server_pid}) exited, so this worker stopped too (it would "
                            "otherwise poll a later server with this process's policy); run `signoff dev` to start "
                            f"both again (server log: {home / 'temporal.log'})")
                raise typer.Exit(1)
            if why == "SIGTERM" and not pid_file.exists():
                err.print("worker stopped by `signoff stop`")
            else:
                err.print("worker stopped; the dev server keeps running (`signoff stop` ends it)")
    except (devserver.DevServerError, MissingExecutorError) as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None


async def _work_until_stopped(
    worker: Worker, server: subprocess.Popen[bytes] | None, server_pid: int | None
) -> str:
    """Run `worker` until SIGINT/SIGTERM or the exit of the server it was started with; returns why it stopped:
    "SIGINT", "SIGTERM" or "server". A worker error propagates."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    why: list[str] = []

    def stop_on(name: str) -> None:
        why.append(name)
        stopped.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_on, sig.name)
    running = asyncio.create_task(worker.run())
    signalled = asyncio.create_task(stopped.wait())
    try:
        while not running.done() and not stopped.is_set():
            await asyncio.wait({running, signalled}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            gone = server.poll() is not None if server else (server_pid is not None
                                                              and not devserver.process_running(server_pid))
            if gone and not stopped.is_set():
                why.append("server")
                stopped.set()
        if running.done():
            running.result()  # the worker failed on its own: its error, not a quiet exit
            return why[0] if why else "worker"
        try:
            await asyncio.wait_for(worker.shutdown(), timeout=20)
        except TimeoutError:
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running  # an error while stopping is not news: the worker is going away as asked
        return why[0]
    finally:
        signalled.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def worker(
    address: str = typer.Option(None, envvar="TEMPORAL_ADDRESS", help="Temporal frontend host:port"),
    task_queue: str = typer.Option(None, envvar="SIGNOFF_TASK_QUEUE", help="task queue to poll"),
) -> None:
    """Run a worker against TEMPORAL_ADDRESS (default localhost:7233). Scale by running more."""
    from activities.executors import MissingExecutorError
    from signoff.worker import run_worker

    require_policy()  # before connecting: a bad policy would leave every case stuck in triage
    with contextlib.suppress(KeyboardInterrupt):
        try:
            run_async(run_worker(address, task_queue))
        except MissingExecutorError as exc:  # a playbook action this worker cannot run: say which, exit 1
            fail(str(exc))


def setup(
    address: str = typer.Option(None, envvar="TEMPORAL_ADDRESS", help="Temporal frontend host:port"),
) -> None:
    """Prepare a Temporal cluster for Signoff: register its search attributes (idempotent)."""

    async def main() -> list[str]:
        client = await devserver.wait_ready(address or settings.temporal_address(), attempts=150)
        return await devserver.register_search_attributes(client)

    added = run_async(main())
    out.print("registered: " + ", ".join(added) if added else "search attributes already registered")


def stop() -> None:
    """Stop the embedded dev server, the background worker of `signoff demo` and a running `signoff dev`."""
    home = settings.home_path()  # not created: stopping reads its pid files only
    stopped = devserver.stop(home) if home.is_dir() else []
    if stopped:
        out.print("stopped " + ", ".join(stopped))
        return
    # Stopping nothing is not an error (exit 0: `signoff stop` is safe in cleanup scripts and twice in a
    # row), but QA5 found it said too little when run from the wrong directory: name the SIGNOFF_HOME it
    # read, say whether anything was ever started from it, and how to find the right one.
    if not home.is_dir():
        which = "" if os.environ.get("SIGNOFF_HOME") else "unset, so ./.signoff of this directory; "
        out.print(f"nothing was running from {home}: nothing was started from this SIGNOFF_HOME ({which}"
                  f"{home} does not exist); nothing stopped", highlight=False, soft_wrap=True)
    else:
        out.print(f"nothing was running from {home} (no live temporal.pid, worker.pid or dev.pid there)",
                  highlight=False, soft_wrap=True)
    address = settings.temporal_address()
    if _answers(address):
        err.print(
            f"[yellow]a server still answers at {address}[/]: it was started with another state directory. "
            "Run `signoff stop` in the directory where `signoff demo` or `signoff dev` was started, "
            "or set SIGNOFF_HOME to that directory's .signoff (the path `signoff dev` printed after \"state in\").",
            highlight=False, soft_wrap=True,
        )
    else:
        err.print("to stop what `signoff demo` or `signoff dev` started elsewhere: run `signoff stop` in the directory "
                  "they ran in, or `SIGNOFF_HOME=THAT_DIR/.signoff signoff stop` (the path they printed after "
                  "\"state in\")", highlight=False, soft_wrap=True, markup=False)


def _answers(address: str) -> bool:
    """Whether something accepts TCP connections at host:port (a quick check, no Temporal call)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def demo_slice() -> Path:
    return Path(str(resources.files("signoff").joinpath("data/guide_demo.csv")))


def demo(
    data: Path = typer.Option(None, help="GUIDE CSV to ingest (default: the slice shipped with Signoff)"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    wait: float = typer.Option(120.0, help="seconds to wait for the cases to settle"),
) -> None:
    """The main job: dev server + worker, ingest real GUIDE incidents, score, decide, act, wait for sign-off.

    Ports 7233 and 8233 (UI); SIGNOFF_DEV_PORT / SIGNOFF_UI_PORT move them and `signoff` commands follow."""
    require_policy()  # before the server and the background worker start
    home = settings.home()
    data = data or demo_slice()
    _say_which_server(home)
    try:
        address = devserver.start_server(home)
    except devserver.DevServerError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    os.environ["TEMPORAL_ADDRESS"] = address

    async def main() -> dict:
        from signoff.ingest import ingest_path

        client = await devserver.wait_ready(address)
        await devserver.register_search_attributes(client)
        pid = devserver.start_worker_process(home, address)
        err.print(f"worker running in the background (pid {pid}, log {home / 'worker.log'})")
        with Progress(TextColumn("ingesting {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task(data.name, total=None)
            summary = await ingest_path(client, data, "guide",
                                        progress=lambda done, total: bar.update(task, completed=done, total=total))
        case_ids = summary.case_ids
        if summary.duplicates:  # a re-run: the slice's cases were opened before; show them, not an empty table
            from signoff.sources.guide import read_guide

            case_ids = sorted({*case_ids, *(i.case_id for i in read_guide(data).incidents)})
        statuses = await _settle(client, case_ids, wait)
        examples = await _examples(client, case_ids)
        return {"ingest": summary.as_json(), "statuses": dict(statuses), "case_ids": case_ids, "examples": examples}

    result = run_async(main())
    if json_out:
        emit_json({**result["ingest"], "statuses": result["statuses"], "examples": result["examples"],
                   "ui": devserver.ui_address()})
        return
    _print_demo(result)


def _say_which_server(home: Path, port: int | None = None) -> None:
    """Whether `signoff demo` starts the embedded server or uses one already listening on its port.

    QA: a second `signoff demo`, or one with another SIGNOFF_HOME, said "starting the embedded Temporal
    dev server (state in HOME)" while it used a server started elsewhere: the cases were not in that
    HOME, and `signoff stop` there said nothing was running."""
    port = devserver.GRPC_PORT if port is None else port
    if not devserver.port_open(port):
        err.print(f"starting the embedded Temporal dev server (state in {home}) ...")
        return
    address = f"127.0.0.1:{port}"
    if devserver.server_pid(home, port) or devserver.dev_pid(home):
        err.print(f"using the embedded Temporal dev server already running at {address} (state in {home})")
        return
    err.print(f"[yellow]using the Temporal server already listening at {address}[/]: it was not started from "
              f"{home}, so its state is not there and `signoff stop` here stops only this demo's worker "
              "(set SIGNOFF_DEV_PORT for a server of your own)", highlight=False)


async def _settle(client, case_ids: list[str], wait: float) -> Counter:  # type: ignore[no-untyped-def]
    """Wait until no case is still in triage, then count cases by status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    wanted = set(case_ids)
    while True:
        statuses: Counter = Counter()
        async for wf in client.list_workflows("WorkflowType='CaseWorkflow'"):
            if wf.id in wanted:
                values = wf.typed_search_attributes
                from signoff.search_attributes import CASE_STATUS

                statuses[values.get(CASE_STATUS) or "open"] += 1
        busy = statuses.get("triage", 0) + statuses.get("open", 0) + (len(wanted) - sum(statuses.values()))
        if busy == 0 or loop.time() > deadline:
            if busy:
                err.print(f"[yellow]{plural(busy, 'case')} still settling after {wait:.0f} s; see `signoff cases`[/]")
            return statuses
        await asyncio.sleep(1.0)


# Which cases the summary shows as examples: one waiting for sign-off, then cases waiting for a verdict.
EXAMPLE_WANTED = {"awaiting_approval": 1, "awaiting_verdict": 2}


async def _examples(client, case_ids: list[str], most_queries: int = 60) -> list[dict]:  # type: ignore[no-untyped-def]
    """A few scored cases, read from the cases themselves (`status` query): what the model said and why.
    The one waiting for sign-off is, where there is one, a case the model sent to its playbook."""
    from signoff.explain import contribution_text
    from signoff.models import StepState
    from workflows.case import CaseWorkflow

    candidates: dict[str, list[dict]] = {status: [] for status in EXAMPLE_WANTED}
    for case_id in case_ids[:most_queries]:
        try:
            view = await client.get_workflow_handle(case_id).query(CaseWorkflow.status)
        except Exception:  # noqa: BLE001 - an example is optional; the summary stands without it
            continue
        if view.score is None or view.status.value not in candidates:
            continue
        s = view.score
        candidates[view.status.value].append({
            "case_id": case_id, "status": view.status.value, "alert_type": view.alert_type,
            "predicted": s.predicted.value, "confidence": s.confidence, "benign_confidence": s.benign_confidence,
            "model": s.model_id[:12], "decision": view.decision.kind.value if view.decision else "",
            "decision_reason": view.decision.reason if view.decision else "",
            "waiting_on": next((st.step_id for st in view.steps if st.state == StepState.awaiting_approval), ""),
            "why": [contribution_text(c, s.predicted.value) for c in s.contributions[:2]],
        })
    # a case the model sent to its playbook first (stable sort: otherwise the listing order)
    candidates["awaiting_approval"].sort(key=lambda e: e["decision"] != "respond")
    found: list[dict] = []
    for status, count in EXAMPLE_WANTED.items():
        found += candidates[status][:count]
    return found


def _print_examples(examples: list[dict]) -> None:
    if not examples:
        return
    out.print("\n[bold]Scored cases[/] (examples; `signoff explain CASE` tells the whole story from its history)")
    for ex in examples:
        waiting = f" (waiting on {ex['waiting_on']})" if ex["waiting_on"] else ""
        out.print(f"  [bold]{ex['case_id']}[/]  {ex['alert_type']}  {ex['status']}{waiting}")
        out.print(f"      predicted {ex['predicted']}, calibrated confidence {ex['confidence']:.2f}, "
                  f"P(not a true positive) {ex['benign_confidence']:.3f} (model {ex['model']})")
        out.print(f"      decision {ex['decision']}: {escape(ex['decision_reason'][:140])}")
        for line in ex["why"]:
            out.print(f"      {escape(line)}")


def _print_demo(result: dict) -> None:
    ingest = result["ingest"]
    # The dead-letter file is only written when a record is rejected.
    rejects = f"dead letter: {escape(ingest['dead_letter'])}" if ingest["rejected"] else "no rejected records"
    out.print(
        f"\n[bold]Ingested[/] {plural(ingest['records'], 'alert')} from {escape(ingest['source'])}: "
        f"{ingest['accepted']} accepted, {ingest['rejected']} rejected ({rejects}), "
        f"{ingest['duplicates']} already known; {plural(ingest['cases_opened'], 'case')} opened, "
        f"{ingest['cases_updated']} updated."
    )
    table = Table(title="Cases by status", show_lines=False)
    table.add_column("status")
    table.add_column("cases", justify="right")
    for status, count in sorted(result["statuses"].items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(count))
    out.print(table)
    _print_examples(result.get("examples", []))
    out.print(f"\nTemporal UI: [bold]{devserver.ui_address()}[/]  (filter: CaseStatus=\"awaiting_approval\")")
    out.print("Next steps:")
    out.print("  signoff cases --status awaiting_approval      # the approval queue")
    first = next(iter(result.get("examples", [])), None)
    case = first["case_id"] if first else "CASE"
    out.print(f"  signoff show {case:<32} # one case: alerts, score, steps, what it waits on")
    out.print(f"  signoff explain {case:<29} # why: features, score, threshold, policy, approvals")
    gated = next((e for e in result.get("examples", []) if e["waiting_on"]), None)
    approve = f"{gated['case_id']} {gated['waiting_on']}" if gated else "CASE STEP"
    out.print(f"  signoff approve {approve} --as bob --reason 'confirmed'")
    out.print(f"  signoff rollback {gated['case_id'] if gated else 'CASE'} --as carol --reason 'false positive'"
              "   # after it ran: undo, newest first")
    out.print("  signoff stop                                  # stop the dev server and worker")
