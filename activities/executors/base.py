"""The action contract: capture the state, apply the goal state, verify it, restore on undo.

Each executor implements one declared action (playbooks/actions.py) against one backend. The
case workflow calls `capture` and `apply` as two activities, so the captured before-state is in
the workflow history before anything changes; a retried `apply` never re-captures.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from connectors.http import ConnectorError, NonRetryableConnectorError
from signoff.models import ActionTarget

State = dict[str, Any]


class ActionNotConfirmed(Exception):
    """The vendor accepted the change but has not (yet) shown the end state. Retryable."""


def non_retryable(message: str, type: str = "ActionRefused") -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


class ActionExecutor(ABC):
    action: ClassVar[str]
    # Polling for the end state: asynchronous vendors (EDR containment) confirm later.
    verify_attempts: int = 30
    verify_interval: float = 0.2

    @abstractmethod
    async def capture(self, target: ActionTarget) -> State:
        """Read the part of the target's state this action changes."""

    @abstractmethod
    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        """The state the action must leave behind (a subset of the captured keys)."""

    @abstractmethod
    async def write(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        """Drive the target to `state`. Must be idempotent: the same key twice changes nothing more."""

    async def apply(self, target: ActionTarget, before: State, params: dict[str, str], key: str) -> State:
        goal = self.goal(before, params, key)
        current = await self.capture(target)
        if not satisfies(current, goal):
            await self.write(target, goal, key)
        return await self.verify(target, goal)

    async def restore(self, target: ActionTarget, before: State, key: str) -> State:
        """Put back the captured state (not the blind inverse of the action)."""
        before = self.settled(before)
        current = await self.capture(target)
        if not satisfies(current, before):
            await self.write(target, before, key)
        return await self.verify(target, before)

    def settled(self, state: State) -> State:
        """The stable state a captured (possibly transitional) state was heading to.

        A host captured as "containment pending" is restored to "contained": restoring a transient
        state would wait for something the vendor never reports for long.
        """
        return state

    async def verify(self, target: ActionTarget, goal: State) -> State:
        for attempt in range(self.verify_attempts):
            current = await self.capture(target)
            if satisfies(current, goal):
                return current
            _heartbeat(f"{self.action}: waiting for {goal} ({attempt + 1}/{self.verify_attempts})")
            await asyncio.sleep(self.verify_interval)
        raise ActionNotConfirmed(
            f"{self.action} on {target.kind} {target.id}: the backend has not confirmed {goal} "
            f"after {self.verify_attempts} checks; it may still be pending at the vendor"
        )


def satisfies(current: State, goal: State) -> bool:
    return all(current.get(key) == value for key, value in goal.items())


def _heartbeat(detail: str) -> None:
    if activity.in_activity():
        activity.heartbeat(detail)


def application_error(exc: ConnectorError) -> ApplicationError:
    """A connector failure as Temporal sees it: retryable or not, with the vendor's retry hint."""
    kind = type(exc).__name__
    if isinstance(exc, NonRetryableConnectorError):
        return ApplicationError(str(exc), type=kind, non_retryable=True)
    delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
    return ApplicationError(str(exc), type=kind, non_retryable=False, next_retry_delay=delay)


T = TypeVar("T")
C = TypeVar("C")


async def mapped(call: Awaitable[T]) -> T:
    """Await a connector call; connector errors become Temporal `ApplicationError`s."""
    try:
        return await call
    except ConnectorError as exc:
        raise application_error(exc) from None


class ConnectorExecutor(ActionExecutor, Generic[C]):
    """An executor over a vendor connector, created from the environment on first use.

    Subclasses implement `read` and `change`; `capture`/`write` map connector errors to
    retryable / non-retryable `ApplicationError`s. Tests pass a connector bound to a fake.
    """

    def __init__(self, connector: C | None = None, *, verify_interval: float | None = None) -> None:
        self._connector = connector
        if verify_interval is None and os.environ.get("SIGNOFF_VERIFY_INTERVAL"):
            verify_interval = float(os.environ["SIGNOFF_VERIFY_INTERVAL"])  # demos and tests poll faster
        if verify_interval is not None:
            self.verify_interval = verify_interval

    @abstractmethod
    def connect(self) -> C:
        """Build the connector from `SIGNOFF_<VENDOR>_*` settings (raises ConfigurationError)."""

    @property
    def connector(self) -> C:
        if self._connector is None:
            try:
                self._connector = self.connect()
            except ConnectorError as exc:
                raise application_error(exc) from None
        return self._connector

    @abstractmethod
    async def read(self, target: ActionTarget) -> State: ...

    @abstractmethod
    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None: ...

    async def capture(self, target: ActionTarget) -> State:
        return await mapped(self.read(target))

    async def write(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await mapped(self.change(target, state, idempotency_key))


class IrreversibleExecutor(ConnectorExecutor[C]):
    """An action with nothing to restore (revoked sessions stay revoked): restore refuses, loudly."""

    async def restore(self, target: ActionTarget, before: State, key: str) -> State:
        raise non_retryable(
            f"{self.action} is irreversible: there is no state to restore on {target.kind} {target.id}; "
            "remediate by hand (e.g. the user signs in again)",
            type="Irreversible",
        )
