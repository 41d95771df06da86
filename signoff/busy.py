"""A case's "busy" refusal, and sending an update again while it lasts.

A case refuses every update, with this one reason, while one of its local activities is in flight
(workflows/case.py `_refuse_while_local_activity`, docs/reliability.md §7): an update accepted then
could be recorded before the result that the case already has, and the history would not replay.
The window is short (triage's reads and scoring, a step's before-state read: a vendor call) and
nothing of the refused update is recorded, so Signoff's clients (the CLI, the chat bridge, the
workers' own updates) send the same update again with a short backoff, for a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

# The failure type of the refusal (an ApplicationError raised by the validators): stable, clients match on it.
CASE_BUSY = "CaseBusy"
CASE_BUSY_MESSAGE = ("the case is busy: triage or a step's read of its target is running (a local activity); "
                     "nothing was recorded: send the same request again in a moment")
BUSY_RETRY_SECONDS = 30.0
_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 1.0

_T = TypeVar("_T")


class CaseBusyError(Exception):
    """The case stayed busy for the whole retry budget: nothing was recorded."""


def is_busy_refusal(exc: BaseException) -> bool:
    """A `WorkflowUpdateFailedError` (or an `ApplicationError`) that is the case's busy refusal."""
    cause = getattr(exc, "cause", None) or exc
    return getattr(cause, "type", None) == CASE_BUSY


async def while_busy(send: Callable[[], Awaitable[_T]], case_id: str, *, budget: float | None = None) -> _T:
    """`send()` (an update to the case), sent again while the case refuses it as busy, for up to `budget`
    seconds (BUSY_RETRY_SECONDS); then `CaseBusyError`. Any other outcome (the answer, another refusal, an RPC
    error) is returned or raised as it came. The same update id is safe to send again: a refused update leaves
    no trace."""
    budget = BUSY_RETRY_SECONDS if budget is None else budget
    deadline = time.monotonic() + budget
    pause = _FIRST_PAUSE
    while True:
        try:
            return await send()
        except Exception as exc:
            if not is_busy_refusal(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise CaseBusyError(
                    f"case {case_id} stayed busy for {budget:g} s (triage or a step's read of its target kept "
                    "running: a slow vendor or connector?); nothing was recorded: try again in a minute, and "
                    f"check `signoff show {case_id}` if it persists") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
