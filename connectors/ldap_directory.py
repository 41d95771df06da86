"""LDAP directory accounts (OpenLDAP with the ppolicy overlay): lock and unlock sign-in.

Locking sets `pwdAccountLockedTime` to `000001010000Z` (ppolicy's permanent lock), so a real bind
as the user fails with invalidCredentials; unlocking restores the value captured before (usually
"absent"; a prior lockout timestamp is put back as it was). ldap3 is synchronous: every call runs
in a worker thread so the event loop never blocks.

Configuration: SIGNOFF_LDAP_URL, SIGNOFF_LDAP_BIND_DN, SIGNOFF_LDAP_BIND_PASSWORD (or _FILE),
SIGNOFF_LDAP_BASE_DN, SIGNOFF_LDAP_USER_ATTR (default `uid`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars

from connectors.http import (
    NonRetryableConnectorError,
    NotFoundError,
    RetryableConnectorError,
    Secret,
    require_secret,
    require_setting,
    setting,
)

PERMANENT_LOCK = "000001010000Z"
LOCK_ATTR = "pwdAccountLockedTime"
VENDOR = "ldap"


class LdapDirectory:
    vendor = VENDOR
    credential_hint = "SIGNOFF_LDAP_BIND_DN and SIGNOFF_LDAP_BIND_PASSWORD (or SIGNOFF_LDAP_BIND_PASSWORD_FILE)"

    def __init__(
        self, url: str, bind_dn: str, password: Secret, base_dn: str, user_attr: str = "uid",
        timeout: int = 10,
    ) -> None:
        self.url = url.rstrip("/")
        self.bind_dn = bind_dn
        self._password = password
        self.base_dn = base_dn
        self.user_attr = user_attr
        self.timeout = timeout

    @classmethod
    def from_env(cls) -> LdapDirectory:
        return cls(
            url=require_setting(VENDOR, "url"),
            bind_dn=require_setting(VENDOR, "bind_dn"),
            password=require_secret(VENDOR, "bind_password"),
            base_dn=require_setting(VENDOR, "base_dn"),
            user_attr=setting(VENDOR, "user_attr", "uid") or "uid",
        )

    # ------------------------------------------------------------ public API

    async def lock_time(self, user: str) -> str | None:
        """The user's `pwdAccountLockedTime` (None when the account is not locked)."""
        return await asyncio.to_thread(self._lock_time, user)

    async def set_lock_time(self, user: str, value: str | None) -> None:
        """Set (lock) or remove (unlock) `pwdAccountLockedTime`; already-in-state is success."""
        await asyncio.to_thread(self._set_lock_time, user, value)

    async def lock(self, user: str) -> None:
        await self.set_lock_time(user, PERMANENT_LOCK)

    async def unlock(self, user: str) -> None:
        await self.set_lock_time(user, None)

    async def can_bind(self, dn: str, password: Secret) -> bool:
        """Whether a simple bind as `dn` succeeds: the proof that a lock really stops sign-in."""
        return await asyncio.to_thread(self._can_bind, dn, password)

    async def user_dn(self, user: str) -> str:
        return await asyncio.to_thread(self._resolve, user)

    # ------------------------------------------------------------ blocking internals

    def _server(self) -> ldap3.Server:
        return ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=self.timeout)

    def _admin(self) -> ldap3.Connection:
        try:
            conn = ldap3.Connection(
                self._server(), user=self.bind_dn, password=self._password.reveal(),
                receive_timeout=self.timeout, raise_exceptions=False,
            )
            ok = conn.bind()
        except ldap_exc.LDAPSocketOpenError as exc:
            raise RetryableConnectorError(
                f"ldap: cannot reach {self.url} ({type(exc).__name__}); check SIGNOFF_LDAP_URL and that "
                "the directory is up", vendor=VENDOR,
            ) from None
        if not ok:
            raise NonRetryableConnectorError(
                f"ldap: bind as the service account failed ({conn.result.get('description')}); "
                f"check {self.credential_hint}", vendor=VENDOR,
            )
        return conn

    def _resolve(self, user: str, conn: ldap3.Connection | None = None) -> str:
        if "=" in user and "," in user:
            return user
        own = conn or self._admin()
        try:
            own.search(
                self.base_dn, f"({self.user_attr}={escape_filter_chars(user)})",
                search_scope=ldap3.SUBTREE, attributes=[],
            )
            entries = list(own.entries)
        finally:
            if conn is None:
                own.unbind()
        if not entries:
            raise NotFoundError(
                f"ldap: no entry with {self.user_attr}={user} under {self.base_dn}; check the account id",
                vendor=VENDOR,
            )
        if len(entries) > 1:
            raise NonRetryableConnectorError(
                f"ldap: {len(entries)} entries match {self.user_attr}={user}; refusing to act on an "
                "ambiguous account", vendor=VENDOR,
            )
        return str(entries[0].entry_dn)

    def _lock_time(self, user: str) -> str | None:
        conn = self._admin()
        try:
            dn = self._resolve(user, conn)
            conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[LOCK_ATTR])
            if conn.result.get("result") == 32:
                raise NotFoundError(f"ldap: {dn} does not exist", vendor=VENDOR)
            values: list[Any] = list(conn.response[0]["attributes"].get(LOCK_ATTR) or []) if conn.response else []
        finally:
            conn.unbind()
        if not values:
            return None
        value = values[0]
        if isinstance(value, bytes):
            return value.decode()
        if hasattr(value, "strftime"):  # ldap3 may parse GeneralizedTime; keep the wire form
            return str(value.strftime("%Y%m%d%H%M%SZ"))
        return str(value)

    def _set_lock_time(self, user: str, value: str | None) -> None:
        conn = self._admin()
        try:
            dn = self._resolve(user, conn)
            change = (ldap3.MODIFY_REPLACE, [value]) if value is not None else (ldap3.MODIFY_DELETE, [])
            conn.modify(dn, {LOCK_ATTR: [change]})
            code = conn.result.get("result")
        finally:
            conn.unbind()
        if code == 0 or (value is None and code == 16):  # 16 noSuchAttribute: already unlocked
            return
        if code == 32:
            raise NotFoundError(f"ldap: {dn} does not exist", vendor=VENDOR)
        if code == 50:
            raise NonRetryableConnectorError(
                f"ldap: the service account may not modify {LOCK_ATTR} on {dn}; grant it write access",
                vendor=VENDOR,
            )
        raise NonRetryableConnectorError(
            f"ldap: modify {LOCK_ATTR} on {dn} failed: {conn.result.get('description')}", vendor=VENDOR
        )

    def _can_bind(self, dn: str, password: Secret) -> bool:
        conn = ldap3.Connection(
            self._server(), user=dn, password=password.reveal(), receive_timeout=self.timeout,
            raise_exceptions=False,
        )
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()
