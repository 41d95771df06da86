"""Host isolation for Linux fleets with nftables: a contained host keeps only its management port.

Containment is one dedicated table, `inet signoff_containment`, with drop-policy input/output
chains that accept loopback and the management TCP port(s). Lifting it deletes only that table,
so the host's own firewall rules are never touched; both directions are idempotent.

Where the commands run is a `Runner`: `NetnsRunner` (host id = a network namespace; what the
tests use) or `SshRunner` (host id = an ssh destination; same nft script, run remotely with
`ssh -o BatchMode=yes`). Every command is an asyncio subprocess: nothing blocks the event loop.

Configuration: SIGNOFF_NFTABLES_RUNNER (`netns` | `ssh`, default netns), SIGNOFF_NFTABLES_MGMT_PORTS
(comma list, default 22), SIGNOFF_NFTABLES_ALLOW_CIDRS (management networks always reachable),
SIGNOFF_NFTABLES_HOSTS (`host=namespace-or-ssh-destination,...`, default: the host id itself),
SIGNOFF_NFTABLES_SSH_USER (default root).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass, field

from connectors.http import NonRetryableConnectorError, RetryableConnectorError, setting

TABLE = "signoff_containment"
VENDOR = "nftables"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,253}$")
_UNREACHABLE = re.compile(r"Cannot open network namespace|Could not resolve hostname|Connection refused|timed out")


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def local_tool(name: str) -> str:
    """Full path of a local admin tool, also when PATH lacks the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return name


class Runner:
    """Runs a command on a host. Subclasses decide how the host is reached."""

    timeout: float = 30.0

    def prefix(self, host: str) -> list[str]:
        raise NotImplementedError

    def resolve(self, argv: list[str]) -> list[str]:
        """The command as it runs on the host (local runners resolve the tool's full path)."""
        return argv

    async def run(self, host: str, argv: list[str], stdin: str | None = None) -> CommandResult:
        if not _SAFE_NAME.match(host):
            raise NonRetryableConnectorError(f"nftables: refusing host id {host!r}: unexpected characters",
                                             vendor=VENDOR)
        cmd = [*self.prefix(host), *self.resolve(argv)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise NonRetryableConnectorError(
                f"nftables: {exc.filename} is not installed on the worker; install it (apt-get install "
                "nftables iproute2 openssh-client)", vendor=VENDOR,
            ) from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RetryableConnectorError(
                f"nftables: {' '.join(argv[:2])} on {host} timed out after {self.timeout:.0f}s", vendor=VENDOR
            ) from None
        return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


@dataclass
class NetnsRunner(Runner):
    """Host id → network namespace (`ip netns exec NS ...`); `names` maps ids to namespaces."""

    names: dict[str, str] = field(default_factory=dict)

    def prefix(self, host: str) -> list[str]:
        return [local_tool("ip"), "netns", "exec", self.names.get(host, host)]

    def resolve(self, argv: list[str]) -> list[str]:
        return [local_tool(argv[0]), *argv[1:]]


@dataclass
class SshRunner(Runner):
    """Host id → ssh destination. Key-based auth only (BatchMode): no password prompts, no secrets here."""

    user: str = "root"
    names: dict[str, str] = field(default_factory=dict)

    def prefix(self, host: str) -> list[str]:
        dest = self.names.get(host, host)
        return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{self.user}@{dest}"]


class NftablesHosts:
    vendor = VENDOR

    def __init__(self, runner: Runner, mgmt_ports: tuple[int, ...] = (22,), allow_cidrs: tuple[str, ...] = ()):
        if not mgmt_ports:
            raise NonRetryableConnectorError(
                "nftables: at least one management port must stay open, or the host cannot be released",
                vendor=VENDOR,
            )
        self.runner = runner
        self.mgmt_ports = tuple(int(p) for p in mgmt_ports)
        self.allow_cidrs = tuple(str(ipaddress.ip_network(c, strict=False)) for c in allow_cidrs)

    @classmethod
    def from_env(cls) -> NftablesHosts:
        names = _mapping(setting(VENDOR, "hosts", "") or "")
        kind = (setting(VENDOR, "runner", "netns") or "netns").lower()
        runner: Runner
        if kind == "netns":
            runner = NetnsRunner(names=names)
        elif kind == "ssh":
            runner = SshRunner(user=setting(VENDOR, "ssh_user", "root") or "root", names=names)
        else:
            raise NonRetryableConnectorError(
                f"nftables: SIGNOFF_NFTABLES_RUNNER={kind!r} is unknown; use netns or ssh", vendor=VENDOR
            )
        ports = tuple(int(p) for p in (setting(VENDOR, "mgmt_ports", "22") or "22").split(",") if p.strip())
        cidrs = tuple(c.strip() for c in (setting(VENDOR, "allow_cidrs", "") or "").split(",") if c.strip())
        return cls(runner, ports, cidrs)

    def ruleset(self) -> str:
        ports = ", ".join(str(p) for p in self.mgmt_ports)
        allow_in = "".join(f" {_family(c)} saddr {c} accept;" for c in self.allow_cidrs)
        allow_out = "".join(f" {_family(c)} daddr {c} accept;" for c in self.allow_cidrs)
        # add + delete + define in one transaction: re-applying replaces, never duplicates rules.
        return (
            f"add table inet {TABLE}\n"
            f"delete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -10; policy drop;"
            f' iif "lo" accept; tcp dport {{ {ports} }} accept;{allow_in} }}\n'
            f"  chain output {{ type filter hook output priority -10; policy drop;"
            f' oif "lo" accept; tcp sport {{ {ports} }} accept;{allow_out} }}\n'
            f"}}\n"
        )

    async def is_contained(self, host: str) -> bool:
        result = await self.runner.run(host, ["nft", "list", "table", "inet", TABLE])
        if result.returncode == 0:
            return True
        if _UNREACHABLE.search(result.stderr):
            raise self._failure(host, "read the containment table", result)
        if "No such file or directory" in result.stderr or "does not exist" in result.stderr:
            return False
        raise self._failure(host, "read the containment table", result)

    async def contain(self, host: str) -> None:
        result = await self.runner.run(host, ["nft", "-f", "-"], stdin=self.ruleset())
        if result.returncode != 0:
            raise self._failure(host, "install the containment table", result)

    async def release(self, host: str) -> None:
        if not await self.is_contained(host):
            return  # already released
        result = await self.runner.run(host, ["nft", "delete", "table", "inet", TABLE])
        if result.returncode != 0 and await self.is_contained(host):
            raise self._failure(host, "delete the containment table", result)

    def _failure(self, host: str, what: str, result: CommandResult) -> Exception:
        text = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        if "Operation not permitted" in result.stderr or "Permission denied" in result.stderr:
            return NonRetryableConnectorError(
                f"nftables: could not {what} on {host}: {text}; the worker needs root (CAP_NET_ADMIN) there",
                vendor=VENDOR,
            )
        if _UNREACHABLE.search(result.stderr):
            return NonRetryableConnectorError(
                f"nftables: host {host} is unknown: {text}; check SIGNOFF_NFTABLES_HOSTS", vendor=VENDOR
            )
        return RetryableConnectorError(f"nftables: could not {what} on {host}: {text}", vendor=VENDOR)


def _family(cidr: str) -> str:
    return "ip6" if ipaddress.ip_network(cidr).version == 6 else "ip"


def _mapping(text: str) -> dict[str, str]:
    return dict(item.strip().split("=", 1) for item in text.split(",") if "=" in item)
