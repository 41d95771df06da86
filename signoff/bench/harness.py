"""The benchmark bench: a private Temporal dev server on durable SQLite and a worker process.

Each benchmark run starts its own `temporal server start-dev` on free loopback ports with a fresh
SQLite file (WAL, synchronous=normal: signoff.devserver.SQLITE_PRAGMAS) in a temporary directory,
registers Signoff's search attributes, and runs the worker as a separate process (as in
production: server, worker and load generator each get a process). Everything is torn down and
deleted at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client

from signoff import devserver

Progress = Callable[[int, int], None]


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MiB (Linux /proc); field="VmHWM" gives the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Bench:
    client: Client
    address: str
    task_queue: str
    home: Path
    server: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    worker_settings: dict[str, Any] = field(default_factory=dict)

    async def count(self, query: str) -> int:
        return (await self.client.count_workflows(f"TaskQueue='{self.task_queue}' AND ({query})")).count

    async def wait_count(self, query: str, target: int, *, timeout: float, progress: Progress | None = None,
                         interval: float = 0.1) -> float:
        """Poll visibility until `target` workflows match; returns the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.count(query)
            if progress:
                progress(found, target)
            if found >= target:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {found}/{target} workflows matched {query!r} after {timeout:.0f} s; "
                    f"see the worker log {self.home / 'worker.log'}"
                )
            self.check_alive()
            await asyncio.sleep(interval)

    def check_alive(self) -> None:
        for name, proc in (("worker", self.worker), ("dev server", self.server)):
            if proc.poll() is not None:
                log = self.home / ("worker.log" if name == "worker" else "temporal.log")
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BenchError(f"the benchmark {name} exited with code {proc.returncode}:\n{tail}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the dev server, the worker and this load generator."""
        own = os.times()
        return {"server": cpu_seconds(self.server.pid), "worker": cpu_seconds(self.worker.pid),
                "client": own.user + own.system}

    def worker_rss_mb(self, field: str = "VmRSS") -> float:
        return rss_mb(self.worker.pid, field)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the process and nothing else we did not start
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, ui_port = free_port(), free_port()
    cmd = [*devserver.server_command(home, port, ui_port), "--headless"]
    log = (home / "temporal.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not devserver.port_open(port):
        if proc.poll() is not None:
            raise BenchError(f"the dev server exited with code {proc.returncode}; see {home / 'temporal.log'}")
        if time.monotonic() > deadline:
            _stop(proc)
            raise BenchError(f"the dev server did not listen on {address} within 60 s")
        time.sleep(0.1)
    return proc, address


def _start_worker(home: Path, address: str, task_queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # The SDK core logs to stdout: it goes to the log file (a pipe nobody reads would fill and block it).
    log = (home / "worker.log").open("ab")
    ready = home / "worker.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "signoff.bench.workerproc", "--address", address, "--task-queue", task_queue,
         "--ready-file", str(ready)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            tail = (home / "worker.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"the benchmark worker did not start:\n{tail}")
        time.sleep(0.05)
    return proc


@asynccontextmanager
async def bench(worker_env: dict[str, str] | None = None, keep: bool = bool(os.environ.get("SIGNOFF_BENCH_KEEP"))) -> AsyncIterator[Bench]:
    """A private dev server (durable SQLite) plus a worker process; `SIGNOFF_HOME` points at a temp dir."""
    home = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    previous_home = os.environ.get("SIGNOFF_HOME")
    os.environ["SIGNOFF_HOME"] = str(home)
    server = worker = None
    try:
        server, address = await asyncio.to_thread(_start_server, home)
        client = await devserver.wait_ready(address)
        await devserver.register_search_attributes(client)
        task_queue = f"bench-{os.getpid()}-{int(time.time())}"
        env = {**os.environ, "SIGNOFF_HOME": str(home), "TEMPORAL_ADDRESS": address, **(worker_env or {})}
        if "SIGNOFF_BENCH_NO_PYC" not in env:
            # Bytecode caching on (outside the source tree): the workflow sandbox re-imports the
            # workflow module for every new workflow run, and without .pyc files it recompiles it.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "signoff-bench-pycache"))
        worker = await asyncio.to_thread(_start_worker, home, address, task_queue, env)
        settings = json.loads((home / "worker.ready").read_text())
        settings.pop("pid", None)
        yield Bench(client=client, address=address, task_queue=task_queue, home=home, server=server, worker=worker,
                    worker_settings=settings)
    finally:
        _stop(worker)
        _stop(server)
        if previous_home is None:
            os.environ.pop("SIGNOFF_HOME", None)
        else:
            os.environ["SIGNOFF_HOME"] = previous_home
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
