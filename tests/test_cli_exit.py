"""A command that succeeded exits 0: the process must not crash in Python's shutdown after using a
Temporal client. It did, with 134/139 (`PyGILState_Release ... finalizing`, in the SDK runtime's
teardown), in 2-5 of 20 runs under load, and scripts would retry what had already happened. So
`signoff.cli.main` ends the process itself once the command has run and its output is flushed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

SKIPS_SHUTDOWN = """
import atexit, sys
import signoff.cli
atexit.register(lambda: print("interpreter shutdown ran", flush=True))
sys.argv = ["signoff", *sys.argv[1:]]
signoff.cli.main()
"""


def test_main_ends_the_process_without_interpreter_shutdown_and_keeps_exit_codes() -> None:
    def signoff(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", SKIPS_SHUTDOWN, *args], capture_output=True, text=True,
                              timeout=60)

    ok = signoff("--help")
    assert ok.returncode == 0 and "Usage" in ok.stdout and "interpreter shutdown ran" not in ok.stdout
    usage = signoff("no-such-command")
    assert usage.returncode == 2 and "interpreter shutdown ran" not in usage.stdout
    failed = signoff("cases", "--status", "no-such-status")
    assert failed.returncode == 1 and "unknown case status" in failed.stderr


async def test_commands_that_talk_to_temporal_exit_cleanly(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    env = {**os.environ, "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "SIGNOFF_HOME": str(tmp_path)}

    async def signoff(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "signoff.cli", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return proc.returncode or 0, err.decode()

    results = [await signoff("setup") for _ in range(8)]
    assert [code for code, _ in results] == [0] * 8, [err[-300:] for code, err in results if code]
