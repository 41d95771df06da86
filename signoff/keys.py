"""Approver keys: one Ed25519 keypair per approver, so an approval proves who made it.

The private key stays on the approver's machine (`home()/keys/USER.ed25519`, mode 0600, or the
file named by `SIGNOFF_APPROVER_KEY_FILE`); the public key goes into the policy's `approvers`
section by pull request. `signoff approve` signs with it; the case workflow verifies the
signature, the case, the step, the decision, the expiry and the nonce (policies/signing.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from policies.signing import public_key_text
from signoff import settings

KEY_FILE_ENV = "SIGNOFF_APPROVER_KEY_FILE"
# The ingesters' key (policies/ingest_signing.py): held by whatever opens cases (`signoff ingest`, the
# SIEM pull) and by the workers (detach, merge and drift cases are opened by activities).
INGEST_KEY_ENV = "SIGNOFF_INGEST_KEY_FILE"


class ApproverKeyError(RuntimeError):
    """A key file exists but cannot be used (wrong type, unsafe permissions, unreadable)."""


def _valid_user(user: str) -> str:
    if not user or any(c in user for c in "/\\\0") or user.startswith("."):
        raise ApproverKeyError(f"{user!r} is not a usable approver name for a key file")
    return user


def key_path(user: str) -> Path:
    """Where `user`'s private key lives: `SIGNOFF_APPROVER_KEY_FILE`, else `home()/keys/USER.ed25519`."""
    override = os.environ.get(KEY_FILE_ENV, "").strip()
    if override:
        return Path(override)
    return settings.home() / "keys" / f"{_valid_user(user)}.ed25519"


def create_key(user: str, *, overwrite: bool = False) -> tuple[Path, Ed25519PrivateKey]:
    """Generate `user`'s keypair; the private key is written with mode 0600. Refuses to overwrite."""
    path = key_path(user)
    if path.exists() and not overwrite:
        raise ApproverKeyError(f"{path} already exists; `signoff keys show --as {user}` prints its public key")
    return path, write_key_file(path)


def write_key_file(path: Path, *, private_folder: bool = True) -> Ed25519PrivateKey:
    """A new Ed25519 key in `path` (PEM, mode 0600); replaces what was there. `private_folder`: the
    folder is made 0700 too (not for a shared secrets folder that other users must traverse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_folder:
        os.chmod(path.parent, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)
    return key


def load_private_key(user: str) -> Ed25519PrivateKey | None:
    """`user`'s private key, or None when they have none (the approval then goes unsigned)."""
    return read_key_file(key_path(user))


def read_key_file(path: Path) -> Ed25519PrivateKey | None:
    """The Ed25519 private key in `path` (None when there is no file); refused unless mode 0600 or stricter."""
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ApproverKeyError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ApproverKeyError(f"{path} is not a readable Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ApproverKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def ingest_key_path() -> Path:
    """`SIGNOFF_INGEST_KEY_FILE`, else `home()/keys/ingest.ed25519`."""
    override = os.environ.get(INGEST_KEY_ENV, "").strip()
    return Path(override) if override else settings.home() / "keys" / "ingest.ed25519"


def create_ingest_key(*, overwrite: bool = False) -> tuple[Path, Ed25519PrivateKey]:
    path = ingest_key_path()
    if path.exists() and not overwrite:
        raise ApproverKeyError(f"{path} already exists; `signoff keys ingest-show` prints its policy line")
    return path, write_key_file(path, private_folder=not os.environ.get(INGEST_KEY_ENV, "").strip())


_ingest_key_cache: dict[tuple[str, int], Ed25519PrivateKey] = {}


def load_ingest_key() -> Ed25519PrivateKey | None:
    """The ingesters' key, or None where there is none (the lab: cases open unsigned, which only a
    policy with `require_signed_ingest` refuses to act on). Read again when the file changes."""
    path = ingest_key_path()
    try:
        cache_key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None
    key = _ingest_key_cache.get(cache_key)
    if key is None:
        key = read_key_file(path)
        if key is None:
            return None
        _ingest_key_cache.clear()
        _ingest_key_cache[cache_key] = key
    return key


def ingest_policy_lines(key: Ed25519PrivateKey) -> str:
    return ("deployment:\n  require_signed_ingest: true\n  ingest_keys:\n"
            f"    - {public_key_text(key)}")


def policy_line(user: str, key: Ed25519PrivateKey, roles: tuple[str, ...] = ("analyst",)) -> str:
    """The line to paste under `approvers:` in the policy."""
    return f"  {user}: {{roles: [{', '.join(roles)}], public_key: {public_key_text(key)}}}"


__all__ = ["INGEST_KEY_ENV", "KEY_FILE_ENV", "ApproverKeyError", "create_ingest_key", "create_key",
           "ingest_key_path", "ingest_policy_lines", "key_path", "load_ingest_key", "load_private_key", "policy_line",
           "public_key_text", "read_key_file", "write_key_file"]
