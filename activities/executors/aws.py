"""deactivate_access_key on AWS IAM (UpdateAccessKey Inactive; restore to the captured status)."""

from __future__ import annotations

from activities.executors import register
from activities.executors.base import ConnectorExecutor, State
from connectors.aws_iam import AwsIam
from signoff.models import ActionTarget


def key_ref(target: ActionTarget) -> tuple[str | None, str]:
    """`AKIA...` (owner looked up) or `user:AKIA...` / `user/AKIA...` (owner given)."""
    for sep in (":", "/"):
        if sep in target.id:
            user, key = target.id.rsplit(sep, 1)
            return user, key
    return None, target.id


@register("deactivate_access_key", "aws")
class AwsDeactivateAccessKey(ConnectorExecutor[AwsIam]):
    """State: `{"status": "Active" | "Inactive"}` of the key, read back through ListAccessKeys."""

    action = "deactivate_access_key"
    verify_attempts = 15
    verify_interval = 1.0  # IAM is eventually consistent

    def connect(self) -> AwsIam:
        return AwsIam.from_env()

    async def read(self, target: ActionTarget) -> State:
        user, key = key_ref(target)
        found = await self.connector.access_key(key, user)
        return {"status": found.status, "user": found.user}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"status": "Inactive"}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        user, key = key_ref(target)
        await self.connector.set_access_key_status(key, state["status"], user or state.get("user"))
