"""Which cases share an entity (a host, an account, an IP, a file hash, ...): the pivot an analyst
makes first ("have we seen this host before?"), answered by Temporal visibility for every case,
wherever it was ingested.

Each case publishes `CaseEntities`, a Text search attribute holding one short digest per entity
value it holds (the first `MAX_INDEXED` distinct values, in the order the case saw them). Search
attribute values are stored unencrypted, so no value appears in them, only its digest; a digest is
pseudonymous, not secret (whoever can list workflows and guesses a value can test it), as with
`HeldTargets`. A Text attribute is tokenised by the visibility store, so `CaseEntities = 'digest'`
finds every case holding that value. The value alone is hashed, not its type: an address a
firewall reports as an IP and an EDR as a host name's address still meets itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

# Visibility keeps at most 2 KB per search attribute value by default: 100 digests of 16 hex
# characters and their separators stay under it.
MAX_INDEXED = 100
ATTRIBUTE = "CaseEntities"


def normalise(value: str) -> str:
    """Case and surrounding blanks do not make another entity (host names, accounts, hashes)."""
    return value.strip().lower()


def entity_key(value: str) -> str:
    return hashlib.sha256(b"signoff-entity\x1f" + normalise(value).encode()).hexdigest()[:16]


def keyed(items: Iterable[tuple[str, T]]) -> dict[str, T]:
    """The first MAX_INDEXED distinct non-empty values of (value, item) pairs, by digest, each with the
    first item that carried it: what a case publishes, and what `signoff related` looks for."""
    first: dict[str, T] = {}
    for value, item in items:
        if normalise(value) and len(first) < MAX_INDEXED:
            first.setdefault(entity_key(value), item)
    return first


def index_keys(values: Iterable[str]) -> list[str]:
    """The digests a case publishes, sorted."""
    return sorted(keyed((value, None) for value in values))


def index_text(values: Iterable[str]) -> str:
    return " ".join(index_keys(values))


def keys_of(text: object) -> set[str]:
    """The digests in a `CaseEntities` value as listed by visibility (None or a string)."""
    return set(text.split()) if isinstance(text, str) else set()


def any_of_query(keys: Iterable[str]) -> str:
    """Cases holding any of these digests. One clause per digest: how a Text match of several tokens
    combines them differs between visibility stores (SQLite, PostgreSQL, Elasticsearch)."""
    clauses = [f"{ATTRIBUTE} = '{key}'" for key in sorted(set(keys))]
    if not clauses:
        raise ValueError("no entity to look for")
    return "(" + " OR ".join(clauses) + ")"
