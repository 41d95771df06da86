"""The worker's runtime levers: the sandbox's compile cache, the warm-up, the default-model id cache.

Speed is for `signoff bench`; these tests check that the levers keep behaviour: the sandbox still
refuses non-deterministic calls, the warm-up loads what a case needs and never stops a worker
without a model, and a reinstalled model is hashed again.
"""

from __future__ import annotations

import gc
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from signoff import sandbox
from signoff.sandbox import CompiledOnceRunner, workflow_runner


@workflow.defn(name="ReadsTheClock")
class ReadsTheClock:
    @workflow.run
    async def run(self, use_wall_clock: bool) -> str:
        if use_wall_clock:
            return datetime.now().isoformat()  # what the sandbox exists to refuse
        return workflow.now().isoformat()


async def test_the_worker_uses_the_compiled_once_sandbox(time_env: WorkflowEnvironment) -> None:
    from signoff.worker import build_worker

    worker = build_worker(time_env.client, f"runner-{uuid.uuid4().hex[:8]}")
    assert isinstance(worker.config()["workflow_runner"], CompiledOnceRunner)


async def test_sandbox_still_refuses_non_determinism_and_compiles_once(time_env: WorkflowEnvironment) -> None:
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(time_env.client, task_queue=queue, workflows=[ReadsTheClock], workflow_runner=workflow_runner()):
        fine = await time_env.client.execute_workflow(
            ReadsTheClock.run, False, id=f"clock-ok-{queue}", task_queue=queue,
            execution_timeout=timedelta(seconds=30),
        )
        assert fine  # workflow.now() is allowed
        assert _entry_strings_of("ReadsTheClock") == 1, "the sandbox's entry strings go through the cache"
        handle = await time_env.client.start_workflow(
            ReadsTheClock.run, True, id=f"clock-bad-{queue}", task_queue=queue,
            execution_timeout=timedelta(seconds=5), task_timeout=timedelta(seconds=1),
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()  # the restricted call fails the task until the run times out
        history = await handle.fetch_history()
        failures = [e for e in history.events if e.workflow_task_failed_event_attributes.failure.message]
        assert any("datetime.datetime.now" in e.workflow_task_failed_event_attributes.failure.message
                   for e in failures), "the sandbox restriction, not something else, failed the task"
        assert _entry_strings_of("ReadsTheClock") == 1, "the second run reused the cached import string"


def _entry_strings_of(workflow_name: str) -> int:
    return sum(workflow_name in source for source in sandbox._compiled)


def test_compiled_is_cached_by_text() -> None:
    first = sandbox.compiled("x = 1\n")
    assert sandbox.compiled("x = 1\n") is first
    assert sandbox.compiled("x = 2\n") is not first


def test_warm_up_loads_the_model_and_executors_and_freezes_the_heap() -> None:
    from activities import executors
    from signoff.scoring import scorer
    from signoff.scoring.model_store import active_model_id
    from signoff.worker import warm_up

    scorer.clear_cache()
    try:
        warm_up()
        assert active_model_id() in scorer._cache
        assert ("isolate_host", "lab") in executors._REGISTRY
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_warm_up_without_a_usable_model_warns_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from signoff.scoring import scorer
    from signoff.scoring.model_store import ModelStoreError
    from signoff.worker import warm_up

    def missing(cls: type, model_id: str | None = None) -> None:
        raise ModelStoreError("no model here")

    monkeypatch.setattr(scorer.Scorer, "load", classmethod(missing))
    try:
        warm_up()  # must not raise: each case reports the missing model itself
    finally:
        gc.unfreeze()
    assert "scoring model not loaded at start: no model here" in caplog.text


def test_default_model_id_is_hashed_again_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signoff.scoring import model_store
    from signoff.scoring.artifact import sha256

    artifact = tmp_path / model_store.ARTIFACT
    artifact.write_bytes(b"first model")
    monkeypatch.setattr(model_store, "default_dir", lambda: tmp_path)
    assert model_store.default_model_id() == sha256(b"first model")
    assert model_store.default_model_id() == sha256(b"first model")
    artifact.write_bytes(b"second, longer model")
    os.utime(artifact, ns=(1, 1))
    assert model_store.default_model_id() == sha256(b"second, longer model")
