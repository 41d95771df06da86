"""Real local stand-ins for vendor systems, started by the tests that need them.

- `slapd`: OpenLDAP with the ppolicy overlay, own config and database in a temp dir, loopback port.
- `moto_iam`: `moto_server` on a loopback port with IAM request authentication switched on, so
  every call after the seeding ones must carry a valid SigV4 signature of a key moto knows.
- `netns_hosts`: two network namespaces joined by a veth pair, with a TCP listener in the second
  one on a management port and an application port.

Import the fixtures you need explicitly into a test module:
`from tests.standins import slapd_fixture  # noqa: F401` (the fixture is named `slapd`).
Every process started here is stopped by its own PID; namespaces are deleted by their own names.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str, attempts: int = 200) -> None:
    for _ in range(attempts):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _require(tool: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.path.exists(p)), None)
    if path is None:
        pytest.fail(f"{tool} is not installed; .ci/run installs it (apt-get install slapd ldap-utils nftables iproute2)")
    return path


# ---------------------------------------------------------------- OpenLDAP + ppolicy


@dataclass
class LdapStandin:
    url: str
    base_dn: str
    admin_dn: str
    admin_password: str
    users: dict[str, str] = field(default_factory=dict)  # uid -> password

    def dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base_dn}"

    def env(self) -> dict[str, str]:
        return {
            "SIGNOFF_LDAP_URL": self.url,
            "SIGNOFF_LDAP_BIND_DN": self.admin_dn,
            "SIGNOFF_LDAP_BIND_PASSWORD": self.admin_password,
            "SIGNOFF_LDAP_BASE_DN": self.base_dn,
        }


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
database mdb
maxsize 16777216
suffix "{base}"
rootdn "cn=admin,{base}"
rootpw {password}
directory {dir}/db
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"
ppolicy_use_lockout
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


@pytest.fixture(scope="module", name="slapd")
def slapd_fixture() -> Iterator[LdapStandin]:
    import ldap3

    binary = _require("slapd")
    base = "dc=signoff,dc=test"
    admin_pw = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="signoff-slapd-") as tmp:
        (Path(tmp) / "db").mkdir()
        conf = Path(tmp) / "slapd.conf"
        conf.write_text(SLAPD_CONF.format(dir=tmp, base=base, password=admin_pw))
        port = free_port()
        url = f"ldap://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [binary, "-f", str(conf), "-h", f"{url}/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(port, proc, "slapd")
            stand = LdapStandin(url, base, f"cn=admin,{base}", admin_pw)
            conn = ldap3.Connection(ldap3.Server(url), stand.admin_dn, admin_pw, auto_bind=True)
            conn.add(base, ["dcObject", "organization"], {"o": "signoff", "dc": "signoff"})
            for ou in ("people", "policies"):
                conn.add(f"ou={ou},{base}", ["organizationalUnit"], {"ou": ou})
            conn.add(
                f"cn=default,ou=policies,{base}", ["pwdPolicy", "person"],
                {"cn": "default", "sn": "policy", "pwdAttribute": "userPassword", "pwdLockout": "TRUE"},
            )
            for uid in ("alice", "bob", "carol"):
                pw = secrets.token_urlsafe(10)
                conn.add(stand.dn(uid), ["inetOrgPerson"], {"uid": uid, "cn": uid, "sn": uid, "userPassword": pw})
                stand.users[uid] = pw
            assert conn.result["result"] == 0, conn.result
            conn.unbind()
            yield stand
        finally:
            stop(proc)


# ---------------------------------------------------------------- moto server (IAM)


@dataclass
class MotoIam:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    # A user with two keys the tests may deactivate; seeded before auth enforcement starts.
    target_user: str
    target_keys: list[str]

    def env(self) -> dict[str, str]:
        return {
            "SIGNOFF_AWS_IAM_ENDPOINT": self.endpoint,
            "SIGNOFF_AWS_ACCESS_KEY_ID": self.access_key_id,
            "SIGNOFF_AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "SIGNOFF_AWS_REGION": "us-east-1",
        }


ADMIN_POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
SEED_ACTIONS = 7  # the unauthenticated calls below; everything after them must be signed correctly


@pytest.fixture(scope="module", name="moto_iam")
def moto_iam_fixture() -> Iterator[MotoIam]:
    import boto3

    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SEED_ACTIONS), "MOTO_ALLOW_NONEXISTENT_REGION": "1"}
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="seed", aws_secret_access_key="seed",
        )
        iam.create_user(UserName="signoff-responder")  # 1
        iam.put_user_policy(UserName="signoff-responder", PolicyName="all", PolicyDocument=ADMIN_POLICY)  # 2
        own = iam.create_access_key(UserName="signoff-responder")["AccessKey"]  # 3
        iam.create_user(UserName="mallory")  # 4
        k1 = iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]  # 5
        k2 = iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]  # 6
        iam.update_access_key(UserName="mallory", AccessKeyId=k2, Status="Inactive")  # 7
        yield MotoIam(endpoint, own["AccessKeyId"], own["SecretAccessKey"], "mallory", [k1, k2])
    finally:
        stop(proc)


# ---------------------------------------------------------------- network namespaces


@dataclass
class NetnsHosts:
    client: str  # namespace that connects
    server: str  # namespace that is contained
    server_ip: str
    mgmt_port: int
    app_port: int


LISTENER = """
import socket, selectors, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.sendall(b"ok"); conn.close()
"""


def _ip(*args: str) -> None:
    subprocess.run([_require("ip"), *args], check=True, capture_output=True)


@pytest.fixture(scope="module", name="netns_hosts")
def netns_hosts_fixture() -> Iterator[NetnsHosts]:
    _require("nft")
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    client, server = f"so-c{tag}", f"so-s{tag}"
    veth_c, veth_s = f"vc{tag}"[:15], f"vs{tag}"[:15]
    octet = 1 + (os.getpid() % 250)
    created: list[str] = []
    listener: subprocess.Popen | None = None
    try:
        for ns in (client, server):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", client, "link", "add", veth_c, "type", "veth", "peer", "name", veth_s, "netns", server)
        _ip("-n", client, "addr", "add", f"10.209.{octet}.1/30", "dev", veth_c)
        _ip("-n", server, "addr", "add", f"10.209.{octet}.2/30", "dev", veth_s)
        _ip("-n", client, "link", "set", veth_c, "up")
        _ip("-n", server, "link", "set", veth_s, "up")
        mgmt, app = 2222, 8080
        listener = subprocess.Popen(
            [_require("ip"), "netns", "exec", server, sys.executable, "-c", LISTENER, str(mgmt), str(app)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"listener in {server} did not start: {listener.stderr.read() if listener.stderr else ''}")
        yield NetnsHosts(client, server, f"10.209.{octet}.2", mgmt, app)
    finally:
        if listener is not None:
            stop(listener)
        for ns in created:
            subprocess.run([_require("ip"), "netns", "del", ns], capture_output=True)


async def tcp_reachable(from_ns: str, ip: str, port: int, timeout: float = 1.5) -> bool:
    """Whether a TCP connect from `from_ns` to ip:port completes and reads the listener's greeting."""
    import asyncio

    probe = (
        "import socket,sys\n"
        f"s=socket.create_connection(({ip!r},{port}),timeout={timeout})\n"
        "sys.exit(0 if s.recv(2)==b'ok' else 1)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        _require("ip"), "netns", "exec", from_ns, sys.executable, "-c", probe,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait() == 0
