"""The benchmark's worker process: Signoff's worker (signoff.worker.build_worker) plus the bare
baseline workflow, on one task queue. Run by the harness: `python -m signoff.bench.workerproc`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any


async def main(address: str, task_queue: str, ready_file: Path) -> None:
    from signoff.bench.bare import BareWorkflow, bare_step
    from signoff.client import connect
    from signoff.worker import activities, build_worker, warm_up, workflows

    client = await connect(address)
    extra: dict[str, Any] = {}
    if os.environ.get("SIGNOFF_BENCH_AUTOSCALE_POLLERS"):  # experiment: autoscaling pollers
        from temporalio.worker import PollerBehaviorAutoscaling

        extra["workflow_task_poller_behavior"] = PollerBehaviorAutoscaling()
        extra["activity_task_poller_behavior"] = PollerBehaviorAutoscaling()
    if os.environ.get("SIGNOFF_BENCH_PASSTHROUGH"):  # experiment: sandbox passthrough of more modules
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        modules = os.environ["SIGNOFF_BENCH_PASSTHROUGH"].split(",")
        extra["workflow_runner"] = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))
    worker = build_worker(
        client, task_queue, workflows=[*workflows(), BareWorkflow], activities=[*activities(), bare_step], **extra
    )
    if not os.environ.get("SIGNOFF_BENCH_COLD_WORKER"):  # experiment: measure without the warm-up
        warm_up()
    config = worker.config()
    knobs = ("max_cached_workflows", "max_concurrent_workflow_tasks", "max_concurrent_activities",
             "max_concurrent_local_activities")
    # Written whole, then renamed: the harness reads the file as soon as it exists.
    partial = ready_file.with_suffix(".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), **{k: config.get(k) for k in knobs}}))
    partial.replace(ready_file)
    await worker.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--ready-file", required=True, type=Path)
    args = parser.parse_args()
    profile = os.environ.get("SIGNOFF_BENCH_PROFILE", "")  # a path: cProfile the worker's Python side
    if profile:
        import cProfile
        import signal

        profiler = cProfile.Profile()

        def dump(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(profile)
            os._exit(0)

        signal.signal(signal.SIGTERM, dump)
        profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.address, args.task_queue, args.ready_file))

