"""Real processes for reliability tests: a dev server on a SQLite file, worker subprocesses.

Everything started here is stopped by the same object (by pid), never by name.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from temporalio.client import Client

from connectors.lab import Lab
from signoff import devserver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_if_alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


class SqliteDevServer:
    """`temporal server start-dev` on `home/temporal.db` (WAL), as `signoff dev` runs it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ui_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Client:
        log = (self.home / "temporal.log").open("ab")
        self.proc = subprocess.Popen(
            devserver.server_command(self.home, self.port, self.ui_port), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        atexit.register(_kill_if_alive, self.proc)  # also when the test run is interrupted
        client = await devserver.wait_ready(self.address, attempts=300)
        await devserver.register_search_attributes(client)
        return client

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server (SIGTERM: a clean shutdown) and wait for it to exit; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait, 30)


class WorkerProcess:
    """`python -m signoff.cli worker` against a server, sharing the lab estate under `home`."""

    def __init__(self, address: str, task_queue: str, home: Path, name: str, **env: str) -> None:
        self.log_path = home / f"worker-{name}.log"
        environment = {**os.environ, "TEMPORAL_ADDRESS": address, "SIGNOFF_TASK_QUEUE": task_queue,
                       "SIGNOFF_HOME": str(home), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signoff.cli", "worker"], stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, start_new_session=True,
        )
        atexit.register(_kill_if_alive, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        await asyncio.to_thread(self.proc.wait, 60)


def writes_per_key(lab: Lab, keys: Iterable[str]) -> dict[str, int]:
    """Changes the lab really made per idempotency key (repeats of the same change not counted)."""
    wanted = set(keys)
    counts: Counter[str] = Counter()
    for call in lab.calls():
        if call["key"] in wanted and not call["repeat"]:
            counts[call["key"]] += 1
    return {key: counts.get(key, 0) for key in wanted}


def repeats_per_key(lab: Lab, keys: Iterable[str]) -> dict[str, int]:
    wanted = set(keys)
    counts: Counter[str] = Counter(c["key"] for c in lab.calls() if c["key"] in wanted and c["repeat"])
    return {key: counts.get(key, 0) for key in wanted}


async def gather_limited(coros: Iterable, limit: int = 32) -> list:  # type: ignore[type-arg]
    gate = asyncio.Semaphore(limit)

    async def run(coro):  # type: ignore[no-untyped-def]
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def skip_time(env, duration) -> bool:  # type: ignore[no-untyped-def]
    """Skip time on the time-skipping server; False when it could not skip all of it.

    The test server cannot skip while an activity runs in real time (this test's or another's on
    the shared server); its sleep RPC then times out, which only means less time passed."""
    from temporalio.service import RPCError

    try:
        await env.sleep(duration)
        return True
    except RPCError:  # "Timeout expired", or a transient transport error under load
        await asyncio.sleep(0.2)
        return False


async def wait_view(handle, predicate, what: str, attempts: int = 12000):  # type: ignore[no-untyped-def]
    """Query a case until `predicate(view)`. Under load a query can time out while the case's
    workflow task runs its local activities: that is retried, not failed."""
    from temporalio.service import RPCError

    from workflows.case import CaseWorkflow

    view = None
    for _ in range(attempts):
        try:
            view = await handle.query(CaseWorkflow.status)
        except RPCError as exc:
            if "timeout" not in str(exc).lower() and "deadline" not in str(exc).lower():
                raise
            await asyncio.sleep(0.5)
            continue
        if predicate(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"case {handle.id} never reached: {what}; last view: {view}")


async def retry_update(handle, update, arg, update_id: str, attempts: int = 20):  # type: ignore[no-untyped-def]
    """An update by id, re-sent when the RPC times out under load (same id: Temporal dedups it)."""
    from temporalio.service import RPCError

    for attempt in range(attempts):
        try:
            return await handle.execute_update(update, arg, id=update_id)
        except RPCError as exc:
            if attempt + 1 == attempts or ("timeout" not in str(exc).lower() and "deadline" not in str(exc).lower()):
                raise
            await asyncio.sleep(1)
    return None
