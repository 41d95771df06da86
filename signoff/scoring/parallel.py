"""Independent training folds in worker processes.

Every fold is a pure function of (cases, its rows, params): a fold computes the same bytes in any
process, so the result of `fold_map` does not depend on `jobs` (tests check the model id).
Workers are spawned, not forked: xgboost and OpenMP state do not survive a fork safely. The
cases are sent once per worker, not once per fold.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")

_cases: Any = None


def _keep_cases(cases: Any) -> None:
    global _cases
    _cases = cases


def _run(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(_cases, *args)


def default_jobs() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fold_map(
    fn: Callable[..., T],
    cases: Any,
    tasks: Sequence[tuple[Any, ...]],
    jobs: int = 1,
    done: Callable[[int], None] | None = None,
) -> list[T]:
    """`[fn(cases, *task) for task in tasks]`, in order, on up to `jobs` processes.

    `fn` must be a module-level function (it is pickled by name). `done(i)` is called in this
    process as task i finishes, for progress.
    """
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for i, task in enumerate(tasks):
            results.append(fn(cases, *task))
            if done:
                done(i)
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=context, initializer=_keep_cases, initargs=(cases,)
    ) as pool:
        futures = [pool.submit(_run, fn, task) for task in tasks]
        index = {future: i for i, future in enumerate(futures)}
        if done:
            for future in as_completed(futures):
                future.result()
                done(index[future])
        return [future.result() for future in futures]
