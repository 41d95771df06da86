"""QA defects in the CLI lifecycle: each test failed before its fix.

1. A bad policy file gave a 40-line traceback (`signoff policy show`), and `signoff dev`/`worker`/`demo`
   started with it (cases then sat in triage while the worker log repeated the error).
2. `signoff stop` stopped the dev server but not the `signoff dev` worker, which then polled the next
   server with its old policy; and that worker kept polling after its server was gone.

`signoff` runs as an analyst runs it: a new process, on free ports (never 7233) with its own SIGNOFF_HOME.
Every process a test starts is stopped by its pid at the end, whatever happened.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from signoff import devserver
from signoff.cli import app
from signoff.cli._common import policy_error_line
from tests.reliability_kit import free_port

REPO = Path(__file__).resolve().parent.parent
BAD_YAML = "alert_types: [\n  malware: {\n"
BAD_SCHEMA = "alert_types: 5\n"
STARTUP_GUARD = 90.0  # a hung start fails the test instead of hanging the run (not a speed assertion)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SIGNOFF_POLICY", "TEMPORAL_ADDRESS", "SIGNOFF_CODEC_KEY", "SIGNOFF_CODEC_KEY_FILE")}
    env.update(SIGNOFF_HOME=str(home), SIGNOFF_DEV_PORT=str(free_port()), SIGNOFF_UI_PORT=str(free_port()),
               SIGNOFF_TASK_QUEUE=f"tq-{uuid.uuid4()}", PYTHONPATH=str(REPO), COLUMNS="200", **extra)
    return env


def _signoff(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _bad_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- 1: bad policies


@pytest.mark.parametrize(("text", "says"), [(BAD_YAML, "is not valid YAML"), (BAD_SCHEMA, "alert_types"),
                                            (None, "not found")])
def test_policy_show_with_a_bad_policy_is_one_line_and_exit_1(tmp_path: Path, text: str | None, says: str) -> None:
    path = _bad_policy(tmp_path, text) if text is not None else tmp_path / "missing.yaml"
    result = _signoff("policy", "show", env=_env(tmp_path / "home", SIGNOFF_POLICY=str(path)))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: policy file {path}") and says in lines[0]
    assert "SIGNOFF_POLICY" in lines[0]  # what to do next
    assert result.stdout == ""


def test_policy_show_in_process_exits_1_without_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_POLICY", str(_bad_policy(tmp_path, BAD_YAML)))
    result = CliRunner().invoke(app, ["policy", "show"])
    assert result.exit_code == 1
    assert not isinstance(result.exception, PolicyError)


def test_policy_error_lines_name_the_file_the_place_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as yaml_error:
        load_policy(_bad_policy(tmp_path, BAD_YAML))
    line = policy_error_line(yaml_error.value)
    assert "\n" not in line and str(tmp_path / "bad.yaml") in line
    assert "line 3" in line or "line 2" in line  # where in the file
    with pytest.raises(ValidationError) as raw:  # a pydantic error reaching the CLI directly
        Policy.model_validate({"alert_types": 5})
    line = policy_error_line(raw.value)
    assert "\n" not in line and "alert_types" in line and "SIGNOFF_POLICY" in line


@pytest.mark.parametrize("command", ["worker", "dev", "demo"])
def test_commands_that_start_work_refuse_a_bad_policy_before_connecting_or_starting(
        tmp_path: Path, command: str) -> None:
    home = tmp_path / "home"
    with socket.socket() as listener:  # where the command would connect (worker) or serve (dev, demo)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        env = _env(home, SIGNOFF_POLICY=str(_bad_policy(tmp_path, BAD_SCHEMA)),
                   TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
        result = _signoff(command, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("error: policy file") and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: the policy was checked first
    assert not devserver.port_open(int(env["SIGNOFF_DEV_PORT"]))  # no server was started
    assert not (home / "temporal.pid").exists() and not (home / "dev.pid").exists()
    assert not (home / "worker.pid").exists()


# ---------------------------------------------------------------- 2: `signoff dev` and `signoff stop`


class Dev:
    """`signoff dev` in a new process; `close()` kills whatever it and its server left, by pid."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = _env(home)
        self.port = int(self.env["SIGNOFF_DEV_PORT"])
        self.stdout = home.parent / "dev.out"
        self.stderr = home.parent / "dev.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signoff.cli", "dev"], env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=self.stdout.open("wb"), stderr=self.stderr.open("wb"),
            # an interactive shell's foreground job takes Ctrl-C; a non-interactive parent may ignore SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.server_pid: int | None = None

    def wait_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_GUARD
        while "state in" not in self.stdout.read_text():
            if self.proc.poll() is not None:
                pytest.fail(f"`signoff dev` exited with {self.proc.returncode}: {self.stderr.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"`signoff dev` did not start within {STARTUP_GUARD} s: {self.stderr.read_text()}")
            time.sleep(0.1)
        self.server_pid = int((self.home / "temporal.pid").read_text())

    def wait_exit(self) -> int:
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.server_pid and devserver.process_running(self.server_pid):
            os.killpg(self.server_pid, signal.SIGKILL)  # its own session, started by this test's `signoff dev`


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    started = Dev(tmp_path / "home")
    try:
        started.wait_serving()
        yield started
    finally:
        started.close()


def test_stop_ends_the_dev_worker_and_its_server(dev: Dev) -> None:
    assert (dev.home / "dev.pid").read_text().strip() == str(dev.proc.pid)
    assert dev.server_pid is not None and devserver.process_running(dev.server_pid)

    # A second `signoff dev` from the same state directory is refused (it would orphan the first one).
    second = _signoff("dev", env=dev.env)
    assert second.returncode == 1 and "already running" in second.stderr and str(dev.proc.pid) in second.stderr

    result = _signoff("stop", env=dev.env)
    assert result.returncode == 0, result.stderr
    assert f"signoff dev (pid {dev.proc.pid})" in result.stdout
    assert f"temporal (pid {dev.server_pid})" in result.stdout
    assert result.stdout.startswith("stopped ")
    assert dev.wait_exit() == 0
    assert "worker stopped by `signoff stop`" in dev.stderr.read_text()
    assert not devserver.process_running(dev.server_pid)  # `signoff stop` returns once they are gone
    assert not devserver.port_open(dev.port)
    assert not (dev.home / "dev.pid").exists() and not (dev.home / "temporal.pid").exists()

    again = _signoff("stop", env=dev.env)
    assert again.returncode == 0 and "nothing was running" in again.stdout


def test_the_dev_worker_stops_when_its_server_exits(dev: Dev) -> None:
    assert dev.server_pid is not None
    os.kill(dev.server_pid, signal.SIGKILL)  # the server `signoff dev` started (and this test, through it)
    assert dev.wait_exit() == 1
    stderr = dev.stderr.read_text()
    assert f"the Temporal dev server (pid {dev.server_pid}) exited, so this worker stopped too" in stderr
    assert "Traceback" not in stderr
    assert not (dev.home / "dev.pid").exists() and not (dev.home / "temporal.pid").exists()
    result = _signoff("stop", env=dev.env)
    assert "nothing was running" in result.stdout


def test_ctrl_c_stops_the_dev_worker_and_leaves_the_server_for_stop(dev: Dev) -> None:
    dev.proc.send_signal(signal.SIGINT)
    assert dev.wait_exit() == 0
    assert "worker stopped; the dev server keeps running (`signoff stop` ends it)" in dev.stderr.read_text()
    assert dev.server_pid is not None and devserver.process_running(dev.server_pid)
    assert devserver.port_open(dev.port)
    assert not (dev.home / "dev.pid").exists()

    result = _signoff("stop", env=dev.env)
    assert result.returncode == 0
    assert result.stdout.strip() == f"stopped temporal (pid {dev.server_pid})"
    assert not devserver.process_running(dev.server_pid)
