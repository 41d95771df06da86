"""Temporal's workflow sandbox, without recompiling the same five lines thousands of times.

The SDK's sandbox (temporalio 1.35) enters a workflow through `exec` of short source strings: one
per activation, one per workflow instance, and one per payload it converts
(`get_serialization_context`). `exec` of a string compiles it every time (~23 µs here), and a case
converts dozens of payloads: profiled with py-spy on the pipeline benchmark, the compiles were
~14% of the worker's CPU. `CompiledOnceRunner` hands the same strings to the same `exec` as
compiled code objects, cached by their text. Isolation, restrictions and determinism checks are
the SDK's own, unchanged; only the compile is shared.

It leans on a private SDK class (`_runner._Instance._run_code(code, **globals)` calling `exec`);
`workflow_runner()` falls back to the stock sandbox if that shape is ever gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import CodeType
from typing import Any

from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

try:
    from temporalio.worker.workflow_sandbox import _runner
except ImportError:  # pragma: no cover - a future SDK without the private module
    _runner = None  # type: ignore[assignment]

_compiled: dict[str, CodeType] = {}


def compiled(source: str) -> CodeType:
    """The code object of `source`, compiled once per process (the SDK uses a handful of strings)."""
    code = _compiled.get(source)
    if code is None:
        code = _compiled[source] = compile(source, "<string>", "exec")
    return code


if _runner is not None and hasattr(getattr(_runner, "_Instance", None), "_run_code"):

    class _Instance(_runner._Instance):
        def _run_code(self, code: Any, **extra_globals: Any) -> None:
            # `exec` takes a code object as well as a string; the SDK annotates only `str`.
            source = compiled(code) if isinstance(code, str) else code
            super()._run_code(source, **extra_globals)  # type: ignore[arg-type]

    @dataclass(frozen=True)
    class CompiledOnceRunner(SandboxedWorkflowRunner):
        def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
            return _Instance(det, self.runner_class, self.restrictions)

    def workflow_runner() -> WorkflowRunner:
        return CompiledOnceRunner()

else:  # pragma: no cover

    def workflow_runner() -> WorkflowRunner:
        return SandboxedWorkflowRunner()
