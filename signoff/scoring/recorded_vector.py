"""The feature vector a score was computed from, as the score records it (`ScoreResult.feature_vector`).

Base64 of the vector's little-endian float32 bytes, in the order of the model's feature names;
`feature_hash` is the sha256 of those bytes. Exact (the model reads these float32 values, nothing
rounded) and deterministic (same case + model → the same text). Standard library only: `signoff
explain` and `signoff audit verify` decode and check it without numpy or the model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Sequence

FLOAT32 = 4


def encode(raw: bytes) -> str:
    """`raw`: the vector's little-endian float32 bytes."""
    return base64.b64encode(raw).decode("ascii")


def decode(text: str) -> bytes:
    """The vector's bytes; ValueError if `text` is not base64 of whole float32 values."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"the recorded feature vector is not base64: {exc}") from exc
    if len(raw) % FLOAT32:
        raise ValueError(f"the recorded feature vector has {len(raw)} bytes: not whole float32 values")
    return raw


def values(text: str) -> tuple[float, ...]:
    raw = decode(text)
    return struct.unpack(f"<{len(raw) // FLOAT32}f", raw)


def hash_of(text: str) -> str:
    """sha256 of the recorded vector's bytes: what `feature_hash` must be."""
    return hashlib.sha256(decode(text)).hexdigest()


def check(text: str, feature_hash: str) -> str:
    """'matches' | 'mismatch' | 'undecodable' | 'not recorded' (a score from before the vector was kept)."""
    if not text:
        return "not recorded"
    try:
        return "matches" if hash_of(text) == feature_hash else "mismatch"
    except ValueError:
        return "undecodable"


def schema_id(schema_version: int, names: Sequence[str]) -> str:
    """Which features, in which order, a vector holds: '<schema version>:<sha256 of the names, 16 hex>'."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    return f"{schema_version}:{digest[:16]}"
