"""disable_account on an LDAP directory (OpenLDAP ppolicy): lock = permanent pwdAccountLockedTime."""

from __future__ import annotations

from activities.executors import register
from activities.executors.base import ConnectorExecutor, State
from connectors.ldap_directory import PERMANENT_LOCK, LdapDirectory
from signoff.models import ActionTarget


@register("disable_account", "ldap")
class LdapDisableAccount(ConnectorExecutor[LdapDirectory]):
    """State: `{"locked_time": <pwdAccountLockedTime or None>}`. Restore puts the captured value back
    (absent, or an earlier lockout timestamp that ppolicy will expire as it would have)."""

    action = "disable_account"
    verify_attempts = 10
    verify_interval = 0.2

    def connect(self) -> LdapDirectory:
        return LdapDirectory.from_env()

    async def read(self, target: ActionTarget) -> State:
        return {"locked_time": await self.connector.lock_time(target.id)}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"locked_time": PERMANENT_LOCK}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.connector.set_lock_time(target.id, state["locked_time"])
